"""NumPy functions whose results carry no derivative: queries (shape, ndim),
index-valued functions (argmax, argsort, nonzero, searchsorted), predicates
(allclose, isclose, any, all), rounding, and the ``*_like`` constructors.

They run on the concrete values. Each is still a primitive (marked
``nondiff``) rather than a bare passthrough, so a capturing level such as
``jit`` sees the dependence of, say, an index array on the traced input.
"""
import numpy as np

from ..core.array import TracedArray, bind, wrap
from ..core.primitive import defhandler, defprim

_FUNCS = [
    np.shape, np.ndim, np.size, np.argmax, np.argmin, np.argsort, np.argwhere, np.nonzero,
    np.flatnonzero, np.count_nonzero, np.searchsorted, np.isclose, np.allclose, np.array_equal,
    np.array_equiv, np.any, np.all, np.result_type, np.iscomplexobj, np.isrealobj,
    np.isreal, np.iscomplex, np.may_share_memory, np.shares_memory, np.digitize,
    np.around, np.round, np.fix, np.argpartition, np.lexsort,
    np.can_cast, np.min_scalar_type,
    np.unravel_index, np.ravel_multi_index, np.tril_indices_from, np.triu_indices_from,
    np.diag_indices_from, np.packbits, np.unpackbits, np.isin, np.bincount, np.histogram,
    np.histogram_bin_edges,
]


def _plain(x):
    if type(x) is TracedArray:
        return x._v
    if type(x) in (list, tuple):
        return type(x)(_plain(e) for e in x)
    return x


def _has_traced(v):
    if type(v) is TracedArray:
        return True
    return type(v) in (list, tuple) and any(_has_traced(e) for e in v)


def _split_kwargs(args, kwargs):
    """(args, params) for ``bind``: keyword values that hold traced arrays
    (``bins=edges``, ``range=(lo, hi)``, ``sorter=...``) travel as trailing
    arguments, so a capturing level (jit) passes each call's values instead of
    baking in the first call's; the others are static parameters."""
    args = tuple(_plain(a) if type(a) is not TracedArray else a for a in args)
    static, dyn, extra = [], [], []
    for k, v in kwargs.items():
        if not _has_traced(v):
            static.append((k, _plain(v)))
        elif type(v) is TracedArray:
            dyn.append((k, None))
            extra.append(v)
        else:   # a list/tuple: each element is an argument
            dyn.append((k, (type(v), len(v))))
            extra.extend(v)
    params = {"kwargs": tuple(static)}
    if dyn:
        params["dyn"] = tuple(dyn)
    return args + tuple(extra), params


def _rebuild(args, kwargs, dyn):
    kw = dict(kwargs)
    if dyn:
        n = sum(1 if spec is None else spec[1] for _, spec in dyn)
        args, tail = args[:len(args) - n], list(args[len(args) - n:])
        for k, spec in dyn:
            if spec is None:
                kw[k] = tail.pop(0)
            else:
                kw[k] = spec[0](tail[:spec[1]])
                del tail[:spec[1]]
    return args, kw


def _make(func):
    name = "nondiff." + func.__name__

    def impl(*args, kwargs, dyn=()):
        args, kw = _rebuild(args, kwargs, dyn)
        return func(*args, **kw)

    defprim(name, impl, nondiff=True)
    from ..core.primitive import PRIMITIVES
    prim = PRIMITIVES[name]

    def handler(*args, **kwargs):
        if func is np.bincount and kwargs.get("weights") is not None or (
                func is np.histogram and kwargs.get("weights") is not None):
            w = kwargs.get("weights")
            if type(w) is TracedArray:
                from ..core.primitive import unsupported
                raise unsupported(f"np.{func.__name__}(..., weights=<traced>)")
        return bind(prim, *_split_kwargs(args, kwargs))
    return handler


_HANDLERS = {}
for _f in _FUNCS:
    _HANDLERS[_f] = _make(_f)
    if _f not in (np.histogram, np.histogram_bin_edges):
        defhandler(_f)(_HANDLERS[_f])


# --- histogram: the counts have no derivative, the bin edges do ---------------------------
def _traced_edges(edges, a, bins, range):
    """NumPy's bin ``edges`` (plain), carrying the derivative they have when
    they are computed from traced data: explicit ``bins`` are the edges;
    otherwise the edges are spaced evenly between ``range`` or
    ``(min(a), max(a))``, i.e. linear in those two values."""
    if type(bins) is TracedArray:
        return np.copy(bins)
    if not (isinstance(bins, (int, np.integer, str)) or np.ndim(bins) == 0):
        return edges
    if range is not None:
        first, last = range
    elif np.size(a):
        first, last = np.min(a), np.max(a)
    else:
        return edges
    if type(first) is not TracedArray and type(last) is not TracedArray:
        return edges
    s = np.linspace(0.0, 1.0, edges.size).astype(edges.dtype)
    # the value stays NumPy's exactly: the traced shift is (x - x) == 0
    shift = (first - _plain(first)) * (1 - s) + (last - _plain(last)) * s
    return edges + shift


@defhandler(np.histogram_bin_edges)
def histogram_bin_edges(a, bins=10, range=None, weights=None):
    edges = _HANDLERS[np.histogram_bin_edges](a, bins=bins, range=range, weights=weights)
    return _traced_edges(edges, a, bins, range)


@defhandler(np.histogram)
def histogram(a, bins=10, range=None, density=None, weights=None):
    n, edges = _HANDLERS[np.histogram](a, bins=bins, range=range, weights=weights)
    traced = _traced_edges(edges, a, bins, range)
    if density:
        # NumPy: n / db / n.sum(), with db the (now traced) bin widths
        n = np.asarray(n)
        return n / np.diff(traced).astype(float) / n.sum(), traced
    return n, traced


@defhandler(np.sort_complex)
def sort_complex(a):
    # Not a nondiff function: the result is a permutation of the values, so
    # it differentiates like np.sort (a gather), then the cast to complex.
    a = a if isinstance(a, np.ndarray) else np.asarray(a)
    r = np.sort(a, axis=-1)
    dt = np.sort_complex(np.zeros(0, a.dtype)).dtype
    return r if r.dtype == dt else r.astype(dt)


def _buffer(r, a):
    # A buffer made "like" a traced array is returned as an (untracked)
    # TracedArray, so the common pattern `out = np.zeros_like(x); out[i] = ...`
    # records its writes instead of silently dropping their derivatives.
    return wrap(r, {}) if type(a) is TracedArray else r


def _like(npfunc):
    def handler(a, dtype=None, order="K", subok=True, shape=None, *, device=None):
        plain = a._v if type(a) is TracedArray else a
        return _buffer(npfunc(plain, dtype=dtype, order=order, subok=False, shape=shape), a)
    return handler


defhandler(np.zeros_like)(_like(np.zeros_like))
defhandler(np.ones_like)(_like(np.ones_like))
defhandler(np.empty_like)(_like(np.empty_like))


@defhandler(np.full_like)
def full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None, *, device=None):
    plain = a._v if type(a) is TracedArray else np.asarray(a)
    dt = dtype if dtype is not None else plain.dtype
    shp = plain.shape if shape is None else shape
    if type(fill_value) is TracedArray:
        # The fill value itself carries a derivative: build it by broadcasting.
        return np.broadcast_to(fill_value.astype(dt), shp) + np.zeros(shp, dt)
    return _buffer(np.full(shp, fill_value, dtype=dt), a)
