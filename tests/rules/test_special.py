"""scipy.special rules (tracegrad.rules.special): every registered ufunc against
finite differences, forward against reverse, second derivatives against
finite differences of the gradient and against closed forms; the drop-in
replacements for SciPy's Python-level functions; and that tracegrad imports
without SciPy.

The generic registry checks of test_registry.py also run here on the cases of
cases_special.py, unless cases.py imports cases_special itself (then
test_registry.py runs them and they are not repeated here).
"""
import subprocess
import sys

import numpy as np
import pytest

import tracegrad as tg

import cases  # noqa: F401  (the shared case tables)
HOOKED = "cases_special" in sys.modules     # cases.py registers them itself
import cases_special  # noqa: E402,F401  (registers the cases in any case)
import test_registry as registry  # noqa: E402

sp = pytest.importorskip("scipy.special")
from tracegrad.rules import special  # noqa: E402
from tracegrad.rules.special import (UFUNCS, log_softmax, logsumexp, multigammaln,  # noqa: E402
                                     polygamma, softmax)

#: fractions of a domain used as sample points (never the midpoint: |x| kinks at 0)
FR = np.array([0.03, 0.26, 0.52, 0.74, 0.97])


class Fixed:
    """A parameter that is not differentiated (a Bessel order, zeta's s, ...)."""

    def __init__(self, *values):
        self.values = np.resize(np.array(values, float), FR.size)


# name -> per-argument domain (lo, hi) or Fixed(...)
SPECS = {
    "erf": [(-2, 2)], "erfc": [(-2, 2)], "erfi": [(-1.5, 1.5)], "erfcx": [(-1.5, 2)],
    "dawsn": [(-2, 2)], "erfinv": [(-0.9, 0.9)], "erfcinv": [(0.1, 1.9)],
    "ndtr": [(-3, 3)], "log_ndtr": [(-8, 3)], "ndtri": [(0.05, 0.95)],
    "ndtri_exp": [(-3, -0.1)], "expit": [(-4, 4)], "logit": [(0.05, 0.95)],
    "log_expit": [(-4, 4)], "gammaln": [(0.3, 4)], "loggamma": [(0.3, 4)],
    "gamma": [(0.3, 3)], "rgamma": [(0.3, 3)], "digamma": [(0.3, 4)],
    "beta": [(0.5, 3), (0.5, 3)], "betaln": [(0.5, 3), (0.5, 3)],
    "gammainc": [Fixed(0.5, 1.0, 2.5), (0.2, 3)], "gammaincc": [Fixed(0.5, 1.0, 2.5), (0.2, 3)],
    "gammaincinv": [Fixed(0.5, 1.0, 2.5), (0.1, 0.9)],
    "gammainccinv": [Fixed(0.5, 1.0, 2.5), (0.1, 0.9)],
    "zeta": [Fixed(2.0, 3.5), (0.5, 3)],
    "xlogy": [(-2, 2), (0.2, 3)], "xlog1py": [(-2, 2), (-0.5, 2)], "entr": [(0.1, 3)],
    "rel_entr": [(0.1, 3), (0.1, 3)], "kl_div": [(0.1, 3), (0.1, 3)],
    "exp1": [(0.2, 3)], "expi": [(0.2, 3)], "expn": [Fixed(1, 2, 3), (0.2, 3)],
    "i0": [(-3, 3)], "i0e": [(-3, 3)], "i1": [(-3, 3)], "i1e": [(-3, 3)],
    "k0": [(0.2, 3)], "k0e": [(0.2, 3)], "k1": [(0.2, 3)], "k1e": [(0.2, 3)],
    "j0": [(-5, 5)], "j1": [(-5, 5)], "y0": [(0.3, 5)], "y1": [(0.3, 5)],
    "iv": [Fixed(0, 0.5, 2.5), (0.2, 3)], "ive": [Fixed(0, 0.5, 2.5), (0.2, 3)],
    "jv": [Fixed(0, 0.5, 2.5), (0.2, 4)], "yv": [Fixed(0, 0.5, 2.5), (0.5, 4)],
    "kv": [Fixed(0, 0.5, 2.5), (0.2, 3)], "kve": [Fixed(0, 0.5, 2.5), (0.2, 3)],
    "huber": [(0.9, 1.1), (-2.75, 2.75)], "pseudo_huber": [(0.5, 2), (-2, 2)],
    "owens_t": [(-2, 2), (-2, 2)], "boxcox": [(0.3, 3), (-1, 2)],
    "inv_boxcox": [(-0.4, 1), (-0.5, 1.5)],
    "log1p": [(-0.8, 2)], "expm1": [(-2, 2)], "cosm1": [(-3, 3)],
}


