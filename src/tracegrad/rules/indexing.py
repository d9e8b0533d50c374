"""Indexing: getitem (basic, integer arrays with repeats, boolean masks), the
scatter that is its transpose, take / take_along_axis, where and clip.

Keys are normalised at record time to a tuple that covers every axis of the
indexed array (Ellipsis expanded, trailing slices added). Batched
(co)tangents are handled by moving their batch axes to the *end*, where a
full key leaves them untouched, and back.
"""
import operator

import numpy as np

from ..core.array import TracedArray, bind, concrete
from ..core.forward import _align
from ..core.primitive import PRIMITIVES, defhandler, defprim


def _is_adv(k):
    return isinstance(k, np.ndarray)


def normalize_key(key, ndim):
    """Full-length tuple key with Ellipsis expanded and lists as arrays."""
    if type(key) is not tuple:
        key = (key,)
    out = []
    consumed = 0
    has_ellipsis = False
    for k in key:
        if isinstance(k, TracedArray):
            k = concrete(k, "index")
        if isinstance(k, list):
            k = np.asarray([concrete(e, "index") for e in k])
            if k.dtype == object:
                raise IndexError("only integers, slices, ellipsis, None and integer or boolean "
                                 "arrays are valid indices")
            if k.size == 0:
                k = k.astype(np.intp)
        if isinstance(k, (bool, np.bool_)):
            k = np.asarray(k)
        if k is None:
            out.append(None)
        elif k is Ellipsis:
            if has_ellipsis:
                raise IndexError("an index can only have a single ellipsis ('...')")
            has_ellipsis = True
            out.append(Ellipsis)
        elif isinstance(k, np.ndarray):
            if k.dtype == bool:
                consumed += max(k.ndim, 1) if k.ndim else 0
            elif k.dtype.kind in "iu":
                consumed += 1
            else:
                raise IndexError("arrays used as indices must be of integer (or boolean) type")
            out.append(k)
        elif isinstance(k, slice):
            consumed += 1
            out.append(k)
        else:
            out.append(int(k.__index__()))
            consumed += 1
    rest = ndim - consumed
    if rest < 0:
        raise IndexError(f"too many indices for array: array is {ndim}-dimensional, "
                         f"but {consumed} were indexed")
    if has_ellipsis:
        i = out.index(Ellipsis)
        out[i:i + 1] = [slice(None)] * rest
    else:
        out.extend([slice(None)] * rest)
    return tuple(out)


def _has_adv(key):
    return any(isinstance(k, np.ndarray) for k in key)


def _has_int_array(key):
    return any(isinstance(k, np.ndarray) and k.dtype != bool for k in key)


def _to_end(a, nb):
    if nb == 0:
        return a
    return np.moveaxis(a, tuple(range(nb)), tuple(range(-nb, 0)))


def _to_front(a, nb):
    if nb == 0:
        return a
    return np.moveaxis(a, tuple(range(-nb, 0)), tuple(range(nb)))


def _getitem_impl(x, key):
    return x[key]


def _scatter_impl(g, key, shape, kndim):
    """Adjoint of getitem: zeros of ``shape`` with ``g`` added at ``key``
    (repeated integer indices accumulate)."""
    nb = g.ndim - kndim
    gm = _to_end(g, nb)
    z = np.zeros(tuple(shape) + gm.shape[gm.ndim - nb:], dtype=g.dtype)
    if _has_int_array(key):
        np.add.at(z, key, gm)
    else:
        z[key] = gm
    return _to_front(z, nb)


def _batched_getitem(t, key, kndim_x):
    nb = t.ndim - kndim_x
    if nb == 0:
        return bind(PRIMITIVES["getitem"], (t,), {"key": key})
    return _to_front(bind(PRIMITIVES["getitem"], (_to_end(t, nb),), {"key": key}),
                     nb)


def _getitem_vjp(g, ans, x, key):
    return bind(PRIMITIVES["scatter"], (g,), {"key": key, "shape": x.shape, "kndim": ans.ndim})


def _getitem_jvp(t, ans, x, key):
    return _batched_getitem(t, key, x.ndim)


defprim("getitem", _getitem_impl, vjp=(_getitem_vjp,), jvp=(_getitem_jvp,),
        save_args=False, save_ans=False)


def _scatter_vjp(g, ans, x, key, shape, kndim):
    return _batched_getitem(g, key, len(shape))


def _scatter_jvp(t, ans, x, key, shape, kndim):
    return bind(PRIMITIVES["scatter"], (t,), {"key": key, "shape": shape, "kndim": kndim})


defprim("scatter", _scatter_impl, vjp=(_scatter_vjp,), jvp=(_scatter_jvp,),
        save_args=False, save_ans=False)


@defhandler(operator.getitem)
def getitem(x, key):
    """``x[key]`` for a traced ``x`` (the TracedArray.__getitem__ hook)."""
    key = normalize_key(key, x.ndim)
    return bind(PRIMITIVES["getitem"], (x,), {"key": key})


# --- take_along_axis and its transpose ---------------------------------------
def _expand_idx(idx, nb):
    return np.reshape(idx, (1,) * nb + idx.shape) if nb else idx


