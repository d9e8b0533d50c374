"""Scalar helpers that generated kernels call where NumPy's semantics differ
from Python's (NaN propagation in maximum/minimum, sign of NaN, logaddexp),
and float64 ``exp``/``tanh`` that LLVM can vectorise.

They are small ``@njit`` functions; LLVM inlines them into the kernels.
Their source is part of every kernel's cache key (see :mod:`.cache`).
"""
import math

import numpy as np
from llvmlite import ir as _llvm
from numba import njit, types
from numba.extending import intrinsic

_opts = dict(cache=True, error_model="numpy")


# --- float64 exp and tanh as inline LLVM IR ------------------------------------------------
# A loop that calls libm cannot be vectorised (and numba calls libm's exp,
# ~5 ns/element here). These emit their instructions straight into the
# kernel's loop body as numba intrinsics: no call for LLVM to decline to
# inline, one call site for numba to type (written as Python statements they
# doubled a kernel's compile time).
_F64 = _llvm.DoubleType()
_I64 = _llvm.IntType(64)
_ROUND = 6755399441055744.0           # 1.5 * 2**52
_ROUND_BITS = 0x4338000000000000      # its representation


def _f(v):
    return _llvm.Constant(_F64, v)


def _intrinsic_fn(builder, name, nargs=1):
    return builder.module.declare_intrinsic(
        name, [_F64], _llvm.FunctionType(_F64, [_F64] * nargs))


def _horner(b, z, coeffs):
    """c0 * z**k + ... + ck by Horner's rule, highest coefficient first,
    evaluated as c_{j+1} + z * (...) in fdlibm's order."""
    acc = _f(coeffs[0])
    for c in coeffs[1:]:
        acc = b.fadd(_f(c), b.fmul(z, acc))
    return acc


def _emit_exp(builder, x):
    """fdlibm's e_exp.c reduction and rational form (< 1 ulp) with every step
    an AVX2 vector instruction: k = round(x / ln 2) by adding 1.5 * 2**52 (the
    integer lands in the low bits) instead of a float->int64 conversion, which
    AVX2 lacks; 2**k as two exact power-of-two factors built from their bits,
    so results near overflow and in the subnormal range round once; overflow,
    underflow and NaN as clamps and selects, not branches."""
    b = builder
    lo, hi = _f(-745.2), _f(709.8)
    t = b.select(b.fcmp_ordered("<", x, lo), lo, x)
    xc = b.select(b.fcmp_ordered(">", t, hi), hi, t)
    d = b.fadd(b.fmul(xc, _f(1.44269504088896338700)), _f(_ROUND))
    kf = b.fsub(d, _f(_ROUND))
    h = b.fsub(xc, b.fmul(kf, _f(6.93147180369123816490e-01)))
    lo_ = b.fmul(kf, _f(1.90821492927058770002e-10))
    r = b.fsub(h, lo_)
    q = b.fmul(r, r)
    poly = _horner(b, q, (4.13813679705723846039e-08, -1.65339022054652515390e-06,
                          6.61375632143793436117e-05, -2.77777777770155933842e-03,
                          1.66666666666666019037e-01))
    p = b.fsub(r, b.fmul(q, poly))
    # y = 1 - ((lo - (r * p) / (2 - p)) - h)
    y = b.fsub(_f(1.0), b.fsub(b.fsub(lo_, b.fdiv(b.fmul(r, p), b.fsub(_f(2.0), p))), h))
    rb = _llvm.Constant(_I64, _ROUND_BITS)
    k = b.sub(b.bitcast(d, _I64), rb)
    j = b.sub(b.bitcast(b.fadd(b.fmul(kf, _f(0.5)), _f(_ROUND)), _I64), rb)
    bias = _llvm.Constant(_I64, 1023)
    shift = _llvm.Constant(_I64, 52)
    s1 = b.bitcast(b.shl(b.add(j, bias), shift), _F64)
    s2 = b.bitcast(b.shl(b.add(b.sub(k, j), bias), shift), _F64)
    res = b.fmul(b.fmul(y, s1), s2)
    return b.select(b.fcmp_unordered("uno", x, x), x, res)


