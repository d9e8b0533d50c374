"""Test cases for the generic rule checks, keyed by primitive name.

``tests/rules/test_registry.py`` runs every case through reverse mode against
finite differences, forward against reverse (dot-product test), the batched
walks (``jacfwd``/``jacrev``/``jacobian``) and, for real cases, second order
(``hessian``, ``hvp``). ``test_every_primitive_has_a_case`` fails as soon as a
registered primitive has no case here, so a new rule is tested the moment it
exists.

Adding a case
-------------
A case is a function decorated with :func:`case`. It receives a :class:`Draw`
(hypothesis draws with helpers) and returns ``(fun, args)``::

    @case("sinh")                           # the primitive(s) it must record
    def sinh_(d):
        x = d.array(d.shape(), -2, 2)       # values inside the rule's domain
        return (lambda x: np.sinh(x)), (x,)

* ``fun(*args)`` calls the *public* NumPy API (``np.sinh``, ``x[key]``,
  ``np.linalg.solve``, ...), so the handler and the primitive are exercised
  together. It returns an array or a tuple/list of arrays.
* Every element of ``args`` is a floating (or, with ``complex=True``, complex)
  array and is differentiated. Close over anything else (integer indices,
  masks, axes, exponents).
* Draw shapes, axes and parameters with ``d``: ``d.shape()``, ``d.shapes(n)``
  (mutually broadcastable, including 0-d and size-1 axes), ``d.axes(ndim)``
  (int, negative, tuple or None), ``d.axis(ndim)``, ``d.boolean()``,
  ``d.choice(options)``, ``d.integer(lo, hi)``, ``d.index(n, shape)`` and
  ``d(strategy)`` for any hypothesis strategy.
* Draw values with ``d.array(shape, lo, hi, away=..., step=..., offset=...,
  unique=...)``: keep them inside the rule's domain and away from kinks and
  ties (``away`` keeps ``|x| >= away``; ``step``/``offset`` put values on a
  lattice so two lattices never come closer than a known margin). Finite
  differences move each input by at most ``2 * eps`` (``1e-3`` by default)
  per element, so margins of 0.02 or more are safe. Ties and kinks have their
  own tests in test_registry.py.
* Shapes are kept small (``d.small`` is set for the Jacobian and Hessian
  tests; the helpers honour it).

Options of :func:`case`:

``second_order=True``  run the Hessian tests (real cases only)
``complex=False``      the inputs are complex: no Hessian; Jacobians are
                       checked along real directions only
``dtypes``             ``(np.float64, np.float32)`` by default; ``d.dtype`` is
                       the one drawn (float64 checks are tight, float32 loose)
``eps``                finite-difference step (default ``1e-3``)
``rtol32``             float32 tolerance (default ``1e-4``)

One primitive may have any number of cases (one per family of NumPy
functions), and one case may name several primitives. A new rule module may
keep its cases in ``tests/rules/cases_<family>.py`` (``from cases import case,
nondiff_case``): every such file beside this one is imported at the end of
this module, so its cases join the tables and test_registry.py runs them. Primitives marked
``nondiff`` (comparisons, rounding, ``nondiff.*`` queries) go in
:data:`NONDIFF_CASES` instead: ``fun(x)`` there is checked to return NumPy's
plain value and to carry no derivative.
"""
import operator

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays, basic_indices, mutually_broadcastable_shapes

import tracegrad as tg

#: primitive name -> list of Case
CASES = {}
#: every differentiable case, in definition order
ALL_CASES = []
#: nondiff primitive name -> list of Case (``fun`` returns plain values)
NONDIFF_CASES = {}
ALL_NONDIFF = []

F64, F32 = np.float64, np.float32


class Case:
    __slots__ = ("prims", "name", "build", "second_order", "complex", "dtypes", "eps",
                 "rtol32")

    def __init__(self, prims, name, build, second_order=True, complex=False,
                 dtypes=(F64, F32), eps=1e-3, rtol32=1e-4):
        self.prims = tuple(prims)
        self.name = name
        self.build = build
        self.second_order = second_order and not complex
        self.complex = complex
        self.dtypes = tuple(dtypes)
        self.eps = eps
        self.rtol32 = rtol32

    def __repr__(self):
        return f"Case({self.name})"


def case(*prims, name=None, **opts):
    """Register the decorated builder as a case for ``prims``."""
    def deco(build):
        c = Case(prims, name or build.__name__.strip("_"), build, **opts)
        for p in prims:
            CASES.setdefault(p, []).append(c)
        ALL_CASES.append(c)
        return build
    return deco


def nondiff_case(*prims, name=None):
    """Register a nondiff case: ``build(d) -> (fun, args)``; ``fun`` returns
    plain values (arrays, numbers, tuples, dtypes) with no derivative."""
    def deco(build):
        c = Case(prims, name or build.__name__.strip("_"), build, second_order=False,
                 dtypes=(F64,))
        for p in prims:
            NONDIFF_CASES.setdefault(p, []).append(c)
        ALL_NONDIFF.append(c)
        return build
    return deco


