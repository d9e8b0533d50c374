"""Composition of transforms and the imperative-NumPy machinery, on programs the other
zoos do not cover.

1. Every nesting of transforms (grad of grad, jacfwd of jacrev and the reverse, hessian, hvp,
   jvp of grad, vjp of jvp, linearize) on an MLP loss, a 20-step RK4 pendulum and a softmax
   attention, eager against finite differences of the gradient and under ``tg.jit`` (jit
   outermost) against eager on several inputs.
2. In-place writes through views of views, scatters with repeated indices, ``out=``,
   ``np.copyto(where=)``, ``np.put``/``np.place``/``np.fill_diagonal``, boolean-mask assignment,
   buffers filled in loops, branches on values, writes to saved values: grad, jvp, hvp,
   hessian, jit(grad), jit(jvp) against finite differences and each other.
3. ``tg.step``/``tg.loop``/``tg.checkpoint`` (with and without ``jit=True``, pytree states)
   against the plain taped program, first and second order.
4. ``custom_vjp``/``custom_jvp`` inside jit and hessian.
5. Error paths: the right exception, no traced value in results, inputs unchanged.
"""
import numpy as np
import pytest

import tracegrad as tg
from tracegrad.core.pytree import tree_flatten
from tracegrad.core.tape import level_stack


def _leaves(t):
    return tree_flatten(t)[0]


def assert_plain_close(got, want, rtol, atol_rel=None, what=""):
    gl, wl = _leaves(got), _leaves(want)
    assert len(gl) == len(wl), what
    scale = max([float(np.max(np.abs(w))) if np.size(w) else 0.0 for w in wl] + [1e-300])
    atol = (rtol if atol_rel is None else atol_rel) * scale
    for g, w in zip(gl, wl):
        assert type(g) is np.ndarray, (what, type(g))
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=what)


def fd_grad(f, x, h=1e-5):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (-f(x + 2 * e) + 8 * f(x + e) - 8 * f(x - e) + f(x - 2 * e)) / (12 * h)
    return g


def fd_hessian(f, x, h=1e-4):
    """Fourth-order central differences of the (reverse-mode) gradient."""
    g = tg.grad(f)
    H = np.zeros((x.size, x.size))
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = h
        H[:, i] = (-g(x + 2 * e) + 8 * g(x + e) - 8 * g(x - e) + g(x - 2 * e)) / (12 * h)
    return H


# --------------------------------------------------------------------------------------
# 1. nested transforms
# --------------------------------------------------------------------------------------
_rng = np.random.default_rng(0)
_X = _rng.standard_normal((5, 3))
_Y = _rng.standard_normal(5)
_W2 = _rng.standard_normal(4) * 0.5
_K = _rng.standard_normal((4, 3))


def mlp(w):
    h = np.tanh(_X @ w.reshape(3, 4))
    return np.mean((h @ _W2 - _Y) ** 2) + 0.01 * np.sum(w ** 2)


def pendulum(s):
    def f(s):
        return np.stack([s[1], -9.81 * np.sin(s[0]) - 0.1 * s[1]])
    dt = 0.05
    for _ in range(20):
        k1 = f(s)
        k2 = f(s + dt / 2 * k1)
        k3 = f(s + dt / 2 * k2)
        k4 = f(s + dt * k3)
        s = s + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return s[0] ** 2 + 0.5 * s[1] ** 2


def attention(q):
    S = q.reshape(4, 3) @ _K.T / np.sqrt(3.0)
    S = S - np.max(S, axis=1, keepdims=True)
    A = np.exp(S)
    A = A / np.sum(A, axis=1, keepdims=True)
    return np.sum((A @ _K) ** 2) + np.sum(np.log(np.sum(np.exp(S), axis=1)))


PROGRAMS = {
    "mlp": (mlp, _rng.standard_normal(12) * 0.5),
    "pendulum": (pendulum, np.array([0.8, -0.3])),
    "attention": (attention, _rng.standard_normal(12) * 0.5),
}


