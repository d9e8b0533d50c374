"""A zoo of ordinary NumPy numerics programs, differentiated unmodified: numerical linear
algebra, complex intermediates, float32 and mixed precision, statistics, integer/boolean
inputs, pytrees and broadcasting edge cases.

For each program: the gradient against fourth-order central finite differences (complex
inputs along both the real and the imaginary direction, the convention dL/dRe + i dL/dIm),
the jit-compiled gradient against the eager one on two different inputs (the second call
replays the compiled plan), the inputs left untouched, and the gradient's dtype equal to
the input's. Small programs also check jacfwd against jacrev.
"""
import collections
import copy
import warnings

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.core.pytree import tree_flatten, tree_unflatten


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _leaves(tree):
    return tree_flatten(tree)[0]


def fd_grad(f, args, argnum=0, h=1e-5):
    """Fourth-order central differences of real scalar ``f(*args)`` w.r.t. the pytree
    ``args[argnum]``; complex leaves get dL/dRe + i dL/dIm."""
    leaves, treedef = tree_flatten(args[argnum])
    cplx = [np.iscomplexobj(x) for x in leaves]
    leaves = [np.array(x, dtype=np.complex128 if c else np.float64)
              for x, c in zip(leaves, cplx)]
    out = []
    for k, leaf in enumerate(leaves):
        g = np.zeros_like(leaf)
        for i in np.ndindex(leaf.shape):
            for unit in ((1, 1j) if cplx[k] else (1,)):
                vals = []
                for s in (2, 1, -1, -2):
                    ls = [x.copy() for x in leaves]
                    ls[k][i] += s * h * unit
                    a = list(args)
                    a[argnum] = tree_unflatten(treedef, ls)
                    vals.append(float(f(*a)))
                g[i] += unit * (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * h)
        out.append(g)
    return tree_unflatten(treedef, out)


def assert_tree_close(got, want, rtol, what=""):
    gl, wl = _leaves(got), _leaves(want)
    assert len(gl) == len(wl), what
    scale = max([float(np.max(np.abs(w))) if np.size(w) else 0.0 for w in wl] + [1e-300])
    for j, (g, w) in enumerate(zip(gl, wl)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape, (what, j, g.shape, w.shape)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * scale, err_msg=f"{what} leaf {j}")


def perturb(tree, rng, scale=0.05):
    def one(x):
        x = np.asarray(x)
        d = scale * rng.standard_normal(x.shape)
        if x.dtype.kind == "c":
            d = d + 1j * scale * rng.standard_normal(x.shape)
        return (x + d).astype(x.dtype)
    return tree_unflatten(tree_flatten(tree)[1], [one(x) for x in _leaves(tree)])


def check_program(f, args, argnum=0, rtol=1e-6, h=1e-5, jit_args=None, jac=False):
    """grad vs finite differences, gradient dtypes, jit(grad) vs grad on two inputs,
    no input mutation; optionally jacfwd vs jacrev of the gradient."""
    before = copy.deepcopy(args)
    gfun = tg.grad(f, argnums=argnum)
    g = gfun(*args)
    for x, y in zip(_leaves(args), _leaves(before)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg="input mutated")
    for x, gx in zip(_leaves(args[argnum]), _leaves(g)):
        assert np.asarray(gx).dtype == np.asarray(x).dtype, (np.asarray(gx).dtype, x.dtype)
    low = any(np.asarray(x).dtype in (np.float32, np.complex64) for x in _leaves(args[argnum]))
    want = fd_grad(f, args, argnum, h=1e-3 if low else h)
    assert_tree_close(g, want, 2e-3 if low else rtol, what="grad vs finite differences")
    jg = tg.jit(gfun)
    second = jit_args if jit_args is not None else tuple(
        perturb(a, np.random.default_rng(7)) if i == argnum else a for i, a in enumerate(args))
    with warnings.catch_warnings():
        # the compiled plan must agree with eager execution, not fall back
        warnings.simplefilter("error", RuntimeWarning)
        for a in (args, second):
            eager = gfun(*a)
            for _ in range(2):
                # float32: fused loops may round differently (a few ulps)
                assert_tree_close(jg(*a), eager, 1e-5 if low else 1e-10,
                                  what="jit(grad) vs grad")
    for x, y in zip(_leaves(args), _leaves(before)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg="input mutated")
    if jac:
        assert_tree_close(tg.jacfwd(gfun, argnums=argnum)(*args),
                          tg.jacrev(gfun, argnums=argnum)(*args), 1e-9, what="jacfwd vs jacrev")
    return g