def test_every_registered_ufunc_has_a_spec():
    assert set(UFUNCS) == set(SPECS)
    assert len(UFUNCS) >= 50


def _args(name):
    out = []
    for k, dom in enumerate(SPECS[name]):
        if isinstance(dom, Fixed):
            out.append(dom.values)
        else:
            lo, hi = dom
            fr = FR if k % 2 == 0 else FR[::-1]   # pair different points
            out.append(lo + (hi - lo) * fr)
    return out


def _diff_positions(name):
    return [k for k, dom in enumerate(SPECS[name]) if not isinstance(dom, Fixed)]


def _fd(f, x, eps=1e-6):
    h = eps * np.maximum(1.0, np.abs(x))
    return (f(x + h) - f(x - h)) / (2 * h)


def _fun(name, args, k):
    """Elementwise function of argument k, the others fixed."""
    uf = UFUNCS[name]

    def f(x):
        a = list(args)
        a[k] = x
        return uf(*a)
    return f


CASES = [(n, k) for n in sorted(SPECS) for k in _diff_positions(n)]


@pytest.mark.parametrize("name, k", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_first_and_second_derivatives(name, k):
    args = _args(name)
    f = _fun(name, args, k)
    x = args[k]
    # reverse mode against central differences (elementwise: grad of the sum)
    g = tg.grad(lambda x: np.sum(f(x)))(x)
    np.testing.assert_allclose(g, _fd(f, x), rtol=2e-6, atol=1e-8)
    # forward against reverse: J is diagonal, so the jvp with ones is the gradient
    out, t = tg.jvp(f, (x,), (np.ones_like(x),))
    np.testing.assert_allclose(out, f(x), rtol=1e-15)
    np.testing.assert_allclose(t, g, rtol=1e-13, atol=1e-15)
    u = np.linspace(-1, 1, x.size)
    w = np.cos(np.arange(x.size))
    _, pull = tg.vjp(f, x)
    assert np.isclose(np.dot(w, tg.jvp(f, (x,), (u,))[1]), np.dot(pull(w)[0], u), rtol=1e-13)
    # second order: the Hessian of the sum is diagonal, and equals finite
    # differences of the gradient; every composition agrees
    s = lambda x: np.sum(f(x))  # noqa: E731
    H = tg.hessian(s)(x)
    np.testing.assert_allclose(H, np.diag(np.diag(H)), atol=1e-12 * (1 + np.abs(H).max()))
    gs = tg.grad(s)
    np.testing.assert_allclose(np.diag(H), _fd(lambda y: gs(y), x, 1e-5), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(tg.jacfwd(tg.jacfwd(s))(x), H, rtol=1e-12, atol=1e-13)
    if np.any(H):   # (xlogy is linear in x: its gradient is a constant there)
        np.testing.assert_allclose(tg.jacrev(tg.jacrev(s))(x), H, rtol=1e-12, atol=1e-13)


def _second(name, x, *params):
    uf = UFUNCS[name]
    return np.diag(tg.hessian(lambda x: np.sum(uf(*params, x)))(x))


def test_second_derivatives_closed_forms():
    x = np.array([-1.3, -0.2, 0.4, 1.7])
    phi = np.exp(-x * x / 2) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(_second("erf", x), -4 * x / np.sqrt(np.pi) * np.exp(-x * x))
    np.testing.assert_allclose(_second("erfc", x), 4 * x / np.sqrt(np.pi) * np.exp(-x * x))
    np.testing.assert_allclose(_second("ndtr", x), -x * phi)
    s = sp.expit(x)
    np.testing.assert_allclose(_second("expit", x), s * (1 - s) * (1 - 2 * s))
    np.testing.assert_allclose(_second("i0", x), sp.i0(x) - sp.i1(x) / x)
    np.testing.assert_allclose(_second("j0", x), -(sp.j0(x) - sp.j1(x) / x))
    p = np.array([0.1, 0.4, 0.8])
    y = sp.erfinv(p)
    dy = np.sqrt(np.pi) / 2 * np.exp(y * y)
    np.testing.assert_allclose(_second("erfinv", p), 2 * y * dy * dy)
    z = np.array([0.4, 1.0, 2.5, 6.0])
    np.testing.assert_allclose(_second("gammaln", z), sp.polygamma(1, z))
    np.testing.assert_allclose(_second("digamma", z), sp.polygamma(2, z))
    np.testing.assert_allclose(_second("gamma", z),
                               sp.gamma(z) * (sp.digamma(z) ** 2 + sp.polygamma(1, z)))
    np.testing.assert_allclose(_second("zeta", z, 2.0), 6 * sp.zeta(4.0, z))
    np.testing.assert_allclose(_second("entr", z), -1 / z)
    np.testing.assert_allclose(_second("k0", z), sp.k0(z) + sp.k1(z) / z)
    # third derivative of gammaln: polygamma(2)
    g3 = tg.grad(tg.grad(tg.grad(lambda t: sp.gammaln(t))))(1.7)
    assert np.isclose(g3, sp.polygamma(2, 1.7), rtol=1e-12)


def test_psi_is_digamma_and_public_zeta_works_unchanged():
    x = np.array([0.5, 1.5, 4.0])
    np.testing.assert_allclose(tg.grad(lambda x: np.sum(sp.psi(x)))(x), sp.polygamma(1, x))
    # scipy.special.zeta is a Python function calling the _zeta ufunc
    np.testing.assert_allclose(tg.grad(lambda q: np.sum(sp.zeta(3.0, q)))(x),
                               -3 * sp.zeta(4.0, x))
    # softplus is np.logaddexp(0, x): works unchanged too
    if hasattr(sp, "softplus"):
        np.testing.assert_allclose(tg.grad(lambda x: np.sum(sp.softplus(x)))(x), sp.expit(x))


def test_complex_holomorphic_derivatives():
    z = np.array([0.3 + 0.4j, -0.5 + 0.2j, 1.1 - 0.7j])
    one = np.ones(3, complex)
    np.testing.assert_allclose(tg.jvp(sp.erf, (z,), (one,))[1],
                               2 / np.sqrt(np.pi) * np.exp(-z * z))
    zr = z + 1.0
    np.testing.assert_allclose(tg.jvp(sp.loggamma, (zr,), (one,))[1], sp.digamma(zr))
    np.testing.assert_allclose(tg.jvp(sp.gamma, (zr,), (one,))[1], sp.gamma(zr) * sp.digamma(zr))
    # reverse mode uses the conjugate partial (real-loss convention)
    g = tg.grad(lambda z: np.sum(np.real(sp.erf(z))))(z)
    np.testing.assert_allclose(g, np.conj(2 / np.sqrt(np.pi) * np.exp(-z * z)))


def test_float32_stays_float32():
    x = np.array([0.2, 0.7], np.float32)
    for f in (sp.erf, sp.expit, sp.gammaln, sp.ndtr):
        g = tg.grad(lambda x: np.sum(f(x)))(x)
        assert g.dtype == np.float32


def test_parameters_without_a_derivative_refuse_to_differentiate():
    x = np.array([0.5, 1.5])
    with pytest.raises(tg.UnsupportedOperation, match="with respect to v"):
        tg.grad(lambda v: np.sum(sp.iv(v, x)))(np.array([1.0, 2.0]))
    with pytest.raises(tg.UnsupportedOperation, match="with respect to a"):
        tg.grad(lambda a: np.sum(sp.gammainc(a, x)))(np.array([1.0, 2.0]))
    with pytest.raises(tg.UnsupportedOperation, match="with respect to s"):
        tg.jvp(lambda s: sp.zeta(s, 2.0), (3.0,), (1.0,))
    # stop_gradient says "treat as a constant"
    g = tg.grad(lambda v: np.sum(sp.iv(tg.stop_gradient(v), x) * v))(np.array([1.0, 2.0]))
    np.testing.assert_allclose(g, sp.iv([1.0, 2.0], x))
    # an integer order is simply not differentiable (no error, no derivative)
    np.testing.assert_allclose(tg.grad(lambda x: np.sum(sp.expn(2, x)))(x), -sp.expn(1, x))


def test_boxcox_near_and_at_zero_lambda():
    x, y = 1.7, 0.6
    for lam in (0.0, 1e-300, 1e-5, 1e-3, 0.5, -0.7):
        g = tg.grad(lambda l: sp.boxcox(x, l))(lam)
        e = 1e-5
        fd = (sp.boxcox(x, lam + e) - sp.boxcox(x, lam - e)) / (2 * e)
        assert np.isclose(g, fd, rtol=1e-8), lam
        g = tg.grad(lambda l: sp.inv_boxcox(y, l))(lam)
        fd = (sp.inv_boxcox(y, lam + e) - sp.inv_boxcox(y, lam - e)) / (2 * e)
        assert np.isclose(g, fd, rtol=1e-8), lam
    assert np.isclose(tg.grad(lambda l: sp.boxcox(x, l))(0.0), np.log(x) ** 2 / 2, rtol=1e-15)
    assert np.isclose(tg.grad(tg.grad(lambda l: sp.boxcox(x, l)))(0.0), np.log(x) ** 3 / 3,
                      rtol=1e-12)


def test_xlogy_at_zero():
    # xlogy(0, y) == 0 for every y: the derivative in y is 0 there, not nan
    g = tg.grad(lambda y: np.sum(sp.xlogy(np.array([0.0, 2.0]), y)))(np.array([0.0, 3.0]))
    np.testing.assert_array_equal(g, [0.0, 2.0 / 3.0])


# --- Python-level scipy.special functions --------------------------------------------------
A = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]])


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 1)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp_matches_scipy_and_softmax(axis, keepdims):
    f = lambda a: logsumexp(a, axis=axis, keepdims=keepdims)  # noqa: E731
    np.testing.assert_array_equal(f(A), sp.logsumexp(A, axis=axis, keepdims=keepdims))
    out, pull = tg.vjp(f, A)
    np.testing.assert_allclose(out, sp.logsumexp(A, axis=axis, keepdims=keepdims))
    g = pull(np.ones_like(out))[0]
    np.testing.assert_allclose(g, sp.softmax(A, axis=axis))
    Jf = tg.jacfwd(f)(A)
    Jr = tg.jacrev(f)(A)
    np.testing.assert_allclose(Jf, Jr, atol=1e-15)


