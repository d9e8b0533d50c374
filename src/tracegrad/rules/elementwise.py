"""Every differentiable ufunc, as a table of partial derivatives.

``partials[i](ans, x, ...)`` is ∂out/∂arg_i; VJP (``g * conj(d)``) and JVP
(``t * d``) are both derived from it in ``core``. Partials are NumPy
expressions on the (possibly traced) inputs, so they differentiate again for
higher orders. ``singular=True`` marks partials that can be infinite where
the function is finite: there a zero (co)tangent contributes zero, never nan.
Non-differentiable ufuncs (comparisons, rounding, bit operations) are listed
in NONDIFF: their outputs carry no derivative.
"""
import numpy as np

from ..core.primitive import (UFUNC_PRIMS, defelementwise, defnondiff_ufunc, defprim,
                              defufunc_method)

LN2 = np.log(2.0)
LN10 = np.log(10.0)


def _zero(ans, *args):
    return np.zeros_like(ans)


def _pow_x(ans, x, y):
    # y * x**(y-1), written so that x == 0 with y >= 1 stays finite
    return y * np.power(x, y - 1)


def _pow_y(ans, x, y):
    # d/dy x**y = x**y log x; at x == 0 the executed value is 0 (for y > 0),
    # so use the limit 0 rather than 0 * -inf.
    safe = np.where(x == 0, np.ones((), np.result_type(x)), x)
    return np.where(x == 0, np.zeros((), ans.dtype), ans * np.log(safe))


def _sign_ish(ans, x):
    # d|x|/dx: sign(x), with the subgradient 0 at x == 0 (documented).
    return np.sign(x)


def _abs_complex_aware(ans, x):
    if np.iscomplexobj(x):
        # |z| is not holomorphic; z/|z| gives the real-loss convention
        # (cotangent g*z/|z|), 0 at z == 0.
        safe = np.where(ans == 0, np.ones((), ans.dtype), ans)
        return np.conjugate(np.where(ans == 0, np.zeros((), x.dtype), x / safe))
    return np.sign(x)


def _max_x(ans, x, y):
    # Ties split the derivative evenly between the arguments.
    return np.where(x > y, 1.0, np.where(x == y, 0.5, 0.0)).astype(np.result_type(x, y))


def _max_y(ans, x, y):
    return np.where(y > x, 1.0, np.where(x == y, 0.5, 0.0)).astype(np.result_type(x, y))


def _min_x(ans, x, y):
    return np.where(x < y, 1.0, np.where(x == y, 0.5, 0.0)).astype(np.result_type(x, y))


def _min_y(ans, x, y):
    return np.where(y < x, 1.0, np.where(x == y, 0.5, 0.0)).astype(np.result_type(x, y))


def _fmax_x(ans, x, y):
    # fmax ignores nan: the non-nan argument gets the derivative.
    pick = (x > y) | np.isnan(y)
    tie = x == y
    return np.where(pick, 1.0, np.where(tie, 0.5, 0.0)).astype(np.result_type(x, y))


def _fmax_y(ans, x, y):
    pick = (y > x) | np.isnan(x)
    tie = x == y
    return np.where(pick, 1.0, np.where(tie, 0.5, 0.0)).astype(np.result_type(x, y))


def _fmin_x(ans, x, y):
    pick = (x < y) | np.isnan(y)
    tie = x == y
    return np.where(pick, 1.0, np.where(tie, 0.5, 0.0)).astype(np.result_type(x, y))


def _fmin_y(ans, x, y):
    pick = (y < x) | np.isnan(x)
    tie = x == y
    return np.where(pick, 1.0, np.where(tie, 0.5, 0.0)).astype(np.result_type(x, y))


def _copysign_x(ans, x, y):
    # copysign(x, y) = |x| * sign-of(y): derivative sign(x)*sign-of(y), 0 at x == 0
    return np.sign(x) * np.where(np.signbit(y), -1.0, 1.0)


def _mod_y(ans, x, y):
    # x mod y = x - y*floor(x/y)
    return -np.floor_divide(x, y)


def _fmod_y(ans, x, y):
    # fmod(x, y) = x - y*trunc(x/y)
    return -np.trunc(np.true_divide(x, y))


def _ldexp_x(ans, x, n):
    return np.ldexp(np.ones_like(x), n)


def _logaddexp_x(ans, x, y):
    return np.exp(x - ans)


def _logaddexp_y(ans, x, y):
    return np.exp(y - ans)


def _logaddexp2_x(ans, x, y):
    return np.exp2(x - ans)


def _logaddexp2_y(ans, x, y):
    return np.exp2(y - ans)


