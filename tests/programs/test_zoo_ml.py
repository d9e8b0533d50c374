"""A zoo of ordinary NumPy programs (machine learning, optimisation, probabilistic
programming, finance), written the way users write them, differentiated unmodified.

For each program: the gradient against high-order central finite differences, the
jit-compiled gradient against the eager one on two different inputs (the second call
replays the compiled plan), and the inputs left untouched. A few small programs also check
jacfwd against jacrev and the Hessian / HVP against finite differences of the gradient.
"""
import copy

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.core.pytree import tree_flatten, tree_unflatten

scipy_special = pytest.importorskip("scipy.special")


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _leaves(tree):
    return tree_flatten(tree)[0]


def fd_grad(f, args, argnum=0, h=None):
    """Fourth-order central differences of scalar ``f(*args)`` w.r.t. pytree ``args[argnum]``."""
    leaves, treedef = tree_flatten(args[argnum])
    leaves = [np.array(x, dtype=np.float64) for x in leaves]
    out = []
    for k, leaf in enumerate(leaves):
        g = np.zeros_like(leaf)
        step = h if h is not None else 1e-4 * max(1.0, float(np.max(np.abs(leaf))))
        for i in np.ndindex(leaf.shape):
            vals = []
            for s in (2, 1, -1, -2):
                ls = [x.copy() for x in leaves]
                ls[k][i] += s * step
                a = list(args)
                a[argnum] = tree_unflatten(treedef, ls)
                vals.append(float(f(*a)))
            g[i] = (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * step)
        out.append(g)
    return tree_unflatten(treedef, out)


def assert_tree_close(got, want, rtol, atol=None, what=""):
    gl, wl = _leaves(got), _leaves(want)
    assert len(gl) == len(wl), what
    scale = max([float(np.max(np.abs(w))) if np.size(w) else 0.0 for w in wl] + [1e-300])
    atol = rtol * scale if atol is None else atol
    for j, (g, w) in enumerate(zip(gl, wl)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape, (what, j, g.shape, w.shape)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"{what} leaf {j}")


def perturb(tree, rng, scale=0.05):
    return tree_unflatten(tree_flatten(tree)[1], [
        (np.asarray(x) + scale * rng.standard_normal(np.shape(x))).astype(np.asarray(x).dtype)
        for x in _leaves(tree)])


def check_program(f, args, argnum=0, rtol=1e-6, jit_args=None, has_aux=False, fd_rtol=None,
                  fd_h=None):
    """grad vs finite differences, jit(grad) vs grad on two inputs, no input mutation."""
    before = copy.deepcopy(args)
    gfun = tg.grad(f, argnums=argnum, has_aux=has_aux)
    res = gfun(*args)
    g = res[0] if has_aux else res
    for x, y in zip(_leaves(args), _leaves(before)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg="input mutated")
    fval = (lambda *a: f(*a)[0]) if has_aux else f
    want = fd_grad(fval, args, argnum, h=fd_h)
    assert_tree_close(g, want, fd_rtol or rtol, what="grad vs finite differences")
    # jit(grad) equals eager grad, on the traced call and on a replay with new inputs
    jg = tg.jit(gfun)
    second = jit_args if jit_args is not None else (
        tuple(perturb(a, np.random.default_rng(7)) if i == argnum else a
              for i, a in enumerate(args)))
    for a in (args, second):
        eager = gfun(*a)
        for _ in range(2):
            compiled = jg(*a)
            assert_tree_close(compiled, eager, 1e-10, what="jit(grad) vs grad")
    for x, y in zip(_leaves(args), _leaves(before)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg="input mutated")
    return g


def check_second_order(f, x, rtol=1e-5):
    """jacfwd(grad) vs jacrev(grad), hessian vs FD of grad, hvp vs hessian @ v."""
    H = tg.hessian(f)(x)
    g = tg.grad(f)
    n = x.size
    Hfd = np.zeros((n, n))
    h = 1e-4
    for i in range(n):
        e = np.zeros(n)
        e[i] = h
        e = e.reshape(x.shape)
        Hfd[:, i] = ((-g(x + 2 * e) + 8 * g(x + e) - 8 * g(x - e) + g(x - 2 * e))
                     / (12 * h)).ravel()
    assert_tree_close(H.reshape(n, n), Hfd, rtol, what="hessian vs FD of grad")
    assert_tree_close(tg.jacfwd(g)(x), tg.jacrev(g)(x), 1e-10, what="jacfwd vs jacrev")
    v = np.random.default_rng(3).standard_normal(x.shape)
    assert_tree_close(tg.hvp(f, x, v), (H.reshape(n, n) @ v.ravel()).reshape(x.shape), 1e-9,
                      what="hvp vs hessian @ v")
    return H


# --------------------------------------------------------------------------------------
# machine learning
# --------------------------------------------------------------------------------------
def _mlp_params(rng, sizes, dtype=np.float64):
    params = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"W{i}"] = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype)
        params[f"b{i}"] = (0.1 * rng.standard_normal(b)).astype(dtype)
    return params


def mlp_loss(params, X, y, n_layers, smoothing=0.1, l2=1e-3):
    h = X
    for i in range(n_layers):
        h = h @ params[f"W{i}"] + params[f"b{i}"]
        if i < n_layers - 1:
            h = np.maximum(h, 0.0) if i % 2 == 0 else np.tanh(h)
    logits = h
    # hand-written log-softmax with the max trick
    m = np.max(logits, axis=1, keepdims=True)
    logp = logits - m - np.log(np.sum(np.exp(logits - m), axis=1, keepdims=True))
    k = logits.shape[1]
    onehot = np.zeros((len(y), k))
    onehot[np.arange(len(y)), y] = 1.0
    target = onehot * (1 - smoothing) + smoothing / k
    loss = -np.mean(np.sum(target * logp, axis=1))
    reg = sum(np.sum(params[f"W{i}"] ** 2) for i in range(n_layers))
    acc = np.mean(np.argmax(logits, axis=1) == y)
    return loss + l2 * reg, acc


