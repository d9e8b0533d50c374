"""numpy.polynomial converts coefficients with np.array: a traced coefficient
array raises instead of getting a silent zero gradient; points differentiate."""
import numpy as np
import pytest
from numpy.polynomial import chebyshev as C
from numpy.polynomial import polynomial as P

import tracegrad as tg

X = np.linspace(-1.0, 1.0, 5)
COEF = np.array([1.0, 2.0, 3.0])


@pytest.mark.parametrize("f", [
    lambda c: P.polyval(X, c),
    lambda c: C.chebval(X, c),
    lambda c: P.polyval2d(X, X, c.reshape(3, 1)),
    lambda c: np.polynomial.Polynomial(c)(X),
    lambda c: P.polyvalfromroots(X, c),
])
def test_traced_coefficients_raise(f):
    with pytest.raises(tg.EscapeError, match="coefficients"):
        tg.grad(lambda c: np.sum(f(c)))(COEF)


def test_points_still_differentiate_and_plain_calls_unchanged():
    g = tg.grad(lambda x: np.sum(P.polyval(x, COEF)))(X)
    np.testing.assert_allclose(g, COEF[1] + 2 * COEF[2] * X)
    assert P.polyval(2.0, [1, 2, 3]) == 17.0
    assert np.polynomial.Polynomial([1, 2])(3.0) == 7.0
    # the documented alternative differentiates in the coefficients
    gc = tg.grad(lambda c: np.sum(np.polyval(c[::-1], X)))(COEF)
    np.testing.assert_allclose(gc, [X.size, X.sum(), (X ** 2).sum()])
