"""Reductions and scans: sum, mean, prod, max/min, var/std, cumsum/cumprod,
and ``ufunc.reduce`` / ``ufunc.accumulate``.

Axes are normalised to a sorted tuple of *negative* integers at record time
so that every rule also works on (co)tangents with leading batch axes.
Ties in max/min share the gradient equally among the tied elements (as JAX
does), so the result is a valid subgradient and symmetric in the ties.
"""
import numpy as np

from ..core.array import bind
from ..core.primitive import PRIMITIVES, defhandler, defprim, defufunc_method, unsupported


def norm_axes(axis, ndim):
    """Sorted tuple of negative axes; ``None`` means all axes."""
    if axis is None:
        return tuple(range(-ndim, 0))
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    out = []
    for a in axis:
        a = int(a)
        if not -ndim <= a < ndim:
            raise np.exceptions.AxisError(a, ndim)
        out.append(a - ndim if a >= 0 else a)
    if len(set(out)) != len(out):
        raise ValueError("duplicate value in 'axis'")
    return tuple(sorted(out))


def expand_to(g, axes, keepdims, shape):
    """Broadcast a reduced cotangent back over the reduced ``axes`` of ``shape``
    (``g`` may carry leading batch axes)."""
    if not keepdims and axes:
        nb = g.ndim - (len(shape) - len(axes))
        full = list(g.shape[:nb])
        it = iter(g.shape[nb:])
        n = len(shape)
        for i in range(n):
            full.append(1 if (i - n) in axes else next(it))
        g = np.reshape(g, tuple(full))
    return np.broadcast_to(g, g.shape[:g.ndim - len(shape)] + tuple(shape))


def _count(shape, axes):
    n = 1
    for a in axes:
        n *= shape[a]
    return n


# --- sum ----------------------------------------------------------------
def _sum_impl(x, axis, keepdims):
    return np.sum(x, axis=axis, keepdims=keepdims)


defprim("sum", _sum_impl,
        vjp=(lambda g, ans, x, axis, keepdims: expand_to(g, axis, keepdims, x.shape),),
        jvp=(lambda t, ans, x, axis, keepdims: np.sum(t, axis=axis, keepdims=keepdims),),
        save_args=False, save_ans=False)


def _prep(a, axis, dtype, where, initial=None, what="sum"):
    a = a if isinstance(a, np.ndarray) else np.asarray(a)
    if dtype is not None and np.dtype(dtype) != a.dtype:
        a = a.astype(dtype)
    elif a.dtype.kind in "biu":
        a = a.astype(np.result_type(a.dtype, np.int_))
    return a, norm_axes(axis, a.ndim)


@defhandler(np.sum)
def sum_(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=True):
    _no_out(out, "np.sum")
    a, axes = _prep(a, axis, dtype, where)
    if where is not True:
        a = np.where(where, a, np.zeros((), a.dtype))
    r = bind(PRIMITIVES["sum"], (a,), {"axis": axes, "keepdims": bool(keepdims)})
    if initial is not None:
        r = r + initial
    return r


@defhandler(np.mean)
def mean(a, axis=None, dtype=None, out=None, keepdims=False, *, where=True):
    _no_out(out, "np.mean")
    a = a if isinstance(a, np.ndarray) else np.asarray(a)
    if dtype is None and a.dtype.kind in "biu":
        dtype = np.float64
    a, axes = _prep(a, axis, dtype, where)
    if where is not True:
        w = np.broadcast_to(where, a.shape)
        s = sum_(a, axes, where=w, keepdims=keepdims)
        n = np.sum(w, axis=axes, keepdims=keepdims)
        return s / n
    s = bind(PRIMITIVES["sum"], (a,), {"axis": axes, "keepdims": bool(keepdims)})
    return s / np.asarray(_count(a.shape, axes), dtype=s.dtype)


