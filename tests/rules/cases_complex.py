"""Complex-input registry cases (joined to ``cases.py``'s tables on import; see
its docstring) for primitives whose other cases are all real.

A VJP that multiplies by a derivative instead of its conjugate, or that drops
an imaginary part on an in-place write path, passes every real case: these
cases run the same NumPy functions on complex arrays (inputs away from branch
cuts and poles), so the reverse-mode finite-difference and forward/reverse
dot-product tests see the conjugation.
"""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import basic_indices

import tracegrad as tg
from cases import F64, _along_args, _value_shape, case

la = np.linalg


def _c(d, shape, **kw):
    return d.carray(shape, **kw)


# --- reductions and scans ---------------------------------------------------------------
@case("sum", name="sum[complex]", complex=True)
def sum_c(d):
    s = d.shape()
    ax = d.axes(len(s))
    kd = d.boolean()
    v = d.choice(["np", "mean", "where", "initial", "times"])
    if v == "np":
        return (lambda z: np.sum(z, axis=ax, keepdims=kd)), (_c(d, s),)
    if v == "mean":
        return (lambda z: z.mean(axis=ax, keepdims=kd)), (_c(d, s),)
    if v == "where":
        m = d.mask(_value_shape(d, s))
        return (lambda z: np.sum(z, axis=ax, keepdims=kd, where=m)), (_c(d, s),)
    if v == "initial":
        return (lambda z: np.sum(z, axis=ax, keepdims=kd, initial=0.5 - 1j)), (_c(d, s),)
    # a holomorphic function under the sum: the cotangent must come back conjugated
    return (lambda z: np.sum(z * z, axis=ax, keepdims=kd)), (_c(d, s),)


@case("cumsum", name="cumsum[complex]", complex=True)
def cumsum_c(d):
    s = d.shape()
    if not s:
        return (lambda z: np.cumsum(z * z)), (_c(d, s),)
    ax = d.axis(len(s))
    f = d.choice([lambda z: np.cumsum(z, axis=ax), lambda z: np.add.accumulate(z * z, axis=ax),
                  lambda z: np.cumsum(z)])
    return f, (_c(d, s),)


# --- indexing ---------------------------------------------------------------------------
@case("getitem", name="getitem[complex]", complex=True)
def getitem_c(d):
    s = d.shape(min_dims=1, max_dims=3)
    v = d.choice(["basic", "int", "mask", "take", "diagonal"])
    if v == "basic":
        key = d(basic_indices(s, allow_newaxis=True, allow_ellipsis=True), "key")
    elif v == "int":
        key = d.index(s[0], d.shape(max_dims=2))
    elif v == "mask":
        key = d.mask(s)
    elif v == "take":
        idx = d.index(int(np.prod(s)), d.shape(max_dims=2))
        return (lambda z: np.take(z * z, idx)), (_c(d, s),)
    else:
        s = d.shape(min_dims=2, max_dims=3)
        return (lambda z: np.trace(z * z)), (_c(d, s),)
    g = d.choice([lambda z: z[key], lambda z: (z * z)[key]])
    return g, (_c(d, s),)


@case("setitem", name="setitem[complex]", complex=True)
def setitem_c(d):
    s = d.shape(min_dims=1)
    v = d.choice(["basic", "int", "mask", "augmented", "real_value", "zeros_like"])
    if v in ("int", "augmented"):
        key = d.index(s[0], d.shape(max_dims=1))       # repeats: the last write wins
    elif v == "mask":
        key = d.mask(s)
    else:
        key = d(basic_indices(s, allow_newaxis=True, allow_ellipsis=True), "key")
    region = np.empty(s)[key].shape
    vshape = _value_shape(d, region)
    if v == "real_value":
        val = d.array(vshape)           # a real value written into a complex array
    else:
        val = _c(d, vshape)
    if v == "augmented":
        def f(x, val):
            y = x * x
            y[key] += val * val
            return y
    elif v == "zeros_like":
        def f(x, val):
            y = np.zeros_like(x)
            y[key] = val * val
            return y * x
    else:
        def f(x, val):
            y = x * x
            y[key] = val * val
            return y
    return f, (_c(d, s), val)