def _nestings(f, v):
    n = v.size
    return {
        "hessian": (True, lambda x: tg.hessian(f)(x)),
        "jacfwd(jacrev)": (True, lambda x: tg.jacfwd(tg.jacrev(f))(x)),
        "jacrev(jacfwd)": (True, lambda x: tg.jacrev(tg.jacfwd(f))(x)),
        "jacobian(grad)": (True, lambda x: tg.jacobian(tg.grad(f))(x)),
        "grad(grad)": (True, lambda x: np.stack(
            [tg.grad(lambda y, i=i: tg.grad(f)(y)[i])(x) for i in range(n)])),
        "hvp": (False, lambda x: tg.hvp(f, x, v)),
        "jvp(grad)": (False, lambda x: tg.jvp(tg.grad(f), (x,), (v,))[1]),
        "vjp(jvp)": (False, lambda x: tg.vjp(lambda y: tg.jvp(f, (y,), (v,))[1], x)[1](1.0)[0]),
        "jvp(vjp)": (False, lambda x: tg.jvp(lambda y: tg.vjp(f, y)[1](1.0)[0], (x,), (v,))[1]),
        "linearize(grad)": (False, lambda x: tg.linearize(tg.grad(f), x)[1](v)),
        "grad(linearize)": (False, lambda x: tg.grad(lambda y: tg.linearize(f, y)[1](v))(x)),
    }


@pytest.mark.parametrize("prog", list(PROGRAMS))
def test_nested_transforms_eager_and_jit(prog):
    f, x0 = PROGRAMS[prog]
    v = np.random.default_rng(1).standard_normal(x0.size)
    inputs = [x0, x0 + 0.07 * np.arange(x0.size) / x0.size]
    hess = [fd_hessian(f, x) for x in inputs]
    for name, (full, T) in _nestings(f, v).items():
        J = tg.jit(T)
        for x, H in zip(inputs, hess):
            x_copy = x.copy()
            want = H if full else H @ v
            eager = T(x)
            assert_plain_close(eager, want, 1e-6, 1e-7, f"{prog} {name} vs fd")
            got = J(x)
            assert_plain_close(got, eager, 1e-10, 1e-12, f"{prog} jit {name}")
            assert np.array_equal(x, x_copy)
        assert J.stats["replays"] >= 1, (prog, name, J.stats)


# --------------------------------------------------------------------------------------
# 2. imperative NumPy
# --------------------------------------------------------------------------------------
def views_of_views(x):
    a = x * 1.0
    a[1:][::2] += np.sin(x[:4])
    b = a.reshape(3, 3)
    b.T[0] = b[1] * 2.0
    b.reshape(9)[4] *= x[0]
    b[::-1][0, ::2] -= x[2] ** 2
    return np.sum(a ** 2 * np.arange(9)) + np.sum(np.cos(b))


def scatter_repeated(x):
    a = np.zeros_like(x)
    np.add.at(a, np.array([0, 2, 2, 5, 0, 8, 8, 8]), x[:8] ** 2)
    np.subtract.at(a, np.array([1, 1, 3]), x[3:6] * x[0])
    np.add.at(a[::2], np.array([1, 1]), x[:2] * x[8])       # through a strided view
    return np.sum(a * x) + np.sum(a ** 3)


def out_and_copyto(x):
    a = np.empty_like(x)
    np.multiply(x, x, out=a)
    np.add(a, np.sin(x), out=a)
    np.exp(a[:3], out=a[3:6])
    b = x.copy()
    np.copyto(b, a * 2, where=x > 0.1)
    np.copyto(b[::3], x[:3] ** 3)
    return np.sum(a * b)


def loop_with_branches(x):
    u = x.copy()
    for k in range(6):
        u[1:-1] += 0.3 * (u[2:] - 2 * u[1:-1] + u[:-2])
        u[k % 3::3] *= 1.2
        if np.max(u) > 1:
            u /= np.max(u)
        else:
            u[0] = u[-1] ** 2
    return np.sum(u ** 3)


def buffers_in_loop(x):
    out = np.empty_like(x)
    acc = np.zeros_like(x[:3])
    for i in range(x.shape[0]):
        out[i] = np.tanh(x[i] + (out[i - 1] if i else 0.0))
        acc[i % 3] += out[i] * x[i]
    return np.sum(out) * np.sum(acc ** 2)