def _emit_tanh(builder, x):
    """Cody & Waite: a rational form below ln(3)/2, 1 - 2/(exp(2|x|) + 1)
    above (<= 2 ulp); both computed and one selected. |x| is capped at 22
    (tanh is 1 to double precision there); x itself is returned at +-0 (the
    rational form turns -0.0 into +0.0) and at NaN."""
    b = builder
    a = b.call(_intrinsic_fn(b, "llvm.fabs"), [x])
    g = b.fmul(x, x)
    num = b.fsub(b.fmul(b.fsub(b.fmul(_f(-0.96437492777225469787), g),
                               _f(0.99225929672236083313e2)), g), _f(0.16134119023996228053e4))
    den = b.fadd(b.fmul(b.fadd(b.fmul(b.fadd(g, _f(0.11274474380534949335e3)), g),
                               _f(0.22337720718962312926e4)), g), _f(0.48402357071988688686e4))
    near = b.fadd(x, b.fmul(x, b.fdiv(b.fmul(g, num), den)))
    cap = _f(22.0)
    e = _emit_exp(b, b.fmul(_f(2.0), b.select(b.fcmp_ordered("<", a, cap), a, cap)))
    far = b.call(_intrinsic_fn(b, "llvm.copysign", 2),
                 [b.fsub(_f(1.0), b.fdiv(_f(2.0), b.fadd(e, _f(1.0)))), x])
    near = b.select(b.fcmp_ordered("==", a, _f(0.0)), x, near)
    res = b.select(b.fcmp_ordered("<", a, _f(0.5493061443340549)), near, far)
    return b.select(b.fcmp_unordered("uno", x, x), x, res)


def _emit_log(builder, x):
    """musl's log (fdlibm e_log.c; < 1 ulp) with vector instructions only:
    the exponent and mantissa come from the bits, subnormals are scaled by
    2**54 first, k converts to double by the 1.5 * 2**52 trick (AVX2 has no
    int64->double conversion), and 0, negative numbers, inf and NaN are
    selects at the end."""
    b = builder
    sub = b.fcmp_ordered("<", x, _f(2.2250738585072014e-308))
    xs = b.select(sub, b.fmul(x, _f(18014398509481984.0)), x)
    i64 = lambda v: _llvm.Constant(_I64, v)  # noqa: E731
    ix = b.add(b.bitcast(xs, _I64), i64((0x3ff00000 - 0x3fe6a09e) << 32))
    k = b.add(b.sub(b.ashr(ix, i64(52)), i64(1023)), b.select(sub, i64(-54), i64(0)))
    m = b.bitcast(b.add(b.and_(ix, i64(0x000FFFFFFFFFFFFF)), i64(0x3fe6a09e << 32)), _F64)
    f = b.fsub(m, _f(1.0))
    hfsq = b.fmul(b.fmul(_f(0.5), f), f)
    s = b.fdiv(f, b.fadd(_f(2.0), f))
    z = b.fmul(s, s)
    w = b.fmul(z, z)
    t1 = b.fmul(w, b.fadd(_f(3.999999999940941908e-01), b.fmul(w, b.fadd(
        _f(2.222219843214978396e-01), b.fmul(w, _f(1.531383769920937332e-01))))))
    t2 = b.fmul(z, b.fadd(_f(6.666666666666735130e-01), b.fmul(w, b.fadd(
        _f(2.857142874366239149e-01), b.fmul(w, b.fadd(
            _f(1.818357216161805012e-01), b.fmul(w, _f(1.479819860511658591e-01))))))))
    R = b.fadd(t2, t1)
    dk = b.fsub(b.bitcast(b.add(k, i64(_ROUND_BITS)), _F64), _f(_ROUND))
    # s*(hfsq+R) + dk*ln2_lo - hfsq + f + dk*ln2_hi, left to right
    res = b.fadd(b.fmul(s, b.fadd(hfsq, R)), b.fmul(dk, _f(1.90821492927058770002e-10)))
    res = b.fadd(b.fadd(b.fsub(res, hfsq), f), b.fmul(dk, _f(6.93147180369123816490e-01)))
    res = b.select(b.fcmp_ordered("==", x, _f(0.0)), _f(float("-inf")), res)
    res = b.select(b.fcmp_ordered("<", x, _f(0.0)), _f(float("nan")), res)
    res = b.select(b.fcmp_ordered("==", x, _f(float("inf"))), x, res)
    return b.select(b.fcmp_unordered("uno", x, x), x, res)


