"""Checkpointed gradients of a long simulation (issue #7).

Gradient of ``sum(u_T ** 2)`` with respect to the initial field and the
viscosity, through T = 5,000 explicit steps of the 1-D viscous Burgers
equation on N = 10,000 periodic points (``np.roll`` central differences; the
model of ``asv_benchmarks/peers/burgers_peers.py``).

* ``tracegrad-step``: the user's own loop, step decorated with
  ``tg.step(snapshots=20, steps=T)`` (offline binomial schedule);
* ``tracegrad-online``: the same without ``steps`` (online schedule);
* ``tracegrad-jit``: ``tg.step(..., jit=True)``: the backward walk replays the
  step and its pullback compiled by ``tracegrad.jit`` (compiled in ``setup``);
* ``numpy-forward``: the forward simulation alone, the floor;
* ``autograd``: autograd's eager full tape (840 MB, 4.1-5.2 s in the issue);
* ``jax-scan-checkpoint``: ``jax.lax.scan`` of ``jax.checkpoint``-ed blocks of
  ``sqrt(T)`` steps, compiled (the compilation is in ``setup``).

Targets: peak extra memory <= 3 MB, time <= autograd's.
``BurgersCheckpointStats`` tracks tracegrad's own numbers: the tracemalloc
peak of one gradient and the step evaluations, which must equal the Revolve
count ``t(T, s) + T + 1`` (22,977 for T = 5,000, s = 20).

Measured on the shared 2-core development machine (several times slower than
the machine behind the issue's autograd figure), one gradient each, every
configuration in a fresh process of one ``burgers_peers.py all`` session;
memory is the growth of the peak RSS during the first gradient:

====================  ========  ============  =================================
configuration         time [s]  peak RSS +MB  notes
====================  ========  ============  =================================
numpy forward only        0.66           0.3
tracegrad-step           12.7            0.7  tracemalloc peak 3.09 MB
tracegrad-jit             6.39           0.0  tracemalloc peak 2.45 MB
autograd, full tape      18.5         1302
jax nested scan           2.01          76    XLA temp 23 MB, compiled
====================  ========  ============  =================================

Both tracegrad rows evaluate the step 22,977 times (4.6 per step). An
earlier, more loaded session also measured tracegrad's full tape (18.9 s,
4.5 GB), PyTorch eager (21.7 s, 4.0 GB) and JAX scan with one checkpoint per
step (3.75 s, 429 MB); autograd took 31.4 s there and tracegrad-step 13.3 s.
Of tracegrad-step's 3.09 MB, 1.6 MB are the 20 snapshots and about 0.8 MB
the core's tape of the one step being reversed (``np.roll`` is recorded as an
index gather, and products keep their results); ``jit=True`` replaces that
tape with a compiled plan.
"""
import numpy as np

from .common import need

N, T, S = 10_000, 5_000, 20
NU = 1e-4
DX = 1.0 / N
DT = 0.1 * DX


def make_step(xp):
    def step(u, nu):
        up = xp.roll(u, -1)
        um = xp.roll(u, 1)
        return u - DT * u * (up - um) / (2 * DX) + nu * DT * (up - 2 * u + um) / DX ** 2
    return step


def initial(xp=np):
    x = xp.arange(N) / N
    return 0.5 + xp.sin(2 * np.pi * x)


def _loop(step, u, nu, t=None):
    for _ in range(T if t is None else t):
        u = step(u, nu)
    return u


class BurgersGradient:
    """Time and peak memory (RSS) of one gradient."""

    params = ["numpy-forward", "tracegrad-step", "tracegrad-online", "tracegrad-jit",
              "autograd", "jax-scan-checkpoint"]
    param_names = ["impl"]
    timeout = 1800
    number = 1
    repeat = 1

    def setup(self, impl):
        if impl == "numpy-forward":
            step = make_step(np)
            u0 = initial()
            self.f = lambda: np.sum(_loop(step, u0, NU) ** 2)
        elif impl.startswith("tracegrad"):
            import warnings

            import tracegrad as tg
            steps = None if impl == "tracegrad-online" else T
            stepper = tg.step(make_step(np), snapshots=S, steps=steps, progress=False,
                              jit=impl == "tracegrad-jit")
            g = tg.grad(lambda u0, nu, t=None: np.sum(_loop(stepper, u0, nu, t) ** 2),
                        argnums=(0, 1))
            u0 = initial()
            if impl == "tracegrad-jit":               # compile outside the timing
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    g(u0, NU, 4)
            self.f = lambda: g(u0, NU)
        elif impl == "autograd":
            ag = need("autograd")
            anp = need("autograd.numpy")
            step = make_step(anp)
            g = ag.grad(lambda u0, nu: anp.sum(_loop(step, u0, nu) ** 2), argnum=(0, 1))
            u0 = initial()
            self.f = lambda: g(u0, NU)
        elif impl == "jax-scan-checkpoint":
            jax = need("jax")
            jnp = need("jax.numpy")
            jax.config.update("jax_enable_x64", True)
            step = make_step(jnp)
            inner = int(round(T ** 0.5))
            outer, rest = divmod(T, inner)

            @jax.checkpoint
            def block(u, nu):
                return jax.lax.scan(lambda v, _: (step(v, nu), None), u, None, length=inner)[0]

            def loss(u0, nu):
                u = jax.lax.scan(lambda v, _: (block(v, nu), None), u0, None, length=outer)[0]
                return jnp.sum(_loop(step, u, nu, rest) ** 2)

            g = jax.jit(jax.grad(loss, argnums=(0, 1)))
            u0 = jnp.asarray(initial())
            jax.block_until_ready(g(u0, NU))             # compile outside the timing
            self.f = lambda: jax.block_until_ready(g(u0, NU))
        else:
            raise NotImplementedError(impl)

    def time_gradient(self, impl):
        self.f()

    def peakmem_gradient(self, impl):
        self.f()


class BurgersCheckpointStats:
    """tracegrad's own numbers for one checkpointed gradient."""

    timeout = 1800

    def setup(self):
        import tracegrad as tg
        self.stepper = tg.step(make_step(np), snapshots=S, steps=T, progress=False)
        stepper = self.stepper
        self.g = tg.grad(lambda u0, nu: np.sum(_loop(stepper, u0, nu) ** 2), argnums=(0, 1))
        self.u0 = initial()

    def track_peak_extra_memory(self):
        import tracemalloc
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            self.g(self.u0, NU)
            return (tracemalloc.get_traced_memory()[1] - base) / 1e6
        finally:
            tracemalloc.stop()

    track_peak_extra_memory.unit = "MB"

    def track_step_evaluations(self):
        self.g(self.u0, NU)
        return self.stepper.stats.evaluations

    track_step_evaluations.unit = "step evaluations"
