"""Discrete Fourier transforms (``np.fft``) and complex helpers (``np.angle``).

Primitives
----------
Three linear primitives carry every transform, each with its ``s`` (lengths)
and ``axes`` resolved at record time (axes normalised to negative values, so
the rules work on (co)tangents with leading batch axes):

* ``fft.fftn``  — complex-to-complex, forward or inverse (``inverse=True``):
  ``fft, ifft, fft2, ifft2, fftn, ifftn``;
* ``fft.rfftn`` — real-to-half-spectrum: ``rfft, rfft2, rfftn`` (and
  ``ihfft`` through a conjugate);
* ``fft.irfftn`` — half-spectrum-to-real: ``irfft, irfft2, irfftn`` (and
  ``hfft`` through a conjugate).

``fftshift`` / ``ifftshift`` are rolls; ``fftfreq`` / ``rfftfreq`` are plain
Python in NumPy and need no rule (they are differentiable in ``d``).

Rules
-----
The transforms are linear, so the JVP applies the same transform to the
tangent. The VJP is the adjoint for the real inner product ``Re <a, b>``
(tracegrad's complex convention: the cotangent of ``z = x + iy`` is
``dL/dx + i dL/dy``):

* the adjoint of ``fft`` with ``norm`` is ``ifft`` with the dual norm
  (``backward`` <-> ``forward``, ``ortho`` <-> ``ortho``), and vice versa;
* zero-padding (``n`` larger than the input) is adjoint to cropping and
  cropping to zero-padding;
* ``rfft``: the half spectrum is zero-extended to the full length, the
  inverse transform (dual norm) applied, and the real part kept — the
  negative frequencies that ``rfft`` drops contribute nothing;
* ``irfft`` reads only the half spectrum and ignores the imaginary parts of
  the DC and (even length) Nyquist bins; its adjoint is ``rfft`` with the
  dual norm, with the non-DC/non-Nyquist bins doubled (they stand for two
  conjugate bins of the full spectrum).

All rules are written with ``np.fft`` calls, so they differentiate again.

Complex helpers
---------------
``np.angle`` is a primitive here (``angle``): ``d angle(z) = Im(dz / z)``,
cotangent ``1j * g / conj(z)``; at ``z == 0`` the derivative is taken as 0
(the subgradient convention of ``abs`` at 0). For real input ``angle`` is
piecewise constant and its derivative is 0. ``np.abs``, ``np.real``,
``np.imag`` and ``np.conj`` have their rules in ``elementwise.py`` and
``shape.py``.

Examples
--------
Parseval: the gradient of ``sum |fft(x)|²`` is ``2 n x``.

>>> import numpy as np, tracegrad as tg
>>> tg.grad(lambda x: np.sum(np.abs(np.fft.fft(x)) ** 2))(np.array([1.0, 2.0]))
array([4., 8.])
"""
import numpy as np

from ..core.array import TracedArray, bind
from ..core.primitive import PRIMITIVES, defhandler, defprim

_fft = np.fft
_DUAL = {"backward": "forward", "forward": "backward", "ortho": "ortho"}


def _asarr(a):
    return a if isinstance(a, np.ndarray) else np.asarray(a)


def _val(x):
    return x._v if type(x) is TracedArray else x


def _no_out(out, what):
    if out is not None:
        from ..core.array import _inplace_error
        raise _inplace_error(f"{what}(..., out=...)")


def _norm(norm):
    if norm is None:
        return "backward"
    if norm not in _DUAL:
        raise ValueError(f'Invalid norm value {norm}; should be "backward",'
                         '"ortho" or "forward".')
    return norm


def _fit_len(x, axes, lengths):
    """Crop or zero-pad ``x`` along ``axes`` (negative) to ``lengths``."""
    for ax, n in zip(axes, lengths):
        cur = x.shape[ax]
        if cur > n:
            key = (Ellipsis, slice(0, n)) + (slice(None),) * (-ax - 1)
            x = x[key]
        elif cur < n:
            shape = list(x.shape)
            shape[ax] = n - cur
            x = np.concatenate([x, np.zeros(tuple(shape), _val(x).dtype)], axis=ax)
    return x


# --- complex-to-complex ---------------------------------------------------------------
def _c2c_impl(x, s, axes, norm, inverse):
    f = _fft.ifftn if inverse else _fft.fftn
    return f(x, s=s, axes=axes, norm=norm)


def _c2c_vjp(g, ans, x, s, axes, norm, inverse):
    f = _fft.fftn if inverse else _fft.ifftn
    r = f(g, axes=axes, norm=_DUAL[norm])
    return _fit_len(r, axes, [x.shape[a] for a in axes])


def _c2c_jvp(t, ans, x, s, axes, norm, inverse):
    return _c2c_impl(t, s, axes, norm, inverse)


