"""NumPy functions run through their own ``_implementation`` (rules/fallback.py).

The fallback is an allow-list: this file names every function on it (so the
list cannot grow without a test), checks each one's gradient against finite
differences in both modes, and checks that Python-level NumPy functions that
are *not* on the list keep raising UnsupportedOperation with a message that
names the function and shows how to register a rule.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.core.primitive import FUNCTION_HANDLERS
from tracegrad.rules.fallback import FALLBACK, is_fallback

sys.path.insert(0, str(Path(__file__).parent / "rules"))
from cases_signal import check  # noqa: E402

HAS_CUMULATIVE = hasattr(np, "cumulative_sum")

#: every function that runs through NumPy's _implementation, with a check
EXPECTED = {
    np.average, np.diff, np.triu, np.tril, np.sinc, np.i0, np.polyadd, np.polysub,
    np.append, np.real_if_close, np.rollaxis, np.extract, np.resize,
} | ({np.cumulative_sum, np.cumulative_prod} if HAS_CUMULATIVE else set())

rng = np.random.default_rng(7)
X = rng.standard_normal((3, 4))
W = rng.uniform(0.5, 1.5, 4)
P = np.array([1.5, -0.5, 2.0])
Q = np.array([0.7, 1.1])

#: function -> list of (fun, args) checked against finite differences
CHECKS = {
    np.average: [(lambda x: np.average(x), (X,)),
                 (lambda x, w: np.average(x, axis=1, weights=w), (X, W)),
                 (lambda x, w: np.average(x, axis=1, weights=w, returned=True), (X, W)),
                 (lambda w: np.average(X, axis=1, weights=w, keepdims=True), (W,))],
    np.diff: [(lambda x: np.diff(x, n=2, axis=0), (X,)),
              (lambda x: np.diff(x, prepend=0.5, append=X[:, :1]), (X,)),
              (lambda x, p: np.diff(x, prepend=p), (X, np.array(0.3)))],
    np.triu: [(lambda x: np.triu(x, -1), (X,)), (lambda x: np.triu(x[None] * 2, 1), (X,))],
    np.tril: [(lambda x: np.tril(x), (X,)), (lambda x: np.tril(x, 2), (X,))],
    np.sinc: [(np.sinc, (np.append(X.ravel(), 0.0),))],
    np.i0: [(np.i0, (np.concatenate([X.ravel() * 6, [0.0, 8.0, -9.5]]),))],
    np.polyadd: [(np.polyadd, (P, Q)), (np.polyadd, (Q, P)), (np.polyadd, (P, P))],
    np.polysub: [(np.polysub, (P, Q)), (np.polysub, (Q, P))],
    np.append: [(lambda x, y: np.append(x, y), (X, P)),
                (lambda x: np.append(x, X, axis=0), (X,))],
    np.real_if_close: [(lambda x: np.real_if_close(x + 0j), (X,)),
                       (lambda z: np.real_if_close(z), (X + 1j * X,))],
    np.rollaxis: [(lambda x: np.rollaxis(x, 1), (X,)), (lambda x: np.rollaxis(x, 0, 2), (X,))],
    np.extract: [(lambda x: np.extract(X > 0, x), (X,))],
    np.resize: [(lambda x: np.resize(x, (5, 3)), (X,)), (lambda x: np.resize(x, 7), (X,))],
}
if HAS_CUMULATIVE:
    CHECKS[np.cumulative_sum] = [
        (lambda x: np.cumulative_sum(x, axis=1), (X,)),
        (lambda x: np.cumulative_sum(x.ravel(), include_initial=True), (X,))]
    CHECKS[np.cumulative_prod] = [
        (lambda x: np.cumulative_prod(x, axis=0), (X,)),
        (lambda x: np.cumulative_prod(x, axis=1, include_initial=True), (X,))]


def test_the_allow_list_is_exactly_the_tested_list():
    assert set(FALLBACK) == EXPECTED
    assert set(CHECKS) == EXPECTED
    for f in EXPECTED:
        assert is_fallback(f)
        assert FUNCTION_HANDLERS[f] is f._implementation


@pytest.mark.parametrize("func", sorted(EXPECTED, key=lambda f: f.__name__),
                         ids=lambda f: f.__name__)
def test_fallback_gradients_match_finite_differences(func):
    for fun, args in CHECKS[func]:
        check(fun, *args, rng=np.random.default_rng(0), exact=True)


def test_fallback_records_the_primitives_it_calls():
    from tracegrad.api import _trace_reverse
    tape = _trace_reverse(lambda x, w: np.average(x, axis=1, weights=w), (X, W), False)[0]
    names = {n.prim.name for n in tape.nodes}
    assert {"multiply", "sum", "divide"} <= names


def test_fallback_second_order():
    H = tg.hessian(lambda x: np.sum(np.sinc(x) ** 2) + np.sum(np.diff(x) ** 3))(P)
    H2 = tg.jacfwd(tg.jacfwd(lambda x: np.sum(np.sinc(x) ** 2) + np.sum(np.diff(x) ** 3)))(P)
    np.testing.assert_allclose(H, H2, rtol=1e-12)
    np.testing.assert_allclose(H, H.T, rtol=1e-12)


# --- everything else still raises --------------------------------------------------------------
#: Python-level NumPy functions whose _implementation is NOT safe (np.asarray,
#: writes into plain buffers); unless someone gives them a rule they must raise.
UNSAFE = [
    (np.roots, lambda x: np.roots(x)),
    (np.poly, lambda x: np.poly(x)),
    (np.trim_zeros, lambda x: np.trim_zeros(x)),
    (np.insert, lambda x: np.insert(x, 1, 5.0)),
    (np.delete, lambda x: np.delete(x, 1)),
    (np.apply_along_axis, lambda x: np.apply_along_axis(np.sum, 0, x)),
    (np.histogram2d, lambda x: np.histogram2d(x, x)[0]),
    (np.extract, lambda x: np.extract(x > 0, x)),
]


def test_functions_off_the_list_raise_and_say_how_to_register():
    tested = 0
    for func, call in UNSAFE:
        if func in FUNCTION_HANDLERS:
            continue            # it has a rule by now: nothing to check here
        tested += 1
        with pytest.raises(tg.UnsupportedOperation) as info:
            tg.grad(lambda x: np.sum(call(x)))(np.array([1.0, 2.0, 3.0]))
        msg = str(info.value)
        assert f"np.{func.__name__}" in msg
        assert "tracegrad.defvjp(" in msg and "docs/supported.md" in msg
    assert tested >= 3


def test_defvjp_named_in_the_message_exists():
    # the message shows tracegrad.defvjp(func, lambda ans, x: lambda g: ...): that API exists
    assert callable(tg.defvjp) and callable(tg.custom_vjp)
