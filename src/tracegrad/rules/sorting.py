"""Sorting and selection: sort, partition, median, quantile/percentile (every
NumPy ``method``), and the nan-ignoring reductions (nansum, nanmean, nanmax,
nanvar, nanmedian, nanquantile, nancumsum, ...).

No new primitive carries a rule here. Every function is a handler that
composes recorded primitives, so its derivatives (of any order, forward and
reverse, batched) follow from theirs:

* ``np.sort`` is a gather through the permutation ``argsort`` returns:
  ``take_along(x, argsort(x))``. The permutation is computed on the concrete
  values (a ``nondiff`` primitive, so ``jit`` sees the dependence) and the
  gather is the ``take_along`` primitive of ``indexing.py``, whose rule is a
  scatter-add. ``np.partition`` is the same gather through ``argpartition``.
* Quantiles gather the two order statistics around NumPy's *virtual index*
  and interpolate linearly between them with NumPy's own formula
  (``_lerp``), so the derivative with respect to the data is piecewise
  constant and, when ``q`` is traced, the derivative with respect to ``q``
  is the slope between the two order statistics.
* nan-functions replace NaNs by the neutral element with ``np.where`` before
  reducing, so a NaN input never leaks ``0 * nan`` into other cotangents.

Conventions (tested in ``tests/rules/test_sorting.py``)
--------------------------------------------------------
* **Ties.** Sorting uses the *stable* order: among equal values, the one
  that comes first in the input is placed first, and each output position
  differentiates with respect to the single input element placed there.
  Quantiles, medians and partitions inherit this: the derivative of an order
  statistic goes to one element (the one the stable sort puts at that
  rank), not shared among ties. (``np.max``/``np.min`` share among ties, as
  their rule in ``reductions.py`` documents; ``np.quantile(x, 1.0)`` gives it
  to the last of the tied maxima.) With a weighted ``inverted_cdf`` quantile
  it goes to the first tied element with the selected value.
* **Kinks of the interpolation.** Where the virtual index is an integer,
  the derivative with respect to ``q`` is the right-hand slope (NumPy
  picks ``floor(index)`` as the lower neighbour).
* **NaN.** Functions that propagate NaN (sort, median, quantile) give NaN
  results as NumPy does; nan-functions ignore NaN entries, whose cotangent
  is zero. All-NaN slices give NaN (with NumPy's RuntimeWarning).
* ``kind=`` is accepted and ignored: all sorting kinds give the same values.
"""
import warnings

import numpy as np

from ..core.array import TracedArray, bind, concrete
from ..core.primitive import defhandler, defprim, unsupported
from .indexing import take_along
from .reductions import norm_axes

_NoValue = np._NoValue


def _asarr(a):
    return a if isinstance(a, np.ndarray) else np.asarray(a)


def _plain(x):
    return x._v if type(x) is TracedArray else x


def _no_out(out, what):
    if out is not None:
        from ..core.array import _inplace_error
        raise _inplace_error(f"{what}(..., out=...)")


def _kw(**kw):
    """Keyword arguments that were actually given (not NumPy's _NoValue)."""
    return {k: v for k, v in kw.items() if v is not _NoValue}


# --- sort / partition --------------------------------------------------------------
def stable_argsort(a, axis):
    """The stable sorting permutation of ``a`` along ``axis`` (no derivative;
    recorded as a nondiff primitive for capturing levels)."""
    return np.argsort(a, axis=axis, kind="stable")


@defhandler(np.sort)
def sort(a, axis=-1, kind=None, order=None, *, stable=None):
    if order is not None:
        raise unsupported("np.sort(..., order=...) (structured arrays)")
    a = _asarr(a)
    if axis is None:
        a = np.ravel(a)
        axis = -1
    (ax,) = norm_axes(axis, a.ndim)
    if a.size == 0:
        return np.copy(a)
    return take_along(a, stable_argsort(a, ax), ax)


