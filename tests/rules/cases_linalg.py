"""Registry cases (see cases.py for the format) for the ``np.linalg`` primitives
of ``tracegrad.rules.linalg`` and the ``np.fft`` / ``np.angle`` primitives of
``tracegrad.rules.fft``.

Importing this module adds its cases to the tables of ``cases.py``.

Matrices are built so that every derivative exists with a margin, whatever
hypothesis draws (zeros included): a fixed, well-conditioned base (identity,
a random orthogonal ``Q`` or distinct lattice eigenvalues / singular values at
least 1 apart) plus a drawn perturbation small enough never to close the
gaps. Eigen- and singular vectors are returned with a fixed sign (or phase)
so that float32 and float64 runs, and nearby finite-difference points,
compare the same branch.
"""
import numpy as np
from hypothesis import strategies as st

from cases import F64, case, nondiff_case

la = np.linalg


def _orth(n, seed):
    return la.qr(np.random.default_rng(seed).normal(size=(n, n)))[0]


def _sym(x):
    return x + np.swapaxes(x, -1, -2)


def _sign_fix(v, w=None):
    """Columns of ``v`` scaled by the sign (phase) of their largest entry, so
    the result no longer depends on the sign/phase LAPACK happened to pick;
    ``w`` (rows of a Vh, as a column matrix) gets the same factors."""
    p = np.argmax(np.abs(v), axis=-2)          # non-differentiable pivot
    piv = np.take_along_axis(v, p[..., None, :], axis=-2)
    f = np.conjugate(piv) / np.abs(piv) if v.dtype.kind == "c" else np.sign(piv)
    return v * f if w is None else (v * f, w * np.swapaxes(np.conjugate(f), -1, -2))


def _square(d, lo=1, hi=None, batch=True):
    n = d.integer(lo, hi or d.max_side + 1)
    b = d.shape(0, 1 if batch else 0, max_side=2)
    return b + (n, n), n


def _dominant(d, shape, n):
    """A drawn matrix plus (2n+1)·I: diagonally dominant, cond <= 4n+1."""
    return d.array(shape), (2 * n + 1) * np.eye(n)


# --- solve, inv, det, slogdet -------------------------------------------------------------
@case("linalg.solve", name="linalg.solve")
def solve_(d):
    shape, n = _square(d)
    x, base = _dominant(d, shape, n)
    vec = d.boolean()
    bshape = (n,) if vec else d.shape(0, 1, max_side=2) + (n, d.integer(1, 2))
    return (lambda a, b: la.solve(a + base, b)), (x, d.array(bshape))


@case("linalg.solve", name="linalg.solve[complex]", complex=True)
def solve_c(d):
    shape, n = _square(d)
    base = (2 * n + 2) * np.eye(n)
    return (lambda a, b: la.solve(a + base, b)), (d.carray(shape), d.carray((n, 2)))


@case("linalg.inv", name="linalg.inv")
def inv_(d):
    shape, n = _square(d)
    x, base = _dominant(d, shape, n)
    f = d.choice(["inv", "tensorinv", "matrix_power"])
    if f == "inv":
        return (lambda a: la.inv(a + base)), (x,)
    if f == "matrix_power":
        k = d.choice([-1, -2, -3])
        return (lambda a: la.matrix_power((a + base) / (2 * n + 1), k)), (x,)
    x = x[(0,) * (x.ndim - 2)]
    return (lambda a: la.tensorinv(np.reshape(a + base, (n, 1, n)), ind=1)), (x,)


@case("linalg.inv", name="linalg.inv[complex]", complex=True)
def inv_c(d):
    shape, n = _square(d)
    return (lambda a: la.inv(a + (2 * n + 2) * np.eye(n))), (d.carray(shape),)


@case("linalg.det", name="linalg.det")
def det_(d):
    shape, n = _square(d)
    x, base = _dominant(d, shape, n)
    return (lambda a: la.det((a + base) / (2 * n + 1))), (x,)


@case("linalg.det", name="linalg.det[complex]", complex=True)
def det_c(d):
    shape, n = _square(d)
    return (lambda a: la.det((a + (2 * n + 2) * np.eye(n)) / (2 * n + 2))), (d.carray(shape),)


@case("linalg.slogdet", name="linalg.slogdet")
def slogdet_(d):
    shape, n = _square(d)
    x, base = _dominant(d, shape, n)
    sgn = d.choice([1.0, -1.0])
    flip = np.diag([sgn] + [1.0] * (n - 1))
    # the sign output is piecewise constant: returned, with zero derivative
    return (lambda a: tuple(la.slogdet((a + base) @ flip))), (x,)


@case("linalg.slogdet", name="linalg.slogdet[complex]", complex=True)
def slogdet_c(d):
    shape, n = _square(d)
    return (lambda a: tuple(la.slogdet(a + (2 * n + 2) * np.eye(n)))), (d.carray(shape),)