def test_mlp_label_smoothing_has_aux():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 4))
    y = rng.integers(0, 3, size=8)
    params = _mlp_params(rng, [4, 6, 5, 3])
    f = lambda p, X, y: mlp_loss(p, X, y, 3)
    g = check_program(f, (params, X, y), has_aux=True)
    assert set(g) == set(params)
    (v, acc), g2 = tg.value_and_grad(f, has_aux=True)(params, X, y)
    assert np.isclose(v, f(params, X, y)[0]) and 0 <= acc <= 1
    assert_tree_close(g2, g, 1e-12)


def test_mlp_float32():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((6, 3)).astype(np.float32)
    y = rng.integers(0, 2, size=6)
    params = _mlp_params(rng, [3, 4, 2], np.float32)
    f = lambda p: mlp_loss(p, X, y, 2)[0]
    g = tg.grad(f)(params)
    assert all(v.dtype == np.float32 for v in g.values())
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    want = fd_grad(lambda p: mlp_loss(p, X.astype(np.float64), y, 2)[0], (p64,))
    assert_tree_close(g, want, 2e-3)
    jg = tg.jit(tg.grad(f))
    assert_tree_close(jg(params), g, 1e-5)


def im2col_conv(x, w, b):
    """x: (N, C, H, W), w: (F, C, kh, kw); valid convolution by im2col with fancy indexing."""
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    oh, ow = H - kh + 1, W - kw + 1
    i0 = np.repeat(np.arange(kh), kw)
    j0 = np.tile(np.arange(kw), kh)
    i = i0[:, None] + np.repeat(np.arange(oh), ow)[None, :]
    j = j0[:, None] + np.tile(np.arange(ow), oh)[None, :]
    cols = x[:, :, i, j]                              # (N, C, kh*kw, oh*ow)
    cols = cols.reshape(N, C * kh * kw, oh * ow)
    out = np.einsum("fk,nkp->nfp", w.reshape(F, -1), cols) + b[None, :, None]
    return out.reshape(N, F, oh, ow)


def cnn_loss(params, x, y):
    h = im2col_conv(x, params["w1"], params["b1"])
    h = np.maximum(h, 0)
    # 2x2 average pooling via reshape
    N, F, H, W = h.shape
    h = h[:, :, : H // 2 * 2, : W // 2 * 2].reshape(N, F, H // 2, 2, W // 2, 2).mean(axis=(3, 5))
    z = h.reshape(N, -1) @ params["wo"]
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -np.mean(logp[np.arange(N), y])


def test_cnn_im2col_fancy_indexing():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 2, 6, 6))
    y = np.array([0, 2])
    params = {"w1": 0.5 * rng.standard_normal((3, 2, 3, 3)), "b1": 0.1 * rng.standard_normal(3),
              "wo": 0.3 * rng.standard_normal((3 * 2 * 2, 3))}
    check_program(cnn_loss, (params, x, y))
    # gradient with respect to the image too
    check_program(cnn_loss, (params, x, y), argnum=1)


def conv_sliding_window(x, w, b):
    """Convolution with sliding_window_view windows and einsum (the common NumPy idiom)."""
    win = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(2, 3))
    return np.einsum("nchwij,fcij->nfhw", win, w) + b[:, None, None]


def maxpool_1d(x, k):
    return np.max(np.lib.stride_tricks.sliding_window_view(x, k, axis=-1)[..., ::k, :], axis=-1)


def test_cnn_sliding_window_view():
    """Regression: np.lib.stride_tricks.sliding_window_view raised UnsupportedOperation."""
    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 2, 5, 5))
    w = 0.5 * rng.standard_normal((3, 2, 3, 3))
    b = 0.1 * rng.standard_normal(3)
    np.testing.assert_allclose(conv_sliding_window(x, w, b), im2col_conv(x, w, b), rtol=1e-12)
    f = lambda w, b, x: np.sum(np.tanh(maxpool_1d(conv_sliding_window(x, w, b), 2)) ** 2)
    check_program(f, (w, b, x))
    check_program(f, (w, b, x), argnum=1)
    check_program(f, (w, b, x), argnum=2)
    # jvp agrees with the reverse mode through the overlapping windows
    tg.check_grads(lambda x: conv_sliding_window(x, w, b), (x,), order=2)


def conv_einsum_slices(x, w):
    """Convolution as a sum over kernel offsets of shifted slices (no stride tricks)."""
    F, C, kh, kw = w.shape
    oh, ow = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    out = 0.0        # np.zeros(...) here would be a plain buffer: += of traced values raises
    for di in range(kh):
        for dj in range(kw):
            out += np.einsum("nchw,fc->nfhw", x[:, :, di:di + oh, dj:dj + ow], w[:, :, di, dj])
    return out


def test_conv_einsum_shifted_slices():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 5, 5))
    w = rng.standard_normal((2, 2, 3, 3))
    f = lambda w, x: np.sum(np.tanh(conv_einsum_slices(x, w)) ** 2)
    check_program(f, (w, x))
    check_program(f, (w, x), argnum=1)
    ref = im2col_conv(x, w, np.zeros(2))
    np.testing.assert_allclose(conv_einsum_slices(x, w), ref, rtol=1e-12)


