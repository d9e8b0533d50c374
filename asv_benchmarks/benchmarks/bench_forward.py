"""Forward mode and higher order (issue #5): jacfwd / jacrev of an
elementwise-plus-matmul f: R^200 -> R^200, and hvp of a 1e5-dimensional
sum-of-tanh, against one forward evaluation and against JAX (peer)."""
import numpy as np

from .common import need

N = 200
A = np.random.default_rng(0).standard_normal((N, N)) / np.sqrt(N)


def f(np_, x):
    return np_.tanh(A @ np_.sin(x)) * x


def tanh_sum(np_, x):
    return np_.sum(np_.tanh(x) ** 2)


class Jacobians:
    params = (["forward-eval", "jacfwd", "jacrev"], ["tracegrad", "jax"])
    param_names = ["what", "library"]

    def setup(self, what, lib):
        self.x = np.random.default_rng(1).standard_normal(N)
        if lib == "tracegrad":
            import tracegrad as tg
            fn = {"forward-eval": lambda x: f(np, x), "jacfwd": tg.jacfwd(lambda x: f(np, x)),
                  "jacrev": tg.jacrev(lambda x: f(np, x))}[what]
            self.run = lambda: fn(self.x)
        else:
            jax = need("jax")
            jax.config.update("jax_enable_x64", True)
            jnp = need("jax.numpy")
            base = lambda x: f(jnp, x)  # noqa: E731
            fn = {"forward-eval": base, "jacfwd": jax.jacfwd(base),
                  "jacrev": jax.jacrev(base)}[what]
            self.run = lambda: fn(self.x).block_until_ready()
        self.run()

    def time_jacobian(self, what, lib):
        self.run()


class HVP:
    params = (["forward-eval", "hvp"], ["tracegrad", "jax"])
    param_names = ["what", "library"]

    def setup(self, what, lib):
        rng = np.random.default_rng(2)
        self.x = rng.standard_normal(10 ** 5)
        self.v = rng.standard_normal(10 ** 5)
        if lib == "tracegrad":
            import tracegrad as tg
            if what == "forward-eval":
                self.run = lambda: tanh_sum(np, self.x)
            else:
                self.run = lambda: tg.hvp(lambda x: tanh_sum(np, x), self.x, self.v)
        else:
            jax = need("jax")
            jax.config.update("jax_enable_x64", True)
            jnp = need("jax.numpy")
            g = jax.grad(lambda x: tanh_sum(jnp, x))
            if what == "forward-eval":
                self.run = lambda: tanh_sum(jnp, self.x).block_until_ready()
            else:
                self.run = lambda: jax.jvp(g, (self.x,), (self.v,))[1].block_until_ready()
        self.run()

    def time_hvp(self, what, lib):
        self.run()
