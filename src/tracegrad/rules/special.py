"""Derivative rules for ``scipy.special`` (registered only when SciPy imports).

Most of ``scipy.special`` are real NumPy ufuncs, so a call such as
``scipy.special.erf(x)`` on a traced array reaches ``__array_ufunc__`` and
works *unchanged* once the ufunc has a partial-derivative table here, exactly
like ``np.sin``. Partials are written with NumPy / ``scipy.special`` calls on
their (possibly traced) inputs, so they differentiate again for higher orders.

A few public names are Python functions rather than ufuncs, and NumPy cannot
dispatch them. Some already work unchanged because their bodies only call
dispatched NumPy functions or ufuncs:

* ``scipy.special.zeta(s, q)`` (calls the ``_zeta`` ufunc, registered below),
* ``scipy.special.softplus`` (``np.logaddexp(0, x)``).

Others convert their input with ``np.asarray`` (``polygamma``,
``multigammaln``, ``softmax``, ``log_softmax``, ``logsumexp``), which drops
the derivative or fails on a traced array. For those this module provides
drop-in replacements with the same signature, which call SciPy's own
implementation on plain inputs and record one primitive on traced ones::

    from tracegrad.rules.special import logsumexp, softmax, log_softmax, polygamma

So that *unchanged* code calling ``scipy.special.logsumexp`` (yours or a
library's) is differentiated, importing tracegrad calls :func:`install`, which
rebinds those names process-wide; plain calls still run SciPy's own code.
SciPy's own versions would silently drop the derivative on a traced array
(``np.asarray`` escapes; softmax gives a zero gradient, logsumexp a wrong one),
the worst failure tracegrad can have, so this is on by default.
:func:`uninstall` restores SciPy's functions.

Derivatives with respect to a parameter that has no closed form (the order
``v`` of Bessel functions, ``s`` of the Hurwitz zeta, ``a`` of the incomplete
gamma) raise :class:`~tracegrad.errors.UnsupportedOperation` when they are
actually needed, instead of being silently zero; pass such an argument as a
plain value or through ``tracegrad.stop_gradient``. Integer arguments (``n`` of
``polygamma`` / ``expn``) are not differentiable.
"""
import sys

import numpy as np

from .. import errors
from ..core.array import TracedArray, bind
from ..core.primitive import defelementwise, defprim
from .reductions import expand_to, norm_axes

try:
    import scipy.special as sp
    from scipy.special import _ufuncs as _spu
except ImportError:  # SciPy is optional: nothing is registered without it
    sp = _spu = None

# Python floats, so that float32 inputs keep float32 partials
SQRT_PI = float(np.sqrt(np.pi))
SQRT_2PI = float(np.sqrt(2.0 * np.pi))
TWO_OVER_SQRT_PI = 2.0 / SQRT_PI
SQRT_2 = float(np.sqrt(2.0))
LOG_PI = float(np.log(np.pi))


def _no_derivative(func, arg):
    """A partial that refuses: the derivative has no closed form here."""
    def partial(ans, *args):
        raise errors.UnsupportedOperation(
            f"scipy.special.{func}: the derivative with respect to {arg} is not implemented "
            f"(no closed form). If {arg} is a constant, pass it as a plain value or through "
            f"tracegrad.stop_gradient({arg}).")
    return partial


# --- partial derivatives ---------------------------------------------------------------
# erf family
def _erf(ans, x):
    return TWO_OVER_SQRT_PI * np.exp(-x * x)


def _erfc(ans, x):
    return -TWO_OVER_SQRT_PI * np.exp(-x * x)


def _erfi(ans, x):
    return TWO_OVER_SQRT_PI * np.exp(x * x)


def _erfcx(ans, x):
    # erfcx = exp(x²) erfc(x): d/dx = 2x erfcx(x) - 2/sqrt(pi)
    return 2 * x * ans - TWO_OVER_SQRT_PI


def _dawsn(ans, x):
    return 1 - 2 * x * ans


def _erfinv(ans, x):
    return (SQRT_PI / 2) * np.exp(ans * ans)


