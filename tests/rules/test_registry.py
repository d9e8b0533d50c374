"""Generic checks of every registered primitive (issues #2 and #5).

Each case of ``cases.py`` runs through:

* reverse mode against fourth-order central finite differences, in float64
  (tight) and float32 (loose); values and dtypes match plain NumPy, and the
  case records the primitives it names;
* the dot-product test ``<w, J u> == <J^T w, u>`` between forward (``jvp``,
  ``linearize``) and reverse (``vjp``) mode;
* the batched walks: ``jacfwd``, ``jacrev`` and ``jacobian`` agree with each
  other, with the unbatched ``jvp``/``vjp`` and with finite differences;
* second order (real cases): ``hessian`` is symmetric and equals
  ``jacrev(jacrev)``, ``jacfwd(jacfwd)`` and ``jacrev(jacfwd)``; ``hvp`` equals
  ``H @ v`` and finite differences of the gradient.

Nondiff primitives are checked to give NumPy's plain values and no derivative.
The conventions at ties and kinks have explicit tests at the end.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tracegrad as tg
from tracegrad.api import _trace_reverse
from tracegrad.core.array import is_tracked, unwrap
from tracegrad.core.primitive import PRIMITIVES
from tracegrad.core.pytree import tree_flatten, tree_unflatten

from cases import ALL_CASES, ALL_NONDIFF, CASES, F64, NONDIFF_CASES, Draw


def _share(frac):
    """A fraction of the profile's examples (conftest.py sets 25 by default,
    "thorough" 300): every case runs through every check, and the run stays
    within a few minutes. Finite differences get them all."""
    return settings(max_examples=max(2, round(settings.default.max_examples * frac)))


_DOT = _share(1 / 2)
_BATCHED = _share(1 / 2)
_SECOND = _share(1 / 3)
_NONDIFF = _share(1 / 5)

SECOND_ORDER = [c for c in ALL_CASES if c.second_order]


def _ids(c):
    return c.name


# --- helpers ------------------------------------------------------------------------------
def leaves(tree):
    return tree_flatten(tree)[0]


def pair(a, b):
    """Real inner product Re <a, b> (the pairing of the real-loss convention)."""
    return float(np.real(np.vdot(np.asarray(a), np.asarray(b))))


def abspair(a, b):
    return float(np.sum(np.abs(np.asarray(a)) * np.abs(np.asarray(b))))


def rand_like(rng, a, real=False):
    a = np.asarray(a)
    r = rng.uniform(-1, 1, a.shape)
    if a.dtype.kind == "c" and not real:
        r = r + 1j * rng.uniform(-1, 1, a.shape)
    return r.astype(a.dtype)


def to64(a):
    a = np.asarray(a)
    return a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)


def build(case, data, dtype=None, small=False):
    if dtype is None:
        dtype = data.draw(st.sampled_from(case.dtypes), label="dtype")
    d = Draw(data, dtype, small)
    fun, args = case.build(d)
    args = tuple(np.asarray(a) for a in args)
    seed = data.draw(st.integers(0, 2 ** 32 - 1), label="seed")
    return fun, args, np.random.default_rng(seed)


def stencil(phi, eps):
    """Fourth-order central difference of ``phi`` at 0."""
    return (8 * (phi(eps) - phi(-eps)) - (phi(2 * eps) - phi(-2 * eps))) / (12 * eps)


def shift(args, us, t):
    return [to64(a) + t * to64(u) for a, u in zip(args, us)]


def _has_f32(arrays):
    """Single precision anywhere (inputs, outputs): looser tolerances."""
    return any(np.asarray(x).dtype in (np.float32, np.complex64) for x in arrays)


def recorded(fun, args):
    tape = _trace_reverse(fun, args, False)[0]
    return {n.prim.name for n in tape.nodes}


def assert_plain_like(out, ref, rtol):
    ol, rl = leaves(out), leaves(ref)
    assert len(ol) == len(rl)
    for o, r in zip(ol, rl):
        assert type(o) is np.ndarray or np.isscalar(o), type(o)
        o, r = np.asarray(o), np.asarray(r)
        assert o.dtype == r.dtype and o.shape == r.shape, (o.dtype, r.dtype, o.shape, r.shape)
        np.testing.assert_allclose(o, r, rtol=rtol, atol=0, equal_nan=True)


# --- coverage -----------------------------------------------------------------------------
def test_every_primitive_has_a_case():
    """A registered primitive without a case fails here: add one to cases.py."""
    missing = sorted(n for n, p in PRIMITIVES.items() if not p.nondiff and n not in CASES)
    missing_nd = sorted(n for n, p in PRIMITIVES.items() if p.nondiff and n not in NONDIFF_CASES)
    assert not missing, f"primitives without a case in tests/rules/cases.py: {missing}"
    assert not missing_nd, (f"nondiff primitives without a case in NONDIFF_CASES of "
                            f"tests/rules/cases.py: {missing_nd}")


def test_cases_name_registered_primitives():
    stale = sorted(n for n in list(CASES) + list(NONDIFF_CASES) if n not in PRIMITIVES)
    assert not stale, f"cases.py names primitives that are not registered: {stale}"
    wrong = sorted(n for n in CASES if PRIMITIVES[n].nondiff)
    wrong += sorted(n for n in NONDIFF_CASES if not PRIMITIVES[n].nondiff)
    assert not wrong, f"diff/nondiff cases filed under the wrong table: {wrong}"


# --- reverse mode against finite differences ----------------------------------------------
@pytest.mark.parametrize("case", ALL_CASES, ids=_ids)
def test_reverse_matches_finite_differences(case):
    seen = set()

    @given(data=st.data())
    def run(data):
        fun, args, rng = build(case, data)
        out, pull = tg.vjp(fun, *args)
        outs = leaves(out)
        f32 = _has_f32(list(args) + outs)
        assert_plain_like(out, fun(*args), 1e-6 if f32 else 1e-13)
        w = [rand_like(rng, o) for o in outs]
        cts = pull(tree_unflatten(tree_flatten(out)[1], w))
        assert len(cts) == len(args)
        for c, a in zip(cts, args):
            assert type(c) is np.ndarray
            assert c.shape == a.shape and c.dtype == a.dtype, (c.shape, a.shape, c.dtype, a.dtype)
        us = [rand_like(rng, a) for a in args]
        ad = sum(pair(c, u) for c, u in zip(cts, us))
        ad_scale = sum(abspair(c, u) for c, u in zip(cts, us))
        w64 = [to64(x) for x in w]

        def phi(t):
            return sum(pair(wk, to64(ok)) for wk, ok in zip(w64, leaves(fun(*shift(args, us, t)))))
        with np.errstate(all="ignore"):
            fd = stencil(phi, case.eps)
        f_scale = sum(abspair(wk, ok) for wk, ok in zip(w64, outs))
        # absolute floor: values ~1e-170 are absorbed by x + eps * u, and the
        # stencil's O(eps**4) error shows where the derivative is 0 (prod of
        # many zeros: a high-degree polynomial)
        w_scale = sum(float(np.sum(np.abs(wk))) for wk in w64)
        if f32:
            tol = case.rtol32 * (ad_scale + abs(fd)) + 1e-5 * f_scale + 1e-6 * w_scale
        else:
            tol = 1e-6 * (ad_scale + abs(fd)) + 1e-10 * f_scale + 1e-11 * w_scale
        assert abs(ad - fd) <= tol, f"vjp . u = {ad!r}, finite differences {fd!r} (tol {tol:.3g})"
        seen.update(recorded(fun, args))
    run()
    missing = set(case.prims) - seen
    assert not missing, f"case {case.name} never recorded {sorted(missing)}"


# --- forward against reverse --------------------------------------------------------------
@pytest.mark.parametrize("case", ALL_CASES, ids=_ids)
def test_forward_reverse_dot_product(case):
    @_DOT
    @given(data=st.data())
    def run(data):
        fun, args, rng = build(case, data, F64)
        out, pull = tg.vjp(fun, *args)
        outs = leaves(out)
        w = [rand_like(rng, o) for o in outs]
        cts = pull(tree_unflatten(tree_flatten(out)[1], w))
        us = [rand_like(rng, a) for a in args]
        out2, tout = tg.jvp(fun, args, tuple(us))
        touts = leaves(tout)
        for o, t in zip(leaves(out2), touts):
            assert np.shape(t) == np.shape(o)
            assert np.asarray(t).dtype == np.asarray(o).dtype
        lhs = sum(pair(wk, tk) for wk, tk in zip(w, touts))
        rhs = sum(pair(c, u) for c, u in zip(cts, us))
        scale = sum(abspair(wk, tk) for wk, tk in zip(w, touts)) + sum(
            abspair(c, u) for c, u in zip(cts, us))
        f32 = _has_f32(list(args) + outs)
        assert abs(lhs - rhs) <= (1e-6 if f32 else 1e-10) * scale, (lhs, rhs)
        # the recorded tape walked forwards gives the same tangent
        _, lin = tg.linearize(fun, *args)
        for a, b in zip(leaves(lin(*us)), touts):
            np.testing.assert_allclose(a, b, rtol=1e-6 if f32 else 1e-12,
                                       atol=1e-14 * (1 + np.max(np.abs(b), initial=0)))
    run()


# --- batched walks ------------------------------------------------------------------------
def _contract_in(J, us):
    return sum(np.tensordot(Jj, u, axes=np.ndim(u)) for Jj, u in zip(J, us))


@pytest.mark.parametrize("case", ALL_CASES, ids=_ids)
def test_batched_jacobians(case):
    @_BATCHED
    @given(data=st.data())
    def run(data):
        fun, args, rng = build(case, data, F64, small=True)
        argnums = tuple(range(len(args)))
        Jf = leaves(tg.jacfwd(fun, argnums)(*args))
        Jr = leaves(tg.jacrev(fun, argnums)(*args))
        Ja = leaves(tg.jacobian(fun, argnums)(*args))
        out, pull = tg.vjp(fun, *args)
        outs = leaves(out)
        n = len(args)
        assert len(Jf) == len(Jr) == len(Ja) == len(outs) * n
        for k, o in enumerate(outs):
            for j, a in enumerate(args):
                for J in (Jf, Jr, Ja):
                    assert J[k * n + j].shape == np.shape(o) + a.shape
        scale = 1 + max((np.max(np.abs(J), initial=0) for J in Jf + Jr), default=0)
        # single precision anywhere (a downcast, a float32 operand): its rounding
        f32 = _has_f32(list(args) + outs)
        rtol = 1e-6 if f32 else 1e-12
        atol = (1e-6 if f32 else 1e-13) * scale
        if not case.complex:
            for a, b, c in zip(Jf, Jr, Ja):
                np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
                np.testing.assert_allclose(c, a, rtol=rtol, atol=atol)
        else:
            n_in = sum(a.size for a in args)
            Jref = Jf if n_in < sum(np.size(o) for o in outs) else Jr
            for a, c in zip(Jref, Ja):
                np.testing.assert_allclose(c, a, rtol=rtol, atol=atol)
        # real directions: complex Jacobians are taken along real bases
        us = [rand_like(rng, a, real=True) for a in args]
        w = [rand_like(rng, o, real=True) for o in outs]
        _, tout = tg.jvp(fun, args, tuple(us))
        cts = pull(tree_unflatten(tree_flatten(out)[1], w))
        for k, t in enumerate(leaves(tout)):
            Ju = _contract_in(Jf[k * n:(k + 1) * n], us)
            np.testing.assert_allclose(Ju, t, rtol=rtol, atol=atol)
            # and finite differences, output by output

            def phi(s, k=k):
                return to64(leaves(fun(*shift(args, us, s)))[k])
            with np.errstate(all="ignore"):
                fd = stencil(phi, case.eps)
            np.testing.assert_allclose(Ju, fd, rtol=case.rtol32 if f32 else 1e-6,
                                       atol=(1e-5 if f32 else 1e-9) * scale)
        for j, c in enumerate(cts):
            wJ = sum(np.tensordot(wk, Jr[k * n + j], axes=np.ndim(wk)) for k, wk in enumerate(w))
            np.testing.assert_allclose(wJ, c, rtol=rtol, atol=atol)
    run()


# --- second order -------------------------------------------------------------------------
def _packed(fun, args, w):
    shapes = [a.shape for a in args]
    sizes = [a.size for a in args]

    def s(z):
        parts = []
        off = 0
        for shp, k in zip(shapes, sizes):
            parts.append(np.reshape(z[off:off + k], shp))
            off += k
        outs = leaves(fun(*parts))
        # Re <w, out>: real also for a complex output of real inputs
        return sum(np.real(np.sum(np.conjugate(wk) * ok)) for wk, ok in zip(w, outs)) + \
            0.0 * np.sum(z)
    z0 = np.concatenate([a.ravel() for a in args]) if args else np.zeros(0)
    return s, z0


@pytest.mark.parametrize("case", SECOND_ORDER, ids=_ids)
@_SECOND
@given(data=st.data())
def test_second_order(case, data):
    fun, args, rng = build(case, data, F64, small=True)
    out = fun(*args)
    w = [rand_like(rng, o) for o in leaves(out)]
    s, z0 = _packed(fun, args, w)
    H = tg.hessian(s)(z0)
    g = tg.grad(s)(z0)
    n = z0.size
    assert H.shape == (n, n)
    scale = 1 + np.max(np.abs(H), initial=0) + np.max(np.abs(g), initial=0)
    close = dict(rtol=1e-10, atol=1e-11 * scale)
    np.testing.assert_allclose(H, H.T, **close)
    np.testing.assert_allclose(tg.jacrev(tg.jacrev(s))(z0), H, **close)
    np.testing.assert_allclose(tg.jacfwd(tg.jacfwd(s))(z0), H, **close)
    np.testing.assert_allclose(tg.jacrev(tg.jacfwd(s))(z0), H, **close)
    v = rng.uniform(-1, 1, n)
    hv = tg.hvp(s, z0, v)
    np.testing.assert_allclose(hv, H @ v, **close)
    gs = tg.grad(s)
    with np.errstate(all="ignore"):
        fd = stencil(lambda t: gs(z0 + t * v), case.eps)
    np.testing.assert_allclose(hv, fd, rtol=1e-6, atol=1e-8 * scale)


# --- nondiff primitives -------------------------------------------------------------------
def _walk(x):
    if isinstance(x, (tuple, list)):
        for e in x:
            yield from _walk(e)
    else:
        yield x


def _assert_same(got, ref):
    g, r = list(_walk(got)), list(_walk(ref))
    assert len(g) == len(r)
    for a, b in zip(g, r):
        a = unwrap(a)
        if isinstance(b, (np.ndarray, np.generic)):
            assert np.asarray(a).dtype == np.asarray(b).dtype, (a, b)
            assert np.array_equal(np.asarray(a), np.asarray(b), equal_nan=a.dtype.kind in "fc")
        else:
            assert a == b, (a, b)


@pytest.mark.parametrize("case", ALL_NONDIFF, ids=_ids)
@_NONDIFF
@given(data=st.data())
def test_nondiff_plain_values_no_derivative(case, data):
    d = Draw(data)
    fun, args = case.build(d)
    ref = fun(*args)
    got = []

    def f(*xs):
        r = fun(*xs)
        # while the transform records: no result may carry a derivative
        assert not any(is_tracked(e) for e in _walk(r)), "a nondiff result is tracked"
        got.append(r)
        return sum(np.sum(x * x) for x in xs)
    g = tg.grad(f, argnums=tuple(range(len(args))))(*args)
    for gi, a in zip(g, args):
        np.testing.assert_array_equal(gi, 2 * a)
    _, t = tg.jvp(f, args, tuple(np.ones_like(a) for a in args))
    np.testing.assert_allclose(t, sum(np.sum(2 * a) for a in args))
    tg.jacfwd(f, argnums=tuple(range(len(args))))(*args)
    assert len(got) == 3
    for r in got:
        _assert_same(r, ref)


# --- ties and kinks -----------------------------------------------------------------------
def _both_modes(f, x):
    """Gradient of a scalar f by reverse, forward (jacfwd) and batched reverse."""
    gr = tg.grad(f)(x)
    gf = tg.jacfwd(f)(x)
    gj = tg.jacrev(f)(x)
    np.testing.assert_array_equal(gr, gf)
    np.testing.assert_array_equal(gr, gj)
    return gr


@pytest.mark.parametrize("fn", [np.max, np.min, np.amax, lambda x: x.max(),
                                lambda x: np.maximum.reduce(x)])
def test_max_min_share_ties_equally(fn):
    x = np.array([1.0, 3.0, 3.0, 2.0, 3.0])
    if fn(np.array([0.0, 1.0])) == 0.0:     # a min
        x = -x
    np.testing.assert_allclose(_both_modes(fn, x), [0, 1 / 3, 1 / 3, 0, 1 / 3])
    # along an axis, with keepdims, and the tangent of a tie is the mean
    X = np.array([[1.0, 1.0], [2.0, 0.0]])
    J = tg.jacrev(lambda x: np.max(x, axis=1, keepdims=True))(X)
    np.testing.assert_allclose(J[:, 0], [[[0.5, 0.5], [0, 0]], [[0, 0], [1, 0]]])
    np.testing.assert_allclose(tg.jacfwd(lambda x: np.max(x, axis=1, keepdims=True))(X), J)
    _, t = tg.jvp(np.max, (x,), (np.arange(5.0),))
    np.testing.assert_allclose(t, np.mean(np.arange(5.0)[x == np.max(x)]))


@pytest.mark.parametrize("fn", [np.maximum, np.minimum, np.fmax, np.fmin])
def test_maximum_minimum_at_equality_give_half(fn):
    x = np.array([1.0, 2.0, 3.0])
    y = np.array([1.0, 0.0, 5.0])
    gx, gy = tg.grad(lambda x, y: np.sum(fn(x, y)), argnums=(0, 1))(x, y)
    big = fn is np.maximum or fn is np.fmax
    np.testing.assert_array_equal(gx, [0.5, 1.0 if big else 0.0, 0.0 if big else 1.0])
    np.testing.assert_array_equal(gy, [0.5, 0.0 if big else 1.0, 1.0 if big else 0.0])
    _, t = tg.jvp(fn, (x, y), (np.ones(3), np.zeros(3)))
    np.testing.assert_array_equal(t, gx)


@pytest.mark.parametrize("fn", [np.abs, np.absolute, np.fabs, abs])
def test_abs_at_zero_is_zero(fn):
    x = np.array([0.0, -2.0, 3.0, -0.0])
    np.testing.assert_array_equal(_both_modes(lambda x: np.sum(fn(x)), x), [0.0, -1.0, 1.0, 0.0])
    _, t = tg.jvp(fn, (x,), (np.ones(4),))
    np.testing.assert_array_equal(t, [0.0, -1.0, 1.0, 0.0])


def test_complex_abs_at_zero_is_zero():
    z = np.array([0j, 3 + 4j])
    g = tg.grad(lambda z: np.sum(np.abs(z)))(z)
    np.testing.assert_allclose(g, [0, (3 + 4j) / 5])


@pytest.mark.parametrize("x, expected", [
    ([2.0, 0.0, 3.0], [0.0, 6.0, 0.0]),          # one zero: only it has a derivative
    ([2.0, 0.0, 0.0], [0.0, 0.0, 0.0]),          # two zeros: nothing does
    ([0.0], [1.0]),
    ([2.0, 5.0, 3.0], [15.0, 6.0, 10.0]),
])
def test_prod_with_zeros_is_exact(x, expected):
    x = np.array(x)
    np.testing.assert_array_equal(_both_modes(np.prod, x), expected)
    _, t = tg.jvp(np.prod, (x,), (np.ones_like(x),))
    if np.any(x == 0):
        assert t == sum(expected)
    else:
        np.testing.assert_allclose(t, sum(expected), rtol=1e-15)


def test_prod_with_zeros_second_order():
    x = np.array([2.0, 0.0, 3.0])
    # d2/dxi dxj prod = prod of the others
    expected = np.array([[0, 3, 0], [3, 0, 2], [0, 2, 0]], float)
    np.testing.assert_array_equal(tg.hessian(np.prod)(x), expected)
    np.testing.assert_array_equal(tg.jacrev(tg.jacrev(np.prod))(x), expected)
    x2 = np.array([[2.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    J = tg.jacrev(lambda x: np.prod(x, axis=1))(x2)
    np.testing.assert_array_equal(J, [[[0, 0, 0], [0, 0, 0]], [[0, 0, 0], [6, 3, 2]]])
    np.testing.assert_array_equal(tg.jacfwd(lambda x: np.prod(x, axis=1))(x2), J)


def test_cumprod_with_zeros_is_exact():
    x = np.array([2.0, 0.0, 3.0, 0.0, 5.0])
    Jf = tg.jacfwd(np.cumprod)(x)
    Jr = tg.jacrev(np.cumprod)(x)
    expected = np.zeros((5, 5))
    for i in range(5):
        for j in range(i + 1):
            expected[i, j] = np.prod(np.delete(x[:i + 1], j))
    np.testing.assert_array_equal(Jf, expected)
    np.testing.assert_array_equal(Jr, expected)


def _safe_sqrt(x):
    return np.where(x > 0, np.sqrt(x), 0.0)


def test_where_sqrt_at_zero_gives_zero_not_nan():
    x = np.array([0.0, 4.0, -1.0])
    with np.errstate(invalid="ignore"):
        g = _both_modes(lambda x: np.sum(_safe_sqrt(x)), x)
        np.testing.assert_array_equal(g, [0.0, 0.25, 0.0])
        _, t = tg.jvp(_safe_sqrt, (x,), (np.ones(3),))
        np.testing.assert_array_equal(t, [0.0, 0.25, 0.0])
        # scalar
        assert tg.grad(lambda x: _safe_sqrt(x))(0.0) == 0.0
        assert tg.jvp(_safe_sqrt, (0.0,), (1.0,))[1] == 0.0
        # second order stays finite too
        H = tg.hessian(lambda x: np.sum(_safe_sqrt(x)))(x)
        np.testing.assert_array_equal(H, np.diag([0.0, -1 / 32, 0.0]))


@pytest.mark.parametrize("fn", [np.remainder, np.fmod])
def test_mod_derivatives_are_one_and_minus_quotient(fn):
    x = np.array([2.5, -2.5, 7.25])
    y = np.array([2.0, 2.0, -3.0])
    gx, gy = tg.grad(lambda x, y: np.sum(fn(x, y)), argnums=(0, 1))(x, y)
    np.testing.assert_array_equal(gx, np.ones(3))
    q = np.floor(x / y) if fn is np.remainder else np.trunc(x / y)
    np.testing.assert_array_equal(gy, -q)


def test_clip_at_the_bounds_passes_the_derivative_once():
    x = np.array([-1.0, 0.0, 0.5, 1.0, 2.0])
    lo, hi = np.zeros(5), np.ones(5)
    gx, gl, gh = tg.grad(lambda x, lo, hi: np.sum(np.clip(x, lo, hi)), argnums=(0, 1, 2))(x, lo, hi)
    # exactly one of the three inputs receives the derivative at every point
    np.testing.assert_array_equal(gx + gl + gh, np.ones(5))
    np.testing.assert_array_equal(gx, [0, 1, 1, 1, 0])
    _, t = tg.jvp(lambda x, lo, hi: np.clip(x, lo, hi), (x, lo, hi),
                  (np.ones(5), np.zeros(5), np.zeros(5)))
    np.testing.assert_array_equal(t, gx)


def test_clip_with_lo_above_hi_gives_hi_the_derivative():
    # NumPy: "if a_min > a_max, all values are set to a_max"
    x = np.array([-1.0, 0.5, 3.0])
    lo, hi = np.ones(3), np.zeros(3)
    np.testing.assert_array_equal(np.clip(x, lo, hi), hi)
    gx, gl, gh = tg.grad(lambda x, lo, hi: np.sum(np.clip(x, lo, hi)), argnums=(0, 1, 2))(x, lo, hi)
    np.testing.assert_array_equal(gx, 0)
    np.testing.assert_array_equal(gl, 0)
    np.testing.assert_array_equal(gh, 1)
    _, t = tg.jvp(lambda lo: np.clip(x, lo, hi), (lo,), (np.ones(3),))
    np.testing.assert_array_equal(t, 0)


@pytest.mark.parametrize("uf, sign", [(np.add, 1.0), (np.subtract, -1.0)])
def test_add_at_broadcasts_lower_rank_values(uf, sign):
    # NumPy 2.4's ufunc.at gets this case wrong on plain arrays (1-D target,
    # 2-D index, 1-D values); the traced write must still add every value.
    idx = np.array([[0, 0], [0, 1]])
    v = np.array([1.0, 2.0])

    def f(x, v):
        y = x * 1.0
        uf.at(y, idx, v)
        return y
    x = np.zeros(2)
    out, pull = tg.vjp(f, x, v)
    np.testing.assert_array_equal(out, sign * np.array([4.0, 2.0]))
    gx, gv = pull(np.array([1.0, 10.0]))
    np.testing.assert_array_equal(gx, [1.0, 10.0])
    np.testing.assert_array_equal(gv, sign * np.array([2.0, 11.0]))
    _, t = tg.jvp(f, (x, v), (np.zeros(2), np.array([1.0, 0.0])))
    np.testing.assert_array_equal(t, sign * np.array([2.0, 0.0]))
