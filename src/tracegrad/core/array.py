"""TracedArray: an ndarray that records the NumPy operations applied to it.

The array's own buffer holds the concrete value, so NumPy code that only
*reads* values (``if x > 0``, ``float(x)``, printing, shapes) works unchanged
and the path that actually ran is differentiated. Every NumPy operation is
routed through ``__array_ufunc__`` / ``__array_function__`` (or one of the
overridden methods below) to :func:`bind`, which computes the result on plain
arrays and lets each active level record it.
"""
import operator

import numpy as np

from .. import errors
from .primitive import (FUNCTION_HANDLERS, UFUNC_METHOD_HANDLERS, UFUNC_PRIMS, func_name,
                        unsupported)

_ndarray = np.ndarray
_asarray = np.asarray


class TracedArray(np.ndarray):
    """An ndarray whose NumPy operations are recorded for differentiation.

    Users do not build these directly: ``grad``, ``jvp`` and the other
    transforms wrap their inputs, and results of NumPy operations on traced
    arrays are traced. ``_v`` is a plain ndarray view of the same buffer and
    ``_tg`` maps each level the value depends on to its payload.
    """

    __array_priority__ = 100.0
    # Slots, not an instance dict: attribute access on an ndarray subclass
    # with a __dict__ costs several hundred instructions (no specialisation,
    # no managed dict), and these are read on every traced operation.
    #   _v      plain ndarray view of the buffer
    #   _tg     {level: payload}
    #   _al     alias group (core.tape.Alias) once the buffer is shared or
    #           written, else None; then also:
    #   _chain  view primitives deriving this array from the group root
    #   _alver  group version at which _tg was last valid
    #   _snaps  [(version, old value)] kept for saved values overwritten, or None
    __slots__ = ("_v", "_tg", "_al", "_chain", "_alver", "_snaps")

    # --- NumPy protocols -------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.pop("out", None) if kwargs else None
        if method == "__call__":
            prim = UFUNC_PRIMS.get(ufunc)
            if prim is None:
                # a ufunc composed of others (np.divmod)
                handler = UFUNC_METHOD_HANDLERS.get((ufunc, method))
                if handler is None:
                    raise unsupported(f"np.{ufunc.__name__}")
                r = handler(*inputs, **kwargs)
                if out is None:
                    return r
                if type(out) is not tuple or len(out) != len(r):
                    raise TypeError(f"np.{ufunc.__name__}: out= must be a tuple of "
                                    f"{len(r)} arrays")
                return tuple(_write_out((o,), x, f"np.{ufunc.__name__}")
                             for o, x in zip(out, r))
            if kwargs:
                r = _ufunc_with_kwargs(prim, ufunc, inputs, kwargs)
            else:
                r = bind(prim, inputs, _NOPARAMS)
        else:
            handler = UFUNC_METHOD_HANDLERS.get((ufunc, method))
            if handler is None:
                raise unsupported(f"np.{ufunc.__name__}.{method}")
            r = handler(*inputs, **kwargs)
            if method == "at":
                return None
        if out is None:
            return r
        return _write_out(out, r, f"np.{ufunc.__name__}")

    def __array_function__(self, func, types, args, kwargs):
        handler = FUNCTION_HANDLERS.get(func)
        if handler is None:
            raise unsupported(func_name(func))
        return handler(*args, **kwargs)

    # --- conversions: concrete values, the executed path is differentiated
    def __bool__(self):
        return bool(concrete(self, "bool"))

    def __float__(self):
        _conversion(self, "float()")
        return float(concrete(self, "float"))

    def __int__(self):
        return int(concrete(self, "int"))

    def __index__(self):
        return concrete(self, "index").__index__()

    def __complex__(self):
        _conversion(self, "complex()")
        return complex(concrete(self, "complex"))

    def item(self, *args):
        _conversion(self, ".item()")
        return concrete(self, "item").item(*args)

    def tolist(self):
        _conversion(self, ".tolist()")
        return concrete(self, "tolist").tolist()

    def __repr__(self):
        return f"Traced({np.array_repr(self._v)[6:-1]})" if self._v.ndim else f"Traced({self._v!r})"

    def __str__(self):
        return str(self._v)

    def __format__(self, spec):
        return format(self._v, spec)

    def __reduce__(self):
        raise errors.EscapeError("a TracedArray cannot be pickled; convert with np.asarray "
                                 "after the transform returns")

    def __hash__(self):
        raise TypeError("unhashable type: 'TracedArray'")

    # --- indexing --------------------------------------------------------
    def __getitem__(self, key):
        return _getitem(self, key)

    def __setitem__(self, key, value):
        FUNCTION_HANDLERS[operator.setitem](self, key, value)

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        for i in range(self.shape[0]):
            yield _getitem(self, i)

    # --- in-place operators ------------------------------------------------
    # ndarray's augmented operators call the ufunc with out=(self,), which
    # __array_ufunc__ records as a new version of this array.
    def __imatmul__(self, other):
        return _write_out((self,), np.matmul(self, other), "@=")

    def fill(self, value):
        FUNCTION_HANDLERS[operator.setitem](self, Ellipsis, value)

    def sort(self, axis=-1, kind=None, order=None, **k):
        FUNCTION_HANDLERS[operator.setitem](self, Ellipsis, np.sort(self, axis=axis, kind=kind))

    def resize(self, *a, **k):
        raise _inplace_error("x.resize(...)")

    def itemset(self, *a, **k):
        raise _inplace_error("x.itemset(...)")

    def partition(self, *a, **k):
        raise _inplace_error("x.partition(...) (in place); use np.partition(x, ...)")

    def setfield(self, *a, **k):
        raise _inplace_error("x.setfield(...)")

    def byteswap(self, inplace=False):
        raise unsupported("ndarray.byteswap")

    # --- methods that NumPy implements in C without dispatch ---------------
    @property
    def T(self):
        return np.transpose(self)

    @property
    def mT(self):
        return np.swapaxes(self, -1, -2)

    @property
    def real(self):
        return np.real(self)

    @property
    def imag(self):
        return np.imag(self)

    @property
    def flat(self):
        raise unsupported("ndarray.flat on a traced array (use x.ravel())")

    def view(self, *args, **kwargs):
        if not args and not kwargs:
            return self
        dtype = kwargs.get("dtype", args[0] if args else None)
        if isinstance(dtype, type) and issubclass(dtype, np.ndarray):
            raise errors.EscapeError(
                "x.view(ndarray) on a traced array drops its derivative; to take the value "
                "deliberately use tracegrad.stop_gradient(x)")
        raise unsupported("ndarray.view with a dtype (reinterpreting bytes is not differentiable)")

    def reshape(self, *shape, order="C"):
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = shape[0]
        return np.reshape(self, shape, order=order)

    def transpose(self, *axes):
        if len(axes) == 1 and not isinstance(axes[0], (int, np.integer)):
            axes = axes[0]
        return np.transpose(self, axes or None)

    def swapaxes(self, a, b):
        return np.swapaxes(self, a, b)

    def ravel(self, order="C"):
        return np.ravel(self, order=order)

    def flatten(self, order="C"):
        return np.copy(np.ravel(self, order=order))

    def squeeze(self, axis=None):
        return np.squeeze(self, axis=axis)

    def copy(self, order="C"):
        return np.copy(self, order=order)

    def astype(self, dtype, order="K", casting="unsafe", subok=True, copy=True):
        return _astype(self, dtype)

    def sum(self, *a, **k):
        return np.sum(self, *a, **k)

    def mean(self, *a, **k):
        return np.mean(self, *a, **k)

    def prod(self, *a, **k):
        return np.prod(self, *a, **k)

    def max(self, *a, **k):
        return np.max(self, *a, **k)

    def min(self, *a, **k):
        return np.min(self, *a, **k)

    def var(self, *a, **k):
        return np.var(self, *a, **k)

    def std(self, *a, **k):
        return np.std(self, *a, **k)

    def cumsum(self, *a, **k):
        return np.cumsum(self, *a, **k)

    def cumprod(self, *a, **k):
        return np.cumprod(self, *a, **k)

    def dot(self, b, out=None):
        if out is not None:
            raise _inplace_error("x.dot(..., out=...)")
        return np.dot(self, b)

    def clip(self, min=None, max=None, **k):
        return np.clip(self, min, max, **k)

    def round(self, decimals=0, out=None):
        return np.round(self, decimals)

    def conj(self):
        return np.conjugate(self)

    conjugate = conj

    def diagonal(self, offset=0, axis1=0, axis2=1):
        return np.diagonal(self, offset, axis1, axis2)

    def trace(self, offset=0, axis1=0, axis2=1, dtype=None, out=None):
        return np.trace(self, offset, axis1, axis2, dtype, out)

    def repeat(self, repeats, axis=None):
        return np.repeat(self, repeats, axis)

    def take(self, indices, axis=None, out=None, mode="raise"):
        return np.take(self, indices, axis=axis, out=out, mode=mode)

    def compress(self, condition, axis=None, out=None):
        return np.compress(condition, self, axis, out)

    def ptp(self, *a, **k):
        return np.ptp(self, *a, **k)

    def all(self, *a, **k):
        return np.all(self, *a, **k)

    def any(self, *a, **k):
        return np.any(self, *a, **k)

    def argmax(self, *a, **k):
        return np.argmax(self, *a, **k)

    def argmin(self, *a, **k):
        return np.argmin(self, *a, **k)

    def argsort(self, *a, **k):
        return np.argsort(self, *a, **k)

    def argpartition(self, *a, **k):
        return np.argpartition(self, *a, **k)

    def nonzero(self):
        return np.nonzero(self)

    def searchsorted(self, v, side="left", sorter=None):
        return np.searchsorted(self, v, side, sorter)

    def choose(self, *a, **k):
        return np.choose(self, *a, **k)

    def put(self, indices, values, mode="raise"):
        np.put(self, indices, values, mode=mode)

    def tobytes(self, order="C"):
        return self._v.tobytes(order)

    def dump(self, *a):
        raise errors.EscapeError("a TracedArray cannot be pickled")

    dumps = dump

    def tofile(self, *a, **k):
        return self._v.tofile(*a, **k)

    def getfield(self, *a, **k):
        raise unsupported("ndarray.getfield")