# --- cholesky ----------------------------------------------------------------------------
@case("linalg.cholesky", name="linalg.cholesky")
def cholesky_(d):
    shape, n = _square(d)
    upper = d.boolean()
    # B B^T + n I: symmetric positive definite for any drawn B
    return (lambda b: la.cholesky(b @ np.swapaxes(b, -1, -2) + n * np.eye(n), upper=upper)), (
        d.array(shape),)


@case("linalg.cholesky", name="linalg.cholesky[complex]", complex=True)
def cholesky_c(d):
    shape, n = _square(d)
    # Hermitian part of a drawn matrix plus 6n·I: positive definite (Gershgorin:
    # |z_ij| <= 2*sqrt(2), so the diagonal is >= 6n - 4 > 2*sqrt(2)*2*(n - 1))
    return (lambda z: la.cholesky(z + np.conjugate(np.swapaxes(z, -1, -2)) +
                                  (6 * n) * np.eye(n))), (d.carray(shape),)


# --- eigh, eigvalsh ----------------------------------------------------------------------
def _spectrum(d, n):
    """Distinct eigenvalues on a lattice, at least 1 apart."""
    w = d(st.permutations(range(-n, n + 1)), "eigs")[:n]
    return np.array(sorted(w), float)


def _eigh_input(d):
    shape, n = _square(d)
    w = _spectrum(d, n)
    q = _orth(n, n)
    base = q @ np.diag(w) @ q.T
    # |perturbation| <= 0.2 in norm: gaps stay >= 0.6
    scale = 0.05 / max(n, 1)
    return shape, n, base, scale


@case("linalg.eigh", name="linalg.eigh")
def eigh_(d):
    shape, n, base, scale = _eigh_input(d)
    uplo = d.choice(["L", "U"])

    def f(x):
        w, v = la.eigh(base + scale * _sym(x), UPLO=uplo)
        return w, _sign_fix(v)
    return f, (d.array(shape),)


@case("linalg.eigh", name="linalg.eigh[complex]", complex=True)
def eigh_c(d):
    shape, n, base, scale = _eigh_input(d)

    def f(x):
        h = x + np.conjugate(np.swapaxes(x, -1, -2))
        w, v = la.eigh(base + scale * h)
        # complex eigenvectors are defined up to a phase LAPACK may flip
        # between nearby inputs: test phase-invariant functions of them
        return w, np.real(v * np.conjugate(v))
    return f, (d.carray(shape),)


@case("linalg.eigvalsh", name="linalg.eigvalsh")
def eigvalsh_(d):
    shape, n, base, scale = _eigh_input(d)
    return (lambda x: la.eigvalsh(base + scale * _sym(x))), (d.array(shape),)


# --- eig, eigvals --------------------------------------------------------------------------
def _eig_input(d, rotation):
    n = d.integer(2, d.max_side + 1)
    w = _spectrum(d, n)
    m = np.diag(w)
    if rotation:  # one complex-conjugate pair: a +- 1.5i
        m[:2, :2] = [[w[0], -1.5], [1.5, w[0]]]
    p = np.eye(n) + 0.3 * _orth(n, n + 7)   # well-conditioned, non-orthogonal basis
    base = p @ m @ la.inv(p)
    return n, base, 0.05 / n


@case("linalg.eig", dtypes=(F64,), name="linalg.eig[real eigenvalues]")
def eig_real_(d):
    n, base, scale = _eig_input(d, rotation=False)

    def f(x):
        w, v = la.eig(base + scale * x)
        return w, _sign_fix(v)
    return f, (d.array((n, n)),)


@case("linalg.eig", name="linalg.eig[complex eigenvalues]", complex=True, dtypes=(F64,))
def eig_cplx(d):
    n, base, scale = _eig_input(d, rotation=True)

    def f(x):
        w, v = la.eig(base + scale * x)
        return w, _sign_fix(v)
    return f, (d.array((n, n)),)


@case("linalg.eigvals", complex=True, dtypes=(F64,), name="linalg.eigvals")
def eigvals_(d):
    n, base, scale = _eig_input(d, rotation=d.boolean())
    return (lambda x: la.eigvals(base + scale * x)), (d.array((n, n)),)


# --- svd, svdvals, pinv, lstsq ---------------------------------------------------------------
def _rect(d, batch=True):
    m = d.integer(1, d.max_side + 1)
    n = d.integer(1, d.max_side + 1)
    b = d.shape(0, 1 if batch else 0, max_side=2)
    k = min(m, n)
    s = np.arange(k, 0, -1, dtype=float) + 1.0        # 1 apart, >= 2
    base = _orth(m, m + 3)[:, :k] @ np.diag(s) @ _orth(n, n + 5)[:k, :]
    return b + (m, n), base, 0.05 / max(m, n)


