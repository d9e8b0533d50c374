"""np.linalg rules (issue #3, part 1): finite differences, forward against
reverse, batched Jacobians, identities, complex inputs, degenerate spectra,
and second order.

Matrices are well-conditioned by construction (a drawn matrix plus a
multiple of the identity, ``B B^T + n I``, or a fixed spectrum with gaps plus
a small drawn perturbation); hypothesis draws the shapes (``n <= 5``, up to
two batch axes of size <= 2) and the values.
"""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tracegrad as tg
from tracegrad.core.pytree import tree_flatten, tree_unflatten
from tracegrad.rules.linalg import DegenerateDerivativeWarning

la = np.linalg
_FEW = settings(max_examples=max(3, settings.default.max_examples // 3))



# --- helpers ---------------------------------------------------------------------------------
def leaves(t):
    return tree_flatten(t)[0]


def pair(a, b):
    return float(np.real(np.vdot(np.asarray(a), np.asarray(b))))


def rand_like(rng, a):
    a = np.asarray(a)
    r = rng.uniform(-1, 1, a.shape)
    if a.dtype.kind == "c":
        r = r + 1j * rng.uniform(-1, 1, a.shape)
    return r.astype(a.dtype)


def check(f, *args, seed=0, eps=1e-4, rtol=1e-6, jac=True):
    """Reverse mode against central differences (along a random direction, on
    real and imaginary parts alike), the dot-product test between ``jvp`` and
    ``vjp``, NumPy's values, and (real outputs) ``jacfwd == jacrev``."""
    rng = np.random.default_rng(seed)
    args = tuple(np.asarray(a) for a in args)
    out, pull = tg.vjp(f, *args)
    ref = f(*args)
    for o, r in zip(leaves(out), leaves(ref)):
        assert type(o) is np.ndarray or np.isscalar(o)
        assert np.asarray(o).dtype == np.asarray(r).dtype
        np.testing.assert_allclose(o, r, rtol=1e-12, atol=1e-13)
    outs = leaves(out)
    w = [rand_like(rng, o) for o in outs]
    cts = pull(tree_unflatten(tree_flatten(out)[1], w))
    us = [rand_like(rng, a) for a in args]
    ad = sum(pair(c, u) for c, u in zip(cts, us))

    def phi(t):
        return sum(pair(wk, ok) for wk, ok in
                   zip(w, leaves(f(*[a + t * u for a, u in zip(args, us)]))))
    fd = (8 * (phi(eps) - phi(-eps)) - (phi(2 * eps) - phi(-2 * eps))) / (12 * eps)
    scale = sum(float(np.sum(np.abs(c) * np.abs(u))) for c, u in zip(cts, us))
    assert abs(ad - fd) <= rtol * (scale + abs(fd)) + 1e-12, (ad, fd)
    _, tout = tg.jvp(f, args, tuple(us))
    lhs = sum(pair(wk, tk) for wk, tk in zip(w, leaves(tout)))
    assert abs(lhs - ad) <= 1e-10 * (scale + abs(lhs)) + 1e-13, (lhs, ad)
    real = all(a.dtype.kind == "f" for a in args) and all(
        np.asarray(o).dtype.kind == "f" for o in outs)
    if jac and real:
        nums = tuple(range(len(args)))
        Jf = leaves(tg.jacfwd(f, nums)(*args))
        Jr = leaves(tg.jacrev(f, nums)(*args))
        for a, b in zip(Jf, Jr):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12 * (1 + np.max(np.abs(b))))
    return cts


@st.composite
def dims(draw, lo=1, hi=5):
    n = draw(st.integers(lo, hi))
    batch = tuple(draw(st.lists(st.integers(1, 2), max_size=2)))
    return batch, n


def draw_array(data, shape, lo=-1.0, hi=1.0):
    return data.draw(st.lists(st.floats(lo, hi), min_size=int(np.prod(shape, dtype=int)),
                              max_size=int(np.prod(shape, dtype=int))).map(
        lambda v: np.reshape(np.array(v, float), shape)))


def well(data, batch, n):
    """Drawn matrix + 2n I: cond <= 3."""
    return draw_array(data, batch + (n, n)) + 2 * n * np.eye(n)


def spd(data, batch, n):
    b = draw_array(data, batch + (n, n))
    return b @ np.swapaxes(b, -1, -2) + n * np.eye(n)


def sym(x):
    return (x + np.swapaxes(x, -1, -2)) / 2


def gapped(n, seed=0):
    """Symmetric matrix with eigenvalues 1, 2, ..., n (gaps of 1)."""
    q = la.qr(np.random.default_rng(seed).normal(size=(n, n)))[0]
    return q @ np.diag(np.arange(1.0, n + 1)) @ q.T


def fixsign(v):
    """Columns with a positive largest entry (removes LAPACK's sign choice)."""
    p = np.argmax(np.abs(v), axis=-2)
    piv = np.take_along_axis(v, p[..., None, :], axis=-2)
    return v * np.sign(piv)


# --- solve, inv, det, slogdet ------------------------------------------------------------------
@given(dims(), st.data())
def test_solve_gradients_match_implicit_differentiation(dm, data):
    batch, n = dm
    A = well(data, batch, n)
    vec = data.draw(st.booleans())
    b = draw_array(data, (n,) if vec else batch + (n, 2))
    x = la.solve(A, b)
    W = np.random.default_rng(n).normal(size=x.shape)
    gA, gb = tg.grad(lambda A, b: np.sum(W * la.solve(A, b)), argnums=(0, 1))(A, b)
    # x = A^{-1} b:  b̄ = A^{-T} W,  Ā = -b̄ x^T
    Wm, xm = (W[..., None], x[..., None]) if vec else (W, x)
    lam = la.solve(np.swapaxes(A, -1, -2), Wm)
    np.testing.assert_allclose(gA, -lam @ np.swapaxes(xm, -1, -2), rtol=1e-10, atol=1e-12)
    expect_b = lam[..., 0] if vec else lam
    if expect_b.shape != b.shape:
        expect_b = np.sum(expect_b, axis=tuple(range(expect_b.ndim - b.ndim)))
    np.testing.assert_allclose(gb, expect_b, rtol=1e-10, atol=1e-12)
    check(la.solve, A, b)


def test_solve_broadcasts_batch_axes():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(3, 3)) + 4 * np.eye(3)
    B = rng.normal(size=(2, 3, 2))
    check(la.solve, A, B)
    check(la.solve, rng.normal(size=(2, 1, 3, 3)) + 4 * np.eye(3), rng.normal(size=(3, 3, 2)))