@defhandler(np.partition)
def partition(a, kth, axis=-1, kind="introselect", order=None):
    if order is not None:
        raise unsupported("np.partition(..., order=...) (structured arrays)")
    a = _asarr(a)
    if axis is None:
        a = np.ravel(a)
        axis = -1
    (ax,) = norm_axes(axis, a.ndim)
    kth = concrete(kth, "index")
    idx = np.argpartition(a, kth, axis=ax, kind=kind)
    return take_along(a, idx, ax)


# --- moving reduced axes to the end ----------------------------------------------------
def _to_last(a, axes):
    """``a`` with ``axes`` (negative, sorted) moved to the end and merged into
    one; returns (array, kept shape)."""
    n = a.ndim
    keep = [i for i in range(n) if (i - n) not in axes]
    red = [n + ax for ax in axes]
    if keep + red != list(range(n)):
        a = np.transpose(a, keep + red)
    kept = tuple(a.shape[:len(keep)])
    if len(red) != 1:
        a = np.reshape(a, kept + (-1,))
    return a, kept


def _keep_shape(shape, axes):
    n = len(shape)
    return tuple(1 if (i - n) in axes else s for i, s in enumerate(shape))


def _gather(s, idx, qshape):
    """``out[qi, r] = s[r, idx[qi, r]]`` for sorted ``s`` of shape ``red + (N,)``
    and integer ``idx`` broadcastable to ``qshape + red``."""
    red = s.shape[:-1]
    full = qshape + red
    idx = _asarr(idx)       # may be traced (computed from the NaN count at run time)
    if idx.ndim == len(qshape) and red:
        idx = idx.reshape(idx.shape + (1,) * len(red))
    idx = np.broadcast_to(idx, full)
    k = int(np.prod(qshape, dtype=np.int64))
    idx = np.moveaxis(idx.reshape((k,) + red), 0, -1)
    g = take_along(s, idx, -1)              # red + (k,)
    g = np.moveaxis(g, -1, 0)               # (k,) + red
    return np.reshape(g, full)


# --- quantile methods (NumPy's table: virtual index, gamma) ------------------------------
def _cvi(alpha, beta):
    return lambda n, q: n * q + (alpha + q * (1 - alpha - beta)) - 1


def _discrete(index, cond):
    prev = np.floor(index)
    gamma = index - prev
    res = np.where(cond(gamma, index), prev, prev + 1).astype(np.intp)
    return np.maximum(res, 0)


# name -> (virtual index (n, q) -> float index, fix_gamma or None for integer index)
_METHODS = {
    "inverted_cdf": (lambda n, q: _discrete(n * q - 1, lambda g, i: g == 0), None),
    "averaged_inverted_cdf": (lambda n, q: n * q - 1,
                              lambda g, i: np.where(g == 0, 0.5, 1.0)),
    "closest_observation": (
        lambda n, q: _discrete(n * q - 1 - 0.5,
                               lambda g, i: (g == 0) & (np.floor(i) % 2 == 1)), None),
    "interpolated_inverted_cdf": (_cvi(0, 1), True),
    "hazen": (_cvi(0.5, 0.5), True),
    "weibull": (_cvi(0, 0), True),
    "linear": (lambda n, q: (n - 1) * q, True),
    "median_unbiased": (_cvi(1 / 3.0, 1 / 3.0), True),
    "normal_unbiased": (_cvi(3 / 8.0, 3 / 8.0), True),
    "lower": (lambda n, q: np.floor((n - 1) * q).astype(np.intp), None),
    "higher": (lambda n, q: np.ceil((n - 1) * q).astype(np.intp), None),
    "midpoint": (lambda n, q: 0.5 * (np.floor((n - 1) * q) + np.ceil((n - 1) * q)),
                 lambda g, i: np.where(i % 1 == 0, 0.0, 0.5)),
    "nearest": (lambda n, q: np.around((n - 1) * q).astype(np.intp), None),
}

#: the quantile methods supported (all of NumPy's)
QUANTILE_METHODS = tuple(_METHODS)


