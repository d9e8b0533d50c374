"""Signal processing and calculus (rules/signal.py): convolve/correlate,
gradient, interp, trapezoid, polynomials, pad, ranges and grids, select,
piecewise, cov/corrcoef, unwrap, nan_to_num, and the conventions the module
documents."""
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tracegrad as tg

from cases_signal import check, spread

seeds = st.integers(0, 2 ** 32 - 1)
shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


# --- convolve / correlate -------------------------------------------------------------------
@pytest.mark.parametrize("fn", [np.convolve, np.correlate])
@pytest.mark.parametrize("mode", ["full", "same", "valid", 0, 1, 2])
@given(n=st.integers(1, 6), m=st.integers(1, 6), cplx=st.booleans(), seed=seeds)
def test_convolve_correlate(fn, mode, n, m, cplx, seed):
    rng = np.random.default_rng(seed)
    a, v = rng.standard_normal(n), rng.standard_normal(m)
    if cplx:
        v = v + 1j * rng.standard_normal(m)
    # correlate sums in another order than NumPy's C loop: equal to an ulp
    exact = fn is np.convolve
    check(lambda a, v: fn(a, v, mode), a, v, rng=rng, exact=exact, second=not cplx)
    check(lambda a: fn(a, v, mode), a, rng=rng, exact=exact)


def test_convolve_errors():
    with pytest.raises(ValueError, match="empty"):
        tg.grad(lambda a: np.sum(np.convolve(a, np.zeros(0))))(np.ones(2))
    with pytest.raises(ValueError, match="mode"):
        tg.grad(lambda a: np.sum(np.convolve(a, a, "bogus")))(np.ones(2))


def test_convolve_primitive_batched():
    # cotangents with batch axes go through one call of the primitive
    a, v = np.arange(1.0, 5.0), np.array([0.5, -1.0, 2.0])
    J = tg.jacrev(lambda a, v: np.convolve(a, v), (0, 1))(a, v)
    for k, x in enumerate((a, v)):
        E = np.eye(x.size)
        ref = np.stack([np.convolve(e, v) if k == 0 else np.convolve(a, e) for e in E], -1)
        np.testing.assert_allclose(J[k], ref, rtol=1e-14)
    np.testing.assert_allclose(tg.jacfwd(lambda a, v: np.convolve(a, v), (0, 1))(a, v)[1],
                               J[1], rtol=1e-14)


# --- diff / ediff1d / gradient / trapezoid ----------------------------------------------------
@given(shape=shapes, seed=seeds, data=st.data())
def test_diff(shape, seed, data):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    n = data.draw(st.integers(0, 3))
    kw = {}
    if data.draw(st.booleans()):
        kw["prepend"] = data.draw(st.sampled_from([0.5, np.ones(shape[:axis % len(shape)]
                                                          + (2,) + shape[axis % len(shape) + 1:])]))
    if data.draw(st.booleans()):
        kw["append"] = 1.5
    check(lambda x: np.diff(x, n=n, axis=axis, **kw), x, rng=rng, exact=True)


def test_diff_traced_prepend_with_plain_array():
    x = np.array([1.0, 4.0, 9.0])
    g = tg.grad(lambda p: np.sum(np.diff(x, prepend=p) ** 2))(0.5)
    assert g == -2 * (1.0 - 0.5)


@given(shape=shapes, seed=seeds, data=st.data())
def test_ediff1d(shape, seed, data):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    tb = data.draw(st.sampled_from([None, 1.0, [2.0, -1.0]]))
    te = data.draw(st.sampled_from([None, 3.0, np.array([[0.5]])]))
    check(lambda x: np.ediff1d(x, to_end=te, to_begin=tb), x, rng=rng, exact=True)
    if tb is not None:
        check(lambda x, b: np.ediff1d(x, to_begin=b), x, np.asarray(tb), rng=rng, exact=True)


@given(shape=st.lists(st.integers(3, 5), min_size=1, max_size=3).map(tuple), seed=seeds,
       data=st.data())