RNG = np.random.default_rng(20240)
A53 = RNG.standard_normal((5, 3))
B5 = RNG.standard_normal(5)
M33 = RNG.standard_normal((3, 3))
X84 = RNG.standard_normal((8, 4))
T233 = RNG.standard_normal((2, 3, 3))


# --------------------------------------------------------------------------------------
# numerical linear algebra
# --------------------------------------------------------------------------------------
def lsq_qr(A, b):
    Q, R = np.linalg.qr(A)
    x = np.linalg.solve(R, Q.T @ b)
    r = A @ x - b
    return r @ r + np.sum(x ** 2)


def lsq_svd(A, b):
    U, s, Vt = np.linalg.svd(A, full_matrices=False)
    x = Vt.T @ ((U.T @ b) / s)
    return np.sum(x ** 2) + np.sum(s[:2])


def pca_reconstruction(X):
    Xc = X - X.mean(axis=0)
    C = Xc.T @ Xc / (len(X) - 1)
    w, V = np.linalg.eigh(C)
    P = V[:, -2:]
    R = Xc - Xc @ P @ P.T
    return np.sum(R ** 2) + w[-1]


def expm_scaling_squaring(A):
    n = np.linalg.norm(A, 1)
    s = max(0, int(np.ceil(np.log2(n))) + 1) if n > 0 else 0
    B = A / 2 ** s
    E = np.eye(A.shape[0])
    T = np.eye(A.shape[0])
    for k in range(1, 14):
        T = T @ B / k
        E = E + T
    for _ in range(s):
        E = E @ E
    return np.sum(E ** 2)


def cholesky_logdet(A):
    S = A @ A.T + 3 * np.eye(len(A))
    L = np.linalg.cholesky(S)
    return 2 * np.sum(np.log(np.diag(L))) + np.trace(S)


def power_iteration(A):
    S = A @ A.T
    v = np.ones(len(A)) / np.sqrt(len(A))
    for _ in range(60):
        v = S @ v
        v = v / np.linalg.norm(v)
    return v @ S @ v


