"""Tests of tracegrad.checkpoint, tracegrad.step and tracegrad.loop.

The acceptance criterion is exactness: a checkpointed gradient must equal the
gradient of the same program taped in full, to 1e-12 relative, for every
model and schedule. Recomputation counts are checked against the closed forms
of ``tracegrad.checkpoint.schedule``; memory against the slot budget.
"""
import importlib
import os
import sys
import types
import warnings

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.checkpoint.schedule import (OnlineSchedule, count, optimal_advances, revolve,
                                           simulate, sqrt_schedule)
from tracegrad.core.tape import level_stack

ck = importlib.import_module("tracegrad.checkpoint.checkpoint")


def rel(a, b):
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    scale = np.max(np.abs(b)) if b.size else 0.0
    return float(np.max(np.abs(a - b)) / scale) if scale else float(np.max(np.abs(a)))


def assert_tree_close(a, b, tol=1e-12):
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_tree_close(x, y, tol)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_tree_close(a[k], b[k], tol)
    else:
        assert rel(a, b) <= tol, rel(a, b)


# =============================================================================
# Models (written out of place; one in-place variant is tested separately)
# =============================================================================
N = 48
DX = 1.0 / N


def burgers(u, nu, dt=1e-3):
    """Viscous Burgers, periodic, central differences."""
    up = np.concatenate([u[1:], u[:1]])
    um = np.concatenate([u[-1:], u[:-1]])
    return u - dt * u * (up - um) / (2 * DX) + dt * nu * (up - 2 * u + um) / DX ** 2


def heat(u, kappa, dt=2e-5):
    """Heat equation with insulated ends."""
    lap = np.concatenate([u[1:2] - u[:1], u[2:] - 2 * u[1:-1] + u[:-2], u[-2:-1] - u[-1:]])
    return u + dt * kappa * lap / DX ** 2


def l96_rhs(x, forcing):
    return (np.roll(x, -1) - np.roll(x, 2)) * np.roll(x, 1) - x + forcing


def lorenz96(x, forcing, dt=0.01):
    """One RK4 step of the Lorenz-96 model."""
    k1 = l96_rhs(x, forcing)
    k2 = l96_rhs(x + 0.5 * dt * k1, forcing)
    k3 = l96_rhs(x + 0.5 * dt * k2, forcing)
    k4 = l96_rhs(x + dt * k3, forcing)
    return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def u_init(n=N):
    x = np.arange(n) / n
    return 0.5 + np.sin(2 * np.pi * x) + 0.3 * np.cos(6 * np.pi * x)


MODELS = {
    "burgers": (burgers, u_init, 0.05),
    "heat": (heat, u_init, 0.7),
    "lorenz96": (lorenz96, lambda: 8.0 + np.sin(np.arange(20.0)), 8.0),
}


def run(stepfn, u0, p, n):
    u = u0
    for _ in range(n):
        u = stepfn(u, p)
    return u


def loss_of(stepfn, n):
    return lambda u0, p: np.sum(run(stepfn, u0, p, n) ** 2)


def online_actions(n, s):
    sched = OnlineSchedule(s)
    acts = []
    for i in range(n):
        acts += sched.forward(i)
    return acts + sched.reverse(n)


# =============================================================================
# Streaming schedules are the colleague's schedules
# =============================================================================

@pytest.mark.parametrize("s", [1, 2, 3, 5, 8])
def test_stream_revolve_is_revolve(s):
    for n in list(range(0, 70)) + [257, 1000]:
        assert list(ck.stream_revolve(n, s)) == revolve(n, s)


def test_stream_revolve_large():
    assert list(ck.stream_revolve(5000, 20)) == revolve(5000, 20)


@pytest.mark.parametrize("s", [1, 2, 4, 9])
def test_stream_from_online_held_matches_online_reverse(s):
    for n in list(range(1, 60)) + [200, 777]:
        sched = OnlineSchedule(s)
        fwd = []
        for i in range(n):
            fwd += sched.forward(i)
        held = dict(sched.held)
        free = sorted(set(range(s)) - set(held.values()), reverse=True)
        acts = fwd + list(ck.stream_from_held(held, n, s, free))
        simulate(acts, n, capacity=s)
        assert count(acts) == count(online_actions(n, s))


