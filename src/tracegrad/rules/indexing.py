"""Indexing: getitem (basic, integer arrays with repeats, boolean masks), the
scatter that is its transpose, take / take_along_axis, where and clip.

Keys are normalised at record time to a tuple that covers every axis of the
indexed array (Ellipsis expanded, trailing slices added). Batched
(co)tangents are handled by moving their batch axes to the *end*, where a
full key leaves them untouched, and back.
"""
import operator

import numpy as np

from .. import errors
from ..core.array import TracedArray, bind, concrete
from ..core.forward import _align
from ..core.primitive import PRIMITIVES, defhandler, defprim, defufunc_method


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
        # x may carry batch axes idx lacks (a batched tangent): the scatter's
        # shape is x's without them, g's leading axes supply every batch
        vjp=(lambda g, ans, x, idx, axis: scatter_along(
            g, idx, axis, x.shape[len(x.shape) - np.ndim(idx):]), None),
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


@defhandler(np.compress)
def compress(condition, a, axis=None, out=None):
    # also reached from TracedArray.compress; a gather of the selected slices
    if out is not None:
        from ..core.array import _inplace_error
        raise _inplace_error("np.compress(..., out=...)")
    cond = np.asarray(concrete(condition, "index"))
    if cond.ndim != 1:
        raise ValueError("condition must be a 1-d array")
    a = a if isinstance(a, np.ndarray) else np.asarray(a)
    if axis is None:
        a = np.ravel(a)
        axis = 0
    n = a.shape[axis]
    if cond.size > n:
        if np.any(cond[n:]):
            raise IndexError(f"index {n} is out of bounds for axis {axis} with size {n}")
        cond = cond[:n]
    return take(a, np.flatnonzero(cond), axis=axis)


@defhandler(np.lib.stride_tricks.sliding_window_view)
def sliding_window_view(x, window_shape, axis=None, *, subok=False, writeable=False):
    """A gather of ``x``'s elements (the im2col of convolutions written with NumPy).

    NumPy returns a read-only view whose windows overlap; this returns the same
    values as a copy, so the derivative of an element accumulates over every
    window that reads it (getitem with an integer index array)."""
    if writeable:
        raise errors.UnsupportedOperation(
            "np.lib.stride_tricks.sliding_window_view(..., writeable=True) on a traced array: "
            "writes through overlapping windows are not tracked; use the default "
            "writeable=False")
    x = x if isinstance(x, np.ndarray) else np.asarray(x)
    ids = np.lib.stride_tricks.sliding_window_view(
        np.arange(x.size).reshape(x.shape), window_shape, axis)
    return np.ravel(x)[ids]


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
    if cond.dtype != np.bool_:
        # NumPy reads a non-boolean condition by truth value (np.sinc calls
        # where(x, x, eps)); record the boolean so that every rule and the
        # jit's loops see the dtype they expect
        cond = cond.astype(np.bool_)
    return bind(PRIMITIVES["where"], (cond, x, y), {})


def _clip_x(ans, x, lo, hi):
    return ((x >= lo) & (x <= hi)).astype(np.result_type(ans))


# clip(x, lo, hi) = minimum(maximum(x, lo), hi): when lo > hi every value is
# hi (NumPy's documented behaviour), so hi, not lo, gets the derivative.
def _clip_lo(ans, x, lo, hi):
    return ((x < lo) & (lo <= hi)).astype(np.result_type(ans))


def _clip_hi(ans, x, lo, hi):
    return ((x > hi) | (lo > hi)).astype(np.result_type(ans))


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


# --- writes: setitem and add.at -------------------------------------------------------
# The primitives are functional (out = x with x[key] = v); the in-place
# mechanics (writing the buffer, versions, views, snapshots) live in
# core.array.write, which records these primitives against the group root.
def _region_shape(shape, key):
    return np.broadcast_to(np.empty((), np.int8), shape)[key].shape