def test_logsumexp_with_b_and_sign():
    b = np.array([1.0, 2.0, 0.5])
    ga, gb = tg.grad(lambda a, b: logsumexp(a, b=b), argnums=(0, 1))(A[0], b)
    w = b * np.exp(A[0])
    np.testing.assert_allclose(ga, w / w.sum())
    np.testing.assert_allclose(gb, np.exp(A[0]) / w.sum())
    # negative weights with return_sign: d log|s| = b e^a / s
    bn = np.array([1.0, -2.0, 0.5])
    r, sgn = logsumexp(A[0], b=bn, return_sign=True)
    assert sgn == np.sign(np.sum(bn * np.exp(A[0])))
    s = np.sum(bn * np.exp(A[0]))
    ga = tg.grad(lambda a: logsumexp(a, b=bn, return_sign=True)[0])(A[0])
    np.testing.assert_allclose(ga, bn * np.exp(A[0]) / s)
    J = tg.jacfwd(lambda a: logsumexp(a, b=bn, return_sign=True))(A[0])
    np.testing.assert_allclose(J[0], ga)
    np.testing.assert_array_equal(J[1], 0)
    # -inf entries get zero weight
    x = np.array([-np.inf, 0.0, 1.0])
    np.testing.assert_allclose(tg.grad(logsumexp)(x), sp.softmax(x))