def put_place_fill(x):
    a = x.copy()
    np.put(a, [0, 4, 4, 7], x[1:5] * 2)
    b = x.reshape(3, 3).copy()
    np.fill_diagonal(b, x[6:9] ** 2)
    c = x.copy()
    np.place(c, x > 0.2, np.sin(x[:3]))
    return (np.sum(a * np.arange(9)) + np.sum(b ** 2 * np.arange(9).reshape(3, 3))
            + np.sum(c ** 3))


def mask_assign(x):
    a = x.copy()
    m = a > 0
    a[m] = np.exp(x[m]) * x[0]
    a[~m] = a[~m] ** 2
    a[[1, 1, 3]] = x[[6, 7, 8]] * 3          # repeated: the last write wins
    return np.sum(a ** 2 * np.linspace(1, 2, 9))


def overwrite_saved(x):
    a = x.copy()
    y = np.sin(a) * a            # the rules of sin and * save a
    a[2:5] = 0.7 * x[:3]         # overwrite part of it
    a *= a                       # and all of it, in place
    z = np.exp(a[0:4]) @ a[4:8]  # matmul saves two views of a ...
    v = a[::2]
    w = v * v
    v[:] = 0.5                   # ... and a view of a is overwritten again
    a.reshape(3, 3)[1] += y[:3]
    return np.sum(y * w[:1]) + z + np.sum(a * x) + np.sum(w)


def writes_into_argument(x):
    x[::2] *= 2.0                # the caller's array must stay as it was
    x += np.roll(x, 1) ** 2
    x.T[3:5] = x[:2] * x[5]
    return np.sum(np.sin(x) * x)


def grid_scatter(x):
    g = np.zeros_like(x, shape=(3, 4))
    idx = (np.array([0, 2, 2, 0, 1]), np.array([1, 3, 3, 1, 0]))
    np.add.at(g, idx, x[:5] * x[5:])
    g[:, 2] += g.sum(axis=1)
    return np.sum(g ** 2) + np.sum(np.cumsum(g.T, axis=0) * x[0])


IMPERATIVE = [views_of_views, scatter_repeated, out_and_copyto, loop_with_branches,
              buffers_in_loop, put_place_fill, mask_assign, overwrite_saved,
              writes_into_argument, grid_scatter]


@pytest.mark.parametrize("f", IMPERATIVE, ids=lambda f: f.__name__)
def test_imperative_all_modes(f):
    rng = np.random.default_rng(3)
    n = 10 if f is grid_scatter else 9
    for _ in range(2):
        x = rng.uniform(-0.8, 0.9, n)
        x_copy = x.copy()
        v = rng.standard_normal(n)
        want = fd_grad(lambda y: f(y.copy()), x)
        g = tg.grad(f)(x)
        assert_plain_close(g, want, 1e-7, 1e-8, "grad vs fd")
        val, jt = tg.jvp(f, (x,), (v,))
        np.testing.assert_allclose(val, f(x.copy()), rtol=1e-13)
        np.testing.assert_allclose(jt, want @ v, rtol=1e-7, atol=1e-8 * np.abs(want).sum())
        hv = tg.hvp(f, x, v)
        h = 1e-5
        hv_fd = (tg.grad(f)(x + h * v) - tg.grad(f)(x - h * v)) / (2 * h)
        assert_plain_close(hv, hv_fd, 1e-5, 1e-6, "hvp vs fd")
        H = tg.hessian(f)(x)
        assert_plain_close(H @ v, hv, 1e-9, 1e-10, "hessian @ v vs hvp")
        assert_plain_close(tg.jacrev(tg.jacfwd(f))(x), H, 1e-9, 1e-10, "jacrev(jacfwd)")
        jg = tg.jit(tg.grad(f))
        jj = tg.jit(lambda y, w: tg.jvp(f, (y,), (w,)))
        for xi in (x, x + 1e-3, x - 2e-3):
            assert_plain_close(jg(xi), tg.grad(f)(xi), 1e-11, 1e-12, "jit(grad)")
            assert_plain_close(jj(xi, v), tg.jvp(f, (xi,), (v,)), 1e-11, 1e-12, "jit(jvp)")
        assert np.array_equal(x, x_copy), "an input was modified"
        assert jg.stats["replays"] >= 1