_NOPARAMS = {}
#: results a capturing level records (anything else a primitive returns is metadata)
_NUMBERS = (_ndarray, np.generic, bool, int, float, complex)
_RESULTS = (_ndarray, np.generic)  # items of a tuple of results (a shape tuple holds ints)
#: non-differentiable primitives whose result depends only on shapes and dtypes
STATIC_RESULTS = frozenset({"nondiff.shape", "nondiff.ndim", "nondiff.size",
                            "nondiff.result_type", "nondiff.iscomplexobj", "nondiff.isrealobj",
                            "nondiff.can_cast", "nondiff.may_share_memory",
                            "nondiff.shares_memory"})


def _inplace_error(what):
    return errors.InPlaceError(
        f"{what} on a traced array is not supported by this version of tracegrad: write it "
        f"out of place (e.g. `x = x + y`, or build the array with np.concatenate/np.where).")


def is_traced(x):
    """True when ``x`` is a TracedArray tracked by an active level."""
    if type(x) is not TracedArray:
        return False
    for lv in x._tg:
        if lv.active:
            return True
    return False


def concrete(x, kind="value"):
    """The plain value of ``x`` where the program *uses* it as a concrete
    value (a Python ``if``, an index, a shape). Capturing levels (``jit``)
    are told, so they can guard on it; derivatives never flow through it."""
    if type(x) is not TracedArray:
        return x
    for lv in x._tg:
        if lv.active and lv.captures_all:
            lv.on_concrete(x, kind)
    return x._v