def test_logsumexp_of_a_scalar_with_keepdims():
    # SciPy returns shape (1,) here (NumPy's keepdims would give ()); the rules follow
    r = logsumexp(np.array(0.5), keepdims=True, return_sign=True)
    assert np.shape(r[0]) == np.shape(sp.logsumexp(0.5, keepdims=True, return_sign=True)[0])
    assert tg.grad(lambda a: np.sum(logsumexp(a, keepdims=True)))(0.5) == 1.0
    assert abs(tg.hessian(lambda a: np.sum(logsumexp(a, b=2.0, keepdims=True)))(0.5)) < 1e-15
    _, t = tg.jvp(lambda a: logsumexp(a, keepdims=True), (np.array(0.5),), (np.array(2.0),))
    np.testing.assert_allclose(t, [2.0])


def test_logsumexp_hessian():
    s = sp.softmax(A[1])
    H = tg.hessian(logsumexp)(A[1])
    np.testing.assert_allclose(H, np.diag(s) - np.outer(s, s), atol=1e-15)
    H2 = tg.jacrev(tg.jacrev(logsumexp))(A[1])
    np.testing.assert_allclose(H2, H, atol=1e-15)


@pytest.mark.parametrize("axis", [None, 0, -1])
def test_softmax_and_log_softmax(axis):
    y = sp.softmax(A, axis=axis)
    np.testing.assert_array_equal(softmax(A, axis=axis), y)
    J = tg.jacobian(lambda a: softmax(a, axis=axis))(A)
    # dy_i/da_j = y_i (delta_ij - y_j) within each softmax group
    n = A.size
    Jf = J.reshape(n, n)
    yf = y.ravel()
    group = np.broadcast_to(np.arange(A.size).reshape(A.shape) * 0 if axis is None else
                            (np.arange(A.shape[0])[:, None] if axis in (1, -1)
                             else np.arange(A.shape[1])[None, :]), A.shape).ravel()
    same = group[:, None] == group[None, :]
    np.testing.assert_allclose(Jf, np.where(same, np.diag(yf) - np.outer(yf, yf), 0),
                               atol=1e-15)
    np.testing.assert_allclose(tg.jacfwd(lambda a: softmax(a, axis=axis))(A), J, atol=1e-15)
    Jl = tg.jacobian(lambda a: log_softmax(a, axis=axis))(A).reshape(n, n)
    np.testing.assert_allclose(Jl, np.where(same, np.eye(n) - yf[None, :], 0), atol=1e-15)
    H = tg.hessian(lambda a: log_softmax(a, axis=axis)[0, 0])(A)
    Hr = tg.jacrev(tg.jacrev(lambda a: log_softmax(a, axis=axis)[0, 0]))(A)
    np.testing.assert_allclose(H, Hr, atol=1e-15)


