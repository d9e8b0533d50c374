"""tracegrad quickstart: exact gradients of unmodified NumPy functions.

Each function below is plain NumPy code that knows nothing about tracegrad.
We print tracegrad's gradient next to a central finite-difference estimate.
Run: python examples/quickstart.py
"""
import numpy as np

import tracegrad as tg


def seed(x):
    """The seed example: f(x) = sin(x**2 + 1), f'(x) = cos(x**2 + 1) * 2x."""
    return np.sin(x ** 2 + 1)


def logistic_loss(w, X, y):
    """Mean binary cross-entropy of a logistic regression, written the usual way."""
    z = X @ w
    p = 1.0 / (1.0 + np.exp(-z))
    eps = 1e-12
    return -np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))


def piecewise(x):
    """Python control flow on values: the branch that runs is differentiated."""
    if x > 0:
        return x ** 2
    else:
        return -x


def central_diff(f, x, eps=1e-6):
    x = np.asarray(x, dtype=float)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


def show(name, g, fd):
    err = np.max(np.abs(np.asarray(g) - fd)) / max(1.0, np.max(np.abs(fd)))
    print(f"{name}")
    print(f"  tracegrad   : {np.array2string(np.asarray(g), precision=6)}")
    print(f"  finite diff : {np.array2string(fd, precision=6)}")
    print(f"  rel. error  : {err:.1e}")
    assert err < 1e-6, f"{name}: gradient disagrees with finite differences"


def main():
    x = 1.3
    show("seed  d/dx sin(x**2 + 1) at x = 1.3", tg.grad(seed)(x), central_diff(seed, x))
    print(f"  closed form : {np.cos(x ** 2 + 1) * 2 * x:.6f}")

    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    y = (X @ np.array([1.5, -2.0, 0.5]) + 0.3 * rng.normal(size=50) > 0).astype(float)
    w = np.zeros(3) + 0.1
    g = tg.grad(logistic_loss)(w, X, y)
    show("logistic regression  d loss / d w", g, central_diff(lambda w: logistic_loss(w, X, y), w))

    for x in (2.0, -3.0):
        show(f"piecewise  (x**2 if x > 0 else -x) at x = {x}", tg.grad(piecewise)(x),
             central_diff(piecewise, x))

    value, g = tg.value_and_grad(logistic_loss)(w, X, y)
    print(f"value_and_grad: loss = {float(value):.6f}, |grad| = {np.linalg.norm(g):.6f}")
    print("all gradients match finite differences")


if __name__ == "__main__":
    main()