def test_saved_value_is_snapshotted_not_corrupted():
    # the rule of x * a saves a; a is then overwritten through two different views
    def f(x):
        a = np.exp(x)
        y = x * a
        a.reshape(2, 2).T[0] = 0.0
        a[1:][::2] *= 5.0
        return np.sum(y) + np.sum(a)
    x = np.array([0.1, -0.4, 0.7, 0.3])
    e = np.exp(x)
    want = e + x * e                          # d/dx sum(x * exp(x))
    # .T[0] zeroes a[0] and a[2]; a[1:][::2] scales a[1] and a[3] by 5
    want = want + np.array([0.0, 5.0, 0.0, 5.0]) * e
    assert_plain_close(tg.grad(f)(x), want, 1e-13)
    assert_plain_close(tg.jvp(f, (x,), (np.ones(4),))[1], np.sum(want), 1e-13)
    assert_plain_close(tg.jit(tg.grad(f))(x + 0.1), tg.grad(f)(x + 0.1), 1e-13)


def test_maximum_at_is_reported_not_dropped():
    def f(x):
        b = x.copy()
        np.maximum.at(b, np.array([0, 0, 2]), x[1:4] * 3)
        return np.sum(b)
    with pytest.raises(tg.UnsupportedOperation, match="maximum.at"):
        tg.grad(f)(np.array([0.1, 0.5, -0.2, 0.4]))


# --------------------------------------------------------------------------------------
# 3. checkpointing
# --------------------------------------------------------------------------------------
def _wave(state, k, c):
    u, v = state["u"], state["v"]
    lap = np.roll(u, 1) - 2 * u + np.roll(u, -1)
    un = u + 0.1 * v
    vn = v + 0.1 * (k * lap - c * np.sin(u))
    if np.max(np.abs(vn)) > 2.0:
        vn = vn * 0.5
    return {"u": un, "v": vn}


def _wave_loss(step):
    def loss(u0, k, c):
        s = {"u": u0, "v": np.zeros_like(u0)}       # an untracked buffer in the state
        tot = 0.0
        for _ in range(12):
            s = step(s, k, c)
            tot = tot + np.sum(s["u"] ** 2) * 0.1
        return tot + np.sum(s["v"] ** 2)
    return loss


_U0 = np.sin(np.linspace(0, 3, 8))
_C = np.linspace(0.5, 1.0, 8)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("snapshots", [2, 5])
def test_step_pytree_state_first_and_second_order(jit, snapshots):
    plain = _wave_loss(_wave)
    st = tg.step(_wave, snapshots=snapshots, steps=12, jit=jit)
    ck = _wave_loss(st)
    ref = tg.grad(plain, argnums=(0, 1, 2))(_U0, 1.3, _C)
    got = tg.grad(ck, argnums=(0, 1, 2))(_U0, 1.3, _C)
    assert_plain_close(got, ref, 1e-12, 1e-13)
    assert st.stats.steps == 12 and st.stats.segments == 1
    v = np.cos(np.arange(8.0))
    assert_plain_close(tg.hvp(lambda u: ck(u, 1.3, _C), _U0, v),
                       tg.hvp(lambda u: plain(u, 1.3, _C), _U0, v), 1e-11, 1e-12)
    assert_plain_close(tg.hessian(ck, argnums=1)(_U0, 1.3, _C),
                       tg.hessian(plain, argnums=1)(_U0, 1.3, _C), 1e-11, 1e-12)


def test_step_higher_order_with_temporary_untracked_state_leaf():
    # Regression: np.zeros_like(u) is a TracedArray no level tracks; the chain kept a
    # weak reference to it as if it were a traced root, and every second-order
    # derivative raised "needs the chain's initial state, which no longer exists" once
    # the temporary died.
    st = tg.step(lambda s: (np.sin(s[0]) * 0.9 + s[1], s[1] * 0.5 + s[0]), snapshots=2, steps=4)

    def run(step, u):
        s = (u, np.zeros_like(u))
        for _ in range(4):
            s = step(s)
        return np.sum(s[0] ** 2 * s[1])

    u0 = np.array([0.3, -0.2, 0.5])
    plain = lambda s: (np.sin(s[0]) * 0.9 + s[1], s[1] * 0.5 + s[0])     # noqa: E731
    want = tg.hessian(lambda u: run(plain, u))(u0)
    assert_plain_close(tg.hessian(lambda u: run(st, u))(u0), want, 1e-12)
    assert_plain_close(tg.jacrev(tg.grad(lambda u: run(st, u)))(u0), want, 1e-12)


