"""np.fft rules and complex intermediates (issue #3, part 2).

Real losses of complex intermediates are checked against central
differences on the real inputs and on the real and imaginary parts of
complex inputs (the cotangent of ``z = x + iy`` is ``dL/dx + i dL/dy``).
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tracegrad as tg

from test_linalg import check

F = np.fft
NORMS = [None, "backward", "ortho", "forward"]


def _rng(seed=0):
    return np.random.default_rng(seed)


def _c(shape, seed=0):
    r = _rng(seed)
    return r.normal(size=shape) + 1j * r.normal(size=shape)


# --- every transform, every norm, n / s / axes -------------------------------------------------
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", ["fft", "ifft"])
@pytest.mark.parametrize("n", [None, 3, 8, 11])
def test_c2c_1d(name, norm, n):
    f = getattr(F, name)
    x = _rng().normal(size=(3, 8))
    check(lambda x: f(x, n=n, norm=norm), x)
    check(lambda z: f(z, n=n, axis=0, norm=norm), _c((3, 8)))


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("n", [None, 1, 4, 6, 7, 9])
def test_rfft_irfft_1d(norm, n):
    x = _rng().normal(size=(2, 7))
    check(lambda x: F.rfft(x, n=n, norm=norm), x)
    check(lambda x: F.rfft(x, n=n, axis=0, norm=norm), x)
    z = _c((2, 5))
    check(lambda z: F.irfft(z, n=n, norm=norm), z)
    check(lambda z: F.hfft(z, n=n, norm=norm), z)
    check(lambda x: F.ihfft(x, n=n, norm=norm), x)
    # a real half spectrum is accepted by irfft
    check(lambda x: F.irfft(x, n=n, norm=norm), x)


@pytest.mark.filterwarnings("ignore:`axes` should not be `None`:DeprecationWarning")
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("s, axes", [(None, None), ((2, 6), None), (None, (0, 2)),
                                     ((3, 5), (2, 0)), ((4,), (-2,)), (None, (1, -1, 0))])
def test_nd(norm, s, axes):
    x = _rng(1).normal(size=(2, 3, 4))
    z = _c((2, 3, 4), 1)
    check(lambda x: F.fftn(x, s=s, axes=axes, norm=norm), x)
    check(lambda z: F.ifftn(z, s=s, axes=axes, norm=norm), z)
    check(lambda x: F.rfftn(x, s=s, axes=axes, norm=norm), x)
    check(lambda z: F.irfftn(z, s=s, axes=axes, norm=norm), z)


@pytest.mark.parametrize("norm", NORMS)
def test_2d(norm):
    x = _rng(2).normal(size=(2, 4, 5))
    z = _c((2, 4, 5), 2)
    check(lambda x: F.fft2(x, norm=norm), x)
    check(lambda z: F.ifft2(z, s=(3, 6), norm=norm), z)
    check(lambda x: F.rfft2(x, axes=(0, 2), norm=norm), x)
    check(lambda z: F.irfft2(z, s=(4, 7), norm=norm), z)


@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.data())
def test_random_shapes_and_lengths(shape, data):
    ndim = len(shape)
    k = data.draw(st.integers(1, ndim))
    axes = data.draw(st.permutations(range(ndim)))[:k]
    s = data.draw(st.none() | st.lists(st.integers(1, 5), min_size=k, max_size=k))
    norm = data.draw(st.sampled_from(NORMS))
    x = _rng(ndim).normal(size=shape)
    check(lambda x: F.fftn(x, s=s, axes=axes, norm=norm), x, jac=False)
    check(lambda x: F.rfftn(x, s=s, axes=axes, norm=norm), x, jac=False)
    z = _c(shape, ndim)
    s2 = s if s is not None else [shape[a] for a in axes[:-1]] + [2 * shape[axes[-1]]]
    check(lambda z: F.irfftn(z, s=s2, axes=axes, norm=norm), z, jac=False)


# --- adjoint structure ------------------------------------------------------------------------
def test_rfft_vjp_doubling_and_irfft_adjoint():
    """rfft drops the negative frequencies: its VJP is the real part of the
    inverse transform of the zero-extended half spectrum; irfft's VJP doubles
    every bin but DC and Nyquist."""
    n = 8
    g = _c((n // 2 + 1,), 3)
    _, pull = tg.vjp(F.rfft, np.zeros(n))
    full = np.concatenate([g, np.zeros(n - g.size)])
    np.testing.assert_allclose(pull(g)[0], np.real(n * F.ifft(full)), atol=1e-12)
    y = _rng(3).normal(size=n)
    _, pull = tg.vjp(F.irfft, np.zeros(n // 2 + 1, complex))
    w = np.r_[1, 2 * np.ones(n // 2 - 1), 1]
    np.testing.assert_allclose(pull(y)[0], F.rfft(y) * w / n, atol=1e-12)
    # odd length: no Nyquist bin
    _, pull = tg.vjp(lambda z: F.irfft(z, n=7), np.zeros(4, complex))
    y7 = y[:7]
    np.testing.assert_allclose(pull(y7)[0], F.rfft(y7) * np.r_[1, 2, 2, 2] / 7, atol=1e-12)


def test_irfft_ignores_imaginary_dc_and_nyquist():
    z = _c((5,), 4)
    g = tg.grad(lambda z: np.sum(F.irfft(z) ** 2))(z)
    assert g[0].imag == 0 and g[-1].imag == 0
    check(lambda z: F.irfft(z), z)


def test_jacobians_of_real_transforms():
    x = _rng(5).normal(size=6)
    for f in (lambda x: F.irfft(F.rfft(x) * np.r_[1, 0.5j, 2, 1, 0.5j, 1][:4], n=6),
              lambda x: np.real(F.ifft(F.fft(x) * 2j)),
              lambda x: F.fftshift(x), lambda x: F.ifftshift(x)):
        Jf, Jr = tg.jacfwd(f)(x), tg.jacrev(f)(x)
        np.testing.assert_allclose(Jf, Jr, atol=1e-12)
    np.testing.assert_allclose(tg.jacfwd(F.fftshift)(x), F.fftshift(np.eye(6), axes=0))


# --- real losses of complex intermediates -------------------------------------------------------
def test_parseval_gradient():
    x = _rng(6).normal(size=(3, 8))
    g = tg.grad(lambda x: np.sum(np.abs(F.fft(x)) ** 2))(x)
    np.testing.assert_allclose(g, 2 * 8 * x, rtol=1e-12)
    g = tg.grad(lambda x: np.sum(np.abs(F.fft(x, norm="ortho")) ** 2))(x)
    np.testing.assert_allclose(g, 2 * x, rtol=1e-12)
    z = _c((3, 8), 6)
    g = tg.grad(lambda z: np.sum(np.abs(F.ifft(z, norm="ortho")) ** 2))(z)
    np.testing.assert_allclose(g, 2 * z, rtol=1e-12)


def test_convolution_theorem():
    rng = _rng(7)
    x, h = rng.normal(size=8), rng.normal(size=8)
    H = F.fft(h)

    def circ(x):
        return np.real(F.ifft(F.fft(x) * H))
    C = np.array([[h[(i - j) % 8] for j in range(8)] for i in range(8)])
    np.testing.assert_allclose(circ(x), C @ x, atol=1e-12)
    np.testing.assert_allclose(tg.jacrev(circ)(x), C, atol=1e-12)
    np.testing.assert_allclose(tg.jacfwd(circ)(x), C, atol=1e-12)
    check(circ, x)
    # the filter as a complex input, and its real/imaginary parts
    check(lambda H: np.real(F.ifft(F.fft(x) * H)), H)
    check(lambda a, b: F.irfft(F.rfft(x) * (a + 1j * b), n=8), F.rfft(h).real, F.rfft(h).imag)


def test_complex_helpers():
    z = _c((2, 3), 8)
    check(np.abs, z)
    check(np.real, z)
    check(np.imag, z)
    check(np.conj, z)
    check(np.angle, z)
    check(lambda z: np.angle(z, deg=True), z)
    check(lambda z: np.abs(z) * np.exp(1j * np.angle(z)), z)
    x = _rng(8).normal(size=5)
    check(lambda x: np.angle(F.rfft(x)[1:]) + np.abs(F.rfft(x)[1:]), x)


def test_angle_conventions():
    z = np.array([0j, 1 + 1j, -2 + 0j, 3j])
    g = tg.grad(lambda z: np.sum(np.angle(z)))(z)
    # dθ/dx + i dθ/dy = (-y + ix)/|z|²; 0 at z == 0
    np.testing.assert_allclose(g, [0, (-1 + 1j) / 2, -0.5j, -1 / 3], atol=1e-15)
    _, t = tg.jvp(np.angle, (z,), (np.ones(4, complex),))
    np.testing.assert_allclose(t, [0, -0.5, 0, -1 / 3], atol=1e-15)
    # real input: piecewise constant
    x = np.array([-1.0, 0.0, 2.0])
    assert tg.grad(lambda x: np.sum(np.angle(x)))(x).tolist() == [0, 0, 0]


def test_phase_retrieval_style_loss():
    """A real loss through fft -> abs -> angle -> ifft, against finite differences."""
    x = _rng(9).normal(size=(2, 6))
    target = np.abs(F.fft(_rng(10).normal(size=6)))

    def loss(x):
        X = F.fft(x)
        Y = target * np.exp(1j * np.angle(X))
        return np.sum(np.real(F.ifft(Y) - x) ** 2)
    check(loss, x)


# --- shifts, frequencies, dtypes, errors ----------------------------------------------------------
def test_shift_and_freq():
    x = _rng(11).normal(size=(4, 5))
    for axes in (None, 0, 1, (0, 1), (-1,)):
        check(lambda x: F.fftshift(x, axes=axes), x)
        check(lambda x: F.ifftshift(x, axes=axes), x)
        np.testing.assert_array_equal(tg.jvp(lambda x: F.ifftshift(F.fftshift(x, axes), axes),
                                             (x,), (x,))[1], x)
    # fftfreq is plain Python: differentiable in the spacing d
    g = tg.grad(lambda d: np.sum(F.fftfreq(8, d) ** 2))(0.5)
    f = lambda d: np.sum(F.fftfreq(8, d) ** 2)  # noqa
    assert abs(g - (f(0.5 + 1e-6) - f(0.5 - 1e-6)) / 2e-6) < 1e-4


def test_float32_and_complex64():
    x = _rng(12).normal(size=8).astype(np.float32)
    out, pull = tg.vjp(F.rfft, x)
    assert out.dtype == np.complex64 == F.rfft(x).dtype
    assert pull(np.ones(5, np.complex64))[0].dtype == np.float32
    z = x.astype(np.complex64)
    assert tg.vjp(F.ifft, z)[1](np.ones(8, np.complex64))[0].dtype == np.complex64


def test_errors():
    with pytest.raises(ValueError):
        tg.grad(lambda x: np.sum(np.abs(F.fft(x, norm="bogus"))))(np.ones(4))
    with pytest.raises(ValueError):
        tg.grad(lambda x: np.sum(np.abs(F.fft(x, n=0))))(np.ones(4))
    with pytest.raises(tg.InPlaceError):
        tg.grad(lambda x: np.sum(np.abs(F.fft(x, out=np.zeros(4, complex)))))(np.ones(4))


def test_second_order_through_fft():
    x = _rng(13).normal(size=5)

    def f(x):
        return np.sum(np.abs(F.rfft(x ** 2)) ** 2) + np.sum(F.irfft(F.fft(x)[:3] * 1j, n=5) ** 3)
    H = tg.hessian(f)(x)
    np.testing.assert_allclose(H, H.T, atol=1e-10)
    np.testing.assert_allclose(tg.jacrev(tg.jacrev(f))(x), H, atol=1e-10)
    g = tg.grad(f)
    v = _rng(14).normal(size=5)
    fd = (g(x + 1e-5 * v) - g(x - 1e-5 * v)) / 2e-5
    np.testing.assert_allclose(H @ v, fd, rtol=1e-5, atol=1e-6)
