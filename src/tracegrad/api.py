"""Function transforms: grad, value_and_grad, vjp, jvp, linearize, jacfwd,
jacrev, jacobian, hessian, hvp, check_grads.

The only module that knows about ``argnums``, ``has_aux`` and pytrees. Names
and semantics follow JAX; every result is a plain NumPy array (or a pytree
of them). Inside an enclosing transform the results stay traced for that
transform, which is how transforms compose to any order.
"""
import numbers

import numpy as np

from . import errors
from .core.array import TracedArray, escape, escape_policy, tags_of, wrap
from .core.collector import paused_call
from .core.forward import ForwardLevel, forward_walk
from .core.pytree import tree_flatten, tree_unflatten
from .core.reverse import backward
from .core.tape import Tape, level_stack, levels_entered

__all__ = ["grad", "value_and_grad", "vjp", "jvp", "linearize", "jacfwd", "jacrev", "jacobian",
           "hessian", "hvp", "check_grads"]


# --- inputs and outputs ------------------------------------------------------------
def _as_input(x, where):
    """A differentiable input leaf as an array (traced leaves keep their tags)."""
    if type(x) is TracedArray:
        if x.dtype.kind not in "fc":
            raise _int_input(x.dtype, where)
        return x
    if isinstance(x, (bool, np.bool_)) or (isinstance(x, np.ndarray) and x.dtype == bool):
        raise _int_input(np.dtype(bool), where)
    if not isinstance(x, (np.ndarray, numbers.Number, np.generic)):
        raise errors.NonDifferentiableInput(
            f"{where} is a {type(x).__name__}, which cannot be differentiated; pass a float "
            f"array, a Python float, or a tuple/list/dict of them.")
    arr = np.asarray(x)
    if arr.dtype.kind not in "fc":
        raise _int_input(arr.dtype, where)
    return arr


def _int_input(dtype, where):
    return errors.NonDifferentiableInput(
        f"{where} has dtype {dtype}; only floating or complex inputs can be differentiated. "
        f"Convert it first (e.g. x.astype(float) or 3.0 instead of 3), or leave it out of "
        f"argnums.")


def _lift(x, level, payload):
    """``x`` tagged for ``level``, keeping the tags of the levels around it."""
    if type(x) is TracedArray:
        tags = {lv: p for lv, p in tags_of(x).items() if lv.active}
        tags[level] = payload
        return wrap(np.array(x._v, copy=True), tags)
    # A private copy: the function may write into its input in place, and
    # the caller's array must never change.
    return wrap(np.array(x, copy=True), {level: payload})


def _lower(x):
    """Drop the tags of closed levels; plain ndarray when none remain."""
    if type(x) is not TracedArray:
        return x
    cur = tags_of(x)
    tags = {lv: p for lv, p in cur.items() if lv.active}
    if tags:
        return wrap(x._v, tags) if len(tags) != len(cur) else x
    return x._v


def _settle(res):
    """Bring outputs that are views written through since their creation up
    to date while the level still records (see core.array.tags_of)."""
    for x in tree_flatten(res)[0]:
        if type(x) is TracedArray:
            tags_of(x)
    return res


def _check_out_leaf(x, what="the function's output"):
    if isinstance(x, (np.ndarray, numbers.Number, np.generic)):
        return x
    raise errors.BadOutput(
        f"{what} contains a {type(x).__name__}; differentiated functions must return arrays, "
        f"numbers, or tuples/lists/dicts of them. Return auxiliary data with has_aux=True.")


def _split_aux(res, has_aux):
    if not has_aux:
        return res, None
    if not (isinstance(res, (tuple, list)) and len(res) == 2):
        raise errors.BadOutput("has_aux=True requires the function to return a pair "
                               "(output, aux).")
    return res[0], res[1]


def _lower_tree(tree):
    leaves, td = tree_flatten(tree)
    return tree_unflatten(td, [_lower(x) for x in leaves])


