"""Signal processing and calculus: convolve/correlate, gradient, interp,
trapezoid, polynomials (polyval, polyder, polyint, polymul, polydiv,
polyfit, vander), pad (every mode), linspace/logspace/geomspace, meshgrid,
select, piecewise, cov/corrcoef, ediff1d, unwrap, nan_to_num.

One primitive carries a rule here: ``convolve``, the *full* 1-D convolution
along the last axis with broadcasting leading axes (so batched cotangents
and tangents go through one call). Its VJP is again a full convolution (with
the conjugated, reversed other operand) followed by a slice, so it
differentiates to any order. Every other function is a handler composing
recorded primitives (``getitem``, ``concatenate``, ``where``, arithmetic,
``take_along``...), written after NumPy's own implementation so that values
match NumPy's bit for bit where the arithmetic is the same.

Conventions (tested in ``tests/rules/test_signal.py``)
------------------------------------------------------
* ``np.interp``: the derivative with respect to ``x`` is the slope of the
  interval NumPy uses, ``xp[j] <= x < xp[j+1]``: at a knot it is the
  right-hand slope; at ``x == xp[-1]`` and outside ``[xp[0], xp[-1]]`` it is
  0 (the extension is constant). Derivatives with respect to ``xp`` and
  ``fp`` follow from the same formula (``left``/``right`` too when traced).
* ``np.pad(mode='empty')`` fills the pad area with zeros (NumPy leaves it
  uninitialised); its derivative there is 0.
* ``np.polymul`` / ``np.polydiv`` trim leading zero coefficients on the
  concrete values, as ``np.poly1d`` does; the derivative follows the
  executed (trimmed) computation.
* ``np.unwrap`` adds a piecewise-constant multiple of the period, so its
  derivative is the identity; ``period``/``discont`` must not be traced.
* ``np.gradient`` with traced, exactly uniform coordinates uses the
  non-uniform formula (NumPy's uniform shortcut would drop the derivative
  with respect to all spacings but the first); values agree to rounding.
"""
import operator
import warnings

import numpy as np
try:
    from numpy.lib.array_utils import normalize_axis_index, normalize_axis_tuple
except ImportError:  # NumPy < 2.0
    from numpy.core.multiarray import normalize_axis_index
    from numpy.core.numeric import normalize_axis_tuple

from ..core.array import TracedArray, bind, concrete
from ..core.forward import _align
from ..core.primitive import PRIMITIVES, defhandler, defprim, unsupported
from .indexing import normalize_key

_NoValue = np._NoValue


def _asarr(a):
    return a if isinstance(a, np.ndarray) else np.asarray(a)


def _plain(x):
    return x._v if type(x) is TracedArray else x


def _is_traced(x):
    return type(x) is TracedArray


def _at(axis, s, ndim):
    """Index tuple selecting ``s`` along ``axis`` of an ``ndim``-array."""
    key = [slice(None)] * ndim
    key[axis] = s
    return tuple(key)


# --- convolution -------------------------------------------------------------------------
def _conv_impl(a, v):
    """Full convolution along the last axis, leading axes broadcast."""
    if a.ndim == 1 and v.ndim == 1:
        return np.convolve(a, v)
    n, m = a.shape[-1], v.shape[-1]
    if m > n:
        a, v, n, m = v, a, m, n
    lead = np.broadcast_shapes(a.shape[:-1], v.shape[:-1])
    out = np.zeros(lead + (n + m - 1,), np.result_type(a, v))
    for j in range(m):
        out[..., j:j + n] += v[..., j:j + 1] * a
    return out


def conv_full(a, v):
    """Full convolution along the last axis (the ``convolve`` primitive)."""
    return bind(PRIMITIVES["convolve"], (a, v), {})


def _flipc(x):
    r = x[..., ::-1]
    return np.conjugate(r) if np.iscomplexobj(r) else r


def _conv_vjp_a(g, ans, a, v):
    n, m = a.shape[-1], v.shape[-1]
    return conv_full(g, _flipc(v))[..., m - 1:m - 1 + n]


def _conv_vjp_v(g, ans, a, v):
    n, m = a.shape[-1], v.shape[-1]
    return conv_full(g, _flipc(a))[..., n - 1:n - 1 + m]


defprim("convolve", _conv_impl,
        vjp=(_conv_vjp_a, _conv_vjp_v),
        jvp=(lambda t, ans, a, v: conv_full(_align(t, t.ndim - a.ndim, ans.ndim), v),
             lambda t, ans, a, v: conv_full(a, _align(t, t.ndim - v.ndim, ans.ndim))),
        doc="full 1-D convolution along the last axis, leading axes broadcast")

_MODES = {0: "valid", 1: "same", 2: "full", "valid": "valid", "same": "same", "full": "full"}


def _conv_args(a, v, what):
    a = _asarr(a)
    v = _asarr(v)
    if a.ndim == 0:
        a = np.reshape(a, (1,))
    if v.ndim == 0:
        v = np.reshape(v, (1,))
    if a.ndim > 1 or v.ndim > 1:
        raise ValueError(f"{what}: object too deep for desired array")
    if a.shape[0] == 0:
        raise ValueError("a cannot be empty")
    if v.shape[0] == 0:
        raise ValueError("v cannot be empty")
    return a, v


def _mode(mode):
    try:
        return _MODES[mode]
    except (KeyError, TypeError):
        raise ValueError(f"mode must be one of 'valid', 'same', or 'full' (got {mode!r})") \
            from None


