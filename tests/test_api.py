"""Public transforms: the seed's worked examples, pytrees, argnums, has_aux, errors."""
import numpy as np
import pytest

import tracegrad as tg
from tracegrad.core.array import TracedArray


def test_seed_sin_x2_plus_1():
    x = np.linspace(-2, 2, 7)
    g = tg.grad(lambda x: np.sum(np.sin(x ** 2 + 1)))(x)
    np.testing.assert_allclose(g, np.cos(x ** 2 + 1) * 2 * x, rtol=1e-14)


def piecewise(x):
    if x > 0:
        return x ** 2
    return -x


@pytest.mark.parametrize("x, expected", [(1.5, 3.0), (-2.0, -1.0)])
def test_python_if_on_values(x, expected):
    assert tg.grad(piecewise)(x) == expected


def test_broadcast_row_sum():
    x = np.arange(6.0).reshape(2, 3)
    b = np.array([1.0, 2.0, 3.0])
    gb = tg.grad(lambda b: np.sum(x + b))(b)
    np.testing.assert_array_equal(gb, [2.0, 2.0, 2.0])
    gx, gb = tg.grad(lambda x, b: np.sum((x + b) ** 2), argnums=(0, 1))(x, b)
    np.testing.assert_allclose(gb, np.sum(2 * (x + b), axis=0))
    np.testing.assert_allclose(gx, 2 * (x + b))


def test_results_are_plain_arrays():
    v, g = tg.value_and_grad(lambda x: np.sum(x ** 2))(np.ones(3))
    assert type(v) is np.ndarray and type(g) is np.ndarray
    out, f_vjp = tg.vjp(lambda x: np.tanh(x), np.ones(3))
    assert type(out) is np.ndarray
    assert type(f_vjp(np.ones(3))[0]) is np.ndarray


def test_pytree_inputs():
    params = {"w": np.array([1.0, 2.0]), "b": 0.5, "layers": [np.ones(2), (np.zeros(1),)]}

    def f(p):
        return np.sum(p["w"] ** 2) * p["b"] + np.sum(p["layers"][0] * 3) + p["layers"][1][0][0]

    g = tg.grad(f)(params)
    assert set(g) == {"w", "b", "layers"}
    np.testing.assert_allclose(g["w"], 2 * params["w"] * 0.5)
    np.testing.assert_allclose(g["b"], 5.0)
    np.testing.assert_allclose(g["layers"][0], [3.0, 3.0])
    np.testing.assert_allclose(g["layers"][1][0], [1.0])


def test_has_aux():
    g, aux = tg.grad(lambda x: (np.sum(x ** 2), {"n": x.size}), has_aux=True)(np.ones(2))
    np.testing.assert_allclose(g, [2.0, 2.0])
    assert aux == {"n": 2}


def test_vjp_callable_twice():
    out, f_vjp = tg.vjp(lambda x: x * np.sin(x), np.array([0.3, 0.7]))
    a = f_vjp(np.ones(2))[0]
    b = f_vjp(np.ones(2))[0]
    np.testing.assert_array_equal(a, b)


def test_inputs_not_modified_and_no_tracer_leaks():
    x = np.array([1.0, 2.0])
    x0 = x.copy()
    leaked = []

    def f(x):
        leaked.append(x)
        return np.sum(x ** 2)

    g = tg.grad(f)(x)
    np.testing.assert_array_equal(x, x0)
    assert type(g) is np.ndarray
    # a tracer kept past its transform behaves as a constant
    assert type(np.sin(leaked[0])) is np.ndarray