@given(dims(), st.data())
def test_inv_det_slogdet(dm, data):
    batch, n = dm
    A = well(data, batch, n)
    check(la.inv, A)
    check(la.det, A / (2 * n))
    check(lambda A: tuple(la.slogdet(A)), A)


@given(dims(hi=4), st.data())
def test_logdet_gradient_is_inverse_transpose(dm, data):
    batch, n = dm
    A = well(data, batch, n) * np.where(data.draw(st.booleans()), -1.0, 1.0)
    g = tg.grad(lambda A: np.sum(la.slogdet(A)[1]))(A)
    np.testing.assert_allclose(g, np.swapaxes(la.inv(A), -1, -2), rtol=1e-12, atol=1e-14)
    gd = tg.grad(lambda A: np.sum(la.det(A)))(A)
    np.testing.assert_allclose(gd, la.det(A)[..., None, None] * np.swapaxes(la.inv(A), -1, -2),
                               rtol=1e-10)


def test_logdet_hessian_closed_form():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(3, 3)) + 3 * np.eye(3)
    H = tg.hessian(lambda A: la.slogdet(A)[1])(A)
    Ai = la.inv(A)
    # d/dA_kl (A^{-T})_ij = -(A^{-1})_jk (A^{-1})_li
    np.testing.assert_allclose(H, -np.einsum("jk,li->ijkl", Ai, Ai), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(tg.jacrev(tg.jacrev(lambda A: la.slogdet(A)[1]))(A), H,
                               rtol=1e-12, atol=1e-14)


def test_det_of_singular_matrix_is_the_adjugate():
    S = np.array([[1.0, 2, 3], [2, 4, 6], [1, 0, 1]])
    adjT = np.array([[4.0, 4, -4], [-2, -2, 2], [0, 0, 0]])
    np.testing.assert_allclose(tg.grad(la.det)(S), adjT, atol=1e-12)
    _, t = tg.jvp(la.det, (S,), (np.ones((3, 3)),))
    np.testing.assert_allclose(t, np.sum(adjT), atol=1e-12)
    # rank n - 2: the adjugate is 0
    np.testing.assert_allclose(tg.grad(la.det)(np.ones((3, 3))), 0, atol=1e-12)


def test_det_batched_stack():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(2, 3, 4, 4))
    J = tg.jacrev(la.det)(A)
    assert J.shape == (2, 3, 2, 3, 4, 4)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(J[i, j, i, j], tg.grad(la.det)(A[i, j]), rtol=1e-10)
    check(la.det, A)