def _erfcinv(ans, x):
    return -(SQRT_PI / 2) * np.exp(ans * ans)


# normal distribution
def _ndtr(ans, x):
    return np.exp(-0.5 * x * x) / SQRT_2PI


def _log_ndtr(ans, x):
    # pdf / cdf = exp(-x²/2 - log_ndtr(x)) / sqrt(2 pi): stable far in the left tail
    return np.exp(-0.5 * x * x - ans) / SQRT_2PI


def _ndtri(ans, p):
    return SQRT_2PI * np.exp(0.5 * ans * ans)


def _ndtri_exp(ans, y):
    # ndtri_exp(y) = ndtri(exp(y))
    return SQRT_2PI * np.exp(0.5 * ans * ans + y)


# logistic
def _expit(ans, x):
    return ans * (1 - ans)


def _logit(ans, p):
    return 1 / (p * (1 - p))


def _log_expit(ans, x):
    return sp.expit(-x)


# gamma family
def _digamma(ans, x):
    # polygamma(1, x) = zeta(2, x)
    return _spu._zeta(2.0, x)


def _gammaln(ans, x):
    return sp.digamma(x)


def _gamma(ans, x):
    return ans * sp.digamma(x)


def _rgamma(ans, x):
    return -ans * sp.digamma(x)


def _beta_a(ans, a, b):
    return ans * (sp.digamma(a) - sp.digamma(a + b))


def _beta_b(ans, a, b):
    return ans * (sp.digamma(b) - sp.digamma(a + b))


def _betaln_a(ans, a, b):
    return sp.digamma(a) - sp.digamma(a + b)


def _betaln_b(ans, a, b):
    return sp.digamma(b) - sp.digamma(a + b)


def _gamma_density(a, x):
    # x^(a-1) e^(-x) / Gamma(a), the derivative of the regularised lower incomplete gamma
    return np.exp(sp.xlogy(a - 1, x) - x - sp.gammaln(a))


def _gammainc_x(ans, a, x):
    return _gamma_density(a, x)


def _gammaincc_x(ans, a, x):
    return -_gamma_density(a, x)


def _gammaincinv_y(ans, a, y):
    return 1 / _gamma_density(a, ans)


def _gammainccinv_y(ans, a, y):
    return -1 / _gamma_density(a, ans)


def _zeta_q(ans, s, q):
    # d/dq zeta(s, q) = -s zeta(s + 1, q)
    return -s * _spu._zeta(s + 1, q)


# x log y and information measures
def _xlogy_x(ans, x, y):
    return np.log(y)


def _xlogy_y(ans, x, y):
    # x / y, with the value 0 where x == 0 (xlogy(0, y) == 0 for every y)
    return x / np.where(x == 0, np.ones((), np.result_type(y)), y)


def _xlog1py_x(ans, x, y):
    return np.log1p(y)


def _xlog1py_y(ans, x, y):
    return x / np.where(x == 0, np.ones((), np.result_type(y)), 1 + y)


def _entr(ans, x):
    return -(1 + np.log(x))


def _rel_entr_x(ans, x, y):
    return np.log(x / y) + 1


def _rel_entr_y(ans, x, y):
    return -x / np.where(x == 0, np.ones((), np.result_type(y)), y)


def _kl_div_x(ans, x, y):
    return np.log(x / y)


def _kl_div_y(ans, x, y):
    return 1 - x / y


# exponential integrals
def _exp1(ans, x):
    return -np.exp(-x) / x


def _expi(ans, x):
    return np.exp(x) / x


def _expn_x(ans, n, x):
    # E_n' = -E_{n-1}. SciPy has no E_{n-1} for n - 1 < 0 (which the second
    # derivative of E_1 needs), so there use n E_{n+1} = e^-x - x E_n.
    pos = n >= 1
    below = -(np.exp(-x) - (n - 1) * ans) / x
    return np.where(pos, -sp.expn(np.where(pos, n - 1, 0), x), below)


# Bessel functions (derivatives with respect to x; the order is a parameter)
def _i0(ans, x):
    return sp.i1(x)


def _i0e(ans, x):
    return sp.i1e(x) - np.sign(x) * ans