# =============================================================================
# checkpoint(fun)
# =============================================================================

def block(x, w, b, n_layers=3, act="tanh"):
    f = np.tanh if act == "tanh" else np.sin
    for _ in range(n_layers):
        x = f(w @ x + b)
    return x


def test_checkpoint_matches_plain_gradient():
    rng = np.random.default_rng(0)
    x = rng.normal(size=5)
    w = rng.normal(size=(5, 5)) / 2
    b = rng.normal(size=5)
    cb = tg.checkpoint(block)

    def f(blk):
        return lambda x, w, b: np.sum(blk(blk(x, w, b), w, b, n_layers=2, act="sin") ** 2)

    g = tg.grad(f(cb), argnums=(0, 1, 2))(x, w, b)
    r = tg.grad(f(block), argnums=(0, 1, 2))(x, w, b)
    assert_tree_close(g, r)


def test_checkpoint_records_one_node_and_recomputes_once():
    calls = []

    @tg.checkpoint
    def inner(x):
        calls.append(1)
        for _ in range(10):
            x = np.sin(x) * 1.1
        return x

    seen = {}

    def f(x):
        y = inner(x)
        seen["nodes"] = [n.prim.name for n in level_stack()[-1].nodes]
        return np.sum(y)

    g = tg.grad(f)(np.linspace(0, 1, 4))
    assert seen["nodes"] == ["checkpoint(inner)"]
    assert len(calls) == 2          # forward + one recomputation in the backward walk
    r = tg.grad(lambda x: np.sum(inner.__wrapped__(x)))(np.linspace(0, 1, 4))
    assert_tree_close(g, r)


def test_checkpoint_pytrees_statics_and_int_outputs():
    @tg.checkpoint
    def f(d, scale, mode, k=2):
        a = d["a"] * scale
        if mode == "square":
            a = a ** 2
        return {"y": (a * d["b"], np.sum(a)), "n": k + 1, "idx": np.argmax(a)}

    def loss(fun):
        def inner(a, b):
            out = fun({"a": a, "b": b}, 3.0, "square", k=4)
            assert out["n"] == 5
            return np.sum(out["y"][0]) + out["y"][1] * out["idx"]
        return inner

    a, b = np.array([1.0, -2.0, 0.5]), np.array([0.3, 0.2, 0.1])
    assert_tree_close(tg.grad(loss(f), (0, 1))(a, b), tg.grad(loss(f.__wrapped__), (0, 1))(a, b))


def test_checkpoint_nested_and_higher_order():
    @tg.checkpoint
    def inner(x, w):
        return np.sin(w * x) * x

    @tg.checkpoint
    def outer(x, w):
        return inner(inner(x, w), w) + x ** 3

    def f(use):
        return lambda x, w: np.sum(use(x, w) ** 2)

    plain = lambda x, w: (lambda y: np.sin(w * y) * y)(np.sin(w * x) * x) + x ** 3  # noqa: E731
    x, w = np.array([0.3, -0.7, 1.2]), 0.8
    for tr in (lambda h: tg.grad(h, (0, 1)),
               lambda h: tg.hessian(h),
               lambda h: tg.jacfwd(tg.grad(h)),
               lambda h: tg.grad(lambda x, w: tg.grad(h, 1)(x, w))):
        assert_tree_close(tr(f(outer))(x, w), tr(f(plain))(x, w))
    jv = tg.jvp(lambda x: outer(x, w), (x,), (np.ones(3),))
    jr = tg.jvp(lambda x: plain(x, w), (x,), (np.ones(3),))
    assert_tree_close(jv, jr)
    assert_tree_close(tg.jacrev(lambda x: outer(x, w))(x), tg.jacrev(lambda x: plain(x, w))(x))


def test_checkpoint_outside_grad_is_a_plain_call():
    calls = []

    @tg.checkpoint
    def f(x):
        calls.append(1)
        return x * 2

    y = f(np.ones(2))
    assert type(y) is np.ndarray and len(calls) == 1
    assert f.__name__ == "f"