def _lerp(a, b, t):
    """NumPy's ``_lerp``: the two algebraically equal forms, chosen by t, so
    the values match NumPy's bit for bit."""
    d = b - a
    return np.where(t >= 0.5, b - d * (1 - t), a + d * t)


def _prep_sorted(a, axis):
    """Sort ``a`` along the reduced ``axis``: returns (sorted, axes, kept shape)."""
    axes = norm_axes(axis, a.ndim)
    m, kept = _to_last(a, axes)
    if m.shape[-1] == 0:
        return m, axes, kept
    return take_along(m, stable_argsort(m, -1), -1), axes, kept


def _finish(res, qshape, a_shape, axes, keepdims):
    if keepdims:
        res = np.reshape(res, qshape + _keep_shape(a_shape, axes))
    return res


def _quantile(a, q, axis, method, keepdims, nan_aware, weights, weak_q):
    if method not in _METHODS:
        raise ValueError(f"{method!r} is not a valid method. Use one of: {_METHODS.keys()}")
    a = _asarr(a)
    vindex, fix_gamma = _METHODS[method]
    if a.dtype.kind in "biu" and (fix_gamma is not None or nan_aware):
        a = a.astype(np.float64)
    q = q if isinstance(q, np.ndarray) else np.asarray(q)
    qv = _plain(q)          # for shapes and dtypes only
    if qv.ndim > 2:
        raise ValueError("q must be a scalar or 1d")
    if not bool(np.all((q >= 0) & (q <= 1))):     # traced q: a guard under jit
        raise ValueError("Quantiles must be in the range [0, 1]")
    if a.size == 0:
        return np.quantile(_plain(a), qv, axis=axis, method=method, keepdims=keepdims)
    s, axes, kept = _prep_sorted(a, axis)
    N = s.shape[-1]
    qshape = qv.shape
    floating = s.dtype.kind in "fc"
    # The NaN count, the NaN mask and the indices computed from them are traced
    # NumPy calls on the sorted values (recorded, so jit recomputes them each
    # call); only shapes and dtypes are read from plain values.
    if nan_aware and floating:
        n = N - np.sum(np.isnan(s), axis=-1)               # per slice, shape kept
        qb = np.reshape(q, qshape + (1,) * len(kept))
        bad = n == 0
        if bool(np.any(bad)):
            warnings.warn("All-NaN slice encountered", RuntimeWarning, stacklevel=4)
        nmax = np.maximum(n - 1, 0)
    else:
        n = N
        qb = q
        bad = np.isnan(s[..., -1]) if floating else None
        nmax = N - 1
    if weights is not None:
        res = _weighted_pick(a, s, q, axes, weights, nan_aware)
    elif fix_gamma is None:
        idx = np.minimum(vindex(n, qb), nmax)
        res = _gather(s, idx, qshape)
    else:
        v = vindex(n, qb)                                   # traced when q or n is
        with np.errstate(invalid="ignore"):
            prev = np.floor(v)
            nxt = prev + 1
            above = v >= n - 1
            below = v < 0
            prev = np.where(above, nmax, np.where(below, 0, prev))
            nxt = np.where(above, nmax, np.where(below, 0, nxt))
            vnan = np.isnan(v)
            prev = np.where(vnan, 0, prev).astype(np.intp)
            nxt = np.where(vnan, 0, nxt).astype(np.intp)
        lo = _gather(s, prev, qshape)
        hi = _gather(s, nxt, qshape)
        gamma = v - prev
        if fix_gamma is not True:
            gamma = fix_gamma(gamma, v)
        if weak_q and np.ndim(gamma) == 0:
            # NumPy computes gamma in the data's float type for a Python float q
            gamma = float(gamma) if type(gamma) is not TracedArray else gamma.astype(
                s.real.dtype if floating else np.float64)
        elif np.ndim(gamma) and not np.ndim(n):
            gamma = np.reshape(gamma, np.shape(gamma) + (1,) * len(kept))
        elif weak_q and type(gamma) is TracedArray and floating:
            gamma = gamma.astype(s.real.dtype)
        res = _lerp(lo, hi, gamma)
    if bad is not None and bool(np.any(bad)):
        res = np.where(np.broadcast_to(bad, qshape + kept), np.nan, res)
    return _finish(res, qshape, a.shape, axes, keepdims)