def _winners(key, shape):
    """For an integer-array key with repeated targets, the mask of the writes
    NumPy keeps (the last one per target); None when targets are distinct."""
    ints = [k for k in key if isinstance(k, np.ndarray) and k.dtype != bool]
    if not ints:
        return None
    if len(ints) == 1 and not np.any(ints[0] < 0) and np.unique(ints[0]).size == ints[0].size:
        return None
    ids = np.arange(int(np.prod(shape)), dtype=np.intp).reshape(shape)[key]
    flat = ids.ravel()
    if np.unique(flat).size == flat.size:
        return None
    _, first_rev = np.unique(flat[::-1], return_index=True)
    keep = np.zeros(flat.size, bool)
    keep[flat.size - 1 - first_rev] = True
    return keep.reshape(ids.shape)


def _is_plain(*xs):
    return all(type(x) is not TracedArray for x in xs)


def _setitem_impl(x, v, key):
    r = np.array(x, copy=True)
    r[key] = v
    return r


def _setitem_vjp_x(g, ans, x, v, key):
    nb = g.ndim - len(x.shape)
    if _is_plain(g):
        r = np.array(g, copy=True)
        _to_end(r, nb)[key] = 0
        return r
    mask = np.ones(x.shape, dtype=bool)
    mask[key] = False
    return g * mask


def _setitem_vjp_v(g, ans, x, v, key):
    r = _batched_getitem(g, key, len(x.shape))
    win = _winners(key, x.shape)
    if win is not None:
        r = r * win
    return r


def _place(t, nb, key, shape, batch, dtype):
    """Scatter a region tangent into zeros of ``batch + shape`` (transposing getitem)."""
    return bind(PRIMITIVES["scatter"], (t,), {"key": key, "shape": shape,
                                              "kndim": t.ndim - nb})


def _setitem_jvp(ts, ans, x, v, key):
    tx, tv = ts
    shape = tuple(x.shape)
    if tx is not None:
        nb = tx.ndim - len(shape)
    else:
        nb = tv.ndim - np.ndim(v)
    ref = tx if tx is not None else tv
    batch = ref.shape[:nb]
    rshape = _region_shape(shape, key)
    dtype = np.result_type(ans) if not hasattr(ans, "_v") else ans.dtype
    if tv is not None:
        tvb = np.broadcast_to(_align(tv, nb, len(rshape)), batch + rshape)
    if _is_plain(tx, tv):
        base = np.array(tx, dtype=dtype, copy=True) if tx is not None else np.zeros(
            batch + shape, dtype)
        _to_end(base, nb)[key] = 0 if tv is None else _to_end(tvb, nb)
        return base
    out = None
    if tx is not None:
        mask = np.ones(shape, dtype=bool)
        mask[key] = False
        out = tx * mask
    if tv is not None:
        win = _winners(key, shape)
        if win is not None:
            tvb = tvb * win
        placed = _place(tvb, nb, key, shape, batch, dtype)
        out = placed if out is None else out + placed
    return out


defprim("setitem", _setitem_impl, vjp=(_setitem_vjp_x, _setitem_vjp_v), jvp=_setitem_jvp,
        save_args=False, save_ans=False)


def _add_at_impl(x, v, key):
    r = np.array(x, copy=True)
    # full-shape values: see _add_at on NumPy's ufunc.at broadcasting bug
    np.add.at(r, key, np.broadcast_to(v, _region_shape(r.shape, key)))
    return r


def _add_at_jvp(ts, ans, x, v, key):
    tx, tv = ts
    shape = tuple(x.shape)
    nb = tx.ndim - len(shape) if tx is not None else tv.ndim - np.ndim(v)
    ref = tx if tx is not None else tv
    batch = ref.shape[:nb]
    out = tx
    if tv is not None:
        rshape = _region_shape(shape, key)
        tvb = np.broadcast_to(_align(tv, nb, len(rshape)), batch + rshape)
        placed = _place(tvb, nb, key, shape, batch, None)
        out = placed if out is None else out + placed
    return out


defprim("add_at", _add_at_impl,
        vjp=(lambda g, ans, x, v, key: g,
             lambda g, ans, x, v, key: _batched_getitem(g, key, len(x.shape))),
        jvp=_add_at_jvp, save_args=False, save_ans=False)


def _as_value(v):
    """Assignment values may be lists of traced scalars: stack them rather
    than let NumPy convert each to a float (which would drop derivatives)."""
    if isinstance(v, (list, tuple)) and _has_traced(v):
        return np.stack([_as_value(e) for e in v])
    return v