@case("linalg.svd", name="linalg.svd")
def svd_(d):
    shape, base, scale = _rect(d)
    full = d.boolean()

    def f(x):
        u, s, vh = la.svd(base + scale * x, full_matrices=full)
        k = s.shape[-1]
        u_, vh_ = _sign_fix(u[..., :, :k], vh[..., :k, :])
        out = (u_, s, vh_)
        if full:   # the complements through their projectors
            up, vp = u[..., :, k:], vh[..., k:, :]
            out += (up @ np.swapaxes(up, -1, -2), np.swapaxes(vp, -1, -2) @ vp)
        return out
    return f, (d.array(shape),)


@case("linalg.svd", name="linalg.svd[complex]", complex=True)
def svd_c(d):
    shape, base, scale = _rect(d)

    def f(x):
        u, s, vh = la.svd(base + scale * x, full_matrices=False)
        # phase-invariant: |U|², s, |Vh|² and the rank-one terms u_k vh_k
        rank1 = u[..., :, None, :] * np.swapaxes(vh, -1, -2)[..., None, :, :]
        return np.abs(u) ** 2, s, np.abs(vh) ** 2, rank1
    return f, (d.carray(shape),)


@case("linalg.svdvals", name="linalg.svdvals")
def svdvals_(d):
    shape, base, scale = _rect(d)
    f = d.choice([lambda a: la.svd(a, compute_uv=False), la.svdvals,
                  lambda a: la.norm(a, "nuc", axis=(-2, -1)),
                  lambda a: la.norm(a, 2, axis=(-2, -1)), lambda a: la.cond(a)])
    return (lambda x: f(base + scale * x)), (d.array(shape),)


@case("linalg.pinv", name="linalg.pinv")
def pinv_(d):
    if d.boolean():   # hermitian=True: eigenvalues on a half-integer lattice, |w| >= 1/2
        shape, n, base, scale = _eigh_input(d)
        base = base + 0.5 * np.eye(n)
        return (lambda x: la.pinv(base + scale * _sym(x), hermitian=True)), (d.array(shape),)
    shape, base, scale = _rect(d)
    return (lambda x: la.pinv(base + scale * x)), (d.array(shape),)


@case("linalg.pinv", name="linalg.pinv[complex]", complex=True)
def pinv_c(d):
    shape, base, scale = _rect(d)
    return (lambda x: la.pinv(base + scale * x)), (d.carray(shape),)


@case("linalg.lstsq", "linalg.svdvals", name="linalg.lstsq")
def lstsq_(d):
    shape, base, scale = _rect(d, batch=False)
    m = shape[0]
    bshape = (m,) if d.boolean() else (m, d.integer(1, 2))

    def f(x, b):
        # residuals are checked in test_linalg.py: summed here in another
        # order than LAPACK's, they differ from NumPy's in the last bits
        x_, res, rank, s = la.lstsq(base + scale * x, b)
        return x_, s
    return f, (d.array(shape), d.array(bshape))


# --- qr ------------------------------------------------------------------------------------
@case("linalg.qr", name="linalg.qr")
def qr_(d):
    shape, base, scale = _rect(d)
    mode = d.choice(["reduced", "complete", "r"])

    def f(x):
        a = base + scale * x
        if mode == "r":
            return la.qr(a, mode="r")
        q, r = la.qr(a, mode=mode)
        k = min(a.shape[-2:])
        out = (q[..., :, :k], r)
        if q.shape[-1] > k:  # the complement through its projector
            qp = q[..., :, k:]
            out += (qp @ np.swapaxes(qp, -1, -2),)
        return out
    return f, (d.array(shape),)


@case("linalg.qr", name="linalg.qr[complex]", complex=True)
def qr_c(d):
    shape, base, scale = _rect(d)
    # LAPACK skips the reflection of a column whose pivot is exactly real with a zero
    # subcolumn, so NumPy's complex QR jumps (R_kk changes sign) at such inputs, e.g.
    # real-valued ones: a complex base keeps the pivots off the real axis.
    base = base * (1 + 0.5j)
    return (lambda x: tuple(la.qr(base + scale * x))), (d.carray(shape),)


nondiff_case("linalg.matrix_rank", name="linalg.matrix_rank")(
    lambda d: ((lambda x: (la.matrix_rank(x), la.matrix_rank(x[..., :1, :]))),
               (d.array(d.shape(2, 3, min_side=1)),)))


# --- fft -------------------------------------------------------------------------------------
def _reim(z):
    return np.real(z), np.imag(z)


def _nd_args(d, ndim):
    """(s, axes) for an n-d transform of an ``ndim`` array, or (None, None)."""
    k = d.integer(1, ndim)
    axes = d(st.permutations(range(ndim)), "axes")[:k]
    axes = [a - ndim if d.boolean() else a for a in axes]
    s = [d.integer(1, 4) for _ in axes] if d.boolean() else None
    return s, axes


