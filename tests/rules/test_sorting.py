"""Sorting and selection (rules/sorting.py): sort, partition, median,
quantile/percentile with every method, the nan-functions, and the tie
conventions the module documents."""
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tracegrad as tg
from tracegrad.rules.sorting import QUANTILE_METHODS

from cases_signal import check, spread

CONTINUOUS = ["linear", "hazen", "weibull", "median_unbiased", "normal_unbiased",
              "interpolated_inverted_cdf"]
PIECEWISE_CONSTANT_IN_Q = ["inverted_cdf", "averaged_inverted_cdf", "closest_observation",
                           "lower", "higher", "midpoint", "nearest"]

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)
seeds = st.integers(0, 2 ** 32 - 1)


def _axis(data, ndim, none=True, multi=True):
    opts = [st.integers(-ndim, ndim - 1)]
    if none:
        opts.append(st.none())
    if multi and ndim > 1:
        opts.append(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim,
                             unique=True).map(tuple))
    return data.draw(st.one_of(*opts), label="axis")


def test_method_table_is_numpys():
    try:
        from numpy.lib._function_base_impl import _QuantileMethods
    except ImportError:  # NumPy < 2.0
        from numpy.lib.function_base import _QuantileMethods
    assert set(QUANTILE_METHODS) == set(_QuantileMethods)
    assert set(CONTINUOUS + PIECEWISE_CONSTANT_IN_Q) == set(QUANTILE_METHODS)


# --- sort / partition ---------------------------------------------------------------------
@given(shape=shapes, seed=seeds, data=st.data())
def test_sort(shape, seed, data):
    rng = np.random.default_rng(seed)
    x = spread(rng, shape)
    axis = _axis(data, len(shape), multi=False)
    kind = data.draw(st.sampled_from([None, "quicksort", "stable", "heapsort", "mergesort"]))
    check(lambda x: np.sort(x, axis=axis, kind=kind), x, rng=rng, exact=True, second=True)


def test_sort_complex_values_and_permutation_jacobian():
    z = np.array([2 + 1j, -1 + 0j, 2 - 1j, 0.5j])
    out = tg.vjp(np.sort, z)[0]
    np.testing.assert_array_equal(out, np.sort(z))
    g = tg.grad(lambda z: np.sum(np.real(np.sort(z)) * np.arange(4.0)))(z)
    order = np.argsort(z, kind="stable")
    expected = np.zeros(4)
    expected[order] = np.arange(4.0)
    np.testing.assert_array_equal(g, expected)


@given(shape=shapes, seed=seeds, data=st.data())
def test_partition(shape, seed, data):
    rng = np.random.default_rng(seed)
    x = spread(rng, shape)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[axis]
    kth = data.draw(st.one_of(st.integers(-n, n - 1),
                              st.lists(st.integers(0, n - 1), min_size=1, max_size=n,
                                       unique=True)))
    check(lambda x: np.partition(x, kth, axis=axis), x, rng=rng, exact=True)
    # the values of argpartition-based selection: take_along_axis differentiates too
    check(lambda x: np.take_along_axis(x, np.argpartition(x, kth, axis=axis), axis), x,
          rng=rng, exact=True)


def test_sort_axis_none_in_place_and_order():
    x = np.array([[3.0, 1.0], [2.0, 0.0]])
    check(lambda x: np.sort(x, axis=None), x, exact=True)
    w = np.arange(4.0).reshape(2, 2)

    def in_place(x):
        y = x * 1.0
        y.sort(axis=0)          # x.sort() records the same gather through np.sort
        return np.sum(y * w)
    np.testing.assert_array_equal(tg.grad(in_place)(x),
                                  tg.grad(lambda x: np.sum(np.sort(x, axis=0) * w))(x))
    with pytest.raises(tg.UnsupportedOperation, match="order"):
        tg.grad(lambda x: np.sum(np.sort(x, order="f")))(x)


@pytest.mark.parametrize("fn", [np.argsort, np.argmax, np.argmin,
                                lambda x: np.argpartition(x, 1),
                                lambda x: np.searchsorted(np.sort(x), 0.5)])
def test_index_valued_functions_have_no_derivative(fn):
    x = np.array([0.3, -1.0, 2.0, 0.7])
    seen = []

    def f(x):
        seen.append(fn(x))
        return np.sum(x ** 2)
    np.testing.assert_array_equal(tg.grad(f)(x), 2 * x)
    r = seen[0]
    assert type(r) in (np.ndarray, np.intp, np.int64) and np.asarray(r).dtype.kind == "i"
    np.testing.assert_array_equal(r, fn(x))


# --- quantiles ------------------------------------------------------------------------------
def _q(data, scalar_ok=True):
    qs = st.floats(0.0, 1.0)
    opts = [st.lists(qs, min_size=1, max_size=3).map(np.array),
            st.lists(qs, min_size=4, max_size=4).map(lambda v: np.array(v).reshape(2, 2))]
    if scalar_ok:
        opts.append(qs)
    return data.draw(st.one_of(*opts), label="q")