def _i1(ans, x):
    # (I0 + I2) / 2; I2 from ive because scipy's iv(2, x) is nan for subnormal x
    return (sp.i0(x) + sp.ive(2.0, x) * np.exp(np.abs(x))) * 0.5


def _i1e(ans, x):
    return (sp.i0e(x) + sp.ive(2.0, x)) * 0.5 - np.sign(x) * ans


def _k0(ans, x):
    return -sp.k1(x)


def _k0e(ans, x):
    return ans - sp.k1e(x)


def _k1(ans, x):
    return -(sp.k0(x) + sp.kv(2.0, x)) * 0.5


def _k1e(ans, x):
    return ans - (sp.k0e(x) + sp.kve(2.0, x)) * 0.5


def _j0(ans, x):
    return -sp.j1(x)


def _j1(ans, x):
    return (sp.j0(x) - sp.jv(2.0, x)) * 0.5


def _y0(ans, x):
    return -sp.y1(x)


def _y1(ans, x):
    return (sp.y0(x) - sp.yv(2.0, x)) * 0.5


def _iv_x(ans, v, x):
    return (sp.iv(v - 1, x) + sp.iv(v + 1, x)) * 0.5


def _ive_x(ans, v, x):
    if np.iscomplexobj(x):
        # ive(v, z) = iv(v, z) * exp(-|Re z|) is not holomorphic: no single
        # partial gives both its JVP and its VJP (a silently wrong derivative
        # before); refuse rather than return one
        raise errors.UnsupportedOperation(
            "scipy.special.ive: the derivative for complex x is not implemented "
            "(exp(-|Re x|) is not holomorphic); use scipy.special.iv(v, x) * "
            "np.exp(-np.abs(np.real(x))) instead.")
    return (sp.ive(v - 1, x) + sp.ive(v + 1, x)) * 0.5 - np.sign(x) * ans


def _jv_x(ans, v, x):
    return (sp.jv(v - 1, x) - sp.jv(v + 1, x)) * 0.5


def _yv_x(ans, v, x):
    return (sp.yv(v - 1, x) - sp.yv(v + 1, x)) * 0.5


def _kv_x(ans, v, x):
    return -(sp.kv(v - 1, x) + sp.kv(v + 1, x)) * 0.5


def _kve_x(ans, v, x):
    return ans - (sp.kve(v - 1, x) + sp.kve(v + 1, x)) * 0.5


# losses and transforms
def _huber_delta(ans, d, r):
    return np.where(np.abs(r) <= d, np.zeros((), ans.dtype), np.abs(r) - d)


def _huber_r(ans, d, r):
    return np.where(np.abs(r) <= d, r, d * np.sign(r))


def _pseudo_huber_delta(ans, d, r):
    q = np.sqrt(1 + (r / d) ** 2)
    return 2 * ans / d - r * r / (d * q)


def _pseudo_huber_r(ans, d, r):
    return r / np.sqrt(1 + (r / d) ** 2)


def _owens_t_h(ans, h, a):
    return -np.exp(-0.5 * h * h) * sp.erf(a * h / SQRT_2) / (2 * SQRT_2PI)


def _owens_t_a(ans, h, a):
    s = 1 + a * a
    return np.exp(-0.5 * h * h * s) / ((2 * np.pi) * s)


def _boxcox_x(ans, x, lmbda):
    return np.power(x, lmbda - 1)


def _boxcox_lmbda(ans, x, lmbda):
    # d/dl (x^l - 1)/l = (l x^l log x - expm1(l log x)) / l²; where |l log x| is
    # small that difference cancels, so use its series
    # (log x)² (1/2 + u/3 + u²/8 + u³/30 + u⁴/144), u = l log x (exact at l == 0).
    lx = np.log(x)
    u = lmbda * lx
    small = np.abs(u) < 1e-3
    one = np.ones((), np.result_type(u))
    safe = np.where(small, one, lmbda)
    us = np.where(small, u, 0 * one)
    series = lx * lx * (0.5 + us * (1 / 3 + us * (1 / 8 + us * (1 / 30 + us / 144))))
    general = (np.power(x, safe) * lx - ans) / safe
    return np.where(small, series, general)


