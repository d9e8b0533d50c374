"""Fused kernels: each scalar form against NumPy, reductions, broadcasting,
parallel loops, and the on-disk cache (new process, concurrent writers).

The arrays here are small, so ``jit`` is called with ``vm=False`` to force
kernels (small values otherwise go to the machine, tested in test_vm.py)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.compile import cache, jit
from tracegrad.compile.codegen import BOOL_ONLY, SCALAR

EDGE = [-np.inf, -3.5, -1.0, -0.5, -0.0, 0.0, 0.25, 0.5, 1.0, 2.0, 7.5, 1e300, np.inf, np.nan]
UNARY = [n for n, (k, _) in SCALAR.items()
         if hasattr(np, n) and isinstance(getattr(np, n), np.ufunc) and getattr(np, n).nin == 1
         and k in ("arith", "pred", "logic") and n not in BOOL_ONLY]
BINARY = [n for n, (k, _) in SCALAR.items()
          if hasattr(np, n) and isinstance(getattr(np, n), np.ufunc) and getattr(np, n).nin == 2
          and n not in ("true_divide",) and n not in BOOL_ONLY]


def _kernels(jf):
    return [s for p in jf.plans().values() for plan in p for s in plan.describe()
            if s.startswith("kernel")]


def _check(out, ref, dtype):
    out, ref = np.asarray(out), np.asarray(ref)
    assert out.dtype == ref.dtype
    if out.dtype.kind == "f":
        tol = 2e-15 if dtype == np.float64 else 1e-6
        both_nan = np.isnan(out) & np.isnan(ref)
        with np.errstate(invalid="ignore"):
            same = (out == ref) | both_nan | (np.abs(out - ref) <= tol * np.abs(ref))
        assert same.all(), (out[~same], ref[~same])
    else:
        np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", UNARY)
def test_unary_scalar_forms_match_numpy(name, dtype):
    uf = getattr(np, name)
    with np.errstate(over="ignore"):
        x = np.array(EDGE, dtype=dtype)
    f = lambda x: (uf(x), uf(x * np.asarray(2, dtype)))  # noqa: E731  (two ops: one kernel)
    with np.errstate(all="ignore"):
        ref = f(x)
        jf = jit(f, vm=False)
        jf(x)
        out = jf(x)
    assert _kernels(jf), "not fused"
    for o, r in zip(out, ref):
        _check(o, r, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", BINARY)
def test_binary_scalar_forms_match_numpy(name, dtype):
    uf = getattr(np, name)
    with np.errstate(over="ignore"):
        a = np.array(EDGE, dtype=dtype)
    x, y = np.meshgrid(a, a)
    f = lambda x, y: (uf(x, y), uf(y * np.asarray(2, dtype), x), uf(x, 1.5))  # noqa: E731
    with np.errstate(all="ignore"):
        ref = f(x, y)
        jf = jit(f, vm=False)
        jf(x, y)
        out = jf(x, y)
    assert _kernels(jf), "not fused"
    for o, r in zip(out, ref):
        _check(o, r, dtype)


def test_where_clip_cast_power():
    x = np.array(EDGE)
    f = lambda x: (np.where(x > 0, x ** 2, -x) + np.clip(x, -1.0, 2.0),  # noqa: E731
                   (x > 0.3).astype(np.float32) * 2.5, x ** 3 - x ** -2 + x ** 0.5 + x ** 2.5,
                   np.where(np.isnan(x), 1.0, x) * True)
    with np.errstate(all="ignore"):
        ref = f(x)
        jf = jit(f, vm=False)
        jf(x)
        out = jf(x)
    for o, r in zip(out, ref):
        o, r = np.asarray(o), np.asarray(r)
        assert o.dtype == r.dtype
        np.testing.assert_allclose(o, r, rtol=1e-15, equal_nan=True)


def test_float32_weak_literals_compare_in_float32():
    x = np.array([0.1, 0.2, 0.3], np.float32)
    f = lambda x: (x == 0.1) | (x * 2.0 > 0.4)  # noqa: E731
    jf = jit(f, vm=False)
    jf(x)
    np.testing.assert_array_equal(jf(x), f(x))


@pytest.mark.parametrize("shape, axis", [((5, 4), 0), ((5, 4), 1), ((5, 4), None), ((2, 3, 4), 1),
                                         ((2, 3, 4), (0, 2)), ((2, 3, 4), (1, 2)), ((7,), 0)])
@pytest.mark.parametrize("red", ["sum", "max", "min", "prod"])
def test_reductions_in_loops(shape, axis, red):
    x = np.random.default_rng(0).uniform(0.5, 1.5, shape)
    x.flat[3] = np.nan if red in ("max", "min") else x.flat[3]
    fn = getattr(np, red)
    f = lambda x: (fn(np.sin(x) * 2, axis=axis), fn(x * x, axis=axis, keepdims=True))  # noqa
    jf = jit(f, vm=False)
    jf(x)
    out = jf(x)
    assert _kernels(jf)
    for o, r in zip(out, f(x)):
        np.testing.assert_allclose(o, r, rtol=1e-13, equal_nan=True)
        assert np.shape(o) == np.shape(r)


def test_broadcast_gradient_accumulates_in_loop():
    def f(x, b, c):
        return np.sum(np.tanh(x * b + c) ** 2)

    x = np.random.default_rng(0).standard_normal((6, 1, 4))
    b = np.random.default_rng(1).standard_normal((5, 1))
    c = np.random.default_rng(2).standard_normal(())
    vg = tg.value_and_grad(f, argnums=(0, 1, 2))
    jf = jit(vg, vm=False)
    jf(x, b, c)
    (v, (gx, gb, gc)) = jf(x, b, c)
    (v0, (gx0, gb0, gc0)) = vg(x, b, c)
    for a, r in [(v, v0), (gx, gx0), (gb, gb0), (gc, gc0)]:
        np.testing.assert_allclose(a, r, rtol=1e-12)
    ks = _kernels(jf)
    assert any("nd" in k and "red" in k for k in ks), ks


def test_parallel_kernels_match():
    f = tg.value_and_grad(lambda x: np.sum(np.sin(x) * np.exp(-x ** 2) + np.log1p(x ** 2)))
    x = np.random.default_rng(0).standard_normal(10_001)
    jp = jit(f, parallel=True, vm=False)
    jp(x)
    v, g = jp(x)
    v0, g0 = f(x)
    assert any("/par" in k for k in _kernels(jp))
    np.testing.assert_allclose(v, v0, rtol=1e-12)
    np.testing.assert_allclose(g, g0, rtol=1e-12)


def test_non_contiguous_inputs():
    f = jit(lambda x: np.sum(np.sin(x) * x), vm=False)
    x = np.random.default_rng(0).standard_normal((6, 8))
    f(x)
    for y in (x[:, ::2], x.T[:4], np.asfortranarray(x)):
        np.testing.assert_allclose(f(np.ascontiguousarray(y)), f(y), rtol=1e-14)
        np.testing.assert_allclose(f(y), np.sum(np.sin(y) * y), rtol=1e-12)


# --- the disk cache ----------------------------------------------------------------------
_PROG = textwrap.dedent("""
    import sys, time, json
    import numpy as np
    t0 = time.perf_counter()
    import tracegrad as tg
    from tracegrad.compile import jit, cache
    t1 = time.perf_counter()
    f = jit(tg.value_and_grad(lambda x: np.sum(np.sin(x) * np.exp(-x ** 2) + x ** 3)), vm=False,
            compile_after=0)
    x = np.linspace(-1, 1, 101)
    v, g = f(x)
    t2 = time.perf_counter()
    fns = [s.fn for p in f.plans().values() for pl in p for s in pl.steps if hasattr(s, "fn")
           and hasattr(s.fn, "stats")]
    hits = sum(sum(fn.stats.cache_hits.values()) for fn in fns)
    misses = sum(sum(fn.stats.cache_misses.values()) for fn in fns)
    print(json.dumps({"hits": hits, "misses": misses, "first_call": t2 - t1,
                      "v": float(v), "written": cache.STATS["written"]}))