def _cut(full, n, m, mode, same_start):
    mn, mx = min(n, m), max(n, m)
    if mode == "full":
        return full
    if mode == "valid":
        return full[mn - 1:mx]
    return full[same_start:same_start + mx]


@defhandler(np.convolve)
def convolve(a, v, mode="full"):
    a, v = _conv_args(a, v, "np.convolve")
    n, m = a.shape[0], v.shape[0]
    return _cut(conv_full(a, v), n, m, _mode(mode), (min(n, m) - 1) // 2)


@defhandler(np.correlate)
def correlate(a, v, mode="valid"):
    a, v = _conv_args(a, v, "np.correlate")
    n, m = a.shape[0], v.shape[0]
    mn = min(n, m)
    start = (mn - 1) // 2 if n >= m else mn // 2
    return _cut(conv_full(a, _flipc(v)), n, m, _mode(mode), start)


# --- differences and integrals ---------------------------------------------------------------
@defhandler(np.ediff1d)
def ediff1d(ary, to_end=None, to_begin=None):
    ary = np.ravel(_asarr(ary))
    dtype_req = ary.dtype
    parts = []
    for extra, name in ((to_begin, "to_begin"), (to_end, "to_end")):
        if extra is None:
            parts.append(None)
            continue
        extra = _asarr(extra)
        if not np.can_cast(_plain(extra), dtype_req, casting="same_kind"):
            raise TypeError(f"dtype of `{name}` must be compatible with input `ary` under the "
                            f"`same_kind` rule.")
        extra = np.ravel(extra)
        parts.append(extra.astype(dtype_req) if extra.dtype != dtype_req else extra)
    body = ary[1:] - ary[:-1]
    seq = [p for p in (parts[0], body, parts[1]) if p is not None]
    return np.concatenate(seq) if len(seq) > 1 else body


@defhandler(np.gradient)
def gradient(f, *varargs, axis=None, edge_order=1):
    f = _asarr(f)
    N = f.ndim
    axes = tuple(range(N)) if axis is None else normalize_axis_tuple(axis, N)
    len_axes = len(axes)
    n = len(varargs)
    if n == 0:
        dx = [1.0] * len_axes
    elif n == 1 and np.ndim(varargs[0]) == 0:
        dx = list(varargs) * len_axes
    elif n == len_axes:
        dx = list(varargs)
        for i, distances in enumerate(dx):
            distances = _asarr(distances)
            if distances.ndim == 0:
                continue
            if distances.ndim != 1:
                raise ValueError("distances must be either scalars or 1d")
            if len(distances) != f.shape[axes[i]]:
                raise ValueError("when 1d, distances must match the length of the "
                                 "corresponding dimension")
            if np.issubdtype(distances.dtype, np.integer):
                distances = distances.astype(np.float64)
            diffx = distances[1:] - distances[:-1]
            dv = _plain(diffx)
            # NumPy switches to the uniform formula when the spacing is exactly
            # uniform; with traced coordinates that shortcut would drop the
            # derivative with respect to all but the first spacing, so the
            # (equal-valued) non-uniform formula is used instead.
            if (dv == dv[0]).all() and not _is_traced(diffx):
                diffx = diffx[0]
            dx[i] = diffx
    else:
        raise TypeError("invalid number of arguments")
    if edge_order > 2:
        raise ValueError("'edge_order' greater than 2 not supported")
    otype = f.dtype
    if not np.issubdtype(otype, np.inexact):
        f = f.astype(np.float64)
        otype = np.dtype(np.float64)

    outvals = []
    for ax, ax_dx in zip(axes, dx):
        if f.shape[ax] < edge_order + 1:
            raise ValueError("Shape of array too small to calculate a numerical gradient, at "
                             "least (edge_order + 1) elements are required.")

        def sl(s, ax=ax):
            return f[_at(ax, s, N)]
        uniform = np.ndim(ax_dx) == 0
        if uniform:
            mid = (sl(slice(2, None)) - sl(slice(None, -2))) / (2. * ax_dx)
        else:
            dx1 = ax_dx[0:-1]
            dx2 = ax_dx[1:]
            shape = [1] * N
            shape[ax] = -1
            a = np.reshape(-(dx2) / (dx1 * (dx1 + dx2)), shape)
            b = np.reshape((dx2 - dx1) / (dx1 * dx2), shape)
            c = np.reshape(dx1 / (dx2 * (dx1 + dx2)), shape)
            mid = a * sl(slice(None, -2)) + b * sl(slice(1, -1)) + c * sl(slice(2, None))
        if edge_order == 1:
            dx_0 = ax_dx if uniform else ax_dx[0]
            dx_n = ax_dx if uniform else ax_dx[-1]
            first = (sl(slice(1, 2)) - sl(slice(0, 1))) / dx_0
            last = (sl(slice(-1, None)) - sl(slice(-2, -1))) / dx_n
        else:
            if uniform:
                a, b, c = -1.5 / ax_dx, 2. / ax_dx, -0.5 / ax_dx
            else:
                dx1, dx2 = ax_dx[0], ax_dx[1]
                a = -(2. * dx1 + dx2) / (dx1 * (dx1 + dx2))
                b = (dx1 + dx2) / (dx1 * dx2)
                c = - dx1 / (dx2 * (dx1 + dx2))
            first = a * sl(slice(0, 1)) + b * sl(slice(1, 2)) + c * sl(slice(2, 3))
            if uniform:
                a, b, c = 0.5 / ax_dx, -2. / ax_dx, 1.5 / ax_dx
            else:
                dx1, dx2 = ax_dx[-2], ax_dx[-1]
                a = (dx2) / (dx1 * (dx1 + dx2))
                b = - (dx2 + dx1) / (dx1 * dx2)
                c = (2. * dx2 + dx1) / (dx2 * (dx1 + dx2))
            last = a * sl(slice(-3, -2)) + b * sl(slice(-2, -1)) + c * sl(slice(-1, None))
        parts = [_asarr(p) for p in (first, mid, last)]
        parts = [p.astype(otype) if p.dtype != otype else p for p in parts]
        outvals.append(np.concatenate(parts, axis=ax))
    if len_axes == 1:
        return outvals[0]
    return tuple(outvals)


def _trapezoid(y, x=None, dx=1.0, axis=-1):
    y = _asarr(y)
    if x is None:
        d = dx
    else:
        x = _asarr(x)
        if x.ndim == 1:
            d = x[1:] - x[:-1]
            shape = [1] * y.ndim
            shape[axis] = d.shape[0]
            d = np.reshape(d, shape)
        else:
            d = np.diff(x, axis=axis)
    nd = y.ndim
    s1 = _at(axis, slice(1, None), nd)
    s2 = _at(axis, slice(None, -1), nd)
    return np.sum(d * (y[s1] + y[s2]) / 2.0, axis)


for _name in ("trapezoid", "trapz"):  # trapezoid is NumPy >= 2.0; trapz was removed in 2.4
    if hasattr(np, _name):
        defhandler(getattr(np, _name))(_trapezoid)


# --- interpolation ----------------------------------------------------------------------------
@defhandler(np.interp)
def interp(x, xp, fp, left=None, right=None, period=None):
    x, xp, fp = _asarr(x), _asarr(xp), _asarr(fp)
    dtype = np.complex128 if np.iscomplexobj(_plain(fp)) else np.float64
    if x.dtype != np.float64:
        x = x.astype(np.float64)
    if xp.dtype != np.float64:
        xp = xp.astype(np.float64)
    if fp.dtype != dtype:
        fp = fp.astype(dtype)
    if fp.ndim != 1 or xp.ndim != 1:
        raise ValueError("object too deep for desired array" if max(fp.ndim, xp.ndim) > 1
                         else "object of too small depth for desired array")
    if xp.shape[0] != fp.shape[0]:
        raise ValueError("fp and xp are not of the same length.")
    if xp.shape[0] == 0:
        raise ValueError("array of sample points is empty")
    if period is not None:
        if _is_traced(period):
            raise unsupported("np.interp(..., period=<traced>)")
        if period == 0:
            raise ValueError("period must be a non-zero value")
        period = abs(period)
        left = right = None
        x = x % period
        xp = xp % period
        order = np.argsort(xp)
        xp = _gather(xp, order)
        fp = _gather(fp, order)
        xp = np.concatenate((xp[-1:] - period, xp, xp[0:1] + period))
        fp = np.concatenate((fp[-1:], fp, fp[0:1]))
    n = xp.shape[0]
    # Intervals and masks are computed from the traced arrays (searchsorted
    # and comparisons are recorded non-differentiable primitives), so that
    # under jit they are part of the graph and not constants of the first call.
    lv = fp[0] if left is None else left
    rv = fp[-1] if right is None else right
    if n == 1:
        res = np.where(x < xp[0], lv, np.where(x > xp[0], rv, fp[0]))
        return _cast(res, dtype)
    j = np.clip(np.searchsorted(xp, x, side="right") - 1, 0, n - 2)
    xj, fj = _gather(xp, j), _gather(fp, j)
    slope = (_gather(fp, j + 1) - fj) / (_gather(xp, j + 1) - xj)
    res = slope * (x - xj) + fj
    res = np.where(x == xp[-1], fp[-1], res)
    res = np.where(x > xp[-1], rv, res)
    res = np.where(x < xp[0], lv, res)
    return _cast(res, dtype)


def _gather(a, idx):
    """``a[idx]`` for a 1-D ``a`` and an integer array ``idx`` of any shape
    that may be traced (a ``take_along`` node, which jit replays with the
    index computed at run time)."""
    idx = _asarr(idx)
    if not _is_traced(idx):
        return a[idx]
    from .indexing import take_along
    return np.reshape(take_along(a, np.ravel(idx), -1), idx.shape)


def _cast(r, dtype):
    r = _asarr(r)
    return r.astype(dtype) if r.dtype != dtype else r


# --- polynomials -----------------------------------------------------------------------------
def _no_poly1d(*args, what):
    if any(isinstance(a, np.poly1d) for a in args):
        raise unsupported(f"{what} with np.poly1d arguments (pass coefficient arrays)")


@defhandler(np.polyval)
def polyval(p, x):
    _no_poly1d(p, x, what="np.polyval")
    p = _asarr(p)
    x = _asarr(x)
    y = np.zeros_like(_plain(x))
    for pv in p:
        y = y * x + pv
    return y


@defhandler(np.polyder)
def polyder(p, m=1):
    _no_poly1d(p, what="np.polyder")
    m = int(m)
    if m < 0:
        raise ValueError("Order of derivative must be positive (see polyint)")
    p = _asarr(p)
    for _ in range(m):
        n = len(p) - 1
        p = p[:-1] * np.arange(n, 0, -1)
    return p


@defhandler(np.polyint)
def polyint(p, m=1, k=None):
    _no_poly1d(p, what="np.polyint")
    m = int(m)
    if m < 0:
        raise ValueError("Order of integral must be positive (see polyder)")
    if k is None:
        k = np.zeros(m, float)
    k = np.atleast_1d(k)
    if len(k) == 1 and m > 1:
        k = k[0] * np.ones(m, float)
    if len(k) < m:
        raise ValueError("k must be a scalar or a rank-1 array of length 1 or >m.")
    p = _asarr(p)
    for i in range(m):
        p = np.concatenate((p / np.arange(len(p), 0, -1), k[i:i + 1]))
    return p


def _trim_leading(a):
    """Leading zero coefficients dropped, as ``np.poly1d`` does."""
    a = np.atleast_1d(a)
    # traced tests: under jit the trimmed length is guarded, not baked in
    nonzero = a != 0
    if not bool(np.any(nonzero)):
        return np.zeros(1, a.dtype)
    first = int(np.argmax(nonzero))
    return a[first:] if first else a


@defhandler(np.polymul)
def polymul(a1, a2):
    _no_poly1d(a1, a2, what="np.polymul")
    return np.convolve(_trim_leading(a1), _trim_leading(a2))


@defhandler(np.polydiv)
def polydiv(u, v):
    _no_poly1d(u, v, what="np.polydiv")
    u = np.atleast_1d(u) + 0.0
    v = np.atleast_1d(v) + 0.0
    w = u[0] + v[0]
    m = len(u) - 1
    n = len(v) - 1
    scale = 1. / v[0]
    r = u.astype(w.dtype) if u.dtype != w.dtype else u
    qs = []
    for k in range(m - n + 1):
        d = scale * r[k]
        qs.append(d)
        r = np.concatenate([r[:k], r[k:k + n + 1] - d * v, r[k + n + 1:]])
    q = np.stack(qs) if qs else np.zeros((1,), w.dtype)
    # a traced test (the trimmed length is guarded under jit, not baked in)
    while r.shape[-1] > 1 and bool(np.allclose(r[0], 0, rtol=1e-14)):
        r = r[1:]
    return q, r


@defhandler(np.vander)
def vander(x, N=None, increasing=False):
    x = _asarr(x)
    if x.ndim != 1:
        raise ValueError("x must be a one-dimensional array or sequence.")
    if N is None:
        N = len(x)
    dt = np.promote_types(x.dtype, int)
    if N == 0:
        return np.zeros((len(x), 0), dt)
    cols = [np.ones((len(x), 1), dt)]
    if N > 1:
        xs = x.astype(dt) if x.dtype != dt else x
        cols.append(np.cumprod(np.broadcast_to(xs[:, None], (len(x), N - 1)), axis=1))
    v = np.concatenate(cols, axis=1) if len(cols) > 1 else cols[0]
    return v if increasing else v[:, ::-1]


@defhandler(np.polyfit)
def polyfit(x, y, deg, rcond=None, full=False, w=None, cov=False):
    from ..core.primitive import FUNCTION_HANDLERS
    if np.linalg.lstsq not in FUNCTION_HANDLERS:
        raise unsupported("np.polyfit (it needs np.linalg.lstsq, which has no rule yet)")
    order = int(deg) + 1
    x = _asarr(x) + 0.0
    y = _asarr(y) + 0.0
    if deg < 0:
        raise ValueError("expected deg >= 0")
    if x.ndim != 1:
        raise TypeError("expected 1D vector for x")
    if x.size == 0:
        raise TypeError("expected non-empty vector for x")
    if y.ndim < 1 or y.ndim > 2:
        raise TypeError("expected 1D or 2D array for y")
    if x.shape[0] != y.shape[0]:
        raise TypeError("expected x and y to have same length")
    if rcond is None:
        rcond = len(x) * np.finfo(x.dtype).eps
    lhs = vander(x, order)
    rhs = y
    if w is not None:
        w = _asarr(w) + 0.0
        if w.ndim != 1:
            raise TypeError("expected a 1-d array for weights")
        if w.shape[0] != y.shape[0]:
            raise TypeError("expected w and y to have the same length")
        lhs = lhs * w[:, None]
        rhs = rhs * (w[:, None] if rhs.ndim == 2 else w)
    scale = np.sqrt(np.sum(lhs * lhs, axis=0))
    lhs = lhs / scale
    c, resids, rank, s = np.linalg.lstsq(lhs, rhs, rcond)
    c = (c.T / scale).T
    if rank != order and not full:
        warnings.warn("Polyfit may be poorly conditioned", np.exceptions.RankWarning,
                      stacklevel=2)
    if full:
        return c, resids, rank, s, rcond
    if cov:
        Vbase = np.linalg.inv(np.dot(lhs.T, lhs))
        Vbase = Vbase / np.outer(scale, scale)
        if cov == "unscaled":
            fac = 1
        else:
            if len(x) <= order:
                raise ValueError("the number of data points must exceed order to scale the "
                                 "covariance matrix")
            fac = resids / (len(x) - order)
        if y.ndim == 1:
            return c, Vbase * fac
        return c, Vbase[:, :, None] * fac
    return c


# --- pad ----------------------------------------------------------------------------------
_PAD_KW = {
    "empty": [], "edge": [], "wrap": [],
    "constant": ["constant_values"], "linear_ramp": ["end_values"],
    "maximum": ["stat_length"], "mean": ["stat_length"], "median": ["stat_length"],
    "minimum": ["stat_length"], "reflect": ["reflect_type"], "symmetric": ["reflect_type"],
}
_PAD_STATS = {"maximum": np.amax, "minimum": np.amin, "mean": np.mean, "median": np.median}


def _index_pairs(x, ndim):
    """NumPy's ``_as_pairs(x, ndim, as_index=True)`` (plain integers)."""
    if x is None:
        return ((None, None),) * ndim
    # widths are shapes: a traced one is concretised (jit guards it)
    x = np.round(np.array(concrete(x, "index"))).astype(np.intp, copy=False)
    if x.ndim < 3:
        if x.size == 1:
            x = x.ravel()
            if x[0] < 0:
                raise ValueError("index can't contain negative values")
            return ((int(x[0]), int(x[0])),) * ndim
        if x.size == 2 and x.shape != (2, 1):
            x = x.ravel()
            if x[0] < 0 or x[1] < 0:
                raise ValueError("index can't contain negative values")
            return ((int(x[0]), int(x[1])),) * ndim
    if x.min() < 0:
        raise ValueError("index can't contain negative values")
    return [tuple(int(e) for e in row) for row in np.broadcast_to(x, (ndim, 2)).tolist()]


def _value_pairs(x, ndim):
    """``_as_pairs(x, ndim)`` for values that may be traced."""
    arr = x if _is_traced(x) else np.array(x)
    if arr.ndim < 3:
        if arr.size == 1:
            v = np.ravel(arr)[0]
            return ((v, v),) * ndim
        if arr.size == 2 and arr.shape != (2, 1):
            r = np.ravel(arr)
            return ((r[0], r[1]),) * ndim
    b = np.broadcast_to(arr, (ndim, 2))
    return [(b[i, 0], b[i, 1]) for i in range(ndim)]


def _fill(value, shape, dtype):
    return np.broadcast_to(_cast(value, dtype), shape)


def _pad_reflect(cur, ax, b, a, odd, include_edge):
    """NumPy's iterative reflection (``_set_reflect_both``), out of place."""
    nd = cur.ndim
    n0 = cur.shape[ax]
    left, right = b, a
    while left > 0 or right > 0:
        L = cur.shape[ax]
        if include_edge:
            old = L // n0 * n0
            off = 1
        else:
            old = (L - 1) // (n0 - 1) * (n0 - 1)
            off = 0
        lchunk = rchunk = None
        if left > 0:
            ch = min(old, left)
            idx = np.arange(ch - off, -off, -1)
            lchunk = np.take(cur, idx, axis=ax)
            if odd:
                lchunk = 2 * cur[_at(ax, slice(0, 1), nd)] - lchunk
            left -= ch
        if right > 0:
            ch = min(old, right)
            start = L + off - 2
            idx = np.arange(start, start - ch, -1)
            rchunk = np.take(cur, idx, axis=ax)
            if odd:
                rchunk = 2 * cur[_at(ax, slice(L - 1, L), nd)] - rchunk
            right -= ch
        cur = np.concatenate([p for p in (lchunk, cur, rchunk) if p is not None], axis=ax)
    return cur


def _pad_axis(cur, ax, b, a, mode, extra):
    nd = cur.ndim
    n = cur.shape[ax]
    dtype = cur.dtype

    def shape_with(k):
        s = list(cur.shape)
        s[ax] = k
        return tuple(s)

    if mode in ("constant", "empty"):
        vb, va = extra
        parts = [_fill(vb, shape_with(b), dtype), cur, _fill(va, shape_with(a), dtype)]
        return np.concatenate(parts, axis=ax)
    if mode == "edge":
        return np.take(cur, np.clip(np.arange(-b, n + a), 0, n - 1), axis=ax)
    if mode == "wrap":
        return np.take(cur, np.pad(np.arange(n), (b, a), mode="wrap"), axis=ax)
    if mode in ("reflect", "symmetric"):
        if n == 1:
            return np.take(cur, np.zeros(n + b + a, np.intp), axis=ax)
        odd = extra == "odd"
        if not odd:
            return np.take(cur, np.pad(np.arange(n), (b, a), mode=mode), axis=ax)
        return _pad_reflect(cur, ax, b, a, True, mode == "symmetric")
    if mode == "linear_ramp":
        eb, ea = extra
        edge_l = np.squeeze(cur[_at(ax, slice(0, 1), nd)], axis=ax)
        edge_r = np.squeeze(cur[_at(ax, slice(n - 1, n), nd)], axis=ax)
        lr = linspace(eb, edge_l, num=b, endpoint=False, dtype=dtype, axis=ax)
        rr = linspace(ea, edge_r, num=a, endpoint=False, dtype=dtype, axis=ax)
        rr = rr[_at(ax, slice(None, None, -1), nd)]
        return np.concatenate([lr, cur, rr], axis=ax)
    # statistics
    func = _PAD_STATS[mode]
    ll, rl = extra
    if ll is None or n < ll:
        ll = n
    if rl is None or n < rl:
        rl = n
    if (ll == 0 or rl == 0) and func in (np.amax, np.amin):
        raise ValueError("stat_length of 0 yields no value for padding")
    lstat = _round_int(func(cur[_at(ax, slice(0, ll), nd)], axis=ax, keepdims=True), dtype)
    if ll == rl == n:
        rstat = lstat
    else:
        rstat = _round_int(func(cur[_at(ax, slice(n - rl, n), nd)], axis=ax, keepdims=True),
                           dtype)
    return np.concatenate([_fill(lstat, shape_with(b), dtype), cur,
                           _fill(rstat, shape_with(a), dtype)], axis=ax)


def _round_int(stat, dtype):
    if np.issubdtype(dtype, np.integer):
        stat = np.round(stat)
    return stat


@defhandler(np.pad)
def pad(array, pad_width, mode="constant", **kwargs):
    array = _asarr(array)
    if isinstance(pad_width, dict):
        seq = [(0, 0)] * array.ndim
        for ax, width in pad_width.items():
            seq[ax] = (width, width) if isinstance(width, int) else tuple(width)
        pad_width = seq
    pw = np.asarray(concrete(pad_width, "index"))
    if pw.dtype.kind != "i":
        raise TypeError("`pad_width` must be of integral type.")
    widths = _index_pairs(pw, array.ndim)
    if callable(mode):
        raise unsupported("np.pad with a callable mode")
    if mode not in _PAD_KW:
        raise ValueError(f"mode '{mode}' is not supported")
    bad = set(kwargs) - set(_PAD_KW[mode])
    if bad:
        raise ValueError(f"unsupported keyword arguments for mode '{mode}': {bad}")
    nd = array.ndim
    if mode == "constant":
        extras = _value_pairs(kwargs.get("constant_values", 0), nd)
    elif mode == "empty":
        extras = ((0, 0),) * nd
    elif mode == "linear_ramp":
        extras = _value_pairs(kwargs.get("end_values", 0), nd)
    elif mode in _PAD_STATS:
        extras = _index_pairs(kwargs.get("stat_length"), nd)
    elif mode in ("reflect", "symmetric"):
        extras = (kwargs.get("reflect_type", "even"),) * nd
    else:
        extras = (None,) * nd
    if array.size == 0 and mode not in ("constant", "empty"):
        for ax, (b, a) in enumerate(widths):
            if array.shape[ax] == 0 and (b or a):
                raise ValueError(f"can't extend empty axis {ax} using modes other than "
                                 f"'constant' or 'empty'")
        mode, extras = "constant", ((0, 0),) * nd
    cur = array
    for ax, ((b, a), extra) in enumerate(zip(widths, extras)):
        if b == 0 and a == 0:
            continue
        cur = _pad_axis(cur, ax, b, a, mode, extra)
    if cur is array:
        return np.copy(array)
    return cur


# --- ranges and grids ------------------------------------------------------------------------
def _weak(v):
    return v if type(v) in (int, float, complex) else _plain(_asarr(v))


@defhandler(np.linspace)
def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0, *,
             device=None):
    num = operator.index(num)
    if num < 0:
        raise ValueError(f"Number of samples, {num}, must be non-negative.")
    div = (num - 1) if endpoint else num
    dt = np.result_type(_weak(start), _weak(stop))
    if dt.kind not in "fc":
        dt = np.result_type(dt, 1.0)
    if dtype is None:
        dtype = dt
        integer_dtype = False
    else:
        integer_dtype = np.issubdtype(dtype, np.integer)
    start = _asarr(start)
    stop = _asarr(stop)
    start = start.astype(dt) if start.dtype != dt else start
    stop = stop.astype(dt) if stop.dtype != dt else stop
    delta = stop - start
    y = np.arange(0, num, dtype=dt).reshape((-1,) + (1,) * np.ndim(delta))
    if div > 0:
        step = delta / div
        if bool(np.any(step == 0)):       # traced: a jit guard
            y = y / div
            y = y * delta
        else:
            y = y * step
    else:
        step = np.nan
        y = y * delta
    y = y + start
    if endpoint and num > 1:
        y = np.concatenate([y[:-1], np.broadcast_to(stop, (1,) + tuple(y.shape[1:]))], axis=0)
    if axis != 0:
        y = np.moveaxis(y, 0, axis)
    if integer_dtype:
        y = np.floor(y)
    y = _asarr(y)
    if y.dtype != np.dtype(dtype):
        y = y.astype(dtype)
    if retstep:
        return y, step
    return y