def _norm_argnums(argnums, nargs):
    if isinstance(argnums, (int, np.integer)) and not isinstance(argnums, bool):
        nums = (int(argnums),)
        single = True
    elif isinstance(argnums, (tuple, list)) and all(
            isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in argnums):
        nums = tuple(int(a) for a in argnums)
        single = False
        if not nums:
            raise errors.BadArgnums("argnums is empty; name at least one argument to "
                                    "differentiate.")
    else:
        raise errors.BadArgnums(f"argnums must be an int or a tuple of ints, got {argnums!r}.")
    out = []
    for a in nums:
        if not -nargs <= a < nargs:
            raise errors.BadArgnums(
                f"argnums={argnums!r} is out of range: the function was called with {nargs} "
                f"positional argument(s) (valid: 0..{nargs - 1}).")
        out.append(a % nargs)
    if len(set(out)) != len(out):
        raise errors.BadArgnums(f"argnums={argnums!r} repeats an argument.")
    return tuple(out), single


def _partial(fun, args, kwargs, nums):
    def f(*diff):
        full = list(args)
        for i, a in zip(nums, diff):
            full[i] = a
        return fun(*full, **kwargs)
    return f


# --- reverse mode --------------------------------------------------------------------
@paused_call
def _trace_reverse(fun, primals, has_aux):
    leaves, treedef = tree_flatten(tuple(primals))
    # Only the outermost transform judges disconnection, and only when no
    # transform ran inside it: a derivative that is constant in the outer
    # inputs (the gradient of a linear function) is an ordinary, untraced
    # result.
    outermost = not level_stack()
    entered = levels_entered()
    tape = Tape()
    with tape:
        ins = []
        traced = []
        for k, leaf in enumerate(leaves):
            arr = _as_input(leaf, f"input leaf {k}")
            v = tape.new_var()
            ins.append((v, arr))
            traced.append(_lift(arr, tape, v))
        res = _settle(fun(*tree_unflatten(treedef, traced)))
    out, aux = _split_aux(res, has_aux)
    out_leaves, out_def = tree_flatten(out)
    out_vars = []
    for x in out_leaves:
        _check_out_leaf(x)
        out_vars.append(tags_of(x).get(tape, -1) if type(x) is TracedArray else -1)
    if outermost and levels_entered() == entered + 1 and tape.nodes and all(
            v < 0 for v in out_vars) and any(
            np.result_type(x).kind in "fc" for x in out_leaves):
        _disconnected(len(tape.nodes))
    return tape, ins, treedef, out_leaves, out_def, out_vars, aux


def _disconnected(nops):
    escape("disconnected",
           f"the output does not depend on the differentiated inputs through any operation "
           f"tracegrad saw, although {nops} operation(s) on them were recorded, so the "
           "derivative is zero. If that is unexpected: either it depends on them only through "
           "piecewise-constant operations (np.floor, np.round, comparisons, np.argmax...), or "
           "a value left the trace where no hook sees it: np.asarray(x) / np.array(x) of a "
           "traced array, a traced array written into a plain one "
           "(T = np.eye(4); T[:3, :3] = R: build T from R with np.block, "
           "np.concatenate or T = np.zeros_like(R, shape=(4, 4)) instead), or a library "
           "function that converts its input (SciPy: see docs/supported.md). Silence with "
           "tracegrad.escape_policy(disconnected='ignore').", depth=3)


@paused_call
def _pull(tape, ins, treedef, out_leaves, out_def, out_vars, ct, free, nb=0):
    ct_leaves, ct_def = tree_flatten(ct)
    if ct_def != out_def:
        raise ValueError("the cotangent must have the same pytree structure as the output")
    seeds = {}
    for v, c, o in zip(out_vars, ct_leaves, out_leaves):
        if v < 0:
            continue
        if type(c) is not TracedArray:
            c = np.asarray(c, dtype=np.result_type(o))
        if c.shape[nb:] != np.shape(o):
            raise ValueError(f"cotangent shape {c.shape[nb:]} does not match output shape "
                             f"{np.shape(o)}")
        seeds[v] = c if v not in seeds else seeds[v] + c
    cts = backward(tape, seeds, free=free)
    if free:
        # Nodes no cotangent reached still hold values (and, through their
        # tags, the tape): drop them now rather than wait for the cyclic GC.
        tape.nodes.clear()
    # batch axes of the cotangents (jacrev): also needed for the zero blocks of
    # inputs the output does not depend on
    batch = np.shape(ct_leaves[0])[:nb] if nb and ct_leaves else ()
    grads = []
    for v, arr in ins:
        g = cts.get(v)
        if g is None:
            g = np.zeros(batch + arr.shape, dtype=arr.dtype)
        grads.append(_lower(g))
    return tree_unflatten(treedef, grads)


