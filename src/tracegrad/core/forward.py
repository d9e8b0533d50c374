"""Forward mode: tangents carried alongside values as the code runs.

A :class:`ForwardLevel` tags each traced value with its tangent. When a
primitive runs, the level applies the primitive's JVP rule to the input
tangents (with itself hidden, so the rule's NumPy calls are recorded only by
outer levels). Tangents may carry ``nb`` leading batch axes: ``jacfwd``
pushes every basis direction through one run.
"""
import numpy as np

from .array import TracedArray, captured
from .tape import Level, hidden


def _align(t, nb, ndim):
    """Insert axes after the batch axes so a tangent of a lower-rank operand
    broadcasts against the output like its primal does."""
    missing = ndim - (t.ndim - nb)
    if missing <= 0 or nb == 0:
        return t
    return np.reshape(t, t.shape[:nb] + (1,) * missing + t.shape[nb:])


def elementwise_jvp(prim, ts, ans, args, nb):
    out = None
    ndim = ans.ndim
    for i, t in enumerate(ts):
        if t is None:
            continue
        p = prim.partials[i]
        if p is None:
            continue
        t = _align(t, nb, ndim)
        if callable(p):
            if prim.singular:
                with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                    d = p(ans, *args)
                    c = t * d
                    if captured(d) or not np.isfinite(d._v if type(d) is TracedArray
                                                      else d).all():
                        c = np.where(t == 0, np.zeros((), c.dtype), c)
            else:
                c = t * p(ans, *args)
        else:
            c = t if p == 1 else (-t if p == -1 else t * p)
        out = c if out is None else out + c
    return out


def apply_jvp(prim, ts, ans, args, params, nb):
    """Output tangent(s) of ``prim`` given input tangents (``None`` = zero)."""
    if prim.elementwise:
        return elementwise_jvp(prim, ts, ans, args, nb)
    rule = prim.jvp
    if rule is None:
        raise NotImplementedError(f"primitive {prim.name} has no JVP rule")
    if callable(rule):
        return rule(ts, ans, *args, **params)
    out = None
    for i, t in enumerate(ts):
        if t is None or i >= len(rule) or rule[i] is None:
            continue
        c = rule[i](t, ans, *args, **params)
        if out is None:
            out = c
        elif type(out) is tuple:
            out = tuple(a + b for a, b in zip(out, c))
        else:
            out = out + c
    return out


def _fit_tangent(t, ans, nb):
    if t is None:
        return None
    if type(t) is not TracedArray and type(t) is not np.ndarray:
        t = np.asarray(t)
    want = t.shape[:nb] + ans.shape
    if t.shape != want:
        t = np.broadcast_to(t, want)
    if t.dtype != ans.dtype:
        if t.dtype.kind == "c" and ans.dtype.kind != "c":
            t = np.real(t)
        if t.dtype != ans.dtype:
            t = t.astype(ans.dtype)
    return t


class ForwardLevel(Level):
    """A forward-mode level with ``nb`` leading batch axes on its tangents."""

    __slots__ = ("nb",)

    def __init__(self, nb=0):
        super().__init__()
        self.nb = nb

    def process(self, prim, args, t, params, tags):
        if prim.nondiff:
            return
        ts = [a._tg.get(self) if type(a) is TracedArray else None for a in args]
        if all(x is None for x in ts):
            return
        with hidden(self):
            tout = apply_jvp(prim, ts, t, args, params, self.nb)
            tout = _fit_tangent(tout, t, self.nb)
        if tout is not None:
            tags[self] = tout

    def process_multi(self, prim, args, outs, params):
        if prim.nondiff:
            return
        ts = [a._tg.get(self) if type(a) is TracedArray else None for a in args]
        if all(x is None for x in ts):
            return
        with hidden(self):
            touts = apply_jvp(prim, ts, outs, args, params, self.nb)
            if touts is None:
                return
            touts = [_fit_tangent(x, o, self.nb) for x, o in zip(touts, outs)]
        for o, x in zip(outs, touts):
            if x is not None and o.dtype.kind in "fc":
                o._tg[self] = x


def forward_walk(tape, seeds):
    """Push tangents ``seeds`` ({var: tangent}) forwards through a recorded
    tape, applying each node's JVP rule to its saved values. Returns the
    tangents of every variable reached."""
    tans = dict(seeds)
    for node in tape.nodes:
        ts = [tans.get(v) if v >= 0 else None for v in node.ins]
        if all(t is None for t in ts):
            continue
        prim = node.prim
        out = node.out
        from .reverse import saved
        args, ans = saved(node)
        if type(out) is int:
            nb = next(t.ndim - _nd(a) for t, a in zip(ts, args) if t is not None)
            t = apply_jvp(prim, ts, ans, args, node.params, nb)
            t = _fit_tangent(t, ans, nb)
            if t is not None:
                tans[out] = t
        else:
            nb = next(t.ndim - _nd(a) for t, a in zip(ts, args) if t is not None)
            touts = apply_jvp(prim, ts, ans, args, node.params, nb)
            for v, t, a in zip(out, touts, ans):
                if v >= 0 and t is not None:
                    tans[v] = _fit_tangent(t, a, nb)
    return tans


def _nd(a):
    return a.ndim if hasattr(a, "ndim") else np.ndim(a)
