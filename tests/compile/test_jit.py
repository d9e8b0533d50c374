"""jit: results equal eager tracegrad (1e-12 relative), guards, fallbacks.

Every case is checked on a *replay*: the function is traced on one input and
then called on another, so a value frozen at trace time, a wrong branch or a
missing guard shows up as a difference from eager. Each case runs in the
lowering modes of ``MODES``: the plain NumPy plan, the default plan (small
values in the machine, :mod:`tracegrad.compile.vm`), and fused kernels for
everything (no machine).
"""
import warnings

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.compile import jit

RTOL = 1e-12
MODES = {"numpy": {"fuse": False, "vm": False}, "default": {}, "kernels": {"vm": False}}


def assert_same(a, b, rtol=RTOL):
    la, lb = _leaves(a), _leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        x = np.asarray(x)
        y = np.asarray(y)
        assert x.shape == y.shape, (x.shape, y.shape)
        assert x.dtype == y.dtype, (x.dtype, y.dtype)
        if x.dtype.kind in "fc":
            scale = np.max(np.abs(y)) if y.size else 0.0
            np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * scale * 1e-2 + 1e-300)
        else:
            np.testing.assert_array_equal(x, y)


def _leaves(t):
    from tracegrad.core.pytree import tree_flatten
    return tree_flatten(t)[0]


def rng(seed=0):
    return np.random.default_rng(seed)


# --- functions: (name, f, make_args(rng)) -----------------------------------------------
A = rng(1).standard_normal((4, 3))
IDX = np.array([0, 2, 2, 1, 0])


def _softmax_xent(w, x=A, y=np.array([0, 2, 1, 1])):
    z = x @ w
    z = z - np.max(z, axis=1, keepdims=True)
    lse = np.log(np.sum(np.exp(z), axis=1))
    return np.mean(lse - z[np.arange(len(y)), y])


def _mlp(p, x=A):
    h = np.tanh(x @ p["w1"] + p["b1"])
    return np.sum((h @ p["w2"]) ** 2)


def _loop(x):
    s = x
    for _ in range(5):
        s = np.sin(s) * 0.9 + 0.1 * s ** 2
    return np.sum(s)


def _mutate(x):
    y = np.zeros_like(x)
    y[1:] = x[:-1] * 2.0
    y[0] = x[-1]
    y += x ** 2
    return np.sum(y * np.cos(x))


def _add_at(x):
    y = np.zeros_like(x)
    np.add.at(y, IDX, x[:5] ** 2)
    return np.sum(y * x)


