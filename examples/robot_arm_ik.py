"""Inverse kinematics of a planar 4-link arm by Gauss-Newton / Levenberg-Marquardt.

Forward kinematics is plain NumPy (cumulative angles, cos/sin, cumsum);
tracegrad.jacobian gives the exact 2x4 Jacobian of the end-effector
position, and tracegrad.hessian the curvature of a joint-limit penalty.
Run: python examples/robot_arm_ik.py
"""
import numpy as np

import tracegrad as tg

LINKS = np.array([1.0, 0.8, 0.6, 0.4])


def end_effector(q):
    angles = np.cumsum(q)
    return np.array([0.0, 0.0]) + np.stack([np.sum(LINKS * np.cos(angles)),
                                            np.sum(LINKS * np.sin(angles))])


def penalty(q, limit=2.0):
    # soft joint limits: zero inside, quadratic outside
    over = np.maximum(np.abs(q) - limit, 0.0)
    return 10.0 * np.sum(over ** 2)


def solve(target, q0, iters=50, damping=1e-3):
    q = q0.copy()
    for k in range(iters):
        r = end_effector(q) - target
        J = tg.jacobian(end_effector)(q)
        g_pen = tg.grad(penalty)(q)
        H_pen = tg.hessian(penalty)(q)
        A = J.T @ J + H_pen + damping * np.eye(q.size)
        q = q - np.linalg.solve(A, J.T @ r + g_pen)
        err = np.linalg.norm(end_effector(q) - target)
        if err < 1e-10:
            break
    return q, err, k + 1


def main():
    target = np.array([1.2, 1.5])
    q, err, iters = solve(target, np.array([0.3, 0.3, 0.3, 0.3]))
    print(f"joint angles {np.round(q, 4)}  |error| {err:.2e}  after {iters} iterations")
    J = tg.jacobian(end_effector)(q)
    eps = 1e-6
    J_fd = np.stack([(end_effector(q + eps * e) - end_effector(q - eps * e)) / (2 * eps)
                     for e in np.eye(4)], axis=1)
    print(f"Jacobian vs finite differences: max |diff| = {np.abs(J - J_fd).max():.1e}")
    assert err < 1e-8 and np.abs(J - J_fd).max() < 1e-8
    return err


if __name__ == "__main__":
    main()