@pytest.mark.parametrize("method", QUANTILE_METHODS)
@given(shape=shapes, seed=seeds, data=st.data())
def test_quantile_methods_values_and_derivatives(method, shape, seed, data):
    rng = np.random.default_rng(seed)
    x = spread(rng, shape)
    axis = _axis(data, len(shape))
    q = _q(data)
    keepdims = data.draw(st.booleans())
    pct = data.draw(st.booleans())
    if pct:
        check(lambda x: np.percentile(x, np.asarray(q) * 100 if np.ndim(q) else q * 100,
                                      axis=axis, method=method, keepdims=keepdims),
              x, rng=rng, jac=x.size <= 8)
    else:
        check(lambda x: np.quantile(x, q, axis=axis, method=method, keepdims=keepdims), x,
              rng=rng, exact=True, jac=x.size <= 8)


@pytest.mark.parametrize("method", CONTINUOUS)
@given(shape=shapes, seed=seeds, data=st.data())
def test_quantile_derivative_wrt_q(method, shape, seed, data):
    rng = np.random.default_rng(seed)
    x = spread(rng, shape)
    q = rng.uniform(0.05, 0.95, data.draw(st.integers(1, 3)))
    axis = _axis(data, len(shape), multi=False)
    check(lambda x, q: np.quantile(x, q, axis=axis, method=method), x, q, rng=rng,
          exact=True, second=True)
    check(lambda q: np.percentile(x, q, axis=axis, method=method), q * 100, rng=rng)


# the derivative is zero by design here: the warning about a disconnected output is expected
@pytest.mark.filterwarnings("ignore::tracegrad.EscapeWarning")
@pytest.mark.parametrize("method", PIECEWISE_CONSTANT_IN_Q)
def test_quantile_piecewise_constant_in_q_has_zero_q_derivative(method):
    x = np.array([0.3, -1.2, 2.5, 0.9, 1.7])
    q = np.array([0.13, 0.58])
    gq = tg.grad(lambda q: np.sum(np.quantile(x, q, method=method)))(q)
    np.testing.assert_array_equal(gq, 0.0)


def test_quantile_kink_in_q_takes_right_hand_slope():
    x = np.array([3.0, 0.0, 2.0, 1.0, 7.0])
    # q * (n - 1) = 1 exactly: between sorted[1] = 1 and sorted[2] = 2
    g = tg.grad(lambda q: np.quantile(x, q))(0.25)
    assert g == 4 * (2.0 - 1.0)
    _, t = tg.jvp(lambda q: np.quantile(x, q), (0.25,), (1.0,))
    assert t == 4.0


def test_weighted_inverted_cdf():
    x = np.array([[0.3, -1.2, 2.5, 0.9], [1.0, 4.0, -2.0, 0.5]])
    w = np.array([[1.0, 2.0, 0.5, 1.0], [3.0, 0.0, 1.0, 1.0]])
    for q in (0.3, [0.1, 0.5, 0.99]):
        f = lambda x: np.quantile(x, q, axis=1, method="inverted_cdf", weights=w)
        check(f, x, exact=True)
        f = lambda x: np.nanpercentile(x, np.multiply(q, 100), axis=1,
                                       method="inverted_cdf", weights=w)
        check(f, x)
    with pytest.raises(ValueError, match="weights"):
        tg.grad(lambda x: np.quantile(x, 0.5, weights=np.ones(2)))(np.ones(2))