SCALAR_FUNS = [
    ("seed_sin", lambda x: np.sum(np.sin(x ** 2 + 1)), lambda r: (r.standard_normal(7),)),
    ("bench", lambda x: np.sum(np.sin(x) * np.exp(-x ** 2) + np.log1p(x ** 2) * np.tanh(x)),
     lambda r: (r.standard_normal(50),)),
    ("unary_mix", lambda x: np.sum(np.cos(x) + np.sqrt(np.abs(x) + 1) + np.arctan(x)
                                   + np.sinh(x) / np.cosh(x) + np.expm1(x) + np.log(x * x + 1)
                                   + np.exp2(x) + np.cbrt(x) + np.reciprocal(x * x + 2)),
     lambda r: (r.standard_normal((3, 4)),)),
    ("binary_bcast", lambda x, b: np.sum((x + b) ** 2 * b - x / (b * b + 1)),
     lambda r: (r.standard_normal((3, 4)), r.standard_normal(4))),
    ("bcast_scalar_input", lambda x, b: np.sum(x * b + np.maximum(x, b)),
     lambda r: (r.standard_normal((2, 3)), np.array(r.standard_normal()))),
    ("power_hypot", lambda x, y: np.sum(np.power(np.abs(x) + 1, y) + np.hypot(x, y)
                                        + np.arctan2(x, y)),
     lambda r: (r.standard_normal(6), r.standard_normal(6))),
    ("max_min", lambda x: np.sum(np.maximum(x, 0.1) * np.minimum(x, 0.3) + np.fmax(x, -x)),
     lambda r: (r.standard_normal(9),)),
    ("where", lambda x: np.sum(np.where(x > 0, np.sqrt(np.abs(x)), x ** 3)),
     lambda r: (r.standard_normal(11),)),
    ("where_log_zero", lambda x: np.sum(np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), 0.0)),
     lambda r: (np.abs(r.standard_normal(6)) * np.array([1, 0, 1, 1, 0, 1]),)),
    ("clip", lambda x: np.sum(np.clip(x, -0.5, 0.7) ** 2), lambda r: (r.standard_normal(10),)),
    ("sum_axes", lambda x: np.sum(np.sum(x, axis=0) ** 2) + np.sum(np.sum(x ** 2, axis=(1, 2))),
     lambda r: (r.standard_normal((2, 3, 4)),)),
    ("mean_var_std", lambda x: np.mean(x) + np.var(x, axis=1).sum() + np.std(x, axis=0).sum(),
     lambda r: (r.standard_normal((5, 4)),)),
    ("max_axis", lambda x: np.sum(np.max(x, axis=1) ** 2) + np.min(x),
     lambda r: (r.standard_normal((4, 5)),)),
    ("prod", lambda x: np.prod(x, axis=0).sum(), lambda r: (r.uniform(0.5, 1.5, (3, 4)),)),
    ("cumsum", lambda x: np.sum(np.cumsum(x, axis=1) ** 2), lambda r: (r.standard_normal((3, 4)),)),
    ("getitem_basic", lambda x: np.sum(x[1:, ::2] ** 2) + x[0, 1] * x[-1, -1],
     lambda r: (r.standard_normal((4, 5)),)),
    ("getitem_int_array", lambda x: np.sum(x[IDX] ** 3), lambda r: (r.standard_normal(6),)),
    ("getitem_traced_mask", lambda x: np.sum(x[x > 0.1] ** 2), lambda r: (r.standard_normal(12),)),
    ("take_along", lambda x: np.sum(np.take_along_axis(x, np.argsort(x, axis=1), axis=1)
                                    * np.arange(4.0)),
     lambda r: (r.standard_normal((3, 4)),)),
    ("matmul", lambda a, b: np.sum(np.tanh(a @ b)), lambda r: (r.standard_normal((3, 4)),
                                                               r.standard_normal((4, 2)))),
    ("matvec_dot", lambda a, v: np.dot(a @ v, v[:3]) + np.inner(v, v),
     lambda r: (r.standard_normal((3, 4)), r.standard_normal(4))),
    ("einsum", lambda a, b: np.sum(np.einsum("ij,jk->ik", a, b) ** 2)
     + np.einsum("ij,ij->", a[:, :2], b[:3]), lambda r: (r.standard_normal((3, 4)), r.standard_normal((4, 2)))),
    ("concatenate_stack", lambda x, y: np.sum(np.concatenate([x, y * 2, x ** 2]) ** 2)
     + np.sum(np.stack([x, y]) * 3), lambda r: (r.standard_normal(4), r.standard_normal(4))),
    ("reshape_transpose", lambda x: np.sum(x.reshape(3, 4).T @ np.arange(3.0)) + np.sum(
        np.swapaxes(x.reshape(2, 6), 0, 1) ** 2), lambda r: (r.standard_normal(12),)),
    ("softmax_xent", _softmax_xent, lambda r: (r.standard_normal((3, 3)),)),
    ("mlp_pytree", _mlp, lambda r: ({"w1": r.standard_normal((3, 5)), "b1": r.standard_normal(5),
                                     "w2": r.standard_normal((5, 2))},)),
    ("python_loop", _loop, lambda r: (r.standard_normal(5),)),
    ("mutation", _mutate, lambda r: (r.standard_normal(6),)),
    ("add_at", _add_at, lambda r: (r.standard_normal(6),)),
    ("linalg_solve", lambda a, b: np.sum(np.linalg.solve(a @ a.T + 3 * np.eye(3), b) ** 2),
     lambda r: (r.standard_normal((3, 3)), r.standard_normal(3))),
    ("float32", lambda x: np.sum(np.sin(x) * x * np.float32(2.5)),
     lambda r: (r.standard_normal(5).astype(np.float32),)),
]


def _argnums(args):
    return tuple(range(len(args))) if len(args) > 1 else 0


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name, f, make", SCALAR_FUNS, ids=[c[0] for c in SCALAR_FUNS])
def test_value_and_grad_matches_eager(name, f, make, mode):
    args1, args2 = make(rng(2)), make(rng(3))
    vg = tg.value_and_grad(f, argnums=_argnums(args1))
    jf = jit(vg, **MODES[mode])
    rtol = 1e-5 if name == "float32" else RTOL
    assert_same(jf(*args1), vg(*args1), rtol)  # the trace
    assert_same(jf(*args2), vg(*args2), rtol)  # a replay on other values
    assert_same(jf(*args1), vg(*args1), rtol)
    assert jf.stats["eager"] == 0, jf.eager_reasons()
    # index arrays computed from the values are guards: other values, other path
    assert jf.stats["replays"] >= (1 if name in VALUE_PATHS else 2)


