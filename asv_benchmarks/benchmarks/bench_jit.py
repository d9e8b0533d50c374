"""tracegrad.jit against eager tracegrad, NumPy and JAX (issue #6).

* ``ValueAndGrad``: value_and_grad of sum(sin(x)*exp(-x**2)+log1p(x**2)*tanh(x))
  at 1e6 and 1e7 float64 (targets: <= JAX jit(value_and_grad); NumPy's
  forward pass alone is the reference floor);
* ``Poly8``: value_and_grad of sum(poly8(x)**2), Horner, at 1e7
  (target <= 1.3x one NumPy forward);
* ``Lorenz``: grad of 1,000 RK4 steps of Lorenz-63 (3-element state, the loop
  inside the function): jit steady state >= 50x faster than eager tracegrad,
  first call (trace + lowering, kernels from the disk cache) <= 5 s;
* ``MLP``: grad of a 784-256-10 tanh MLP softmax cross-entropy, batch 256;
* ``Compile``: compiling a 20-op fused group in a warm process (<= 0.2 s),
  and loading it from the disk cache in a new process (<= 20 ms; the
  one-time numba initialisation of a new process is tracked separately).

Run with asv, or ``python asv_benchmarks/quick.py jit``.
"""
import itertools
import json
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

from .common import need

LIBS = ["numpy-forward", "tracegrad-eager", "tracegrad-jit", "jax-jit"]


def loss(np_, x):
    return np_.sum(np_.sin(x) * np_.exp(-x ** 2) + np_.log1p(x ** 2) * np_.tanh(x))


COEF = [0.3, -1.2, 0.7, 2.0, -0.4, 0.05, 1.1, -0.9, 0.25]


def poly8(x):
    p = COEF[0]
    for c in COEF[1:]:
        p = p * x + c
    return p


def poly_loss(np_, x):
    return np_.sum(poly8(x) ** 2)


def _jax():
    jax = need("jax")
    jax.config.update("jax_enable_x64", True)
    return jax, need("jax.numpy")


def _setup(lib, fun, x):
    """A zero-argument callable for ``lib`` computing fun's value (and gradient)."""
    if lib == "numpy-forward":
        return lambda: fun(np, x)
    if lib == "tracegrad-eager":
        import tracegrad as tg
        vg = tg.value_and_grad(lambda x: fun(np, x))
        return lambda: vg(x)
    if lib == "tracegrad-jit":
        import tracegrad as tg
        vg = tg.jit(tg.value_and_grad(lambda x: fun(np, x)))
        for _ in range(3):  # trace, replay on NumPy calls, compile the kernels
            vg(x)
        return lambda: vg(x)
    jax, jnp = _jax()
    vg = jax.jit(jax.value_and_grad(lambda x: fun(jnp, x)))
    xj = jnp.asarray(x)
    vg(xj)[1].block_until_ready()
    return lambda: vg(xj)[1].block_until_ready()


class ValueAndGrad:
    params = ([10 ** 6, 10 ** 7], LIBS)
    param_names = ["n", "library"]
    timeout = 600

    def setup(self, n, lib):
        self.x = x = np.random.default_rng(0).standard_normal(n)
        self.f = _setup(lib, loss, x)

    def time_value_and_grad(self, n, lib):
        self.f()


class FirstCall:
    """A new jit each time: trace and lower, the fused group on NumPy calls
    until the plan is reused (compare with ValueAndGrad's tracegrad-eager)."""
    params = [10 ** 6, 10 ** 7]
    param_names = ["n"]
    timeout = 600

    def setup(self, n):
        self.x = np.random.default_rng(0).standard_normal(n)

    def time_first_call_value_and_grad(self, n):
        import tracegrad as tg
        tg.jit(tg.value_and_grad(lambda x: loss(np, x)))(self.x)