def test_inv_singular_raises_numpy_error():
    with pytest.raises(la.LinAlgError):
        tg.grad(lambda A: np.sum(la.inv(A)))(np.ones((2, 2)))


# --- cholesky ---------------------------------------------------------------------------------
@given(dims(), st.data(), st.booleans())
def test_cholesky(dm, data, upper):
    batch, n = dm
    B = draw_array(data, batch + (n, n))
    f = lambda B: la.cholesky(B @ np.swapaxes(B, -1, -2) + n * np.eye(n), upper=upper)  # noqa
    check(f, B)


def test_cholesky_symmetric_cotangent_convention():
    A = spd_fixed = np.array([[4.0, 1, 0.5], [1, 3, 0.2], [0.5, 0.2, 2]])
    g = tg.grad(lambda A: np.sum(la.cholesky(A) ** 2))(spd_fixed)
    np.testing.assert_allclose(g, g.T)          # symmetric, as JAX/PyTorch/autograd
    # along a symmetric direction it is the true derivative
    E = np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, 0]])
    e = 1e-6
    f = lambda A: np.sum(la.cholesky(A) ** 2)  # noqa
    fd = (f(A + e * E) - f(A - e * E)) / (2 * e)
    np.testing.assert_allclose(np.sum(g * E), fd, rtol=1e-7)


# --- eigh, eigvalsh ---------------------------------------------------------------------------
@given(dims(), st.data())
def test_eigh_and_eigvalsh(dm, data):
    batch, n = dm
    base = gapped(n)
    X = draw_array(data, batch + (n, n))
    s = 0.1 / n       # keeps eigenvalue gaps >= 0.8

    def f(X):
        w, v = la.eigh(base + s * sym(X))
        return w, fixsign(v)
    check(f, X)
    check(lambda X: la.eigvalsh(base + s * sym(X), UPLO="U"), X)


def test_eigh_returns_numpy_result_type():
    r = tg.jvp(lambda A: la.eigh(A).eigenvalues, (gapped(3),), (np.eye(3),))
    np.testing.assert_allclose(r[1], np.ones(3))


def test_grad_of_sum_of_eigvalsh_is_identity():
    for A in (gapped(4), np.eye(4), np.zeros((4, 4))):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            np.testing.assert_allclose(tg.grad(lambda A: np.sum(la.eigvalsh(A)))(A), np.eye(4),
                                       atol=1e-12)
            np.testing.assert_allclose(tg.grad(lambda A: np.sum(la.eigh(A)[0]))(A), np.eye(4),
                                       atol=1e-12)