_NORMS = [None, "backward", "ortho", "forward"]


@case("fft.fftn", name="fft.fftn[real input]")
def fft_real(d):
    x = d.array(d.shape(1, 3))
    norm = d.choice(_NORMS)
    kind = d.choice(["fft", "ifft", "fftn", "ifftn", "fft2", "ifft2"])
    if kind in ("fft", "ifft"):
        n = d.choice([None, 1, 3, 5])
        ax = d.axis(x.ndim)
        f = getattr(np.fft, kind)
        return (lambda x: _reim(f(x, n=n, axis=ax, norm=norm))), (x,)
    if kind in ("fft2", "ifft2") and x.ndim < 2:
        x = x[None]
    f = getattr(np.fft, kind)
    if kind.endswith("2"):
        s = [d.integer(1, 4), d.integer(1, 4)] if d.boolean() else None
        return (lambda x: _reim(f(x, s=s, norm=norm))), (x,)
    s, axes = _nd_args(d, x.ndim)
    return (lambda x: _reim(f(x, s=s, axes=axes, norm=norm))), (x,)


@case("fft.fftn", name="fft.fftn[complex]", complex=True)
def fft_complex(d):
    z = d.carray(d.shape(1, 3))
    norm = d.choice(_NORMS)
    inverse = d.boolean()
    s, axes = _nd_args(d, z.ndim)
    f = np.fft.ifftn if inverse else np.fft.fftn
    return (lambda z: f(z, s=s, axes=axes, norm=norm)), (z,)


@case("fft.rfftn", name="fft.rfftn")
def rfft_(d):
    x = d.array(d.shape(1, 3))
    norm = d.choice(_NORMS)
    kind = d.choice(["rfft", "rfftn", "ihfft"])
    if kind != "rfftn":
        n = d.choice([None, 1, 2, 3, 4, 5])
        ax = d.axis(x.ndim)
        f = getattr(np.fft, kind)
        return (lambda x: _reim(f(x, n=n, axis=ax, norm=norm))), (x,)
    s, axes = _nd_args(d, x.ndim)
    return (lambda x: _reim(np.fft.rfftn(x, s=s, axes=axes, norm=norm))), (x,)


@case("fft.irfftn", complex=True, name="fft.irfftn")
def irfft_(d):
    z = d.carray(d.shape(1, 3))
    norm = d.choice(_NORMS)
    kind = d.choice(["irfft", "irfftn", "hfft"])
    if kind != "irfftn":
        n = d.choice([None, 1, 2, 3, 4, 5])
        ax = d.axis(z.ndim)
        f = getattr(np.fft, kind)
        if n is None and z.shape[ax] == 1:
            n = 2
        return (lambda z: f(z, n=n, axis=ax, norm=norm)), (z,)
    s, axes = _nd_args(d, z.ndim)
    if s is None and z.shape[axes[-1]] == 1:
        s = [z.shape[a] for a in axes[:-1]] + [2]
    return (lambda z: np.fft.irfftn(z, s=s, axes=axes, norm=norm)), (z,)


@case("fft.irfftn", name="fft.irfftn[real]")
def irfft_real(d):
    x = d.array(d.shape(1, 2))
    n = d.choice([2, 3, 4])
    return (lambda x: np.fft.irfft(x, n=n)), (x,)


@case("fft.fftn", "fft.irfftn", "fft.rfftn", name="fft[convolution]")
def fft_conv(d):
    n = d.integer(1, 5)
    h = np.fft.rfft(np.random.default_rng(n).normal(size=n))

    def f(x):
        return (np.fft.irfft(np.fft.rfft(x) * h, n=n),
                np.real(np.fft.ifft(np.fft.fft(x) * np.fft.fft(x[::-1]))),
                # Parseval; |F|² written as F·conj(F) (abs has a kink at 0)
                np.sum(np.real(np.fft.fft(x) * np.conjugate(np.fft.fft(x)))))
    return f, (d.array((n,)),)


# --- angle ------------------------------------------------------------------------------------
@case("angle", complex=True, name="angle")
def angle_(d):
    # away from the branch cut on the negative real axis and from 0
    z = d.carray(d.shape(), re=(0.2, 2.0), im=(-1.5, 1.5))
    deg = d.boolean()
    return (lambda z: np.angle(z, deg=deg)), (z,)


@case("angle", name="angle[of fft]")
def angle_fft(d):
    x = d.array((4,), 0.5, 2.0)
    # bin 1 is (x0 - x2) + i(x3 - x1): adding 3 keeps it right of the cut and off 0
    return (lambda x: np.angle(np.fft.rfft(x)[1:2] + 3.0)), (x,)