@defhandler(np.var)
def var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=True, mean=None,
        correction=None):
    _no_out(out, "np.var")
    if correction is not None:
        ddof = correction
    a = a if isinstance(a, np.ndarray) else np.asarray(a)
    if a.dtype.kind in "biu":
        a = a.astype(np.float64)
    axes = norm_axes(axis, a.ndim)
    m = np.mean(a, axis=axes, keepdims=True, where=where) if mean is None else mean
    d = a - m
    if d.dtype.kind == "c":
        sq = np.real(d * np.conjugate(d))
    else:
        sq = d * d
    if where is not True:
        w = np.broadcast_to(where, a.shape)
        n = np.sum(w, axis=axes, keepdims=keepdims)
        return np.sum(np.where(w, sq, 0), axis=axes, keepdims=keepdims) / (n - ddof)
    n = _count(a.shape, axes)
    return np.sum(sq, axis=axes, keepdims=keepdims) / (n - ddof)


@defhandler(np.std)
def std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=True, mean=None,
        correction=None):
    return np.sqrt(var(a, axis, dtype, out, ddof, keepdims, where=where, mean=mean,
                       correction=correction))


# --- prod ---------------------------------------------------------------
def _prod_impl(x, axis, keepdims):
    return np.prod(x, axis=axis, keepdims=keepdims)


def _move_flat(x, axes, nb):
    """Move the reduced axes to the end and merge them into one axis."""
    n = x.ndim
    keep = [i for i in range(n) if (i - n) not in axes]
    red = [n + a for a in axes]
    xt = np.transpose(x, keep + red)
    return np.reshape(xt, xt.shape[:len(keep)] + (-1,)), keep, red


def _unmove_flat(y, x_shape_full, keep, red):
    n = len(keep) + len(red)
    perm = keep + red
    shaped = np.reshape(y, tuple(x_shape_full[i] for i in perm))
    inv = [0] * n
    for pos, ax in enumerate(perm):
        inv[ax] = pos
    return np.transpose(shaped, inv)


def _prod_others(x, axes):
    """For each element, the product of the other elements of its reduction
    group: exact with zeros (no division)."""
    xf, keep, red = _move_flat(x, axes, 0)
    ones = np.ones(xf.shape[:-1] + (1,), dtype=xf.dtype)
    left = np.cumprod(np.concatenate([ones, xf[..., :-1]], axis=-1), axis=-1)
    rev = xf[..., ::-1]
    right = np.cumprod(np.concatenate([ones, rev[..., :-1]], axis=-1), axis=-1)[..., ::-1]
    return _unmove_flat(left * right, x.shape, keep, red)


def _cj(x):
    """Complex partials pull back through their conjugate (cotangent
    ``g * conj(d out / d in)``, the convention of the elementwise rules)."""
    return np.conjugate(x) if x.dtype.kind == "c" else x


def _tiny(x):
    """Zeros and subnormals: dividing by them is not exact (1/x overflows for
    a subnormal, and NumPy's complex division forms it: nan), so the rules
    below take their exact, division-free path for them."""
    return np.any(np.abs(x) < np.finfo(x.dtype).tiny)


def _prod_vjp(g, ans, x, axis, keepdims):
    ge = expand_to(g, axis, keepdims, x.shape)
    # a traced test: under jit the branch becomes a guard on this boolean
    # instead of a constant baked into the graph
    if bool(_tiny(x)):
        return ge * _cj(_prod_others(x, axis))
    return ge * _cj(expand_to(ans, axis, keepdims, x.shape) / x)


def _prod_jvp(t, ans, x, axis, keepdims):
    # a traced test: under jit the branch becomes a guard on this boolean
    # instead of a constant baked into the graph
    if bool(_tiny(x)):
        return np.sum(t * _prod_others(x, axis), axis=axis, keepdims=keepdims)
    return np.sum(t / x, axis=axis, keepdims=keepdims) * ans


defprim("prod", _prod_impl, vjp=(_prod_vjp,), jvp=(_prod_jvp,))


@defhandler(np.prod)
def prod(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=True):
    _no_out(out, "np.prod")
    a, axes = _prep(a, axis, dtype, where)
    if where is not True:
        a = np.where(where, a, np.ones((), a.dtype))
    r = bind(PRIMITIVES["prod"], (a,), {"axis": axes, "keepdims": bool(keepdims)})
    if initial is not None:
        r = r * initial
    return r


