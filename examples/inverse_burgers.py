"""Recover the initial condition of a Burgers flow from its final state.

The forward model is an ordinary NumPy time loop (viscous Burgers equation,
periodic, explicit central differences). Only the step function is decorated
with ``tracegrad.step``: the gradient of the misfit with respect to the whole
initial field then needs memory for ``snapshots`` states instead of a tape of
every step, at the price of re-running steps in the backward pass.
``scipy.optimize.minimize(..., jac=True)`` drives L-BFGS with it.

Run:  python examples/inverse_burgers.py  (about half a minute)
"""
import time
import tracemalloc

import numpy as np
from scipy.optimize import minimize

import tracegrad as tg

N = 512                  # grid points
DX = 1.0 / N
DT = 5e-4                # CFL |u| dt/dx <= 0.26, viscous number nu dt/dx^2 = 0.39
T = 400                  # steps (t_end = 0.2)
NU = 3e-3
SNAPSHOTS = 12
ALPHA = 1e-6             # smoothness regularisation of the recovered field


def burgers_step(u, nu):
    """One explicit step of u_t + u u_x = nu u_xx (periodic)."""
    up = np.concatenate([u[1:], u[:1]])
    um = np.concatenate([u[-1:], u[:-1]])
    return u - DT * u * (up - um) / (2 * DX) + DT * nu * (up - 2 * u + um) / DX ** 2


# The only change to the model: checkpoint its steps (offline schedule, T known).
step = tg.step(burgers_step, snapshots=SNAPSHOTS, steps=T)


def simulate(u0, nu, stepper):
    u = u0
    for _ in range(T):
        u = stepper(u, nu)
    return u


def objective(stepper, observed):
    def J(u0):
        misfit = simulate(u0, NU, stepper) - observed
        smooth = np.concatenate([u0[1:], u0[:1]]) - u0
        return 0.5 * np.sum(misfit ** 2) + 0.5 * ALPHA / DX ** 2 * np.sum(smooth ** 2)
    return J


def peak_memory_of_gradient(stepper, observed, u0):
    value_and_grad = tg.value_and_grad(objective(stepper, observed))
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    value_and_grad(u0)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def main(maxiter=40, report_memory=True):
    """Solve the inverse problem; returns the relative errors of the initial
    guess and of the recovered initial condition."""
    x = np.arange(N) * DX
    u_true = 0.6 + 0.4 * np.sin(2 * np.pi * x) + 0.15 * np.cos(6 * np.pi * x)
    rng = np.random.default_rng(0)
    observed = simulate(u_true, NU, burgers_step) + 1e-3 * rng.normal(size=N)

    value_and_grad = tg.value_and_grad(objective(step, observed))
    calls = {"n": 0, "evaluations": 0, "values": []}

    def fun(u0):
        calls["n"] += 1
        value, grad = value_and_grad(u0)
        calls["evaluations"] += step.stats.evaluations
        calls["values"].append(float(value))
        return float(value), grad

    u_first = np.full(N, u_true.mean())
    t0 = time.perf_counter()
    res = minimize(fun, u_first, jac=True, method="L-BFGS-B",
                   options={"maxiter": maxiter, "maxfun": int(1.5 * maxiter) + 5})
    elapsed = time.perf_counter() - t0
    err0 = np.linalg.norm(u_first - u_true) / np.linalg.norm(u_true)
    err = np.linalg.norm(res.x - u_true) / np.linalg.norm(u_true)

    print(f"Burgers inverse problem: N = {N}, T = {T} steps, {SNAPSHOTS} snapshots")
    print(f"L-BFGS: {res.nit} iterations, {calls['n']} gradients in {elapsed:.1f} s "
          f"({res.message})")
    print(f"misfit J: {calls['values'][0]:.3e} -> {res.fun:.3e}")
    print(f"relative error of the recovered initial condition: {err0:.3f} -> {err:.4f}")

    st = step.stats
    print("\nOne checkpointed gradient:")
    print(f"  step evaluations  {st.evaluations} = {st.forward_evaluations} forward "
          f"+ {st.recomputations} recomputed + {st.taped} taped "
          f"({st.evaluations / T:.2f} per step)")
    print(f"  snapshots         at most {st.max_snapshots} held, {st.snapshots_taken} written, "
          f"{st.restores} restored, {st.peak_bytes / 1e3:.1f} kB")
    print(f"  per optimisation  {calls['evaluations']} step evaluations for "
          f"{calls['n']} gradients")
    if report_memory:
        full = peak_memory_of_gradient(burgers_step, observed, res.x)
        ckpt = peak_memory_of_gradient(step, observed, res.x)
        state = N * 8
        print(f"  peak extra memory {ckpt / 1e6:.2f} MB ({ckpt / state:.0f} states) "
              f"checkpointed, {full / 1e6:.2f} MB ({full / state:.0f} states) with the full "
              f"tape")
    return err0, err


if __name__ == "__main__":
    main()