def _weighted_pick(a, s, q, axes, weights, nan_aware):
    """Weighted ``inverted_cdf``: NumPy picks one order statistic per slice;
    the derivative goes to the first sorted element with that value. The
    weights enter through a piecewise-constant choice: no derivative.

    The pick is NumPy's (the first sorted element whose normalised cumulative
    weight reaches q), computed with traced NumPy calls on the data and the
    weights, so that under jit it follows each call's values."""
    w = _asarr(weights)
    if w.shape != a.shape:
        if w.ndim != 1 or len(axes) != 1:
            raise ValueError("Shape of weights must be consistent with shape of a "
                             "along specified axis.")
        shape = [1] * a.ndim
        shape[axes[0]] = -1
        w = np.broadcast_to(np.reshape(w, shape), a.shape)
    am, _ = _to_last(a, axes)
    wm, _ = _to_last(w, axes)
    N = s.shape[-1]
    ws = take_along(wm, stable_argsort(am, -1), -1)      # weights in sorted order
    if nan_aware and s.dtype.kind in "fc":
        ws = np.where(np.isnan(s), np.zeros((), ws.dtype), ws)   # NaNs are dropped
    cdf = np.cumsum(ws, axis=-1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cdf = cdf / cdf[..., -1:]
    if bool(np.any(np.isnan(cdf[..., -1]))):
        if not nan_aware:
            raise ValueError("Weights included NaN, inf or were all zero.")
    qd = np.result_type(_plain(q))
    if qd.kind == "f":
        cdf = cdf.astype(qd)
    # leading zero weights: the pick for q = 0 is the first positive weight
    cdf = np.where(cdf == 0, -np.ones((), cdf.dtype), cdf)
    qshape = np.shape(q)
    qb = np.reshape(q, qshape + (1,) * (cdf.ndim - 1) + (1,))
    with np.errstate(invalid="ignore"):
        idx = np.sum(cdf < qb, axis=-1)                   # searchsorted(cdf, q, "left")
    idx = np.minimum(idx, N - 1)
    r = _gather(s, idx, qshape)                           # the picked values
    # the first sorted element with the picked value gets the derivative
    rb = np.reshape(r, np.shape(r) + (1,))
    with np.errstate(invalid="ignore"):
        first = np.minimum(np.sum(s < rb, axis=-1), N - 1)
    return _gather(s, first, qshape)


def _qhandler(scale, nan_aware, name):
    def handler(a, q, axis=None, out=None, overwrite_input=False, method="linear",
                keepdims=False, *, weights=None, interpolation=None):
        _no_out(out, name)
        if interpolation is not None:
            method = interpolation
        if weights is not None and method != "inverted_cdf":
            raise ValueError("Only method 'inverted_cdf' supports weights. Got: "
                             f"{method}.")
        keepdims = False if keepdims is _NoValue else keepdims
        weak = type(q) in (int, float)
        if scale != 1:
            if type(q) is TracedArray:
                q = q / scale
            else:
                adt = np.result_type(_plain(a))
                q = np.true_divide(q, adt.type(scale) if adt.kind == "f" else scale)
                if weak:
                    q = float(q)
        return _quantile(a, q, axis, method, keepdims, nan_aware, weights, weak)
    handler.__name__ = name.split(".")[-1]
    return handler


defhandler(np.quantile)(_qhandler(1, False, "np.quantile"))
defhandler(np.percentile)(_qhandler(100, False, "np.percentile"))
defhandler(np.nanquantile)(_qhandler(1, True, "np.nanquantile"))
defhandler(np.nanpercentile)(_qhandler(100, True, "np.nanpercentile"))


# --- median ----------------------------------------------------------------------------
def _median(a, axis, keepdims, nan_aware):
    a = _asarr(a)
    if a.dtype.kind in "biu":
        a = a.astype(np.float64)
    if a.size == 0:
        f = np.nanmedian if nan_aware else np.median
        return f(_plain(a), axis=axis, keepdims=keepdims)
    s, axes, kept = _prep_sorted(a, axis)
    N = s.shape[-1]
    floating = s.dtype.kind in "fc"
    # NaN count and mask: traced, as in _quantile
    if nan_aware and floating:
        n = N - np.sum(np.isnan(s), axis=-1)
        bad = n == 0
        if bool(np.any(bad)):
            warnings.warn("All-NaN slice encountered", RuntimeWarning, stacklevel=3)
        lo_i = np.maximum((n - 1) // 2, 0)
        hi_i = np.maximum(n // 2, 0)
        lo = _gather(s, np.minimum(lo_i, N - 1), ())
        hi = _gather(s, np.minimum(hi_i, N - 1), ())
        res = (lo + hi) / 2
    else:
        bad = np.isnan(s[..., -1]) if floating else None
        lo = s[..., (N - 1) // 2]
        res = lo if N % 2 else (lo + s[..., N // 2]) / 2
    if bad is not None and bool(np.any(bad)):
        res = np.where(bad, np.nan, res)
    return _finish(res, (), a.shape, axes, keepdims)


@defhandler(np.median)
def median(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    _no_out(out, "np.median")
    return _median(a, axis, keepdims, False)


@defhandler(np.nanmedian)
def nanmedian(a, axis=None, out=None, overwrite_input=False, keepdims=_NoValue):
    _no_out(out, "np.nanmedian")
    return _median(a, axis, False if keepdims is _NoValue else keepdims, True)


# --- nan-ignoring reductions -------------------------------------------------------------
def _nanfill(a, value):
    """``a`` with NaNs replaced by ``value`` (and the mask), derivative 1 elsewhere."""
    a = _asarr(a)
    if a.dtype.kind not in "fc":
        return a, None
    # a traced test (under jit the mask is in the graph and the branch a guard,
    # not constants baked in from the first call)
    mask = np.isnan(a)
    if not bool(np.any(mask)):
        return a, mask
    return np.where(mask, np.asarray(value, a.dtype), a), mask


@defhandler(np.nansum)
def nansum(a, axis=None, dtype=None, out=None, keepdims=_NoValue, initial=_NoValue,
           where=_NoValue):
    _no_out(out, "np.nansum")
    a, _ = _nanfill(a, 0)
    return np.sum(a, axis=axis, dtype=dtype, **_kw(keepdims=keepdims, initial=initial,
                                                    where=where))


@defhandler(np.nanprod)
def nanprod(a, axis=None, dtype=None, out=None, keepdims=_NoValue, initial=_NoValue,
            where=_NoValue):
    _no_out(out, "np.nanprod")
    a, _ = _nanfill(a, 1)
    return np.prod(a, axis=axis, dtype=dtype, **_kw(keepdims=keepdims, initial=initial,
                                                     where=where))


@defhandler(np.nancumsum)
def nancumsum(a, axis=None, dtype=None, out=None):
    _no_out(out, "np.nancumsum")
    a, _ = _nanfill(a, 0)
    return np.cumsum(a, axis=axis, dtype=dtype)


@defhandler(np.nancumprod)
def nancumprod(a, axis=None, dtype=None, out=None):
    _no_out(out, "np.nancumprod")
    a, _ = _nanfill(a, 1)
    return np.cumprod(a, axis=axis, dtype=dtype)


def _valid(mask, where, shape):
    valid = np.ones(shape, bool) if mask is None else ~mask
    if where is not _NoValue and where is not True:
        valid = valid & np.broadcast_to(where, shape)   # traced where: part of the graph
    return valid


@defhandler(np.nanmean)
def nanmean(a, axis=None, dtype=None, out=None, keepdims=_NoValue, *, where=_NoValue):
    _no_out(out, "np.nanmean")
    a = _asarr(a)
    if a.dtype.kind not in "fc":
        return np.mean(a, axis=axis, dtype=dtype, **_kw(keepdims=keepdims, where=where))
    a0, mask = _nanfill(a, 0)
    valid = _valid(mask, where, a.shape)
    kd = False if keepdims is _NoValue else keepdims
    cnt = np.sum(valid, axis=axis, keepdims=kd)
    tot = np.sum(a0, axis=axis, dtype=dtype, keepdims=kd, where=valid)
    if np.any(cnt == 0):
        warnings.warn("Mean of empty slice", RuntimeWarning, stacklevel=3)
    with np.errstate(invalid="ignore", divide="ignore"):
        return tot / cnt


@defhandler(np.nanvar)
def nanvar(a, axis=None, dtype=None, out=None, ddof=0, keepdims=_NoValue, *, where=_NoValue,
           mean=_NoValue, correction=_NoValue):
    _no_out(out, "np.nanvar")
    if correction is not _NoValue:
        ddof = correction
    a = _asarr(a)
    kw = _kw(keepdims=keepdims, mean=mean)
    if a.dtype.kind not in "fc":
        return np.var(a, axis=axis, dtype=dtype, ddof=ddof, **_kw(where=where), **kw)
    a0, mask = _nanfill(a, 0)
    valid = _valid(mask, where, a.shape)
    kd = False if keepdims is _NoValue else keepdims
    cnt = np.sum(valid, axis=axis, keepdims=kd)
    bad = cnt - ddof <= 0
    if np.any(bad):
        warnings.warn("Degrees of freedom <= 0 for slice.", RuntimeWarning, stacklevel=3)
    with np.errstate(invalid="ignore", divide="ignore"):
        res = np.var(a0, axis=axis, dtype=dtype, ddof=ddof, keepdims=kd, where=valid,
                     **_kw(mean=mean))
    if np.any(bad):
        res = np.where(bad, np.nan, res)
    return res


@defhandler(np.nanstd)
def nanstd(a, axis=None, dtype=None, out=None, ddof=0, keepdims=_NoValue, *, where=_NoValue,
           mean=_NoValue, correction=_NoValue):
    _no_out(out, "np.nanstd")
    return np.sqrt(nanvar(a, axis, dtype, None, ddof, keepdims, where=where, mean=mean,
                          correction=correction))


def _nanext(name, red):
    fill = -np.inf if name == "nanmax" else np.inf

    def handler(a, axis=None, out=None, keepdims=_NoValue, initial=_NoValue, where=_NoValue):
        _no_out(out, f"np.{name}")
        a = _asarr(a)
        kw = _kw(keepdims=keepdims, initial=initial, where=where)
        if a.dtype.kind not in "fc":
            return red(a, axis=axis, **kw)
        a0, mask = _nanfill(a, fill)
        res = red(a0, axis=axis, **kw)
        if mask is not None and mask.any():
            allnan = np.all(~_valid(mask, where, a.shape), axis=axis,
                            keepdims=kw.get("keepdims", False))
            if np.any(allnan) and initial is _NoValue:
                warnings.warn("All-NaN slice encountered", RuntimeWarning, stacklevel=2)
                res = np.where(allnan, np.nan, res)
        return res
    handler.__name__ = name
    return handler


defhandler(np.nanmax)(_nanext("nanmax", np.max))
defhandler(np.nanmin)(_nanext("nanmin", np.min))


# --- index-valued nan-functions: no derivative -----------------------------------------------
def _nondiff(func):
    name = "nondiff." + func.__name__

    def impl(*args, kwargs):
        return func(*args, **dict(kwargs))

    prim = defprim(name, impl, nondiff=True)

    def handler(*args, **kwargs):
        return bind(prim, args, {"kwargs": tuple((k, _plain(v)) for k, v in kwargs.items())})
    handler.__name__ = func.__name__
    return handler


defhandler(np.nanargmax)(_nondiff(np.nanargmax))
defhandler(np.nanargmin)(_nondiff(np.nanargmin))

__all__ = ["sort", "partition", "median", "stable_argsort", "QUANTILE_METHODS"]
