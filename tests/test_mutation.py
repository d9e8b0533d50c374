"""Mutation, views and escapes (issue #4): in-place NumPy code differentiates
correctly, or says clearly why it cannot."""
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tracegrad as tg


def fd_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


def assert_grad_fd(f, x, rtol=1e-6):
    g = tg.grad(f)(x)
    ref = fd_grad(f, x)
    np.testing.assert_allclose(g, ref, rtol=rtol, atol=rtol * max(1.0, np.abs(ref).max()))
    # forward mode agrees with reverse mode
    u = np.random.default_rng(1).standard_normal(x.shape)
    _, t = tg.jvp(f, (x,), (u,))
    np.testing.assert_allclose(t, np.sum(g * u), rtol=1e-10, atol=1e-12)
    return g


X = np.random.default_rng(0).uniform(0.5, 1.5, 8)


def burgers(u0, nt=20, dt=0.01, dx=0.1):
    """Upwind Burgers steps written in place, the way numerical code does."""
    u = u0.copy()
    for _ in range(nt):
        flux = 0.5 * u ** 2
        u[1:] = u[1:] - dt / dx * (flux[1:] - flux[:-1])
    return np.sum(u ** 2)


PATTERNS = {
    "slice assignment": lambda x: np.sum(_slice(x) ** 2),
    "augmented ops": lambda x: np.sum(_aug(x)),
    "preallocated zeros_like buffer": lambda x: np.sum(_prealloc(x) ** 2),
    "burgers upwind loop": burgers,
    "write through a view": lambda x: np.sum(_through_view(x) * np.arange(8.0)),
    "write through a transposed view": lambda x: np.sum(np.exp(_transposed(x))),
    "saved value overwritten": lambda x: _saved_overwritten(x),
    "repeated integer index (last write wins)": lambda x: np.sum(_repeated(x) ** 2),
    "boolean mask": lambda x: np.sum(_masked(x) * x),
    "ufunc out=": lambda x: np.sum(_out(x)),
    "np.add.at": lambda x: np.sum(_add_at(x) ** 3),
    "np.subtract.at": lambda x: np.sum(_sub_at(x) ** 3),
    "np.fill_diagonal": lambda x: np.sum(_fill_diag(x) ** 2),
    "np.copyto with where": lambda x: np.sum(_copyto(x) ** 2),
    "np.put / np.place": lambda x: np.sum(_put_place(x) ** 2),
    ".fill": lambda x: np.sum(_fill(x) * x),
    "stencil through a view": lambda x: np.sum(_stencil(x) ** 3),
    "two overlapping views": lambda x: np.sum(_two_views(x) ** 2),
    "matmul-assign": lambda x: np.sum(_imatmul(x)),
    "list of traced scalars into a slice": lambda x: np.sum(_list_into(x) ** 2),
}


def _slice(x):
    y = x.copy()
    y[1:] = y[1:] * y[:-1]
    return y


def _aug(x):
    y = x * 1.0
    y += np.sin(x)
    y *= x
    y -= 0.5
    y /= 1.0 + x
    y **= 2
    return y


def _prealloc(x):
    out = np.zeros_like(x)
    for i in range(x.size):
        out[i] = np.sin(x[i]) * x[i]
    return out


def _through_view(x):
    y = x.copy()
    v = y[2:5]
    v *= 3
    v[0] = x[0] ** 2
    return y


def _transposed(x):
    y = x.reshape(2, 4).copy()
    t = y.T
    t[0] = t[1] * t[2]
    return y


def _saved_overwritten(x):
    y = x.copy()
    z = np.exp(y)          # exp saves its output; y is saved by the product below
    w = y * z
    y[0] = 5.0
    z[1] = 0.0
    return np.sum(w * y) + np.sum(z)


def _repeated(x):
    y = x.copy()
    y[[0, 0, 2]] = x[[1, 2, 3]] * 2
    return y