@defhandler(np.logspace)
def logspace(start, stop, num=50, endpoint=True, base=10.0, dtype=None, axis=0):
    if not isinstance(base, (float, int)) and np.ndim(base):
        ndmax = len(np.broadcast_shapes(np.shape(start), np.shape(stop), np.shape(base)))

        def nd(a):
            a = _asarr(a)
            return np.reshape(a, (1,) * (ndmax - a.ndim) + a.shape)
        start, stop, base = nd(start), nd(stop), nd(base)
        base = np.expand_dims(base, axis=axis)
    y = linspace(start, stop, num=num, endpoint=endpoint, axis=axis)
    r = np.power(base, y)
    return r if dtype is None else _asarr(r).astype(dtype)


@defhandler(np.geomspace)
def geomspace(start, stop, num=50, endpoint=True, dtype=None, axis=0):
    start = _asarr(start)
    stop = _asarr(stop)
    # traced tests and sign: under jit they follow each call's values
    if bool(np.any(start == 0)) or bool(np.any(stop == 0)):
        raise ValueError("Geometric sequence cannot include zero")
    dt = np.result_type(_plain(start), _plain(stop), float(num), np.zeros((), dtype))
    dtype = dt if dtype is None else np.dtype(dtype)
    start = start.astype(dt)
    stop = stop.astype(dt)
    out_sign = np.sign(start)
    start = start / out_sign
    stop = stop / out_sign
    result = logspace(np.log10(start), np.log10(stop), num=num, endpoint=endpoint, base=10.0,
                      dtype=dt)
    if num > 0:
        tail = tuple(result.shape[1:])
        parts = [np.broadcast_to(start, (1,) + tail)]
        if num > 1 and endpoint:
            parts += [result[1:-1], np.broadcast_to(stop, (1,) + tail)]
        else:
            parts.append(result[1:])
        result = np.concatenate(parts, axis=0)
    result = result * out_sign
    if axis != 0:
        result = np.moveaxis(result, 0, axis)
    return result.astype(dtype) if result.dtype != dtype else result