@case("add_at", name="add_at[complex]", complex=True)
def add_at_c(d):
    s = d.shape(min_dims=1)
    idx = d.index(s[0], d.shape(max_dims=2))           # repeats accumulate
    region = idx.shape + s[1:]
    uf = d.choice([np.add, np.subtract])

    def f(x, val):
        y = x * x
        uf.at(y, idx, val * val)
        return y
    vshape = tuple(d.choice([1, k]) for k in region)  # see add_at_ in cases.py
    return f, (_c(d, s), _c(d, vshape))


@case("scatter", name="scatter[complex]", complex=True)
def scatter_c(d):
    if d.boolean():
        k = d.integer(-2, 2)
        f = d.choice([np.diag, np.diagflat])
        return (lambda v: f(v * v, k)), (_c(d, d.shape(min_dims=1, max_dims=1)),)
    s = d.shape(min_dims=1)
    x0 = np.zeros(s)
    key = d.choice([
        d.index(s[0], d.shape(max_dims=2)),
        d(basic_indices(s, allow_newaxis=True, allow_ellipsis=True)),
        d.mask(s),
    ])

    def f(g):
        return tg.vjp(lambda x: x[key], x0.astype(g.dtype))[1](g * g)[0]
    return f, (_c(d, x0[key].shape),)


@case("take_along", name="take_along[complex]", complex=True)
def take_along_c(d):
    s, ax, idx = _along_args(d)
    return (lambda z: np.take_along_axis(z * z, idx, axis=ax)), (_c(d, s),)


@case("scatter_along", name="scatter_along[complex]", complex=True)
def scatter_along_c(d):
    s, ax, idx = _along_args(d)

    def f(g):
        x0 = np.zeros(s, g.dtype)
        return tg.vjp(lambda x: np.take_along_axis(x, idx, axis=ax), x0)[1](g * g)[0]
    return f, (_c(d, idx.shape),)


@case("where", name="where[complex]", complex=True)
def where_c(d):
    sc, sx, sy = d.shapes(3)
    cond = d.mask(sc)
    v = d.choice(["both", "real_y", "const"])
    if v == "both":
        return (lambda x, y: np.where(cond, x * x, y)), (_c(d, sx), _c(d, sy))
    if v == "real_y":
        return (lambda x, y: np.where(cond, x * x, y)), (_c(d, sx), d.array(sy))
    return (lambda x: np.where(cond, 1.5 + 0.5j, x * x)), (_c(d, sx),)


# --- shape and layout ---------------------------------------------------------------------
@case("concatenate", name="concatenate[complex]", complex=True)
def concatenate_c(d):
    s = d.shape(min_dims=1)
    ax = d.axis(len(s))
    shapes = []
    for _ in range(d.integer(2, 3)):
        t = list(s)
        t[ax] = d.integer(0, 3)
        shapes.append(tuple(t))
    args = [_c(d, t) for t in shapes]
    if d.boolean():
        args[0] = d.array(shapes[0])   # a real operand among complex ones
    return (lambda *zs: np.concatenate([z * z for z in zs], axis=ax)), tuple(args)


@case("stack", name="stack[complex]", complex=True)
def stack_c(d):
    s = d.shape()
    ax = d.axis(len(s) + 1)
    return (lambda *zs: np.stack([z * z for z in zs], axis=ax)), tuple(
        _c(d, s) for _ in range(d.integer(1, 3)))


@case("transpose", name="transpose[complex]", complex=True)
def transpose_c(d):
    s = d.shape(min_dims=2)
    n = len(s)
    perm = tuple(d(st.permutations(range(n)).filter(lambda p: list(p) != list(range(n)))))
    f = d.choice([lambda z: np.transpose(z * z, perm), lambda z: (z * z).mT,
                  lambda z: np.swapaxes(z * z, 0, -1)])
    return f, (_c(d, s),)