def test_gradient(shape, seed, data):
    rng = np.random.default_rng(seed)
    f = rng.standard_normal(shape)
    nd = len(shape)
    axis = data.draw(st.one_of(st.none(), st.integers(-nd, nd - 1),
                               st.permutations(range(nd)).map(tuple)), label="axis")
    axes = range(nd) if axis is None else ([axis % nd] if isinstance(axis, int) else axis)
    edge = data.draw(st.sampled_from([1, 2]))
    kind = data.draw(st.sampled_from(["none", "scalar", "each"]))
    if kind == "none":
        sp = ()
    elif kind == "scalar":
        sp = (0.7,)
    else:
        sp = tuple(data.draw(st.sampled_from(["scalar", "uniform", "coords"])) for _ in axes)
        sp = tuple(0.3 if s == "scalar" else (np.arange(shape[a]) * 0.5 if s == "uniform"
                                              else np.cumsum(rng.uniform(0.5, 1.5, shape[a])))
                   for s, a in zip(sp, axes))
    check(lambda f: np.gradient(f, *sp, axis=axis, edge_order=edge), f, rng=rng, exact=True)
    coords = [k for k, s in enumerate(sp) if np.ndim(s) == 1]
    if coords:
        k = coords[0]

        def g(c):
            s = list(sp)
            s[k] = c
            return np.gradient(f, *s, axis=axis, edge_order=edge)
        # exactly uniform traced coordinates take the non-uniform formula: equal to rounding
        check(g, sp[k], rng=rng, exact=False)


@given(shape=shapes, seed=seeds, data=st.data())
def test_trapezoid(shape, seed, data):
    rng = np.random.default_rng(seed)
    y = rng.standard_normal(shape)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    kind = data.draw(st.sampled_from(["dx", "x1d", "xnd"]))
    if kind == "dx":
        check(lambda y, dx: np.trapezoid(y, dx=dx, axis=axis), y, np.array(0.3), rng=rng,
              exact=True)
    else:
        x = np.cumsum(rng.uniform(0.5, 1.5, shape if kind == "xnd" else shape[axis]), axis=axis
                      if kind == "xnd" else 0)
        check(lambda y, x: np.trapezoid(y, x, axis=axis), y, x, rng=rng, exact=True,
              second=True)


@pytest.mark.skipif(not hasattr(np, "cumulative_sum"), reason="NumPy < 2.1")
@given(shape=shapes, seed=seeds, data=st.data())
def test_cumulative_sum_prod(shape, seed, data):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 1.5, shape) * rng.choice([-1, 1], shape)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    init = data.draw(st.booleans())
    for fn in (np.cumulative_sum, np.cumulative_prod):
        check(lambda x: fn(x, axis=axis, include_initial=init), x, rng=rng, exact=True)


# --- interp --------------------------------------------------------------------------------------
@given(n=st.integers(1, 6), seed=seeds, cplx=st.booleans(), data=st.data())
def test_interp(n, seed, cplx, data):
    rng = np.random.default_rng(seed)
    xp = np.cumsum(rng.uniform(0.3, 1.0, n))
    fp = rng.standard_normal(n) + (1j * rng.standard_normal(n) if cplx else 0)
    # query points away from the knots, inside and outside the range
    x = rng.uniform(xp[0] - 1, xp[-1] + 1, data.draw(st.integers(1, 6)))
    x = np.where(np.min(np.abs(x[:, None] - xp), axis=1) < 0.05, x + 0.1, x)
    lr = data.draw(st.sampled_from([{}, {"left": -3.0}, {"left": 1.0, "right": 2.0}]))
    check(lambda x, xp, fp: np.interp(x, xp, fp, **lr), x, xp, fp, rng=rng, exact=True)
    if not cplx:
        check(lambda x, xp, fp: np.interp(x, xp, fp, period=7.5), x, xp, fp, rng=rng,
              exact=True)
    if lr:
        # left/right are traced together with fp (NumPy dispatches on x, xp, fp only)
        check(lambda fp, l: np.interp(x, xp, fp, left=l, right=2.0 * l), fp,
              np.array(lr["left"]), rng=rng, exact=True)


def test_interp_kink_conventions():
    xp = np.array([0.0, 1.0, 3.0])
    fp = np.array([0.0, 2.0, 3.0])
    gx = tg.grad(lambda x: np.sum(np.interp(x, xp, fp)))
    # at a knot: the right-hand slope; at xp[-1] and outside: 0
    np.testing.assert_array_equal(gx(np.array([0.0, 1.0, 3.0, -1.0, 4.0])),
                                  [2.0, 0.5, 0.0, 0.0, 0.0])
    _, t = tg.jvp(lambda x: np.interp(x, xp, fp), (np.array([1.0]),), (np.ones(1),))
    assert t[0] == 0.5
    # fp: the value at a knot is fp there
    gf = tg.grad(lambda f: np.interp(1.0, xp, f))(fp)
    np.testing.assert_array_equal(gf, [0.0, 1.0, 0.0])