def test_checkpoint_closure_over_traced_value_is_an_error():
    def loss(x, w):
        @tg.checkpoint
        def g(x):
            return x * w          # w is traced but not an argument
        return np.sum(g(x))

    with pytest.raises(tg.CheckpointError, match="closure"):
        tg.grad(loss, (0, 1))(np.ones(2), 2.0)


# =============================================================================
# step(): gradients
# =============================================================================

@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("schedule", ["revolve", "online", "sqrt"])
def test_step_gradients_equal_full_tape(model, schedule):
    fun, init, p = MODELS[model]
    n = 120
    st = tg.step(fun, snapshots=6, steps=None if schedule == "online" else n,
                 schedule=schedule)
    u0 = init()
    g = tg.grad(loss_of(st, n), (0, 1))(u0, p)
    r = tg.grad(loss_of(fun, n), (0, 1))(u0, p)
    assert_tree_close(g, r)
    assert st.stats.max_snapshots <= 6 and st.stats.taped == n
    assert st.stats.segments == 1


def test_step_counts_match_schedule_formulas():
    n, s = 300, 7
    st = tg.step(heat, snapshots=s, steps=n)
    tg.grad(loss_of(st, n))(u_init(), 0.7)
    c = count(revolve(n, s))
    # The user's loop evaluates all n steps untaped; revolve's first sweep
    # stops at state n - 1, so the total is revolve's plus one.
    assert st.stats.evaluations == c["evaluations"] + 1
    assert st.stats.recomputations == optimal_advances(n, s) - (n - 1)
    assert st.stats.taped == n and st.stats.forward_evaluations == n
    assert st.stats.max_snapshots == c["max_snapshots"]

    st = tg.step(heat, snapshots=s)            # online: steps unknown
    tg.grad(loss_of(st, n))(u_init(), 0.7)
    assert st.stats.evaluations == count(online_actions(n, s))["evaluations"]
    assert st.stats.schedule == "online"

    st = tg.step(heat, snapshots=s, steps=n, schedule="sqrt")
    tg.grad(loss_of(st, n))(u_init(), 0.7)
    assert st.stats.evaluations == count(sqrt_schedule(n, s))["evaluations"] + 1


def test_step_keeps_two_nodes_on_the_tape():
    n = 200
    st = tg.step(heat, snapshots=4, steps=n)
    seen = {}

    def loss(u0, k):
        u = run(st, u0, k, n)
        seen["nodes"] = [nd.prim.name for nd in level_stack()[-1].nodes]
        return np.sum(u ** 2)

    tg.grad(loss, (0, 1))(u_init(), 0.7)
    assert seen["nodes"] == ["step(heat)", "step(heat)"]


def test_step_adaptive_while_loop():
    t_end = 0.2

    def adaptive(state, nu):
        u, t = state
        dt = 0.4 * DX / (np.max(np.abs(u)) + 1.0)
        dt = np.minimum(dt, t_end - t)
        return burgers(u, nu, dt), t + dt

    def loss(stepfn):
        def f(u0, nu):
            state = (u0, 0.0)
            steps = 0
            while state[1] < t_end - 1e-12:
                state = stepfn(state, nu)
                steps += 1
            loss.steps = steps
            return np.sum(state[0] ** 2) + state[1]
        return f

    st = tg.step(adaptive, snapshots=5)
    g = tg.grad(loss(st), (0, 1))(u_init(), 0.05)
    n = loss.steps
    r = tg.grad(loss(adaptive), (0, 1))(u_init(), 0.05)
    assert n > 50
    assert_tree_close(g, r)
    assert st.stats.schedule == "online" and st.stats.steps == n
    assert st.stats.evaluations == count(online_actions(n, 5))["evaluations"]