class Draw:
    """Hypothesis draws for one example, with helpers for the usual shapes."""

    def __init__(self, data, dtype=F64, small=False):
        self.data = data
        self.dtype = np.dtype(dtype)
        self.small = small
        self.max_side = 2 if small else 3

    def __call__(self, strategy, label=None):
        return self.data.draw(strategy, label=label)

    # --- shapes and parameters ---------------------------------------------------
    def shape(self, min_dims=0, max_dims=3, min_side=1, max_side=None):
        max_side = max(min_side, max_side or self.max_side)
        return self(st.lists(st.integers(min_side, max_side), min_size=min_dims,
                             max_size=max_dims).map(tuple), "shape")

    def shapes(self, n, min_dims=0, max_dims=3, max_side=None):
        """``n`` mutually broadcastable shapes (0-d and size-1 axes included)."""
        bs = self(mutually_broadcastable_shapes(num_shapes=n, min_dims=min_dims,
                                                max_dims=max_dims,
                                                max_side=max_side or self.max_side), "shapes")
        return bs.input_shapes

    def boolean(self):
        return self(st.booleans())

    def choice(self, options, label=None):
        return self(st.sampled_from(list(options)), label)

    def integer(self, lo, hi):
        return self(st.integers(lo, hi))

    def axis(self, ndim):
        """One valid axis, positive or negative."""
        return self(st.integers(-ndim, ndim - 1), "axis")

    def axes(self, ndim, none=True, multi=True):
        """``None``, an int, or a tuple of distinct axes (positive or negative)."""
        opts = []
        if none:
            opts.append(st.none())
        if ndim:
            opts.append(st.integers(-ndim, ndim - 1))
            if multi:
                opts.append(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim).flatmap(
                    lambda ax: st.tuples(*[st.sampled_from([a, a - ndim]) for a in ax])))
        if not opts:
            return None
        return self(st.one_of(*opts), "axis")

    def index(self, n, shape=()):
        """Integer index array of ``shape`` into an axis of length ``n``
        (negative entries and repeats included)."""
        return self(arrays(np.intp, shape, elements=st.integers(-n, n - 1)), "index")

    def mask(self, shape):
        return self(arrays(np.bool_, shape), "mask")

    # --- values ------------------------------------------------------------------
    def array(self, shape, lo=-2.0, hi=2.0, *, away=0.0, step=None, offset=0.0, unique=False,
              dtype=None):
        """Float array of ``shape`` (cast to ``d.dtype``) with values in
        ``[lo, hi]``; ``|x| >= away``; with ``step`` the values are
        ``offset + k * step`` (a lattice)."""
        dtype = np.dtype(dtype or self.dtype)
        if step is not None:
            klo = int(np.ceil((lo - offset) / step))
            khi = int(np.floor((hi - offset) / step))
            ks = st.integers(klo, khi)
            if away:
                ks = ks.filter(lambda k: abs(offset + k * step) >= away)
            a = self(arrays(np.int64, shape, elements=ks, unique=unique), "lattice")
            return (offset + a * step).astype(dtype)
        if away:
            parts = []
            if lo <= -away:
                parts.append(st.floats(lo, -away))
            if hi >= away:
                parts.append(st.floats(away, hi))
            el = st.one_of(*parts)
        else:
            el = st.floats(lo, hi)
        a = self(arrays(np.float64, shape, elements=el, unique=unique), "values")
        return a.astype(dtype)

    def carray(self, shape, re=(-2.0, 2.0), im=(-2.0, 2.0), away=0.0):
        """Complex array (complex64 when ``d.dtype`` is float32)."""
        return self.array(shape, *re, away=away) + 1j * self.array(shape, *im)


# ==================================================================================
# Elementwise
# ==================================================================================
def _unary(prim, funcs, lo=-2.0, hi=2.0, away=0.0, cplx=None, **opts):
    funcs = list(funcs)

    def build(d):
        f = d.choice(funcs, "fun")
        return f, (d.array(d.shape(), lo, hi, away=away),)
    case(prim, name=prim, **opts)(build)
    if cplx is not None:
        re, im, caway = cplx

        def cbuild(d):
            f = d.choice(funcs, "fun")
            return f, (d.carray(d.shape(), re, im, away=caway),)
        case(prim, name=prim + "[complex]", complex=True, **opts)(cbuild)


_C = ((-1.5, 1.5), (-1.5, 1.5), 0.0)          # anywhere (entire functions)
_CPOS = ((0.2, 2.0), (-1.5, 1.5), 0.0)        # right half plane: away from branch cuts

_unary("negative", [np.negative, operator.neg], cplx=_C)
_unary("positive", [np.positive, operator.pos])
_unary("reciprocal", [np.reciprocal], away=0.3, cplx=((0.3, 2.0), (-1.5, 1.5), 0.0))
_unary("square", [np.square], cplx=_C)
_unary("sqrt", [np.sqrt], 0.1, 3.0, cplx=_CPOS)
_unary("cbrt", [np.cbrt], away=0.2)
_unary("absolute", [np.absolute, np.abs, abs], away=0.1,
       cplx=((-1.5, 1.5), (-1.5, 1.5), 0.3))
_unary("fabs", [np.fabs], away=0.1)
_unary("exp", [np.exp], cplx=_C)
_unary("exp2", [np.exp2])
_unary("expm1", [np.expm1])
_unary("log", [np.log], 0.1, 3.0, cplx=_CPOS)
_unary("log2", [np.log2], 0.1, 3.0)
_unary("log10", [np.log10], 0.1, 3.0)
_unary("log1p", [np.log1p], -0.8, 2.0)
_unary("sin", [np.sin], -3.0, 3.0, cplx=_C)
_unary("cos", [np.cos], -3.0, 3.0, cplx=_C)
_unary("tan", [np.tan], -1.2, 1.2)
_unary("arcsin", [np.arcsin], -0.9, 0.9)
_unary("arccos", [np.arccos], -0.9, 0.9)
_unary("arctan", [np.arctan], -3.0, 3.0)
_unary("sinh", [np.sinh])
_unary("cosh", [np.cosh])
_unary("tanh", [np.tanh], cplx=((-1.5, 1.5), (-0.7, 0.7), 0.0))
_unary("arcsinh", [np.arcsinh], -3.0, 3.0)
_unary("arccosh", [np.arccosh], 1.1, 3.0)
_unary("arctanh", [np.arctanh], -0.9, 0.9)
_unary("deg2rad", [np.deg2rad, np.radians], -3.0, 3.0)
_unary("rad2deg", [np.rad2deg, np.degrees], -3.0, 3.0)


def _binary(prim, funcs, xs=None, ys=None, consts=(), cplx=None, **opts):
    """``funcs`` take two traced arrays; ``consts`` are one-argument variants
    with a Python constant on one side."""
    xs = xs or {}
    ys = ys or {}
    funcs = list(funcs)

    def build(d):
        if consts and d.boolean():
            f, spec = d.choice(consts, "fun")
            return f, (d.array(d.shape(), **spec),)
        f = d.choice(funcs, "fun")
        sx, sy = d.shapes(2)
        return f, (d.array(sx, **xs), d.array(sy, **ys))
    case(prim, name=prim, **opts)(build)
    if cplx is not None:
        cx, cy = cplx

        def cbuild(d):
            f = d.choice(funcs, "fun")
            sx, sy = d.shapes(2)
            return f, (d.carray(sx, **cx), d.carray(sy, **cy))
        case(prim, name=prim + "[complex]", complex=True, **opts)(cbuild)


_ANY = {}
_POS = {"lo": 0.2, "hi": 2.0}
_NZ = {"away": 0.3}
_binary("add", [np.add, operator.add],
        consts=[(lambda x: x + 1.5, _ANY), (lambda x: 2.0 + x, _ANY)], cplx=({}, {}))
_binary("subtract", [np.subtract, operator.sub],
        consts=[(lambda x: x - 1.5, _ANY), (lambda x: 2.0 - x, _ANY)], cplx=({}, {}))
_binary("multiply", [np.multiply, operator.mul],
        consts=[(lambda x: x * 1.5, _ANY), (lambda x: -2.0 * x, _ANY)], cplx=({}, {}))
_binary("divide", [np.divide, np.true_divide, operator.truediv], ys=_NZ,
        consts=[(lambda x: x / 3.0, _ANY), (lambda x: 1.5 / x, _NZ)],
        cplx=({}, {"re": (0.3, 2.0)}))