# ufunc: partial for each input. One line per rule.
TABLE = [
    (np.add, (1, 1), {}),
    (np.subtract, (1, -1), {}),
    (np.multiply, (lambda ans, x, y: y, lambda ans, x, y: x), {}),
    (np.divide, (lambda ans, x, y: 1 / y, lambda ans, x, y: -ans / y), {"singular": True}),
    (np.power, (_pow_x, _pow_y), {"singular": True}),
    (np.float_power, (lambda ans, x, y: y * np.float_power(x, y - 1), _pow_y), {"singular": True}),
    (np.negative, (-1,), {}),
    (np.positive, (1,), {}),
    (np.reciprocal, (lambda ans, x: -ans * ans,), {"singular": True}),
    (np.square, (lambda ans, x: 2 * x,), {}),
    (np.sqrt, (lambda ans, x: 0.5 / ans,), {"singular": True}),
    (np.cbrt, (lambda ans, x: 1 / (3 * ans * ans),), {"singular": True}),
    (np.absolute, (_abs_complex_aware,), {}),
    (np.fabs, (_sign_ish,), {}),
    (np.exp, (lambda ans, x: ans,), {}),
    (np.exp2, (lambda ans, x: ans * LN2,), {}),
    (np.expm1, (lambda ans, x: ans + 1,), {}),
    (np.log, (lambda ans, x: 1 / x,), {"singular": True}),
    (np.log2, (lambda ans, x: 1 / (x * LN2),), {"singular": True}),
    (np.log10, (lambda ans, x: 1 / (x * LN10),), {"singular": True}),
    (np.log1p, (lambda ans, x: 1 / (1 + x),), {"singular": True}),
    (np.logaddexp, (_logaddexp_x, _logaddexp_y), {}),
    (np.logaddexp2, (_logaddexp2_x, _logaddexp2_y), {}),
    (np.sin, (lambda ans, x: np.cos(x),), {}),
    (np.cos, (lambda ans, x: -np.sin(x),), {}),
    (np.tan, (lambda ans, x: 1 + ans * ans,), {}),
    (np.arcsin, (lambda ans, x: 1 / np.sqrt(1 - x * x),), {"singular": True}),
    (np.arccos, (lambda ans, x: -1 / np.sqrt(1 - x * x),), {"singular": True}),
    (np.arctan, (lambda ans, x: 1 / (1 + x * x),), {}),
    (np.sinh, (lambda ans, x: np.cosh(x),), {}),
    (np.cosh, (lambda ans, x: np.sinh(x),), {}),
    (np.tanh, (lambda ans, x: 1 - ans * ans,), {}),
    (np.arcsinh, (lambda ans, x: 1 / np.sqrt(x * x + 1),), {}),
    (np.arccosh, (lambda ans, x: 1 / np.sqrt(x * x - 1),), {"singular": True}),
    (np.arctanh, (lambda ans, x: 1 / (1 - x * x),), {"singular": True}),
    (np.arctan2, (lambda ans, y, x: x / (x * x + y * y),
                  lambda ans, y, x: -y / (x * x + y * y)), {"singular": True}),
    (np.hypot, (lambda ans, x, y: x / ans, lambda ans, x, y: y / ans), {"singular": True}),
    (np.deg2rad, (np.pi / 180,), {}),
    (np.rad2deg, (180 / np.pi,), {}),
    (np.maximum, (_max_x, _max_y), {}),
    (np.minimum, (_min_x, _min_y), {}),
    (np.fmax, (_fmax_x, _fmax_y), {}),
    (np.fmin, (_fmin_x, _fmin_y), {}),
    (np.copysign, (_copysign_x, None), {}),
    (np.ldexp, (_ldexp_x, None), {}),
    (np.remainder, (1, _mod_y), {}),
    (np.fmod, (1, _fmod_y), {}),
]

for _uf, _parts, _kw in TABLE:
    defelementwise(_uf, *_parts, **_kw)

# conj is linear but not holomorphic, so it is not a partial-derivative
# rule: its cotangent is the conjugate of the incoming one.
UFUNC_PRIMS[np.conjugate] = defprim(
    "conjugate", np.conjugate,
    vjp=(lambda g, ans, x: np.conjugate(g),),
    jvp=(lambda t, ans, x: np.conjugate(t),),
    save_args=False, save_ans=False)

# np.mod is np.remainder and np.true_divide is np.divide (same ufunc objects),
# but np.radians / np.degrees are ufuncs of their own that compute exactly
# what deg2rad / rad2deg compute: route them to the same primitives.
UFUNC_PRIMS[np.radians] = UFUNC_PRIMS[np.deg2rad]
UFUNC_PRIMS[np.degrees] = UFUNC_PRIMS[np.rad2deg]

NONDIFF = [
    np.floor_divide, np.sign, np.floor, np.ceil, np.trunc, np.rint, np.heaviside, np.signbit,
    np.greater, np.greater_equal, np.less, np.less_equal, np.equal, np.not_equal,
    np.logical_and, np.logical_or, np.logical_xor, np.logical_not,
    np.isfinite, np.isinf, np.isnan, np.isnat, np.spacing, np.nextafter,
    np.bitwise_and, np.bitwise_or, np.bitwise_xor, np.invert, np.left_shift, np.right_shift,
    np.gcd, np.lcm,
]
for _uf in NONDIFF:
    defnondiff_ufunc(_uf)


@defufunc_method(np.divmod, "__call__")
def _divmod(x, y, **kwargs):
    """``(x // y, x % y)``: np.floor_divide and np.remainder, whose rules apply
    (the quotient is piecewise constant; the remainder's derivative is that of
    x - floor(x / y) * y)."""
    return np.floor_divide(x, y, **kwargs), np.remainder(x, y, **kwargs)


def _outer_handler(uf):
    def outer(a, b, **kwargs):
        """``ufunc.outer(a, b)`` is ``ufunc`` of ``a`` with ``b.ndim`` trailing
        unit axes against ``b``: the result has shape ``a.shape + b.shape``, and
        the derivative is the ufunc's own (its broadcasting is undone as usual)."""
        a = a if isinstance(a, np.ndarray) else np.asarray(a)
        b = b if isinstance(b, np.ndarray) else np.asarray(b)
        return uf(np.reshape(a, a.shape + (1,) * b.ndim), b, **kwargs)
    return outer


# np.subtract.outer(x, x) (pairwise differences, distance matrices, kernels)
# and the other binary ufuncs' outer products
for _uf in list(UFUNC_PRIMS) + [np.divmod]:
    if isinstance(_uf, np.ufunc) and _uf.nin == 2 and _uf.signature is None:
        defufunc_method(_uf, "outer")(_outer_handler(_uf))