def test_step_pytree_state_with_int_leaf_and_kwargs():
    @tg.step(snapshots=3, steps=40)
    def two_field(state, a, *, damp):
        u, v = state["u"], state["v"]
        return {"u": u + 0.05 * v, "v": v - 0.05 * a * np.sin(u) - damp * v,
                "k": state["k"] + 1}

    def loss(fun):
        def f(u0, v0, a):
            s = {"u": u0, "v": v0, "k": 0}
            for _ in range(40):
                s = fun(s, a, damp=0.01)
            assert s["k"] == 40
            return np.sum(s["u"] ** 2 + s["v"])
        return f

    u0, v0 = np.linspace(0, 1, 5), np.linspace(1, 0, 5)
    g = tg.grad(loss(two_field), (0, 1, 2))(u0, v0, 1.3)
    r = tg.grad(loss(two_field.__wrapped__), (0, 1, 2))(u0, v0, 1.3)
    assert_tree_close(g, r)
    assert two_field.stats.segments == 1


def test_step_intermediate_states_used_elsewhere():
    n = 60
    st = tg.step(burgers, snapshots=4, steps=n)

    def loss(fun):
        def f(u0, nu):
            u, acc = u0, 0.0
            for i in range(n):
                prev = u
                u = fun(u, nu)
                acc = acc + np.sum(u ** 3) * 1e-3          # loss summed over time
                if i % 13 == 0:
                    acc = acc + np.sum((u - prev) ** 2)    # previous state used after the step
            return acc + np.sum(u ** 2)
        return f

    assert_tree_close(tg.grad(loss(st), (0, 1))(u_init(), 0.05),
                      tg.grad(loss(burgers), (0, 1))(u_init(), 0.05))
    assert st.stats.segments == 1


def test_step_state_modified_between_steps_starts_a_segment():
    n = 50
    st = tg.step(burgers, snapshots=4, steps=n)

    def loss(fun):
        def f(u0, nu):
            u = u0
            for i in range(n):
                u = fun(u, nu)
                if i == 20:
                    u = u * 0.9 + 0.01             # not part of the step
            return np.sum(u ** 2)
        return f

    assert_tree_close(tg.grad(loss(st), (0, 1))(u_init(), 0.05),
                      tg.grad(loss(burgers), (0, 1))(u_init(), 0.05))
    assert st.stats.segments == 2


def test_step_state_written_in_place_between_steps_starts_a_segment():
    n = 30
    st = tg.step(heat, snapshots=3, steps=n)

    def loss(fun):
        def f(u0, k):
            u = u0
            for i in range(n):
                u = fun(u, k)
                if i == 10:
                    u[0] = 2.0                     # same object, new value
            return np.sum(u ** 2)
        return f

    assert_tree_close(tg.grad(loss(st), (0, 1))(u_init(), 0.7),
                      tg.grad(loss(heat), (0, 1))(u_init(), 0.7))
    assert st.stats.segments == 2


def test_step_branching_from_one_state():
    st = tg.step(heat, snapshots=3)        # the first branch continues the chain: 40 steps

    def loss(fun):
        def f(u0, k):
            mid = run(fun, u0, k, 20)
            a = run(fun, mid, k, 20)
            b = run(fun, mid, 2 * k, 20)          # second continuation of the same state
            return np.sum(a * b)
        return f

    assert_tree_close(tg.grad(loss(st), (0, 1))(u_init(), 0.5),
                      tg.grad(loss(heat), (0, 1))(u_init(), 0.5))


def test_step_per_step_parameters():
    n = 40
    forcing = np.sin(np.arange(n * 20.0)).reshape(n, 20)

    def forced(x, f):
        return lorenz96(x, f)

    st = tg.step(forced, snapshots=4, steps=n)

    def loss(fun):
        def f(x0, fr):
            x = x0
            for i in range(n):
                x = fun(x, 8.0 + fr[i])
            return np.sum(x ** 2)
        return f

    x0 = 8.0 + np.cos(np.arange(20.0))
    assert_tree_close(tg.grad(loss(st), (0, 1))(x0, forcing),
                      tg.grad(loss(forced), (0, 1))(x0, forcing))