def unwrap(x):
    """The plain value of ``x`` (a TracedArray's buffer as an ndarray)."""
    return x._v if type(x) is TracedArray else x


def wrap(value, tags):
    """A TracedArray viewing ``value`` with the given tags."""
    if type(value) is not _ndarray:
        value = _asarray(value)
    t = value.view(TracedArray)
    t._v = value
    t._tg = tags
    t._al = t._snaps = None
    return t


def bind(prim, args, params):
    """Apply ``prim`` to ``args`` (arrays or numbers) and let active levels record it.

    The hot path of every traced operation: unwrap the inputs, call NumPy,
    wrap the result, and hand it to each level that one of the inputs is
    tagged with. A result no level tracks is returned as a plain array.
    """
    plain = []
    lv0 = None       # the one active level in the common case...
    lvls = None      # ...and all of them when there are several
    for a in args:
        if type(a) is TracedArray:
            if a._al is not None and a._alver != a._al.version:
                _refresh(a)
            plain.append(a._v)
            for lv in a._tg:
                if lv.active and lv is not lv0:
                    if lv0 is None:
                        lv0 = lv
                    elif lvls is None:
                        lvls = [lv0, lv]
                    elif lv not in lvls:
                        lvls.append(lv)
        else:
            plain.append(a)
    out = prim.impl(*plain, **params) if params else prim.impl(*plain)
    if lv0 is not None and lvls is None:
        lvls = (lv0,)
    if DEBUG[0] and lvls is not None:
        check_finite(prim, plain, out, "forward")
    if lvls is None or (prim.nondiff and not _any_captures(lvls)):
        if (prim.name in VIEW_PRIMS and type(out) is _ndarray and out.base is not None
                and type(args[0]) is TracedArray):
            # A view of an untracked traced buffer (np.zeros_like(x)) stays a
            # TracedArray so that writes through it are seen.
            t = out.view(TracedArray)
            t._v = out
            t._tg = {}
            t._al = t._snaps = None
            _register_view(t, args[0], prim, params)
            return t
        return out
    if len(lvls) == 2:
        # the common nested case (a jit capture around a grad): no sort call
        a, b = lvls
        if a.depth > b.depth:
            lvls[0], lvls[1] = b, a
    elif len(lvls) > 2:
        lvls.sort(key=_depth)
    if prim.nondiff and (prim.name in STATIC_RESULTS or (
            type(out) is not _ndarray and not isinstance(out, _NUMBERS))):
        # Only capturing levels (jit) see non-differentiable results: metadata
        # (np.shape, np.ndim, np.result_type) is static and stays plain; a tuple
        # of arrays or NumPy scalars (np.nonzero, np.unravel_index) is several
        # results.
        if prim.name in STATIC_RESULTS or not (
                type(out) is tuple and out and all(isinstance(o, _RESULTS) for o in out)):
            return out
    if prim.nout == 1 and type(out) is not tuple:
        if type(out) is not _ndarray:
            out = _asarray(out)
        if out.dtype.kind not in "fc" and not _any_captures(lvls):
            return out
        t = out.view(TracedArray)
        t._v = out
        t._tg = tags = {}
        t._al = t._snaps = None
        if out.base is not None and prim.name in VIEW_PRIMS:
            _register_view(t, args[0], prim, params)
        for lv in lvls:
            lv.process(prim, args, t, params, tags)
        return t if (tags or t._al is not None) else out
    outs = []
    for o in out:
        if type(o) is not _ndarray:
            o = _asarray(o)
        t = o.view(TracedArray)
        t._v = o
        t._tg = {}
        t._al = t._snaps = None
        outs.append(t)
    outs = tuple(outs)
    for lv in lvls:
        lv.process_multi(prim, args, outs, params)
    return tuple(t if t._tg else t._v for t in outs)