def _take_along_impl(x, idx, axis):
    nb = x.ndim - idx.ndim
    return np.take_along_axis(x, _expand_idx(idx, nb), axis=axis)


def _scatter_along_impl(g, idx, axis, shape):
    nb = g.ndim - idx.ndim
    full = g.shape[:nb] + tuple(shape)
    z = np.zeros(full, dtype=g.dtype)
    grids = list(np.ogrid[tuple(slice(0, n) for n in g.shape)])
    grids[axis] = _expand_idx(idx, nb)
    np.add.at(z, tuple(grids), g)
    return z


def take_along(x, idx, axis):
    return bind(PRIMITIVES["take_along"], (x, idx), {"axis": axis})


def scatter_along(g, idx, axis, shape):
    return bind(PRIMITIVES["scatter_along"], (g, idx), {"axis": axis, "shape": tuple(shape)})


defprim("take_along", _take_along_impl,
        vjp=(lambda g, ans, x, idx, axis: scatter_along(g, idx, axis, x.shape), None),
        jvp=(lambda t, ans, x, idx, axis: take_along(t, idx, axis), None),
        save_ans=False)
defprim("scatter_along", _scatter_along_impl,
        vjp=(lambda g, ans, x, idx, axis, shape: take_along(g, idx, axis), None),
        jvp=(lambda t, ans, x, idx, axis, shape: scatter_along(t, idx, axis, shape), None),
        save_ans=False)


@defhandler(np.take_along_axis)
def take_along_axis(arr, indices, axis=-1):
    indices = np.asarray(concrete(indices, "index"))
    if axis is None:
        arr = np.ravel(arr)
        axis = -1
    arr = arr if isinstance(arr, np.ndarray) else np.asarray(arr)
    if indices.ndim != arr.ndim:
        raise ValueError("`indices` and `arr` must have the same number of dimensions")
    ax = axis - arr.ndim if axis >= 0 else axis
    return take_along(arr, indices, ax)


@defhandler(np.take)
def take(a, indices, axis=None, out=None, mode="raise"):
    if out is not None:
        from ..core.array import _inplace_error
        raise _inplace_error("np.take(..., out=...)")
    indices = np.asarray(concrete(indices, "index"))
    a = a if isinstance(a, np.ndarray) else np.asarray(a)
    if axis is None:
        a = np.ravel(a)
        axis = 0
    n = a.shape[axis]
    if mode == "wrap":
        indices = np.mod(indices, n)
    elif mode == "clip":
        indices = np.clip(indices, 0, n - 1)
    if axis < 0:
        axis += a.ndim
    return a[(slice(None),) * axis + (indices,)]


# --- where / clip --------------------------------------------------------------
def _where_x(t, ans, cond, x, y):
    nb = t.ndim - np.ndim(x)
    return np.where(cond, _align(t, nb, ans.ndim), np.zeros((), t.dtype))


def _where_y(t, ans, cond, x, y):
    nb = t.ndim - np.ndim(y)
    return np.where(cond, np.zeros((), t.dtype), _align(t, nb, ans.ndim))


# The untaken branch receives an exact zero cotangent, which the singular
# partials of sqrt/log/... then keep at zero: np.where(x > 0, np.sqrt(x), 0)
# has derivative 0 at x == 0, not nan (the executed-path convention).
defprim("where", np.where,
        vjp=(None,
             lambda g, ans, cond, x, y: np.where(cond, g, np.zeros((), g.dtype)),
             lambda g, ans, cond, x, y: np.where(cond, np.zeros((), g.dtype), g)),
        jvp=(None, _where_x, _where_y), save_ans=False)


@defhandler(np.where)
def where(condition, x=None, y=None):
    if x is None and y is None:
        return np.nonzero(condition)
    if x is None or y is None:
        raise ValueError("either both or neither of x and y should be given")
    cond = condition if isinstance(condition, np.ndarray) else np.asarray(condition)
    return bind(PRIMITIVES["where"], (cond, x, y), {})


def _clip_x(ans, x, lo, hi):
    return ((x >= lo) & (x <= hi)).astype(np.result_type(ans))


def _clip_lo(ans, x, lo, hi):
    return (x < lo).astype(np.result_type(ans))


def _clip_hi(ans, x, lo, hi):
    return ((x > hi) & ~(x < lo)).astype(np.result_type(ans))


defprim("clip", np.clip, partials=(_clip_x, _clip_lo, _clip_hi))


@defhandler(np.clip)
def clip(a, a_min=np._NoValue, a_max=np._NoValue, out=None, *, min=np._NoValue,
         max=np._NoValue, **kwargs):
    if out is not None:
        from ..core.array import _inplace_error
        raise _inplace_error("np.clip(..., out=...)")
    lo = a_min if a_min is not np._NoValue else (min if min is not np._NoValue else None)
    hi = a_max if a_max is not np._NoValue else (max if max is not np._NoValue else None)
    a = a if isinstance(a, np.ndarray) else np.asarray(a)
    if lo is None and hi is None:
        raise ValueError("One of max or min must be given")
    if lo is None:
        lo = -np.inf
    if hi is None:
        hi = np.inf
    return bind(PRIMITIVES["clip"], (a, lo, hi), {})