def test_errors():
    with pytest.raises(tg.NonScalarOutput):
        tg.grad(lambda x: x * 2)(np.ones(3))
    with pytest.raises(tg.NonDifferentiableInput):
        tg.grad(lambda x: x * 2.0)(3)
    with pytest.raises(tg.NonDifferentiableInput):
        tg.grad(lambda x: np.sum(x))(np.arange(3))
    with pytest.raises(tg.BadArgnums):
        tg.grad(lambda x, y: x * y, argnums=2)(1.0, 2.0)
    with pytest.raises(tg.BadArgnums):
        tg.grad(lambda x, y: x * y, argnums=(0, 0))(1.0, 2.0)
    with pytest.raises(tg.BadOutput):
        tg.grad(lambda x: "nope")(1.0)
    with pytest.raises(tg.BadOutput):
        tg.grad(lambda x: x, has_aux=True)(1.0)
    with pytest.raises(tg.UnsupportedOperation, match="np.frexp"):
        tg.grad(lambda x: np.sum(np.frexp(x)[0]))(np.ones(3))
    with pytest.raises(tg.UnsupportedOperation, match="reduceat"):
        tg.grad(lambda x: np.sum(np.add.reduceat(x, [0, 2])))(np.ones(3))


def test_traced_getitem_is_0d_array():
    seen = []

    def f(x):
        seen.append(type(x[0]))
        return x[0] * x[1]

    np.testing.assert_allclose(tg.grad(f)(np.array([2.0, 3.0])), [3.0, 2.0])
    assert seen == [TracedArray]


def test_two_threads_trace_independently():
    import threading
    results = {}

    def work(k):
        x = np.linspace(0, 1, 50) + k
        for _ in range(20):
            g = tg.grad(lambda x: np.sum(np.sin(x) * x ** k))(x)
        results[k] = (g, x)

    threads = [threading.Thread(target=work, args=(k,)) for k in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, (g, x) in results.items():
        np.testing.assert_allclose(g, np.cos(x) * x ** k + np.sin(x) * k * x ** (k - 1),
                                   rtol=1e-12)


def test_grad_of_function_of_python_scalars_and_lists():
    f = lambda a, b: a * b[0] + b[1] ** 2  # noqa: E731
    ga, gb = tg.grad(f, argnums=(0, 1))(2.0, [3.0, 4.0])
    assert float(ga) == 3.0 and isinstance(gb, list)
    np.testing.assert_allclose(gb, [2.0, 8.0])


def test_kwargs_pass_through_undifferentiated():
    g = tg.grad(lambda x, scale=1.0: np.sum(x) * scale)(np.ones(2), scale=3.0)
    np.testing.assert_array_equal(g, [3.0, 3.0])


def test_namedtuples_are_pytrees():
    from collections import namedtuple
    P = namedtuple("P", "w b")
    g = tg.grad(lambda p: np.sum(p.w ** 2) + p.b)(P(np.ones(2), 1.0))
    assert type(g) is P
    np.testing.assert_allclose(g.w, [2.0, 2.0])
    A = np.array([[2.0, 1.0], [1.0, 3.0]])
    J = tg.jacfwd(np.linalg.eigh)(A)
    assert J.eigenvalues.shape == (2, 2, 2)


def test_divmod_is_floor_divide_and_remainder():
    x = np.array([5.3, -2.7, 7.1])
    y = np.array([2.0, 1.5, -3.0])
    gx, gy = tg.grad(lambda x, y: np.sum(np.divmod(x, y)[1] ** 2 + np.divmod(x, y)[0]),
                     argnums=(0, 1))(x, y)
    r = np.remainder(x, y)
    np.testing.assert_allclose(gx, 2 * r)
    np.testing.assert_allclose(gy, -2 * r * np.floor_divide(x, y))
    tg.check_grads(lambda x, y: np.divmod(x, y)[1], (x, y), order=2)
    q, r2 = tg.jit(lambda x, y: np.divmod(x, y))(x, y)
    np.testing.assert_array_equal(q, np.floor_divide(x, y))
    np.testing.assert_array_equal(r2, r)


def test_none_is_an_empty_subtree():
    p = {"w": np.ones(2), "b": None, "layers": [np.arange(2.0), None]}
    g = tg.grad(lambda p: np.sum(p["w"] ** 2) + np.sum(p["layers"][0] ** 3))(p)
    assert g["b"] is None and g["layers"][1] is None
    np.testing.assert_allclose(g["w"], 2 * p["w"])
    np.testing.assert_allclose(g["layers"][0], 3 * p["layers"][0] ** 2)
    jg = tg.jit(tg.grad(lambda p: np.sum(p["w"] ** 2)))
    assert jg(p)["b"] is None and jg(p)["b"] is None