# --- mutation: views, versions, snapshots ------------------------------------------
#: primitives whose NumPy implementation may return a view of their first input
VIEW_PRIMS = frozenset({"getitem", "reshape", "transpose", "real", "imag", "broadcast_to"})


def _register_view(t, src, prim, params):
    """Record that ``t`` is a view of ``src`` (so writes through either are seen by both)."""
    if type(src) is not TracedArray or not np.may_share_memory(t._v, src._v):
        return
    R = src._al
    if R is None:
        R = src._al = _new_group(src)
    t._al = R
    t._chain = src._chain + ((prim, params),)
    t._alver = R.version


def tags_of(x):
    """A traced value's current tags (a view written through since it was
    last used re-derives them first)."""
    if x._al is not None and x._alver != x._al.version:
        _refresh(x)
    return x._tg


def _new_group(root):
    """Start an alias group at ``root``. Nodes may already hold ``root`` for
    their backward rules (arrays are watched only once grouped), so while a
    tape records it is watched from the start: its first overlapping write
    keeps a snapshot of the value those nodes saw."""
    from .tape import Alias
    R = Alias(root)
    root._chain = ()
    root._alver = 0
    if _tape_active():
        R.watch[id(root)] = root
    return R


def _refresh(m):
    """Re-derive a view's variables from its group root after a write."""
    R = m._al
    r = R.root
    for prim, params in m._chain:
        r = bind(prim, (r,), params)
    m._tg = dict(r._tg) if type(r) is TracedArray else {}
    m._alver = R.version