# --- polynomials -------------------------------------------------------------------------------
@given(n=st.integers(1, 5), m=st.integers(1, 4), seed=seeds)
def test_polynomials(n, m, seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.5, 2.0, n) * rng.choice([-1, 1], n)
    q = rng.uniform(0.5, 2.0, m) * rng.choice([-1, 1], m)
    x = rng.standard_normal(4)
    check(lambda p, x: np.polyval(p, x), p, x, rng=rng, exact=True, second=True)
    check(lambda p: np.polyder(p, m - 1), p, rng=rng, exact=True, jac=m - 1 < n)
    check(lambda p, k: np.polyint(p, m, k=k), p, rng.standard_normal(m), rng=rng, exact=True)
    check(lambda p: np.polyint(p), p, rng=rng, exact=True)
    for fn in (np.polyadd, np.polysub, np.polymul):
        check(lambda p, q: fn(p, q), p, q, rng=rng, exact=True)
    check(lambda p, q: np.polydiv(p, q), p, q, rng=rng)
    check(lambda x: np.vander(x, m + 1, increasing=m % 2 == 0), x, rng=rng, exact=True)
    check(lambda x: np.vander(x), x, rng=rng, exact=True, second=True)


def _has_lstsq():
    from tracegrad.core.primitive import FUNCTION_HANDLERS
    return np.linalg.lstsq in FUNCTION_HANDLERS


@pytest.mark.skipif(not _has_lstsq(), reason="np.linalg.lstsq has no rule in this checkout")
@given(seed=seeds, deg=st.integers(0, 3), two=st.booleans(), data=st.data())
def test_polyfit(seed, deg, two, data):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-1, 1, 7))
    y = rng.standard_normal((7, 2) if two else 7)
    w = rng.uniform(0.5, 1.5, 7)
    check(lambda x, y: np.polyfit(x, y, deg), x, y, rng=rng, exact=True)
    check(lambda y, w: np.polyfit(x, y, deg, w=w), y, w, rng=rng, exact=True)
    cov = data.draw(st.sampled_from([True, "unscaled"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(lambda x, y: np.polyfit(x, y, deg, cov=cov), x, y, rng=rng)
        check(lambda y: np.polyfit(x, y, deg, full=True)[:2], y, rng=rng)


def test_polyfit_without_lstsq_rule_raises():
    if _has_lstsq():
        pytest.skip("np.linalg.lstsq has a rule")
    with pytest.raises(tg.UnsupportedOperation, match="lstsq"):
        tg.grad(lambda y: np.sum(np.polyfit(np.arange(3.0), y, 1)))(np.ones(3))


def test_polymul_trims_leading_zeros_like_poly1d():
    p = np.array([0.0, 1.0, 2.0])
    out, pull = tg.vjp(lambda p: np.polymul(p, np.array([1.0, 1.0])), p)
    np.testing.assert_array_equal(out, np.polymul(p, [1.0, 1.0]))
    np.testing.assert_array_equal(pull(np.ones(3))[0], [0.0, 2.0, 2.0])


def test_poly1d_is_unsupported():
    with pytest.raises(tg.UnsupportedOperation, match="poly1d"):
        tg.grad(lambda x: np.polyval(np.poly1d([1.0, 2.0]), x))(np.ones(1))


# --- pad ---------------------------------------------------------------------------------------
PAD_MODES = [
    ("constant", {}), ("constant", {"constant_values": 1.5}),
    ("constant", {"constant_values": ((1.0, 2.0),)}), ("edge", {}), ("wrap", {}),
    ("reflect", {}), ("symmetric", {}), ("reflect", {"reflect_type": "odd"}),
    ("symmetric", {"reflect_type": "odd"}), ("linear_ramp", {}),
    ("linear_ramp", {"end_values": (1.0, -2.0)}), ("maximum", {}), ("minimum", {}),
    ("mean", {}), ("median", {}), ("maximum", {"stat_length": 2}),
    ("mean", {"stat_length": ((1, 3),)}), ("median", {"stat_length": 1}), ("empty", {}),
]


@pytest.mark.parametrize("mode, kw", PAD_MODES, ids=[f"{m}-{k}" for m, k in PAD_MODES])
@given(shape=shapes, seed=seeds, data=st.data())
def test_pad(mode, kw, shape, seed, data):
    rng = np.random.default_rng(seed)
    x = spread(rng, shape)
    nd = len(shape)
    pw = data.draw(st.one_of(
        st.integers(0, 5),
        st.tuples(st.integers(0, 5), st.integers(0, 5)),
        st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), min_size=nd,
                 max_size=nd).map(tuple)), label="pad_width")
    if mode == "empty":
        out, pull = tg.vjp(lambda x: np.pad(x, pw, mode), x)
        ref = np.pad(x, pw)
        assert out.shape == ref.shape and out.dtype == ref.dtype
        np.testing.assert_array_equal(out, ref)          # zeros in the pad area
        np.testing.assert_array_equal(pull(np.ones_like(out))[0], np.ones_like(x))
        return
    check(lambda x: np.pad(x, pw, mode, **kw), x, rng=rng, exact=True, jac=x.size <= 8)


@pytest.mark.parametrize("key", ["constant_values", "end_values"])
def test_pad_traced_values(key):
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    mode = "constant" if key == "constant_values" else "linear_ramp"
    check(lambda x, c: np.pad(x, ((1, 2), (3, 1)), mode, **{key: c}), x, np.array(0.7),
          exact=True)
    check(lambda x, c: np.pad(x, 2, mode, **{key: c}), x, np.array([[0.5, -1.0], [2.0, 3.0]]),
          exact=True)


def test_pad_dict_width_and_errors():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    check(lambda x: np.pad(x, {1: (1, 2)}, "reflect"), x, exact=True)
    with pytest.raises(tg.UnsupportedOperation):
        tg.grad(lambda x: np.sum(np.pad(x, 1, lambda *a: None)))(x)
    with pytest.raises(ValueError):
        tg.grad(lambda x: np.sum(np.pad(x, 1, "edge", constant_values=1)))(x)
    with pytest.raises(ValueError):
        tg.grad(lambda x: np.sum(np.pad(x, 1, "bogus")))(x)


# --- triangles, grids, ranges ----------------------------------------------------------------
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=3).map(tuple), seed=seeds,
       k=st.integers(-3, 3))