_binary("power", [np.power, operator.pow], xs=_POS,
        consts=[(lambda x: x ** 3, _ANY), (lambda x: x ** 2, _ANY), (lambda x: x ** -1.5, _POS),
                (lambda x: 2.0 ** x, _ANY), (lambda x: np.power(x, 0.5), _POS)])
_binary("float_power", [np.float_power], xs=_POS,
        consts=[(lambda x: np.float_power(x, 2.5), _POS), (lambda x: np.float_power(3.0, x), _ANY)],
        dtypes=(F64,))  # float_power always computes in float64


@case("multiply", "add", "divide")
def mixed_dtypes(d):
    """float32 with float64 (the result is float64): each cotangent comes back
    in its own input's dtype."""
    sx, sy = d.shapes(2)
    x = d.array(sx, dtype=F32)
    y = d.array(sy, away=0.3, dtype=F64)
    return (lambda x, y: x * y + x / y + y), (x, y)


_binary("logaddexp", [np.logaddexp])
_binary("logaddexp2", [np.logaddexp2])
# arctan2 has a branch cut on the negative x axis and a singularity at 0
_binary("arctan2", [np.arctan2], xs={"away": 0.2}, ys={"away": 0.2})
_binary("hypot", [np.hypot], xs={"away": 0.2})
# Two disjoint lattices: x and y never come closer than 0.125 (ties tested apart).
_X = {"step": 0.25, "offset": 0.0}
_Y = {"step": 0.25, "offset": 0.125}
_binary("maximum", [np.maximum], xs=_X, ys=_Y)
_binary("minimum", [np.minimum], xs=_X, ys=_Y)
_binary("fmax", [np.fmax], xs=_X, ys=_Y)
_binary("fmin", [np.fmin], xs=_X, ys=_Y)
_binary("copysign", [np.copysign], xs={"away": 0.1}, ys={"away": 0.1})
# x on the lattice k/8 + 1/16 and y in {±1/2, ±1, ±2}: x / y stays at least
# 1/32 away from an integer, so x mod y is smooth nearby.
_MX = {"step": 0.125, "offset": 0.0625}


def _modulus_build(funcs):
    def build(d):
        f = d.choice(funcs, "fun")
        sx, sy = d.shapes(2)
        x = d.array(sx, **_MX)
        y = d.choice([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0])
        y = (y * np.where(d.mask(sy), 1.0, 2.0 if abs(y) < 2 else 0.5)).astype(d.dtype)
        return f, (x, y)
    return build


case("remainder", name="remainder")(_modulus_build([np.remainder, np.mod, operator.mod]))
case("fmod", name="fmod")(_modulus_build([np.fmod]))


@case("ldexp")
def ldexp_(d):
    sx, sn = d.shapes(2)
    n = d(arrays(np.int32, sn, elements=st.integers(-3, 3)))
    return (lambda x: np.ldexp(x, n)), (d.array(sx),)


@case("conjugate")
def conjugate_real(d):
    f = d.choice([np.conjugate, np.conj, lambda x: x.conj()])
    return f, (d.array(d.shape()),)


@case("conjugate", complex=True)
def conjugate_complex(d):
    f = d.choice([np.conjugate, np.conj, lambda x: x.conj(), lambda x: x.conjugate()])
    g = d.choice([f, lambda z: f(z) * z])   # z * conj(z) = |z|**2 is not holomorphic
    return g, (d.carray(d.shape()),)


@case("real", complex=True)
def real_(d):
    f = d.choice([np.real, lambda z: z.real, lambda z: np.real(z * z)])
    return f, (d.carray(d.shape()),)


@case("imag", complex=True)
def imag_(d):
    f = d.choice([np.imag, lambda z: z.imag, lambda z: np.imag(z * z)])
    return f, (d.carray(d.shape()),)


# ==================================================================================
# Reductions and scans
# ==================================================================================
@case("sum")
def sum_(d):
    s = d.shape()
    x = d.array(s)
    ax = d.axes(len(s))
    kd = d.boolean()
    variant = d.choice(["np.sum", "method", "mean", "add.reduce", "where", "initial"])
    if variant == "np.sum":
        return (lambda x: np.sum(x, axis=ax, keepdims=kd)), (x,)
    if variant == "method":
        return (lambda x: x.sum(axis=ax, keepdims=kd)), (x,)
    if variant == "mean":
        return (lambda x: np.mean(x, axis=ax, keepdims=kd)), (x,)
    if variant == "where":
        m = d.mask(_value_shape(d, s))   # broadcasts against x
        return (lambda x: np.sum(x, axis=ax, keepdims=kd, where=m)), (x,)
    if variant == "initial":
        return (lambda x: np.sum(x, axis=ax, keepdims=kd, initial=0.5)), (x,)
    if not s:
        return (lambda x: np.add.reduce(x, axis=None)), (x,)
    return (lambda x: np.add.reduce(x, axis=ax, keepdims=kd)), (x,)


@case("sum", "multiply", "subtract")
def var_std(d):
    s = d.shape(min_dims=1, min_side=2)
    x = d.array(s, step=0.125, unique=True, lo=-3, hi=3)  # distinct: std is smooth
    ax = d.axes(len(s))
    ax = None if ax == () else ax   # at least 2 elements per group
    kd = d.boolean()
    ddof = d.choice([0, 1])
    f = d.choice([np.var, np.std, lambda x, **k: x.var(**k), lambda x, **k: x.std(**k)])
    return (lambda x: f(x, axis=ax, keepdims=kd, ddof=ddof)), (x,)


@case("prod")
def prod_(d):
    # values on a lattice that includes 0: one or several zeros in a group
    s = d.shape()
    x = d.array(s, -1.5, 1.5, step=0.5)
    ax = d.axes(len(s))
    kd = d.boolean()
    f = d.choice(["np.prod", "method", "reduce"])
    if f == "np.prod":
        return (lambda x: np.prod(x, axis=ax, keepdims=kd)), (x,)
    if f == "method" or not s:
        return (lambda x: x.prod(axis=ax, keepdims=kd)), (x,)
    return (lambda x: np.multiply.reduce(x, axis=ax, keepdims=kd)), (x,)


# products of up to 8 factors are degree-8 polynomials: a smaller stencil step
# keeps the finite-difference error under the tolerance
@case("prod", name="prod_complex", complex=True, eps=2e-4)
def prod_complex(d):
    # a zero among complex values too: the exact zero path conjugates as well
    s = d.shape()
    x = d.carray(s, re=(-1.0, 1.0), im=(-1.0, 1.0))
    if s and d.boolean():
        x.reshape(-1)[d.choice(list(range(x.size)))] = 0
    ax = d.axes(len(s))
    kd = d.boolean()
    return (lambda x: np.prod(x, axis=ax, keepdims=kd)), (x,)