# --- max / min ------------------------------------------------------------
def _chooser(name, npfunc):
    def impl(x, axis, keepdims):
        return npfunc(x, axis=axis, keepdims=keepdims)

    def mask_count(ans, x, axis, keepdims):
        ae = expand_to(ans, axis, keepdims, x.shape)
        mask = (x == ae) | (np.isnan(x) & np.isnan(ae))
        mask = mask.astype(x.dtype)
        cnt = np.sum(mask, axis=axis, keepdims=True)
        return mask, cnt

    def vjp(g, ans, x, axis, keepdims):
        mask, cnt = mask_count(ans, x, axis, keepdims)
        return expand_to(g, axis, keepdims, x.shape) * (mask / cnt)

    def jvp(t, ans, x, axis, keepdims):
        mask, cnt = mask_count(ans, x, axis, keepdims)
        r = np.sum(t * mask, axis=axis, keepdims=True) / cnt
        if not keepdims:
            r = np.reshape(r, r.shape[:r.ndim - x.ndim] + ans.shape)
        return r

    defprim(name, impl, vjp=(vjp,), jvp=(jvp,))

    def handler(a, axis=None, out=None, keepdims=False, initial=None, where=True):
        _no_out(out, f"np.{name}")
        a = a if isinstance(a, np.ndarray) else np.asarray(a)
        if where is not True or initial is not None:
            if initial is None:
                raise ValueError(f"reduction operation '{name}' with where= requires initial=")
            # a traced initial keeps its derivative (np.asarray would drop it)
            fill = initial if isinstance(initial, np.ndarray) else np.asarray(initial)
            fill = fill.astype(a.dtype) if fill.dtype != a.dtype else fill
            a = np.where(where, a, fill) if where is not True else a
            r = bind(PRIMITIVES[name], (a,), {"axis": norm_axes(axis, a.ndim),
                                             "keepdims": bool(keepdims)})
            return (np.maximum if name == "max" else np.minimum)(r, fill)
        if a.size == 0:
            raise ValueError(f"zero-size array to reduction operation {name} which has no identity")
        return bind(PRIMITIVES[name], (a,), {"axis": norm_axes(axis, a.ndim),
                                             "keepdims": bool(keepdims)})
    return handler


_max = _chooser("max", np.max)
_min = _chooser("min", np.min)
defhandler(np.max, np.amax)(_max)
defhandler(np.min, np.amin)(_min)


@defhandler(np.ptp)
def ptp(a, axis=None, out=None, keepdims=False):
    return _max(a, axis, out, keepdims) - _min(a, axis, out, keepdims)


# --- scans ------------------------------------------------------------------
def _rev_cumsum(g, axis):
    return np.flip(np.cumsum(np.flip(g, axis), axis=axis), axis)


defprim("cumsum", lambda x, axis: np.cumsum(x, axis=axis),
        vjp=(lambda g, ans, x, axis: _rev_cumsum(g, axis),),
        jvp=(lambda t, ans, x, axis: np.cumsum(t, axis=axis),),
        save_args=False, save_ans=False)


def _cumprod_vjp(g, ans, x, axis):
    if not bool(_tiny(x)):
        return _rev_cumsum(g * _cj(ans), axis) / _cj(x)
    # With zeros: dL/dx_i = P_i * S_i where P_i = prod_{k<i} x_k and
    # S_i = g_i + x_{i+1} S_{i+1}; exact, sequential along the axis.
    n = x.shape[axis]
    gm = np.moveaxis(g, axis, 0)
    xm = np.moveaxis(x, axis, 0)
    am = np.moveaxis(ans, axis, 0)
    s = [None] * n
    s[n - 1] = gm[n - 1]
    for i in range(n - 2, -1, -1):
        s[i] = gm[i] + _cj(xm[i + 1]) * s[i + 1]
    ones = np.ones_like(xm[0])
    out = [s[0] * ones] + [_cj(am[i - 1]) * s[i] for i in range(1, n)]
    return np.moveaxis(np.stack(out, axis=0), 0, axis)


def _cumprod_jvp(t, ans, x, axis):
    if not bool(_tiny(x)):
        return ans * np.cumsum(t / x, axis=axis)
    # Exact with zeros: dy_j = dy_{j-1} x_j + y_{j-1} t_j.
    n = x.shape[axis]
    tm = np.moveaxis(t, axis, 0)
    xm = np.moveaxis(x, axis, 0)
    am = np.moveaxis(ans, axis, 0)
    outs = [tm[0]]
    for j in range(1, n):
        outs.append(outs[-1] * xm[j] + am[j - 1] * tm[j])
    return np.moveaxis(np.stack(outs, axis=0), 0, axis)


