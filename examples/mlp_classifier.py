"""Train a small tanh MLP on a synthetic two-spirals problem with tracegrad.

The model and loss are ordinary NumPy; tracegrad.value_and_grad gives the
loss and the gradient with respect to a dict of parameters (a pytree).
Run: python examples/mlp_classifier.py
"""
import numpy as np

import tracegrad as tg


def spirals(n, rng):
    t = np.sqrt(rng.uniform(size=n)) * 3 * np.pi
    sign = np.where(rng.uniform(size=n) < 0.5, 1.0, -1.0)
    X = np.stack([sign * t * np.cos(t), sign * t * np.sin(t)], axis=1) / 10
    X += 0.05 * rng.standard_normal(X.shape)
    return X, (sign > 0).astype(int)


def init(rng, sizes):
    return {f"W{i}": rng.standard_normal((m, n)) / np.sqrt(m)
            for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:]))} | {
        f"b{i}": np.zeros(n) for i, n in enumerate(sizes[1:])}


def forward(params, X):
    h = X
    n = len(params) // 2
    for i in range(n):
        h = h @ params[f"W{i}"] + params[f"b{i}"]
        if i < n - 1:
            h = np.tanh(h)
    return h


def loss(params, X, y):
    logits = forward(params, X)
    logits = logits - np.max(logits, axis=1, keepdims=True)
    logp = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
    return -np.mean(logp[np.arange(len(y)), y])


def main(steps=400, lr=0.3):
    rng = np.random.default_rng(0)
    X, y = spirals(400, rng)
    params = init(rng, [2, 32, 32, 2])
    step = tg.value_and_grad(loss)
    for k in range(steps + 1):
        value, grads = step(params, X, y)
        params = {name: p - lr * grads[name] for name, p in params.items()}
        if k % 50 == 0:
            acc = np.mean(np.argmax(forward(params, X), axis=1) == y)
            print(f"step {k:4d}  loss {float(value):.4f}  accuracy {acc:.3f}")
    # the gradient at the end, checked against finite differences
    tg.check_grads(lambda W: loss(params | {"W0": W}, X[:20], y[:20]), (params["W0"],), order=1)
    print("final gradient verified against finite differences")
    return float(value)


if __name__ == "__main__":
    main()