def vjp(fun, *primals, has_aux=False):
    """Evaluate ``fun(*primals)`` and return ``(out, vjp_fn)`` (and ``aux``).

    ``vjp_fn(ct)`` returns a tuple with one cotangent per primal, ``ct``
    having the structure of ``out``. It may be called any number of times.

    Examples
    --------
    >>> import numpy as np, tracegrad as tg
    >>> out, f_vjp = tg.vjp(lambda x: np.sin(x) * 2, np.array([0.0, 1.0]))
    >>> f_vjp(np.ones(2))[0].round(4)
    array([2.    , 1.0806])
    """
    tape, ins, treedef, out_leaves, out_def, out_vars, aux = _trace_reverse(fun, primals,
                                                                            has_aux)

    def vjp_fn(ct):
        return _pull(tape, ins, treedef, out_leaves, out_def, out_vars, ct, free=False)

    # Copies: vjp_fn may run later, and its saved values share buffers with
    # these outputs, which the caller is free to modify.
    out = tree_unflatten(out_def, [_copy_out(_lower(x)) for x in out_leaves])
    if has_aux:
        return out, vjp_fn, _lower_tree(aux)
    return out, vjp_fn


def _copy_out(x):
    return np.array(x, copy=True) if type(x) is np.ndarray else x


def value_and_grad(fun, argnums=0, has_aux=False):
    """Return a function computing ``fun``'s value and its gradient.

    ``fun`` must return a real scalar (an array of size 1). With
    ``has_aux=True`` it returns ``(value, aux)`` and the result is
    ``((value, aux), grad)``.

    Examples
    --------
    >>> import numpy as np, tracegrad as tg
    >>> tg.value_and_grad(lambda x: np.sum(x ** 2))(np.array([1.0, 2.0]))
    (array(5.), array([2., 4.]))
    """
    @paused_call
    def wrapper(*args, **kwargs):
        nums, single = _norm_argnums(argnums, len(args))
        f = _partial(fun, args, kwargs, nums)
        tape, ins, treedef, out_leaves, out_def, out_vars, aux = _trace_reverse(
            f, [args[i] for i in nums], has_aux)
        if len(out_leaves) != 1 or out_def != tree_flatten(0.0)[1]:
            raise errors.NonScalarOutput(
                "grad requires a function returning a single scalar, but it returned a "
                f"{type(tree_unflatten(out_def, out_leaves)).__name__}; use jacrev/jacobian "
                "for vector outputs, or has_aux=True to return extra values.")
        (o,) = out_leaves
        o_arr = o if isinstance(o, np.ndarray) else np.asarray(o)
        if o_arr.size != 1:
            raise errors.NonScalarOutput(
                f"grad requires a scalar output, but the function returned shape "
                f"{o_arr.shape}; reduce it (e.g. np.sum(...) or np.mean(...)) or use "
                f"jacrev/jacobian for the full Jacobian.")
        if o_arr.dtype.kind == "c":
            raise errors.NonScalarOutput(
                "grad requires a real scalar output, got a complex one; differentiate "
                "np.real(...) or np.abs(...) of it.")
        if o_arr.dtype.kind not in "fc":
            o_arr = o_arr.astype(float)
        ct = np.ones(o_arr.shape, dtype=o_arr.dtype)
        grads = _pull(tape, ins, treedef, out_leaves, out_def, out_vars, ct, free=True)
        value = _lower(o)
        g = grads[0] if single else tuple(grads)
        if has_aux:
            return (value, _lower_tree(aux)), g
        return value, g
    _copy_meta(wrapper, fun, "value_and_grad")
    return wrapper


def grad(fun, argnums=0, has_aux=False):
    """Return a function computing the gradient of a scalar-valued ``fun``.

    Parameters
    ----------
    fun : callable
        Ordinary NumPy code returning a real scalar.
    argnums : int or tuple of ints
        Positional arguments to differentiate (each may be a pytree).
    has_aux : bool
        ``fun`` returns ``(value, aux)``; the result is then ``(grad, aux)``.

    Examples
    --------
    >>> import numpy as np, tracegrad as tg
    >>> g = tg.grad(lambda x: np.sin(x ** 2 + 1))(1.0)
    >>> round(float(g), 6)
    -0.832294
    """
    vg = value_and_grad(fun, argnums, has_aux)

    def wrapper(*args, **kwargs):
        (v, g) = vg(*args, **kwargs)
        if has_aux:
            return g, v[1]
        return g
    _copy_meta(wrapper, fun, "grad")
    return wrapper