def _snapshot(m, version):
    """Keep the value ``m`` holds at ``version`` before a write overwrites it."""
    if m._al is not None and m._alver != m._al.version and m is not m._al.root:
        _refresh(m)
    snap = wrap(m._v.copy(), dict(m._tg))
    if m._snaps is None:
        m._snaps = []
    m._snaps.append((version, snap))


def saved_value(a, version):
    """The value a node saved as ``a`` at ``version`` (a snapshot when ``a``
    was overwritten since)."""
    for sv, snap in a._snaps:
        if sv >= version:
            return snap
    return a


def _mark_mutated():
    from .tape import Tape, level_stack
    for lv in level_stack():
        if isinstance(lv, Tape):
            lv.mutated = True


def _tape_active():
    from .tape import Tape, level_stack
    return any(isinstance(lv, Tape) for lv in level_stack())


def _root_indices(a, key, basic, region):
    """Flat indices into the group root of the elements ``a[key]`` writes."""
    root = a._al.root._v
    if basic and root.flags.c_contiguous and region.dtype == root.dtype:
        isz = root.itemsize
        off = (region.__array_interface__["data"][0] - root.__array_interface__["data"][0]) // isz
        W = np.asarray(off, dtype=np.intp)
        nd = region.ndim
        for d, (n, st) in enumerate(zip(region.shape, region.strides)):
            shape = [1] * nd
            shape[d] = n
            W = W + (np.arange(n, dtype=np.intp) * (st // isz)).reshape(shape)
        return np.broadcast_to(W, region.shape)
    P = np.arange(root.size, dtype=np.intp).reshape(root.shape)
    for prim, params in a._chain:
        if prim.name in ("real", "imag"):
            raise errors.InPlaceError(
                "writing through .real/.imag of a traced complex array is not supported; "
                "build the complex array out of place (e.g. re + 1j * im)")
        P = prim.impl(P, **params)
    return P[key]


def write(a, key, v, prim, op="set"):
    """``a[key] = v`` on a TracedArray, recorded as a new version of ``a``.

    ``key`` is normalised (a full tuple). The buffer is written in place with
    NumPy's semantics, so the base and every view see the new values; the
    derivative bookkeeping records the write against the group root with
    ``prim`` (the functional ``setitem`` primitive), at a cost proportional
    to the written region.
    """
    if a._al is not None and a._alver != a._al.version:
        _refresh(a)
    if type(v) is TracedArray and v._al is not None and v._alver != v._al.version:
        _refresh(v)
    vplain = v._v if type(v) is TracedArray else v
    _mark_mutated()
    R = a._al
    if R is None:
        R = a._al = _new_group(a)
    basic = not any(isinstance(k, np.ndarray) for k in key)
    # (Ellipsis keeps an all-integer key a 0-d view instead of a scalar copy)
    region = a._v[key + (Ellipsis,)] if basic else a._v
    if R.watch:
        for m in list(R.watch.values()):
            if np.may_share_memory(m._v, region):
                _snapshot(m, R.version)
                del R.watch[id(m)]
    root = R.root
    if a is root:
        rkey, rv = key, v
    else:
        W = _root_indices(a, key, basic, region)
        rkey = np.unravel_index(W, root.shape) if W.ndim else tuple(
            int(i) for i in np.unravel_index(int(W), root.shape))
        rv = v
        if np.shape(v) != W.shape:
            rv = np.broadcast_to(v, W.shape)
    # A capturing level (jit) records the write as prim(before, v): when the
    # root is a constant to it, it needs the root's value from before the write.
    pre = root._v.copy() if captured(v) and not captured(root) else None
    if op == "set":
        a._v[key] = vplain
    else:
        np.add.at(a._v, key, vplain)
    old = root._tg
    lvls = [lv for lv in old if lv.active]
    if type(v) is TracedArray:
        lvls += [lv for lv in v._tg if lv.active and lv not in lvls]
    tags = {}
    if lvls:
        lvls.sort(key=_depth)
        whole = (op == "set" and type(rv) is TracedArray and rv.shape == root.shape and rv.dtype == root.dtype
                 and all(type(k) is slice and k == slice(None) for k in rkey))
        if whole:
            # A full overwrite is just the new value: no scatter to record.
            tags = {lv: p for lv, p in rv._tg.items() if lv.active}
        else:
            before = wrap(root._v if pre is None else pre, old)
            after = wrap(root._v, tags)
            params = {"key": rkey}
            for lv in lvls:
                lv.process(prim, (before, rv), after, params, tags)
    root._tg = tags
    R.version += 1
    root._alver = R.version


def _write_out(out, r, what):
    """Store a ufunc result into ``out=`` arrays (tuple) and return them."""
    if type(out) is not tuple:
        out = (out,)
    if len(out) != 1:
        raise unsupported(f"{what} with several out= arrays")
    o = out[0]
    if type(o) is TracedArray:
        FUNCTION_HANDLERS[operator.setitem](o, Ellipsis, r)
        return o
    if isinstance(o, np.ndarray):
        if is_tracked(r):
            escape("escape", f"{what}(..., out=<plain ndarray>) writes a traced value into a "
                   "plain NumPy array, which drops its derivative. Create the destination from "
                   "a traced array (np.zeros_like(x), np.empty_like(x), x.copy()) or write it "
                   "out of place (y = y + b).", depth=3)
        np.copyto(o, unwrap(r), casting="unsafe")
        return o
    raise TypeError(f"{what}: out= must be an ndarray")


def captured(x):
    """True when ``x`` is recorded by an active capturing level (jit): a
    branch on its value must then be taken in the graph, not in Python."""
    if type(x) is not TracedArray:
        return False
    for lv in x._tg:
        if lv.active and lv.captures_all:
            return True
    return False


def is_tracked(x):
    """True when ``x`` carries a derivative for an active non-capturing level."""
    if type(x) is not TracedArray:
        return False
    for lv in x._tg:
        if lv.active and not lv.captures_all:
            return True
    return False


# --- debugging non-finite values ------------------------------------------------------
#: nesting count of active debug_nans() contexts (process-wide: a debugging switch)
DEBUG = [0]


def _nonfinite(x):
    x = x._v if type(x) is TracedArray else x
    if isinstance(x, np.ndarray) and x.dtype.kind in "fc":
        return not np.isfinite(x).all()
    if isinstance(x, (float, complex, np.floating, np.complexfloating)):
        return not np.isfinite(x)
    return False


def check_finite(prim, inputs, out, phase, where=None):
    """Raise NonFiniteError when ``out`` is non-finite but ``inputs`` are not."""
    outs = out if isinstance(out, tuple) else (out,)
    if not any(_nonfinite(o) for o in outs):
        return
    if any(_nonfinite(i) for i in inputs if not isinstance(i, (tuple, list))):
        return
    if where is None:
        f = _user_frame(2)
        where = f"{f.f_code.co_filename}:{f.f_lineno}" if f is not None else "<unknown>"
    raise errors.NonFiniteError(
        f"{where}: {prim.name} produced a NaN or infinity from finite inputs during the "
        f"{phase} pass (tracegrad.debug_nans is on).")


class debug_nans:
    """Context manager (or decorator): raise at the first operation that
    turns finite values into NaN or infinity, in the forward pass or in a
    derivative rule during the backward pass, naming the primitive and the
    file:line of the user code that called it.

    Examples
    --------
    >>> import numpy as np, tracegrad as tg
    >>> with tg.debug_nans():
    ...     tg.grad(lambda x: np.sum(np.sqrt(x)))(np.array([0.0, 1.0]))
    Traceback (most recent call last):
    ...
    tracegrad.errors.NonFiniteError: ...sqrt produced a NaN or infinity from finite inputs during the backward pass...
    """

    def __enter__(self):
        DEBUG[0] += 1
        return self

    def __exit__(self, *exc):
        DEBUG[0] -= 1
        return False

    def __call__(self, fun):
        import functools

        @functools.wraps(fun)
        def wrapper(*a, **k):
            with debug_nans():
                return fun(*a, **k)
        return wrapper


class escape_policy:
    """Set what happens when a derivative is about to be lost.

    ``escape``: a traced value written into a plain array (``buf[i] = x``,
    ``out=`` a plain array) — default ``"raise"``. ``convert``: a traced
    value turned into a Python number (``float(x)``, ``x.item()``,
    ``np.array([x0, x1])``) — default ``"warn"``. ``disconnected``: a
    transform's output does not depend on its inputs through any recorded
    operation although operations on them were recorded (the derivative is
    zero; usually a value left the trace unseen) — default ``"warn"``.
    Each is ``"raise"``,
    ``"warn"`` or ``"ignore"``. Works as a plain call (sets the policy) and
    as a context manager (restores it on exit).
    """

    def __init__(self, escape=None, convert=None, disconnected=None):
        self.saved = dict(POLICY)
        for k, v in (("escape", escape), ("convert", convert), ("disconnected", disconnected)):
            if v is None:
                continue
            if v not in ("raise", "warn", "ignore"):
                raise ValueError(f"{k} policy must be 'raise', 'warn' or 'ignore', not {v!r}")
            POLICY[k] = v

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        POLICY.clear()
        POLICY.update(self.saved)
        return False


# --- escapes -------------------------------------------------------------------------
#: what to do when a derivative is about to be lost: "raise", "warn" or "ignore".
#: "escape": a traced value written into a plain array (definite loss);
#: "convert": a traced value turned into a Python number (float(x), x.item()).
#: "disconnected": a transform's output is untraced although operations on
#: its inputs were recorded (an escape no hook saw).
POLICY = {"escape": "raise", "convert": "warn", "disconnected": "warn"}


def _user_frame(depth):
    import sys
    f = sys._getframe(depth)
    while f is not None and f.f_globals.get("__name__", "").startswith(("tracegrad.", "numpy")):
        f = f.f_back
    return f


def escape(kind, message, depth=2, frame=None):
    """Report a lost derivative according to ``POLICY[kind]``, naming the
    user's file and line (looked up only now, on this rare event)."""
    action = POLICY[kind]
    if action == "ignore":
        return
    f = frame if frame is not None else _user_frame(depth)
    where = f"{f.f_code.co_filename}:{f.f_lineno}" if f is not None else "<unknown>"
    msg = f"{where}: {message}"
    if action == "raise":
        raise errors.EscapeError(msg + " (tracegrad.escape_policy(...) makes this a warning.)")
    import warnings
    warnings.warn_explicit(msg, errors.EscapeWarning, f.f_code.co_filename if f else "?",
                           f.f_lineno if f else 0)


def _conversion(x, what):
    """A traced value is being turned into a Python number."""
    if not is_tracked(x):
        return
    import dis
    import sys
    f = sys._getframe(2)
    op = None
    for ins in dis.get_instructions(f.f_code):
        if ins.offset == f.f_lasti:
            op = ins.opname
            break
    if op == "STORE_SUBSCR":
        escape("escape", "`buffer[i] = <traced value>` stores a traced value into a plain NumPy "
               "array, which drops its derivative. Create the buffer from a traced array "
               "(np.zeros_like(x), np.empty_like(x)) or collect the values in a list and "
               "np.stack them.", frame=f)
    else:
        escape("convert", f"{what} of a traced value gives a plain Python number without its "
               "derivative (np.array([...]) of traced scalars does this too; use np.stack).",
               frame=f)


def _depth(lv):
    return lv.depth


def _any_captures(lvls):
    for lv in lvls:
        if lv.captures_all:
            return True
    return False


def _ufunc_with_kwargs(prim, ufunc, inputs, kwargs):
    params = {}
    for k, v in kwargs.items():
        if k in ("dtype", "casting", "order") or (k == "subok" and v):
            params[k] = v
        elif k == "where" and v is True:
            pass
        else:
            raise unsupported(f"np.{ufunc.__name__}(..., {k}=...)")
    return bind(prim, inputs, params)


def _astype(x, dtype):
    return FUNCTION_HANDLERS[np.ndarray.astype](x, dtype)


def _getitem(x, key):
    return FUNCTION_HANDLERS[operator.getitem](x, key)