def _inv_boxcox_y(ans, y, lmbda):
    # (l y + 1)^(1/l - 1) = ans / (l y + 1); exp(y) at l == 0
    return ans / (lmbda * y + 1)


def _inv_boxcox_lmbda(ans, y, lmbda):
    # ans * (y / (l (1 + w)) - log1p(w) / l²), w = l y; for small |w| its series
    # ans y² (-1/2 + 2w/3 - 3w²/4 + 4w³/5 - 5w⁴/6) (exact at l == 0)
    w = lmbda * y
    small = np.abs(w) < 1e-3
    one = np.ones((), np.result_type(w))
    safe = np.where(small, one, lmbda)
    ws = np.where(small, w, 0 * one)
    series = y * y * (-0.5 + ws * (2 / 3 + ws * (-0.75 + ws * (0.8 - ws * (5 / 6)))))
    wg = safe * y
    general = y / (safe * (1 + wg)) - np.log1p(wg) / (safe * safe)
    return ans * np.where(small, series, general)


# misc elementary functions in scipy.special (distinct ufunc objects from NumPy's)
def _log1p(ans, x):
    return 1 / (1 + x)


def _expm1(ans, x):
    return ans + 1


def _cosm1(ans, x):
    return -np.sin(x)


def _table():
    """(public name, ufunc, partials, options): one line per rule."""
    S = {"singular": True}
    return [
        ("erf", sp.erf, (_erf,), {}),
        ("erfc", sp.erfc, (_erfc,), {}),
        ("erfi", sp.erfi, (_erfi,), {}),
        ("erfcx", sp.erfcx, (_erfcx,), {}),
        ("dawsn", sp.dawsn, (_dawsn,), {}),
        ("erfinv", sp.erfinv, (_erfinv,), S),
        ("erfcinv", sp.erfcinv, (_erfcinv,), S),
        ("ndtr", sp.ndtr, (_ndtr,), {}),
        ("log_ndtr", sp.log_ndtr, (_log_ndtr,), {}),
        ("ndtri", sp.ndtri, (_ndtri,), S),
        ("ndtri_exp", sp.ndtri_exp, (_ndtri_exp,), S),
        ("expit", sp.expit, (_expit,), {}),
        ("logit", sp.logit, (_logit,), S),
        ("log_expit", sp.log_expit, (_log_expit,), {}),
        ("gammaln", sp.gammaln, (_gammaln,), S),
        ("loggamma", sp.loggamma, (_gammaln,), S),
        ("gamma", sp.gamma, (_gamma,), S),
        ("rgamma", sp.rgamma, (_rgamma,), S),
        ("digamma", sp.digamma, (_digamma,), S),   # also scipy.special.psi
        ("beta", sp.beta, (_beta_a, _beta_b), S),
        ("betaln", sp.betaln, (_betaln_a, _betaln_b), S),
        ("gammainc", sp.gammainc, (_no_derivative("gammainc", "a"), _gammainc_x), S),
        ("gammaincc", sp.gammaincc, (_no_derivative("gammaincc", "a"), _gammaincc_x), S),
        ("gammaincinv", sp.gammaincinv,
         (_no_derivative("gammaincinv", "a"), _gammaincinv_y), S),
        ("gammainccinv", sp.gammainccinv,
         (_no_derivative("gammainccinv", "a"), _gammainccinv_y), S),
        ("zeta", _spu._zeta, (_no_derivative("zeta", "s"), _zeta_q), S),  # zeta(s, q)
        ("xlogy", sp.xlogy, (_xlogy_x, _xlogy_y), S),
        ("xlog1py", sp.xlog1py, (_xlog1py_x, _xlog1py_y), S),
        ("entr", sp.entr, (_entr,), S),
        ("rel_entr", sp.rel_entr, (_rel_entr_x, _rel_entr_y), S),
        ("kl_div", sp.kl_div, (_kl_div_x, _kl_div_y), S),
        ("exp1", sp.exp1, (_exp1,), S),
        ("expi", sp.expi, (_expi,), S),
        ("expn", sp.expn, (None, _expn_x), S),
        ("i0", sp.i0, (_i0,), {}),
        ("i0e", sp.i0e, (_i0e,), {}),
        ("i1", sp.i1, (_i1,), {}),
        ("i1e", sp.i1e, (_i1e,), {}),
        ("k0", sp.k0, (_k0,), S),
        ("k0e", sp.k0e, (_k0e,), S),
        ("k1", sp.k1, (_k1,), S),
        ("k1e", sp.k1e, (_k1e,), S),
        ("j0", sp.j0, (_j0,), {}),
        ("j1", sp.j1, (_j1,), {}),
        ("y0", sp.y0, (_y0,), S),
        ("y1", sp.y1, (_y1,), S),
        ("iv", sp.iv, (_no_derivative("iv", "v"), _iv_x), {}),
        ("ive", sp.ive, (_no_derivative("ive", "v"), _ive_x), {}),
        ("jv", sp.jv, (_no_derivative("jv", "v"), _jv_x), {}),
        ("yv", sp.yv, (_no_derivative("yv", "v"), _yv_x), S),
        ("kv", sp.kv, (_no_derivative("kv", "v"), _kv_x), S),
        ("kve", sp.kve, (_no_derivative("kve", "v"), _kve_x), S),
        ("huber", sp.huber, (_huber_delta, _huber_r), {}),
        ("pseudo_huber", sp.pseudo_huber, (_pseudo_huber_delta, _pseudo_huber_r), S),
        ("owens_t", sp.owens_t, (_owens_t_h, _owens_t_a), {}),
        ("boxcox", sp.boxcox, (_boxcox_x, _boxcox_lmbda), S),
        ("inv_boxcox", sp.inv_boxcox, (_inv_boxcox_y, _inv_boxcox_lmbda), S),
        ("log1p", sp.log1p, (_log1p,), S),
        ("expm1", sp.expm1, (_expm1,), {}),
        ("cosm1", sp.cosm1, (_cosm1,), {}),
    ]