def _has_traced(v):
    if type(v) is TracedArray:
        return True
    if isinstance(v, (list, tuple)):
        return any(_has_traced(e) for e in v)
    return False


@defhandler(operator.setitem)
def setitem(a, key, value):
    """``a[key] = value`` for a TracedArray ``a`` (the __setitem__ hook)."""
    from ..core.array import write
    key = normalize_key(key, a.ndim)
    write(a, key, _as_value(value), PRIMITIVES["setitem"])


def _add_at(a, indices, b, negate=False):
    from ..core.array import escape, is_tracked, write
    if type(a) is not TracedArray:
        if is_tracked(b):
            escape("escape", "np.add.at(<plain ndarray>, ..., <traced>) writes a traced value "
                   "into a plain array, which drops its derivative; make the destination a "
                   "traced array (np.zeros_like(x)).", depth=4)
        idx = concrete(indices, "index") if not isinstance(indices, tuple) else tuple(
            concrete(i, "index") for i in indices)
        bv = b._v if type(b) is TracedArray else np.asarray(b)
        np.add.at(a, idx, np.broadcast_to(-bv if negate else bv, _region_shape(a.shape, idx)))
        return
    key = normalize_key(indices, a.ndim)
    b = _as_value(b)
    if negate:
        b = np.negative(b)
    # NumPy 2.4's ufunc.at adds wrong values (reading past the buffer) when
    # the values need broadcasting to more dimensions (a 1-D target, a 2-D
    # index, 1-D values): hand it values of the full region's shape.
    region = _region_shape(a.shape, key)
    if np.shape(b) != region:
        b = np.broadcast_to(b, region)
    write(a, key, b, PRIMITIVES["add_at"], op="add")


def _ufunc_at(ufunc):
    def handler(a, indices, b=None):
        if ufunc is np.add:
            return _add_at(a, indices, b)
        if ufunc is np.subtract:
            return _add_at(a, indices, b, negate=True)
        from ..core.primitive import unsupported
        raise unsupported(f"np.{ufunc.__name__}.at")
    return handler


for _uf in (np.add, np.subtract):
    defufunc_method(_uf, "at")(_ufunc_at(_uf))


@defhandler(np.copyto)
def copyto(dst, src, casting="same_kind", where=True):
    from ..core.array import escape, is_tracked
    if type(dst) is not TracedArray:
        if is_tracked(src) or (type(src) is TracedArray and where is not True):
            escape("escape", "np.copyto(<plain ndarray>, <traced>) writes a traced value into a "
                   "plain array, which drops its derivative; make the destination a traced "
                   "array (np.zeros_like(x), x.copy()).", depth=3)
        np.copyto(dst, src._v if type(src) is TracedArray else src, casting=casting,
                  where=where._v if type(where) is TracedArray else where)
        return
    val = src if where is True else np.where(where, src, dst)
    setitem(dst, Ellipsis, val)