def test_step_in_place_step_function():
    def inplace_heat(u, k):
        u[1:-1] += 0.2 * k * (u[2:] - 2 * u[1:-1] + u[:-2])
        return u

    st = tg.step(inplace_heat, snapshots=3, steps=25)

    def loss(fun):
        def f(u0, k):
            u = u0 + 0.0
            for _ in range(25):
                u = fun(u, k)
            return np.sum(u ** 2)
        return f

    u0 = u_init()
    before = u0.copy()
    assert_tree_close(tg.grad(loss(st), (0, 1))(u0, 0.5),
                      tg.grad(loss(inplace_heat), (0, 1))(u0, 0.5))
    assert np.array_equal(u0, before)


# =============================================================================
# step(): transforms other than grad
# =============================================================================

def final_state(fun, n, p):
    return lambda u0: run(fun, u0, p, n)


def test_step_vjp_twice_jacobians_jvp_linearize():
    n, p = 25, 0.05
    u0 = u_init(12)
    global DX
    old = DX
    DX = 1.0 / 12
    try:
        st = tg.step(burgers, snapshots=3, steps=n)
        out, f_vjp = tg.vjp(final_state(st, n, p), u0)
        out_r, f_vjp_r = tg.vjp(final_state(burgers, n, p), u0)
        ct = np.cos(np.arange(12.0))
        assert_tree_close(f_vjp(ct), f_vjp_r(ct))
        assert_tree_close(f_vjp(2 * ct), f_vjp_r(2 * ct))     # the chain re-runs itself
        for tr in (tg.jacrev, tg.jacfwd, tg.jacobian):
            assert_tree_close(tr(final_state(st, n, p))(u0), tr(final_state(burgers, n, p))(u0))
        v = np.sin(np.arange(12.0))
        assert_tree_close(tg.jvp(final_state(st, n, p), (u0,), (v,)),
                          tg.jvp(final_state(burgers, n, p), (u0,), (v,)))
        assert_tree_close(tg.linearize(final_state(st, n, p), u0)[1](v),
                          tg.linearize(final_state(burgers, n, p), u0)[1](v))
    finally:
        DX = old


def test_step_higher_order():
    n = 20
    st = tg.step(heat, snapshots=3, steps=n)
    u0 = u_init()
    v = np.cos(np.arange(float(N)))
    assert_tree_close(tg.hvp(lambda u: loss_of(st, n)(u, 0.7), u0, v),
                      tg.hvp(lambda u: loss_of(heat, n)(u, 0.7), u0, v))
    assert_tree_close(tg.grad(tg.grad(lambda k: loss_of(st, n)(u0, k)))(0.7),
                      tg.grad(tg.grad(lambda k: loss_of(heat, n)(u0, k)))(0.7))
    small = u0[:8]
    assert_tree_close(tg.hessian(lambda u: loss_of(st, 5)(u, 0.7))(small),
                      tg.hessian(lambda u: loss_of(heat, 5)(u, 0.7))(small))


def test_step_outside_grad_just_runs():
    calls = []

    @tg.step(snapshots=2, steps=10)
    def f(u, a):
        calls.append(1)
        return u * a

    y = run(f, np.ones(3), 1.5, 10)
    assert type(y) is np.ndarray and len(calls) == 10
    np.testing.assert_allclose(y, 1.5 ** 10)


# =============================================================================
# step(): misuse is an error, never a wrong gradient
# =============================================================================

def test_step_parameter_modified_in_place_is_an_error():
    buf = np.ones(N)
    st = tg.step(lambda u, f: heat(u, 0.5) + 1e-3 * f, snapshots=3, steps=10)

    def loss(u0):
        u = u0
        for i in range(10):
            buf[:] = i                      # reused buffer: earlier steps saw other values
            u = st(u, buf)
        return np.sum(u ** 2)

    with pytest.raises(tg.CheckpointError, match="modified in place"):
        tg.grad(loss)(u_init())


def test_step_nondeterministic_step_is_an_error():
    rng = np.random.default_rng(1)
    st = tg.step(lambda u, k: heat(u, k) + 1e-3 * rng.normal(size=u.shape), snapshots=3,
                 steps=10)
    with pytest.raises(tg.CheckpointError, match="deterministic"):
        tg.grad(loss_of(st, 10))(u_init(), 0.5)