#: public name -> registered ufunc (filled when SciPy is present)
UFUNCS = {}


# --- Python-level functions: polygamma, multigammaln ----------------------------------
def _polygamma_x(ans, n, x):
    return polygamma(n + 1, x)


def polygamma(n, x):
    """``scipy.special.polygamma`` that records a derivative on traced ``x``.

    ``n`` (an integer order) is not differentiable. On plain inputs this is
    SciPy's own function.

    Examples
    --------
    >>> import numpy as np, tracegrad as tg
    >>> from tracegrad.rules.special import polygamma
    >>> round(float(tg.grad(lambda x: polygamma(1, x))(2.0)), 6)   # polygamma(2, 2)
    -0.404114
    """
    if type(x) is not TracedArray and type(n) is not TracedArray:
        return _orig.polygamma(n, x)
    return bind(POLYGAMMA, (n, x), {})


def multigammaln(a, d):
    """``scipy.special.multigammaln(a, d)`` (log of the multivariate gamma
    function) that records a derivative on traced ``a``; ``d`` is an integer.

    Examples
    --------
    >>> import numpy as np, tracegrad as tg, scipy.special as sp
    >>> from tracegrad.rules.special import multigammaln
    >>> g = tg.grad(lambda a: multigammaln(a, 3))(4.0)
    >>> bool(np.isclose(g, sp.digamma(4.0) + sp.digamma(3.5) + sp.digamma(3.0)))
    True
    """
    if type(a) is not TracedArray:
        return _orig.multigammaln(a, d)
    d = int(d)
    if d < 1:
        raise ValueError("d should be a positive integer (dimension)")
    # a traced test: jit guards its one boolean (concretising a made it guard,
    # and retrace on, a's whole value)
    if bool(np.any(a <= 0.5 * (d - 1))):
        raise ValueError(f"condition a ({a}) > 0.5 * (d-1) ({0.5 * (d - 1)}) not met")
    res = sp.gammaln(a)
    for j in range(2, d + 1):
        res = res + sp.gammaln(a - (j - 1) / 2.0)
    return res + (d * (d - 1) * 0.25) * LOG_PI