def _copy_meta(wrapper, fun, kind):
    name = getattr(fun, "__name__", "fun")
    wrapper.__name__ = f"{kind}({name})"
    wrapper.__qualname__ = wrapper.__name__
    wrapper.__doc__ = getattr(fun, "__doc__", None)
    wrapper.__wrapped__ = fun


# --- forward mode --------------------------------------------------------------------
def _as_tangent(t, x, where):
    if type(t) is not TracedArray:
        t = np.asarray(t)
    if t.shape != np.shape(x):
        raise ValueError(f"{where}: tangent shape {t.shape} does not match primal shape "
                         f"{np.shape(x)}")
    dt = np.result_type(x)
    if t.dtype != dt:
        t = t.astype(dt)
    return t


@paused_call
def jvp(fun, primals, tangents, has_aux=False):
    """Forward mode: ``(fun(*primals), J @ tangents)`` in one run.

    Examples
    --------
    >>> import numpy as np, tracegrad as tg
    >>> tg.jvp(np.sin, (np.array([0.0, 1.0]),), (np.ones(2),))[1].round(4)
    array([1.    , 0.5403])
    """
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise TypeError("jvp expects primals and tangents as tuples, e.g. "
                        "jvp(f, (x,), (v,))")
    leaves, treedef = tree_flatten(tuple(primals))
    tleaves, tdef = tree_flatten(tuple(tangents))
    if tdef != treedef:
        raise ValueError("primals and tangents must have the same pytree structure")
    level = ForwardLevel(0)
    with level:
        traced = []
        for k, (x, t) in enumerate(zip(leaves, tleaves)):
            arr = _as_input(x, f"primal leaf {k}")
            traced.append(_lift(arr, level, _as_tangent(t, arr, f"tangent leaf {k}")))
        res = _settle(fun(*tree_unflatten(treedef, traced)))
    out, aux = _split_aux(res, has_aux)
    out_leaves, out_def = tree_flatten(out)
    pouts, touts = [], []
    for o in out_leaves:
        _check_out_leaf(o)
        t = tags_of(o).get(level) if type(o) is TracedArray else None
        pouts.append(_lower(o))
        if t is None:
            oa = np.asarray(o._v if type(o) is TracedArray else o)
            t = np.zeros(oa.shape, oa.dtype if oa.dtype.kind in "fc" else float)
        touts.append(_lower(t))
    result = (tree_unflatten(out_def, pouts), tree_unflatten(out_def, touts))
    if has_aux:
        return result + (_lower_tree(aux),)
    return result


def linearize(fun, *primals):
    """Evaluate ``fun`` once and return ``(out, jvp_fn)``; ``jvp_fn(*tangents)``
    applies the Jacobian at ``primals`` without re-running ``fun`` (it walks
    the recorded tape forwards)."""
    tape, ins, treedef, out_leaves, out_def, out_vars, _ = _trace_reverse(fun, primals, False)

    @paused_call
    def jvp_fn(*tangents):
        tleaves, tdef = tree_flatten(tuple(tangents))
        if tdef != treedef:
            raise ValueError("tangents must have the structure of the primals")
        seeds = {v: _as_tangent(t, arr, "tangent") for (v, arr), t in zip(ins, tleaves)}
        tans = forward_walk(tape, seeds)
        res = []
        for v, o in zip(out_vars, out_leaves):
            t = tans.get(v) if v >= 0 else None
            if t is None:
                oa = np.asarray(o._v if type(o) is TracedArray else o)
                t = np.zeros(oa.shape, oa.dtype if oa.dtype.kind in "fc" else float)
            res.append(_lower(t))
        return tree_unflatten(out_def, res)

    return tree_unflatten(out_def, [_lower(x) for x in out_leaves]), jvp_fn


