"""The backward walk over a tape.

Cotangents are accumulated per variable, undoing broadcasting in one place
(:func:`unbroadcast`), and each node's saved values are dropped as soon as
its rule has run when the walk is the last one (``grad``), so peak memory
falls during the walk instead of holding the whole tape to the end.
"""
import numpy as np

from .array import DEBUG, TracedArray, captured, check_finite, saved_value
from .primitive import ShapeDtype
from .tape import level_stack


def unbroadcast(c, shape, nb=0):
    """Sum ``c`` down to ``batch + shape``, where the first ``nb`` axes of
    ``c`` are batch axes. The one helper that undoes NumPy broadcasting."""
    cshape = c.shape
    target = len(shape) + nb
    extra = len(cshape) - target
    if extra > 0:
        c = np.sum(c, axis=tuple(range(nb, nb + extra)))
        if type(c) is not TracedArray and type(c) is not np.ndarray:
            c = np.asarray(c)  # a full sum of a plain array is a NumPy scalar
        cshape = c.shape
    elif extra < 0:
        return np.broadcast_to(c, cshape[:nb] + tuple(shape)) if nb else np.broadcast_to(c, shape)
    axes = tuple(nb + i for i, (s, cs) in enumerate(zip(shape, cshape[nb:])) if s == 1 and cs != 1)
    if axes:
        c = np.sum(c, axis=axes, keepdims=True)
        cshape = c.shape
    if cshape[nb:] != tuple(shape):
        c = np.broadcast_to(c, cshape[:nb] + tuple(shape))
    return c


def _fit(c, shape, dtype, nb):
    """Bring a rule's cotangent to the input's shape (undoing broadcasting)
    and dtype (a real input takes the real part of a complex cotangent)."""
    if type(c) is not TracedArray and type(c) is not np.ndarray:
        c = np.asarray(c)
    if c.shape[nb:] != shape or c.ndim != nb + len(shape):
        c = unbroadcast(c, shape, nb)
    if c.dtype != dtype:
        if c.dtype.kind == "c" and dtype.kind != "c":
            c = np.real(c)
        if c.dtype != dtype:
            c = c.astype(dtype)
    return c


def _plain(x):
    return x._v if type(x) is TracedArray else x


def saved(node):
    """The node's saved inputs and output as they were when it ran: a value
    overwritten in place since then is replaced by its snapshot, and inputs
    whose values were not kept are ShapeDtype stand-ins."""
    args = node.args
    ans = node.ans
    vers = node.vers
    if type(ans) is tuple and type(node.out) is int:
        ans = ShapeDtype(*ans)
    elif type(ans) is TracedArray and ans._snaps is not None:
        ans = saved_value(ans, vers[-1] if vers else 0)
    if args is None:
        return [ShapeDtype(*m) for m in node.meta], ans
    for a in args:
        if type(a) is TracedArray and a._snaps is not None:
            args = [saved_value(a, vers[i] if vers else 0)
                    if type(a) is TracedArray and a._snaps is not None else a
                    for i, a in enumerate(args)]
            break
    return args, ans


def elementwise_vjp(prim, i, g, ans, args):
    """Cotangent of elementwise input ``i``: ``g * conj(∂out/∂arg_i)``."""
    p = prim.partials[i]
    if not callable(p):
        return g if p == 1 else (-g if p == -1 else g * p)
    if prim.singular:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            d = p(ans, *args)
            d = d if type(d) is TracedArray or type(d) is np.ndarray else np.asarray(d)
            if d.dtype.kind == "c":
                d = np.conjugate(d)
            c = g * d
            if captured(d) or not np.isfinite(_plain(d)).all():
                # Executed-path convention: a zero cotangent contributes
                # nothing, even through an infinite local derivative
                # (0 * inf would be nan).
                c = np.where(g == 0, np.zeros((), c.dtype), c)
        return c
    d = p(ans, *args)
    if type(d) is not TracedArray and type(d) is not np.ndarray:
        d = np.asarray(d)
    if d.dtype.kind == "c":
        d = np.conjugate(d)
    return g * d


