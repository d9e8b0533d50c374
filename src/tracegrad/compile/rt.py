"""Scalar helpers that generated kernels call where NumPy's semantics differ
from Python's (NaN propagation in maximum/minimum, sign of NaN, logaddexp),
and float64 ``exp``/``tanh`` written without libm calls so that LLVM can
vectorise the loops that use them.

They are small ``@njit`` functions; LLVM inlines them into the kernels.
Their source is part of every kernel's cache key (see :mod:`.cache`).
"""
import math

import numpy as np
from llvmlite import ir as _llvm
from numba import njit, types
from numba.extending import intrinsic

_opts = dict(cache=True, error_model="numpy")


@intrinsic
def _bits_to_double(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], _llvm.DoubleType())
    return types.float64(types.int64), codegen


@intrinsic
def _double_to_bits(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], _llvm.IntType(64))
    return types.int64(types.float64), codegen


#: 1.5 * 2**52: adding it rounds a double of magnitude < 2**51 to an integer,
#: which then sits in the low bits of the sum's representation
_ROUND = 6755399441055744.0
_ROUND_BITS = 0x4338000000000000


@njit(**_opts)
def exp(x):
    # fdlibm's e_exp.c reduction and rational form (< 1 ulp), with every
    # step a vector instruction on AVX2: k = round(x / ln 2) by the _ROUND
    # trick instead of a float->int64 conversion (which AVX2 lacks), 2**k as
    # two exact power-of-two factors built from their bits (so results near
    # overflow and in the subnormal range are rounded once), and the
    # overflow/underflow/NaN cases as clamps and a select, not branches.
    # libm's exp is a call the loop vectoriser cannot cross: this runs 2x
    # faster as scalar code and more when the loop vectorises.
    xc = min(max(x, -745.2), 709.8)
    kd = xc * 1.44269504088896338700 + _ROUND
    kf = kd - _ROUND
    k = _double_to_bits(kd) - _ROUND_BITS
    hi = xc - kf * 6.93147180369123816490e-01
    lo = kf * 1.90821492927058770002e-10
    r = hi - lo
    t = r * r
    c = r - t * (1.66666666666666019037e-01 + t * (-2.77777777770155933842e-03 + t * (
        6.61375632143793436117e-05 + t * (-1.65339022054652515390e-06
                                          + t * 4.13813679705723846039e-08))))
    y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi)
    k1 = _double_to_bits(kf * 0.5 + _ROUND) - _ROUND_BITS
    res = y * _bits_to_double((k1 + 1023) << 52) * _bits_to_double((k - k1 + 1023) << 52)
    return res if x == x else x


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
def tanh(x):
    # Cody & Waite: a rational form below ln(3)/2, 1 - 2/(exp(2|x|) + 1)
    # above (<= 2 ulp). Both forms are computed and one selected, so the
    # loop stays branch-free and vectorises; |x| is capped at 22, where
    # tanh is 1 to double precision, and a NaN propagates through both.
    a = abs(x)
    g = x * x
    p = (-0.96437492777225469787 * g - 0.99225929672236083313e2) * g \
        - 0.16134119023996228053e4
    q = ((g + 0.11274474380534949335e3) * g + 0.22337720718962312926e4) * g \
        + 0.48402357071988688686e4
    near = x + x * (g * p / q)
    far = math.copysign(1.0 - 2.0 / (exp(2.0 * min(a, 22.0)) + 1.0), x)
    # at x = -0.0, near is -0.0 + (+0.0) = +0.0: return x itself there
    return (near if a != 0.0 else x) if a < 0.5493061443340549 else far


@njit(**_opts)
def log1p(u):
    # log(1 + u) corrected for the rounding of 1 + u (Goldberg); <= 1 ulp,
    # about twice as fast as libm's log1p here.
    y = 1.0 + u
    d = y - 1.0
    if d == u:
        return math.log(y)
    return math.log(y) - (d - u) / y


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


@njit(**_opts)
def calibration_loop(k, x, o):
    # the cost model times the vectorisable forms as kernels run them
    if k == 0:
        for i in range(x.size):
            o[i] = exp(x[i])
    else:
        for i in range(x.size):
            o[i] = tanh(x[i])