def _extremum_case(prim, npf, ufunc, sign):
    def build(d):
        s = d.shape()
        # distinct values: no ties (tested apart)
        x = d.array(s, -3, 3, step=0.125, unique=True)
        ax = d.axes(len(s))
        kd = d.boolean()
        v = d.choice(["np", "method", "reduce", "ptp", "initial"])
        if v == "np":
            return (lambda x: npf(x, axis=ax, keepdims=kd)), (x,)
        if v == "method":
            return (lambda x: getattr(x, prim)(axis=ax, keepdims=kd)), (x,)
        if v == "reduce" and s:
            return (lambda x: ufunc.reduce(x, axis=ax, keepdims=kd)), (x,)
        if v == "ptp":
            return (lambda x: np.ptp(x, axis=ax, keepdims=kd)), (x,)
        return (lambda x: npf(x, axis=ax, keepdims=kd, initial=-sign * 10.0)), (x,)
    case(prim, name=prim)(build)


_extremum_case("max", np.max, np.maximum, 1)
_extremum_case("min", np.min, np.minimum, -1)


@case("cumsum")
def cumsum_(d):
    s = d.shape()
    x = d.array(s)
    v = d.choice(["np", "method", "accumulate", "none"])
    if v == "none" or not s:
        return (lambda x: np.cumsum(x)), (x,)
    ax = d.axis(len(s))
    if v == "np":
        return (lambda x: np.cumsum(x, axis=ax)), (x,)
    if v == "method":
        return (lambda x: x.cumsum(axis=ax)), (x,)
    return (lambda x: np.add.accumulate(x, axis=ax)), (x,)


@case("cumprod")
def cumprod_(d):
    s = d.shape()
    x = d.array(s, -1.5, 1.5, step=0.5)  # zeros included
    v = d.choice(["np", "method", "accumulate", "none"])
    if v == "none" or not s:
        return (lambda x: np.cumprod(x)), (x,)
    ax = d.axis(len(s))
    if v == "np":
        return (lambda x: np.cumprod(x, axis=ax)), (x,)
    if v == "method":
        return (lambda x: x.cumprod(axis=ax)), (x,)
    return (lambda x: np.multiply.accumulate(x, axis=ax)), (x,)


@case("cumprod", name="cumprod_complex", complex=True, eps=2e-4)
def cumprod_complex(d):
    s = d.shape()
    x = d.carray(s, re=(-1.0, 1.0), im=(-1.0, 1.0))
    if not s:
        return (lambda x: np.cumprod(x)), (x,)
    ax = d.axis(len(s))
    return (lambda x: np.multiply.accumulate(x, axis=ax)), (x,)


def _cumext_case(prim, ufunc):
    def build(d):
        s = d.shape(min_dims=1)
        x = d.array(s, -3, 3, step=0.125, unique=True)
        ax = d.axis(len(s))
        return (lambda x: ufunc.accumulate(x, axis=ax)), (x,)
    case(prim, name=prim)(build)


_cumext_case("cummax", np.maximum)
_cumext_case("cummin", np.minimum)


# ==================================================================================
# Indexing
# ==================================================================================
@case("getitem")
def getitem_basic(d):
    s = d.shape(max_dims=3)
    key = d(basic_indices(s, allow_newaxis=True, allow_ellipsis=True), "key")
    return (lambda x: x[key]), (d.array(s),)


@case("getitem")
def getitem_int_arrays(d):
    s = d.shape(min_dims=1, max_dims=3)
    n = len(s)
    v = d.choice(["first", "second", "pair", "separated", "ellipsis", "list", "mixed", "0d"])
    if v == "first" or (n < 2 and v in ("second", "pair", "mixed")) or (n < 3 and
                                                                         v == "separated"):
        idx = d.index(s[0], d.shape(max_dims=2))
        if idx.ndim == 1:
            idx = np.concatenate([idx, idx[:1], idx])   # repeats, for certain
        key = idx
    elif v == "second":
        key = (slice(None), d.index(s[1], d.shape(max_dims=2)))
    elif v == "pair":
        s1, s2 = d.shapes(2, max_dims=2)
        key = (d.index(s[0], s1), d.index(s[1], s2))
    elif v == "separated":
        # advanced indices separated by a slice: their axes go first
        s1, s2 = d.shapes(2, max_dims=2)
        key = (d.index(s[0], s1), slice(None), d.index(s[2], s2))
    elif v == "ellipsis":
        key = (Ellipsis, d.index(s[-1], d.shape(max_dims=2)))
    elif v == "list":
        key = [int(i) for i in d.index(s[0], (d.integer(1, 4),))]
    elif v == "mixed":
        key = (d.index(s[0], d.shape(max_dims=1)), d.integer(-s[1], s[1] - 1), None)
    else:
        key = (np.asarray(d.integer(-s[0], s[0] - 1)),)
    return (lambda x: x[key]), (d.array(s),)


@case("getitem")
def getitem_bool(d):
    s = d.shape(max_dims=3)
    n = len(s)
    v = d.choice(["full", "leading", "second", "compare", "scalar"])
    if v == "full" or (v == "leading" and n == 0):
        m = d.mask(s)
        return (lambda x: x[m]), (d.array(s),)
    if v == "leading":
        m = d.mask(s[:d.integer(1, n)])
        return (lambda x: x[m]), (d.array(s),)
    if v == "second" and n >= 2:
        m = d.mask(s[1:2])
        return (lambda x: x[:, m]), (d.array(s),)
    if v == "scalar":
        b = d.boolean()
        return (lambda x: x[b]), (d.array(s),)
    return (lambda x: x[x > 0.25]), (d.array(s, away=0.3),)