class Transcendental:
    """One float64 function over 1e6 elements, forward only: NumPy's ufunc
    against a jitted kernel (exp/log/log1p/tanh/sin as vector code), so the
    per-element costs quoted in docs/jit.md can be rerun (ms per 1e6 = ns
    per element)."""
    params = (["exp", "log", "log1p", "tanh", "sin"], ["numpy", "tracegrad-jit"])
    param_names = ["function", "library"]

    def setup(self, name, lib):
        fn = getattr(np, name)
        x = np.random.default_rng(0).uniform(0.1, 3.0, 10 ** 6)
        if lib == "numpy":
            out = np.empty_like(x)
            self.f = lambda: fn(x, out=out)
            return
        import tracegrad as tg
        # two operations, so that the group is fused rather than left to NumPy
        j = tg.jit(lambda x: fn(x) * 1.5, compile_after=0, parallel=False)
        j(x)
        self.f = lambda: j(x)

    def time_function(self, name, lib):
        self.f()


class Poly8:
    params = ([10 ** 7], LIBS)
    param_names = ["n", "library"]
    timeout = 600

    def setup(self, n, lib):
        x = np.random.default_rng(0).uniform(-1, 1, n)
        self.f = _setup(lib, poly_loss, x)

    def time_value_and_grad(self, n, lib):
        self.f()


SIGMA, RHO, BETA, DT = 10.0, 28.0, 8.0 / 3.0, 0.01


def lorenz_loss(s, np_=np, steps=1000):
    def lor(s):
        x, y, z = s[0], s[1], s[2]
        return np_.stack([SIGMA * (y - x), x * (RHO - z) - y, x * y - BETA * z])

    for _ in range(steps):
        k1 = lor(s)
        k2 = lor(s + DT / 2 * k1)
        k3 = lor(s + DT / 2 * k2)
        k4 = lor(s + DT * k3)
        s = s + DT / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return np_.sum(s ** 2)


class Lorenz:
    """No JAX row: jax.jit of this function (a 1,000-step Python loop, unrolled
    by tracing) had not finished compiling after 30 minutes and 7 GB here; the
    JAX idiom, lax.fori_loop, is a different program."""

    params = ["tracegrad-eager", "tracegrad-jit"]
    param_names = ["library"]
    timeout = 600

    def setup(self, lib):
        import tracegrad as tg
        s0 = np.array([1.0, 1.0, 1.0])
        g = tg.grad(lorenz_loss)
        if lib == "tracegrad-jit":
            g = tg.jit(g)
            for _ in range(3):
                g(s0)
        self.f = lambda: g(s0)

    def time_grad(self, lib):
        self.f()



class LorenzFirstCall:
    """A new jit each time: trace, lower, run once (the machine comes from
    numba's cache after the first run)."""
    timeout = 600

    def time_first_call(self):
        import tracegrad as tg
        tg.jit(tg.grad(lorenz_loss))(np.array([1.0, 1.0, 1.0]))


def mlp_loss(np_, p, x, y1h):
    h = np_.tanh(x @ p["w1"] + p["b1"])
    z = h @ p["w2"] + p["b2"]
    z = z - np_.max(z, axis=1, keepdims=True)
    logp = z - np_.log(np_.sum(np_.exp(z), axis=1, keepdims=True))
    return -np_.sum(logp * y1h) / x.shape[0]


def mlp_data(batch=256):
    r = np.random.default_rng(0)
    p = {"w1": r.standard_normal((784, 256)) * 0.05, "b1": np.zeros(256),
         "w2": r.standard_normal((256, 10)) * 0.05, "b2": np.zeros(10)}
    x = r.standard_normal((batch, 784))
    y1h = np.eye(10)[r.integers(0, 10, batch)]
    return p, x, y1h