def _emit_log1p(builder, u):
    """log(1 + u) corrected for the rounding of 1 + u (Goldberg; <= 1 ulp
    with a < 1 ulp log)."""
    b = builder
    y = b.fadd(_f(1.0), u)
    d = b.fsub(y, _f(1.0))
    ly = _emit_log(b, y)
    corr = b.fsub(ly, b.fdiv(b.fsub(d, u), y))
    res = b.select(b.fcmp_ordered("==", d, u), ly, corr)
    # log1p(-0.0) is -0.0
    return b.select(b.fcmp_ordered("==", u, _f(0.0)), u, res)


def _emit_sincos(builder, x, cosine):
    """fdlibm's sin/cos for |x| <= 1.6e6: __ieee754_rem_pio2's medium-size
    reduction with all three Cody & Waite steps done unconditionally (151
    bits of pi/2, no cancellation check needed), then __kernel_sin /
    __kernel_cos on the quadrant, selected without branches (< 1 ulp). Other
    arguments (larger, infinite, NaN) give garbage: a kernel using this
    reduces :func:`trig_range_flag` of its arguments and is rerun with libm
    when it is set (fuse._fast_trig). A libm call in the loop would keep it
    from being vectorised at all."""
    b = builder
    fn_ = b.fsub(b.fadd(b.fmul(x, _f(6.36619772367581382433e-01)), _f(_ROUND)), _f(_ROUND))
    n = b.sub(b.bitcast(b.fadd(fn_, _f(_ROUND)), _I64), _llvm.Constant(_I64, _ROUND_BITS))
    r = b.fsub(x, b.fmul(fn_, _f(1.57079632673412561417e+00)))
    t = r
    w = b.fmul(fn_, _f(6.07710050630396597660e-11))
    r = b.fsub(t, w)
    w = b.fsub(b.fmul(fn_, _f(2.02226624879595063154e-21)), b.fsub(b.fsub(t, r), w))
    t = r
    w2 = b.fmul(fn_, _f(2.02226624871116645580e-21))
    r = b.fsub(t, w2)
    w = b.fsub(b.fmul(fn_, _f(8.47842766036889956997e-32)), b.fsub(b.fsub(t, r), w2))
    # (the second step's tail w is superseded by the third step, as in fdlibm)
    y0 = b.fsub(r, w)
    y1 = b.fsub(b.fsub(r, y0), w)
    z = b.fmul(y0, y0)
    # __kernel_sin(y0, y1, 1)
    v = b.fmul(z, y0)
    rs = _horner(b, z, (1.58969099521155010221e-10, -2.50507602534068634195e-08,
                        2.75573137070700676789e-06, -1.98412698298579493134e-04,
                        8.33333333332248946124e-03))
    ks = b.fsub(y0, b.fsub(b.fsub(b.fmul(z, b.fsub(b.fmul(_f(0.5), y1), b.fmul(v, rs))), y1),
                           b.fmul(v, _f(-1.66666666666666324348e-01))))
    # __kernel_cos(y0, y1)
    w = b.fmul(z, z)
    rc = b.fadd(b.fmul(z, b.fadd(_f(4.16666666666666019037e-02), b.fmul(z, b.fadd(
        _f(-1.38888888888741095749e-03), b.fmul(z, _f(2.48015872894767294178e-05)))))),
        b.fmul(b.fmul(w, w), b.fadd(_f(-2.75573143513906633035e-07), b.fmul(z, b.fadd(
            _f(2.08757232129817482790e-09), b.fmul(z, _f(-1.13596475577881948265e-11)))))))
    hz = b.fmul(_f(0.5), z)
    w = b.fsub(_f(1.0), hz)
    kc = b.fadd(w, b.fadd(b.fsub(b.fsub(_f(1.0), w), hz),
                          b.fsub(b.fmul(z, rc), b.fmul(y0, y1))))
    q = b.and_(b.add(n, _llvm.Constant(_I64, 1 if cosine else 0)), _llvm.Constant(_I64, 3))
    odd = b.icmp_signed("==", b.and_(q, _llvm.Constant(_I64, 1)), _llvm.Constant(_I64, 1))
    neg = b.icmp_signed(">=", q, _llvm.Constant(_I64, 2))
    res = b.select(odd, kc, ks)
    res = b.select(neg, b.fneg(res), res)
    return res


