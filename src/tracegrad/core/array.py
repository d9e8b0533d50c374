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

    # --- NumPy protocols -------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method == "__call__":
            prim = UFUNC_PRIMS.get(ufunc)
            if prim is None:
                raise unsupported(f"np.{ufunc.__name__}")
            if kwargs:
                return _ufunc_with_kwargs(prim, ufunc, inputs, kwargs)
            return bind(prim, inputs, _NOPARAMS)
        handler = UFUNC_METHOD_HANDLERS.get((ufunc, method))
        if handler is None:
            raise unsupported(f"np.{ufunc.__name__}.{method}")
        if kwargs.get("out") is not None:
            raise _inplace_error(f"np.{ufunc.__name__}.{method}(..., out=...)")
        return handler(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        handler = FUNCTION_HANDLERS.get(func)
        if handler is None:
            raise unsupported(func_name(func))
        return handler(*args, **kwargs)

    # --- conversions: concrete values, the executed path is differentiated
    def __bool__(self):
        return bool(concrete(self, "bool"))

    def __float__(self):
        return float(concrete(self, "float"))

    def __int__(self):
        return int(concrete(self, "int"))

    def __index__(self):
        return concrete(self, "index").__index__()

    def __complex__(self):
        return complex(concrete(self, "complex"))

    def item(self, *args):
        return concrete(self, "item").item(*args)

    def tolist(self):
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
        raise _inplace_error("item assignment x[...] = v")

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        for i in range(self.shape[0]):
            yield _getitem(self, i)

    # --- in-place operators ------------------------------------------------
    def _no_inplace(self, *a, **k):
        raise _inplace_error("an augmented assignment (+=, *=, ...)")

    __iadd__ = __isub__ = __imul__ = __itruediv__ = __ifloordiv__ = __ipow__ = _no_inplace
    __imatmul__ = __imod__ = __iand__ = __ior__ = __ixor__ = __ilshift__ = __irshift__ = _no_inplace

    def fill(self, value):
        raise _inplace_error("x.fill(...)")

    def sort(self, *a, **k):
        raise _inplace_error("x.sort() (in place); use np.sort(x)")

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

    def put(self, *a, **k):
        raise _inplace_error("x.put(...)")

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
    return t


def bind(prim, args, params):
    """Apply ``prim`` to ``args`` (arrays or numbers) and let active levels record it.

    The hot path of every traced operation: unwrap the inputs, call NumPy,
    wrap the result, and hand it to each level that one of the inputs is
    tagged with. A result no level tracks is returned as a plain array.
    """
    plain = []
    lvls = None
    for a in args:
        if type(a) is TracedArray:
            plain.append(a._v)
            for lv in a._tg:
                if lv.active:
                    if lvls is None:
                        lvls = [lv]
                    elif lv not in lvls:
                        lvls.append(lv)
        else:
            plain.append(a)
    out = prim.impl(*plain, **params)
    if lvls is None or (prim.nondiff and not _any_captures(lvls)):
        return out
    if len(lvls) > 1:
        lvls.sort(key=_depth)
    if prim.nout == 1:
        if type(out) is not _ndarray:
            out = _asarray(out)
        if out.dtype.kind not in "fc" and not _any_captures(lvls):
            return out
        t = out.view(TracedArray)
        t._v = out
        t._tg = tags = {}
        for lv in lvls:
            lv.process(prim, args, t, params, tags)
        return t if tags else out
    outs = []
    for o in out:
        if type(o) is not _ndarray:
            o = _asarray(o)
        t = o.view(TracedArray)
        t._v = o
        t._tg = {}
        outs.append(t)
    outs = tuple(outs)
    for lv in lvls:
        lv.process_multi(prim, args, outs, params)
    return tuple(t if t._tg else t._v for t in outs)


def _depth(lv):
    return lv.depth


def _any_captures(lvls):
    for lv in lvls:
        if lv.captures_all:
            return True
    return False


def _ufunc_with_kwargs(prim, ufunc, inputs, kwargs):
    out = kwargs.pop("out", None)
    if out is not None:
        raise _inplace_error(f"np.{ufunc.__name__}(..., out=...)")
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