def test_quantile_errors_and_nan():
    x = np.array([1.0, 2.0])
    with pytest.raises(ValueError, match="range"):
        tg.grad(lambda x: np.quantile(x, 1.5))(x)
    with pytest.raises(ValueError, match="method"):
        tg.grad(lambda x: np.quantile(x, 0.5, method="bogus"))(x)
    with pytest.raises(tg.InPlaceError):
        tg.grad(lambda x: np.quantile(x, 0.5, out=np.empty(())))(x)
    xn = np.array([[1.0, np.nan, 3.0], [0.5, 2.0, 1.0]])
    v, g = tg.value_and_grad(lambda x: np.sum(np.nan_to_num(np.median(x, axis=1))))(xn)
    assert v == 1.0
    np.testing.assert_array_equal(g, [[0, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(tg.vjp(lambda x: np.quantile(x, 0.4, axis=1), xn)[0],
                                  np.quantile(xn, 0.4, axis=1))


# --- median -----------------------------------------------------------------------------
@given(shape=shapes, seed=seeds, data=st.data())
def test_median(shape, seed, data):
    rng = np.random.default_rng(seed)
    x = spread(rng, shape)
    axis = _axis(data, len(shape))
    keepdims = data.draw(st.booleans())
    check(lambda x: np.median(x, axis=axis, keepdims=keepdims), x, rng=rng, exact=True,
          second=True, jac=x.size <= 12)


def test_median_float32_and_int():
    x = np.array([3.0, 1.0, 2.0, 5.0], np.float32)
    check(np.median, x, exact=True)
    np.testing.assert_array_equal(tg.grad(np.median)(x), np.array([0.5, 0, 0.5, 0], np.float32))


# --- tie conventions ---------------------------------------------------------------------
def test_sort_ties_follow_the_stable_order():
    x = np.array([1.0, 0.0, 1.0, 1.0])
    J = tg.jacrev(np.sort)(x)
    # sorted: 0 (index 1), then the ties in input order: indices 0, 2, 3
    np.testing.assert_array_equal(J, np.eye(4)[[1, 0, 2, 3]])
    np.testing.assert_array_equal(tg.jacfwd(np.sort)(x), J)


def test_median_and_quantile_ties_go_to_one_element():
    x = np.array([1.0, 1.0, 3.0])
    # the median is the second element of the stable order: input index 1
    np.testing.assert_array_equal(tg.grad(np.median)(x), [0.0, 1.0, 0.0])
    y = np.array([3.0, 1.0, 3.0])
    # quantile(1.0) picks the last of the stable order; np.max shares among ties
    np.testing.assert_array_equal(tg.grad(lambda y: np.quantile(y, 1.0))(y), [0, 0, 1.0])
    np.testing.assert_array_equal(tg.grad(np.max)(y), [0.5, 0, 0.5])
    np.testing.assert_array_equal(tg.grad(lambda y: np.nanmax(y))(y), [0.5, 0, 0.5])


# --- nan-functions --------------------------------------------------------------------------
NANFUNCS = {
    "nansum": lambda x, ax, kd: np.nansum(x, axis=ax, keepdims=kd),
    "nanprod": lambda x, ax, kd: np.nanprod(x, axis=ax, keepdims=kd),
    "nanmean": lambda x, ax, kd: np.nanmean(x, axis=ax, keepdims=kd),
    "nanmax": lambda x, ax, kd: np.nanmax(x, axis=ax, keepdims=kd),
    "nanmin": lambda x, ax, kd: np.nanmin(x, axis=ax, keepdims=kd),
    "nanvar": lambda x, ax, kd: np.nanvar(x, axis=ax, keepdims=kd),
    "nanstd": lambda x, ax, kd: np.nanstd(x, axis=ax, keepdims=kd, ddof=1),
    "nanmedian": lambda x, ax, kd: np.nanmedian(x, axis=ax, keepdims=kd),
    "nanquantile": lambda x, ax, kd: np.nanquantile(x, [0.2, 0.7], axis=ax, keepdims=kd),
    "nanpercentile": lambda x, ax, kd: np.nanpercentile(x, 35.0, axis=ax, keepdims=kd,
                                                        method="hazen"),
    "nancumsum": lambda x, ax, kd: np.nancumsum(x, axis=ax if ax is None or np.ndim(ax) == 0
                                                 else ax[0]),
    "nancumprod": lambda x, ax, kd: np.nancumprod(x, axis=ax if ax is None or np.ndim(ax) == 0
                                                   else ax[0]),
}


def _with_nans(rng, shape, p=0.3):
    x = spread(rng, shape, gap=0.3)
    mask = rng.random(shape) < p
    return np.where(mask, np.nan, x)


@pytest.mark.parametrize("name", sorted(NANFUNCS))
@given(shape=shapes, seed=seeds, data=st.data())
def test_nan_functions(name, shape, seed, data):
    rng = np.random.default_rng(seed)
    x = _with_nans(rng, shape)
    axis = _axis(data, len(shape), multi=name not in ("nancumsum", "nancumprod"))
    keepdims = data.draw(st.booleans())
    fn = NANFUNCS[name]

    def f(x):
        # all-NaN slices give NaN (tested separately); zero them for the checks
        r = fn(x, axis, keepdims)
        return np.where(np.isnan(r), 0.0, r)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cts = check(f, x, rng=rng, jac=x.size <= 8)
        assert np.all(np.isfinite(cts[0]))
        assert np.all(cts[0][np.isnan(x)] == 0)
        np.testing.assert_array_equal(tg.vjp(lambda x: fn(x, axis, keepdims), x)[0],
                                      fn(x, axis, keepdims))


@pytest.mark.parametrize("fn", [np.nanmax, np.nanmin, np.nanmean, np.nanmedian, np.nanvar,
                                lambda x, axis: np.nanquantile(x, 0.3, axis=axis)])
def test_all_nan_slice_warns_and_gives_nan(fn):
    x = np.array([[np.nan, np.nan], [1.0, 2.0]])
    with pytest.warns(RuntimeWarning):
        v, g = tg.value_and_grad(lambda x: np.nansum(fn(x, axis=1)))(x)
    with pytest.warns(RuntimeWarning):
        assert v == np.nansum(fn(x, axis=1))
    assert np.all(np.isfinite(g)) and np.all(g[0] == 0)


def test_nanargmax_nanargmin_no_derivative():
    x = np.array([[0.5, np.nan, 2.0], [np.nan, -1.0, 0.0]])
    for fn in (np.nanargmax, np.nanargmin):
        got = []

        def f(x, fn=fn):
            got.append(fn(x, axis=1))
            return np.nansum(x)
        g = tg.grad(f)(x)
        np.testing.assert_array_equal(g, np.where(np.isnan(x), 0, 1.0))
        np.testing.assert_array_equal(got[0], fn(x, axis=1))
        assert type(got[0]) is np.ndarray