@defhandler(np.meshgrid)
def meshgrid(*xi, copy=True, sparse=False, indexing="xy"):
    ndim = len(xi)
    if indexing not in ["xy", "ij"]:
        raise ValueError("Valid values for `indexing` are 'xy' and 'ij'.")
    s0 = (1,) * ndim
    output = [np.reshape(_asarr(x), s0[:i] + (-1,) + s0[i + 1:]) for i, x in enumerate(xi)]
    if indexing == "xy" and ndim > 1:
        output[0] = np.reshape(output[0], (1, -1) + s0[2:])
        output[1] = np.reshape(output[1], (-1, 1) + s0[2:])
    if not sparse:
        output = np.broadcast_arrays(*output)
    if copy:
        output = tuple(np.copy(x) for x in output)
    return output


# --- selection -----------------------------------------------------------------------------
@defhandler(np.select)
def select(condlist, choicelist, default=0):
    if len(condlist) != len(choicelist):
        raise ValueError("list of cases must be same length as list of conditions")
    if len(condlist) == 0:
        raise ValueError("select with an empty condition list is not possible")
    choices = [c if type(c) in (int, float, complex) else _asarr(c) for c in choicelist]
    default = default if type(default) in (int, float, complex) else _asarr(default)
    try:
        dtype = np.result_type(*[_weak(c) for c in choices + [default]])
    except TypeError as e:
        raise TypeError(f"Choicelist and default value do not have a common dtype: {e}") \
            from None
    # traced conditions stay traced: under jit the masks are part of the graph
    conds = [c if _is_traced(c) else np.asarray(c) for c in condlist]
    for i, c in enumerate(conds):
        if c.dtype.type is not np.bool_:
            raise TypeError(f"invalid entry {i} in condlist: should be boolean ndarray")
    shape = np.broadcast_shapes(*[np.shape(c) for c in conds + choices + [default]])
    result = np.broadcast_to(_cast(default, dtype), shape)
    for choice, cond in zip(choices[::-1], conds[::-1]):
        result = np.where(cond, _cast(choice, dtype), result)
    return _cast(result, dtype)