@pytest.mark.parametrize("jit", [False, True])
def test_loop_nested_tuple_state_under_jit_and_hessian(jit):
    def body(state, k, c):
        u, (v, t) = state
        s = _wave({"u": u, "v": v}, k, c)
        return s["u"], (s["v"], t + 0.1)

    sb = tg.step(body, snapshots=3, jit=jit)

    def ck(u0, k, c):
        s = tg.loop(sb, (u0, (np.zeros_like(u0), 0.0)), 12, k, c)
        return np.sum(s[0] ** 2) + np.sum(s[1][0] ** 2) * s[1][1]

    def plain(u0, k, c):
        s = (u0, (np.zeros_like(u0), 0.0))
        for _ in range(12):
            s = body(s, k, c)
        return np.sum(s[0] ** 2) + np.sum(s[1][0] ** 2) * s[1][1]

    assert_plain_close(tg.grad(ck, argnums=(0, 1, 2))(_U0, 1.3, _C),
                       tg.grad(plain, argnums=(0, 1, 2))(_U0, 1.3, _C), 1e-12, 1e-13)
    assert_plain_close(tg.hessian(ck)(_U0, 1.3, _C), tg.hessian(plain)(_U0, 1.3, _C),
                       1e-11, 1e-12)
    jf = tg.jit(tg.value_and_grad(ck, argnums=(0, 2)))
    for u in (_U0, _U0 * 0.9, _U0 * 1.1):
        assert_plain_close(jf(u, 1.3, _C), tg.value_and_grad(plain, argnums=(0, 2))(u, 1.3, _C),
                           1e-11, 1e-12)


def test_checkpoint_nested_calls_all_modes():
    @tg.checkpoint
    def blk(x, w):
        for _ in range(5):
            x = np.tanh(w @ x) + 0.1 * x
        return x

    def ck(x, w):
        return np.sum(blk(blk(x, w), w * 0.9) ** 2)

    def plain(x, w):
        for ww in (w, w * 0.9):
            for _ in range(5):
                x = np.tanh(ww @ x) + 0.1 * x
        return np.sum(x ** 2)

    W = np.array([[0.5, -0.3, 0.2], [0.1, 0.4, -0.2], [0.3, 0.2, 0.1]])
    t = np.array([1.0, -2.0, 0.5])
    pairs = [
        (tg.grad(ck, argnums=(0, 1)), tg.grad(plain, argnums=(0, 1))),
        (tg.hessian(ck), tg.hessian(plain)),
        (tg.jit(tg.grad(ck, argnums=(0, 1))), tg.grad(plain, argnums=(0, 1))),
        (tg.jit(tg.hessian(ck)), tg.hessian(plain)),
        (tg.jit(lambda x, w: tg.hvp(lambda y: ck(y, w), x, t)),
         lambda x, w: tg.hvp(lambda y: plain(y, w), x, t)),
        (lambda x, w: tg.jvp(lambda y: ck(y, w), (x,), (t,)),
         lambda x, w: tg.jvp(lambda y: plain(y, w), (x,), (t,))),
    ]
    for a, b in pairs:
        for x in (np.array([0.3, -0.5, 0.8]), np.array([0.4, -0.4, 0.9]), np.array([0.1, 0.2, 0.3])):
            assert_plain_close(a(x, W), b(x, W), 1e-11, 1e-13)


# --------------------------------------------------------------------------------------
# 4. custom rules inside jit and hessian
# --------------------------------------------------------------------------------------
@tg.custom_vjp
def _softplus(x, w):
    return np.log1p(np.exp(x * w))


def _sp_fwd(x, w):
    s = 1 / (1 + np.exp(-x * w))
    return _softplus(x, w), (x, w, s)