def test_step_closure_over_traced_value_is_an_error():
    def loss(u0, k):
        st = tg.step(lambda u: heat(u, k), snapshots=3, steps=5)
        return np.sum(run(lambda u, _: st(u), u0, None, 5))

    with pytest.raises(tg.CheckpointError, match="closure"):
        tg.grad(loss, (0, 1))(u_init(), 0.5)


def test_step_wrong_structure_is_an_error():
    st = tg.step(lambda u, k: (u, u), snapshots=2)
    with pytest.raises(TypeError, match="structure"):
        tg.grad(lambda u: np.sum(st(u, 1.0)[0]))(np.ones(2))


def test_step_more_steps_than_declared_warns_and_stays_exact():
    st = tg.step(heat, snapshots=3, steps=10)
    with pytest.warns(RuntimeWarning, match="more than steps=10"):
        g = tg.grad(loss_of(st, 25), (0, 1))(u_init(), 0.5)
    assert_tree_close(g, tg.grad(loss_of(heat, 25), (0, 1))(u_init(), 0.5))
    st = tg.step(heat, snapshots=3, steps=30)              # fewer: silently replanned
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = tg.grad(loss_of(st, 12), (0, 1))(u_init(), 0.5)
    assert_tree_close(g, tg.grad(loss_of(heat, 12), (0, 1))(u_init(), 0.5))


@pytest.mark.parametrize("kwargs, match", [
    (dict(schedule="revolve"), "needs steps"),
    (dict(schedule="binomial"), "schedule must be"),
    (dict(snapshots=0), "snapshots"),
    (dict(steps=-1), "steps"),
    (dict(memory="lots"), "memory size"),
])
def test_step_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tg.step(heat, **kwargs)


# =============================================================================
# Budgets, storage, statistics, progress
# =============================================================================

def test_memory_budget_sets_the_slot_count():
    state_bytes = N * 8
    st = tg.step(heat, memory=5 * state_bytes + 10, steps=40)
    g = tg.grad(loss_of(st, 40), (0, 1))(u_init(), 0.5)
    assert st.stats.snapshots == 5 and st.stats.max_snapshots <= 5
    assert st.stats.peak_ram_bytes <= 5 * state_bytes
    assert_tree_close(g, tg.grad(loss_of(heat, 40), (0, 1))(u_init(), 0.5))
    st = tg.step(heat, memory="1kB", snapshots=2, steps=40)     # the smaller count wins
    tg.grad(loss_of(st, 40))(u_init(), 0.5)
    assert st.stats.snapshots == 2
    st = tg.step(heat, memory=100, steps=40)
    with pytest.raises(ValueError, match="cannot hold a single snapshot"):
        tg.grad(loss_of(st, 40))(u_init(), 0.5)


def test_disk_level(tmp_path):
    n, s = 80, 6
    st = tg.step(burgers, snapshots=2, disk_snapshots=4, disk=str(tmp_path), steps=n)
    seen = {}

    def loss(u0, nu):
        u = run(st, u0, nu, n)
        seen["files"] = sorted(p.name for d in tmp_path.iterdir() for p in d.iterdir())
        return np.sum(u ** 2)

    g = tg.grad(loss, (0, 1))(u_init(), 0.05)
    assert_tree_close(g, tg.grad(loss_of(burgers, n), (0, 1))(u_init(), 0.05))
    stats = st.stats
    assert stats.snapshots == s
    assert stats.disk_bytes_written > 0 and stats.disk_bytes_read > 0
    assert stats.peak_disk_bytes > 0 and stats.peak_ram_bytes <= 2 * N * 8
    assert seen["files"] and all(f.endswith(".npy") for f in seen["files"])
    assert stats.evaluations == count(revolve(n, s))["evaluations"] + 1
    import gc
    gc.collect()
    assert not any(tmp_path.iterdir())                    # the folder is removed


