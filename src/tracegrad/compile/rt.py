"""Scalar helpers that generated kernels call where NumPy's semantics differ
from Python's (NaN propagation in maximum/minimum, sign of NaN, logaddexp).

They are small ``@njit`` functions; LLVM inlines them into the kernels.
Their source is part of every kernel's cache key (see :mod:`.cache`).
"""
import math

import numpy as np
from numba import njit

_opts = dict(cache=True, error_model="numpy")


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
    # Cody & Waite: a rational form near 0, exp beyond; <= 2 ulp, twice as
    # fast as libm's tanh here.
    a = abs(x)
    if a < 0.5493061443340549:  # ln(3) / 2
        g = x * x
        p = (-0.96437492777225469787 * g - 0.99225929672236083313e2) * g \
            - 0.16134119023996228053e4
        q = ((g + 0.11274474380534949335e3) * g + 0.22337720718962312926e4) * g \
            + 0.48402357071988688686e4
        return x + x * (g * p / q)
    if a > 22.0:
        return math.copysign(1.0, x)  # (and NaN stays NaN below)
    return math.copysign(1.0 - 2.0 / (math.exp(2.0 * a) + 1.0), x)


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