@defhandler(np.piecewise)
def piecewise(x, condlist, funclist, *args, **kw):
    x = _asarr(x)
    n2 = len(funclist)
    if np.isscalar(condlist) or (not isinstance(condlist[0], (list, np.ndarray))
                                 and x.ndim != 0):
        condlist = [condlist]
    # The conditions stay traced (jit then guards the masks that select the
    # elements each function sees, instead of baking them in as constants).
    condlist = [c if _is_traced(c) else np.asarray(c, dtype=bool) for c in condlist]
    condlist = [c if c.dtype == bool else c.astype(bool) for c in condlist]
    n = len(condlist)
    if n == n2 - 1:
        condlist = condlist + [~np.any(np.stack(condlist), axis=0)]
        n += 1
    elif n != n2:
        raise ValueError(f"with {n} condition(s), either {n} or {n + 1} functions are expected")
    y = np.zeros_like(_plain(x))
    for cond, func in zip(condlist, funclist):
        if not callable(func):
            y = np.where(cond, _cast(func, x.dtype), y)
            continue
        vals = x[cond]
        if vals.size == 0:
            continue
        r = _asarr(func(vals, *args, **kw))
        r = _cast(np.broadcast_to(r, vals.shape), x.dtype)
        if _is_traced(r):
            full = bind(PRIMITIVES["scatter"], (r,),
                        {"key": normalize_key(cond, x.ndim), "shape": x.shape, "kndim": r.ndim})
        else:
            full = np.zeros_like(_plain(x))
            full[cond] = r
        y = np.where(cond, full, y)
    return _cast(y, x.dtype)