def test_storage_roundtrip(tmp_path):
    from tracegrad.checkpoint.storage import SnapshotStore, parse_bytes
    assert parse_bytes("1.5GB") == 1_500_000_000 and parse_bytes("4 KiB") == 4096
    store = SnapshotStore(4, disk_slots=2, disk_dir=str(tmp_path))
    store.set_root([np.arange(3.0), 7])
    state = [np.arange(3.0) * 2, 5, np.array([1, 2], dtype=np.int32)]
    store.put(1, 3, state)
    store.put(3, 4, state)
    store.put(2, 0, None)
    got = store.get(1)
    assert np.array_equal(got[0], state[0]) and got[1] == 5 and got[2].dtype == np.int32
    got[0][:] = -1                                        # a restore is a private copy
    assert np.array_equal(store.get(1)[0], state[0])
    assert np.array_equal(store.get(2)[0], np.arange(3.0))
    files = list(next(tmp_path.iterdir()).iterdir())
    for f in files:
        np.load(f, allow_pickle=False)
    store.free(1)
    with pytest.raises(RuntimeError):
        store.get(1)
    store.close()
    assert not any(tmp_path.iterdir())


def test_stats_reset_per_gradient_and_loop_helper():
    st = tg.step(heat, snapshots=4)
    tg.grad(loss_of(st, 30))(u_init(), 0.5)
    assert st.stats.steps == 30
    tg.grad(loss_of(st, 20))(u_init(), 0.5)
    assert st.stats.steps == 20 and st.stats.segments == 1
    d = st.stats.as_dict()
    assert d["evaluations"] == st.stats.evaluations and "CheckpointStats(" in repr(st.stats)

    g = tg.grad(lambda u0, k: np.sum(tg.loop(heat, u0, 50, k, snapshots=4) ** 2), (0, 1))(
        u_init(), 0.5)
    assert_tree_close(g, tg.grad(loss_of(heat, 50), (0, 1))(u_init(), 0.5))
    st = tg.step(heat, snapshots=4)
    g = tg.grad(lambda u0, k: np.sum(tg.loop(st, u0, 50, k) ** 2), (0, 1))(u_init(), 0.5)
    assert st.stats.schedule == "revolve"                 # loop knows n
    assert st.stats.evaluations == count(revolve(50, 4))["evaluations"] + 1
    with pytest.raises(TypeError, match="options"):
        tg.loop(st, u_init(), 5, 0.5, snapshots=3)


def test_progress_bar(monkeypatch, capsys):
    updates = []

    class FakeBar:
        def __init__(self, total, **kw):
            updates.append(("total", total))

        def update(self, k):
            updates.append(k)

        def close(self):
            updates.append("closed")

    fake = types.ModuleType("tqdm.auto")
    fake.tqdm = FakeBar
    monkeypatch.setitem(sys.modules, "tqdm", types.ModuleType("tqdm"))
    monkeypatch.setitem(sys.modules, "tqdm.auto", fake)
    st = tg.step(heat, snapshots=3, steps=30, progress=True)
    tg.grad(loss_of(st, 30))(u_init(), 0.5)
    assert updates[0] == ("total", 30) and updates.count(1) == 30 and updates[-1] == "closed"

    monkeypatch.setitem(sys.modules, "tqdm", None)         # not installed: text on stderr
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    st = tg.step(heat, snapshots=3, steps=30, progress=True)
    tg.grad(loss_of(st, 30))(u_init(), 0.5)
    assert "30/30 steps" in capsys.readouterr().err
    st = tg.step(heat, snapshots=3, steps=30)               # automatic: short run, no bar
    tg.grad(loss_of(st, 30))(u_init(), 0.5)
    assert capsys.readouterr().err == ""


# =============================================================================
# Memory: peak extra memory is (snapshots + a few) states, whatever T is
# =============================================================================

def _peak_states(T, s, n_state):
    import tracemalloc

    st = tg.step(lambda u, k: u * k + 1e-4, snapshots=s, progress=False)
    u0 = np.linspace(0.0, 1.0, n_state)
    tg.grad(loss_of(st, 30), (0, 1))(u0, 1.0001)            # warm caches
    loss = lambda u0, k: np.sum(tg.loop(st, u0, T, k) ** 2)  # noqa: E731 (revolve: n known)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tg.grad(loss, (0, 1))(u0, 1.0001)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak / (n_state * 8), st.stats


