"""Forward mode and higher order (issue #5): jvp, linearize, jacfwd, jacrev,
jacobian, hessian, hvp, composition, perturbation confusion, check_grads."""
import numpy as np
import pytest

import tracegrad as tg

RNG = np.random.default_rng(0)


def rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def rosenbrock_hessian(x):
    n = x.size
    H = np.zeros((n, n))
    for i in range(n - 1):
        H[i, i] += 1200 * x[i] ** 2 - 400 * x[i + 1] + 2
        H[i, i + 1] += -400 * x[i]
        H[i + 1, i] += -400 * x[i]
        H[i + 1, i + 1] += 200
    return H


def softmax_ce(z, y):
    z = z - np.max(z)
    return -np.sum(y * (z - np.log(np.sum(np.exp(z)))))


def test_jvp_matches_reverse_and_finite_differences():
    f = lambda x: np.tanh(x @ A) * np.sin(x)  # noqa: E731
    A = RNG.standard_normal((4, 4))
    x, u = RNG.standard_normal(4), RNG.standard_normal(4)
    y, t = tg.jvp(f, (x,), (u,))
    np.testing.assert_allclose(y, f(x))
    fd = (f(x + 1e-6 * u) - f(x - 1e-6 * u)) / 2e-6
    np.testing.assert_allclose(t, fd, rtol=1e-6)
    np.testing.assert_allclose(t, tg.jacrev(f)(x) @ u, rtol=1e-12)


def test_linearize_reuses_one_evaluation():
    calls = []

    def f(x):
        calls.append(1)
        return np.exp(x) * np.cos(x)
    x = RNG.standard_normal(3)
    y, lin = tg.linearize(f, x)
    n = len(calls)
    for _ in range(3):
        u = RNG.standard_normal(3)
        np.testing.assert_allclose(lin(u), tg.jvp(f, (x,), (u,))[1], rtol=1e-12)
    assert len(calls) == n + 3  # the three jvp checks, none from lin


def test_rosenbrock_hessian_closed_form():
    x = RNG.uniform(-1, 1, 5)
    np.testing.assert_allclose(tg.hessian(rosenbrock)(x), rosenbrock_hessian(x), rtol=1e-12)


def test_softmax_cross_entropy_hessian_closed_form():
    z = RNG.standard_normal(5)
    y = np.eye(5)[2]
    p = np.exp(z - z.max())
    p /= p.sum()
    H = tg.hessian(softmax_ce)(z, y)
    np.testing.assert_allclose(H, np.diag(p) - np.outer(p, p), rtol=1e-10, atol=1e-14)


def test_all_jacobian_modes_agree_with_pytrees():
    def f(p, s):
        return {"a": np.tanh(p["w"] @ s), "b": np.sum(p["w"] ** 2) * p["c"]}
    p = {"w": RNG.standard_normal((3, 2)), "c": 1.5}
    s = RNG.standard_normal(2)
    jf = tg.jacfwd(f, argnums=(0, 1))(p, s)
    jr = tg.jacrev(f, argnums=(0, 1))(p, s)
    jj = tg.jacobian(f, argnums=(0, 1))(p, s)
    assert jf["a"][0]["w"].shape == (3, 3, 2)          # out.shape + in.shape
    assert jf["a"][1].shape == (3, 2)
    assert np.shape(jf["b"][0]["c"]) == ()
    for j in (jr, jj):
        for k in ("a", "b"):
            np.testing.assert_allclose(j[k][0]["w"], jf[k][0]["w"], rtol=1e-12)
            np.testing.assert_allclose(j[k][0]["c"], jf[k][0]["c"], rtol=1e-12)
            np.testing.assert_allclose(j[k][1], jf[k][1], rtol=1e-12)


def test_hvp_equals_hessian_vector_product():
    x, v = RNG.standard_normal(6), RNG.standard_normal(6)
    f = lambda x: np.sum(np.tanh(x) ** 2) + rosenbrock(x)  # noqa: E731
    np.testing.assert_allclose(tg.hvp(f, x, v), tg.hessian(f)(x) @ v, rtol=1e-10)


def test_third_derivative():
    f = lambda x: np.sin(x) * x ** 3  # noqa: E731
    d3 = tg.grad(tg.grad(tg.grad(f)))(0.7)
    x = 0.7
    exact = -np.cos(x) * x ** 3 - 9 * np.sin(x) * x ** 2 + 18 * np.cos(x) * x + 6 * np.sin(x)
    np.testing.assert_allclose(d3, exact, rtol=1e-12)
    np.testing.assert_allclose(tg.jacfwd(tg.jacfwd(tg.grad(f)))(0.7), exact, rtol=1e-12)


@pytest.mark.parametrize("outer", ["grad", "jvp"])
@pytest.mark.parametrize("inner", ["grad", "jvp"])
def test_no_perturbation_confusion(outer, inner):
    def d(f, mode):
        if mode == "grad":
            return tg.grad(f)
        return lambda x: tg.jvp(f, (x,), (1.0,))[1]

    # d/dx [x * d/dy (x + y)] at y = 1 is 1, not 2
    res = d(lambda x: x * d(lambda y: x + y, inner)(1.0), outer)(3.0)
    assert res == 1.0


def test_forward_over_reverse_and_reverse_over_forward_agree():
    f = lambda x: np.sum(np.exp(np.sin(x)) * x)  # noqa: E731
    x = RNG.standard_normal(4)
    H1 = tg.jacfwd(tg.grad(f))(x)
    H2 = tg.jacrev(tg.grad(f))(x)
    H3 = tg.jacrev(tg.jacfwd(f))(x)
    np.testing.assert_allclose(H1, H2, rtol=1e-12)
    np.testing.assert_allclose(H1, H3, rtol=1e-12)


def test_check_grads_passes_and_reports():
    tg.check_grads(lambda x, y: np.sum(np.tanh(x @ y)), (RNG.random((3, 2)), RNG.random(2)),
                   order=2)

    def wrong(x):
        return np.sin(x)

    wrong_rule = tg.custom_vjp(wrong)
    wrong_rule.defvjp(lambda x: (np.sin(x), x), lambda x, g: (g * np.cos(x) * 1.01,))
    with pytest.raises(AssertionError, match="VJP"):
        tg.check_grads(wrong_rule, (np.array([0.3, 1.1]),), order=1, modes=("rev",))


def test_jvp_input_validation():
    with pytest.raises(ValueError, match="tangent shape"):
        tg.jvp(np.sin, (np.ones(3),), (np.ones(2),))
    with pytest.raises(TypeError, match="tuples"):
        tg.jvp(np.sin, np.ones(3), np.ones(3))
    with pytest.raises(tg.NonDifferentiableInput):
        tg.jvp(np.sin, (np.arange(3),), (np.ones(3),))


def test_float32_is_preserved():
    x = np.linspace(0, 1, 4, dtype=np.float32)
    assert tg.grad(lambda x: np.sum(np.sin(x)))(x).dtype == np.float32
    assert tg.jvp(np.sin, (x,), (np.ones(4, np.float32),))[1].dtype == np.float32
    assert tg.jacfwd(np.sin)(x).dtype == np.float32


def test_jacobians_of_constant_outputs_have_the_full_shape():
    x = np.ones(3)
    for jac in (tg.jacrev, tg.jacfwd, tg.jacobian):
        J = jac(lambda x: np.ones(2) * 2.0)(x)
        assert J.shape == (2, 3) and not J.any()