# --- statistics -------------------------------------------------------------------------------
@defhandler(np.cov)
def cov(m, y=None, rowvar=True, bias=False, ddof=None, fweights=None, aweights=None, *,
        dtype=None):
    if ddof is not None and ddof != int(ddof):
        raise ValueError("ddof must be integer")
    m = _asarr(m)
    if m.ndim > 2:
        raise ValueError("m has more than 2 dimensions")
    if y is not None:
        y = _asarr(y)
        if y.ndim > 2:
            raise ValueError("y has more than 2 dimensions")
    if dtype is None:
        dtype = np.result_type(_plain(m), np.float64) if y is None else \
            np.result_type(_plain(m), _plain(y), np.float64)
    X = _cast(np.atleast_2d(m), np.dtype(dtype))
    if not rowvar and m.ndim != 1:
        X = X.T
    if X.shape[0] == 0:
        return np.array([]).reshape(0, 0)
    if y is not None:
        yy = _cast(np.atleast_2d(y), np.dtype(dtype))
        if not rowvar and yy.shape[0] != 1:
            yy = yy.T
        X = np.concatenate((X, yy), axis=0)
    if ddof is None:
        ddof = 1 if bias == 0 else 0
    w = None
    if fweights is not None:
        fw = _cast(fweights, np.dtype(float))
        fv = _plain(fw)
        if not np.all(fv == np.around(fv)):
            raise TypeError("fweights must be integer")
        if fv.ndim > 1:
            raise RuntimeError("cannot handle multidimensional fweights")
        if fv.shape[0] != X.shape[1]:
            raise RuntimeError("incompatible numbers of samples and fweights")
        if np.any(fv < 0):
            raise ValueError("fweights cannot be negative")
        w = fw
    if aweights is not None:
        aweights = _cast(aweights, np.dtype(float))
        av = _plain(aweights)
        if av.ndim > 1:
            raise RuntimeError("cannot handle multidimensional aweights")
        if av.shape[0] != X.shape[1]:
            raise RuntimeError("incompatible numbers of samples and aweights")
        if np.any(av < 0):
            raise ValueError("aweights cannot be negative")
        w = aweights if w is None else w * aweights
    avg, w_sum = np.average(X, axis=1, weights=w, returned=True)
    w_sum = w_sum[0]
    if w is None:
        fact = X.shape[1] - ddof
    elif ddof == 0:
        fact = w_sum
    elif aweights is None:
        fact = w_sum - ddof
    else:
        fact = w_sum - ddof * np.sum(w * aweights) / w_sum
    if bool(fact <= 0):       # traced when the weights are: a jit guard
        warnings.warn("Degrees of freedom <= 0 for slice", RuntimeWarning, stacklevel=2)
        fact = 0.0
    X = X - avg[:, None]
    X_T = X.T if w is None else (X * w).T
    if np.iscomplexobj(_plain(X_T)):
        X_T = np.conjugate(X_T)
    c = np.dot(X, X_T)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = c * np.true_divide(1, fact)
    return np.squeeze(c)