# --- Jacobians --------------------------------------------------------------------------
def _basis(arrs):
    """Identity rows split per leaf: leaf k gets shape (N,) + shape_k."""
    n = sum(a.size for a in arrs)
    out = []
    off = 0
    for a in arrs:
        e = np.zeros((n, a.size), dtype=a.dtype)
        e[off:off + a.size] = np.eye(a.size, dtype=a.dtype)
        out.append(e.reshape((n,) + a.shape))
        off += a.size
    return out, n


def _fwd_block(T, off, a, oshape):
    """Input ``a``'s block of a forward-mode Jacobian, ``oshape + a.shape``:
    rows ``off:off + a.size`` of the output's tangents ``T`` (basis axis
    first), or zeros when the output did not depend on the inputs."""
    if T is None:
        return np.zeros(oshape + a.shape, dtype=np.result_type(a))
    if not a.size:
        return np.zeros(oshape + a.shape, T.dtype)
    blk = np.reshape(T[off:off + a.size], a.shape + oshape)
    k = a.ndim
    return _lower(np.moveaxis(blk, tuple(range(k)), tuple(range(-k, 0))) if k else blk)


def _rev_rows(outs, ins, glv):
    """Per output, the blocks ``o.shape + a.shape`` of a reverse-mode Jacobian
    from the stacked cotangents ``glv`` (output basis axis first)."""
    rows = []
    off = 0
    for o in outs:
        rows.append([_lower(np.reshape(G[off:off + o.size], o.shape + a.shape))
                     for (_, a), G in zip(ins, glv)])
        off += o.size
    return rows


def _assemble(rows, treedef, out_def, single, has_aux, aux):
    """Nest Jacobian blocks as output pytree, then argnums, then input pytree."""
    leaves = []
    for row in rows:
        tree = tree_unflatten(treedef, row)
        leaves.append(tree[0] if single else tree)
    jac = tree_unflatten(out_def, leaves)
    if has_aux:
        return jac, _lower_tree(aux)
    return jac


def jacfwd(fun, argnums=0, has_aux=False):
    """Jacobian by forward mode: every basis tangent pushed through one run.

    The result for output ``y`` and input ``x`` has shape ``y.shape + x.shape``
    (JAX's convention), nested as output pytree, then ``argnums`` tuple, then
    input pytree.
    """
    @paused_call
    def wrapper(*args, **kwargs):
        nums, single = _norm_argnums(argnums, len(args))
        leaves, treedef = tree_flatten(tuple(args[i] for i in nums))
        arrs = [_as_input(x, f"input leaf {k}") for k, x in enumerate(leaves)]
        basis, n = _basis([a._v if type(a) is TracedArray else a for a in arrs])
        level = ForwardLevel(1)
        with level:
            traced = [_lift(a, level, b) for a, b in zip(arrs, basis)]
            diff = tree_unflatten(treedef, traced)
            full = list(args)
            for i, a in zip(nums, diff):
                full[i] = a
            res = _settle(fun(*full, **kwargs))
        out, aux = _split_aux(res, has_aux)
        out_leaves, out_def = tree_flatten(out)
        rows = []
        for o in out_leaves:
            _check_out_leaf(o)
            oshape = np.shape(o)
            T = tags_of(o).get(level) if type(o) is TracedArray else None
            offs = np.cumsum([0] + [a.size for a in arrs])
            rows.append([_fwd_block(T, off, a, oshape) for a, off in zip(arrs, offs)])
        return _assemble(rows, treedef, out_def, single, has_aux, aux)
    _copy_meta(wrapper, fun, "jacfwd")
    return wrapper


def jacrev(fun, argnums=0, has_aux=False):
    """Jacobian by reverse mode: every output basis cotangent pulled back in
    one backward walk. Same output convention as :func:`jacfwd`."""
    @paused_call
    def wrapper(*args, **kwargs):
        nums, single = _norm_argnums(argnums, len(args))
        f = _partial(fun, args, kwargs, nums)
        tape, ins, treedef, out_leaves, out_def, out_vars, aux = _trace_reverse(
            f, [args[i] for i in nums], has_aux)
        outs = [np.asarray(o._v if type(o) is TracedArray else o) for o in out_leaves]
        for o in out_leaves:
            _check_out_leaf(o)
        basis, m = _basis([o if o.dtype.kind in "fc" else o.astype(float) for o in outs])
        grads = _pull(tape, ins, treedef, out_leaves, out_def, out_vars,
                      tree_unflatten(out_def, basis), free=True, nb=1)
        glv, _ = tree_flatten(grads)
        return _assemble(_rev_rows(outs, ins, glv), treedef, out_def, single, has_aux, aux)
    _copy_meta(wrapper, fun, "jacrev")
    return wrapper


