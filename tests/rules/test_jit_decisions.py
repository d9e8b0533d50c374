"""Rules that decide something from values do so through traced NumPy calls or
jit guards, so a jitted plan follows each call's values.

A handler or derivative rule that tests *plain* values (``np.isnan(x._v)``, a
count of non-NaN values, a tie mask of eigenvalues, a rank) freezes the first
call's decision into the compiled plan, and later calls silently get wrong
values or gradients. Each test traces at one input and replays at another
where the decision flips, and compares ``tg.jit(f)`` and ``tg.jit(tg.grad(h))``
with eager execution.
"""
import warnings

import numpy as np
import pytest
import scipy.special as sp

import tracegrad as tg

la = np.linalg


def _same(got, want, rtol, atol, exact=False):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            _same(g, w, rtol, atol, exact)
        return
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    if exact:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)


def replay(f, a, b, h=None, rtol=1e-10, atol=1e-12, exact=False, compiled=False):
    """jit(f) (and jit(grad(h))) traced at args ``a``, replayed at ``b``,
    agree with eager execution at ``b`` (and at ``a``). ``compiled``: the
    calls replay a plan (no eager fallback)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jf = tg.jit(f)
        _same(jf(*a), f(*a), rtol, atol, exact)
        _same(jf(*b), f(*b), rtol, atol, exact)
        _same(jf(*a), f(*a), rtol, atol, exact)
        if compiled:
            assert jf.stats["eager"] == 0 and jf.stats["replays"] >= 1, jf.stats
        if h is not None:
            g = tg.grad(h)
            jg = tg.jit(g)
            _same(jg(*a), g(*a), rtol, atol)
            _same(jg(*b), g(*b), rtol, atol)
            _same(jg(*a), g(*a), rtol, atol)
            if compiled:
                assert jg.stats["eager"] == 0 and jg.stats["replays"] >= 1, jg.stats
    return jf


# --- sorting.py: NaN counts and masks ---------------------------------------------------
X_NAN = np.array([1.0, -1.0, 0.5, 2.0])      # sqrt gives one NaN
X_OK = np.array([1.0, 3.0, 0.5, 2.0])


@pytest.mark.parametrize("red", [
    lambda y: np.nanmedian(y),
    lambda y: np.nanquantile(y, 0.3),
    lambda y: np.nanpercentile(y, 30.0),
    lambda y: np.nanquantile(y, np.array([0.2, 0.7]), method="nearest"),
    lambda y: np.nanquantile(y, 0.5, method="averaged_inverted_cdf"),
    lambda y: np.median(y),
    lambda y: np.quantile(y, 0.3),
    lambda y: np.percentile(y, 30.0, method="lower"),
], ids=["nanmedian", "nanquantile", "nanpercentile", "nanquantile-nearest",
        "nanquantile-averaged", "median", "quantile", "percentile-lower"])
def test_nan_count_and_mask_follow_each_call(red):
    f = lambda x: red(np.sqrt(x))
    h = lambda x: np.sum(red(np.sqrt(np.abs(x)) + np.sqrt(x)))
    # traced with a NaN, replayed without, and the other way round
    replay(f, (X_NAN,), (X_OK,), h)
    replay(f, (X_OK,), (X_NAN,), h)


def test_nanmedian_2d_axis_nan_count_per_slice():
    a = np.array([[1.0, -1.0, 4.0], [2.0, 3.0, -5.0]])
    b = np.array([[1.0, 1.0, 4.0], [-2.0, -3.0, 5.0]])
    red = lambda y: np.nanmedian(y, axis=1)
    replay(lambda x: red(np.sqrt(x)), (a,), (b,),
           lambda x: np.sum(red(np.sqrt(x)) * np.array([1.0, 2.0])))


def test_nanquantile_float32_weak_q_keeps_dtype():
    f = lambda x: np.nanquantile(np.sqrt(x), 0.3)
    jf = replay(f, (X_NAN.astype(np.float32),), (X_OK.astype(np.float32),), rtol=1e-6)
    assert jf(X_OK.astype(np.float32)).dtype == f(X_OK.astype(np.float32)).dtype


def test_weighted_quantile_pick_follows_each_call():
    w = np.array([0.1, 0.5, 0.2, 0.2])
    f = lambda x: np.quantile(x, 0.5, method="inverted_cdf", weights=w)
    h = lambda x: f(x) * 3.0
    replay(f, (np.array([1.0, 2.0, 3.0, 4.0]),), (np.array([4.0, 3.0, 2.0, 1.0]),), h)
    # traced weights
    g = lambda x, w: np.quantile(x, 0.4, method="inverted_cdf", weights=w)
    x = np.array([1.0, 2.0, 3.0])
    replay(g, (x, np.array([1.0, 0.0, 1.0])), (x, np.array([0.0, 1.0, 1.0])))


def test_nan_reduction_traced_where_mask():
    # the where mask is part of the plan (it made jit fall back to eager)
    f = lambda x: np.nanmean(x, where=x > 0)
    replay(f, (np.array([1.0, -2.0, np.nan, 3.0]),), (np.array([-1.0, 2.0, np.nan, 3.0]),), f,
           compiled=True)
    g = lambda x: np.nanvar(x, where=x > 0)
    replay(g, (np.array([1.0, -2.0, 5.0, 3.0]),), (np.array([-1.0, 2.0, np.nan, 3.0]),), g,
           compiled=True)


# --- linalg.py: degeneracy masks, pivots, ranks ---------------------------------------
def _sym(x):
    # eigenvalues x[0], x[1], x[2] in a fixed rotated basis
    q, _ = la.qr(np.array([[1.0, 2.0, 0.5], [0.3, 1.0, 2.0], [1.5, 0.2, 1.0]]))
    return (q * x) @ q.T


def test_eigh_tie_mask_follows_each_call():
    B = np.array([[1.0, 0.2, 0.0], [0.2, 2.0, 0.5], [0.0, 0.5, 3.0]])
    E = np.array([[0.0, 1.0, 0.3], [1.0, 0.0, -0.5], [0.3, -0.5, 0.0]])

    def h(x):
        # x[3] rotates the eigenvectors; gauge invariant: quadratic in each one
        w, V = la.eigh(_sym(x[:3]) + x[3] * E)
        return np.sum(w * np.einsum("ij,ik,kj->j", V, B, V))
    tie, apart = np.array([1.0, 1.0, 2.0, 0.0]), np.array([1.0, 1.5, 2.0, 0.0])
    replay(lambda x: la.eigh(_sym(x[:3]) + x[3] * E)[0], (tie,), (apart,), h, rtol=1e-8,
           atol=1e-10)


def _recon(a, full):
    # U S V^H == a: its derivative is the identity wherever the svd rules'
    # masks (zero singular values, ties) are those of the current point
    u, s, vh = la.svd(a, full_matrices=full)
    k = s.shape[-1]
    return (u[..., :, :k] * s) @ vh[..., :k, :]


@pytest.mark.parametrize("full", [False, True])
def test_svd_small_singular_value_mask_follows_each_call(full):
    C = np.array([[1.0, 0.5], [0.2, 1.0], [0.3, -0.4]])
    E = np.zeros((3, 3, 2))
    E[0, 0, 0] = E[1, 1, 1] = E[2, 2, 1] = 1.0

    def A(x):
        return np.einsum("i,ijk->jk", x, E)

    h = lambda x: np.sum(_recon(A(x), full) * C)
    # traced with a zero singular value (and both-zero pairs), replayed without
    replay(lambda x: la.svd(A(x), compute_uv=False), (np.array([2.0, 0.0, 0.0]),),
           (np.array([2.0, 1.0, 0.5]),), h, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(tg.jit(tg.grad(h))(np.array([2.0, 1.0, 0.5])),
                               [C[0, 0], C[1, 1], C[2, 1]], rtol=1e-8)


def test_svd_tie_mask_follows_each_call():
    C = np.array([[1.0, 2.0], [3.0, 4.0]])
    E = np.zeros((3, 2, 2))
    E[0, 0, 0] = E[1, 1, 1] = E[2, 0, 1] = 1.0
    h = lambda x: np.sum(_recon(np.einsum("i,ijk->jk", x, E), False) * C)
    # traced with equal singular values, replayed with distinct ones
    replay(h, (np.array([1.0, 1.0, 0.0]),), (np.array([1.0, 2.0, 1.0]),), h, rtol=1e-8,
           atol=1e-10)


def test_eig_pivot_follows_each_call():
    C = np.array([[1.0, 2.0], [-1.0, 0.5]])

    def h(x):
        # depends on NumPy's gauge (each eigenvector's largest component real)
        w, V = la.eig(np.reshape(x, (2, 2)))
        return np.sum(np.real(V) * C) + np.sum(np.imag(V) * C.T)
    # complex eigenvectors whose largest component moves between calls
    a, b = np.array([0.0, -1.0, 3.0, 0.5]), np.array([0.0, -3.0, 1.0, 0.5])
    replay(h, (a,), (b,), h, rtol=1e-8, atol=1e-10)
    replay(h, (b,), (a,), h, rtol=1e-8, atol=1e-10)


def test_eigvals_gradient_replays():
    h = lambda x: np.sum(np.real(la.eigvals(np.reshape(x, (2, 2)))) ** 3)
    replay(h, (np.array([1.0, 1.0, 0.5, 2.0]),), (np.array([3.0, 1.0, -0.1, 2.0]),), h,
           rtol=1e-8)


def test_lstsq_rank_decides_residuals_each_call():
    M = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = np.array([1.0, 2.0, 4.0])
    f = lambda x: la.lstsq(M * x, b)
    h = lambda x: np.sum(la.lstsq(M * x, b)[0] ** 2) + np.sum(la.lstsq(M * x, b)[1])
    # rank 1 (no residuals) traced, full rank (residuals) replayed, and back
    replay(f, (np.array([1.0, 0.0]),), (np.array([1.0, 2.0]),))
    replay(f, (np.array([1.0, 2.0]),), (np.array([1.0, 0.0]),))
    replay(h, (np.array([1.0, 2.0]),), (np.array([2.0, 0.5]),), h)


def test_pinv_and_matrix_rank_traced_tolerances():
    # (NumPy dispatches on the matrix only: it is traced too)
    A = np.diag([1.0, 1e-3])
    one = np.array(1.0)
    replay(lambda t, x: la.pinv(A * x, rcond=t), (np.array(0.5), one), (np.array(1e-15), one))
    replay(lambda t, x: la.matrix_rank(A * x, tol=t) + 0.0 * x, (np.array(0.5), one),
           (np.array(1e-15), one))


# --- signal.py --------------------------------------------------------------------------
def test_select_conditions_follow_each_call():
    # traced conditions are part of the plan (they made jit fall back to eager)
    f = lambda x: np.select([x > 0, x < 0], [x, -2.0 * x], default=7.0)
    replay(f, (np.array([1.0, -1.0, 0.0, 2.0]),), (np.array([1.0, 3.0, -0.5, 0.0]),),
           lambda x: np.sum(f(x) ** 2), compiled=True)


def test_polydiv_remainder_trim_follows_each_call():
    v = np.array([1.0, 0.0, 1.0])
    f = lambda u: np.polydiv(u, v)
    # (x^3 + x) / (x^2 + 1): remainder 0, trimmed to [0]; x^3: remainder -x, [-1, 0]
    a, b = np.array([1.0, 0.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0, 0.0])
    h = lambda u: np.sum(np.polydiv(u, v)[1] ** 2) + np.sum(np.polydiv(u, v)[0])
    replay(f, (a,), (b,), h)
    replay(f, (b,), (a,), h)


def test_linspace_zero_step_branch_follows_each_call():
    f = lambda a, b: np.linspace(a, b, 49)
    # start == stop (step 0: NumPy divides then multiplies), then a real step
    replay(f, (np.array(1.0), np.array(1.0)), (np.array(0.0), np.array(1.0)), exact=True)


def test_cov_degrees_of_freedom_follow_each_call():
    f = lambda w: np.cov(np.array([1.0, 2.0]), aweights=w)
    replay(f, (np.array([1.0, 0.0]),), (np.array([1.0, 1.0]),), f)


# --- nondiff.py: traced keyword arguments ---------------------------------------------
def test_nondiff_traced_keyword_arguments_are_inputs():
    data = np.array([0.5, 1.5, 2.5])
    f = lambda e: np.histogram(data, bins=np.sort(e))[0].astype(float)
    replay(f, (np.array([1.0, -1.0, 0.5, 2.0]),), (np.array([1.0, 3.0, 0.5, 2.0]),))
    g = lambda x, lo: np.histogram(x, bins=3, range=(lo, 3.0))[0].astype(float)
    replay(g, (data, np.array(0.0)), (data, np.array(1.0)))
    s = lambda v, x: np.searchsorted(np.array([0.0, 1.0, 2.0]), v, sorter=None) + 0.0 * x
    replay(s, (np.array([0.5]), np.array(1.0)), (np.array([1.5]), np.array(1.0)))


# --- reductions.py, special.py ---------------------------------------------------------
def test_max_traced_initial_keeps_its_derivative():
    f = lambda x: np.max(x[:2], initial=x[3])
    np.testing.assert_allclose(tg.grad(f)(np.array([1.0, 2.0, 3.0, 4.0])), [0, 0, 0, 1])
    replay(f, (np.array([1.0, 2.0, 3.0, 4.0]),), (np.array([1.0, 2.0, 3.0, 0.0]),), f)


def test_multigammaln_domain_check_is_one_boolean_guard():
    from tracegrad.rules.special import multigammaln
    f = lambda a: multigammaln(a, 3)
    jf = replay(f, (np.array(3.0),), (np.array(4.0),), f)
    np.testing.assert_allclose(jf(np.array(5.5)), sp.multigammaln(5.5, 3))
    assert jf.stats["traces"] == 1      # guarded on one boolean
    # the domain check runs on each call's value (it was the first call's)
    with pytest.raises(ValueError, match="condition a"):
        jf(np.array(0.9))


# --- indexing.py ------------------------------------------------------------------------
def test_put_along_axis_indices_follow_each_call():
    def f(x, i):
        y = x * 1.0
        np.put_along_axis(y, np.argsort(x, axis=1)[:, i:i + 1], 0.5 * x[:, :1], axis=1)
        return y
    h = lambda x, i: np.sum(f(x, i) * np.arange(6.0).reshape(2, 3) ** 2)
    a = (np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]]), 0)
    b = (np.array([[1.0, 3.0, 2.0], [6.0, 5.0, 4.0]]), 0)
    replay(f, a, b, h)