class MLP:
    params = ["tracegrad-eager", "tracegrad-jit", "jax-jit"]
    param_names = ["library"]
    timeout = 300

    def setup(self, lib):
        p, x, y = mlp_data()
        if lib.startswith("tracegrad"):
            import tracegrad as tg
            g = tg.grad(lambda p, x, y: mlp_loss(np, p, x, y))
            if lib == "tracegrad-jit":
                g = tg.jit(g)
                for _ in range(3):
                    g(p, x, y)
            self.f = lambda: g(p, x, y)
        else:
            jax, jnp = _jax()
            g = jax.jit(jax.grad(lambda p, x, y: mlp_loss(jnp, p, x, y)))
            pj = {k: jnp.asarray(v) for k, v in p.items()}
            xj, yj = jnp.asarray(x), jnp.asarray(y)
            jax.block_until_ready(g(pj, xj, yj))
            self.f = lambda: jax.block_until_ready(g(pj, xj, yj))

    def time_grad(self, lib):
        self.f()


# --- compile latency ---------------------------------------------------------------
_salt = itertools.count()


def chain_source(nops=20, salt=0.0):
    """Kernel source of a 20-op group (sin/exp/arithmetic chain, one sum)."""
    from tracegrad.compile.codegen import KernelIR, Operand, kernel_source
    f64 = np.dtype(np.float64)
    ir = KernelIR((1000,))
    ir.inputs = [("full", f64, (1000,))]
    prev = Operand("in", 0, f64)
    names = ["sin", "multiply", "add", "exp", "multiply", "subtract", "tanh", "add"]
    for j in range(nops):
        name = names[j % len(names)]
        if name in ("sin", "exp", "tanh"):
            args = [prev]
        else:
            args = [prev, Operand("lit", dtype=f64, value=0.5 + salt + j, weak=True)]
        ir.ops.append((name, args, f64, {}))
        prev = Operand("op", j, f64)
    ir.stores = [nops - 1]
    ir.reds = [(nops - 2, "sum", (0,), f64)]
    return kernel_source(ir)[0]


def _call(fn):
    x = np.linspace(-1, 1, 1000)
    fn(1000, x, np.empty(1000), np.empty(1))


_LOAD = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    import numpy as np
    from tracegrad.compile import cache
    src_warm, src = json.loads(sys.argv[1])
    x = np.linspace(-1, 1, 1000)
    t1 = time.perf_counter()
    cache.load(src_warm)(1000, x, np.empty(1000), np.empty(1))  # numba's one-time start-up
    t2 = time.perf_counter()
    fn = cache.load(src)
    fn(1000, x, np.empty(1000), np.empty(1))
    t3 = time.perf_counter()
    print(json.dumps({"init": t2 - t1, "load": t3 - t2,
                      "hits": sum(fn.stats.cache_hits.values())}))
""")


class Compile:
    timeout = 600

    def setup(self):
        self.dir = tempfile.mkdtemp(prefix="tg-bench-cache-")
        os.environ["TRACEGRAD_CACHE_DIR"] = self.dir
        from tracegrad.compile import cache
        _call(cache.load(chain_source(salt=-1.0)))  # numba warm in this process
        self.src_warm = chain_source(salt=-2.0)
        self.src = chain_source(salt=-3.0)
        _call(cache.load(self.src_warm))
        _call(cache.load(self.src))

    def teardown(self):
        os.environ.pop("TRACEGRAD_CACHE_DIR", None)

    def time_compile_20op_group_warm(self):
        from tracegrad.compile import cache
        _call(cache.load(chain_source(salt=float(next(_salt)))))

    def _load(self):
        env = dict(os.environ, TRACEGRAD_CACHE_DIR=self.dir)
        out = subprocess.run([sys.executable, "-c", _LOAD, json.dumps([self.src_warm, self.src])],
                             env=env, capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    def track_load_20op_group_from_disk_new_process(self):
        r = self._load()
        assert r["hits"] >= 1
        return r["load"] * 1e3

    track_load_20op_group_from_disk_new_process.unit = "ms"

    def track_numba_startup_new_process(self):
        return self._load()["init"] * 1e3

    track_numba_startup_new_process.unit = "ms"