def _unary_f64(emit):
    def typer(typingctx, x):
        if not isinstance(x, (types.Float, types.Integer, types.Boolean)):
            return None

        def codegen(context, builder, signature, args):
            v = context.cast(builder, args[0], signature.args[0], types.float64)
            return emit(builder, v)
        return types.float64(x), codegen
    return typer


exp = intrinsic(_unary_f64(_emit_exp))
exp.__doc__ = "float64 exp of a scalar, vectorisable (< 1 ulp)."
tanh = intrinsic(_unary_f64(_emit_tanh))
tanh.__doc__ = "float64 tanh of a scalar, vectorisable (<= 2 ulp)."
log = intrinsic(_unary_f64(_emit_log))
log.__doc__ = "float64 natural log of a scalar, vectorisable (< 1 ulp)."
sin = intrinsic(_unary_f64(lambda b, x: _emit_sincos(b, x, False)))
sin.__doc__ = "float64 sin for |x| <= 1.6e6 (< 1 ulp), vectorisable; garbage beyond."
cos = intrinsic(_unary_f64(lambda b, x: _emit_sincos(b, x, True)))
cos.__doc__ = "float64 cos for |x| <= 1.6e6 (< 1 ulp), vectorisable; garbage beyond."


def _emit_trig_flag(builder, x):
    b = builder
    bad = b.fcmp_unordered(">", b.call(_intrinsic_fn(b, "llvm.fabs"), [x]), _f(1.6e6))
    return b.select(bad, _f(1.0), _f(0.0))


trig_range_flag = intrinsic(_unary_f64(_emit_trig_flag))
trig_range_flag.__doc__ = "1.0 where :func:`sin`/:func:`cos` would be out of range, else 0.0."
log1p = intrinsic(_unary_f64(_emit_log1p))
log1p.__doc__ = "float64 log1p of a scalar, vectorisable (<= 1 ulp)."


@njit(**_opts)
def maximum(a, b):
    # np.maximum propagates NaN from either side
    if a != a:
        return a
    if b != b:
        return b
    return a if a >= b else b


@njit(**_opts)
def minimum(a, b):
    if a != a:
        return a
    if b != b:
        return b
    return a if a <= b else b


@njit(**_opts)
def fmax(a, b):
    # np.fmax ignores NaN unless both are NaN
    if b != b:
        return a
    if a != a:
        return b
    return a if a >= b else b


@njit(**_opts)
def fmin(a, b):
    if b != b:
        return a
    if a != a:
        return b
    return a if a <= b else b


@njit(**_opts)
def clip(x, lo, hi):
    # np.clip == minimum(maximum(x, lo), hi)
    return minimum(maximum(x, lo), hi)


@njit(**_opts)
def sign(x):
    if x > 0:
        return 1.0
    if x < 0:
        return -1.0
    if x == 0:
        return 0.0
    return x + 0.0  # NaN


@njit(**_opts)
def signbit(x):
    return math.copysign(1.0, x) < 0


@njit(**_opts)
def logaddexp(x, y):
    if x == y:
        return x + 0.6931471805599453
    d = x - y
    if d > 0:
        return x + math.log1p(math.exp(-d))
    if d <= 0:
        return y + math.log1p(math.exp(d))
    return d  # NaN


@njit(**_opts)
def exp2(x):
    return np.exp2(x)


@njit(**_opts)
def red_max(acc, v):
    # running np.max: NaN sticks
    if v > acc or v != v:
        return v
    return acc


@njit(**_opts)
def red_min(acc, v):
    if v < acc or v != v:
        return v
    return acc