# --- logsumexp, softmax, log_softmax --------------------------------------------------
def _scipy_axis(axes, ndim):
    return None if len(axes) == ndim else axes


def _kept(r, axes, keepdims, full_ndim):
    """A reduced value (no batch axes) reshaped to keep the reduced axes."""
    if keepdims or not axes:
        return r
    shape = list(np.shape(r))
    for a in sorted(full_ndim + a for a in axes):
        shape.insert(a, 1)
    return np.reshape(r, tuple(shape))


def _align(t, x, ndim):
    """A tangent ``t`` of operand ``x`` (plus leading batch axes) with unit
    axes inserted so it broadcasts against a ``ndim``-dimensional result."""
    nx = np.ndim(x)
    nb = t.ndim - nx
    missing = ndim - nx
    if missing <= 0 or nb == 0:
        return t
    return np.reshape(t, t.shape[:nb] + (1,) * missing + t.shape[nb:])


def _lse_impl(a, b, axis, keepdims):
    nd = np.ndim(a) if b is None else len(np.broadcast_shapes(np.shape(a), np.shape(b)))
    return _orig.logsumexp(a, axis=_scipy_axis(axis, nd), b=b, keepdims=keepdims)


def _lse_sign_impl(a, b, axis, keepdims):
    nd = np.ndim(a) if b is None else len(np.broadcast_shapes(np.shape(a), np.shape(b)))
    return _orig.logsumexp(a, axis=_scipy_axis(axis, nd), b=b, keepdims=keepdims,
                        return_sign=True)


def _full_shape(a, b):
    return np.shape(a) if b is None else np.broadcast_shapes(np.shape(a), np.shape(b))


def _reduced_shape(full, axes, keepdims):
    """NumPy's shape of a reduction. (SciPy's logsumexp returns (1,) instead
    of () for a 0-d input with keepdims=True; the rules work in NumPy's.)"""
    n = len(full)
    if keepdims:
        return tuple(1 if i - n in axes else s for i, s in enumerate(full))
    return tuple(s for i, s in enumerate(full) if i - n not in axes)


def _lse_parts(ans, a, b, axis, keepdims):
    """``sign * exp(a - lse)`` (the weights without ``b``) with the full shape."""
    if type(ans) is tuple:
        lse, sgn = ans
    else:
        lse, sgn = ans, None
    full = _full_shape(a, b)
    nd = len(full)
    red = _reduced_shape(full, axis, keepdims)
    lse = np.reshape(lse, red)
    lse = np.where(np.isfinite(lse), lse, np.zeros((), lse.dtype))
    e = np.exp(a - _kept(lse, axis, keepdims, nd))
    if sgn is not None:
        # lse = log|S|, sgn = S/|S|: d lse = Re(conj(sgn) dS / |S|) (sgn is a
        # phase for complex inputs, +-1 otherwise)
        e = e * _cj(_kept(np.reshape(sgn, red), axis, keepdims, nd))
    return e, full, red


def _lse_g(g, ans, full, axis, keepdims, red):
    """The output cotangent (batch axes first) broadcast over the full shape."""
    if type(g) is tuple:
        g, ans = g[0], ans[0]
    nb = g.ndim - ans.ndim
    g = np.reshape(g, g.shape[:nb] + red)
    return expand_to(g, axis, keepdims, full)


def _cj(x):
    """Complex weights pull back through their conjugate (cotangent
    ``g * conj(d out / d in)``, the convention of the elementwise rules)."""
    return np.conjugate(x) if np.iscomplexobj(x) else x


def _lse_vjp_a(g, ans, a, b, axis, keepdims):
    e, full, red = _lse_parts(ans, a, b, axis, keepdims)
    w = e if b is None else e * b
    return _lse_g(g, ans, full, axis, keepdims, red) * _cj(w)


def _lse_vjp_b(g, ans, a, b, axis, keepdims):
    e, full, red = _lse_parts(ans, a, b, axis, keepdims)
    return _lse_g(g, ans, full, axis, keepdims, red) * _cj(e)