@case("getitem")
def getitem_layout(d):
    """Layout functions built on getitem: flip, roll, repeat, take, split,
    diagonal, trace, diag, rot90."""
    v = d.choice(["flip", "fliplr", "roll", "repeat", "take", "split", "array_split",
                  "diagonal", "trace", "diag2d", "rot90", "compress"])
    s = d.shape(min_dims=2 if v in ("fliplr", "diagonal", "trace", "rot90") else 1)
    n = len(s)
    x = d.array(s)
    if v == "flip":
        ax = d.axes(n)
        return (lambda x: np.flip(x, ax)), (x,)
    if v == "fliplr":
        return d.choice([np.fliplr, np.flipud]), (x,)
    if v == "roll":
        shift = d.integer(-4, 4)
        ax = d.choice([None, d.axis(n)])
        return (lambda x: np.roll(x, shift, axis=ax)), (x,)
    if v == "repeat":
        ax = d.choice([None, d.axis(n)])
        m = s[ax] if ax is not None else int(np.prod(s))
        reps = d.choice([d.integer(0, 3), list(d(st.lists(st.integers(0, 3), min_size=m,
                                                           max_size=m)))])
        return (lambda x: np.repeat(x, reps, axis=ax)), (x,)
    if v == "take":
        ax = d.choice([None, d.axis(n)])
        m = s[ax] if ax is not None else int(np.prod(s))
        mode = d.choice(["raise", "wrap", "clip"])
        idx = d.index(m, d.shape(max_dims=2))
        if mode != "raise":
            idx = idx * 2 + 1
        return (lambda x: np.take(x, idx, axis=ax, mode=mode)), (x,)
    if v in ("split", "array_split"):
        ax = d.axis(n)
        pts = sorted(d(st.lists(st.integers(0, s[ax]), max_size=3)))
        if v == "split":
            return (lambda x: np.split(x, pts, axis=ax)), (x,)
        k = d.integer(1, 4)
        return (lambda x: tuple(np.array_split(x, k, axis=ax))), (x,)
    if v in ("diagonal", "trace"):
        a1, a2 = d(st.lists(st.integers(-n, n - 1), min_size=2, max_size=2).filter(
            lambda a: a[0] % n != a[1] % n))
        off = d.integer(-2, 2)
        f = np.diagonal if v == "diagonal" else np.trace
        return (lambda x: f(x, off, a1, a2)), (x,)
    if v == "diag2d":
        x = d.array(d.shape(min_dims=2, max_dims=2))
        k = d.integer(-2, 2)
        return (lambda x: np.diag(x, k)), (x,)
    if v == "rot90":
        k = d.integer(-2, 5)
        return (lambda x: np.rot90(x, k)), (x,)
    m = d.mask((s[0],))
    return (lambda x: np.compress(m, x, axis=0)), (x,)


@case("scatter")
def scatter_diag(d):
    x = d.array(d.shape(min_dims=1, max_dims=1))
    k = d.integer(-2, 2)
    f = d.choice([np.diag, np.diagflat])
    return (lambda v: f(v, k)), (x,)


@case("scatter")
def scatter_transpose(d):
    """The transpose of getitem, reached as a vjp inside the function."""
    s = d.shape(min_dims=1)
    x0 = np.zeros(s)
    key = d.choice([
        d.index(s[0], d.shape(max_dims=2)),                               # repeats add up
        d(basic_indices(s, allow_newaxis=True, allow_ellipsis=True)),
        d.mask(s),
    ])
    out_shape = x0[key].shape

    def f(g):
        # the zeros take g's dtype: float64 for the finite differences
        return tg.vjp(lambda x: x[key], x0.astype(g.dtype))[1](g)[0]
    return f, (d.array(out_shape),)


def _along_args(d):
    s = d.shape(min_dims=1)
    n = len(s)
    ax = d.axis(n)
    ishape = list(s)
    ishape[ax] = d.integer(1, 4)
    idx = d(arrays(np.intp, tuple(ishape), elements=st.integers(-s[ax], s[ax] - 1)))
    return s, ax, idx


@case("take_along")
def take_along_(d):
    s, ax, idx = _along_args(d)
    if d.boolean():
        flat = d.index(int(np.prod(s)), (d.integer(1, 4),))
        return (lambda x: np.take_along_axis(x, flat, axis=None)), (d.array(s),)
    return (lambda x: np.take_along_axis(x, idx, axis=ax)), (d.array(s),)


@case("scatter_along")
def scatter_along_(d):
    """The transpose of take_along, reached as a vjp inside the function."""
    s, ax, idx = _along_args(d)

    def f(g):
        x0 = np.zeros(s, g.dtype)
        return tg.vjp(lambda x: np.take_along_axis(x, idx, axis=ax), x0)[1](g)[0]
    return f, (d.array(idx.shape),)


@case("where")
def where_(d):
    sc, sx, sy = d.shapes(3)
    cond = d.mask(sc)
    v = d.choice(["both", "x", "y"])
    if v == "both":
        return (lambda x, y: np.where(cond, x, y)), (d.array(sx), d.array(sy))
    if v == "x":
        return (lambda x: np.where(cond, x, 0.0)), (d.array(sx),)
    return (lambda y: np.where(cond, 1.5, y)), (d.array(sy),)


@case("clip")
def clip_(d):
    sx, sl, sh = d.shapes(3)
    # three disjoint lattices: x, lo and hi never tie (ties are tested apart)
    x = d.array(sx, -3, 3, step=0.25)
    lo = d.array(sl, -2, 0.5, step=0.25, offset=0.0625)
    hi = d.array(sh, -0.5, 2, step=0.25, offset=0.1875)  # lo > hi happens too
    v = d.choice(["np", "method", "lo", "hi", "kw", "crossed"])
    if v == "crossed":
        # lo > hi everywhere: NumPy returns hi
        lo = d.array(sl, 0.5, 2, step=0.25, offset=0.0625)
        hi = d.array(sh, -2, 0.25, step=0.25, offset=0.1875)
        return (lambda x, lo, hi: np.clip(x, lo, hi)), (x, lo, hi)
    if v == "np":
        return (lambda x, lo, hi: np.clip(x, lo, hi)), (x, lo, hi)
    if v == "method":
        return (lambda x, lo, hi: x.clip(lo, hi)), (x, lo, hi)
    if v == "lo":
        return (lambda x, lo: np.clip(x, lo, None)), (x, lo)
    if v == "hi":
        return (lambda x, hi: np.clip(x, None, hi)), (x, hi)
    return (lambda x: np.clip(x, min=-0.875, max=1.125)), (x,)