def _masked(x):
    y = x.copy()
    y[y > 1.0] = 0.0
    y[x < 0.8] = x[x < 0.8] ** 2
    return y


def _out(x):
    y = x.copy()
    np.add(y, x, out=y)
    np.multiply(y, y, out=y)
    np.sin(y, out=y)
    return y


def _add_at(x):
    y = np.zeros_like(x)
    np.add.at(y, [0, 0, 1], x[:3] ** 2)
    return y


def _sub_at(x):
    y = x.copy()
    np.subtract.at(y, [1, 1, 4], x[2:5])
    return y


def _fill_diag(x):
    m = np.outer(x[:4], x[4:])
    np.fill_diagonal(m, x[:4] ** 2)
    return m


def _copyto(x):
    y = x.copy()
    np.copyto(y, np.cos(x), where=x > 1.0)
    return y


def _put_place(x):
    y = x.copy()
    np.put(y, [0, 3], x[5:7] ** 2)
    np.place(y, x > 1.2, x[:2])
    return y


def _fill(x):
    y = x[:3].copy()
    y.fill(x[5])
    return np.concatenate([y, x[3:]])


def _stencil(x):
    u = x.copy()
    inner = u[1:-1]
    for _ in range(3):
        inner += 0.1 * (u[:-2] - 2 * u[1:-1] + u[2:])
    return u


def _two_views(x):
    y = x.copy()
    a, b = y[:4], y[4:]
    a += b
    b *= a
    return y


def _imatmul(x):
    m = x.reshape(2, 4)[:, :2].copy()
    m @= m
    return m


def _list_into(x):
    y = x.copy()
    y[:2] = [x[3] * x[4], np.sin(x[5])]
    return y


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pattern_gradient_matches_finite_differences(name):
    assert_grad_fd(PATTERNS[name], X)


@pytest.mark.parametrize("name", ["burgers upwind loop", "saved value overwritten",
                                  "write through a view", "repeated integer index (last write "
                                  "wins)", "np.add.at", "stencil through a view"])