def layernorm(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta


def softmax(z, axis=-1):
    z = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def transformer_block(p, x, n_heads=2):
    T, D = x.shape
    hd = D // n_heads
    h = layernorm(x, p["ln1_g"], p["ln1_b"])
    qkv = h @ p["Wqkv"]                                 # (T, 3D)
    q, k, v = np.split(qkv, 3, axis=-1)
    q = q.reshape(T, n_heads, hd).transpose(1, 0, 2)
    k = k.reshape(T, n_heads, hd).transpose(1, 0, 2)
    v = v.reshape(T, n_heads, hd).transpose(1, 0, 2)
    att = q @ k.swapaxes(-1, -2) / np.sqrt(hd)
    mask = np.triu(np.ones((T, T), dtype=bool), k=1)
    att = np.where(mask, -1e9, att)
    att = softmax(att, axis=-1)
    y = (att @ v).transpose(1, 0, 2).reshape(T, D)
    x = x + y @ p["Wo"]
    h = layernorm(x, p["ln2_g"], p["ln2_b"])
    x = x + gelu(h @ p["W1"] + p["b1"]) @ p["W2"]
    return x


def test_transformer_block():
    rng = np.random.default_rng(4)
    T, D = 4, 4
    p = {"ln1_g": 1 + 0.1 * rng.standard_normal(D), "ln1_b": 0.1 * rng.standard_normal(D),
         "Wqkv": rng.standard_normal((D, 3 * D)) / 2, "Wo": rng.standard_normal((D, D)) / 2,
         "ln2_g": 1 + 0.1 * rng.standard_normal(D), "ln2_b": 0.1 * rng.standard_normal(D),
         "W1": rng.standard_normal((D, 2 * D)) / 2, "b1": 0.1 * rng.standard_normal(2 * D),
         "W2": rng.standard_normal((2 * D, D)) / 2}
    x = rng.standard_normal((T, D))
    target = rng.standard_normal((T, D))
    f = lambda p, x: np.mean((transformer_block(p, x) - target) ** 2)
    check_program(f, (p, x))
    check_program(f, (p, x), argnum=1)


def lstm_loss(p, xs, y):
    T, B, _ = xs.shape
    H = p["Wh"].shape[0]
    h = np.zeros((B, H))
    c = np.zeros((B, H))
    # the buffer must be traced (built from a parameter): np.zeros((T, B, H)) would silently
    # drop the derivative of `hs[t] = h` (a documented blind spot: NumPy copies without a hook)
    hs = np.zeros_like(p["b"], shape=(T, B, H))
    for t in range(T):
        z = xs[t] @ p["Wx"] + h @ p["Wh"] + p["b"]
        i, f, o, g = np.split(z, 4, axis=1)
        i, f, o = 1 / (1 + np.exp(-i)), 1 / (1 + np.exp(-f)), 1 / (1 + np.exp(-o))
        c = f * c + i * np.tanh(g)
        h = o * np.tanh(c)
        hs[t] = h
    pred = hs.mean(axis=0) @ p["Wy"]
    return np.sum((pred - y) ** 2)


def test_lstm_loop_buffer_writes():
    rng = np.random.default_rng(5)
    T, B, I, H = 4, 2, 3, 3
    p = {"Wx": rng.standard_normal((I, 4 * H)) / 2, "Wh": rng.standard_normal((H, 4 * H)) / 2,
         "b": 0.1 * rng.standard_normal(4 * H), "Wy": rng.standard_normal((H, 1))}
    xs = rng.standard_normal((T, B, I))
    y = rng.standard_normal((B, 1))
    check_program(lstm_loss, (p, xs, y))


def gru_loss(p, xs):
    h = np.zeros(p["Uz"].shape[0])
    total = 0.0
    for x in xs:
        z = 1 / (1 + np.exp(-(p["Wz"] @ x + p["Uz"] @ h)))
        r = 1 / (1 + np.exp(-(p["Wr"] @ x + p["Ur"] @ h)))
        hh = np.tanh(p["Wh"] @ x + p["Uh"] @ (r * h))
        h = (1 - z) * h + z * hh
        total += np.sum(h ** 2)
    return total


def test_gru_python_loop():
    rng = np.random.default_rng(6)
    H, I = 3, 2
    p = {k: rng.standard_normal((H, I if k[0] == "W" else H)) / 2
         for k in ("Wz", "Uz", "Wr", "Ur", "Wh", "Uh")}
    xs = rng.standard_normal((5, I))
    check_program(gru_loss, (p, xs))
    check_program(gru_loss, (p, xs), argnum=1)


def rnn_tuple_params(params, xs):
    Wx, Wh, b = params
    h = np.zeros(Wh.shape[0])
    out = []
    for x in xs:
        h = np.tanh(Wx @ x + Wh @ h + b)
        out.append(h)
    H = np.stack(out)
    return np.sum(H[-1]) + 0.1 * np.sum(H ** 2)


def test_rnn_tuple_params_stack():
    rng = np.random.default_rng(7)
    params = (rng.standard_normal((3, 2)), rng.standard_normal((3, 3)) / 2,
              rng.standard_normal(3) * 0.1)
    xs = rng.standard_normal((4, 2))
    check_program(rnn_tuple_params, (params, xs))


def logreg_l1_l2(w, b, X, y, lam1=0.01, lam2=0.1):
    z = X @ w + b
    # numerically stable log(1 + exp(-y z)) with y in {-1, 1}
    loss = np.mean(np.logaddexp(0, -y * z))
    return loss + lam1 * np.sum(np.abs(w)) + 0.5 * lam2 * np.dot(w, w)


def test_logistic_regression_l1_l2():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((20, 5))
    y = np.sign(rng.standard_normal(20))
    w = rng.standard_normal(5)
    b = np.array(0.3)
    check_program(logreg_l1_l2, (w, b, X, y))
    check_program(logreg_l1_l2, (w, b, X, y), argnum=1)
    check_second_order(lambda w: logreg_l1_l2(w, b, X, y), w)


def test_logistic_regression_sigmoid_float32():
    rng = np.random.default_rng(9)
    X = rng.standard_normal((16, 3)).astype(np.float32)
    y = (rng.random(16) > 0.5).astype(np.float32)
    w = rng.standard_normal(3).astype(np.float32)

    def loss(w):
        p = 1 / (1 + np.exp(-(X @ w)))
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))

    g = tg.grad(loss)(w)
    assert g.dtype == np.float32
    w64 = w.astype(np.float64)
    X64, y64 = X.astype(np.float64), y.astype(np.float64)
    p = 1 / (1 + np.exp(-(X64 @ w64)))
    np.testing.assert_allclose(g, X64.T @ (p - y64) / len(y64), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(tg.jit(tg.grad(loss))(w), g, rtol=1e-5)


def batchnorm_mlp(p, X, y, eps=1e-5):
    h = X @ p["W1"]
    mu = h.mean(axis=0)
    var = ((h - mu) ** 2).mean(axis=0)
    hn = (h - mu) / np.sqrt(var + eps)
    h = np.maximum(p["gamma"] * hn + p["beta"], 0.01 * (p["gamma"] * hn + p["beta"]))
    out = h @ p["W2"]
    return 0.5 * np.sum((out.ravel() - y) ** 2) / len(y)


def test_batchnorm_leaky_relu():
    rng = np.random.default_rng(10)
    X = rng.standard_normal((8, 3))
    y = rng.standard_normal(8)
    p = {"W1": rng.standard_normal((3, 4)), "gamma": 1 + 0.1 * rng.standard_normal(4),
         "beta": 0.1 * rng.standard_normal(4), "W2": rng.standard_normal((4, 1))}
    check_program(batchnorm_mlp, (p, X, y))


def embedding_bag_loss(p, tokens, targets):
    E = p["E"]
    emb = E[tokens]                                   # (B, L, D): repeated ids accumulate
    pooled = emb.sum(axis=1) / tokens.shape[1]
    logits = pooled @ p["W"]
    lse = np.log(np.sum(np.exp(logits), axis=-1))
    return np.mean(lse - logits[np.arange(len(targets)), targets])


def test_embedding_fancy_indexing_repeated_ids():
    rng = np.random.default_rng(11)
    p = {"E": rng.standard_normal((6, 3)), "W": rng.standard_normal((3, 4))}
    tokens = np.array([[0, 1, 1, 5], [2, 2, 2, 0]])
    targets = np.array([3, 1])
    g = check_program(embedding_bag_loss, (p, tokens, targets))
    assert np.all(g["E"][[3, 4]] == 0)


def dropout_mlp(p, X, y, masks, keep=0.8):
    h = np.tanh(X @ p["W1"] + p["b1"])
    h = h * masks[0] / keep
    h = np.tanh(h @ p["W2"])
    h = np.where(masks[1], h / keep, 0.0)
    return np.mean((h.sum(axis=1) - y) ** 2)


def test_dropout_fixed_masks():
    rng = np.random.default_rng(12)
    X = rng.standard_normal((5, 3))
    y = rng.standard_normal(5)
    p = {"W1": rng.standard_normal((3, 4)), "b1": rng.standard_normal(4),
         "W2": rng.standard_normal((4, 4))}
    masks = (rng.random((5, 4)) < 0.8, rng.random((5, 4)) < 0.8)
    check_program(dropout_mlp, (p, X, y, masks))


def gp_neg_log_marginal(theta, X, y):
    log_ell, log_sf, log_sn = theta
    ell, sf2, sn2 = np.exp(log_ell), np.exp(2 * log_sf), np.exp(2 * log_sn)
    d2 = np.sum((X[:, None, :] - X[None, :, :]) ** 2, axis=-1)
    K = sf2 * np.exp(-0.5 * d2 / ell ** 2) + sn2 * np.eye(len(X))
    L = np.linalg.cholesky(K)
    alpha = np.linalg.solve(L.T, np.linalg.solve(L, y))
    return 0.5 * y @ alpha + np.sum(np.log(np.diag(L))) + 0.5 * len(X) * np.log(2 * np.pi)


def test_gp_marginal_likelihood_cholesky():
    rng = np.random.default_rng(13)
    X = rng.uniform(-2, 2, size=(6, 2))
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(6)
    theta = np.array([0.1, 0.2, -1.0])
    check_program(gp_neg_log_marginal, (theta, X, y))
    check_program(gp_neg_log_marginal, (theta, X, y), argnum=1)
    check_second_order(lambda t: gp_neg_log_marginal(t, X, y), theta, rtol=1e-5)

    def via_slogdet(theta):
        ell, sf2, sn2 = np.exp(theta[0]), np.exp(2 * theta[1]), np.exp(2 * theta[2])
        d2 = np.sum((X[:, None, :] - X[None, :, :]) ** 2, axis=-1)
        K = sf2 * np.exp(-0.5 * d2 / ell ** 2) + sn2 * np.eye(len(X))
        sign, logdet = np.linalg.slogdet(K)
        return 0.5 * y @ np.linalg.solve(K, y) + 0.5 * logdet + 0.5 * len(X) * np.log(2 * np.pi)

    assert np.isclose(via_slogdet(theta), gp_neg_log_marginal(theta, X, y))
    assert_tree_close(tg.grad(via_slogdet)(theta), tg.grad(gp_neg_log_marginal)(theta, X, y),
                      1e-9)


# --------------------------------------------------------------------------------------
# optimisation
# --------------------------------------------------------------------------------------
def rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def test_rosenbrock_gradient_and_hessian():
    x = np.array([-1.2, 1.0, 0.7, 1.3])
    check_program(rosenbrock, (x,))
    H = check_second_order(rosenbrock, x)
    # analytic Hessian of the 2-d Rosenbrock block
    H2 = tg.hessian(rosenbrock)(np.array([-1.2, 1.0]))
    a, b = -1.2, 1.0
    np.testing.assert_allclose(H2, [[1200 * a ** 2 - 400 * b + 2, -400 * a], [-400 * a, 200]])
    assert H.shape == (4, 4)


def penalty_objective(x, lo, hi, A, b, mu=10.0):
    f = 0.5 * x @ x + np.sum(np.sin(x))
    viol = np.maximum(A @ x - b, 0.0)
    f = f + mu * np.sum(viol ** 2)
    xc = np.clip(x, lo, hi)
    f = f + mu * np.sum((x - xc) ** 2)
    return f


def test_penalty_maximum_clip():
    rng = np.random.default_rng(20)
    A = rng.standard_normal((3, 4))
    b = rng.standard_normal(3)
    x = np.array([0.8, -0.9, 0.33, 2.1])
    lo, hi = -0.5, 0.5
    check_program(penalty_objective, (x, lo, hi, A, b))
    # bounds as arrays, gradient w.r.t. the bounds too
    lo_a, hi_a = np.full(4, -0.5), np.array([0.5, 0.6, 0.7, 0.8])
    check_program(penalty_objective, (x, lo_a, hi_a, A, b), argnum=2)


def least_squares_losses(A, b, lam):
    x1, *_ = np.linalg.lstsq(A, b, rcond=None)
    n = A.shape[1]
    x2 = np.linalg.solve(A.T @ A + lam * np.eye(n), A.T @ b)
    r = A @ x1 - b
    return np.sum(r ** 2) + np.sum(x1 ** 2) + np.sum(x2 * x1) + np.linalg.norm(x2)


def test_least_squares_lstsq_solve():
    rng = np.random.default_rng(21)
    A = rng.standard_normal((6, 3))
    b = rng.standard_normal(6)
    check_program(least_squares_losses, (A, b, 0.1))
    check_program(least_squares_losses, (A, b, 0.1), argnum=1)
    check_program(lambda lam, A, b: least_squares_losses(A, b, lam), (np.array(0.1), A, b))


def test_least_squares_multiple_rhs():
    rng = np.random.default_rng(22)
    A = rng.standard_normal((5, 3))
    B = rng.standard_normal((5, 2))
    f = lambda A, B: np.sum(np.linalg.lstsq(A, B, rcond=None)[0] ** 2)
    check_program(f, (A, B))
    check_program(f, (A, B), argnum=1)
    g = lambda B, A: np.sum(np.linalg.solve(A.T @ A, A.T @ B) ** 3)
    check_program(g, (B, A))


def log_barrier(x, A, b, c, t=5.0):
    s = b - A @ x
    return t * c @ x - np.sum(np.log(s))


def test_log_barrier():
    rng = np.random.default_rng(23)
    A = rng.standard_normal((5, 3))
    x = 0.1 * rng.standard_normal(3)
    b = A @ x + rng.uniform(0.5, 1.5, 5)
    c = rng.standard_normal(3)
    check_program(log_barrier, (x, A, b, c))
    check_second_order(lambda x: log_barrier(x, A, b, c), x)


def huber(r, delta=1.0):
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r ** 2, delta * (a - 0.5 * delta))


