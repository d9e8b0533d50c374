"""The issue #7 Burgers benchmark under tracegrad and its peers, side by side.

Gradient of ``J(u0, nu) = sum(u_T ** 2)`` through ``T`` explicit steps of the
viscous Burgers equation on ``N`` periodic points, the same NumPy formulas in
every library:

========================  ======================================================
``numpy``                 forward only (the floor)
``tracegrad``             ``tg.step(snapshots=s, steps=T)``, the user's own loop
``tracegrad-jit``         the same with ``jit=True`` (compiled reversal)
``tracegrad-full``        tracegrad without checkpointing (full tape)
``autograd``              autograd's eager full tape
``jax-scan-remat``        ``lax.scan`` over ``jax.checkpoint(step)``: one saved
                          state per step
``jax-scan-nested``       two nested scans, the inner one checkpointed
                          (``sqrt(T)`` blocks): about ``2 sqrt(T)`` saved states
``torch``                 PyTorch eager autograd (full tape)
========================  ======================================================

Each configuration runs in a fresh interpreter. Memory is the growth of the
peak resident set (``ru_maxrss``) during the first gradient, from the resident
set just before it (JAX's buffers are not visible to tracemalloc; for JAX that
first call includes compilation, so XLA's own ``memory_analysis()`` of the
compiled gradient is reported too). Time is the best of ``--repeat`` further
gradients (JAX: compiled). tracegrad also reports tracemalloc's peak of one
more gradient and its step statistics.

Usage (autograd, JAX and PyTorch live in a separate environment; tracegrad is
never installed there)::

    python burgers_peers.py all --peers-python /work/peers/bin/python
    python burgers_peers.py tracegrad --n 10000 --t 5000 --s 20

Run ``all`` on an otherwise idle machine: the timings are compared with each
other, not with numbers from elsewhere.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

N, T, S = 10_000, 5_000, 20
NU = 1e-4

PEERS = ("autograd", "jax-scan-remat", "jax-scan-nested", "torch")
OURS = ("numpy", "tracegrad", "tracegrad-jit", "tracegrad-full")


def params(n, t):
    dx = 1.0 / n
    dt = 0.1 * dx          # |u| <= 1.5: CFL 0.15; viscous number NU dt / dx^2 = 0.1
    return dx, dt


def initial(np, n):
    x = np.arange(n) / n
    return 0.5 + np.sin(2 * np.pi * x)


def make_step(np, dx, dt):
    def step(u, nu):
        up = np.roll(u, -1)
        um = np.roll(u, 1)
        return u - dt * u * (up - um) / (2 * dx) + nu * dt * (up - 2 * u + um) / dx ** 2
    return step


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _timed(fn, repeat):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run_one(name, n, t, s, repeat):
    """Run one configuration in this process and return its measurements."""
    dx, dt = params(n, t)
    res = {"name": name, "n": n, "t": t}
    if name in OURS:
        import numpy as np
        step = make_step(np, dx, dt)
        u0 = initial(np, n)
        if name == "numpy":
            def fn(tt=t):
                u = u0
                for _ in range(tt):
                    u = step(u, NU)
                return float(np.sum(u ** 2))
        else:
            import tracegrad as tg
            stepper = step if name == "tracegrad-full" else tg.step(
                step, snapshots=s, steps=t, progress=False, jit=name == "tracegrad-jit")

            def loss(u0, nu, tt=t):
                u = u0
                for _ in range(tt):
                    u = stepper(u, nu)
                return np.sum(u ** 2)

            g = tg.grad(loss, (0, 1))

            def fn():
                return g(u0, NU)
    elif name == "autograd":
        import autograd
        import autograd.numpy as anp
        step = make_step(anp, dx, dt)
        u0 = initial(anp, n)

        def loss(u0, nu):
            u = u0
            for _ in range(t):
                u = step(u, nu)
            return anp.sum(u ** 2)

        g = autograd.grad(loss, argnum=(0, 1))

        def fn():
            return g(u0, NU)
    elif name.startswith("jax"):
        import jax
        import jax.numpy as jnp
        jax.config.update("jax_enable_x64", True)
        step = make_step(jnp, dx, dt)
        u0 = jnp.asarray(initial(jnp, n))
        if name == "jax-scan-remat":
            body = jax.checkpoint(lambda u, nu: step(u, nu))

            def loss(u0, nu):
                uT, _ = jax.lax.scan(lambda u, _: (body(u, nu), None), u0, None, length=t)
                return jnp.sum(uT ** 2)
        else:
            inner = max(1, int(round(t ** 0.5)))
            outer, rest = divmod(t, inner)

            @jax.checkpoint
            def block(u, nu):
                return jax.lax.scan(lambda v, _: (step(v, nu), None), u, None, length=inner)[0]

            def loss(u0, nu):
                u, _ = jax.lax.scan(lambda v, _: (block(v, nu), None), u0, None, length=outer)
                for _ in range(rest):
                    u = step(u, nu)
                return jnp.sum(u ** 2)

        g = jax.jit(jax.grad(loss, argnums=(0, 1)))

        def fn():
            out = g(u0, NU)
            jax.block_until_ready(out)
            return out
    elif name == "torch":
        import numpy as np
        import torch
        torch.set_num_threads(1)

        def fn():
            u0 = torch.tensor(initial(np, n), dtype=torch.float64, requires_grad=True)
            nu = torch.tensor(NU, dtype=torch.float64, requires_grad=True)
            u = u0
            for _ in range(t):
                up = torch.roll(u, -1)
                um = torch.roll(u, 1)
                u = u - dt * u * (up - um) / (2 * dx) + nu * dt * (up - 2 * u + um) / dx ** 2
            torch.sum(u ** 2).backward()
            return u0.grad, nu.grad
    else:
        raise SystemExit(f"unknown configuration {name!r}")

    if name == "tracegrad-jit":
        # Compile outside the measurements, on a 4-step loop of the same shapes
        # (the compiled step is kept by the stepper; kernels are also cached on
        # disk, so later processes load them).
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            tg.grad(lambda u0, nu: loss(u0, nu, 4), (0, 1))(u0, NU)
    # Memory: the first gradient, from the resident set before it to the peak
    # after it (a warm-up at the same size would already have set the peak).
    rss0 = _rss_bytes()
    max0 = _maxrss_bytes()
    first, out = _timed(fn, 1)
    res["peak_rss_growth_mb"] = max(_maxrss_bytes() - max(max0, rss0), 0) / 1e6
    if name.startswith("jax"):
        ma = g.lower(u0, NU).compile().memory_analysis()
        res["xla_temp_mb"] = ma.temp_size_in_bytes / 1e6
    if name.startswith("tracegrad"):
        import tracemalloc
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        res["tracemalloc_peak_mb"] = (tracemalloc.get_traced_memory()[1] - base) / 1e6
        tracemalloc.stop()
    # Time: best of `repeat` further gradients (JAX's first one compiled).
    best, out = _timed(fn, repeat)
    res["time_s"] = best if name.startswith("jax") else min(best, first)
    if name in ("tracegrad", "tracegrad-jit"):
        st = stepper.stats
        res["stats"] = {k: st.as_dict()[k] for k in (
            "evaluations", "recomputations", "taped", "max_snapshots", "peak_bytes",
            "forward_time", "reverse_time")}
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="'all' or one of " + ", ".join(OURS + PEERS))
    ap.add_argument("--n", type=int, default=N)
    ap.add_argument("--t", type=int, default=T)
    ap.add_argument("--s", type=int, default=S)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--peers-python", default=os.environ.get("PEERS_PYTHON", sys.executable))
    ap.add_argument("--skip", default="", help="comma-separated configurations to leave out")
    a = ap.parse_args(argv)
    if a.config != "all":
        print(json.dumps(run_one(a.config, a.n, a.t, a.s, a.repeat)))
        return
    skip = set(filter(None, a.skip.split(",")))
    rows = []
    for name in OURS + PEERS:
        if name in skip:
            continue
        py = a.peers_python if name in PEERS else sys.executable
        cmd = [py, __file__, name, "--n", str(a.n), "--t", str(a.t), "--s", str(a.s),
               "--repeat", str(a.repeat)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            rows.append({"name": name, "error": p.stderr.strip().splitlines()[-1:]})
        else:
            rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nBurgers N={a.n}, T={a.t}, s={a.s} (one gradient; peak RSS growth during it)")
    print(f"{'configuration':18s} {'time [s]':>9s} {'peak RSS +MB':>13s} {'tracemalloc MB':>15s} "
          f"{'XLA temp MB':>12s}")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:18s} failed: {r['error']}")
            continue
        tm = r.get("tracemalloc_peak_mb")
        xt = r.get("xla_temp_mb")
        tm = "" if tm is None else f"{tm:.2f}"
        xt = "" if xt is None else f"{xt:.1f}"
        print(f"{r['name']:18s} {r['time_s']:9.2f} {r['peak_rss_growth_mb']:13.1f} "
              f"{tm:>15s} {xt:>12s}")


if __name__ == "__main__":
    main()