VALUE_PATHS = {"getitem_traced_mask", "take_along", "max_axis"}


@pytest.mark.parametrize("mode", list(MODES))
def test_forward_only_and_nonscalar_outputs(mode):
    def f(x, y):
        return {"a": np.sin(x) * y, "b": (np.sum(x), x.shape), "c": None}
    jf = jit(f, **MODES[mode])
    for s in (0, 1, 2):
        x, y = rng(s).standard_normal((2, 3)), rng(s + 9).standard_normal(3)
        out = jf(x, y)
        ref = f(x, y)
        assert_same(out["a"], ref["a"])
        assert_same(out["b"][0], ref["b"][0])
        assert out["b"][1] == (2, 3) and out["c"] is None
        assert type(out["a"]) is np.ndarray


@pytest.mark.parametrize("mode", list(MODES))
def test_transforms_inside_jit(mode):
    f = lambda x: np.sum(np.sin(x) * x ** 2)  # noqa: E731
    x1, x2 = rng(0).standard_normal(4), rng(1).standard_normal(4)
    v = rng(2).standard_normal(4)
    cases = [
        (jit(tg.grad(f), **MODES[mode]), tg.grad(f), (x1,), (x2,)),
        (jit(tg.hessian(f), **MODES[mode]), tg.hessian(f), (x1,), (x2,)),
        (jit(lambda x, v: tg.jvp(f, (x,), (v,)), **MODES[mode]),
         lambda x, v: tg.jvp(f, (x,), (v,)), (x1, v), (x2, v * 2)),
        (jit(lambda x, v: tg.hvp(f, x, v), **MODES[mode]), lambda x, v: tg.hvp(f, x, v),
         (x1, v), (x2, v)),
        (jit(tg.jacobian(lambda x: np.tanh(x) * x[0]), **MODES[mode]),
         tg.jacobian(lambda x: np.tanh(x) * x[0]), (x1,), (x2,)),
        (jit(tg.grad(tg.grad(lambda s: np.sin(s) * s ** 3)), **MODES[mode]),
         tg.grad(tg.grad(lambda s: np.sin(s) * s ** 3)), (np.float64(0.3),), (np.float64(1.2),)),
    ]
    for jf, ef, a1, a2 in cases:
        assert_same(jf(*a1), ef(*a1))
        assert_same(jf(*a2), ef(*a2))
        assert jf.stats["eager"] == 0 and jf.stats["replays"] == 1


@pytest.mark.parametrize("mode", list(MODES))
def test_jit_of_vjp_closure(mode):
    x = rng(0).standard_normal(5)
    out, f_vjp = tg.vjp(lambda x: np.tanh(x) * np.sum(x ** 2), x)
    jf = jit(f_vjp, **MODES[mode])
    for s in (1, 2):
        ct = rng(s).standard_normal(5)
        assert_same(jf(ct), f_vjp(ct))
    assert jf.stats["replays"] == 1


# --- guards -------------------------------------------------------------------------------
def piecewise(x):
    if x > 0:
        return x ** 2
    return -x


@pytest.mark.parametrize("mode", list(MODES))
def test_guard_branch_flips_between_calls(mode):
    jg = jit(tg.grad(piecewise), **MODES[mode])
    for x in [1.5, -2.0, 3.0, -0.5, 2.0]:
        x = np.float64(x)
        assert jg(x) == tg.grad(piecewise)(x)
    assert jg.stats["traces"] == 2  # one per path, then replays
    assert jg.stats["replays"] == 3


@pytest.mark.parametrize("mode", list(MODES))
def test_guard_on_data_dependent_loop(mode):
    def f(x):
        s = np.sum(x ** 2)
        n = 0
        while s > 1.0:  # iteration count depends on the value
            s = s / 2.0
            n += 1
        return s * n + np.sum(x)

    jf = jit(tg.value_and_grad(f), **MODES[mode])
    ef = tg.value_and_grad(f)
    scales = [1.0, 1.0, 3.0, 0.1, 3.0, 1.0, 7.0]
    for scale in scales:
        x = rng(0).standard_normal(4) * scale
        assert_same(jf(x), ef(x))
    counts = {int(np.ceil(np.log2(max(np.sum((rng(0).standard_normal(4) * s) ** 2), 1.0))))
              for s in scales}
    assert jf.stats["traces"] == len(counts) >= 3