@case("reshape", name="reshape[complex]", complex=True)
def reshape_c(d):
    s = d.shape(min_dims=1)
    size = int(np.prod(s))
    a = d.choice([k for k in range(1, size + 1) if size % k == 0])
    new = d.choice([(a, -1), (-1, a), (size,), (1, a, 1, size // a)])
    order = d.choice(["C", "F"])
    return (lambda z: np.reshape(z * z, new, order=order)), (_c(d, s),)


@case("broadcast_to", name="broadcast_to[complex]", complex=True)
def broadcast_to_c(d):
    sx, sy = d.shapes(2)
    target = (d.integer(2, 3),) + np.broadcast_shapes(sx, sy)
    if d.boolean():
        return (lambda z: np.broadcast_to(z * z, target)), (_c(d, sx),)
    return (lambda z: np.tile(z * z, 2)), (_c(d, sx),)


@case("copy", name="copy[complex]", complex=True)
def copy_c(d):
    return (lambda z: np.copy(z * z)), (_c(d, d.shape()),)


@case("astype", name="astype[complex]", complex=True)
def astype_c(d):
    # an exact upcast (complex64 -> complex128) or a no-op
    return (lambda z: (z * z).astype(np.complex128)), (_c(d, d.shape()),)


# --- power ----------------------------------------------------------------------------------
_RHP = {"re": (0.3, 2.0), "im": (-1.5, 1.5)}     # right half plane: off the cut of log


@case("power", name="power[complex]", complex=True)
def power_c(d):
    v = d.choice(["int", "negint", "half", "both", "base", "real_exp"])
    if v == "int":
        k = d.choice([2, 3, 4])
        return (lambda z: z ** k), (_c(d, d.shape()),)
    if v == "negint":
        k = d.choice([-1, -2])
        return (lambda z: np.power(z, k)), (_c(d, d.shape(), **_RHP),)
    if v == "half":
        e = d.choice([0.5, -1.5, 2.5])
        return (lambda z: z ** e), (_c(d, d.shape(), **_RHP),)
    if v == "base":   # a real base, complex exponent: 2 ** z
        return (lambda w: 2.0 ** w), (_c(d, d.shape(), re=(-1.5, 1.5), im=(-1.5, 1.5)),)
    sx, sy = d.shapes(2)
    y = _c(d, sy, re=(-1.5, 1.5), im=(-1.0, 1.0))
    if v == "real_exp":
        y = d.array(sy, -1.5, 1.5)
    return (lambda z, w: np.power(z, w)), (_c(d, sx, **_RHP), y)


@case("float_power", name="float_power[complex]", complex=True, dtypes=(F64,))
def float_power_c(d):
    v = d.choice(["int", "half", "both"])
    if v == "int":
        return (lambda z: np.float_power(z, 3)), (_c(d, d.shape()),)
    if v == "half":
        return (lambda z: np.float_power(z, 2.5)), (_c(d, d.shape(), **_RHP),)
    sx, sy = d.shapes(2)
    return (lambda z, w: np.float_power(z, w)), (
        _c(d, sx, **_RHP), _c(d, sy, re=(-1.5, 1.5), im=(-1.0, 1.0)))


# --- elementwise (holomorphic, away from branch cuts and poles) -----------------------------
def _unary_c(prim, f, re=(-1.5, 1.5), im=(-1.5, 1.5), **opts):
    def build(d):
        return f, (d.carray(d.shape(), re, im),)
    case(prim, name=prim + "[complex]", complex=True, **opts)(build)


_unary_c("positive", np.positive)
_unary_c("expm1", np.expm1)
_unary_c("exp2", np.exp2)
_unary_c("sinh", np.sinh)
_unary_c("cosh", np.cosh)
_unary_c("tan", np.tan, re=(-1.2, 1.2), im=(-1.0, 1.0))            # poles at ±pi/2
# log1p: cut on (-inf, -1]; the others' cuts lie on the real or imaginary axis
# outside [-1, 1] (arcsin, arccos, arctanh) / beyond ±i (arctan, arcsinh):
# the right half plane, or a strip around the origin, keeps clear of them
_unary_c("log1p", np.log1p, re=(-0.7, 2.0))
_unary_c("log2", np.log2, re=(0.2, 2.0))
_unary_c("log10", np.log10, re=(0.2, 2.0))
_unary_c("arcsin", np.arcsin, re=(-0.8, 0.8), im=(-1.5, 1.5))
_unary_c("arccos", np.arccos, re=(-0.8, 0.8), im=(-1.5, 1.5))
_unary_c("arctan", np.arctan, re=(-1.5, 1.5), im=(-0.8, 0.8))
_unary_c("arcsinh", np.arcsinh, re=(-1.5, 1.5), im=(-0.8, 0.8))
_unary_c("arccosh", np.arccosh, re=(0.3, 2.0), im=(0.1, 1.5))       # cut on (-inf, 1]
_unary_c("arctanh", np.arctanh, re=(-0.8, 0.8), im=(-1.5, 1.5))


# --- linalg ---------------------------------------------------------------------------------
def _rect_c(d):
    m = d.integer(1, d.max_side + 1)
    n = d.integer(1, d.max_side + 1)
    k = min(m, n)
    rng = np.random.default_rng(m * 10 + n)
    qa = la.qr(rng.normal(size=(m, m)) + 1j * rng.normal(size=(m, m)))[0]
    qb = la.qr(rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n)))[0]
    s = np.arange(k, 0, -1, dtype=float) + 1.0          # 1 apart, >= 2
    base = qa[:, :k] @ np.diag(s) @ qb[:k, :]
    return (m, n), base, 0.05 / max(m, n)


@case("linalg.svdvals", name="linalg.svdvals[complex]", complex=True)
def svdvals_c(d):
    shape, base, scale = _rect_c(d)
    f = d.choice([la.svdvals, lambda a: la.svd(a, compute_uv=False),
                  lambda a: la.norm(a, "nuc"), lambda a: la.norm(a, 2)])
    return (lambda x: f(base + scale * x)), (_c(d, shape),)


@case("linalg.lstsq", name="linalg.lstsq[complex]", complex=True)
def lstsq_c(d):
    shape, base, scale = _rect_c(d)
    m = shape[0]
    bshape = (m,) if d.boolean() else (m, d.integer(1, 2))

    def f(x, b):
        return la.lstsq(base + scale * x, b)[0]
    return f, (_c(d, shape), _c(d, bshape))


@case("linalg.eigvalsh", name="linalg.eigvalsh[complex]", complex=True)
def eigvalsh_c(d):
    n = d.integer(1, d.max_side + 1)
    rng = np.random.default_rng(n)
    q = la.qr(rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n)))[0]
    base = q @ np.diag(np.arange(n, dtype=float) * 1.0) @ q.conj().T     # 1 apart
    scale = 0.05 / n
    uplo = d.choice(["L", "U"])

    def f(x):
        h = x + np.conjugate(np.swapaxes(x, -1, -2))
        return la.eigvalsh(base + scale * h, UPLO=uplo)
    return f, (_c(d, d.shape(0, 1, max_side=2) + (n, n)),)