def test_polygamma_and_multigammaln():
    x = np.array([0.5, 1.5, 4.0])
    for n in (0, 1, 2):
        np.testing.assert_allclose(polygamma(n, x), sp.polygamma(n, x))
        np.testing.assert_allclose(tg.grad(lambda x: np.sum(polygamma(n, x)))(x),
                                   sp.polygamma(n + 1, x))
        np.testing.assert_allclose(np.diag(tg.hessian(lambda x: np.sum(polygamma(n, x)))(x)),
                                   sp.polygamma(n + 2, x))
    n = np.array([0, 1, 2])
    np.testing.assert_allclose(tg.jacfwd(lambda x: polygamma(n, x))(x),
                               np.diag(sp.polygamma(n + 1, x)))
    a = np.array([2.0, 3.5])
    np.testing.assert_allclose(multigammaln(a, 3), sp.multigammaln(a, 3))
    g = tg.grad(lambda a: np.sum(multigammaln(a, 3)))(a)
    np.testing.assert_allclose(g, sp.digamma(a) + sp.digamma(a - 0.5) + sp.digamma(a - 1))
    with pytest.raises(ValueError):
        tg.grad(lambda a: np.sum(multigammaln(a, 3)))(np.array([0.5, 3.0]))


def test_install_makes_unchanged_scipy_calls_differentiable():
    x = np.array([0.5, -1.0, 2.0])
    # importing tracegrad installs the replacements: SciPy's own softmax converts with
    # asarray and would silently drop the derivative
    assert sp.logsumexp is logsumexp and sp.softmax is softmax
    original = special._orig.logsumexp
    special.uninstall()
    try:
        assert sp.logsumexp is original
        assert not np.any(tg.grad(lambda x: np.sum(sp.softmax(x) ** 2))(x))
    finally:
        special.install()
    special.install()                      # a second call changes nothing
    assert sp.logsumexp is logsumexp
    from scipy.special import log_softmax as imported_after
    assert imported_after is log_softmax
    np.testing.assert_allclose(tg.grad(lambda x: sp.logsumexp(x))(x), sp.softmax(x))
    y = sp.softmax(x)
    np.testing.assert_allclose(tg.grad(lambda x: np.sum(sp.softmax(x) ** 2))(x),
                               2 * y * (y - np.sum(y * y)))
    np.testing.assert_allclose(tg.grad(lambda x: np.sum(sp.polygamma(1, x + 3)))(x),
                               special._orig.polygamma(2, x + 3))
    # plain calls are SciPy's own
    assert sp.logsumexp(x) == original(x)
    # SciPy's own modules that imported the name are rebound too
    import scipy.special._logsumexp as lse_mod
    assert lse_mod.logsumexp is logsumexp


