"""The small-value machine: every opcode and data movement against NumPy,
scatters with repeated indices, reductions with NaN, small matmuls, integer
and boolean values, and a Lorenz RK4 gradient against eager tracegrad."""
import numpy as np
import pytest

import tracegrad as tg
from tracegrad.compile import jit

from test_kernels import BINARY, EDGE, UNARY


def _only_vm(jf):
    steps = [s for p in jf.plans().values() for plan in p for s in plan.describe()]
    assert steps and all(s.startswith(("vm[", "guard")) for s in steps), steps
    return steps


def _same(out, ref):
    for o, r in zip(out, ref):
        o, r = np.asarray(o), np.asarray(r)
        assert o.dtype == r.dtype and o.shape == r.shape
        if o.dtype.kind == "f":
            with np.errstate(invalid="ignore"):
                ok = (o == r) | (np.isnan(o) & np.isnan(r)) | (np.abs(o - r) <= 2e-15 * np.abs(r))
            assert ok.all(), (o[~ok], r[~ok])
        else:
            np.testing.assert_array_equal(o, r)


def _run(f, *args):
    with np.errstate(all="ignore"):
        ref = f(*args)
        jf = jit(f)
        jf(*args)
        out = jf(*args)
    _only_vm(jf)
    _same(out, ref)
    return jf


@pytest.mark.parametrize("name", UNARY)
def test_unary_opcodes(name):
    uf = getattr(np, name)
    _run(lambda x: (uf(x), uf(x[::-1])), np.array(EDGE))


@pytest.mark.parametrize("name", BINARY)
def test_binary_opcodes(name):
    uf = getattr(np, name)
    a = np.array(EDGE)
    x, y = np.meshgrid(a, a)
    _run(lambda x, y: (uf(x, y), uf(x[0], y), uf(y, 2.5)), x, y)


def test_select_clip_cast_power():
    x = np.array(EDGE)
    _run(lambda x: (np.where(x > 0, x, -x * 2), np.clip(x, -1.0, 2.0), (x > 0).astype(float),
                    x.astype(bool), x ** 3, np.power(x, x[::-1])), x)


KEYS = [(slice(None, None, -1), 2), (np.array([0, 2, 2, -1]),), (np.array([True, False, True]),),
        (Ellipsis, None, 1), (1, slice(1, None)), ((np.array([0, 1]), np.array([2, 0])))]


@pytest.mark.parametrize("key", KEYS)
def test_gathers_and_scatters(key):
    x = np.arange(12.0).reshape(3, 4) ** 1.5

    def f(x):
        return np.sum(np.sin(x[key]) * 2)
    jf = _run(tg.value_and_grad(f), x)
    assert jf.stats["replays"] == 1


def test_movement_ops():
    x = np.arange(24.0).reshape(2, 3, 4) * 0.5
    f = lambda x: (x.T * 1.0, np.concatenate([x, x[:, ::-1] * 2], axis=1) + 0.0,  # noqa: E731
                   np.broadcast_to(x[:, :1], (2, 3, 4)) - 1, np.moveaxis(x, 0, -1) * 1,
                   np.stack([x[0], x[1]], axis=-1) * 1, x.reshape(6, 4)[::2] + 1,
                   np.flip(x, 1) * 3, np.tile(x[0, 0], 2) * 1)
    _run(f, x)


def test_setitem_and_add_at_with_repeats():
    idx = np.array([0, 2, 2, 1, 0, 0])

    def f(x):
        y = np.zeros_like(x)
        y[idx] = x[:6] * 2          # repeated targets: last write wins
        np.add.at(y, idx, x[:6])    # repeated targets accumulate
        y[1:3] += x[3:5] ** 2
        return np.sum(y * np.cos(x))

    x = np.linspace(0.1, 1.0, 8)
    _run(tg.value_and_grad(f), x)


@pytest.mark.parametrize("red", ["sum", "max", "min", "prod"])
def test_reductions_with_nan(red):
    x = np.arange(12.0).reshape(3, 4) - 5.5
    x[1, 2] = np.nan
    fn = getattr(np, red)
    _run(lambda x: (fn(x), fn(x * 2, axis=0), fn(x, axis=1, keepdims=True), fn(x[0])), x)


@pytest.mark.parametrize("sa, sb", [((3, 4), (4, 2)), ((4,), (4, 2)), ((3, 4), (4,)),
                                     ((4,), (4,))])
def test_small_matmul(sa, sb):
    r = np.random.default_rng(0)
    a, b = r.standard_normal(sa), r.standard_normal(sb)
    with np.errstate(all="ignore"):
        jf = jit(lambda a, b: a @ b * 1.0)
        jf(a, b)
        out = jf(a, b)
    _only_vm(jf)
    np.testing.assert_allclose(out, a @ b, rtol=1e-14)


def test_integer_and_bool_values():
    x = np.arange(10.0)

    def f(x):
        m = x > 3
        i = np.argsort(-x)[:3].astype(np.int32)  # small integers pass through exactly
        return np.sum(np.where(m, x, 0.0)), m & (x < 8), m[::-1], i[::-1] * 1

    jf = jit(f)
    jf(x)
    _same(jf(x), f(x))


def lorenz_rk4(s, steps=200, dt=0.01):
    sigma, rho, beta = 10.0, 28.0, 8.0 / 3.0

    def lor(s):
        x, y, z = s[0], s[1], s[2]
        return np.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z])

    for _ in range(steps):
        k1 = lor(s)
        k2 = lor(s + dt / 2 * k1)
        k3 = lor(s + dt / 2 * k2)
        k4 = lor(s + dt * k3)
        s = s + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return np.sum(s ** 2)


def test_lorenz_gradient_in_the_machine():
    g = jit(tg.grad(lorenz_rk4))
    for s0 in (np.array([1.0, 1.0, 1.0]), np.array([0.5, -1.0, 20.0])):
        r = g(s0)
        r = g(s0)
        np.testing.assert_allclose(r, tg.grad(lorenz_rk4)(s0), rtol=1e-12)
    steps = _only_vm(g)
    assert len(steps) == 1
    n = int(steps[0][3:].split()[0])
    # getitem / reshape / copies alias buffer ranges: fewer instructions than nodes
    assert n < 150 * 200


def test_bool_bitwise_ops_and_int_bitwise_stays_numpy():
    x = np.arange(10.0) - 4.5
    f = lambda x: ((x > 0) & (x < 3), (x > 0) | ~(x < -2), (x > 1) ^ (x > 2))  # noqa: E731
    _run(f, x)
    ji = jit(lambda x, i: x[(i & 3) == 1] * 1.0)
    i = np.arange(10)
    np.testing.assert_array_equal(ji(x, i), x[(i & 3) == 1])