# --- scipy.special ----------------------------------------------------------------------------
try:
    import scipy.special as sp
except ImportError:  # SciPy is optional: its primitives are not registered then
    sp = None

if sp is not None:
    from tracegrad.rules.special import log_softmax, logsumexp, softmax

    P = "scipy.special."
    _SMALL_IM = {"re": (-2.0, 2.0), "im": (-0.5, 0.5)}     # exp(z) in a sector |arg| < 0.5

    def _sp_unary(name, f, re, im, **opts):
        def build(d):
            return f, (d.carray(d.shape(), re, im),)
        case(P + name, name=P + name + "[complex]", complex=True, **opts)(build)

    def _sp_param(name, f, params, re, im, **opts):
        def build(d):
            p = d.choice(params, "param")
            return (lambda x: f(p, x)), (d.carray(d.shape(), re, im),)
        case(P + name, name=P + name + "[complex]", complex=True, **opts)(build)

    _sp_unary("erfi", sp.erfi, (-1.0, 1.0), (-1.0, 1.0))
    _sp_unary("dawsn", sp.dawsn, (-1.0, 1.0), (-1.0, 1.0))
    _sp_unary("erfcx", sp.erfcx, (-1.0, 1.0), (-1.0, 1.0))
    _sp_unary("ndtr", sp.ndtr, (-1.0, 1.0), (-1.0, 1.0))
    _sp_unary("log_ndtr", sp.log_ndtr, (0.0, 2.0), (-0.5, 0.5))
    _sp_unary("rgamma", sp.rgamma, (0.3, 2.0), (-1.0, 1.0))
    _sp_unary("exp1", sp.exp1, (0.3, 2.0), (-1.0, 1.0))            # cut: negative reals
    _sp_unary("expi", sp.expi, (0.3, 2.0), (-1.0, 1.0))
    _sp_unary("log1p", sp.log1p, (-0.5, 2.0), (-1.0, 1.0))
    _sp_unary("expm1", sp.expm1, (-1.5, 1.5), (-1.5, 1.5))
    _BESSEL = [0.0, 0.5, 1.0, 2.5]
    _sp_param("iv", sp.iv, _BESSEL, (0.3, 2.0), (-1.0, 1.0))
    _sp_param("jv", sp.jv, _BESSEL, (0.3, 2.0), (-1.0, 1.0))
    _sp_param("kv", sp.kv, _BESSEL, (0.3, 2.0), (-1.0, 1.0))
    _sp_param("yv", sp.yv, _BESSEL, (0.5, 2.0), (-1.0, 1.0))
    _sp_param("kve", sp.kve, _BESSEL, (0.3, 2.0), (-1.0, 1.0))

    @case(P + "xlogy", P + "xlog1py", name=P + "xlogy[complex]", complex=True)
    def xlogy_c(d):
        sx, sy = d.shapes(2)
        x = d.carray(sx)
        if d.boolean():
            return sp.xlogy, (x, d.carray(sy, (0.3, 2.0), (-1.0, 1.0)))
        return sp.xlog1py, (x, d.carray(sy, (-0.5, 2.0), (-1.0, 1.0)))

    @case(P + "logsumexp", name=P + "logsumexp[complex]", complex=True)
    def logsumexp_c(d):
        # |Im| <= 0.5 (a, b): the sum stays in the right half plane, off the cut of log
        keepdims = d.boolean()
        if d.boolean():
            a = d.carray(d.shape(), **_SMALL_IM)
            axis = d.axes(a.ndim)
            return (lambda a: logsumexp(a, axis=axis, keepdims=keepdims)), (a,)
        sa, sb = d.shapes(2)
        a, b = d.carray(sa, **_SMALL_IM), d.carray(sb, (0.3, 2.0), (-0.3, 0.3))
        axis = d.axes(len(np.broadcast_shapes(sa, sb)))
        return (lambda a, b: logsumexp(a, axis, b, keepdims)), (a, b)

    @case(P + "logsumexp_sign", name=P + "logsumexp[return_sign, complex]", complex=True)
    def logsumexp_sign_c(d):
        # complex terms: lse = log|S| (real) and sign = S/|S|, a phase that
        # varies (not differentiated): only lse is compared
        sa, sb = d.shapes(2)
        a, b = d.carray(sa, **_SMALL_IM), d.carray(sb, (0.3, 2.0), (-0.3, 0.3))
        if d.boolean():
            b = d.array(sb, 0.3, 2.0)
        axis = d.axes(len(np.broadcast_shapes(sa, sb)))
        keepdims = d.boolean()
        return (lambda a, b: logsumexp(a, axis=axis, b=b, keepdims=keepdims,
                                       return_sign=True)[0]), (a, b)

    @case(P + "softmax", name=P + "softmax[complex]", complex=True)
    def softmax_c(d):
        x = d.carray(d.shape(), **_SMALL_IM)
        axis = d.axes(x.ndim)
        return (lambda x: softmax(x, axis=axis)), (x,)

    @case(P + "log_softmax", name=P + "log_softmax[complex]", complex=True)
    def log_softmax_c(d):
        x = d.carray(d.shape(), **_SMALL_IM)
        axis = d.axes(x.ndim)
        return (lambda x: log_softmax(x, axis=axis)), (x,)