def test_eigh_degenerate_eigenvalues_documented_behaviour():
    I3 = np.eye(3)
    # only eigenvalues used: no warning, finite
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = tg.grad(lambda A: np.sum(la.eigh(A)[0] ** 2))(I3)
    np.testing.assert_allclose(g, 2 * I3)
    # eigenvectors of a repeated eigenvalue used: zeroed terms, with a warning
    with pytest.warns(DegenerateDerivativeWarning):
        g = tg.grad(lambda A: np.sum((lambda w, v: v @ np.diag(w ** 2) @ v.T)(*la.eigh(A))))(I3)
    assert np.all(np.isfinite(g))
    with pytest.warns(DegenerateDerivativeWarning):
        tg.jvp(lambda A: la.eigh(A)[1], (I3,), (np.ones((3, 3)),))
    # an eigenvector of a simple eigenvalue next to a repeated pair: exact, no warning
    A = np.diag([1.0, 1.0, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = tg.grad(lambda A: la.eigh(A)[1][0, 2] ** 2 + la.eigh(A)[1][1, 2])(A)
    assert np.all(np.isfinite(g))


def test_eigh_hessian_consistent():
    A = gapped(3, seed=4)
    f = lambda A: np.sum(fixsign(la.eigh(A)[1])[:, 0] ** 3) + np.sum(la.eigvalsh(A) ** 3)  # noqa
    H = tg.hessian(f)(A)
    np.testing.assert_allclose(H, np.transpose(H, (2, 3, 0, 1)), atol=1e-12)
    np.testing.assert_allclose(tg.jacrev(tg.jacrev(f))(A), H, atol=1e-11)


# --- eig, eigvals ----------------------------------------------------------------------------
def _eig_base(n, rotation, seed=5):
    w = np.arange(1.0, n + 1)
    m = np.diag(w)
    if rotation:
        m[:2, :2] = [[1.0, -1.5], [1.5, 1.0]]
    p = np.eye(n) + 0.3 * la.qr(np.random.default_rng(seed).normal(size=(n, n)))[0]
    return p @ m @ la.inv(p)


def _phase_fix(v):
    p = np.argmax(np.abs(v), axis=-2)
    piv = np.take_along_axis(v, p[..., None, :], axis=-2)
    return v * (np.conjugate(piv) / np.abs(piv))


@pytest.mark.parametrize("rotation", [False, True])
@pytest.mark.parametrize("n", [2, 3, 5])
def test_eig(n, rotation):
    A = _eig_base(n, rotation)
    X = np.random.default_rng(n).normal(size=(n, n))
    assert (la.eigvals(A).dtype.kind == "c") == rotation
    # raw eigenvectors: tracegrad keeps LAPACK's gauge (unit norm, largest entry real)
    check(lambda X: tuple(la.eig(A + 0.05 * X)), X)
    check(lambda X: la.eigvals(A + 0.05 * X), X)
    check(lambda X: (la.eig(X)[0], _phase_fix(la.eig(X)[1])), A + 0.05 * X)
    # complex input
    Z = X + 1j * np.random.default_rng(n + 1).normal(size=(n, n))
    check(lambda Z: tuple(la.eig(A + 0.05 * Z)), Z)


def test_eig_batched():
    A = np.stack([_eig_base(3, True), _eig_base(3, False, seed=6)])
    check(lambda X: tuple(la.eig(X)), A)


# --- svd ---------------------------------------------------------------------------------------
def _svd_base(m, n, seed=7):
    rng = np.random.default_rng(seed)
    k = min(m, n)
    u = la.qr(rng.normal(size=(m, m)))[0][:, :k]
    v = la.qr(rng.normal(size=(n, n)))[0][:k]
    return u @ np.diag(np.arange(k, 0, -1) + 1.0) @ v


@given(st.integers(1, 5), st.integers(1, 5), st.lists(st.integers(1, 2), max_size=1),
       st.data())
def test_svd_reduced_and_values(m, n, batch, data):
    base = _svd_base(m, n)
    X = draw_array(data, tuple(batch) + (m, n))
    s = 0.1 / max(m, n)

    def f(X):
        u, sv, vh = la.svd(base + s * X, full_matrices=False)
        sg = np.sign(np.take_along_axis(u, np.argmax(np.abs(u), axis=-2)[..., None, :], -2))
        return u * sg, sv, vh * np.swapaxes(sg, -1, -2)
    check(f, X)
    check(lambda X: la.svd(base + s * X, compute_uv=False), X)
    check(lambda X: la.svdvals(base + s * X), X)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4), (2, 5, 2)])
def test_svd_full_matrices_complement(shape):
    """The complement basis is not unique: its derivative is the one of the
    non-rotating complement, exact for rotation-invariant functions."""
    X = np.random.default_rng(8).normal(size=shape)
    k = min(shape[-2:])

    def proj(X):
        u, s, vh = la.svd(X)
        assert u.shape[-1] == shape[-2] and vh.shape[-2] == shape[-1]
        up, vp = u[..., :, k:], vh[..., k:, :]
        return (up @ np.swapaxes(up, -1, -2), np.swapaxes(vp, -1, -2) @ vp, s,
                u[..., :, :k] @ vh[..., :k, :])
    check(proj, X)
    # and the raw complement: forward and reverse agree (one linear map)
    out, pull = tg.vjp(lambda X: tuple(la.svd(X)), X)
    rng = np.random.default_rng(9)
    w = [rng.normal(size=o.shape) for o in out]
    u = rng.normal(size=X.shape)
    _, t = tg.jvp(lambda X: tuple(la.svd(X)), (X,), (u,))
    np.testing.assert_allclose(sum(np.sum(a * b) for a, b in zip(w, t)),
                               np.sum(pull(tuple(w))[0] * u), rtol=1e-10)


