"""Common NumPy API found unsupported by a sweep over traced float64 inputs.

Each function is checked with ``cases_signal.check`` (values equal NumPy's, VJP
against central differences, JVP/VJP consistency, jacfwd == jacrev) and with
``jit(grad(loss))`` against eager ``grad`` on a second input.
"""
import numpy as np
import pytest

import tracegrad as tg
from cases_signal import check

rng = np.random.default_rng(11)
V = rng.standard_normal(6)
A = rng.standard_normal((3, 4))
B = rng.standard_normal((2, 3, 4))
W = rng.standard_normal(6)

CASES = {
    "delete_list": (lambda x: np.delete(x, [1, 3]), (V,)),
    "delete_slice_axis": (lambda x: np.delete(x, slice(0, 4, 2), axis=1), (A,)),
    "delete_int_axis0": (lambda x: np.delete(x, -1, 0), (A,)),
    "delete_bool": (lambda x: np.delete(x, V > 0), (V,)),
    "delete_flat": (lambda x: np.delete(x, [0, 5, 7]), (A,)),
    "insert_scalar_value": (lambda x: np.insert(x, [1, 3], 5.0), (V,)),
    "insert_traced_value": (lambda x, y: np.insert(x, 2, y[0] * 2), (V, W)),
    "insert_values_axis": (lambda x, y: np.insert(x, 1, y, axis=1), (A, V[:3])),
    "insert_block_axis": (lambda x, y: np.insert(x, [0, 2], y, axis=0), (A, B[0, :2])),
    "insert_broadcast": (lambda x, y: np.insert(x, [1, 1, 4], y, axis=1), (A, V[:1])),
    "insert_flat": (lambda x, y: np.insert(x, 5, y), (A, V[:3])),
    "choose": (lambda x, y: np.choose([0, 1, 0, 1, 1, 0], [x, y ** 2]), (V, W)),
    "choose_broadcast": (lambda x, y: np.choose([[0], [2], [1]], [x, y, 2.0]), (A, A[0])),
    "choose_wrap": (lambda x: np.choose([0, 3, -1, 2, 1, 5], [x, x ** 2, np.sin(x)],
                                        mode="wrap"), (V,)),
    "choose_clip": (lambda x: np.choose([0, 3, -1, 2, 1, 5], [x, x ** 2, np.sin(x)],
                                        mode="clip"), (V,)),
    "apply_along_axis_scalar": (lambda x: np.apply_along_axis(np.sum, 0, x ** 2), (A,)),
    "apply_along_axis_vector": (lambda x: np.apply_along_axis(
        lambda r: np.cumsum(r) * r[0], 1, x), (B,)),
    "apply_along_axis_matrix": (lambda x: np.apply_along_axis(
        lambda r: np.outer(r, r[:2]), 1, x), (B,)),
    "apply_along_axis_args": (lambda x: np.apply_along_axis(
        np.linalg.norm, -1, x, ord=3), (B,)),
    "rollaxis": (lambda x: np.rollaxis(x, 2) * 1.5, (B,)),
    "rollaxis_start": (lambda x: np.rollaxis(x, 0, 3), (B,)),
    "extract": (lambda x: np.extract(W > 0, x), (V,)),
    "extract_2d": (lambda x: np.extract(A > 0, x * x), (A,)),
    "resize_grow": (lambda x: np.resize(x, (3, 5)), (V,)),
    "resize_shrink": (lambda x: np.resize(x, 4), (A,)),
}


def _loss(f):
    def loss(*args):
        out = f(*args)
        return np.sum(np.sin(1.3 * np.ravel(out)))
    return loss


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_match_finite_differences(name):
    f, args = CASES[name]
    check(f, *args)


@pytest.mark.parametrize("name", sorted(CASES))
def test_jit_grad_equals_eager(name):
    f, args = CASES[name]
    loss = _loss(f)
    argnums = tuple(range(len(args)))
    jg = tg.jit(tg.grad(loss, argnums=argnums))
    jg(*args)
    args2 = tuple(a + 0.01 * rng.standard_normal(np.shape(a)) for a in args)
    for got, want in zip(jg(*args2), tg.grad(loss, argnums=argnums)(*args2)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


def test_delete_insert_errors_match_numpy():
    x = tg.grad(lambda v: np.sum(np.delete(v, [0]) ** 2))(V)
    np.testing.assert_allclose(x, np.r_[0.0, 2 * V[1:]])
    with pytest.raises(IndexError):
        tg.grad(lambda v: np.sum(np.delete(v, 9, axis=0)))(V)
    with pytest.raises(ValueError):
        tg.grad(lambda v: np.sum(np.choose([0, 2, 0, 0, 0, 0], [v, v])))(V)
    with pytest.raises(ValueError):
        tg.grad(lambda v: np.sum(np.apply_along_axis(np.sum, 1, v.reshape(0, 6))))(
            np.zeros(0))


def test_einsum_path_plans_on_values():
    def f(x):
        path, _ = np.einsum_path("ij,jk,kl->il", x, x, x, optimize="greedy")
        return np.sum(np.einsum("ij,jk,kl->il", x, x, x, optimize=path))
    x = rng.standard_normal((4, 4))
    want, _ = np.einsum_path("ij,jk,kl->il", x, x, x, optimize="greedy")
    path, _ = np.einsum_path("ij,jk,kl->il", x, x, x, optimize="greedy")
    assert path == want
    g = tg.grad(f)(x)
    np.testing.assert_allclose(g, tg.grad(lambda x: np.sum(x @ x @ x))(x), rtol=1e-12)