def test_replacements_table():
    assert special.REPLACEMENTS[special._orig.logsumexp] is logsumexp
    assert special.REPLACEMENTS[special._orig.softmax] is softmax


def test_import_without_scipy():
    code = ("import sys; sys.modules['scipy'] = None\n"
            "import numpy as np, tracegrad as tg\n"
            "from tracegrad.core.primitive import PRIMITIVES\n"
            "assert not any(n.startswith('scipy.') for n in PRIMITIVES)\n"
            "assert tg.grad(lambda x: np.sum(tg.stop_gradient(x) * x))(np.ones(2)).sum() == 2\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


# --- the generic registry checks on this module's cases -----------------------------------
OWN = [c for c in cases.ALL_CASES if any(p.startswith("scipy.special.") for p in c.prims)]
OWN_SECOND = [c for c in OWN if c.second_order]
_skip_hooked = pytest.mark.skipif(HOOKED, reason="test_registry.py runs these cases")


@_skip_hooked
@pytest.mark.parametrize("check", ["test_reverse_matches_finite_differences",
                                   "test_forward_reverse_dot_product",
                                   "test_batched_jacobians"])
@pytest.mark.parametrize("case", OWN, ids=lambda c: c.name)
def test_registry_checks(case, check):
    getattr(registry, check)(case)


@_skip_hooked
@pytest.mark.parametrize("case", OWN_SECOND, ids=lambda c: c.name)
def test_registry_second_order(case):
    registry.test_second_order(case)


def test_own_cases_cover_own_primitives():
    from tracegrad.core.primitive import PRIMITIVES
    mine = {n for n in PRIMITIVES if n.startswith("scipy.special.")}
    assert mine <= set(cases.CASES)
    assert "stop_gradient" in cases.NONDIFF_CASES