def _sp_bwd(res, g):
    x, w, s = res
    return g * s * w, np.sum(g * s * x)


_softplus.defvjp(_sp_fwd, _sp_bwd)


@tg.custom_jvp
def _lse(x):
    m = np.max(x)
    return m + np.log(np.sum(np.exp(x - m)))


@_lse.defjvp
def _lse_jvp(p, t):
    (x,), (tx,) = p, t
    y = _lse(x)
    return y, np.sum(np.exp(x - y) * tx)


def _custom_prog(x, w):
    return _lse(_softplus(x, w) * x) + np.sum(_softplus(x ** 2, w) ** 2)


def _reference_prog(x, w):
    sp = lambda z: np.log1p(np.exp(z * w))      # noqa: E731
    return np.log(np.sum(np.exp(sp(x) * x))) + np.sum(sp(x ** 2) ** 2)


def test_custom_rules_inside_jit_and_hessian():
    w0 = 0.8
    t = np.array([1.0, -0.5, 0.25, 2.0])
    cases = [
        (lambda f: lambda x: tg.grad(f, argnums=(0, 1))(x, w0)),
        (lambda f: lambda x: tg.jvp(lambda y: f(y, w0), (x,), (t,))),
        (lambda f: lambda x: tg.hessian(f)(x, w0)),
        (lambda f: lambda x: tg.jacrev(tg.jacfwd(f))(x, w0)),
        (lambda f: lambda x: tg.hessian(f, argnums=1)(x, w0)),
        (lambda f: lambda x: tg.grad(lambda w: tg.grad(f, 1)(x, w))(w0)),
        (lambda f: lambda x: tg.hvp(lambda y: f(y, w0), x, t)),
    ]
    x0 = np.array([0.3, -0.7, 1.1, 0.2])
    for make in cases:
        got, want = make(_custom_prog), make(_reference_prog)
        J = tg.jit(got)
        for x in (x0, x0 * 1.3, x0 - 0.2):
            assert_plain_close(got(x), want(x), 1e-10, 1e-12)
            assert_plain_close(J(x), want(x), 1e-10, 1e-12)
        assert J.stats["replays"] == 2


# --------------------------------------------------------------------------------------
# 5. error paths
# --------------------------------------------------------------------------------------
_XE = np.array([0.5, -1.0, 2.0])


@pytest.mark.parametrize("call, exc", [
    (lambda: tg.grad(lambda y: y * 2)(_XE), tg.NonScalarOutput),
    (lambda: tg.grad(lambda y: (np.sum(y), y))(_XE), tg.NonScalarOutput),
    (lambda: tg.grad(lambda y: np.sum(y ** 2))(np.array([1, 2, 3])), tg.NonDifferentiableInput),
    (lambda: tg.hessian(lambda y: np.sum(y ** 3))(np.array([1, 2])), tg.NonDifferentiableInput),
    (lambda: tg.jvp(lambda y: y ** 2, (np.array([1, 2]),), (np.ones(2),)),
     tg.NonDifferentiableInput),
    (lambda: tg.grad(lambda a, b: np.sum(a * b), argnums=2)(_XE, _XE), tg.BadArgnums),
    (lambda: tg.grad(lambda a, b: np.sum(a * b), argnums=(0, 0))(_XE, _XE), tg.BadArgnums),
    (lambda: tg.jacfwd(lambda a: a, argnums=-2)(_XE), tg.BadArgnums),
    (lambda: tg.grad(np.sum, has_aux=True)(_XE), tg.BadOutput),
    (lambda: tg.vjp(lambda a: a * 2, _XE, has_aux=True), tg.BadOutput),
    (lambda: tg.jvp(lambda a: a * 2, (_XE,), (_XE,), has_aux=True), tg.BadOutput),
    (lambda: tg.hessian(lambda a: np.sum(a ** 3), has_aux=True)(_XE), tg.BadOutput),
    (lambda: tg.jit(tg.grad(lambda y: y * 2))(_XE), tg.NonScalarOutput),
])
def test_error_paths(call, exc):
    before = _XE.copy()
    with pytest.raises(exc):
        call()
    assert np.array_equal(_XE, before)
    assert level_stack() == []