@defhandler(np.corrcoef)
def corrcoef(x, y=None, rowvar=True, *, dtype=None):
    c = cov(x, y, rowvar, dtype=dtype)
    if np.ndim(c) == 0:
        return c / c
    d = np.diagonal(c)
    stddev = np.sqrt(np.real(d))
    c = c / stddev[:, None]
    c = c / stddev[None, :]
    if np.iscomplexobj(_plain(c)):
        return np.clip(np.real(c), -1, 1) + 1j * np.clip(np.imag(c), -1, 1)
    return np.clip(c, -1, 1)


# --- phase and cleanup ------------------------------------------------------------------------
@defhandler(np.unwrap)
def unwrap(p, discont=None, axis=-1, *, period=2 * np.pi):
    if _is_traced(period) or _is_traced(discont):
        raise unsupported("np.unwrap with a traced period/discont")
    p = _asarr(p)
    nd = p.ndim
    axis = normalize_axis_index(axis, nd)
    # The correction is computed from the traced differences (under jit it
    # must follow the values of each call); its derivative is exactly zero,
    # since mod(d, period) - d has derivative 1 - 1.
    dd = np.diff(p, axis=axis)
    if discont is None:
        discont = period / 2
    dtype = np.result_type(dd, period)
    if np.issubdtype(dtype, np.integer):
        interval_high, rem = divmod(period, 2)
        boundary_ambiguous = rem == 0
    else:
        interval_high = period / 2
        boundary_ambiguous = True
    interval_low = -interval_high
    ddmod = np.mod(dd - interval_low, period) + interval_low
    if boundary_ambiguous:
        ddmod = np.where((ddmod == interval_low) & (dd > 0), _cast(interval_high, ddmod.dtype),
                         ddmod)
    ph_correct = ddmod - dd
    ph_correct = np.where(abs(dd) < discont, _cast(0, ph_correct.dtype), ph_correct)
    up = p.astype(dtype) if p.dtype != dtype else p
    head = up[_at(axis, slice(0, 1), nd)]
    tail = p[_at(axis, slice(1, None), nd)] + ph_correct.cumsum(axis)
    return np.concatenate([head, _cast(tail, np.dtype(dtype))], axis=axis)


@defhandler(np.nan_to_num)
def nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    x = _asarr(x)
    xv = _plain(x)
    if not np.issubdtype(xv.dtype, np.inexact):
        return np.copy(x) if copy else x

    def fix(d):
        dv = _plain(d)
        fi = np.finfo(dv.dtype)
        maxf = fi.max if posinf is None else posinf
        minf = fi.min if neginf is None else neginf
        # masks from the traced values: under jit they follow each call's values
        r = np.where(d == -np.inf, _cast(minf, dv.dtype), d)
        r = np.where(d == np.inf, _cast(maxf, dv.dtype), r)
        return np.where(np.isnan(d), _cast(nan, dv.dtype), r)
    if np.iscomplexobj(xv):
        return _cast(fix(np.real(x)) + 1j * fix(np.imag(x)), xv.dtype)
    return fix(x)