def _lse_jvp(ts, ans, a, b, axis, keepdims):
    ta, tb = ts[0], ts[1] if len(ts) > 1 else None
    e, full, red = _lse_parts(ans, a, b, axis, keepdims)
    nd = len(full)
    out = None
    if ta is not None:
        w = e if b is None else e * b
        out = np.sum(_align(ta, a, nd) * w, axis=axis, keepdims=keepdims)
    if tb is not None:
        c = np.sum(_align(tb, b, nd) * e, axis=axis, keepdims=keepdims)
        out = c if out is None else out + c
    lse = ans[0] if type(ans) is tuple else ans
    out = np.reshape(out, out.shape[:out.ndim - len(red)] + lse.shape)
    if type(ans) is tuple:
        if np.iscomplexobj(out) and not np.iscomplexobj(lse):
            out = np.real(out)      # log|S| of complex terms: a real output
        return (out, None)
    return out


def _softmax_impl(x, axis):
    return _orig.softmax(x, axis=_scipy_axis(axis, np.ndim(x)))


def _log_softmax_impl(x, axis):
    return _orig.log_softmax(x, axis=_scipy_axis(axis, np.ndim(x)))


def _softmax_jvp(t, ans, x, axis):
    return ans * (t - np.sum(t * ans, axis=axis, keepdims=True))


def _softmax_vjp(g, ans, x, axis):
    # the adjoint of the JVP: for complex inputs through conj(ans)
    c = _cj(ans)
    return c * (g - np.sum(g * c, axis=axis, keepdims=True))


def _log_softmax_vjp(g, ans, x, axis):
    return g - _cj(np.exp(ans)) * np.sum(g, axis=axis, keepdims=True)


def _log_softmax_jvp(t, ans, x, axis):
    return t - np.sum(np.exp(ans) * t, axis=axis, keepdims=True)


def _traced(*xs):
    return any(type(x) is TracedArray for x in xs)


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    """``scipy.special.logsumexp`` that records a derivative on traced ``a`` and ``b``.

    Same signature and values as SciPy's (which runs on plain inputs); on
    traced inputs one primitive is recorded whose gradient is
    ``sign * b * exp(a - lse)``. With ``return_sign=True`` the sign output is
    not differentiable. SciPy's own ``logsumexp`` cannot be called on a traced
    array (it writes into its result in place).

    Examples
    --------
    >>> import numpy as np, tracegrad as tg
    >>> from tracegrad.rules.special import logsumexp
    >>> tg.grad(lambda x: logsumexp(x))(np.log(np.array([1.0, 3.0])))
    array([0.25, 0.75])
    """
    if not _traced(a, b):
        return _orig.logsumexp(a, axis=axis, b=b, keepdims=keepdims, return_sign=return_sign)
    axes = norm_axes(axis, len(_full_shape(a, b)))
    prim = LOGSUMEXP_SIGN if return_sign else LOGSUMEXP
    return bind(prim, (a, b), {"axis": axes, "keepdims": bool(keepdims)})


def softmax(x, axis=None):
    """``scipy.special.softmax`` that records a derivative on a traced ``x``.

    SciPy's own ``softmax`` converts its input with ``asarray``, which drops
    the derivative of a traced array; use this one in differentiated code.

    Examples
    --------
    >>> import numpy as np, tracegrad as tg
    >>> from tracegrad.rules.special import softmax
    >>> tg.jacobian(softmax)(np.zeros(2))
    array([[ 0.25, -0.25],
           [-0.25,  0.25]])
    """
    if type(x) is not TracedArray:
        return _orig.softmax(x, axis=axis)
    return bind(SOFTMAX, (x,), {"axis": norm_axes(axis, x.ndim)})


def log_softmax(x, axis=None):
    """``scipy.special.log_softmax`` that records a derivative on a traced ``x``.

    Examples
    --------
    >>> import numpy as np, tracegrad as tg
    >>> from tracegrad.rules.special import log_softmax
    >>> tg.grad(lambda x: log_softmax(x)[0])(np.zeros(2))
    array([ 0.5, -0.5])
    """
    if type(x) is not TracedArray:
        return _orig.log_softmax(x, axis=axis)
    return bind(LOG_SOFTMAX, (x,), {"axis": norm_axes(axis, x.ndim)})


