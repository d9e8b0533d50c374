"""Shape and layout: reshape, transpose, broadcast_to, concatenate, stack,
astype, copy, real/imag, and the many NumPy functions built from them (ravel,
squeeze, expand_dims, swapaxes, moveaxis, split, flip, roll, tile, repeat,
diag, diagonal, trace, atleast_*d).

Only these shape primitives carry rules; everything else is a handler that
composes them (and ``getitem``), so its derivatives follow automatically.
"""
import numpy as np

from ..core.array import TracedArray, bind, concrete
from ..core.forward import _align
from ..core.primitive import PRIMITIVES, Variadic, defhandler, defprim
from .indexing import getitem
from .reductions import norm_axes


def _asarr(a):
    return a if isinstance(a, np.ndarray) else np.asarray(a)


# --- reshape -----------------------------------------------------------------
defprim("reshape", lambda x, shape: np.reshape(x, shape),
        vjp=(lambda g, ans, x, shape: np.reshape(g, g.shape[:g.ndim - len(shape)] + x.shape),),
        jvp=(lambda t, ans, x, shape: np.reshape(t, t.shape[:t.ndim - x.ndim] + tuple(shape)),),
        save_args=False, save_ans=False)


def _resolve_shape(shape, size):
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    shape = tuple(int(s) for s in shape)
    if -1 in shape:
        known = 1
        for s in shape:
            if s != -1:
                known *= s
        if shape.count(-1) > 1 or known == 0 or size % known:
            np.empty(size).reshape(shape)  # let NumPy raise its own error
        shape = tuple(size // known if s == -1 else s for s in shape)
    return shape


@defhandler(np.reshape)
def reshape(a, /, shape=None, order="C", *, newshape=None, copy=None):
    if shape is None:
        shape = newshape
    a = _asarr(a)
    shape = _resolve_shape(shape, a.size)
    if order == "F":
        return np.transpose(reshape(np.transpose(a), shape[::-1]))
    if order not in ("C", "A"):
        raise ValueError(f"order {order!r} is not supported")
    if shape == a.shape:
        return a if copy is not True else np.copy(a)
    return bind(PRIMITIVES["reshape"], (a,), {"shape": shape})


@defhandler(np.ravel)
def ravel(a, order="C"):
    a = _asarr(a)
    if order == "F":
        a = np.transpose(a)
    return reshape(a, (a.size,))


@defhandler(np.squeeze)
def squeeze(a, axis=None):
    a = _asarr(a)
    if axis is None:
        shape = tuple(s for s in a.shape if s != 1)
    else:
        axes = norm_axes(axis, a.ndim)
        for ax in axes:
            if a.shape[ax] != 1:
                raise ValueError("cannot select an axis to squeeze out which has size not equal "
                                 "to one")
        shape = tuple(s for i, s in enumerate(a.shape) if i - a.ndim not in axes)
    return reshape(a, shape)


@defhandler(np.expand_dims)
def expand_dims(a, axis):
    a = _asarr(a)
    axes = norm_axes(axis, a.ndim + (1 if isinstance(axis, (int, np.integer)) else len(axis)))
    n = a.ndim + len(axes)
    it = iter(a.shape)
    shape = tuple(1 if (i - n) in axes else next(it) for i in range(n))
    return reshape(a, shape)


def _atleast(nd, where):
    def one(a):
        a = _asarr(a)
        if a.ndim >= nd:
            return a
        if a.ndim == 0:
            return reshape(a, (1,) * nd)
        if nd == 2:
            return reshape(a, (1,) + a.shape)
        # nd == 3: 1-D -> (1, n, 1); 2-D -> (m, n, 1)
        return reshape(a, ((1,) + a.shape + (1,)) if a.ndim == 1 else a.shape + (1,))

    def handler(*arys):
        res = [one(a) for a in arys]
        return res[0] if len(res) == 1 else tuple(res)
    return handler


defhandler(np.atleast_1d)(_atleast(1, None))
defhandler(np.atleast_2d)(_atleast(2, None))
defhandler(np.atleast_3d)(_atleast(3, None))


# --- transpose ---------------------------------------------------------------
def _perm(axes, nb):
    return tuple(range(nb)) + tuple(nb + a for a in axes)


def _inv(axes):
    inv = [0] * len(axes)
    for i, a in enumerate(axes):
        inv[a] = i
    return tuple(inv)


defprim("transpose", lambda x, axes: np.transpose(x, axes),
        vjp=(lambda g, ans, x, axes: np.transpose(g, _perm(_inv(axes), g.ndim - len(axes))),),
        jvp=(lambda t, ans, x, axes: np.transpose(t, _perm(axes, t.ndim - len(axes))),),
        save_args=False, save_ans=False)


@defhandler(np.transpose)
def transpose(a, axes=None):
    a = _asarr(a)
    if axes is None:
        axes = tuple(range(a.ndim))[::-1]
    else:
        axes = tuple(int(x) % a.ndim if a.ndim else int(x) for x in axes)
        if sorted(axes) != list(range(a.ndim)):
            raise ValueError("axes don't match array")
    if axes == tuple(range(a.ndim)):
        return a
    return bind(PRIMITIVES["transpose"], (a,), {"axes": axes})


@defhandler(np.swapaxes)
def swapaxes(a, axis1, axis2):
    a = _asarr(a)
    (i,), (j,) = norm_axes(axis1, a.ndim), norm_axes(axis2, a.ndim)
    axes = list(range(a.ndim))
    axes[i], axes[j] = axes[j], axes[i]
    return transpose(a, axes)


@defhandler(np.moveaxis)
def moveaxis(a, source, destination):
    a = _asarr(a)
    src = [s % a.ndim for s in np.atleast_1d(source).tolist()]
    dst = [d % a.ndim for d in np.atleast_1d(destination).tolist()]
    if len(src) != len(dst):
        raise ValueError("`source` and `destination` arguments must have the same number of "
                         "elements")
    order = [n for n in range(a.ndim) if n not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return transpose(a, order)


@defhandler(np.matrix_transpose)
def matrix_transpose(x):
    return swapaxes(x, -1, -2)


# --- broadcast_to ------------------------------------------------------------
defprim("broadcast_to", lambda x, shape: np.broadcast_to(x, shape),
        # The walker undoes the broadcast: the rule passes g through.
        vjp=(lambda g, ans, x, shape: g,),
        jvp=(lambda t, ans, x, shape: np.broadcast_to(
            _align(t, t.ndim - x.ndim, len(shape)), t.shape[:t.ndim - x.ndim] + tuple(shape)),),
        save_args=False, save_ans=False)


@defhandler(np.broadcast_to)
def broadcast_to(array, shape, subok=False):
    array = _asarr(array)
    shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if shape == array.shape:
        return array
    return bind(PRIMITIVES["broadcast_to"], (array,), {"shape": shape})


@defhandler(np.broadcast_arrays)
def broadcast_arrays(*args, subok=False):
    shape = np.broadcast_shapes(*[np.shape(a) for a in args])
    return tuple(broadcast_to(a, shape) for a in args)


# --- concatenate and friends ----------------------------------------------------
def _concat_vjp(i, g, ans, *args, axis, sizes):
    start = sum(sizes[:i])
    idx = (Ellipsis, slice(start, start + sizes[i])) + (slice(None),) * (-axis - 1)
    return g[idx]


def _concat_jvp(ts, ans, *args, axis, sizes):
    k, ref = next((i, t) for i, t in enumerate(ts) if t is not None)
    nb = ref.ndim - np.ndim(args[k])
    batch = ref.shape[:nb]
    parts = [t if t is not None else np.zeros(batch + np.shape(a), ans.dtype)
             for t, a in zip(ts, args)]
    return np.concatenate(parts, axis=axis)


defprim("concatenate", lambda *xs, axis, sizes: np.concatenate(xs, axis=axis),
        vjp=Variadic(_concat_vjp), jvp=_concat_jvp, save_args=False, save_ans=False)


@defhandler(np.concatenate)
def concatenate(arrays, axis=0, out=None, *, dtype=None, casting="same_kind"):
    if out is not None:
        from ..core.array import _inplace_error
        raise _inplace_error("np.concatenate(..., out=...)")
    arrays = [_asarr(a) for a in arrays]
    if axis is None:
        arrays = [ravel(a) for a in arrays]
        axis = 0
    if dtype is not None:
        arrays = [a.astype(dtype) for a in arrays]
    nd = arrays[0].ndim
    if nd == 0:
        raise ValueError("zero-dimensional arrays cannot be concatenated")
    (ax,) = norm_axes(axis, nd)
    sizes = tuple(a.shape[ax] if a.ndim == nd else -1 for a in arrays)
    if len(arrays) == 1:
        return np.copy(arrays[0])
    return bind(PRIMITIVES["concatenate"], tuple(arrays), {"axis": ax, "sizes": sizes})


# stack is a primitive of its own (not expand_dims + concatenate): one node
# instead of n + 1 forward and 2n backward, which matters for programs that
# stack small values in a long loop (an ODE right-hand side under jit).
def _stack_vjp(i, g, ans, *args, axis):
    return g[(Ellipsis, i) + (slice(None),) * (-axis - 1)]


def _stack_jvp(ts, ans, *args, axis):
    k, ref = next((i, t) for i, t in enumerate(ts) if t is not None)
    nb = ref.ndim - np.ndim(args[k])
    batch = ref.shape[:nb]
    parts = [t if t is not None else np.zeros(batch + np.shape(a), ans.dtype)
             for t, a in zip(ts, args)]
    return np.stack(parts, axis=axis)


defprim("stack", lambda *xs, axis: np.stack(xs, axis=axis),
        vjp=Variadic(_stack_vjp), jvp=_stack_jvp, save_args=False, save_ans=False)


@defhandler(np.stack)
def stack(arrays, axis=0, out=None, *, dtype=None, casting="same_kind"):
    if out is not None:
        from ..core.array import _inplace_error
        raise _inplace_error("np.stack(..., out=...)")
    arrays = [_asarr(a) for a in arrays]
    if not arrays:
        raise ValueError("need at least one array to stack")
    shape = arrays[0].shape
    if any(a.shape != shape for a in arrays):
        raise ValueError("all input arrays must have the same shape")
    (ax,) = norm_axes(axis, len(shape) + 1)
    if dtype is not None:
        arrays = [a.astype(dtype) for a in arrays]
    return bind(PRIMITIVES["stack"], tuple(arrays), {"axis": ax})


@defhandler(np.hstack)
def hstack(tup, *, dtype=None, casting="same_kind"):
    arrs = [np.atleast_1d(a) for a in tup]
    return concatenate(arrs, axis=0 if arrs[0].ndim == 1 else 1, dtype=dtype)


@defhandler(np.vstack)
def vstack(tup, *, dtype=None, casting="same_kind"):
    return concatenate([np.atleast_2d(a) for a in tup], axis=0, dtype=dtype)


@defhandler(np.dstack)
def dstack(tup):
    return concatenate([np.atleast_3d(a) for a in tup], axis=2)


@defhandler(np.column_stack)
def column_stack(tup):
    arrs = []
    for a in tup:
        a = _asarr(a)
        arrs.append(reshape(a, (a.size, 1)) if a.ndim < 2 else a)
    return concatenate(arrs, axis=1)


@defhandler(np.block)
def block(arrays):
    def rec(x, depth, maxdepth):
        if isinstance(x, list):
            parts = [rec(e, depth + 1, maxdepth) for e in x]
            return concatenate(parts, axis=-(maxdepth - depth))
        a = _asarr(x)
        return reshape(a, (1,) * (maxdepth - a.ndim) + a.shape) if a.ndim < maxdepth else a

    def depth_of(x):
        return 1 + depth_of(x[0]) if isinstance(x, list) else 0

    def max_ndim(x):
        return max(max_ndim(e) for e in x) if isinstance(x, list) else np.ndim(x)
    d = depth_of(arrays)
    return rec(arrays, 0, max(d, max_ndim(arrays)))


# --- split ---------------------------------------------------------------------
def _split_points(n, indices_or_sections, strict):
    if isinstance(indices_or_sections, (int, np.integer)):
        k = int(indices_or_sections)
        if k <= 0:
            raise ValueError("number sections must be larger than 0.")
        if strict and n % k:
            raise ValueError("array split does not result in an equal division")
        q, r = divmod(n, k)
        sizes = [q + 1] * r + [q] * (k - r)
        pts = np.cumsum([0] + sizes).tolist()
    else:
        pts = [0] + [int(i) for i in indices_or_sections] + [n]
    return pts


def _split(ary, indices_or_sections, axis, strict):
    ary = _asarr(ary)
    (ax,) = norm_axes(axis, ary.ndim)
    pts = _split_points(ary.shape[ax], indices_or_sections, strict)
    tail = (slice(None),) * (-ax - 1)
    return [ary[(Ellipsis, slice(a, b)) + tail] for a, b in zip(pts[:-1], pts[1:])]


@defhandler(np.split)
def split(ary, indices_or_sections, axis=0):
    return _split(ary, indices_or_sections, axis, True)


@defhandler(np.array_split)
def array_split(ary, indices_or_sections, axis=0):
    return _split(ary, indices_or_sections, axis, False)


@defhandler(np.hsplit)
def hsplit(ary, indices_or_sections):
    return _split(ary, indices_or_sections, 1 if np.ndim(ary) > 1 else 0, True)


@defhandler(np.vsplit)
def vsplit(ary, indices_or_sections):
    return _split(ary, indices_or_sections, 0, True)


@defhandler(np.dsplit)
def dsplit(ary, indices_or_sections):
    return _split(ary, indices_or_sections, 2, True)


# --- flips, rolls, tiles, repeats ----------------------------------------------
@defhandler(np.flip)
def flip(m, axis=None):
    m = _asarr(m)
    axes = norm_axes(axis, m.ndim)
    key = tuple(slice(None, None, -1) if (i - m.ndim) in axes else slice(None)
                for i in range(m.ndim))
    return m[key]


@defhandler(np.fliplr)
def fliplr(m):
    return flip(m, 1)


@defhandler(np.flipud)
def flipud(m):
    return flip(m, 0)


@defhandler(np.rot90)
def rot90(m, k=1, axes=(0, 1)):
    m = _asarr(m)
    k %= 4
    a0, a1 = axes
    if k == 0:
        return m
    if k == 2:
        return flip(flip(m, a0), a1)
    perm = list(range(m.ndim))
    perm[a0], perm[a1] = perm[a1], perm[a0]
    return transpose(flip(m, a1), perm) if k == 1 else flip(transpose(m, perm), a1)


@defhandler(np.roll)
def roll(a, shift, axis=None):
    a = _asarr(a)
    if axis is None:
        return reshape(roll(ravel(a), shift, 0), a.shape)
    shifts = np.broadcast_to(shift, np.broadcast_shapes(np.shape(shift), np.shape(axis)))
    axes = np.broadcast_to(axis, shifts.shape)
    total = {}
    for s, ax in zip(np.atleast_1d(shifts).tolist(), np.atleast_1d(axes).tolist()):
        ax = ax % a.ndim
        total[ax] = total.get(ax, 0) + s
    # Two slices and a concatenate per axis: the adjoint is slicing again,
    # not the scatter-add an index gather would need.
    out = a
    for ax, s in sorted(total.items()):
        n = a.shape[ax]
        if not n or not s % n:
            continue
        k = s % n
        head = (slice(None),) * ax
        out = concatenate([out[head + (slice(n - k, None),)], out[head + (slice(0, n - k),)]],
                          axis=ax)
    return out


@defhandler(np.tile)
def tile(A, reps):
    A = _asarr(A)
    reps = (int(reps),) if isinstance(reps, (int, np.integer)) else tuple(int(r) for r in reps)
    d = max(len(reps), A.ndim)
    reps = (1,) * (d - len(reps)) + reps
    A = reshape(A, (1,) * (d - A.ndim) + A.shape)
    inter = []
    big = []
    for r, s in zip(reps, A.shape):
        inter += [1, s]
        big += [r, s]
    B = broadcast_to(reshape(A, tuple(inter)), tuple(big))
    return reshape(B, tuple(r * s for r, s in zip(reps, A.shape)))


@defhandler(np.repeat)
def repeat(a, repeats, axis=None):
    a = _asarr(a)
    if axis is None:
        a = ravel(a)
        axis = 0
    (ax,) = norm_axes(axis, a.ndim)
    reps = concrete(repeats, "index")
    idx = np.repeat(np.arange(a.shape[ax]), reps)
    return a[(Ellipsis, idx) + (slice(None),) * (-ax - 1)]


# --- diagonals -----------------------------------------------------------------
@defhandler(np.diagonal)
def diagonal(a, offset=0, axis1=0, axis2=1):
    a = _asarr(a)
    m = moveaxis(a, (axis1, axis2), (-2, -1))
    n0, n1 = m.shape[-2], m.shape[-1]
    if offset >= 0:
        k = max(0, min(n0, n1 - offset))
        rows = np.arange(k)
        cols = rows + offset
    else:
        k = max(0, min(n0 + offset, n1))
        cols = np.arange(k)
        rows = cols - offset
    return m[..., rows, cols]


@defhandler(np.trace)
def trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    return np.sum(diagonal(a, offset, axis1, axis2), axis=-1, dtype=dtype, out=out)


@defhandler(np.diag)
def diag(v, k=0):
    v = _asarr(v)
    if v.ndim == 2:
        return diagonal(v, k)
    if v.ndim != 1:
        raise ValueError("Input must be 1- or 2-d.")
    n = v.shape[0] + abs(k)
    rows = np.arange(v.shape[0]) + max(0, -k)
    cols = np.arange(v.shape[0]) + max(0, k)
    return bind(PRIMITIVES["scatter"], (v,), {"key": (rows, cols), "shape": (n, n), "kndim": 1})


@defhandler(np.diagflat)
def diagflat(v, k=0):
    return diag(ravel(v), k)


# --- casts and copies ------------------------------------------------------------
defprim("astype", lambda x, dtype: x.astype(dtype),
        # The walker casts the cotangent back to the input dtype.
        vjp=(lambda g, ans, x, dtype: g,),
        jvp=(lambda t, ans, x, dtype: t.astype(dtype),),
        save_args=False, save_ans=False)


@defhandler(np.ndarray.astype)
def astype(x, dtype):
    dtype = np.dtype(dtype)
    if dtype == x.dtype:
        return np.copy(x)
    return bind(PRIMITIVES["astype"], (x,), {"dtype": dtype})


defprim("copy", lambda x: np.array(x, copy=True),
        vjp=(lambda g, ans, x: g,), jvp=(lambda t, ans, x: t,),
        save_args=False, save_ans=False)


@defhandler(np.copy)
def copy(a, order="K", subok=False):
    return bind(PRIMITIVES["copy"], (_asarr(a),), {})


defprim("real", np.real,
        vjp=(lambda g, ans, x: g,),
        jvp=(lambda t, ans, x: np.real(t),), save_args=False, save_ans=False)
defprim("imag", np.imag,
        # Under the real-loss convention (cotangent = dL/dRe + i dL/dIm) the
        # imaginary part pulls back to i*g.
        vjp=(lambda g, ans, x: 1j * g,),
        jvp=(lambda t, ans, x: np.imag(t),), save_args=False, save_ans=False)


@defhandler(np.real)
def real(val):
    val = _asarr(val)
    if val.dtype.kind != "c":
        return val
    return bind(PRIMITIVES["real"], (val,), {})


@defhandler(np.imag)
def imag(val):
    val = _asarr(val)
    if val.dtype.kind != "c":
        return np.zeros_like(val._v if isinstance(val, TracedArray) else val)
    return bind(PRIMITIVES["imag"], (val,), {})



# --- delete / insert: a gather from the operands, positions worked out on integer codes ------
def _codes(shape, start=0):
    return np.arange(start, start + int(np.prod(shape, dtype=np.int64))).reshape(shape)


@defhandler(np.delete)
def delete(arr, obj, axis=None):
    # NumPy's implementation converts with subok=False (dropping the derivative). Run it on
    # the integer codes of arr's elements instead, then gather the kept elements.
    arr = _asarr(arr)
    obj = concrete(obj, "index") if isinstance(obj, np.ndarray) else obj
    kept = np.delete(_codes(arr.shape), obj, axis)
    return np.take(np.ravel(arr), kept)


@defhandler(np.insert)
def insert(arr, obj, values, axis=None):
    # np.insert on codes: arr's elements are 0..n-1, values' elements -1, -2, ... (so the
    # broadcasting and placement are NumPy's own); then one gather from [arr, values].
    arr = _asarr(arr)
    values = _asarr(values)
    obj = concrete(obj, "index") if isinstance(obj, np.ndarray) else obj
    n = arr.size
    pos = np.insert(_codes(arr.shape), obj, -1 - _codes(values.shape), axis)
    pos = np.where(pos >= 0, pos, n - 1 - pos)
    if values.dtype != arr.dtype:
        values = values.astype(arr.dtype)
    return np.take(np.concatenate([np.ravel(arr), np.ravel(values)]), pos)


# --- apply_along_axis: NumPy's implementation writes into a plain buffer ------------------
@defhandler(np.apply_along_axis)
def apply_along_axis(func1d, axis, arr, *args, **kwargs):
    try:
        from numpy.lib.array_utils import normalize_axis_index
    except ImportError:  # NumPy < 2.0
        from numpy.core.multiarray import normalize_axis_index
    arr = _asarr(arr)
    axis = normalize_axis_index(axis, arr.ndim)
    inarr = np.moveaxis(arr, axis, -1)
    outer = inarr.shape[:-1]
    if any(s == 0 for s in outer):
        raise ValueError("Cannot apply_along_axis when any iteration dimensions are 0")
    res = [_asarr(func1d(inarr[ind], *args, **kwargs)) for ind in np.ndindex(outer)]
    r = res[0].ndim
    out = np.reshape(np.stack(res), outer + res[0].shape)
    k = len(outer)
    perm = list(range(axis)) + list(range(k, k + r)) + list(range(axis, k))
    return np.transpose(out, perm)