@pytest.mark.skipif(os.environ.get("TG_SKIP_MEMORY") == "1", reason="memory test disabled")
def test_peak_memory_independent_of_steps():
    """Peak extra memory of a gradient through T steps with s = 8 snapshots:
    at most s + 10 states (one taped step, its cotangents, the current
    state and the loss's own tape), the same for T = 1000 and T = 10000."""
    s, n_state = 8, 16384
    p1, st1 = _peak_states(1000, s, n_state)
    p2, st2 = _peak_states(10000, s, n_state)
    assert st1.taped == 1000 and st2.taped == 10000
    assert st2.max_snapshots == s and st2.schedule == "revolve"
    assert p1 <= s + 10, p1
    assert p2 <= s + 10, p2
    assert p2 <= p1 + 1, (p1, p2)          # no growth with T


# =============================================================================
# Methods and threads
# =============================================================================

def test_step_as_a_method():
    class Model:
        def __init__(self, k):
            self.k = k

        @tg.step(snapshots=3, steps=30)
        def advance(self, u, scale):
            return heat(u, self.k * scale)

        def loss(self, u0, scale):
            u = u0
            for _ in range(30):
                u = self.advance(u, scale)
            return np.sum(u ** 2)

    m = Model(0.7)
    g = tg.grad(m.loss, (0, 1))(u_init(), 1.0)
    r_u0, r_k = tg.grad(loss_of(heat, 30), (0, 1))(u_init(), 0.7)
    assert_tree_close(g, (r_u0, 0.7 * r_k))           # d/dscale = k * d/dk
    assert m.advance.stats.segments == 1 and m.advance.stats.taped == 30


def test_step_shared_between_threads():
    import threading
    st = tg.step(heat, snapshots=3, steps=40)
    results = {}

    def work(i):
        results[i] = tg.grad(loss_of(st, 40), (0, 1))(u_init() * (1 + 0.1 * i), 0.5)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(3):
        assert_tree_close(results[i], tg.grad(loss_of(heat, 40), (0, 1))(u_init() * (1 + 0.1 * i),
                                                                          0.5))


# =============================================================================
# jit=True: the backward walk replays compiled steps
# =============================================================================

def test_step_jit_compiles_the_reversal():
    n = 60
    st = tg.step(burgers, snapshots=4, steps=n, jit=True)
    g = tg.grad(loss_of(st, n), (0, 1))(u_init(), 0.05)
    r = tg.grad(loss_of(burgers, n), (0, 1))(u_init(), 0.05)
    assert_tree_close(g, r, tol=1e-10)           # compiled kernels may round differently
    assert st.stats.taped == n
    assert st.stats.evaluations == count(revolve(n, 4))["evaluations"] + 1
    jitted = st._jitted
    vjp = next(iter(jitted._vjps.values()))
    assert vjp.stats["traces"] == 1 and vjp.stats["replays"] == n - 1
    assert jitted.fwd.stats["replays"] > 0 and not jitted.off
    g2 = tg.grad(loss_of(st, n), (0, 1))(u_init() * 0.9, 0.05)    # a second gradient: replays
    assert vjp.stats["traces"] == 1
    assert_tree_close(g2, tg.grad(loss_of(burgers, n), (0, 1))(u_init() * 0.9, 0.05), tol=1e-10)


def test_step_jit_with_pytree_state_and_python_counter():
    @tg.step(snapshots=3, steps=40, jit=True)
    def two_field(state, a):
        u, v = state["u"], state["v"]
        return {"u": u + 0.05 * v, "v": v - 0.05 * a * np.sin(u), "k": state["k"] + 1}

    def loss(fun):
        def f(u0, a):
            s = {"u": u0, "v": np.zeros_like(u0), "k": 0}
            for _ in range(40):
                s = fun(s, a)
            return np.sum(s["u"] ** 2)
        return f

    u0 = np.linspace(0, 1, 5)
    with pytest.warns(RuntimeWarning, match="traced more than"):
        g = tg.grad(loss(two_field), (0, 1))(u0, 1.3)      # k changes every step: eager
    assert_tree_close(g, tg.grad(loss(two_field.__wrapped__), (0, 1))(u0, 1.3), tol=1e-10)