def test_user_error_inside_jit_surfaces_and_nothing_leaks():
    class UserError(Exception):
        pass

    def f(a):
        a *= 2.0                              # writes into its argument
        if np.sum(a) > 10:
            raise UserError("too large")
        return np.sum(np.sin(a) * a)

    J = tg.jit(tg.value_and_grad(f))
    x = np.array([0.5, -1.0, 2.0])
    big = x * 10
    x_copy, big_copy = x.copy(), big.copy()
    with pytest.raises(UserError, match="too large"):
        J(big)                                # raises while tracing
    v, g = J(x)                               # traces the good path
    with pytest.raises(UserError, match="too large"):
        J(big)                                # a guard fails on replay: re-traced, raises
    v2, g2 = J(x)
    assert type(v) is type(g) is type(v2) is type(g2) is np.ndarray
    assert_plain_close((v2, g2), tg.value_and_grad(f)(x), 1e-13)
    assert np.array_equal(x, x_copy) and np.array_equal(big, big_copy)
    assert type(x) is type(big) is np.ndarray
    assert level_stack() == []
    with pytest.raises(UserError):
        tg.hessian(f)(big)
    assert level_stack() == []
    assert_plain_close(tg.grad(lambda y: np.sum(y ** 2))(x), 2 * x, 1e-15)


def test_aux_and_results_are_plain_arrays():
    x = _XE.copy()
    g, aux = tg.grad(lambda a: (np.sum(a ** 2), {"a": a * 3, "s": np.sum(a)}), has_aux=True)(x)
    H, aux2 = tg.hessian(lambda a: (np.sum(a ** 3), a * 2), has_aux=True)(x)
    J, aux3 = tg.jit(tg.jacfwd(lambda a: (a ** 2, [a * 2]), has_aux=True))(x)
    for r in (g, aux["a"], aux["s"], H, aux2, J, aux3[0]):
        assert type(r) is np.ndarray
    np.testing.assert_allclose(aux2, 2 * x)
    np.testing.assert_allclose(aux3[0], 2 * x)
    np.testing.assert_allclose(J, np.diag(2 * x))


def test_stop_gradient_of_a_view_then_written_in_place():
    # Regression: stop_gradient returned its input's buffer; the multiply rule saved that
    # constant, the write to a[::2] changed it, and reverse mode silently used the new
    # value (jvp was right, grad was off by a factor of x on the even entries).
    def f(x):
        a = x.copy()
        a[::2] = tg.stop_gradient(a[::2]) * x[::2]
        return np.sum(a * a)

    x = np.array([0.3, -0.5, 0.8, 0.1, 0.6])
    want = np.where(np.arange(5) % 2 == 0, 2 * x ** 3, 2 * x)
    assert_plain_close(tg.grad(f)(x), want, 1e-14)
    assert_plain_close(tg.jvp(f, (x,), (np.ones(5),))[1], np.sum(want), 1e-14)
    H = tg.hessian(f)(x)
    assert_plain_close(tg.jacrev(tg.grad(f))(x), H, 1e-13)
    assert_plain_close(H, np.diag(np.where(np.arange(5) % 2 == 0, 2 * x ** 2, 2.0)), 1e-13)
    J = tg.jit(tg.grad(f))
    for xi in (x, x * 1.1):
        assert_plain_close(J(xi), tg.grad(f)(xi), 1e-13)


def test_reverse_over_batched_forward_through_inplace_sort_of_views():
    """take_along's VJP passed its batched input's full shape to the scatter,
    so jacrev(jacfwd(f)) through a sort (a batched tangent) doubled the batch
    axes and crashed."""
    def f(x):
        a = x * x[0]
        a[2:7].sort()
        a.reshape(3, 3).sort(axis=0)
        return np.sum(a * np.arange(9.0))
    x = np.array([.3, -.5, .8, .1, .6, .2, -.9, .4, .7])
    H = tg.jacrev(tg.jacfwd(f))(x)
    np.testing.assert_allclose(H, tg.hessian(f)(x), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(H, tg.jacfwd(tg.jacrev(f))(x), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(tg.jacrev(tg.jacfwd(np.sort))(x), 0.0)