def test_triu_tril(shape, seed, k):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    check(lambda x: np.triu(x, k), x, rng=rng, exact=True)
    check(lambda x: np.tril(x, k), x, rng=rng, exact=True)


@given(n=st.integers(1, 3), seed=seeds, data=st.data())
def test_meshgrid(n, seed, data):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(data.draw(st.integers(1, 3))) for _ in range(n)]
    indexing = data.draw(st.sampled_from(["xy", "ij"]))
    sparse = data.draw(st.booleans())
    copy = data.draw(st.booleans())
    check(lambda *xs: tuple(np.meshgrid(*xs, indexing=indexing, sparse=sparse, copy=copy)),
          *xs, rng=rng, exact=True)


@given(seed=seeds, num=st.integers(0, 6), endpoint=st.booleans(), data=st.data())
def test_linspace_logspace_geomspace(seed, num, endpoint, data):
    rng = np.random.default_rng(seed)
    shape = data.draw(st.sampled_from([(), (2,), (2, 3)]))
    a = rng.uniform(0.5, 2.0, shape)
    b = rng.uniform(2.5, 4.0, shape)
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    check(lambda a, b: np.linspace(a, b, num, endpoint=endpoint, axis=axis), a, b, rng=rng,
          exact=True)
    if (num - 1 if endpoint else num) > 0:     # otherwise the step is nan
        check(lambda a, b: np.linspace(a, b, num, endpoint=endpoint, retstep=True)[1], a, b,
              rng=rng, exact=True)
    check(lambda a, b: np.logspace(a, b, num, endpoint=endpoint, base=2.0, axis=axis), a, b,
          rng=rng, exact=True)
    check(lambda a, b: np.geomspace(a, b, num, endpoint=endpoint, axis=axis), a, b, rng=rng,
          exact=True)
    check(lambda a, b: np.geomspace(-a, -b, num, endpoint=endpoint), a, b, rng=rng, exact=True)
    if num:
        # float32 output: linear in b, so a large step keeps rounding out of the FD
        check(lambda b: np.linspace(0, b, num, dtype=np.float32), b, rng=rng, exact=True,
              eps=0.1, fd_rtol=1e-3, jac=False)


def test_linspace_plain_start_traced_stop():
    g = tg.grad(lambda s: np.sum(np.linspace(1.0, s, 5)))(3.0)
    assert g == np.sum(np.linspace(0, 1, 5))


# --- selection --------------------------------------------------------------------------------
@given(shape=shapes, seed=seeds, data=st.data())
def test_select(shape, seed, data):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    default = data.draw(st.sampled_from([0, 2.5, "traced"]))
    if default == "traced":
        check(lambda x, d: np.select([x < -0.5, x > 0.5], [x ** 2, np.sin(x)], d), x,
              np.array(1.5), rng=rng, exact=True)
    else:
        check(lambda x: np.select([x < -0.5, x > 0.5], [x ** 2, 3.0], default), x, rng=rng,
              exact=True)


@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple), seed=seeds,
       otherwise=st.booleans())