def test_pattern_second_order(name):
    f = PATTERNS[name]
    H = tg.hessian(f)(X)
    np.testing.assert_allclose(H, tg.jacrev(tg.jacrev(f))(X), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(H, H.T, rtol=1e-9, atol=1e-9)
    Hfd = np.array([(tg.grad(f)(X + 1e-6 * e) - tg.grad(f)(X - 1e-6 * e)) / 2e-6
                    for e in np.eye(X.size)])
    np.testing.assert_allclose(H, Hfd, rtol=1e-5, atol=1e-5)


def test_values_follow_numpy_semantics():
    x = X.copy()
    for name, f in PATTERNS.items():
        np.testing.assert_allclose(tg.value_and_grad(f)(x)[0], f(x), rtol=1e-14, err_msg=name)


def test_user_input_is_never_modified():
    x = X.copy()

    def f(x):
        x[0] = 100.0
        x += 1
        return np.sum(x ** 2)

    g = tg.grad(f)(x)
    np.testing.assert_array_equal(x, X)
    np.testing.assert_allclose(g, np.r_[0.0, 2 * (X[1:] + 1)])


def test_write_through_view_is_seen_by_base_and_other_views():
    def f(x):
        y = x.copy()
        a = y[:6]
        b = y[2:8]
        a[2:4] = 0.0            # y[2:4] and b[0:2]
        return y, b

    (y, b), f_vjp = tg.vjp(f, X)
    np.testing.assert_array_equal(y[2:4], 0.0)
    np.testing.assert_array_equal(b[:2], 0.0)
    (g,) = f_vjp((np.ones(8), np.ones(6)))
    np.testing.assert_array_equal(g, [1, 1, 0, 0, 2, 2, 2, 2])


def test_preallocated_plain_buffer_is_reported():
    def f(x):
        out = np.zeros(3)
        for i in range(3):
            out[i] = x[i] ** 2
        return np.sum(out)

    with pytest.raises(tg.EscapeError, match="test_mutation.py:.*zeros_like"):
        tg.grad(f)(X)
    with tg.escape_policy(escape="warn"), pytest.warns(tg.EscapeWarning):
        tg.grad(f)(X)


def test_out_into_plain_array_is_reported():
    def f(x):
        buf = np.empty(8)
        np.multiply(x, 2.0, out=buf)
        return np.sum(buf)

    with pytest.raises(tg.EscapeError, match="out="):
        tg.grad(f)(X)


def test_np_array_of_traced_scalars_warns():
    def f(x):
        return np.sum(np.array([x[0], x[1]]) ** 2) + x[2]

    with pytest.warns(tg.EscapeWarning, match="np.stack"):
        g = tg.grad(f)(X)
    assert g[2] == 1.0
    with tg.escape_policy(convert="raise"):
        with pytest.raises(tg.EscapeError):
            tg.grad(f)(X)
    # the supported spelling
    g = tg.grad(lambda x: np.sum(np.stack([x[0], x[1]]) ** 2))(X)
    np.testing.assert_allclose(g[:2], 2 * X[:2])


def test_float_for_control_flow_is_not_an_error():
    def f(x):
        s = np.sum(x)
        if s > 1:                 # __bool__: the executed path, no warning
            return s * 2
        return s

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.all(tg.grad(f)(X) == 2.0)


def test_where_sqrt_at_zero_is_zero_not_nan():
    f = lambda x: np.sum(np.where(x > 0, np.sqrt(x), 0.0))  # noqa: E731
    x = np.array([0.0, 4.0])
    np.testing.assert_array_equal(tg.grad(f)(x), [0.0, 0.25])
    np.testing.assert_array_equal(tg.jvp(f, (x,), (np.ones(2),))[1], 0.25)
    np.testing.assert_array_equal(tg.hessian(f)(x), [[0, 0], [0, -1 / 32]])


def test_conventions_at_kinks():
    assert tg.grad(lambda x: np.abs(x))(0.0) == 0.0
    np.testing.assert_array_equal(tg.grad(lambda x: np.prod(x))(np.array([0.0, 2.0, 3.0])),
                                  [6.0, 0.0, 0.0])
    np.testing.assert_array_equal(tg.grad(lambda x: np.prod(x))(np.array([0.0, 0.0, 3.0])),
                                  [0.0, 0.0, 0.0])


@pytest.mark.filterwarnings("ignore:invalid value")
def test_debug_nans_names_primitive_and_line():
    with tg.debug_nans():
        with pytest.raises(tg.NonFiniteError, match=r"test_mutation.py:\d+: sqrt .* backward"):
            tg.grad(lambda x: np.sum(np.sqrt(x)))(np.array([0.0, 1.0]))
        with pytest.raises(tg.NonFiniteError, match=r"log .* forward"):
            tg.grad(lambda x: np.sum(np.log(x - 1.0)))(np.array([0.5, 3.0]))


# --- random in-place programs versus their out-of-place equivalent -----------------
# A program is a list of (view, op) pairs on an 8- or 2x4-element base built
# from x. The reference runs the same program functionally on the flat base:
# a view is an index array into it and a write is a one-hot matrix product.
VIEWS = [
    ("all", lambda y: y[...]), ("head", lambda y: y[:3]), ("tail", lambda y: y[-3:]),
    ("stride", lambda y: y[::2]), ("rev", lambda y: y[::-1]), ("mid", lambda y: y[2:6]),
    ("flat2d", lambda y: y.reshape(2, 4)[1]), ("col", lambda y: y.reshape(2, 4)[:, 1]),
    ("T", lambda y: y.reshape(2, 4).T[1:3]),
]
OPS = ["iadd", "imul", "set_sin", "set_item", "isub_x"]


def _apply(view, op, x):
    if op == "iadd":
        view += 0.5 * view
    elif op == "imul":
        view *= 1.3
    elif op == "set_sin":
        view[...] = np.sin(view) + 0.1
    elif op == "set_item":
        view[(0,) * view.ndim] = x[1] * x[2]
    elif op == "isub_x":
        view -= x[:view.shape[-1]] if view.ndim == 1 else x[:view.shape[-1]] * 0.5


def run_inplace(x, program):
    y = x * 1.0
    for vi, op in program:
        _apply(VIEWS[vi][1](y), op, x)
    return np.sum(y * np.linspace(1, 2, 8))


def run_functional(x, program):
    y = x * 1.0
    probe = np.arange(8)
    for vi, op in program:
        idx = np.asarray(VIEWS[vi][1](probe))
        flat = idx.ravel()
        onehot = (flat[:, None] == np.arange(8)[None, :]).astype(float)
        cur = y[flat].reshape(idx.shape)
        if op == "iadd":
            new = cur + 0.5 * cur
        elif op == "imul":
            new = cur * 1.3
        elif op == "set_sin":
            new = np.sin(cur) + 0.1
        elif op == "set_item":
            new = np.concatenate([np.reshape(x[1] * x[2], (1,)), cur.ravel()[1:]]).reshape(
                cur.shape)
        else:
            sub = x[:idx.shape[-1]] if idx.ndim == 1 else x[:idx.shape[-1]] * 0.5
            new = cur - sub
        delta = (new - cur).ravel()
        y = y + onehot.T @ delta
    return np.sum(y * np.linspace(1, 2, 8))


@given(st.lists(st.tuples(st.integers(0, len(VIEWS) - 1), st.sampled_from(OPS)), min_size=1,
                max_size=6))
def test_random_inplace_programs_match_out_of_place(program):
    x = X.copy()
    v1, g1 = tg.value_and_grad(run_inplace)(x, program)
    v2, g2 = tg.value_and_grad(run_functional)(x, program)
    np.testing.assert_allclose(v1, v2, rtol=1e-12)
    np.testing.assert_allclose(g1, g2, rtol=1e-10, atol=1e-12)
    _, t1 = tg.jvp(lambda x: run_inplace(x, program), (x,), (np.ones(8),))
    np.testing.assert_allclose(t1, np.sum(g2), rtol=1e-10, atol=1e-12)


# --- outputs disconnected from the inputs -------------------------------------------------
def _homogeneous(q):
    T = np.eye(4)
    T[:3, :3] = np.diag(np.stack([np.cos(q[0]), np.sin(q[0]), q[0]]))  # lost: plain buffer
    return np.sum(T)


def test_disconnected_output_warns_instead_of_silent_zero():
    with pytest.warns(tg.EscapeWarning, match="does not depend on the differentiated inputs"):
        g = tg.grad(_homogeneous)(np.array([0.3]))
    assert g.tolist() == [0.0]
    with pytest.warns(tg.EscapeWarning):
        tg.vjp(lambda x: np.asarray(np.sin(x)).copy(), np.ones(2))
    with tg.escape_policy(disconnected="raise"):
        with pytest.raises(tg.EscapeError, match="disconnected|does not depend"):
            tg.grad(_homogeneous)(np.array([0.3]))


def test_disconnected_fixed_by_building_from_the_traced_array():
    def f(q):
        R = np.diag(np.stack([np.cos(q[0]), np.sin(q[0]), q[0]]))
        T = np.zeros_like(R, shape=(4, 4))
        T[3, 3] = 1.0
        T[:3, :3] = R
        return np.sum(T)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = tg.grad(f)(np.array([0.3]))
    np.testing.assert_allclose(g, [-np.sin(0.3) + np.cos(0.3) + 1.0])


def test_no_warning_when_nothing_was_recorded_or_policy_ignores():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tg.grad(lambda x: 3.0)(np.array([1.0])).tolist() == [0.0]
        with tg.escape_policy(disconnected="ignore"):
            tg.grad(_homogeneous)(np.array([0.3]))