def jacobian(fun, argnums=0, has_aux=False):
    """Jacobian by the cheaper mode, chosen after one recording: the tape is
    walked forwards with every input basis tangent when there are fewer
    inputs than outputs, backwards with every output basis cotangent
    otherwise. Same output convention as :func:`jacfwd`."""
    @paused_call
    def wrapper(*args, **kwargs):
        nums, single = _norm_argnums(argnums, len(args))
        f = _partial(fun, args, kwargs, nums)
        tape, ins, treedef, out_leaves, out_def, out_vars, aux = _trace_reverse(
            f, [args[i] for i in nums], has_aux)
        outs = [np.asarray(o._v if type(o) is TracedArray else o) for o in out_leaves]
        n_in = sum(a.size for _, a in ins)
        n_out = sum(o.size for o in outs)
        if n_in < n_out:
            basis, _ = _basis([a for _, a in ins])
            tans = forward_walk(tape, {v: b for (v, _), b in zip(ins, basis)})
            offs = np.cumsum([0] + [a.size for _, a in ins])
            rows = [[_fwd_block(tans.get(v) if v >= 0 else None, off, a, o.shape)
                     for (_, a), off in zip(ins, offs)] for v, o in zip(out_vars, outs)]
        else:
            basis, _ = _basis([o if o.dtype.kind in "fc" else o.astype(float) for o in outs])
            grads = _pull(tape, ins, treedef, out_leaves, out_def, out_vars,
                          tree_unflatten(out_def, basis), free=True, nb=1)
            glv, _ = tree_flatten(grads)
            rows = _rev_rows(outs, ins, glv)
        return _assemble(rows, treedef, out_def, single, has_aux, aux)
    _copy_meta(wrapper, fun, "jacobian")
    return wrapper


def hessian(fun, argnums=0, has_aux=False):
    """Hessian as ``jacfwd(jacrev(fun))`` (forward-over-reverse)."""
    if has_aux:
        inner = jacrev(fun, argnums, has_aux=True)
        return jacfwd(inner, argnums, has_aux=True)
    return jacfwd(jacrev(fun, argnums), argnums)


def hvp(fun, x, v, *args, **kwargs):
    """Hessian-vector product ``H(x) @ v`` by forward-over-reverse, without
    forming the Hessian. ``x`` and ``v`` may be pytrees of the same structure;
    extra ``args`` are passed to ``fun`` and not differentiated."""
    g = grad(lambda y: fun(y, *args, **kwargs))
    return jvp(g, (x,), (v,))[1]


# --- checking derivatives ------------------------------------------------------------------
def _rand_like(leaves, rng):
    out = []
    for x in leaves:
        a = np.asarray(x._v if type(x) is TracedArray else x)
        r = rng.standard_normal(a.shape)
        if a.dtype.kind == "c":
            r = r + 1j * rng.standard_normal(a.shape)
        out.append(r.astype(a.dtype if a.dtype.kind in "fc" else float))
    return out


def _vdot(a_leaves, b_leaves):
    return sum(float(np.real(np.vdot(np.asarray(_lower(a)), np.asarray(_lower(b)))))
               for a, b in zip(a_leaves, b_leaves))


def _close(name, got, want, atol, rtol, report):
    got = np.asarray(got)
    want = np.asarray(want)
    err = np.max(np.abs(got - want)) if got.size else 0.0
    tol = atol + rtol * (np.max(np.abs(want)) if want.size else 0.0)
    if not err <= tol:
        report.append(f"{name}: |error| = {err:.3e} > tolerance {tol:.3e}\n"
                      f"    got:      {np.array2string(got, precision=8)}\n"
                      f"    expected: {np.array2string(want, precision=8)}")