@pytest.mark.parametrize("mode", list(MODES))
def test_guard_on_index_and_int(mode):
    def f(x):
        i = int(np.argmax(x))   # an int() guard
        k = np.argmin(x)        # an index guard (x[k])
        return x[i] * 2 + x[k] + x[:i + 1].sum()

    jf = jit(tg.value_and_grad(f), **MODES[mode])
    ef = tg.value_and_grad(f)
    for s in [0, 0, 1, 2, 0]:
        x = rng(s).standard_normal(6)
        assert_same(jf(x), ef(x))
    assert jf.stats["eager"] == 0


@pytest.mark.parametrize("mode", list(MODES))
def test_boolean_mask_count_changes(mode):
    f = lambda x: np.sum(x[x > 0] ** 2) + np.mean(x[x < 0.5])  # noqa: E731
    jf = jit(tg.value_and_grad(f), **MODES[mode])
    ef = tg.value_and_grad(f)
    x = rng(0).standard_normal(8)
    for k in range(4):
        y = x + 0.3 * k
        assert_same(jf(y), ef(y))
    assert_same(jf(x), ef(x))


def test_too_many_paths_falls_back_to_eager():
    def f(x):
        return x * float(np.sum(x))  # float() guard: a new path for every value

    jf = jit(f, max_paths=3)
    for s in range(6):
        x = rng(s).standard_normal(3)
        assert_same(jf(x), f(x))
    assert jf.stats["traces"] == 4
    assert jf.stats["eager"] == 2
    assert list(jf.eager_reasons().values())[0].startswith("more than 3 traces")


# --- static arguments, signatures, fallbacks -------------------------------------------------
def test_static_values_and_shapes_retrace():
    calls = []

    def f(x, n, mode="a"):
        calls.append(1)
        return np.sum(x ** n) if mode == "a" else np.sum(x)

    jf = jit(f)
    x = np.arange(3.0)
    assert jf(x, 2) == 5.0 and jf(x, 3) == 9.0 and jf(x, 2) == 5.0
    assert jf(x, 2, mode="b") == 3.0
    assert jf(np.arange(4.0), 2) == 14.0
    assert jf(np.arange(4, dtype=np.float32), 2) == 14.0
    assert len(calls) == 5  # (2), (3), mode b, shape (4,), float32


def test_static_argnums_array():
    f = jit(lambda x, idx: np.sum(x[idx]), static_argnums=1)
    x = np.arange(5.0)
    assert f(x, np.array([0, 1])) == 1.0
    assert f(x, np.array([3, 4])) == 7.0
    assert f.stats["traces"] == 2


def test_disable_env(monkeypatch):
    monkeypatch.setenv("TRACEGRAD_DISABLE_JIT", "1")
    jf = jit(lambda x: np.sin(x))
    np.testing.assert_array_equal(jf(np.ones(2)), np.sin(np.ones(2)))
    assert jf.stats == {"traces": 0, "replays": 0, "eager": 1, "guard_failures": 0}


def test_inside_another_transform_runs_eagerly():
    jf = jit(lambda x: np.sum(np.sin(x) ** 2))
    x = rng(0).standard_normal(3)
    g = tg.grad(jf)(x)
    np.testing.assert_allclose(g, 2 * np.sin(x) * np.cos(x), rtol=1e-14)
    assert jf.stats["eager"] == 1
    # jit inside jit is inlined into the outer trace
    outer = jit(lambda x: jf(x) * 2)
    assert_same(outer(x), 2 * np.sum(np.sin(x) ** 2))


def test_escape_runs_eagerly():
    def f(x):
        y = np.asarray(x)  # the trace-time value would be frozen into the graph
        return np.sum(x * y)

    jf = jit(f)
    for s in range(3):
        x = rng(s).standard_normal(3)
        assert_same(jf(x), f(x))
    assert "plain array" in list(jf.eager_reasons().values())[0]


def test_inputs_not_modified_and_outputs_writable():
    def f(x):
        x[0] = 5.0
        return x * 2, np.ones(2)

    jf = jit(f)
    x = np.arange(3.0)
    for _ in range(2):
        a, b = jf(x)
        np.testing.assert_array_equal(x, [0.0, 1.0, 2.0])
        np.testing.assert_array_equal(a, [10.0, 2.0, 4.0])
        b[0] = 3.0  # constant outputs are copies, not the plan's snapshot
    np.testing.assert_array_equal(jf(x)[1], [1.0, 1.0])