def _cycle(vals, n):
    vals = np.ravel(_as_value(vals) if isinstance(vals, (list, tuple)) else vals)
    if vals.size == n:
        return vals
    if vals.size == 0:
        raise ValueError("cannot place from an empty array of values")
    reps = -(-n // vals.size)
    return np.tile(vals, reps)[:n]


@defhandler(np.put)
def put(a, ind, v, mode="raise"):
    if type(a) is not TracedArray:
        from ..core.array import escape, is_tracked
        if is_tracked(v):
            escape("escape", "np.put(<plain ndarray>, ..., <traced>) drops the derivative; "
                   "make the destination a traced array.", depth=3)
        return np.put(a, concrete(ind, "index"), v._v if type(v) is TracedArray else v, mode)
    ind = np.asarray(concrete(ind, "index")).ravel()
    n = a.size
    if mode == "wrap":
        ind = np.mod(ind, n)
    elif mode == "clip":
        ind = np.clip(ind, 0, n - 1)
    elif np.any((ind >= n) | (ind < -n)):
        raise IndexError(f"index out of range for array of size {n}")
    ind = np.where(ind < 0, ind + n, ind)
    key = np.unravel_index(ind, a.shape)
    setitem(a, key, _cycle(v, ind.size))


@defhandler(np.put_along_axis)
def put_along_axis(arr, indices, values, axis):
    """``arr[idx] = values`` with NumPy's along-axis index (a recorded setitem:
    the overwritten elements get no derivative, ``values`` the gathered
    cotangent; with repeated indices the last write wins, as in NumPy)."""
    idx = np.asarray(concrete(indices, "index"))
    if type(arr) is not TracedArray:
        from ..core.array import escape, is_tracked
        if is_tracked(values):
            escape("escape", "np.put_along_axis(<plain ndarray>, ..., <traced>) drops the "
                   "derivative; make the destination a traced array.", depth=3)
        return np.put_along_axis(arr, idx, values._v if type(values) is TracedArray
                                 else values, axis)
    if idx.dtype.kind not in "iu":
        raise IndexError("`indices` must be an integer array")
    if axis is None:
        if idx.ndim != 1:
            raise ValueError("when axis=None, `indices` must have a single dimension.")
        n = arr.size
        if np.any((idx >= n) | (idx < -n)):
            raise IndexError(f"index out of range for array of size {n}")
        flat = np.where(idx < 0, idx + n, idx)
        vals = values if isinstance(values, np.ndarray) else np.asarray(values)
        setitem(arr, np.unravel_index(flat, arr.shape), np.broadcast_to(vals, flat.shape))
        return None
    if idx.ndim != arr.ndim:
        raise ValueError("`indices` and `arr` must have the same number of dimensions")
    axis = operator.index(axis)
    if not -arr.ndim <= axis < arr.ndim:
        raise np.exceptions.AxisError(axis, arr.ndim)
    axis %= arr.ndim
    key = []
    for d, n in enumerate(arr.shape):
        if d == axis:
            key.append(idx)
        else:
            shape = [1] * arr.ndim
            shape[d] = n
            key.append(np.arange(n).reshape(shape))
    setitem(arr, tuple(key), values)
    return None


@defhandler(np.place)
def place(arr, mask, vals):
    mask = np.asarray(concrete(mask, "index"), dtype=bool)
    if type(arr) is not TracedArray:
        from ..core.array import escape, is_tracked
        if is_tracked(vals):
            escape("escape", "np.place(<plain ndarray>, ..., <traced>) drops the derivative; "
                   "make the destination a traced array.", depth=3)
        return np.place(arr, mask, vals._v if type(vals) is TracedArray else vals)
    n = int(mask.sum())
    if n:
        setitem(arr, mask, _cycle(vals, n))


@defhandler(np.fill_diagonal)
def fill_diagonal(a, val, wrap=False):
    if type(a) is not TracedArray:
        from ..core.array import escape, is_tracked
        if is_tracked(val):
            escape("escape", "np.fill_diagonal(<plain ndarray>, <traced>) drops the derivative; "
                   "make the destination a traced array.", depth=3)
        return np.fill_diagonal(a, val._v if type(val) is TracedArray else val, wrap)
    if a.ndim < 2:
        raise ValueError("array must be at least 2-d")
    end = None
    if a.ndim == 2:
        step = a.shape[1] + 1
        if not wrap:
            end = a.shape[1] * a.shape[1]
    else:
        if not np.all(np.diff(a.shape) == 0):
            raise ValueError("All dimensions of input must be of equal length")
        step = 1 + int(np.cumprod(a.shape[:-1]).sum())
    flat = np.arange(a.size)[:end:step]
    setitem(a, np.unravel_index(flat, a.shape), _cycle(val, flat.size))


@defhandler(np.choose)
def choose(a, choices, out=None, mode="raise"):
    # a gather along a new leading axis of the (broadcast) choices
    if out is not None:
        from ..core.array import _inplace_error
        raise _inplace_error("np.choose(..., out=...)")
    idx = np.asarray(concrete(a, "index"))
    choices = list(choices) if not isinstance(choices, np.ndarray) else list(choices)
    n = len(choices)
    if mode == "wrap":
        idx = idx % n
    elif mode == "clip":
        idx = np.clip(idx, 0, n - 1)
    elif np.any((idx < 0) | (idx >= n)):
        raise ValueError("invalid entry in choice array")
    arrs = np.broadcast_arrays(idx, *[c if isinstance(c, np.ndarray) else np.asarray(c)
                                      for c in choices])
    stacked = np.stack(arrs[1:])
    return np.take_along_axis(stacked, arrs[0][None].astype(np.intp), axis=0)[0]