defprim("fft.fftn", _c2c_impl, vjp=(_c2c_vjp,), jvp=(_c2c_jvp,), save_args=False,
        save_ans=False)


# --- real-to-complex (half spectrum) ------------------------------------------------------
def _r2c_impl(x, s, axes, norm):
    return _fft.rfftn(x, s=s, axes=axes, norm=norm)


def _r2c_vjp(g, ans, x, s, axes, norm):
    full = _fit_len(g, axes[-1:], s[-1:])   # zero negative frequencies
    r = _fft.ifftn(full, axes=axes, norm=_DUAL[norm])
    return _fit_len(np.real(r), axes, [x.shape[a] for a in axes])


def _r2c_jvp(t, ans, x, s, axes, norm):
    return _r2c_impl(t, s, axes, norm)


defprim("fft.rfftn", _r2c_impl, vjp=(_r2c_vjp,), jvp=(_r2c_jvp,), save_args=False,
        save_ans=False)


# --- complex (half spectrum)-to-real ------------------------------------------------------
def _c2r_impl(x, s, axes, norm):
    return _fft.irfftn(x, s=s, axes=axes, norm=norm)


def _c2r_weights(n, dtype):
    """Bins of the half spectrum of a length-``n`` real signal: 1 for DC and
    (even ``n``) Nyquist, 2 for the others (each stands for a conjugate pair)."""
    m = n // 2 + 1
    w = np.full(m, 2.0, dtype)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    return w


def _c2r_vjp(g, ans, x, s, axes, norm):
    r = _fft.rfftn(g, axes=axes, norm=_DUAL[norm])
    w = _c2r_weights(s[-1], _val(r).real.dtype)
    r = r * np.reshape(w, (-1,) + (1,) * (-axes[-1] - 1))
    return _fit_len(r, axes, [x.shape[a] for a in axes])


def _c2r_jvp(t, ans, x, s, axes, norm):
    return _c2r_impl(t, s, axes, norm)


defprim("fft.irfftn", _c2r_impl, vjp=(_c2r_vjp,), jvp=(_c2r_jvp,), save_args=False,
        save_ans=False)


# --- argument resolution (NumPy's _cook_nd_args) -------------------------------------------
def _neg_axes(axes, ndim):
    out = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < ndim:
            raise np.exceptions.AxisError(a, ndim)
        out.append(a - ndim if a >= 0 else a)
    return tuple(out)


def _cook(a, s, axes, invreal=False):
    if s is None:
        shapeless = True
        if axes is None:
            s = list(a.shape)
        else:
            s = [a.shape[ax] for ax in axes]
    else:
        shapeless = False
        s = list(s)
    if axes is None:
        axes = list(range(-len(s), 0))
    if len(s) != len(axes):
        raise ValueError("Shape and axes have different lengths.")
    axes = _neg_axes(axes, a.ndim)
    if invreal and shapeless:
        s[-1] = (a.shape[axes[-1]] - 1) * 2
    s = tuple(a.shape[ax] if n is None or n == -1 else int(n) for n, ax in zip(s, axes))
    for n in s:
        if n < 1:
            raise ValueError(f"Invalid number of FFT data points ({n}) specified.")
    return s, axes


def _c2c(a, s, axes, norm, inverse):
    a = _asarr(a)
    s, axes = _cook(a, s, axes)
    return bind(PRIMITIVES["fft.fftn"], (a,), {"s": s, "axes": axes, "norm": _norm(norm),
                                              "inverse": inverse})


def _r2c(a, s, axes, norm):
    a = _asarr(a)
    s, axes = _cook(a, s, axes)
    return bind(PRIMITIVES["fft.rfftn"], (a,), {"s": s, "axes": axes, "norm": _norm(norm)})


def _c2r(a, s, axes, norm):
    a = _asarr(a)
    s, axes = _cook(a, s, axes, invreal=True)
    return bind(PRIMITIVES["fft.irfftn"], (a,), {"s": s, "axes": axes, "norm": _norm(norm)})


def _one(n):
    return None if n is None else (n,)


# --- handlers ---------------------------------------------------------------------------------
@defhandler(_fft.fft)
def fft(a, n=None, axis=-1, norm=None, out=None):
    _no_out(out, "np.fft.fft")
    return _c2c(a, _one(n), (axis,), norm, False)


@defhandler(_fft.ifft)
def ifft(a, n=None, axis=-1, norm=None, out=None):
    _no_out(out, "np.fft.ifft")
    return _c2c(a, _one(n), (axis,), norm, True)


@defhandler(_fft.fftn)
def fftn(a, s=None, axes=None, norm=None, out=None):
    _no_out(out, "np.fft.fftn")
    return _c2c(a, s, axes, norm, False)