def test_error_in_replay_is_eager_error():
    jf = jit(lambda a: np.linalg.inv(a))
    a = np.eye(2)
    np.testing.assert_array_equal(jf(a), np.eye(2))
    with pytest.raises(np.linalg.LinAlgError):
        jf(np.zeros((2, 2)))


def test_closure_constants_are_captured_by_value():
    c = np.array([1.0, 2.0])
    jf = jit(lambda x: x * c)
    np.testing.assert_array_equal(jf(np.ones(2)), [1.0, 2.0])
    c[0] = 10.0  # like JAX: the trace saw the old value
    np.testing.assert_array_equal(jf(np.ones(2)), [1.0, 2.0])


def test_threads_share_plans():
    import threading
    f = tg.value_and_grad(lambda x: np.sum(np.tanh(x) * x ** 2))
    jf = jit(f)
    xs = [rng(s).standard_normal(50) for s in range(8)]
    jf(xs[0])
    errors = []

    def work(x):
        try:
            for _ in range(20):
                assert_same(jf(x), f(x))
        except Exception as e:  # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=work, args=(x,)) for x in xs]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    assert jf.stats["traces"] == 1


def test_methods_and_kwargs():
    class Model:
        def __init__(self, w):
            self.w = w

        @jit
        def loss(self, x, scale=1.0):
            return np.sum((x * self.w) ** 2) * scale

    m = Model(np.arange(3.0))
    x = np.ones(3)
    assert m.loss(x) == 5.0 and m.loss(x, scale=2.0) == 10.0
    assert m.loss(x * 2) == 20.0


def test_value_dependent_rule_branches_are_guarded():
    # prod's rule takes an exact path when a zero is present; cummax's rule
    # picks indices from values: a replay must never reuse the other case
    import tracegrad as tg
    f = lambda x: np.prod(x)  # noqa: E731
    g = lambda x: np.sum(np.maximum.accumulate(x) ** 2)  # noqa: E731
    jf, jg = tg.jit(tg.grad(f)), tg.jit(tg.grad(g))
    for v in ([1.0, 2.0, 3.0], [0.0, 2.0, 3.0], [1.0, 2.0, 3.0]):
        v = np.array(v)
        np.testing.assert_allclose(jf(v), tg.grad(f)(v))
    for v in ([1.0, 3.0, 2.0, 5.0], [4.0, 1.0, 2.0, 3.0], [1.0, 3.0, 2.0, 5.0]):
        v = np.array(v)
        np.testing.assert_allclose(jg(v), tg.grad(g)(v))


def test_one_result_of_a_multi_result_primitive():
    """np.nonzero of a vector is a tuple of one array: the plan stores the
    array, not the tuple stacked into a 2-D array (which failed its guard)."""
    f = lambda x: np.sum(x[np.where(x > 0.5)[0]] ** 2)  # noqa: E731
    x = np.array([0.1, 0.7, 0.9, 0.2])
    for vm in (True, False):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            jf = jit(f, vm=vm)
            assert jf(x) == f(x)
            assert jf(x * 1.1) == f(x * 1.1)
        assert jf.stats["replays"] == 1


def test_index_into_a_plain_array_is_guarded():
    """NumPy calls no hook when a traced index array indexes a plain array:
    the integer or boolean index that no recorded operation read is guarded
    on its value, so a replay with another index takes another path."""
    grid = np.linspace(0.0, 1.0, 11)
    table = 3.0 * grid ** 2

    def lut(x):
        return table[np.searchsorted(grid, x)] * x

    def masked(x):
        return np.sum(np.arange(4.0)[x > 0.5]) * np.sum(x)

    jl = jit(lut)
    for v in ([0.1], [0.9], [0.1], [0.55]):
        x = np.array(v)
        np.testing.assert_array_equal(jl(x), lut(x))
    jm = jit(tg.grad(masked))
    for v in ([0.1, 0.7, 0.9, 0.2], [0.9, 0.7, 0.1, 0.2], [0.9, 0.8, 0.1, 0.2]):
        x = np.array(v)
        np.testing.assert_array_equal(jm(x), tg.grad(masked)(x))
    assert jm.stats["replays"] >= 1  # same mask: the plan is reused