def test_piecewise(shape, seed, otherwise):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    x.flat[0] = -1.0             # one element in a differentiable piece
    funcs = [lambda t, a: t ** 3 + a, 2.0]
    if otherwise:
        funcs.append(lambda t, a: np.exp(a * t))
    f = lambda x: np.piecewise(x, [x < -0.3, x > 0.8], funcs, 0.5)
    check(f, x, rng=rng, exact=True)


# --- statistics -------------------------------------------------------------------------------
@given(seed=seeds, data=st.data())
def test_average(seed, data):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 4))
    w = rng.uniform(0.5, 1.5, 4)
    returned = data.draw(st.booleans())
    check(lambda x, w: np.average(x, axis=1, weights=w, returned=returned), x, w, rng=rng,
          exact=True)
    check(lambda x: np.average(x, axis=(0, 1), keepdims=True), x, rng=rng, exact=True)


@given(seed=seeds, rowvar=st.booleans(), bias=st.booleans(), data=st.data())
def test_cov_corrcoef(seed, rowvar, bias, data):
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((3, 5) if rowvar else (5, 3))
    y = rng.standard_normal((2, 5) if rowvar else (5, 2))
    ddof = data.draw(st.sampled_from([None, 0, 2]))
    fw = np.array([1.0, 2.0, 1.0, 3.0, 1.0])
    aw = rng.uniform(0.5, 1.5, 5)
    check(lambda m: np.cov(m, rowvar=rowvar, bias=bias, ddof=ddof), m, rng=rng, exact=True,
          second=True)
    check(lambda m, y: np.cov(m, y, rowvar=rowvar), m, y, rng=rng, exact=True)
    # (NumPy's cov multiplies fweights by aweights in place: pass a copy)
    check(lambda m, aw: np.cov(m, rowvar=rowvar, fweights=fw.copy(), aweights=aw, ddof=ddof),
          m, aw, rng=rng, exact=True)
    check(lambda m: np.corrcoef(m, rowvar=rowvar), m, rng=rng, exact=True)
    check(lambda m, y: np.corrcoef(m, y, rowvar=rowvar), m, y, rng=rng, exact=True)
    check(lambda v: np.cov(v), m[0], rng=rng, exact=True)


def test_cov_complex():
    # cov/corrcoef compose np.dot, whose VJP conjugates complex operands
    rng = np.random.default_rng(3)
    z = rng.standard_normal((2, 4)) + 1j * rng.standard_normal((2, 4))
    check(np.cov, z, exact=True)
    check(np.corrcoef, z)


# --- elementwise helpers ----------------------------------------------------------------------
@given(shape=shapes, seed=seeds)
def test_sinc_i0(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-12, 12, shape)
    check(np.sinc, x, rng=rng, exact=True, second=True)
    check(np.i0, x, rng=rng, exact=True, second=True)


def test_sinc_at_zero():
    assert tg.grad(lambda x: np.sinc(x))(0.0) == 0.0
    assert tg.grad(lambda x: np.i0(x))(0.0) == 0.0


@given(shape=shapes, seed=seeds, data=st.data())
def test_unwrap(shape, seed, data):
    rng = np.random.default_rng(seed)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    p = np.cumsum(rng.uniform(-3.0, 3.0, shape), axis=axis)
    period = data.draw(st.sampled_from([2 * np.pi, 5.0]))
    check(lambda p: np.unwrap(p, axis=axis, period=period), p, rng=rng, exact=True)
    cts = tg.grad(lambda p: np.sum(np.unwrap(p, axis=axis)))(p)
    np.testing.assert_array_equal(cts, np.ones_like(p))


def test_nan_to_num():
    x = np.array([1.0, np.nan, np.inf, -np.inf, -2.0])
    out, pull = tg.vjp(lambda x: np.nan_to_num(x, nan=0.5, posinf=9.0), x)
    np.testing.assert_array_equal(out, np.nan_to_num(x, nan=0.5, posinf=9.0))
    np.testing.assert_array_equal(pull(np.ones(5))[0], [1.0, 0, 0, 0, 1.0])
    z = np.empty(2, complex)
    z.real, z.imag = [1.0, np.inf], [np.nan, 2.0]
    out, pull = tg.vjp(np.nan_to_num, z)
    np.testing.assert_array_equal(out, np.nan_to_num(z))
    np.testing.assert_array_equal(pull(np.ones(2) * (1 + 1j))[0], [1.0, 1j])
    # nan= traced together with a traced x (NumPy dispatches on x only)
    xs = np.array([1.0, np.nan, -2.0])
    check(lambda x, n: np.nan_to_num(x, nan=n), xs, np.array(0.25), exact=True)