defprim("cumprod", lambda x, axis: np.cumprod(x, axis=axis),
        vjp=(_cumprod_vjp,), jvp=(_cumprod_jvp,))


def _scan_handler(name):
    def handler(a, axis=None, dtype=None, out=None):
        _no_out(out, f"np.{name}")
        a = a if isinstance(a, np.ndarray) else np.asarray(a)
        if dtype is not None:
            a = a.astype(dtype)
        elif a.dtype.kind in "biu":
            a = a.astype(np.result_type(a.dtype, np.int_))
        if axis is None:
            a = np.ravel(a)
            axis = -1
        (ax,) = norm_axes(axis, a.ndim)
        return bind(PRIMITIVES[name], (a,), {"axis": ax})
    return handler


_cumsum = defhandler(np.cumsum)(_scan_handler("cumsum"))
_cumprod = defhandler(np.cumprod)(_scan_handler("cumprod"))


def _no_out(out, what):
    if out is not None:
        from ..core.array import _inplace_error
        raise _inplace_error(f"{what}(..., out=...)")


# --- ufunc.reduce / ufunc.accumulate -----------------------------------------
def _reduce_handler(func):
    def handler(a, axis=0, dtype=None, out=None, keepdims=False, initial=None, where=True):
        kw = {}
        if initial is not None:
            kw["initial"] = initial
        if where is not True:
            kw["where"] = where
        if func in (_max, _min):
            return func(a, axis=axis, keepdims=keepdims, **kw)
        return func(a, axis=axis, dtype=dtype, keepdims=keepdims, **kw)
    return handler


defufunc_method(np.add, "reduce")(_reduce_handler(sum_))
defufunc_method(np.multiply, "reduce")(_reduce_handler(prod))
defufunc_method(np.maximum, "reduce")(_reduce_handler(_max))
defufunc_method(np.minimum, "reduce")(_reduce_handler(_min))


def _acc_handler(func):
    def handler(a, axis=0, dtype=None, out=None):
        return func(a, axis=axis, dtype=dtype)
    return handler


defufunc_method(np.add, "accumulate")(_acc_handler(_cumsum))
defufunc_method(np.multiply, "accumulate")(_acc_handler(_cumprod))


def _cumext(name, npacc):
    """Running max/min: each output picks one input (the latest one attaining
    the running extremum); the derivative follows that pick."""
    def impl(x, axis):
        return npacc(x, axis=axis)

    def pick(ans, x, axis):
        # Computed with NumPy calls on x and ans (an integer result, no derivative),
        # like np.sort's argsort: a capturing level (jit) records the pick as data
        # in its graph. Concretising x here made jit guard on x's whole value, so
        # every call with new inputs failed the guard and was traced again.
        n = x.shape[axis]
        shape = [1] * x.ndim
        shape[axis] = n
        ar = np.arange(n).reshape(shape)
        return np.maximum.accumulate(np.where(x == ans, ar, 0), axis=axis)

    def vjp(g, ans, x, axis):
        from .indexing import scatter_along
        return scatter_along(g, pick(ans, x, axis), axis, x.shape)

    def jvp(t, ans, x, axis):
        from .indexing import take_along
        return take_along(t, pick(ans, x, axis), axis)

    defprim(name, impl, vjp=(vjp,), jvp=(jvp,))

    def handler(a, axis=0, dtype=None, out=None):
        _no_out(out, f"np.{npacc.__self__.__name__}.accumulate")
        a = a if isinstance(a, np.ndarray) else np.asarray(a)
        (ax,) = norm_axes(axis, a.ndim)
        return bind(PRIMITIVES[name], (a,), {"axis": ax})
    return handler


defufunc_method(np.maximum, "accumulate")(_cumext("cummax", np.maximum.accumulate))
defufunc_method(np.minimum, "accumulate")(_cumext("cummin", np.minimum.accumulate))

__all__ = ["norm_axes", "expand_to", "unsupported"]