def backward(tape, seeds, free=False):
    """Walk ``tape`` backwards from ``seeds`` ({var: cotangent}).

    Returns the dict of accumulated cotangents of the variables not produced
    by any node (the inputs). ``free=True`` drops each node's saved values
    once its rule has run; the tape cannot be walked again afterwards.
    """
    cts = dict(seeds)
    plain = not level_stack()
    # snapshots exist only for tapes that saw an in-place write; the flag is
    # conservative (a tape may hold values an outer tape's write touched),
    # so any tape active during a write is marked.
    mutated = getattr(tape, "mutated", True)
    pop = cts.pop
    for node in reversed(tape.nodes):
        out = node.out
        prim = node.prim
        if type(out) is int:
            g = pop(out, None)
            if g is None:
                continue
            ans = node.ans
            partials = prim.partials
            if partials is not None and type(ans) is tuple:
                # an elementwise rule that does not read its output
                nb = g.ndim - len(ans[0])
                ans = None
                if prim.const_partials:
                    args = None   # add, subtract, negative...: no values needed
                else:
                    args = node.args if not mutated and node.args is not None else \
                        saved(node)[0]
                    if plain:
                        args = [a._v if type(a) is TracedArray else a for a in args]
            else:
                if mutated or node.args is None or type(ans) is tuple:
                    args, ans = saved(node)
                else:
                    args = node.args
                if plain:
                    args = [a._v if type(a) is TracedArray else a for a in args]
                    if type(ans) is TracedArray:
                        ans = ans._v
                nb = g.ndim - ans.ndim
        else:
            partials = None
            gs = [pop(v, None) if v >= 0 else None for v in out]
            if all(x is None for x in gs):
                continue
            args, ans = saved(node)
            if plain:
                ans = tuple(_plain(a) for a in ans)
                args = [a._v if type(a) is TracedArray else a for a in args]
            first = next(x for x in gs if x is not None)
            k = next(i for i, x in enumerate(gs) if x is first)
            nb = first.ndim - ans[k].ndim
            batch = first.shape[:nb]
            g = tuple(x if x is not None else np.zeros(batch + a.shape, a.dtype)
                      for x, a in zip(gs, ans))
        params = node.params
        meta = node.meta
        i = -1
        for v in node.ins:
            i += 1
            if v < 0:
                continue
            negate = False
            if partials is not None:
                p = partials[i]
                if p is None:
                    continue
                if not callable(p):
                    if p == 1:
                        c = g
                    elif p == -1:
                        # subtract's second input, negative: folded into the
                        # accumulation below (prev - g, one operation, not two)
                        c = g
                        negate = True
                    else:
                        c = g * p
                elif prim.singular:
                    c = elementwise_vjp(prim, i, g, ans, args)
                else:
                    d = p(ans, *args)
                    if d.__class__ is not np.ndarray and d.__class__ is not TracedArray:
                        d = np.asarray(d)
                    c = g * (np.conjugate(d) if d.dtype.kind == "c" else d)
            else:
                rule = prim.vjp[i] if i < len(prim.vjp) else None
                if rule is None:
                    continue
                c = rule(g, ans, *args, **params)
                if c is None:
                    continue
            if DEBUG[0]:
                check_finite(prim, [g] if partials is not None or type(g) is not tuple
                             else list(g), c, "backward", node.where)
            shape, dtype = meta[i]
            if c.__class__ is not TracedArray and c.__class__ is not np.ndarray \
                    or c.shape != shape or c.dtype != dtype:
                c = _fit(c, shape, dtype, nb)
            prev = cts.get(v)
            if prev is not None or negate:
                if prev is None:
                    c = -c
                else:
                    c = prev - c if negate else prev + c
                if c.__class__ is not TracedArray and c.__class__ is not np.ndarray:
                    c = np.asarray(c)  # an operation on 0-d arrays gives a NumPy scalar
            cts[v] = c
        if free:
            node.args = node.ans = None
    return cts