""")


def _run(env_dir, n=1):
    env = dict(os.environ, TRACEGRAD_CACHE_DIR=str(env_dir))
    procs = [subprocess.Popen([sys.executable, "-c", _PROG], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    import json
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def test_disk_cache_new_process_and_concurrent_writers(tmp_path):
    first = _run(tmp_path, n=2)  # two processes compile the same kernel at once
    assert all(r["misses"] >= 1 for r in first)
    assert first[0]["v"] == first[1]["v"]
    files = [f for f in os.listdir(tmp_path / "kernels") if f.endswith(".py")]
    assert len(files) == 1 and not [f for f in os.listdir(tmp_path / "kernels")
                                    if f.startswith(".tmp")]
    (again,) = _run(tmp_path)  # a new process loads the compiled kernel from disk
    assert again["hits"] >= 1 and again["misses"] == 0 and again["written"] == 0
    assert again["v"] == first[0]["v"]


def test_cache_key_changes_with_source(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACEGRAD_CACHE_DIR", str(tmp_path))
    a = "def kernel(x):\n    return x + 1\n"
    b = "def kernel(x):\n    return x + 2\n"
    assert cache.key_of(a) != cache.key_of(b)
    assert cache.load(a)(1) == 2 and cache.load(b)(1) == 3
    assert len([f for f in os.listdir(tmp_path / "kernels") if f.endswith(".py")]) == 2


# --- the cost model's alternative: NumPy calls on blocks -----------------------------------
def test_blocked_numpy_executor_matches():
    def f(x, b):
        y = np.where(x > 0.2, np.exp(-x ** 2), np.tanh(x) * b) + np.clip(x, -0.5, 0.5)
        return np.sum(np.sin(y) * np.log1p(x * x)) + np.max(y) - np.min(x * b)

    r = np.random.default_rng(0)
    x, b = r.standard_normal(20_001), np.float64(0.7)
    vg = tg.value_and_grad(f, argnums=(0, 1))
    jb = jit(vg, executor="blocked", vm=False)
    jb(x, b)
    (v, (gx, gb)) = jb(x * 0.9, b)
    (v0, (gx0, gb0)) = vg(x * 0.9, b)
    assert any(k.startswith("blocked") for k in
               [s for p in jb.plans().values() for pl in p for s in pl.describe()])
    np.testing.assert_allclose(v, v0, rtol=1e-12)
    np.testing.assert_allclose(gx, gx0, rtol=1e-12)
    np.testing.assert_allclose(gb, gb0, rtol=1e-12)


def test_cost_model_table_and_choice():
    from tracegrad.compile import costmodel
    t = costmodel.table()
    assert {"exp", "sin", "multiply", "__call__"} <= set(t)
    fused, blocked = costmodel.costs(["multiply", "add", "multiply"])
    assert fused < blocked  # arithmetic is always better fused


# --- rt's vectorisable float64 forms -------------------------------------------------------
def one_op_kernel(name, dtype=np.float64):
    """The flat kernel computing ``name`` of one array: ``kernel(n, x, out)``."""
    from tracegrad.compile.codegen import KernelIR, Operand, kernel_source
    dt = np.dtype(dtype)
    ir = KernelIR((1,))
    ir.inputs = [("full", dt, (1,))]
    ir.ops = [(name, [Operand("in", 0, dt)], dt, {})]
    ir.stores = [0]
    return cache.load(kernel_source(ir)[0])


def _ulps(a, b):
    with np.errstate(all="ignore"):
        d = np.abs(a - b) / np.spacing(np.abs(b))
    d[(a == b) | (np.isnan(a) & np.isnan(b))] = 0
    return d


# signed zeros, infinities, NaN, overflow and underflow to zero/subnormals
SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 709.78, 709.79, 710.0, -708.39, -708.4,
                    -745.13, -745.14, -746.0, 1e-300, -1e-300, 1e300, -1e300, 22.1, 1.0, -1.0,
                    5e-324, 1e-310, 2.2250738585072014e-308, 1.7976931348623157e308])
# where the forms switch: within the ulp bound
EDGES = np.array([22.0, 0.5493061443340548, 0.5493061443340549, -0.55, 354.9, -354.9])


@pytest.mark.parametrize("name, bound", [("exp", 1.0), ("tanh", 2.0), ("log", 1.0),
                                         ("log1p", 1.0)])
def test_rt_forms_within_ulps_of_numpy(name, bound):
    r = np.random.default_rng(1)
    x = np.concatenate([r.uniform(-746, 710, 200_000), r.uniform(-30, 30, 200_000),
                        r.uniform(-1, 1, 100_000), np.exp(r.uniform(-745, 709, 200_000)),
                        r.uniform(0.5, 2.0, 100_000), -np.exp(r.uniform(-700, 0, 50_000)),
                        EDGES, SPECIAL])
    o = np.empty_like(x)
    one_op_kernel(name)(x.size, x, o)
    with np.errstate(all="ignore"):
        ref = getattr(np, name)(x)
    assert _ulps(o, ref).max() <= bound
    # signed zeros, infinities and NaN exactly (the first five SPECIAL values)
    k = len(SPECIAL)
    np.testing.assert_array_equal(o[-k:-k + 5], ref[-k:-k + 5])
    nan = np.isnan(ref)
    assert np.array_equal(np.isnan(o), nan)
    assert np.array_equal(np.signbit(o[~nan]), np.signbit(ref[~nan]))


def test_kernels_use_the_vectorisable_forms_for_float64_only():
    from tracegrad.compile.codegen import KernelIR, Operand, kernel_source
    for dt, expect in ((np.float64, True), (np.float32, False)):
        ir = KernelIR((100,))
        ir.inputs = [("full", np.dtype(dt), (100,))]
        ir.ops = [("exp", [Operand("in", 0, np.dtype(dt))], np.dtype(dt), {}),
                  ("tanh", [Operand("op", 0, np.dtype(dt))], np.dtype(dt), {})]
        ir.stores = [1]
        src = kernel_source(ir)[0]
        assert ("rt.exp(" in src and "rt.tanh(" in src) is expect


@pytest.mark.parametrize("name", ["sin", "cos"])
def test_fast_trig_within_one_ulp_and_flags_its_range(name):
    from tracegrad.compile.codegen import KernelIR, Operand, kernel_source
    from tracegrad.compile.fuse import _fast_trig
    f64 = np.dtype(np.float64)
    ir = KernelIR((1,))
    ir.inputs = [("full", f64, (1,))]
    ir.ops = [(name, [Operand("in", 0, f64)], f64, {})]
    ir.stores = [0]
    kern = cache.load(kernel_source(_fast_trig(ir))[0])
    r = np.random.default_rng(2)
    inside = np.concatenate([r.uniform(-10, 10, 200_000), r.uniform(-1.6e6, 1.6e6, 200_000),
                             np.pi / 2 * np.arange(-3000, 3000), np.array([0.0, -0.0, 1e-310]),
                             np.exp(r.uniform(-700, 0, 50_000)) * np.sign(r.standard_normal(50_000))])
    o, flag = np.empty_like(inside), np.empty(1)
    kern(inside.size, inside, o, flag)
    ref = getattr(np, name)(inside)
    assert flag[0] == 0.0
    assert _ulps(o, ref).max() <= 1.0
    assert np.array_equal(np.signbit(o), np.signbit(ref))
    for bad in (1.7e6, -1e300, np.inf, np.nan):
        kern(3, np.array([0.5, bad, 0.25]), np.empty(3), flag)
        assert flag[0] == 1.0


def test_fast_trig_kernel_reruns_with_libm_out_of_range():
    f = tg.value_and_grad(lambda x: np.sum(np.sin(x) * np.cos(2.0 * x) + x ** 2))
    jf = jit(f, vm=False)
    x = np.linspace(-3.0, 3.0, 5001)
    for s in (1.0, 1e7, 0.5, 1e100):
        v, g = jf(x * s)
        v0, g0 = f(x * s)
        np.testing.assert_allclose(v, v0, rtol=1e-12)
        np.testing.assert_allclose(g, g0, rtol=1e-12, atol=1e-12 * np.max(np.abs(g0)))
    steps = [st for ps in jf.plans().values() for p in ps for st in p.steps
             if hasattr(st, "flagged")]
    assert steps and all(st.flagged and st.safe is not None for st in steps)