def test_huber_regression():
    rng = np.random.default_rng(24)
    X = rng.standard_normal((10, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + np.where(rng.random(10) < 0.3, 5.0, 0.1)
    w = np.array([0.3, 0.1, -0.2])
    f = lambda w: np.mean(huber(X @ w - y))
    check_program(f, (w,))
    want = np.mean(scipy_special.huber(1.0, X @ w - y))
    assert np.isclose(f(w), want)
    fs = lambda w: np.mean(scipy_special.huber(1.0, X @ w - y))
    assert_tree_close(tg.grad(fs)(w), tg.grad(f)(w), 1e-12)


def topk_loss(scores, k=3):
    s = np.sort(scores)[::-1]
    return np.sum(s[:k] ** 2) - np.mean(s[k:])


def partition_loss(scores, k=3):
    part = np.partition(scores, -k)
    return np.sum(np.exp(part[-k:])) + 0.1 * np.sum(part[:-k])


def pinball(q, y, tau):
    r = y - q
    return np.mean(np.maximum(tau * r, (tau - 1) * r))


def test_sorting_topk_partition_quantile():
    rng = np.random.default_rng(25)
    scores = rng.standard_normal(9)
    check_program(topk_loss, (scores,))
    check_program(partition_loss, (scores,))
    y = rng.standard_normal(12)
    q = np.array(0.123)
    check_program(pinball, (q, y, 0.9))
    check_program(lambda y: np.quantile(y, 0.8) + np.percentile(y, 25) ** 2
                  + np.median(y), (y,))
    # row-wise sort with axis and top-k mean along axis 1
    M = rng.standard_normal((3, 5))
    check_program(lambda M: np.sum(np.sort(M, axis=1)[:, -2:].mean(axis=1) ** 2), (M,))
    check_program(lambda M: np.sum(np.quantile(M, [0.3, 0.9], axis=0) ** 2), (M,))


# --------------------------------------------------------------------------------------
# probabilistic programming
# --------------------------------------------------------------------------------------
from scipy.special import betaln, digamma, gammaln  # noqa: E402  (after importorskip)

LOG2PI = np.log(2 * np.pi)


def normal_logpdf(x, mu, sigma):
    return -0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * LOG2PI


def student_t_logpdf(x, nu, mu, sigma):
    z = (x - mu) / sigma
    return (gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * np.log(nu * np.pi) - np.log(sigma)
            - (nu + 1) / 2 * np.log1p(z ** 2 / nu))


def gamma_logpdf(x, alpha, beta):
    return alpha * np.log(beta) - gammaln(alpha) + (alpha - 1) * np.log(x) - beta * x


def beta_logpdf(x, a, b):
    return (a - 1) * np.log(x) + (b - 1) * np.log1p(-x) - betaln(a, b)


def dirichlet_logpdf(x, alpha):
    norm = gammaln(np.sum(alpha)) - np.sum(gammaln(alpha))
    return np.sum((alpha - 1) * np.log(x), axis=-1) + norm


def mvn_logpdf(x, mu, L_flat):
    d = len(mu)
    L = np.zeros_like(L_flat, shape=(d, d))
    L[np.tril_indices(d)] = L_flat
    L[np.diag_indices(d)] = np.exp(L[np.diag_indices(d)])     # positive diagonal
    cov = L @ L.T
    diff = x - mu
    sol = np.linalg.solve(cov, diff.T).T
    sign, logdet = np.linalg.slogdet(cov)
    return -0.5 * np.sum(diff * sol, axis=-1) - 0.5 * logdet - 0.5 * d * LOG2PI


def test_log_densities_elementwise():
    rng = np.random.default_rng(30)
    x = rng.standard_normal(7)
    theta = np.array([0.3, 1.4, 3.5])                   # mu, sigma, nu

    def joint(theta):
        mu, sigma, nu = theta
        lp = np.sum(normal_logpdf(x, mu, sigma)) + np.sum(student_t_logpdf(x, nu, mu, sigma))
        lp += np.sum(gamma_logpdf(np.abs(x) + 0.1, sigma, nu))
        lp += np.sum(beta_logpdf(1 / (1 + np.exp(-x)), sigma, nu))
        return lp

    check_program(joint, (theta,))
    check_second_order(joint, theta, rtol=2e-5)
    # Gamma's shape derivative is digamma
    a, b, xs = 2.3, 1.7, np.array([0.4, 1.1, 2.5])
    ga = tg.grad(lambda a: np.sum(gamma_logpdf(xs, a, b)))(a)
    assert np.isclose(ga, np.sum(np.log(b) - digamma(a) + np.log(xs)))


def test_dirichlet_and_mvn():
    rng = np.random.default_rng(31)
    alpha = np.array([1.5, 2.0, 3.5])
    xs = rng.dirichlet(alpha, size=4)
    check_program(lambda a: np.sum(dirichlet_logpdf(xs, a)), (alpha,))
    check_program(lambda x: np.sum(dirichlet_logpdf(x, alpha)), (xs,))
    d = 3
    X = rng.standard_normal((5, d))
    mu = 0.1 * rng.standard_normal(d)
    L_flat = 0.3 * rng.standard_normal(d * (d + 1) // 2)
    check_program(lambda L_flat, mu: np.sum(mvn_logpdf(X, mu, L_flat)), (L_flat, mu))
    check_program(lambda mu, L_flat: np.sum(mvn_logpdf(X, mu, L_flat)), (mu, L_flat))
    from scipy.stats import multivariate_normal
    L = np.zeros((d, d))
    L[np.tril_indices(d)] = L_flat
    L[np.diag_indices(d)] = np.exp(np.diag(L))
    np.testing.assert_allclose(mvn_logpdf(X, mu, L_flat),
                               multivariate_normal(mu, L @ L.T).logpdf(X), rtol=1e-10)


def logsumexp_by_hand(a, axis=None, keepdims=False):
    m = np.max(a, axis=axis, keepdims=True)
    out = m + np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def gmm_neg_loglik(params, x):
    logits, mus, log_sigmas = params["logits"], params["mus"], params["log_sigmas"]
    log_w = logits - logsumexp_by_hand(logits)
    sig = np.exp(log_sigmas)
    comp = normal_logpdf(x[:, None], mus[None, :], sig[None, :])   # (N, K)
    return -np.sum(logsumexp_by_hand(log_w + comp, axis=1))


def test_gaussian_mixture_handwritten_logsumexp():
    rng = np.random.default_rng(32)
    x = np.concatenate([rng.normal(-2, 0.5, 6), rng.normal(1.5, 1.0, 6)])
    params = {"logits": np.array([0.1, -0.2, 0.3]), "mus": np.array([-1.5, 0.2, 1.2]),
              "log_sigmas": np.array([-0.3, 0.0, 0.2])}
    g = check_program(gmm_neg_loglik, (params, x))
    from scipy.special import logsumexp
    f2 = lambda p: -np.sum(logsumexp(np.log(scipy_special.softmax(p["logits"]))
                                     + normal_logpdf(x[:, None], p["mus"],
                                                     np.exp(p["log_sigmas"])), axis=1))
    assert np.isclose(f2(params), gmm_neg_loglik(params, x))
    assert_tree_close(tg.grad(f2)(params), g, 1e-10)
    # ties in the max trick: equal logits must still give the exact softmax gradient
    tied = dict(params, logits=np.zeros(3))
    check_program(gmm_neg_loglik, (tied, x))


def elbo(phi, eps, x):
    """Reparameterised Gaussian ELBO for a Normal-Normal model with fixed noise ``eps``."""
    mu, log_sd = phi[0], phi[1]
    z = mu + np.exp(log_sd) * eps                    # (S,)
    log_lik = np.sum(normal_logpdf(x[None, :], z[:, None], 1.0), axis=1)
    log_prior = normal_logpdf(z, 0.0, 2.0)
    log_q = normal_logpdf(z, mu, np.exp(log_sd))
    return -np.mean(log_lik + log_prior - log_q)


def test_reparameterised_elbo_fixed_noise():
    rng = np.random.default_rng(33)
    eps = rng.standard_normal(16)
    x = rng.normal(1.0, 1.0, 5)
    phi = np.array([0.4, -0.5])
    check_program(elbo, (phi, eps, x))
    check_second_order(lambda p: elbo(p, eps, x), phi)
    jf, jr = tg.jacfwd(lambda p: elbo(p, eps, x))(phi), tg.jacrev(lambda p: elbo(p, eps, x))(phi)
    np.testing.assert_allclose(jf, jr, rtol=1e-12)


def test_log_softmax_scipy_and_logit_normal():
    rng = np.random.default_rng(34)
    Z = rng.standard_normal((3, 4))
    y = np.array([1, 0, 3])
    f = lambda Z: -np.sum(scipy_special.log_softmax(Z, axis=1)[np.arange(3), y])
    check_program(f, (Z,))
    g = lambda Z: np.sum(scipy_special.expit(Z) * scipy_special.log_expit(-Z)
                         + scipy_special.xlogy(Z ** 2, np.abs(Z) + 1))
    check_program(g, (Z,))


# --------------------------------------------------------------------------------------
# finance
# --------------------------------------------------------------------------------------
def norm_cdf(x):
    return 0.5 * (1.0 + scipy_special.erf(x / np.sqrt(2.0)))


def black_scholes_call(S, K, T, r, sigma):
    d1 = (np.log(S / K) + (r + 0.5 * sigma ** 2) * T) / (sigma * np.sqrt(T))
    d2 = d1 - sigma * np.sqrt(T)
    return S * norm_cdf(d1) - K * np.exp(-r * T) * scipy_special.ndtr(d2)


def test_black_scholes_greeks():
    S, K, T, r, sigma = 100.0, np.array([90.0, 100.0, 115.0]), 0.75, 0.03, 0.25
    price = lambda inputs: np.sum(black_scholes_call(inputs[0], K, inputs[1], inputs[2],
                                                     inputs[3]))
    x = np.array([S, T, r, sigma])
    check_program(price, (x,), fd_rtol=1e-6)
    d1 = (np.log(S / K) + (r + 0.5 * sigma ** 2) * T) / (sigma * np.sqrt(T))
    pdf = np.exp(-0.5 * d1 ** 2) / np.sqrt(2 * np.pi)
    g = tg.grad(price)(x)
    np.testing.assert_allclose(g[0], np.sum(norm_cdf(d1)), rtol=1e-12)          # delta
    np.testing.assert_allclose(g[3], np.sum(S * pdf * np.sqrt(T)), rtol=1e-12)  # vega
    gamma = tg.hessian(lambda s: np.sum(black_scholes_call(s, K, T, r, sigma)))(S)
    np.testing.assert_allclose(gamma, np.sum(pdf / (S * sigma * np.sqrt(T))), rtol=1e-10)
    # per-strike deltas: jacfwd and jacrev agree
    per_k = lambda s: black_scholes_call(s, K, T, r, sigma)
    np.testing.assert_allclose(tg.jacfwd(per_k)(np.array(S)), tg.jacrev(per_k)(np.array(S)),
                               rtol=1e-12)
    check_second_order(price, x, rtol=1e-5)


def mc_asian_call(params, Z, K=1.0, dt=1 / 12):
    S0, mu, sigma = params["S0"], params["r"], params["sigma"]
    inc = (mu - 0.5 * sigma ** 2) * dt + sigma * np.sqrt(dt) * Z        # (paths, steps)
    paths = S0 * np.exp(np.cumsum(inc, axis=1))
    avg = paths.mean(axis=1)
    payoff = np.maximum(avg - K, 0.0)
    return np.exp(-mu * dt * Z.shape[1]) * payoff.mean()


def test_monte_carlo_pathwise_greeks():
    rng = np.random.default_rng(40)
    Z = rng.standard_normal((64, 6))
    params = {"S0": np.array(1.02), "r": np.array(0.02), "sigma": np.array(0.3)}
    # a small step: a larger one moves some path across the kink of max(avg - K, 0)
    check_program(mc_asian_call, (params, Z), fd_h=1e-6, fd_rtol=1e-6)


def portfolio_objective(logits, mu, Sigma, risk_aversion=3.0):
    w = np.exp(logits) / np.sum(np.exp(logits))
    var = w @ Sigma @ w
    ret = mu @ w
    return risk_aversion * 0.5 * var - ret + 0.01 * np.sum(w * np.log(w))


def test_portfolio_mean_variance():
    rng = np.random.default_rng(41)
    A = rng.standard_normal((5, 5))
    Sigma = A @ A.T / 5 + 0.1 * np.eye(5)
    mu = 0.05 + 0.02 * rng.standard_normal(5)
    logits = 0.3 * rng.standard_normal(5)
    check_program(portfolio_objective, (logits, mu, Sigma))
    check_program(lambda S, l: portfolio_objective(l, mu, S), (Sigma, logits))
    check_second_order(lambda l: portfolio_objective(l, mu, Sigma), logits)


def cvar(w, R, alpha=0.9):
    losses = -(R @ w)
    srt = np.sort(losses)
    n_tail = int(np.ceil((1 - alpha) * len(srt)))
    var = srt[-n_tail]
    return np.mean(srt[-n_tail:]), var


def test_cvar_sort_tail_mean():
    rng = np.random.default_rng(42)
    R = 0.01 + 0.05 * rng.standard_normal((40, 4))
    w = np.array([0.4, 0.3, 0.2, 0.1])
    g = check_program(cvar, (w, R), has_aux=True)
    losses = -(R @ w)
    tail = np.argsort(losses)[-4:]
    np.testing.assert_allclose(g, -R[tail].mean(axis=0), rtol=1e-12)
    # Rockafellar-Uryasev form with np.maximum
    ru = lambda z, w: z[0] + np.mean(np.maximum(-(R @ w) - z[0], 0)) / 0.1
    check_program(ru, (np.array([0.03]), w))


def cumulative_returns(w, R, fee=0.001):
    port = R @ w
    growth = np.cumprod(1 + port - fee * np.abs(w).sum())
    peak = np.maximum.accumulate(growth)
    drawdown = (peak - growth) / peak
    return -np.log(growth[-1]) + 2.0 * np.max(drawdown) + np.mean(drawdown ** 2)


def test_cumprod_drawdown():
    rng = np.random.default_rng(43)
    R = 0.002 + 0.02 * rng.standard_normal((30, 3))
    w = np.array([0.5, 0.3, 0.2])
    check_program(cumulative_returns, (w, R))
    check_program(cumulative_returns, (w, R), argnum=1)


def ema_signal(alpha, prices):
    ema = np.zeros_like(prices)
    ema[0] = prices[0]
    for t in range(1, len(prices)):
        ema[t] = alpha * prices[t] + (1 - alpha) * ema[t - 1]
    pos = np.tanh(5 * (prices - ema) / prices)
    pnl = pos[:-1] * np.diff(prices)
    return -np.sum(pnl) + 0.1 * np.sum(ema[1:] ** 2) / len(prices)


def ema_signal_list(alpha, prices):
    ema = [prices[0]]
    for p in prices[1:]:
        ema.append(alpha * p + (1 - alpha) * ema[-1])
    ema = np.stack(ema)
    pos = np.tanh(5 * (prices - ema) / prices)
    return -np.sum(pos[:-1] * np.diff(prices)) + 0.1 * np.sum(ema[1:] ** 2) / len(prices)


def ema_inplace_state(params, prices):
    fast, slow = params
    m_fast = prices[0].copy()
    m_slow = prices[0] * 1.0
    total = 0.0
    for p in prices[1:]:
        m_fast *= 1 - fast
        m_fast += fast * p
        m_slow -= slow * (m_slow - p)
        total += (m_fast - m_slow) ** 2
    return total


def test_ema_loops_with_in_place_updates():
    rng = np.random.default_rng(44)
    prices = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(12)))
    check_program(ema_signal, (np.array(0.3), prices), argnum=1)
    # w.r.t. alpha the buffer np.zeros_like(prices) is plain: a clear error, not a zero
    with pytest.raises(tg.EscapeError, match="buffer"):
        tg.grad(ema_signal)(np.array(0.3), prices)
    check_program(ema_signal_list, (np.array(0.3), prices))
    params = (np.array(0.3), np.array(0.1))
    check_program(ema_inplace_state, (params, prices))
    check_program(ema_inplace_state, (params, prices), argnum=1)
    # multi-asset EMA on rows, written into a slice of a traced buffer
    P = np.stack([prices, prices[::-1]], axis=1)

    def ema2(alpha):
        out = np.empty_like(P) * alpha
        out[0, :] = P[0]
        for t in range(1, len(P)):
            out[t, :] = alpha * P[t] + (1 - alpha) * out[t - 1, :]
        return np.sum(out[-3:] * np.array([1.0, -2.0]))

    check_program(ema2, (np.array([0.2, 0.4]),))


def test_running_max_jit_replays_without_retracing():
    """Regression: np.maximum.accumulate's VJP concretised its input, so jit guarded on the
    input's whole value: every new input failed the guard and was traced again (and the
    first plan was reported as disagreeing with eager execution)."""
    rng = np.random.default_rng(45)
    R = 0.02 * rng.standard_normal((20, 3))

    def worst_gap(w):
        g = R @ w
        return np.max(g - np.maximum.accumulate(g)) + np.sum(np.minimum.accumulate(g) ** 2)

    jg = tg.jit(tg.grad(worst_gap))
    w = np.array([0.5, 0.3, 0.2])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for x in (w, w + 0.1 * rng.standard_normal(3), w - 0.1 * rng.standard_normal(3)):
            assert_tree_close(jg(x), tg.grad(worst_gap)(x), 1e-12)
    assert jg.stats["traces"] == 1 and jg.stats["guard_failures"] == 0


def test_unchanged_scipy_softmax_logsumexp_calls():
    """Regression: SciPy's own Python-level softmax / log_softmax / logsumexp convert their
    input with asarray, so unchanged calls silently gave zero (softmax) or wrong
    (logsumexp) gradients unless tracegrad.rules.special.install() had been called."""
    import scipy.special
    from scipy.special import logsumexp, softmax        # bound the way users bind them
    rng = np.random.default_rng(46)
    Z = rng.standard_normal((3, 4))
    W = rng.standard_normal((3, 4))
    cases = [
        lambda Z: np.sum(softmax(Z, axis=1) * W),
        lambda Z: np.sum(scipy.special.log_softmax(Z, axis=0) * W),
        lambda Z: np.sum(logsumexp(Z, axis=1) ** 2),
        lambda Z: logsumexp(Z, b=np.abs(W)) + np.sum(logsumexp(Z, axis=0, keepdims=True)),
        lambda Z: np.sum(scipy.special.polygamma(1, Z ** 2 + 1)),
    ]
    for f in cases:
        check_program(f, (Z,))
    S = softmax(Z, axis=1)
    np.testing.assert_allclose(tg.grad(lambda Z: np.sum(logsumexp(Z, axis=1)))(Z), S,
                               rtol=1e-14)