def test_nuclear_norm_gradient_is_u_vt():
    X = np.random.default_rng(10).normal(size=(4, 3))
    u, s, vh = la.svd(X, full_matrices=False)
    for f in (lambda X: la.norm(X, "nuc"), lambda X: np.sum(la.svd(X, compute_uv=False)),
              lambda X: la.matrix_norm(X, ord="nuc")):
        np.testing.assert_allclose(tg.grad(f)(X), u @ vh, rtol=1e-12, atol=1e-14)
    # spectral norm: u1 v1^T
    np.testing.assert_allclose(tg.grad(lambda X: la.norm(X, 2))(X), np.outer(u[:, 0], vh[0]),
                               rtol=1e-12, atol=1e-14)


def test_svd_repeated_singular_values():
    Q = la.qr(np.random.default_rng(11).normal(size=(3, 3)))[0]
    W = np.arange(9.0).reshape(3, 3)
    # the polar factor U @ Vh is smooth at repeated singular values: exact (with a
    # warning, since tracegrad cannot tell it apart from ill-defined functions)
    f = lambda A: np.sum((lambda u, s, vh: u @ vh)(*la.svd(A)) * W)  # noqa
    with pytest.warns(DegenerateDerivativeWarning):
        g = tg.grad(f)(Q)
    e = 1e-6
    fd = np.array([[(f(Q + e * np.outer(np.eye(3)[i], np.eye(3)[j])) -
                     f(Q - e * np.outer(np.eye(3)[i], np.eye(3)[j]))) / (2 * e)
                    for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(g, fd, atol=1e-7)
    # singular values only: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = tg.grad(lambda A: np.sum(la.svd(A)[1] ** 2))(Q)
    np.testing.assert_allclose(g, 2 * Q, atol=1e-12)


def test_svd_hermitian():
    A = gapped(3, seed=12) - 2.5 * np.eye(3)      # eigenvalues -1.5, -0.5, 0.5
    X = np.random.default_rng(12).normal(size=(3, 3))
    check(lambda X: la.svd(A + 0.05 * sym(X), hermitian=True, compute_uv=False), X)
    check(lambda X: la.pinv(A + 0.05 * sym(X), hermitian=True), X)


# --- qr -------------------------------------------------------------------------------------------
@given(st.integers(1, 5), st.integers(1, 5), st.lists(st.integers(1, 2), max_size=1),
       st.sampled_from(["reduced", "complete", "r"]), st.data())
def test_qr(m, n, batch, mode, data):
    base = _svd_base(m, n, seed=13)
    X = draw_array(data, tuple(batch) + (m, n))
    s = 0.1 / max(m, n)
    k = min(m, n)

    def f(X):
        if mode == "r":
            return la.qr(base + s * X, mode="r")
        q, r = la.qr(base + s * X, mode=mode)
        qp = q[..., :, k:]      # complement basis: only through its projector
        return q[..., :, :k], r, qp @ np.swapaxes(qp, -1, -2)
    check(f, X)


def test_complex_qr_of_real_valued_input_is_a_numpy_jump():
    """LAPACK does not reflect a column whose pivot is real with a zero
    subcolumn: NumPy's complex R changes sign across such inputs. tracegrad
    differentiates the branch NumPy returned (R's diagonal kept real)."""
    a = np.array([[-2.0 + 0j]])
    assert la.qr(a)[1][0, 0] == -2 and la.qr(a + 1e-9j)[1][0, 0].real > 0
    _, (tq, tr) = tg.jvp(lambda a: tuple(la.qr(a)), (a,), (np.array([[1.0 + 0j]]),))
    assert tq == 0 and tr == 1


def test_qr_raw_is_unsupported():
    with pytest.raises(tg.UnsupportedOperation):
        tg.grad(lambda A: np.sum(la.qr(A, mode="raw")[0]))(np.eye(2))
    q, r = tg.jvp(lambda A: tuple(la.qr(A)), (np.eye(2),), (np.eye(2),))[0]
    assert q.shape == r.shape == (2, 2)


# --- pinv, lstsq ----------------------------------------------------------------------------------
@given(st.integers(1, 5), st.integers(1, 5), st.lists(st.integers(1, 2), max_size=1),
       st.data())
def test_pinv(m, n, batch, data):
    base = _svd_base(m, n, seed=14)
    X = draw_array(data, tuple(batch) + (m, n))
    check(lambda X: la.pinv(base + 0.1 / max(m, n) * X), X)


def test_pinv_rank_deficient_and_at_identity():
    # constant rank: the derivative of pinv at a rank-1 matrix, along rank-1 directions
    u, v = np.array([1.0, 2.0, 0.5]), np.array([0.3, -1.0])
    A = np.outer(u, v)
    check(lambda a, b: la.pinv(np.outer(a, b)), u, v)
    # at the identity (all singular values equal) the derivative is exact: -dA^T
    W = np.arange(9.0).reshape(3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(tg.grad(lambda A: np.sum(la.pinv(A) * W))(np.eye(3)), -W)
    assert A.shape == (3, 2)


@pytest.mark.parametrize("m, n", [(5, 3), (3, 3), (3, 5)])
@pytest.mark.parametrize("vec", [True, False])
def test_lstsq(m, n, vec):
    rng = np.random.default_rng(15)
    A = _svd_base(m, n, seed=15) + 0.1 * rng.normal(size=(m, n))
    b = rng.normal(size=(m,) if vec else (m, 2))
    check(lambda A, b: la.lstsq(A, b)[0], A, b)
    check(lambda A, b: la.lstsq(A, b)[3], A, b)
    x, res, rank, s = tg.vjp(lambda A, b: la.lstsq(A, b), A, b)[0]
    ref = la.lstsq(A, b)
    assert rank == ref[2] and res.shape == ref[1].shape
    np.testing.assert_allclose(res, ref[1], rtol=1e-10)
    if m > n:
        check(lambda A, b: la.lstsq(A, b)[1], A, b)


def test_lstsq_rcond_cuts_small_singular_values():
    A = np.diag([1.0, 1e-12, 2.0])[:, :2]
    b = np.array([1.0, 1.0, 1.0])
    g = tg.grad(lambda A, b: np.sum(la.lstsq(A, b, rcond=1e-8)[0]), argnums=(0, 1))(A, b)
    assert np.all(np.isfinite(g[0])) and np.all(np.isfinite(g[1]))
    np.testing.assert_allclose(g[1], [1.0, 0, 0], atol=1e-12)


# --- norms -------------------------------------------------------------------------------------
VEC_ORDS = [None, 1, 2, np.inf, -np.inf, 3, 0.5, -1.5]
MAT_ORDS = [None, "fro", "nuc", 1, -1, 2, -2, np.inf, -np.inf]


@pytest.mark.parametrize("ord", VEC_ORDS)
@pytest.mark.parametrize("axis, keepdims", [(None, False), (1, True), (-3, False)])
def test_vector_norms(ord, axis, keepdims):
    x = np.random.default_rng(16).uniform(0.2, 1.0, (3, 4, 2)) * [1, -1]
    if axis is None:
        x = x[0, :, 0]
    check(lambda x: la.norm(x, ord, axis=axis, keepdims=keepdims), x)
    check(lambda x: la.vector_norm(x, ord=2 if ord is None else ord, axis=axis,
                                   keepdims=keepdims), x)


@pytest.mark.parametrize("ord", MAT_ORDS)
@pytest.mark.parametrize("axis, keepdims", [(None, False), ((0, 2), True), ((2, 1), False)])
def test_matrix_norms(ord, axis, keepdims):
    x = np.random.default_rng(17).normal(size=(3, 4, 2))
    if axis is None:
        x = x[:, :, 0]
    check(lambda x: la.norm(x, ord, axis=axis, keepdims=keepdims), x)


def test_matrix_norm_vector_norm_and_cond():
    x = np.random.default_rng(18).normal(size=(2, 3, 3)) + 3 * np.eye(3)
    for o in ("fro", "nuc", 2, -2, 1, np.inf):
        check(lambda x: la.matrix_norm(x, ord=o, keepdims=True), x)
    check(lambda x: la.vector_norm(x, axis=(0, 2), ord=3, keepdims=True), x)
    for p in (None, 2, -2, 1, -1, np.inf, "fro", "nuc"):
        check(lambda x: la.cond(x, p), x)


def test_norm_order_zero_counts_without_derivative():
    x = np.array([0.0, 1.5, -2.0])
    assert tg.grad(lambda x: la.norm(x, 0))(x).tolist() == [0, 0, 0]
    assert la.norm(x, 0) == 2


@pytest.mark.parametrize("f", [la.norm, lambda x: la.norm(x, 3), lambda x: la.norm(x, 1),
                               lambda x: la.norm(np.reshape(x, (1, 3)), "fro"),
                               lambda x: la.vector_norm(x)])
def test_norm_at_zero_has_subgradient_zero(f):
    g = tg.grad(f)(np.zeros(3))
    np.testing.assert_array_equal(g, np.zeros(3))
    _, t = tg.jvp(f, (np.zeros(3),), (np.ones(3),))
    assert t == 0


def test_norm_errors_like_numpy():
    x = np.ones((2, 2))
    for kw in ({"ord": "nuc", "axis": 0}, {"ord": 7}, {"axis": (0, 0)}):
        with pytest.raises(ValueError):
            tg.grad(lambda x: la.norm(x, **kw))(x)


# --- products ------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Arrays of 2-dimensional vectors:DeprecationWarning")
def test_matrix_power_multi_dot_cross_kron():
    rng = np.random.default_rng(19)
    A = rng.normal(size=(2, 3, 3)) + 3 * np.eye(3)
    for k in (1, 2, 3, 5, -1, -4):
        check(lambda A: la.matrix_power(A / 3, k), A)
    np.testing.assert_array_equal(tg.grad(lambda A: np.sum(la.matrix_power(A, 0)) * A[0, 0, 0])(A),
                                  6 * (np.arange(A.size) == 0).reshape(A.shape))
    arrays = [rng.normal(size=3), rng.normal(size=(3, 4)), rng.normal(size=(4, 2)),
              rng.normal(size=(2, 5)), rng.normal(size=5)]
    for j in (2, 3, 4, 5):
        check(lambda *xs: la.multi_dot(list(xs)), *arrays[:j])
        check(lambda *xs: la.multi_dot(list(xs)), *arrays[1:j + 1][:max(2, j - 1)])
    check(np.cross, rng.normal(size=(2, 3)), rng.normal(size=3))
    check(np.cross, rng.normal(size=(2, 2)), rng.normal(size=(2, 2)))
    check(np.cross, rng.normal(size=(4, 2)), rng.normal(size=(4, 3)))
    check(lambda a, b: np.cross(a, b, axisa=0, axisb=1, axisc=0), rng.normal(size=(3, 2)),
          rng.normal(size=(2, 3)))
    check(lambda a, b: la.cross(a, b, axis=0), rng.normal(size=(3, 2)), rng.normal(size=(3, 2)))
    check(np.kron, rng.normal(size=(2, 3)), rng.normal(size=(3, 1, 2)))
    check(np.kron, rng.normal(size=3), rng.normal(size=(2, 2)))
    check(np.kron, rng.normal(size=()), rng.normal(size=(2,)))


def test_tensor_solve_inv_and_array_api_aliases():
    rng = np.random.default_rng(20)
    a = rng.normal(size=(6, 2, 3)) + 3 * np.eye(6).reshape(6, 2, 3)
    check(lambda a: la.tensorinv(a, ind=1), a)
    check(la.tensorsolve, a, rng.normal(size=6))
    check(lambda a, b: la.tensorsolve(a, b, axes=(0,)), np.moveaxis(a, 1, 0), rng.normal(size=6))
    x, y = rng.normal(size=(2, 3, 3)), rng.normal(size=(2, 3, 3))
    check(la.matmul, x, y)
    check(lambda x, y: la.tensordot(x, y, axes=1), x, y[:, 0, :].T)
    check(la.outer, x[0, 0], y[0, 0])
    check(lambda x: la.trace(x, offset=1), x)
    check(la.diagonal, x)
    check(la.vecdot, x, y)
    check(la.matrix_transpose, x)


def test_matrix_rank_is_not_differentiated():
    x = np.array([[1.0, 2.0], [2.0, 4.0]])
    assert tg.grad(lambda x: np.sum(x) * la.matrix_rank(x))(x).tolist() == [[1, 1], [1, 1]]


# --- complex inputs -------------------------------------------------------------------------------
def _cmat(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape) + 1j * rng.normal(size=shape)


def _herm(z):
    return (z + np.conjugate(np.swapaxes(z, -1, -2))) / 2


@pytest.mark.parametrize("name, f", [
    ("solve", lambda z: la.solve(z + 4 * np.eye(3), np.arange(6.0).reshape(3, 2) * (1 + 1j))),
    ("inv", lambda z: la.inv(z + 4 * np.eye(3))),
    ("det", lambda z: la.det(z + 4 * np.eye(3))),
    ("slogdet", lambda z: tuple(la.slogdet(z + 4 * np.eye(3)))),
    ("cholesky", lambda z: la.cholesky(_herm(z) + 4 * np.eye(3))),
    ("eigvalsh", lambda z: la.eigvalsh(gapped(3) + 0.1 * _herm(z))),
    ("eigh |V|^2", lambda z: (lambda w, v: (w, np.abs(v) ** 2))(
        *la.eigh(gapped(3) + 0.1 * _herm(z)))),
    ("svd", lambda z: (lambda u, s, vh: (np.abs(u) ** 2, s, np.abs(vh) ** 2,
                                         u[:, :1] * vh[:1, :]))(
        *la.svd(_svd_base(3, 3) + 0.1 * z))),
    ("svdvals", lambda z: la.svd(z, compute_uv=False)),
    ("qr", lambda z: tuple(la.qr(z + 3j * np.eye(3)))),
    ("pinv", lambda z: la.pinv(z[:, :2])),
    ("lstsq", lambda z: la.lstsq(z[:, :2], z[:, 2])[0]),
    ("norms", lambda z: (la.norm(z), la.norm(z, "nuc"), la.norm(z, 3, axis=0), la.norm(z, 2))),
])
def test_complex_inputs(name, f):
    """Central differences on the real and imaginary parts (random complex
    directions) against the cotangent dL/dRe + i dL/dIm."""
    check(f, _cmat((3, 3), 21))


@pytest.mark.parametrize("f", [
    lambda z: la.cholesky(z @ np.conjugate(z.T) + 3 * np.eye(3)),
    lambda z: (lambda u, s, vh: u @ vh)(*la.svd(z)),
])
def test_complex_matmul_into_decompositions(f):
    check(f, _cmat((3, 3), 23))


# --- dtypes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("f", [la.inv, la.det, lambda a: la.slogdet(a)[1], la.pinv,
                               lambda a: la.svd(a)[1], lambda a: la.eigvalsh(a + a.T),
                               lambda a: la.cholesky(a @ a.T), lambda a: la.qr(a)[1],
                               lambda a: la.norm(a, "nuc"), lambda a: la.solve(a, a[0])])
def test_float32_stays_float32(f):
    a = (np.random.default_rng(22).normal(size=(3, 3)) + 3 * np.eye(3)).astype(np.float32)
    g = tg.grad(lambda a: np.sum(f(a)))(a)
    assert g.dtype == np.float32
    g64 = tg.grad(lambda a: np.sum(f(a)))(a.astype(np.float64))
    np.testing.assert_allclose(g, g64, rtol=2e-3, atol=2e-4 * np.max(np.abs(g64)))


# --- second order -----------------------------------------------------------------------------
@_FEW
@given(st.sampled_from(["svd", "qr", "cholesky", "pinv", "lstsq", "eig", "solve", "norm2"]),
       st.integers(2, 3))
def test_hessians_agree_across_modes(name, n):
    rng = np.random.default_rng(n)
    A = _svd_base(n, n, seed=n) + 0.1 * rng.normal(size=(n, n))
    fs = {
        "svd": lambda A: np.sum(fixsign(la.svd(A)[0]) ** 3) + np.sum(la.svd(A)[1] ** 3),
        "qr": lambda A: np.sum(la.qr(A)[0] ** 3) + np.sum(la.qr(A)[1] ** 3),
        "cholesky": lambda A: np.sum(la.cholesky(A @ A.T + np.eye(n)) ** 3),
        "pinv": lambda A: np.sum(la.pinv(A[:, :-1]) ** 3),
        "lstsq": lambda A: np.sum(la.lstsq(A[:, :-1], A[:, -1])[0] ** 3),
        "eig": lambda A: np.sum(np.real(la.eigvals(_eig_base(n, False) + 0.1 * A)) ** 3),
        "solve": lambda A: np.sum(la.solve(A, A[:, ::-1] ** 2) ** 3),
        "norm2": lambda A: la.norm(A, 2) ** 3,
    }
    f = fs[name]
    H = tg.hessian(f)(A)
    scale = 1 + np.max(np.abs(H))
    np.testing.assert_allclose(H, np.transpose(H, (2, 3, 0, 1)), atol=1e-11 * scale)
    np.testing.assert_allclose(tg.jacrev(tg.jacrev(f))(A), H, atol=1e-11 * scale)
    np.testing.assert_allclose(tg.jacfwd(tg.jacfwd(f))(A), H, atol=1e-11 * scale)
    v = rng.normal(size=A.shape)
    e = 1e-4
    g = tg.grad(f)
    fd = (g(A + e * v) - g(A - e * v)) / (2 * e)
    np.testing.assert_allclose(np.tensordot(H, v, 2), fd, rtol=1e-5, atol=1e-6 * scale)