def check_grads(fun, args, order=2, modes=("fwd", "rev"), atol=None, rtol=None, eps=None,
                seed=0):
    """Check ``fun``'s derivatives against central finite differences, like JAX's.

    For each mode and each order up to ``order``: forward mode is compared
    with finite differences along a random direction, reverse mode with
    forward mode by the dot-product test ``<w, J u> == <J^T w, u>`` (or with
    finite differences when ``"fwd"`` is not among ``modes``). Higher orders
    check the JVP/VJP functions themselves. Raises ``AssertionError`` with a
    readable report listing every failed comparison.

    Examples
    --------
    >>> import numpy as np, tracegrad as tg
    >>> tg.check_grads(lambda x: np.sin(x) * x ** 2, (np.array([0.3, 1.2]),), order=2)
    """
    # higher derivatives of linear parts are constant: not an escape here
    with escape_policy(disconnected="ignore"):
        return _check_grads(fun, args, order, modes, atol, rtol, eps, seed)


def _check_grads(fun, args, order, modes, atol, rtol, eps, seed):
    if not isinstance(args, (tuple, list)):
        raise TypeError("check_grads expects args as a tuple, e.g. check_grads(f, (x,))")
    modes = tuple(modes)
    for m in modes:
        if m not in ("fwd", "rev"):
            raise ValueError(f"unknown mode {m!r}; use 'fwd' and/or 'rev'")
    leaves, treedef = tree_flatten(tuple(args))
    dt = np.result_type(*[np.asarray(x._v if type(x) is TracedArray else x) for x in leaves])
    low = dt in (np.float32, np.complex64)
    eps = eps if eps is not None else (1e-3 if low else 1e-6)
    rtol = rtol if rtol is not None else (2e-2 if low else 1e-5)
    atol = atol if atol is not None else (2e-2 if low else 1e-6)
    rng = np.random.default_rng(seed)
    report = []

    def fd_jvp(f, xs, us):
        def shifted(s):
            ls = [np.asarray(x._v if type(x) is TracedArray else x) + s * u
                  for x, u in zip(xs, us)]
            return tree_flatten(f(*tree_unflatten(treedef, ls)))[0]
        plus, minus = shifted(eps), shifted(-eps)
        return [(np.asarray(_lower(p)) - np.asarray(_lower(m))) / (2 * eps)
                for p, m in zip(plus, minus)]

    def check(f, xs, k, label):
        us = _rand_like(xs, rng)
        want = fd_jvp(f, xs, us)
        if "fwd" in modes:
            _, t_out = jvp(f, tuple(tree_unflatten(treedef, xs)), tuple(tree_unflatten(treedef,
                                                                                       us)))
            got = tree_flatten(t_out)[0]
            for j, (g, w) in enumerate(zip(got, want)):
                _close(f"{label} JVP vs finite differences (output leaf {j})", g, w, atol, rtol,
                       report)
        if "rev" in modes:
            out, f_vjp = vjp(f, *tree_unflatten(treedef, xs))
            out_leaves, out_def = tree_flatten(out)
            ws = _rand_like(out_leaves, rng)
            ct = f_vjp(tree_unflatten(out_def, ws))
            lhs = _vdot(ws, want)
            rhs = _vdot(tree_flatten(ct)[0], us)
            _close(f"{label} VJP: <w, J u> (finite differences) vs <J^T w, u>", rhs, lhs,
                   atol * 10, rtol * 10, report)
            if "fwd" in modes:
                _, t_out = jvp(f, tuple(tree_unflatten(treedef, xs)),
                               tuple(tree_unflatten(treedef, us)))
                lhs = _vdot(ws, tree_flatten(t_out)[0])
                _close(f"{label} dot-product test <w, J u> (fwd) vs <J^T w, u> (rev)", rhs, lhs,
                       1e-12 + atol * 1e-3, 1e-9 if not low else 1e-4, report)
        if k < order:
            if "fwd" in modes:
                us2 = us

                def f_jvp(*a):
                    return jvp(f, a, tuple(tree_unflatten(treedef, us2)))[1]
                check(f_jvp, xs, k + 1, f"order {k + 1} (of JVP)")
            if "rev" in modes:
                out = f(*tree_unflatten(treedef, xs))
                out_leaves, out_def = tree_flatten(out)
                ws2 = tree_unflatten(out_def, _rand_like(out_leaves, rng))

                def f_vjp(*a):
                    return vjp(f, *a)[1](ws2)
                check(f_vjp, xs, k + 1, f"order {k + 1} (of VJP)")

    check(fun, leaves, 1, "order 1")
    if report:
        raise AssertionError("check_grads found mismatches:\n  " + "\n  ".join(report))