def conjugate_gradient(A, b):
    S = A @ A.T + np.eye(len(A))
    x = np.zeros_like(b)
    r = b - S @ x
    p = r.copy()
    rs = r @ r
    it = 0
    while np.sqrt(rs) > 1e-12 and it < 100:
        Ap = S @ p
        alpha = rs / (p @ Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        rs_new = r @ r
        p = r + (rs_new / rs) * p
        rs = rs_new
        it += 1
    return np.sum(x ** 2)


def gram_schmidt(A):
    Q = np.zeros_like(A)
    for j in range(A.shape[1]):
        v = A[:, j].copy()
        for i in range(j):
            v -= (Q[:, i] @ A[:, j]) * Q[:, i]
        Q[:, j] = v / np.linalg.norm(v)
    return np.sum(Q * np.arange(Q.size).reshape(Q.shape))


LINALG = {
    "lsq_qr": (lsq_qr, (A53, B5), 1e-6),
    "lsq_svd": (lsq_svd, (A53, B5), 1e-6),
    "pca_eigh": (pca_reconstruction, (X84,), 1e-6),
    "expm": (expm_scaling_squaring, (M33,), 1e-6),
    "cholesky_logdet": (cholesky_logdet, (M33,), 1e-6),
    "power_iteration": (power_iteration, (M33,), 1e-5),
    "conjugate_gradient_while": (conjugate_gradient, (M33, B5[:3]), 1e-5),
    "gram_schmidt_column_writes": (gram_schmidt, (A53,), 1e-6),
}


@pytest.mark.parametrize("name", sorted(LINALG))
def test_linalg_programs(name):
    f, args, rtol = LINALG[name]
    check_program(f, args, rtol=rtol)
    if name == "lsq_qr":
        check_program(f, args, argnum=1, rtol=rtol, jac=True)


@pytest.mark.parametrize("ord_", [None, 1, 2, np.inf, -np.inf, "fro", "nuc", -1, -2])
def test_matrix_norm_ords(ord_):
    check_program(lambda A: np.linalg.norm(A, ord_) * np.sum(A), (A53,), rtol=1e-6)


@pytest.mark.parametrize("ord_", [None, 1, 2, np.inf, -np.inf, 0.5, 3, -1])
def test_vector_norm_ords(ord_):
    check_program(lambda b: np.linalg.norm(b, ord_) + np.sum(b), (B5,), rtol=1e-6)


def test_norm_axis_keepdims_and_contractions():
    check_program(lambda A: np.sum(np.linalg.norm(A, axis=1, keepdims=True) * A)
                  + np.sum(np.linalg.norm(A.reshape(5, 3, 1), axis=(0, 1))), (A53,))
    check_program(lambda b: np.sum(np.kron(np.outer(b, b[:2]), np.eye(2))
                                   * np.arange(40).reshape(10, 4)), (B5,), jac=True)
    check_program(lambda M: np.trace(M, offset=1) + np.trace(M @ M, offset=-1), (M33,),
                  jac=True)
    check_program(lambda T: np.sum(np.trace(T, axis1=1, axis2=2) ** 2), (T233,))
    check_program(lambda M: np.einsum("ii->", M) + np.sum(np.einsum("ii->i", M) ** 2), (M33,),
                  jac=True)
    check_program(lambda T: np.sum(np.einsum("...ij,...jk->...ik", T, T) ** 2)
                  + np.sum(np.einsum("bii->b", T) ** 2) + np.einsum("bij,bij->", T, T)
                  + np.sum(np.einsum("i...->...", T) ** 2)
                  + np.einsum("bij,bjk,bkl->", T, T, T, optimize=True), (T233,))
    check_program(lambda T: np.sum(np.tensordot(T, T, axes=([1, 2], [2, 1])) ** 2)
                  + np.sum(np.tensordot(T, M33, 1)), (T233,))
    check_program(lambda b: np.sum(np.inner(b.reshape(5, 1) * b, b)) + np.vdot(b, b * 2),
                  (B5,), jac=True)


# --------------------------------------------------------------------------------------
# complex intermediates and complex inputs
# --------------------------------------------------------------------------------------
Z4 = RNG.standard_normal(4) + 1j * RNG.standard_normal(4)
ZM = RNG.standard_normal((3, 3)) + 1j * RNG.standard_normal((3, 3))
WM = RNG.standard_normal((3, 3)) + 1j * RNG.standard_normal((3, 3))
AC = RNG.standard_normal((6, 4)) + 1j * RNG.standard_normal((6, 4))
X8 = RNG.standard_normal(8)


def phase_retrieval(z):
    y = np.abs(AC @ Z4) ** 2 * 1.1
    return np.sum((np.abs(AC @ z) ** 2 - y) ** 2)


COMPLEX = {
    "fft_round_trip": (lambda x: np.sum(np.abs(np.fft.fft(x)) ** 2 * np.arange(8))
                       + np.sum(np.real(np.fft.ifft(np.fft.fft(x) * np.exp(1j * np.arange(8))))
                                ** 2), (X8,)),
    "rfft_filter": (lambda x: np.sum(np.fft.irfft(np.fft.rfft(x) * np.arange(5), n=8) ** 2),
                    (X8,)),
    "abs_angle_conj": (lambda z: np.sum(np.abs(z) ** 3) + np.sum(np.angle(z) * np.arange(4))
                       + np.real(np.sum(np.conj(z) * z * (1 + 2j))), (Z4,)),
    "complex_matmul": (lambda Z: np.sum(np.abs(Z @ Z.conj().T @ Z) ** 2), (ZM,)),
    "phase_retrieval": (phase_retrieval, (Z4,)),
    "phase_retrieval_fft": (lambda z: np.sum((np.abs(np.fft.fft(z, n=8)) - 1.0) ** 2), (Z4,)),
    "holomorphic_chain": (lambda z: np.sum(np.real(np.exp(1j * z) * np.log(z)))
                          + np.sum(np.imag(np.sqrt(z))) + np.sum(np.abs(z ** (1 + 0.5j))),
                          (Z4,)),
    "complex_linalg": (lambda Z: np.sum(np.abs(np.linalg.solve(Z + 3 * np.eye(3), WM[0])) ** 2)
                       + np.abs(np.linalg.det(Z)) + np.linalg.slogdet(Z)[1]
                       + np.sum(np.linalg.svd(Z, compute_uv=False))
                       + np.sum(np.linalg.eigvalsh(Z + Z.conj().T) ** 2), (ZM,)),
    "complex_contractions": (lambda Z: np.abs(np.sum(np.tensordot(Z, WM, axes=1) * WM))
                             + np.abs(np.trace(Z @ WM)) + np.sum(np.abs(np.kron(Z[0], WM[1])))
                             + np.abs(np.vdot(Z, WM)) + np.abs(np.sum(np.inner(Z, WM))), (ZM,)),
    "complex_var_std": (lambda z: np.var(z) + np.std(z * WM[0, 0], ddof=1), (Z4,)),
    "complex_real_input": (lambda x: np.sum(np.angle(x + 1j * x[::-1]))
                           + np.sum(np.abs(x * np.exp(1j * x[::-1]) + 1)), (X8,)),
    # regression: prod / cumprod pulled back g * d instead of g * conj(d)
    "complex_prod": (lambda z: np.real(np.prod(z) * (1 + 2j)) + np.abs(np.prod(z[:2]) + 1j),
                     (Z4,)),
    "complex_cumprod": (lambda z: np.sum(np.abs(np.cumprod(z) + 1))
                        + np.sum(np.real(np.multiply.accumulate(z) * (1 - 1j))), (Z4,)),
    "complex_prod_zero": (lambda z: np.real(np.prod(z) * (1 + 2j))
                          + np.sum(np.imag(np.cumprod(z) * (2 - 1j))),
                          (np.array([0.3 + 0.7j, 0j, -1.2 + 0.4j]),)),
    "complex_prod_axis": (lambda Z: np.sum(np.abs(np.prod(Z, axis=0, keepdims=True) + 1j))
                          + np.abs(np.multiply.reduce(Z, axis=1)[0]), (ZM,)),
}


@pytest.mark.parametrize("name", sorted(COMPLEX))
def test_complex_programs(name):
    f, args = COMPLEX[name]
    check_program(f, args, rtol=1e-6)


# --------------------------------------------------------------------------------------
# float32 and mixed precision
# --------------------------------------------------------------------------------------
X32 = RNG.standard_normal(6).astype(np.float32)
M32 = RNG.standard_normal((3, 3)).astype(np.float32)

FLOAT32 = {
    "mixed_with_float64": (lambda x, y: np.sum(x * y) + np.sum(np.exp(x * 0.3)), (X32, X8[:6])),
    "linalg": (lambda M: np.linalg.slogdet(M @ M.T + np.eye(3, dtype=np.float32))[1]
               + np.sum(np.linalg.inv(M + 3 * np.eye(3))) + np.linalg.norm(M, "nuc")
               + np.sum(np.linalg.cholesky(M @ M.T + np.eye(3))), (M32,)),
    "fft_stats": (lambda x: np.sum(np.abs(np.fft.rfft(x))) + np.var(x, ddof=1) + np.std(x)
                  + np.percentile(x, 30) + np.average(x, weights=np.arange(1.0, 7.0)), (X32,)),
    # regression: np.sinc calls np.where(x, x, eps) with a float condition, which the
    # compiled plan could not cast to bool for float32 (it fell back to eager)
    "sinc": (lambda x: np.sum(np.sinc(x) * np.arange(6)), (X32,)),
    "float_condition_where": (lambda x: np.sum(np.where(x * 2, x, np.float32(0.25)) ** 2),
                              (np.array([0.5, -1.2, 0.0, 2.0], np.float32),)),
    "complex64": (lambda z: np.sum(np.abs(z) ** 2) + np.sum(np.abs(np.fft.fft(z))),
                  ((X32[:4] + 1j * X32[2:]).astype(np.complex64),)),
}


@pytest.mark.parametrize("name", sorted(FLOAT32))
def test_float32_programs(name):
    f, args = FLOAT32[name]
    check_program(f, args)


def test_float32_grad_of_mixed_program_is_float32_for_both_args():
    f, args = FLOAT32["mixed_with_float64"]
    g = tg.grad(f, argnums=(0, 1))(*args)
    assert g[0].dtype == np.float32 and g[1].dtype == np.float64


# --------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------
X46 = RNG.standard_normal((4, 6))
W6 = RNG.random(6) + 0.1
X7 = RNG.standard_normal(7)


def histogram_weighted(x):
    counts, edges = np.histogram(x, bins=4)
    centres = 0.5 * (edges[1:] + edges[:-1])
    return np.sum(counts * centres) + np.sum(x ** 2)


def kde_nll(x, h=0.4):
    pts = np.linspace(-2, 2, 5)
    d = (pts[:, None] - x[None, :]) / h
    return -np.sum(np.log(np.mean(np.exp(-0.5 * d ** 2), axis=1) / (h * np.sqrt(2 * np.pi))))


def robust_regression(w):
    r = X46 @ w - 1
    s = 1.4826 * np.median(np.abs(r - np.median(r)))
    u = r / s
    huber = np.where(np.abs(u) < 1.5, 0.5 * u ** 2, 1.5 * np.abs(u) - 1.125)
    return np.sum(huber) + np.sum(np.log(np.cosh(r))) + np.sum(1 - (1 - np.minimum(u ** 2, 1)) ** 3)


STATS = {
    "var_std_ddof_axes": (lambda X: sum(np.sum(np.var(X, ddof=dd, axis=ax) * 1.3)
                                        + np.sum(np.std(X, ddof=dd, axis=ax, keepdims=True))
                                        for dd in (0, 1) for ax in (None, 0, -1, (0, 1))),
                          (X46,)),
    "var_where_mean_correction": (lambda X: np.var(X, where=X > 0) + np.mean(X, where=X < 0.5)
                                  + np.sum(np.var(X, axis=1, mean=np.mean(X, axis=1,
                                                                         keepdims=True)))
                                  + np.sum(np.std(X, axis=0, correction=1)), (X46,)),
    "cov_corrcoef": (lambda X: np.sum(np.cov(X) ** 2) + np.sum(np.cov(X, rowvar=False, ddof=0))
                     + np.sum(np.corrcoef(X) ** 3) + np.sum(np.cov(X[0], X[1]))
                     + np.sum(np.cov(X, fweights=np.array([1, 2, 1, 3, 1, 1])) ** 2), (X46,)),
    "cov_aweights_grad_weights": (lambda w: np.sum(np.cov(X46, aweights=w) ** 2), (W6,)),
    "average_weights": (lambda X: np.sum(np.average(X, axis=1, weights=W6) ** 2)
                        + np.sum(np.average(X, axis=-1, weights=W6, keepdims=True) * X), (X46,)),
    "average_grad_weights": (lambda w: np.sum(np.average(X46, axis=1, weights=w,
                                                         returned=True)[0] ** 2), (W6,)),
    "histogram_as_constants": (histogram_weighted, (X7,)),
    "percentiles": (lambda x: sum(np.percentile(x, q, method=m) for q in (0, 30, 87.5, 100)
                                  for m in ("linear", "lower", "higher", "midpoint", "nearest"))
                    + np.quantile(x, 0.4), (X7,)),
    "percentile_axis_vector_q": (lambda X: np.sum(np.percentile(X, [10, 90], axis=1) ** 2)
                                 + np.sum(np.median(X, axis=0) ** 2), (X46,)),
    "percentile_grad_q": (lambda q: np.percentile(X7, q[0]), (np.array([37.0]),)),
    "kde_nll": (kde_nll, (X7,)),
    "kde_bandwidth": (lambda h: kde_nll(X7, h), (np.array(0.4),)),
    "robust_losses": (robust_regression, (W6,)),
    "zscore_nan_reductions": (lambda X: np.sum(((X - X.mean(axis=0, keepdims=True))
                                                / X.std(axis=0, ddof=1, keepdims=True)) ** 3)
                              + np.nanmean(X) + np.nanstd(X) + np.nansum(X ** 2), (X46,)),
}


@pytest.mark.parametrize("name", sorted(STATS))
def test_statistics_programs(name):
    f, args = STATS[name]
    check_program(f, args, rtol=1e-6)


# --------------------------------------------------------------------------------------
# integer and boolean inputs
# --------------------------------------------------------------------------------------
X5 = RNG.standard_normal(5)
IDX = np.array([0, 2, 2, 4])
LAB = np.array([1, 0, 1, 1, 0])


def test_int_and_bool_args_not_differentiated():
    check_program(lambda x, i, lab: np.sum(x[i] ** 2) + np.sum(x * lab)
                  + np.sum(np.bincount(i, minlength=5) * x) + np.sum(x * (lab == 1))
                  + np.sum(x * (lab + 1) // 2) + np.sum(x ** lab)
                  + np.sum(np.where(lab.astype(bool), x, -x)) + (lab @ x) ** 2
                  + np.sum(x[np.cumsum(lab) < 2] ** 2), (X5, IDX, LAB))
    check_program(lambda x, b: np.sum(x * b) + np.sum(b * x ** 2) + np.sum(x[b])
                  + np.sum(x * np.arange(5, dtype=np.int8)), (X5, LAB.astype(bool)))
    check_program(lambda W, eye: np.sum((eye @ W) ** 2) + np.sum(W @ eye.T),
                  (M33, np.eye(3, dtype=int)))


@pytest.mark.parametrize("make", [
    lambda: tg.grad(lambda x, i: np.sum(x[i]), argnums=1)(X5, IDX),
    lambda: tg.grad(lambda x, b: np.sum(x * b), argnums=1)(X5, LAB.astype(bool)),
    lambda: tg.grad(lambda n: n * 2.0)(3),
    lambda: tg.grad(lambda x, i: np.sum(x[i]), argnums=(0, 1))(X5, IDX),
    lambda: tg.grad(lambda p: np.sum(p["w"]) * p["n"])({"w": X5, "n": np.array(3)}),
    lambda: tg.jacfwd(lambda i: i * 2.0)(IDX),
    lambda: tg.jacrev(lambda i: i * 2.0)(IDX),
    lambda: tg.jvp(lambda i: i * 2.0, (IDX,), (np.ones(4),)),
    lambda: tg.jit(tg.grad(lambda x, i: np.sum(x[i]), argnums=1))(X5, IDX),
])
def test_int_argnums_raise(make):
    with pytest.raises(tg.NonDifferentiableInput):
        make()


# --------------------------------------------------------------------------------------
# pytrees
# --------------------------------------------------------------------------------------
Layer = collections.namedtuple("Layer", "W b")
PARAMS = {"layers": [Layer(RNG.standard_normal((3, 4)), RNG.standard_normal(4)),
                     Layer(RNG.standard_normal((4, 2)), RNG.standard_normal(2))],
          "scale": (np.array(1.3), {"t": RNG.standard_normal(2)})}
X53 = RNG.standard_normal((5, 3))


def tree_net(p, X):
    h = X
    for layer in p["layers"]:
        h = np.tanh(h @ layer.W + layer.b)
    return np.sum((h * p["scale"][0] + p["scale"][1]["t"]) ** 2)


def test_nested_pytree_namedtuple_params():
    g = check_program(tree_net, (PARAMS, X53))
    assert type(g["layers"]) is list and type(g["layers"][0]) is Layer
    assert type(g["scale"]) is tuple and type(g["scale"][1]) is dict
    pick = lambda p: tg.grad(tree_net)(p, X53)["scale"][1]["t"]  # noqa: E731
    assert_tree_close(tg.jacfwd(pick)(PARAMS), tg.jacrev(pick)(PARAMS), 1e-9,
                      what="jacfwd vs jacrev")


def test_has_aux_dict_under_jit():
    def f(p, X):
        loss = tree_net(p, X)
        return loss, {"loss": loss, "n": X.shape[0], "h": np.tanh(X)}
    (v, aux), g = tg.value_and_grad(f, has_aux=True)(PARAMS, X53)
    assert aux["n"] == 5 and type(aux["loss"]) is np.ndarray and np.isclose(aux["loss"], v)
    jg = tg.jit(tg.grad(f, has_aux=True))
    for p in (PARAMS, perturb(PARAMS, np.random.default_rng(1))):
        ge, ae = tg.grad(f, has_aux=True)(p, X53)
        for _ in range(2):
            gj, aj = jg(p, X53)
            assert_tree_close(gj, ge, 1e-10)
            assert aj["n"] == 5 and np.allclose(aj["loss"], ae["loss"])
            np.testing.assert_allclose(aj["h"], ae["h"])


def test_python_float_and_empty_leaves():
    g = tg.grad(lambda p: p["a"] ** 2 * p["b"][0])({"a": 1.5, "b": [2.0]})
    assert np.isclose(g["a"], 6.0) and np.isclose(g["b"][0], 2.25)
    check_program(lambda p: np.sum(p[0] ** 2) + np.sum(p[1] * 2), ((X5, np.zeros((0, 2))),))


# --------------------------------------------------------------------------------------
# broadcasting edge cases
# --------------------------------------------------------------------------------------
T2131 = RNG.standard_normal((2, 1, 3, 1))
X3 = RNG.standard_normal(3)


def _ellipsis_write(T):
    a = T * 1.0
    a[..., 0] = a[..., 0] * 2 + 1
    return np.sum(a ** 3)


BROADCAST = {
    "size1_axes": (lambda T: np.sum((T * np.ones((4, 2, 5, 3, 6))) ** 2)
                   + np.sum(T.squeeze() * X3) + np.sum(T[..., 0] * T[:, :, None, :, 0]), (T2131,)),
    "keepdims_negative_axes": (lambda T: np.sum(T / np.sum(T ** 2, axis=(-2, -4), keepdims=True))
                               + np.sum(np.max(T, axis=-2, keepdims=True) * T)
                               + np.sum(np.cumsum(T, axis=-2) * np.arange(3)[:, None])
                               + np.sum(np.prod(T, axis=-2) ** 2), (T2131,)),
    "ellipsis_newaxis": (lambda T: np.sum(T[..., np.newaxis, 0, :] ** 2 * np.arange(3)[:, None])
                         + np.sum(T[0, ..., None] * T[None, :, 0, ..., 0]), (T2131,)),
    "ellipsis_write": (_ellipsis_write, (T2131,)),
    "expand_moveaxis_broadcast_to": (lambda T: np.sum(np.expand_dims(T, (-1, 0))
                                                      * np.swapaxes(T, -1, -3)[..., None])
                                     + np.sum(np.broadcast_to(T, (5, 2, 4, 3, 2)) * np.arange(2))
                                     + np.sum(np.broadcast_arrays(T, X3)[0] ** 2), (T2131,)),
    "size0_axis": (lambda x: np.sum(x[None, :] * np.zeros((0, 3))) + np.sum(x ** 2)
                   + np.sum(np.concatenate([x, np.zeros(0), x[3:]]) ** 2), (X3,)),
    "zero_d": (lambda s: s[()] ** 2 + s[...] ** 3 + np.sum(s[np.newaxis, np.newaxis] * X3)
               + np.sum(s ** 2, keepdims=True).sum() + np.mean(s, axis=()), (np.array(0.5),)),
    # regression: ufunc.outer had no rule (pairwise differences, kernels)
    "ufunc_outer": (lambda x: np.sum(np.exp(-np.subtract.outer(x, x) ** 2))
                    + np.sum(np.multiply.outer(x, x[:2]) ** 2)
                    + np.sum(np.add.outer(x, np.ones((2, 3))) * np.arange(3))
                    + np.sum(np.maximum.outer(x, x[::-1] + 0.1))
                    + np.sum(np.hypot.outer(x, x + 1))
                    + np.sum(x * np.sum(np.greater.outer(x, x), axis=1)), (X3,)),
}


@pytest.mark.parametrize("name", sorted(BROADCAST))
def test_broadcasting_programs(name):
    f, args = BROADCAST[name]
    check_program(f, args, rtol=1e-6, jac=True)


def test_ufunc_outer_values_shapes_and_complex():
    x = X3
    M = X46[:2, :3]
    J = tg.jacfwd(lambda M: np.subtract.outer(M, x))(M)
    assert J.shape == (2, 3, 3, 2, 3)
    assert_tree_close(J, tg.jacrev(lambda M: np.subtract.outer(M, x))(M), 1e-12)
    out, _ = tg.vjp(lambda x: np.power.outer(np.abs(x) + 0.5, np.array([1.0, 2.0])), x)
    np.testing.assert_allclose(out, np.power.outer(np.abs(x) + 0.5, np.array([1.0, 2.0])))
    check_program(lambda x: np.sum(np.abs(np.multiply.outer(x * (1 + 2j), x) + 1)), (x,))


@pytest.mark.skipif(not hasattr(np, "matvec"), reason="NumPy < 2.2")
def test_vector_gufuncs_matvec_vecmat_vecdot():
    # regression: NumPy 2.2's np.matvec / np.vecmat / np.vecdot had no rule
    Z = ZM
    check_program(lambda M: np.sum(np.vecmat(M[0], M)) + np.sum(np.matvec(M, M[1]) ** 2)
                  + np.sum(np.vecdot(M, M)) + np.sum(np.vecdot(M, M[::-1], axis=0) ** 2),
                  (M33,), jac=True)
    check_program(lambda T: np.sum(np.matvec(T, T[0, 0]) ** 2)
                  + np.sum(np.vecmat(T[:, 0], T) ** 3), (T233,))
    # complex: vecdot conjugates its first argument, vecmat its vector, matvec nothing
    check_program(lambda Z: np.sum(np.abs(np.matvec(Z, Z[1]) + np.vecmat(Z[0], Z) * 1j))
                  + np.abs(np.sum(np.vecdot(Z, Z[::-1]))), (Z,))
    for f in (lambda Z: np.matvec(Z, WM[0]), lambda Z: np.vecmat(Z[0], WM),
              lambda Z: np.vecdot(Z, WM)):
        out, _ = tg.vjp(f, Z)
        np.testing.assert_allclose(out, f(Z))
    with pytest.raises(TypeError, match="axes"):
        tg.grad(lambda M: np.sum(np.vecdot(M, M, axes=[0, 0, ()])))(M33)