#: scipy.special function (SciPy's own) -> the drop-in replacement defined here
REPLACEMENTS = {}
_PYTHON_LEVEL = ("polygamma", "multigammaln", "logsumexp", "softmax", "log_softmax")


class _orig:
    """SciPy's own Python-level functions, kept before :func:`install` can
    rebind the public names to the replacements."""


#: (module, attribute, SciPy's function) rebound by install()
_INSTALLED = []


def install():
    """Make unchanged calls of ``scipy.special.logsumexp``, ``softmax``,
    ``log_softmax``, ``polygamma`` and ``multigammaln`` differentiable.

    Rebinds every already-imported module attribute that is one of these SciPy
    functions (``scipy.special.logsumexp``, and names bound with ``from
    scipy.special import logsumexp``, including SciPy's own modules such as
    ``scipy.stats``) to the replacement defined here. The replacements call
    SciPy's function on plain inputs, so plain results do not change. Importing
    tracegrad calls it (a traced array given to SciPy's own functions silently
    loses its derivative); references held elsewhere (closures, defaults) are
    not affected. :func:`uninstall` undoes it; calling it again is harmless.

    Examples
    --------
    >>> import numpy as np, scipy.special, tracegrad as tg
    >>> tg.grad(lambda x: scipy.special.logsumexp(x))(np.zeros(2))
    array([0.5, 0.5])
    """
    if sp is None:
        raise ImportError("tracegrad.rules.special.install() needs SciPy")
    if _INSTALLED:
        return
    by_id = {id(f): (f, rep) for f, rep in REPLACEMENTS.items()}
    for mod in list(sys.modules.values()):
        d = getattr(mod, "__dict__", None)
        if not isinstance(d, dict):
            continue
        for k, v in list(d.items()):
            hit = by_id.get(id(v))
            if hit is not None and hit[0] is v:
                setattr(mod, k, hit[1])
                _INSTALLED.append((mod, k, v))


def uninstall():
    """Undo :func:`install`."""
    while _INSTALLED:
        mod, k, v = _INSTALLED.pop()
        if getattr(mod, k, None) is REPLACEMENTS.get(v):
            setattr(mod, k, v)

POLYGAMMA = LOGSUMEXP = LOGSUMEXP_SIGN = SOFTMAX = LOG_SOFTMAX = None


def _register():
    global POLYGAMMA, LOGSUMEXP, LOGSUMEXP_SIGN, SOFTMAX, LOG_SOFTMAX
    for name in _PYTHON_LEVEL:
        f = getattr(sp, name)
        # after a reload of this module, scipy.special holds the previous replacement
        f = getattr(f, "__tracegrad_scipy_original__", f)
        setattr(_orig, name, f)
        REPLACEMENTS[f] = globals()[name]
        globals()[name].__tracegrad_scipy_original__ = f
    for name, uf, parts, kw in _table():
        defelementwise(uf, *parts, name="scipy.special." + name, **kw)
        UFUNCS[name] = uf
    POLYGAMMA = defprim("scipy.special.polygamma", _orig.polygamma,
                        partials=(None, _polygamma_x), singular=True)
    LOGSUMEXP = defprim(
        "scipy.special.logsumexp", _lse_impl, vjp=(_lse_vjp_a, _lse_vjp_b), jvp=_lse_jvp)
    LOGSUMEXP_SIGN = defprim(
        "scipy.special.logsumexp_sign", _lse_sign_impl, vjp=(_lse_vjp_a, _lse_vjp_b),
        jvp=_lse_jvp, nout=2)
    SOFTMAX = defprim(
        "scipy.special.softmax", _softmax_impl, vjp=(_softmax_vjp,),
        jvp=(_softmax_jvp,), save_args=False)
    LOG_SOFTMAX = defprim(
        "scipy.special.log_softmax", _log_softmax_impl, vjp=(_log_softmax_vjp,),
        jvp=(_log_softmax_jvp,), save_args=False)


if sp is not None:
    _register()
    install()
