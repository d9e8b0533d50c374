"""Eager (non-jit) tracegrad against NumPy and the peers (issue #2).

* overhead: gradient of a 100-op elementwise chain on a length-10 array
  (target < 0.5 ms, i.e. <= 5 us per op; autograd 1.03 ms, MyGrad 1.61 ms);
* throughput: value_and_grad of sum(sin(x)*exp(-x**2)+log1p(x**2)*tanh(x))
  at 1e6 elements (target <= autograd; NumPy forward alone is the floor).
"""
import numpy as np

from .common import need


def chain(np_, x):
    """100 elementwise operations: 25 rounds of (sin, *, tanh, +)."""
    for _ in range(25):
        x = np_.sin(x) * 0.9 + np_.tanh(x)
        x = x * 1.1
    return np_.sum(x)


def loss(np_, x):
    return np_.sum(np_.sin(x) * np_.exp(-x ** 2) + np_.log1p(x ** 2) * np_.tanh(x))


class Overhead:
    """Per-op cost of taping: tiny arrays, so Python overhead dominates."""

    params = ["numpy-forward", "tracegrad", "autograd", "mygrad", "jax-eager"]
    param_names = ["library"]

    def setup(self, lib):
        self.x = np.linspace(0.1, 1.0, 10)
        if lib == "numpy-forward":
            self.f = lambda: chain(np, self.x)
        elif lib == "tracegrad":
            import tracegrad as tg
            g = tg.grad(lambda x: chain(np, x))
            self.f = lambda: g(self.x)
        elif lib == "autograd":
            ag = need("autograd")
            anp = need("autograd.numpy")
            g = ag.grad(lambda x: chain(anp, x))
            self.f = lambda: g(self.x)
        elif lib == "mygrad":
            mg = need("mygrad")

            def f():
                t = mg.tensor(self.x)
                chain(mg, t).backward()
                return t.grad
            self.f = f
        else:
            jax = need("jax")
            jax.config.update("jax_enable_x64", True)
            jnp = need("jax.numpy")
            g = jax.grad(lambda x: chain(jnp, x))
            self.f = lambda: g(self.x).block_until_ready()
        self.f()

    def time_grad(self, lib):
        self.f()


class Throughput:
    """value_and_grad at 1e6 elements: memory-bandwidth and ufunc bound."""

    params = ["numpy-forward", "tracegrad", "autograd"]
    param_names = ["library"]
    timeout = 120

    def setup(self, lib):
        self.x = np.random.default_rng(0).uniform(-1, 1, 10 ** 6)
        if lib == "numpy-forward":
            self.f = lambda: loss(np, self.x)
        elif lib == "tracegrad":
            import tracegrad as tg
            vg = tg.value_and_grad(lambda x: loss(np, x))
            self.f = lambda: vg(self.x)
        else:
            ag = need("autograd")
            anp = need("autograd.numpy")
            vg = ag.value_and_grad(lambda x: loss(anp, x))
            self.f = lambda: vg(self.x)

    def time_value_and_grad(self, lib):
        self.f()

    def peakmem_value_and_grad(self, lib):
        self.f()