@defhandler(_fft.ifftn)
def ifftn(a, s=None, axes=None, norm=None, out=None):
    _no_out(out, "np.fft.ifftn")
    return _c2c(a, s, axes, norm, True)


@defhandler(_fft.fft2)
def fft2(a, s=None, axes=(-2, -1), norm=None, out=None):
    _no_out(out, "np.fft.fft2")
    return _c2c(a, s, axes, norm, False)


@defhandler(_fft.ifft2)
def ifft2(a, s=None, axes=(-2, -1), norm=None, out=None):
    _no_out(out, "np.fft.ifft2")
    return _c2c(a, s, axes, norm, True)


@defhandler(_fft.rfft)
def rfft(a, n=None, axis=-1, norm=None, out=None):
    _no_out(out, "np.fft.rfft")
    return _r2c(a, _one(n), (axis,), norm)


@defhandler(_fft.rfftn)
def rfftn(a, s=None, axes=None, norm=None, out=None):
    _no_out(out, "np.fft.rfftn")
    return _r2c(a, s, axes, norm)


@defhandler(_fft.rfft2)
def rfft2(a, s=None, axes=(-2, -1), norm=None, out=None):
    _no_out(out, "np.fft.rfft2")
    return _r2c(a, s, axes, norm)


@defhandler(_fft.irfft)
def irfft(a, n=None, axis=-1, norm=None, out=None):
    _no_out(out, "np.fft.irfft")
    return _c2r(a, _one(n), (axis,), norm)


@defhandler(_fft.irfftn)
def irfftn(a, s=None, axes=None, norm=None, out=None):
    _no_out(out, "np.fft.irfftn")
    return _c2r(a, s, axes, norm)


@defhandler(_fft.irfft2)
def irfft2(a, s=None, axes=(-2, -1), norm=None, out=None):
    _no_out(out, "np.fft.irfft2")
    return _c2r(a, s, axes, norm)


@defhandler(_fft.hfft)
def hfft(a, n=None, axis=-1, norm=None, out=None):
    # NumPy: irfft(conj(a), n, axis, norm=dual(norm))
    _no_out(out, "np.fft.hfft")
    a = _asarr(a)
    return _c2r(np.conjugate(a), _one(n), (axis,), _DUAL[_norm(norm)])


@defhandler(_fft.ihfft)
def ihfft(a, n=None, axis=-1, norm=None, out=None):
    # NumPy: conj(rfft(a, n, axis, norm=dual(norm)))
    _no_out(out, "np.fft.ihfft")
    return np.conjugate(_r2c(a, _one(n), (axis,), _DUAL[_norm(norm)]))


def _shift(x, axes, sign):
    x = _asarr(x)
    if axes is None:
        axes = tuple(range(x.ndim))
        shift = [sign * (dim // 2) for dim in x.shape]
    elif isinstance(axes, (int, np.integer)):
        shift = sign * (x.shape[axes] // 2)
    else:
        shift = [sign * (x.shape[ax] // 2) for ax in axes]
    return np.roll(x, shift, axes)


@defhandler(_fft.fftshift)
def fftshift(x, axes=None):
    return _shift(x, axes, 1)


@defhandler(_fft.ifftshift)
def ifftshift(x, axes=None):
    # -(n // 2) is the inverse roll of n // 2 for odd and even lengths alike
    return _shift(x, axes, -1)


# ==================================================================================
# complex helpers
# ==================================================================================
def _angle_vjp(g, ans, z):
    # traced zero test: under jit the mask is in the graph and the branch a guard
    zero = z == 0
    if not bool(np.any(zero)):
        return 1j * g / np.conjugate(z)
    one = np.ones((), _val(z).dtype)
    safe = np.where(zero, one, z)
    return np.where(zero, np.zeros((), np.result_type(_val(g), 1j)), 1j * g / np.conjugate(safe))


def _angle_jvp(t, ans, z):
    zero = z == 0  # traced, as in _angle_vjp
    if not bool(np.any(zero)):
        return np.imag(t / z) if np.result_type(_val(t), _val(z)).kind == "c" else t * 0
    one = np.ones((), _val(z).dtype)
    r = t / np.where(zero, one, z)
    r = np.imag(r) if _val(r).dtype.kind == "c" else r * 0
    return np.where(zero, np.zeros((), _val(r).dtype), r)


defprim("angle", np.angle, vjp=(_angle_vjp,), jvp=(_angle_jvp,), save_ans=False)


@defhandler(np.angle)
def angle(z, deg=False):
    z = _asarr(z)
    r = bind(PRIMITIVES["angle"], (z,), {})
    if deg:
        r = r * (180 / np.pi)
    return r
