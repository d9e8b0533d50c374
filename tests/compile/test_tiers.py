"""A fused group runs as NumPy calls until its plan is reused, then as its
compiled kernel (checked against NumPy on the run that compiles it)."""
import warnings

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.compile import cache, fuse, jit


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACEGRAD_CACHE_DIR", str(tmp_path))
    cache.clear_memory()
    yield tmp_path
    cache.clear_memory()


def _kernel_steps(jf):
    return [s for ps in jf.plans().values() for p in ps for s in p.steps
            if isinstance(s, fuse.KernelStep)]


def loss(w, b, x):
    # nd group: a (40, 30) loop with a broadcast bias and partial reductions
    h = np.tanh(x * w + b)
    return np.sum(np.exp(-h ** 2) * np.log1p(x ** 2)) + 0.5 * np.sum(b ** 2)


def _data(seed):
    r = np.random.default_rng(seed)
    return r.standard_normal((40, 30)), r.standard_normal((1, 30)), r.standard_normal((40, 30))


def test_numpy_until_reused_then_compiled(fresh_cache):
    vg = tg.value_and_grad(loss, argnums=(0, 1))
    jf = jit(vg, vm=False)
    calls = [_data(k) for k in range(5)]
    states = []
    for k, args in enumerate(calls):
        (v, (gw, gb)) = jf(*args)
        (v0, (gw0, gb0)) = vg(*args)
        np.testing.assert_allclose(v, v0, rtol=1e-12)
        np.testing.assert_allclose(gw, gw0, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(gb, gb0, rtol=1e-12, atol=1e-15)
        states.append([s.compiled for s in _kernel_steps(jf)])
    assert states[0] and not any(states[0])          # traced: NumPy calls only
    assert not any(states[1])                        # first replay: still NumPy
    assert all(states[2]) and all(states[4])         # second replay compiled them
    assert "NumPy until reused" not in " ".join(
        d for ps in jf.plans().values() for p in ps for d in p.describe())
    # the kernels are now on disk: a new jit of the same program uses them at once
    cache.clear_memory()
    jf2 = jit(vg, vm=False)
    jf2(*calls[0])
    assert all(s.compiled for s in _kernel_steps(jf2))


def test_flat_group_with_reductions(fresh_cache):
    f = tg.value_and_grad(lambda x: np.sum(np.sin(x) * x) + np.max(np.cos(x) * x))
    jf = jit(f, vm=False, compile_after=1)
    x = np.linspace(-2, 2, 5001)
    for k in range(3):
        v, g = jf(x + 0.1 * k)
        v0, g0 = f(x + 0.1 * k)
        np.testing.assert_allclose(v, v0, rtol=1e-12)
        np.testing.assert_allclose(g, g0, rtol=1e-12, atol=1e-15)
    assert all(s.compiled for s in _kernel_steps(jf))


def test_compile_after_zero_compiles_while_lowering(fresh_cache):
    jf = jit(lambda x: np.sum(np.sin(x) * x), vm=False, compile_after=0)
    jf(np.linspace(0, 1, 2000))
    assert all(s.compiled for s in _kernel_steps(jf))


def test_a_kernel_that_disagrees_is_dropped(fresh_cache, monkeypatch):
    def wrong(source, name="kernel"):
        def kernel(*args):
            args[-1][...] = 12345.0  # a corrupt reduction
        return kernel
    monkeypatch.setattr(cache, "load", wrong)
    f = lambda x: np.sum(np.sin(x) * x)  # noqa: E731
    jf = jit(f, vm=False, compile_after=1)
    x = np.linspace(0, 1, 3000)
    jf(x)
    with pytest.warns(RuntimeWarning, match="disagrees with NumPy"):
        out = jf(x)
    assert out == pytest.approx(f(x), rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert jf(x * 2) == pytest.approx(f(x * 2), rel=1e-12)
    assert not any(s.compiled for s in _kernel_steps(jf))