# ==================================================================================
# Shape and layout
# ==================================================================================
@case("reshape")
def reshape_(d):
    s = d.shape(min_dims=1)
    x = d.array(s)
    size = int(np.prod(s))
    divs = [k for k in range(1, size + 1) if size % k == 0]
    v = d.choice(["reshape", "method", "ravel", "flatten", "squeeze", "expand", "atleast",
                  "order_f"])
    if v in ("reshape", "method", "order_f"):
        a = d.choice(divs)
        new = d.choice([(a, -1), (-1, a), (size,), (a, size // a, 1), (1, a, 1, size // a)])
        if v == "reshape":
            return (lambda x: np.reshape(x, new)), (x,)
        if v == "method":
            return (lambda x: x.reshape(*new)), (x,)
        return (lambda x: np.reshape(x, new, order="F")), (x,)
    if v == "ravel":
        return d.choice([np.ravel, lambda x: x.ravel()]), (x,)
    if v == "flatten":
        return (lambda x: x.flatten()), (x,)
    if v == "squeeze":
        s1 = tuple(d.choice([1, k]) for k in s) + (1,)
        x = d.array(s1)
        ones = [i for i, k in enumerate(s1) if k == 1]
        ax = d.choice([None, ones[-1], -1, tuple(ones[:1])])
        return (lambda x: np.squeeze(x, axis=ax)), (x,)
    if v == "expand":
        ax = d.choice([0, -1, (0, 2), (-1, 1)])
        return (lambda x: np.expand_dims(x, ax)), (x,)
    x = d.array(d.shape(max_dims=2))
    f = d.choice([np.atleast_1d, np.atleast_2d, np.atleast_3d])
    return (lambda x: f(x) if x.ndim else f(x) * 1.0), (x,)


@case("transpose")
def transpose_(d):
    s = d.shape(min_dims=2)
    n = len(s)
    x = d.array(s)
    perm = d(st.permutations(range(n)).filter(lambda p: list(p) != list(range(n))))
    v = d.choice(["np", "T", "method", "swapaxes", "moveaxis", "mT", "matrix_transpose"])
    if v == "np":
        ax = d.choice([None, tuple(perm), tuple(p - n for p in perm)])
        return (lambda x: np.transpose(x, ax)), (x,)
    if v == "T":
        return (lambda x: x.T), (x,)
    if v == "method":
        return (lambda x: x.transpose(*perm)), (x,)
    if v == "swapaxes":
        a, b = d(st.lists(st.integers(-n, n - 1), min_size=2, max_size=2).filter(
            lambda a: a[0] % n != a[1] % n))
        return (lambda x: np.swapaxes(x, a, b)), (x,)
    if v == "moveaxis":
        src = perm[0]
        dst = d.choice([i for i in range(-n, n) if i % n != src])
        return (lambda x: np.moveaxis(x, src, dst)), (x,)
    if v == "mT":
        return (lambda x: x.mT), (x,)
    return (lambda x: np.matrix_transpose(x)), (x,)


@case("broadcast_to")
def broadcast_to_(d):
    sx, sy = d.shapes(2)
    target = np.broadcast_shapes(sx, sy) + ()
    target = (d.integer(2, 3),) + target
    x = d.array(sx)
    v = d.choice(["np", "arrays", "tile"])
    if v == "np":
        return (lambda x: np.broadcast_to(x, target)), (x,)
    if v == "arrays":
        return (lambda x, y: np.broadcast_arrays(x, y, np.ones(target))), (x, d.array(sy))
    reps = d.choice([2, (2, 1), (1, 2, 2), (3,)])
    return (lambda x: np.tile(x, reps)), (x,)


@case("concatenate")
def concatenate_(d):
    v = d.choice(["concatenate", "none", "hstack", "vstack", "dstack", "column_stack",
                  "block"])
    k = d.integer(2, 3)
    if v == "concatenate":
        s = d.shape(min_dims=1)
        n = len(s)
        ax = d.axis(n)
        shapes = []
        for _ in range(k):
            t = list(s)
            t[ax] = d.integer(0, 3)
            shapes.append(tuple(t))
        return (lambda *xs: np.concatenate(xs, axis=ax)), tuple(d.array(t) for t in shapes)
    if v == "none":
        return (lambda *xs: np.concatenate(xs, axis=None)), tuple(
            d.array(d.shape()) for _ in range(k))
    if v == "block":
        s = d.shape(min_dims=2, max_dims=2)
        a, b = d.array(s), d.array(s)
        return (lambda a, b: np.block([[a, b], [b, a]])), (a, b)
    s = d.shape(max_dims=2)
    f = {"hstack": np.hstack, "vstack": np.vstack, "dstack": np.dstack,
         "column_stack": np.column_stack}[v]
    return (lambda *xs: f(xs)), tuple(d.array(s) for _ in range(k))


@case("stack")
def stack_(d):
    s = d.shape()
    ax = d.axis(len(s) + 1)
    k = d.integer(1, 3)
    if d.boolean():
        # a plain array among the traced ones (its tangent is zero)
        c = np.linspace(-1.0, 1.0, int(np.prod(s))).reshape(s).astype(d.dtype)
        return (lambda *xs: np.stack(xs[:1] + (c,) + xs[1:], axis=ax)), tuple(
            d.array(s) for _ in range(k))
    return (lambda *xs: np.stack(xs, axis=ax)), tuple(d.array(s) for _ in range(k))


@case("astype")
def astype_(d):
    s = d.shape()
    # casts that are exact, so finite differences see the identity
    if d.dtype == F32:
        return (lambda x: x.astype(np.float64)), (d.array(s),)
    target = d.choice([np.complex128, np.longdouble])
    return (lambda x: x.astype(target) * 1.0), (d.array(s),)


@case("astype", eps=1e-2, rtol32=1e-3, dtypes=(F64,))
def astype_downcast(d):
    # float64 -> float32 rounds: a large step keeps the difference quotient exact
    # up to float32 rounding (~1e-7 / 1e-2).
    return (lambda x: x.astype(np.float32)), (d.array(d.shape(), step=0.25),)


@case("copy")
def copy_(d):
    f = d.choice([np.copy, lambda x: x.copy(), lambda x: np.array(x, copy=True)
                  if False else np.copy(x, order="C")])
    return f, (d.array(d.shape()),)


# ==================================================================================
# Products and contractions
# ==================================================================================
def _matmul_shapes(d):
    k = d.integer(1, 3)
    kind_a, kind_b = d.choice(["1", "2", "b"]), d.choice(["1", "2", "b"])
    ba, bb = d.shapes(2, min_dims=1, max_dims=2)
    m, n = d.integer(1, 3), d.integer(1, 3)
    sa = {"1": (k,), "2": (m, k), "b": ba + (m, k)}[kind_a]
    sb = {"1": (k,), "2": (k, n), "b": bb + (k, n)}[kind_b]
    return sa, sb


@case("matmul")
def matmul_(d):
    sa, sb = _matmul_shapes(d)
    f = d.choice([np.matmul, operator.matmul] + ([np.dot, lambda a, b: a.dot(b)]
                                                 if len(sb) <= 2 else []))
    return f, (d.array(sa), d.array(sb))


@case("matmul", "transpose", "reshape")
def tensordot_(d):
    v = d.choice(["tensordot_int", "tensordot_axes", "inner", "dot_nd"])
    if v == "tensordot_int":
        k = d.integer(0, 2)
        common = d.shape(min_dims=k, max_dims=k)
        sa = d.shape(max_dims=2) + common
        sb = common + d.shape(max_dims=2)
        if not sa or not sb or not common:
            sa, sb, k = sa + (2,), (2,) + sb, k + 1 if not common else k
            if k and sa[-k:] != sb[:k]:
                sa, sb, k = (2, 3), (3, 2), 1
        return (lambda a, b: np.tensordot(a, b, k)), (d.array(sa), d.array(sb))
    if v == "tensordot_axes":
        sa = d.shape(min_dims=2)
        i, j = d(st.lists(st.integers(0, len(sa) - 1), min_size=2, max_size=2, unique=True))
        sb = (sa[j], d.integer(1, 3), sa[i])
        return (lambda a, b: np.tensordot(a, b, axes=([i, j - len(sa)], [2, 0]))), (
            d.array(sa), d.array(sb))
    if v == "inner":
        sa = d.shape(min_dims=1, max_dims=2)
        sb = d.shape(max_dims=1) + sa[-1:]
        return (lambda a, b: np.inner(a, b)), (d.array(sa), d.array(sb))
    sa = d.shape(min_dims=1, max_dims=2)
    sb = d.shape(min_dims=1, max_dims=1) + sa[-1:] + d.shape(min_dims=1, max_dims=1)
    return (lambda a, b: np.dot(a, b)), (d.array(sa), d.array(sb))


#: einsum specifications: explicit, implicit, repeated indices, ellipses, 3 operands
EINSUM_SPECS = [
    "ij,jk->ik", "ij,jk", "ii->i", "ii", "ii->", "iij->j", "ij->", "ij->j", "ji", "i,i", "i,i->i",
    "i,j->ij", "ij,j->i", "ijk->kji", "ij,jk,kl->il", "bij,bjk->bik", "...ij,...jk->...ik",
    "...ii->...i", "...i,...i->...", "ij,ij->ij", "ij,ik->jk", "ii,i->i", "i->", "i,jk->ijk",
    "ijj,jk->ik", "ij,jk,ki", "i...->...", "i...,i...->...", "...ij,j->...", "i...j,j->...i",
    "...ii,...i->...",
]


def _einsum_operands(d, spec):
    ins = spec.split("->")[0].split(",")
    letters = sorted(set(spec) - set(",.->"))
    size = {c: d.integer(1, d.max_side) for c in letters}
    nell = sum("..." in s for s in ins)
    ell = list(d.shapes(nell, max_dims=2)) if nell else []
    shapes = []
    for s in ins:
        if "..." in s:
            pre, post = s.split("...")
            shapes.append(tuple(size[c] for c in pre) + ell.pop(0) + tuple(size[c] for c in post))
        else:
            shapes.append(tuple(size[c] for c in s))
    return shapes


@case("einsum")
def einsum_(d):
    spec = d.choice(EINSUM_SPECS, "spec")
    shapes = _einsum_operands(d, spec)
    opt = d.choice([False, True, "greedy"])
    return (lambda *ops: np.einsum(spec, *ops, optimize=opt)), tuple(d.array(s) for s in shapes)


@case("matmul", name="matmul[complex]", complex=True)
def matmul_complex(d):
    sa, sb = _matmul_shapes(d)
    a = d.carray(sa)
    b = d.carray(sb) if d.boolean() else d.array(sb)     # complex @ real too
    return d.choice([np.matmul, np.dot if len(sb) <= 2 else np.matmul]), (a, b)


@case("einsum", name="einsum[complex]", complex=True)
def einsum_complex(d):
    spec = d.choice(EINSUM_SPECS, "spec")
    shapes = _einsum_operands(d, spec)
    return (lambda *ops: np.einsum(spec, *ops)), tuple(d.carray(s) for s in shapes)


@case("einsum")
def einsum_interleaved(d):
    v = d.choice(["matmul", "trace", "outer"])
    if v == "matmul":
        m, k, n = (d.integer(1, 3) for _ in range(3))
        return (lambda a, b: np.einsum(a, [0, 1], b, [1, 2], [0, 2])), (
            d.array((m, k)), d.array((k, n)))
    if v == "trace":
        n = d.integer(1, 3)
        return (lambda a: np.einsum(a, [0, 0])), (d.array((n, n)),)
    return (lambda a, b: np.einsum(a, [Ellipsis, 0], b, [1])), (
        d.array(d.shape(min_dims=1)), d.array((d.integer(1, 3),)))


# ==================================================================================
# Nondifferentiable primitives: plain values, no derivative
# ==================================================================================
def _nd(prim, fun, shape_kw=None, values=None, **kw):
    shape_kw = shape_kw or {}
    values = values or {}

    def build(d):
        return fun, (d.array(d.shape(**shape_kw), **values),)
    nondiff_case(prim, **kw)(build)


_LAT = {"step": 0.25, "lo": -2, "hi": 2}   # exact ties and integers occur
for _name, _f in [
        ("sign", np.sign), ("floor", np.floor), ("ceil", np.ceil), ("trunc", np.trunc),
        ("rint", np.rint), ("signbit", np.signbit), ("spacing", np.spacing),
        ("isfinite", np.isfinite), ("isinf", np.isinf), ("isnan", np.isnan),
        ("logical_not", np.logical_not)]:
    _nd(_name, _f, values=_LAT, name=_name)
_nd("heaviside", lambda x: np.heaviside(x, 0.5), values=_LAT)
_nd("nextafter", lambda x: np.nextafter(x, np.inf))
_nd("floor_divide", lambda x: (np.floor_divide(x, 0.75), x // 1.5), values=_LAT)
for _name, _f in [("greater", operator.gt), ("greater_equal", operator.ge),
                  ("less", operator.lt), ("less_equal", operator.le),
                  ("equal", operator.eq), ("not_equal", operator.ne)]:
    _nd(_name, (lambda f: lambda x: (f(x, 0.5), f(x, np.flip(x))))(_f), values=_LAT,
        name=_name)
for _name, _f in [("logical_and", np.logical_and), ("logical_or", np.logical_or),
                  ("logical_xor", np.logical_xor)]:
    _nd(_name, (lambda f: lambda x: f(x, x > 0.5))(_f), values=_LAT, name=_name)
# Integer-only ufuncs: a traced (float) value reaches them only after a cast,
# which already drops the derivative; checked for plain values.
for _name, _f in [("bitwise_and", np.bitwise_and), ("bitwise_or", np.bitwise_or),
                  ("bitwise_xor", np.bitwise_xor), ("left_shift", np.left_shift),
                  ("right_shift", np.right_shift), ("gcd", np.gcd), ("lcm", np.lcm)]:
    _nd(_name, (lambda f: lambda x: f(np.abs(x * 4).astype(np.int64), 3))(_f), values=_LAT,
        name=_name)
_nd("invert", lambda x: np.invert(x > 0))
_nd("isnat", lambda x: np.isnat(np.array(["NaT", "2024-01-01"], dtype="datetime64[D]")))


_Q = {"min_dims": 1}
_SQ = {"min_dims": 2, "max_dims": 2}
for _name, _f, _kw, _vals in [
        ("shape", np.shape, {}, {}), ("ndim", np.ndim, {}, {}), ("size", np.size, {}, {}),
        ("argmax", lambda x: (np.argmax(x), np.argmax(x, axis=-1)), _Q, _LAT),
        ("argmin", lambda x: (np.argmin(x), np.argmin(x, axis=0)), _Q, _LAT),
        ("argsort", lambda x: np.argsort(x, axis=-1, kind="stable"), _Q, _LAT),
        ("argwhere", np.argwhere, {}, _LAT), ("nonzero", np.nonzero, _Q, _LAT),
        ("flatnonzero", np.flatnonzero, {}, _LAT), ("count_nonzero", np.count_nonzero, {}, _LAT),
        ("searchsorted", lambda x: np.searchsorted(np.linspace(-2, 2, 5), x), {}, _LAT),
        ("isclose", lambda x: np.isclose(x, 0.5), {}, _LAT),
        ("allclose", lambda x: np.allclose(x, x + 1e-12), {}, {}),
        ("array_equal", lambda x: np.array_equal(x, x), {}, {}),
        ("array_equiv", lambda x: np.array_equiv(x, 0.5), {}, _LAT),
        ("any", lambda x: (np.any(x > 0), np.any(x > 0, axis=-1)), {}, _LAT),
        ("all", lambda x: (np.all(x > 0), np.all(x > 0, axis=0)), _Q, _LAT),
        ("result_type", lambda x: np.result_type(x, 1.0), {}, {}),
        ("iscomplexobj", np.iscomplexobj, {}, {}), ("isrealobj", np.isrealobj, {}, {}),
        ("isreal", np.isreal, {}, {}), ("iscomplex", np.iscomplex, {}, {}),
        ("may_share_memory", lambda x: np.may_share_memory(x, x), {}, {}),
        ("shares_memory", lambda x: np.shares_memory(x, x), {}, {}),
        ("digitize", lambda x: np.digitize(x, [-1.0, 0.0, 1.0]), {}, _LAT),
        ("around", lambda x: np.around(x, 1), {}, {}),
        ("round", lambda x: np.round(x, 2), {}, {}),
        ("fix", np.fix, {}, {}),
        ("argpartition", lambda x: np.argpartition(x, 0, axis=-1), _Q, {"unique": True}),
        ("lexsort", lambda x: np.lexsort((x, x * 2)), _Q, _LAT),
        ("can_cast", lambda x: np.can_cast(x, np.float32), {}, {}),
        ("min_scalar_type", lambda x: np.min_scalar_type(x), {"max_dims": 0}, {}),
        ("unravel_index", lambda x: np.unravel_index(np.argmax(x), x.shape), _Q, _LAT),
        ("ravel_multi_index", lambda x: np.ravel_multi_index(np.nonzero(x > 0), x.shape), _Q,
         _LAT),
        ("tril_indices_from", lambda x: np.tril_indices_from(x), _SQ, {}),
        ("triu_indices_from", lambda x: np.triu_indices_from(x, 1), _SQ, {}),
        ("diag_indices_from", lambda x: np.diag_indices_from(x[:1, :1]), _SQ, {}),
        ("packbits", lambda x: np.packbits(x > 0), {}, _LAT),
        ("unpackbits", lambda x: np.unpackbits(np.packbits(x > 0)), {}, _LAT),
        ("isin", lambda x: np.isin(x, [0.5, 1.0]), {}, _LAT),
        ("bincount", lambda x: np.bincount(np.abs(x * 4).astype(int).ravel()), {}, _LAT),
        ("histogram", lambda x: np.histogram(x, bins=[-2.0, 0.0, 2.0])[0], {}, {}),
        ("histogram_bin_edges", lambda x: np.histogram_bin_edges(x, bins=[-2.0, 0.0, 2.0]),
         {}, {}),
]:
    _nd("nondiff." + _name, _f, shape_kw=_kw, values=_vals, name="nondiff." + _name)


@case("take_along", "astype")
def sort_complex_real(d):
    """np.sort_complex: a permutation of the values (through np.sort)."""
    s = d.shape(min_dims=1)
    return (lambda x: np.sort_complex(x)), (d.array(s, -3, 3, step=0.125, unique=True),)


@case("take_along", complex=True)
def sort_complex_(d):
    # distinct real parts: the order does not change under small moves
    s = d.shape(min_dims=1)
    re = d.array(s, -3, 3, step=0.125, unique=True)
    return (lambda z: np.sort_complex(z)), (re + 1j * d.array(s),)


# ==================================================================================
# In-place writes (recorded as new versions of the array)
# ==================================================================================
def _value_shape(d, region):
    """A shape that broadcasts to ``region``: a suffix, some axes set to 1."""
    tail = region[d.integer(0, len(region)):]
    return tuple(d.choice([1, k]) for k in tail)


@case("setitem")
def setitem_(d):
    s = d.shape(min_dims=1)
    v = d.choice(["basic", "int", "mask", "zeros_like", "augmented"])
    if v == "int" or v == "augmented":
        key = d.index(s[0], d.shape(max_dims=1))       # repeats: the last write wins
    elif v == "mask":
        key = d.mask(s)
    else:
        key = d(basic_indices(s, allow_newaxis=True, allow_ellipsis=True), "key")
    region = np.empty(s)[key].shape
    val = d.array(_value_shape(d, region))
    if v == "zeros_like":
        def f(x, val):
            y = np.zeros_like(x)
            y[key] = val
            return y * x
    elif v == "augmented":
        def f(x, val):
            y = x * 1.0
            y[key] += val
            return y
    else:
        def f(x, val):
            y = x * 1.0
            y[key] = val
            return y
    return f, (d.array(s), val)


@case("add_at")
def add_at_(d):
    s = d.shape(min_dims=1)
    idx = d.index(s[0], d.shape(max_dims=2))           # repeats accumulate
    region = idx.shape + s[1:]
    uf = d.choice([np.add, np.subtract])

    def f(x, val):
        y = x * 1.0
        uf.at(y, idx, val)
        return y
    # values of the region's rank (size-1 axes broadcast): NumPy 2.4's own
    # ufunc.at adds wrong values for lower-rank ones, which would spoil the
    # plain evaluations of the finite differences (tracegrad's traced add.at
    # broadcasts first; tested in test_registry.py)
    vshape = tuple(d.choice([1, k]) for k in region)
    return f, (d.array(s), d.array(vshape))


# ==================================================================================
# Cases of other rule modules live beside this file as cases_<family>.py and
# register themselves with @case / @nondiff_case on import; importing them
# here puts them in ALL_CASES, so test_registry.py runs them too.
# ==================================================================================
def _import_family_cases():
    import importlib
    import pathlib
    import sys
    here = pathlib.Path(__file__).resolve().parent
    if str(here) not in sys.path:
        sys.path.insert(0, str(here))
    for path in sorted(here.glob("cases_*.py")):
        importlib.import_module(path.stem)


_import_family_cases()
