"""A zoo of ordinary NumPy programs from simulation, control, robotics,
graphics and signal processing, differentiated without modification.

Each program is written the way users write them: in-place updates and slice
writes, preallocated traced buffers, ``np.add.at`` scatters, masks,
broadcasting, Python branches on values, tuples and dicts of parameters.
For each we check the gradient against central finite differences, that the
inputs are not modified, and that ``jit(grad(f))`` replays equal the eager
gradient on new inputs (including inputs that take another Python branch or
another ``np.where``/``clip`` pattern). Small programs also check Hessians,
HVPs and ``jacfwd`` against ``jacrev``; time-stepping programs check
``tg.step`` / ``tg.loop`` / ``tg.checkpoint`` against the plain tape.
"""
import copy
import warnings

import numpy as np
import pytest

import tracegrad as tg


# =============================================================================
# helpers
# =============================================================================
def _leaves(t):
    if isinstance(t, dict):
        return [x for k in sorted(t) for x in _leaves(t[k])]
    if isinstance(t, (tuple, list)):
        return [x for e in t for x in _leaves(e)]
    return [t]


def _replace(t, path, value):
    """Copy of pytree ``t`` with the leaf at ``path`` replaced."""
    if not path:
        return value
    k, rest = path[0], path[1:]
    if isinstance(t, dict):
        d = dict(t)
        d[k] = _replace(t[k], rest, value)
        return d
    items = list(t)
    items[k] = _replace(t[k], rest, value)
    return type(t)(items)


def _paths(t, prefix=()):
    if isinstance(t, dict):
        return [p for k in sorted(t) for p in _paths(t[k], prefix + (k,))]
    if isinstance(t, (tuple, list)):
        return [p for i, e in enumerate(t) for p in _paths(e, prefix + (i,))]
    return [prefix]


def _get(t, path):
    for k in path:
        t = t[k]
    return t


def fd_grad(f, args, argnum, eps=1e-6):
    """Central finite differences of scalar ``f`` w.r.t. pytree ``args[argnum]``
    (leaves in the order of ``_leaves``)."""
    out = []
    for path in _paths(args[argnum]):
        x0 = np.asarray(_get(args[argnum], path), dtype=np.float64)
        g = np.zeros_like(x0)
        for i in np.ndindex(x0.shape):
            vals = []
            for s in (eps, -eps):
                x = x0.copy()
                x[i] += s
                xa = x if np.ndim(_get(args[argnum], path)) else float(x)
                a = list(args)
                a[argnum] = _replace(args[argnum], path, xa)
                vals.append(float(f(*a)))
            g[i] = (vals[0] - vals[1]) / (2 * eps)
        out.append(g)
    return out


def rel(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = np.max(np.abs(b)) if b.size else 0.0
    return float(np.max(np.abs(a - b)) / scale) if scale else float(np.max(np.abs(a)))


def assert_tree_close(got, want, tol):
    gl, wl = _leaves(got), _leaves(want)
    assert len(gl) == len(wl)
    for g, w in zip(gl, wl):
        assert np.shape(g) == np.shape(w)
        assert rel(g, w) <= tol, (rel(g, w), g, w)


def perturb(t, s):
    """Scale every float leaf of ``t`` by ``1 + s``."""
    if isinstance(t, dict):
        return {k: perturb(v, s) for k, v in t.items()}
    if isinstance(t, (tuple, list)):
        return type(t)(perturb(v, s) for v in t)
    return t * (1 + s)


# =============================================================================
# simulation
# =============================================================================
def heat_roll(u0, kappa, nt=30, dx=0.1, dt=0.002):
    """Explicit Euler, periodic heat equation, np.roll stencil."""
    u = u0
    for _ in range(nt):
        lap = (np.roll(u, 1) - 2 * u + np.roll(u, -1)) / dx ** 2
        u = u + dt * kappa * lap
    return np.sum(u ** 2) + np.mean(u)


def heat_slice(u0, kappa, nt=30, dx=0.1, dt=0.002):
    """Slicing stencil into a zeros_like buffer, += update, boundary writes."""
    u = u0.copy()
    for _ in range(nt):
        lap = np.zeros_like(u)
        lap[1:-1] = (u[2:] - 2 * u[1:-1] + u[:-2]) / dx ** 2
        u += dt * kappa * lap
        u[0] = 0.0
        u[-1] = u[-2]
    return np.sum(u ** 3)


def heat2d(u0, alpha, nt=6):
    """2-D heat equation updated in place on the interior."""
    u = u0.copy()
    for _ in range(nt):
        u[1:-1, 1:-1] += alpha * (u[2:, 1:-1] + u[:-2, 1:-1] + u[1:-1, 2:] + u[1:-1, :-2]
                                  - 4 * u[1:-1, 1:-1])
    return np.sum(u ** 2)


def wave_leapfrog(u0, c, nt=25, dx=0.1, dt=0.05):
    """Wave equation, leapfrog, history stored row by row in a traced buffer."""
    n = u0.shape[0]
    u_prev = u0.copy()
    u = u0.copy()
    hist = np.zeros((nt, n)) + 0 * u0
    r2 = (c * dt / dx) ** 2
    for t in range(nt):
        u_next = np.empty_like(u)
        u_next[1:-1] = 2 * u[1:-1] - u_prev[1:-1] + r2 * (u[2:] - 2 * u[1:-1] + u[:-2])
        u_next[0] = 0.0
        u_next[-1] = 0.0
        u_prev, u = u, u_next
        hist[t] = u
    return np.sum(hist[::5] ** 2) + np.sum(np.diff(u) ** 2)


def burgers_rhs(u, nu, dx=0.2):
    up, um = np.roll(u, -1), np.roll(u, 1)
    return -u * (up - um) / (2 * dx) + nu * (up - 2 * u + um) / dx ** 2


def rk4_step(u, nu, dt=0.01):
    k1 = burgers_rhs(u, nu)
    k2 = burgers_rhs(u + 0.5 * dt * k1, nu)
    k3 = burgers_rhs(u + 0.5 * dt * k2, nu)
    k4 = burgers_rhs(u + dt * k3, nu)
    return u + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def burgers_rk4(u0, nu, nt=10):
    u = u0
    for _ in range(nt):
        u = rk4_step(u, nu)
    return np.sum(u ** 2)


def double_buffer(u0, c, nt=10, dt=0.05, dx=0.2):
    """Two buffers swapped every step: each write overwrites saved values."""
    u = u0.copy()
    u_new = np.empty_like(u0)
    for _ in range(nt):
        u_new[1:-1] = (u[1:-1] + c * dt / dx ** 2 * (u[2:] - 2 * u[1:-1] + u[:-2])
                       - dt * u[1:-1] ** 3)
        u_new[0] = u_new[-1] = 0.0
        u, u_new = u_new, u
    return np.sum(u ** 2)


def copy_back(u0, c, nt=10, dt=0.05, dx=0.2):
    """np.copyto and u[:] = ... write the new state into the old buffer."""
    u = u0.copy()
    tmp = np.zeros_like(u)
    for _ in range(nt):
        tmp[1:-1] = (u[1:-1] * (1 - dt * u[1:-1])
                     + c * dt / dx ** 2 * (u[2:] - 2 * u[1:-1] + u[:-2]))
        np.copyto(u, tmp)
        u[:] = u * 0.99
    return np.sum(u ** 2)


def gauss_seidel(f, n_sweeps=4):
    """Sequential in-place sweeps reading values written in the same sweep."""
    n = f.shape[0]
    u = np.zeros_like(f)
    h2 = (1.0 / (n - 1)) ** 2
    for _ in range(n_sweeps):
        for i in range(1, n - 1):
            u[i] = 0.5 * (u[i - 1] + u[i + 1] + h2 * f[i])
    return np.sum(u ** 2) * 1e3


def shallow_water(h0, g, nt=10, dx=0.5, dt=0.02):
    """1-D shallow water, Lax-Friedrichs with np.roll; tuple swap of (h, hu)."""
    h = h0.copy()
    hu = np.zeros_like(h0)
    for _ in range(nt):
        u = hu / h
        f1 = hu
        f2 = hu * u + 0.5 * g * h ** 2
        h_new = 0.5 * (np.roll(h, 1) + np.roll(h, -1)) - dt / (2 * dx) * (
            np.roll(f1, -1) - np.roll(f1, 1))
        hu_new = 0.5 * (np.roll(hu, 1) + np.roll(hu, -1)) - dt / (2 * dx) * (
            np.roll(f2, -1) - np.roll(f2, 1))
        h, hu = h_new, hu_new
    return np.sum(h ** 2) + np.sum(hu ** 2)


def gravity_acc(x, m, eps=0.1):
    n = x.shape[0]
    d = x[None, :, :] - x[:, None, :]                       # (n, n, 3)
    r = np.linalg.norm(d, axis=-1)
    inv = 1.0 / (r ** 2 + eps ** 2) ** 1.5
    inv[np.arange(n), np.arange(n)] = 0.0                   # no self-force
    return np.sum(m[None, :, None] * d * inv[:, :, None], axis=1)


def nbody(x0, m, nt=8, dt=0.01):
    """Semi-implicit Euler n-body gravity with in-place += updates."""
    x = x0.copy()
    v = np.zeros_like(x0)
    for _ in range(nt):
        v += dt * gravity_acc(x, m)
        x += dt * v
    return 0.5 * np.sum(m[:, None] * v ** 2) + np.sum(x[:, 0])


CLOTH_EDGES = [(0, 1), (1, 2), (3, 4), (4, 5), (6, 7), (7, 8), (0, 3), (3, 6), (1, 4), (4, 7),
               (2, 5), (5, 8)]


def cloth(x0, k, nt=5, dt=0.01):
    """Mass-spring cloth: forces accumulated with f[i] += ..., pinned corner."""
    x = x0.copy()
    v = np.zeros_like(x0)
    for _ in range(nt):
        f = np.zeros_like(x)
        f[:, 2] -= 9.81
        for i, j in CLOTH_EDGES:
            d = x[j] - x[i]
            length = np.linalg.norm(d)
            fs = k * (length - 1.0) * d / length
            f[i] += fs
            f[j] -= fs
        f[0] = 0.0
        v = v + dt * f
        x = x + dt * v
    return np.sum(x[:, 2]) + np.sum(x ** 2)


def cloth_add_at(x0, k, nt=5, dt=0.01):
    """The same cloth, vectorised with np.add.at / np.subtract.at."""
    e = np.array(CLOTH_EDGES)
    x = x0.copy()
    v = np.zeros_like(x0)
    for _ in range(nt):
        d = x[e[:, 1]] - x[e[:, 0]]
        length = np.linalg.norm(d, axis=1, keepdims=True)
        fs = k * (length - 1.0) * d / length
        f = np.zeros_like(x)
        np.add.at(f, e[:, 0], fs)
        np.subtract.at(f, e[:, 1], fs)
        v += dt * f
        x += dt * v
    return np.sum(x ** 2)


def lennard_jones(x, sigma=1.0, epsilon=1.0):
    """Pair energy with the diagonal removed by a boolean mask."""
    n = x.shape[0]
    d = x[:, None, :] - x[None, :, :]
    r2 = np.sum(d ** 2, axis=-1)
    r2m = r2[~np.eye(n, dtype=bool)]
    s6 = (sigma ** 2 / r2m) ** 3
    return 0.5 * np.sum(4 * epsilon * (s6 ** 2 - s6))


def lennard_jones_where(x, sigma=1.0, epsilon=1.0):
    """Pair energy masked with np.where and np.triu."""
    n = x.shape[0]
    d = x[:, None, :] - x[None, :, :]
    r = np.sqrt(np.sum(d ** 2, axis=-1) + np.eye(n))
    e = 4 * epsilon * ((sigma / r) ** 12 - (sigma / r) ** 6)
    e = np.where(np.eye(n, dtype=bool), 0.0, e)
    return np.triu(e, 1).sum()


def verlet_lj(x0, nt=6, dt=0.002):
    """Velocity Verlet with Lennard-Jones forces and np.fill_diagonal."""
    def acc(x):
        d = x[:, None, :] - x[None, :, :]
        r2 = np.sum(d ** 2, axis=-1)
        np.fill_diagonal(r2, 1.0)
        inv6 = 1.0 / r2 ** 3
        fmag = 24 * (2 * inv6 ** 2 - inv6) / r2
        np.fill_diagonal(fmag, 0.0)
        return np.sum(fmag[:, :, None] * d, axis=1)
    x = x0.copy()
    v = np.zeros_like(x0)
    a = acc(x)
    for _ in range(nt):
        v += 0.5 * dt * a
        x += dt * v
        a = acc(x)
        v += 0.5 * dt * a
    return np.sum(v ** 2) + np.sum(x[:, 0] ** 2)


def bouncing(x0, v0, nt=20, dt=0.05):
    """Particles bouncing on the floor: boolean-mask reflections in place."""
    x = x0.copy()
    v = v0.copy()
    for _ in range(nt):
        v[:, 1] -= 9.81 * dt
        x += dt * v
        below = x[:, 1] < 0
        x[below, 1] = -x[below, 1]
        v[below, 1] *= -0.9
    return np.sum(x ** 2) + np.sum(v[:, 0] * x[:, 1])


def implicit_heat(u0, kappa, nt=5, dt=0.1, dx=0.5):
    """Backward Euler for the heat equation: one np.linalg.solve per step."""
    n = u0.shape[0]
    lap = (np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1) - 2 * np.eye(n)) / dx ** 2
    a = np.eye(n) - dt * kappa * lap
    u = u0
    for _ in range(nt):
        u = np.linalg.solve(a, u)
    return np.sum(u ** 2) + u[0]


def backward_euler_newton(y0, k, nt=4, dt=0.1, tol=1e-10):
    """Backward Euler on a nonlinear ODE, Newton with a convergence test."""
    a = np.array([[0.0, 1.0], [-1.0, -0.1]])
    y = y0
    for _ in range(nt):
        z = y
        for _ in range(20):
            r = z - y - dt * (-k * z ** 3 + a @ z)
            if np.linalg.norm(r) < tol:
                break
            jac = np.eye(2) - dt * (np.diag(-3 * k * z ** 2) + a)
            z = z - np.linalg.solve(jac, r)
        y = z
    return np.sum(y ** 2)


def pendulum_rk4(params, theta0=1.0, omega0=0.0, nt=20, dt=0.05):
    """RK4 of a damped pendulum with a dict of parameters."""
    g, length, b = params["g"], params["l"], params["b"]

    def f(s):
        th, om = s
        return np.stack([om, -g / length * np.sin(th) - b * om])
    s = np.array([theta0, omega0])
    for _ in range(nt):
        k1 = f(s)
        k2 = f(s + dt / 2 * k1)
        k3 = f(s + dt / 2 * k2)
        k4 = f(s + dt * k3)
        s = s + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return s[0] ** 2 + 0.1 * s[1]


def trajectory_buffer(x0, dt=0.1, steps=8):
    """Trajectory rows written into a buffer built from the input."""
    traj = np.zeros((steps + 1, x0.shape[0])) + 0 * x0
    traj[0] = x0
    for t in range(steps):
        x = traj[t]
        traj[t + 1] = x + dt * np.stack([x[1], -np.sin(x[0])])
    return np.sum(traj ** 2) + np.trapezoid(traj[:, 0], dx=dt)


# =============================================================================
# control
# =============================================================================
def lqr_cost(u_seq, a, b, x0):
    q = np.diag([1.0, 0.5, 0.2])
    r = 0.1 * np.eye(u_seq.shape[1])
    x = x0
    cost = 0.0
    for t in range(u_seq.shape[0]):
        u = u_seq[t]
        cost += x @ q @ x + u @ r @ u
        x = a @ x + b @ u
    cost += x.T @ q @ x
    return cost


def lqr_gain(gain, a, b, x0, steps=10):
    x = x0
    cost = 0.0
    xs = np.zeros((steps + 1, x0.shape[0])) * gain[0, 0]
    xs[0] = x0
    for t in range(steps):
        u = -gain @ x
        cost = cost + np.dot(x, x) + 0.1 * np.dot(u, u)
        x = (a - b @ gain) @ x
        xs[t + 1] = x
    return cost + 10 * np.sum(xs[-1] ** 2)


def mpc_pendulum(u, x0=(np.pi - 0.3, 0.0), dt=0.05, umax=2.0):
    """Single-shooting swing-up cost with torque saturation (np.clip)."""
    th, om = x0
    cost = 0.0
    for t in range(u.shape[0]):
        tau = np.clip(u[t], -umax, umax)
        om = om + dt * (-9.81 * np.sin(th) + tau)
        th = th + dt * om
        cost = cost + (1 + np.cos(th)) ** 2 + 0.01 * tau ** 2
    return cost + 10 * om ** 2


def cartpole(p, u, dt=0.02):
    mc, mp, length = p["mc"], p["mp"], p["l"]
    x, xd, th, thd = 0.0, 0.0, 0.2, 0.0
    cost = 0.0
    for t in range(len(u)):
        s, c = np.sin(th), np.cos(th)
        tmp = (u[t] + mp * length * thd ** 2 * s) / (mc + mp)
        thdd = (9.8 * s - c * tmp) / (length * (4.0 / 3.0 - mp * c ** 2 / (mc + mp)))
        xdd = tmp - mp * length * thdd * c / (mc + mp)
        x, xd = x + dt * xd, xd + dt * xdd
        th, thd = th + dt * thd, thd + dt * thdd
        cost = cost + th ** 2 + 0.1 * x ** 2
    return cost


def pid(gains, setpoint=1.0, nt=60, dt=0.05, umax=3.0):
    """PID on a second-order plant with actuator saturation; tuple of gains."""
    kp, ki, kd = gains
    y, yd = 0.0, 0.0
    integ = 0.0
    prev_e = setpoint - y
    out = np.zeros(nt) + 0 * kp
    for t in range(nt):
        e = setpoint - y
        integ = integ + e * dt
        deriv = (e - prev_e) / dt
        u = np.clip(kp * e + ki * integ + kd * deriv, -umax, umax)
        ydd = u - 0.5 * yd - y
        yd = yd + dt * ydd
        y = y + dt * yd
        prev_e = e
        out[t] = y
    return np.sum((out - setpoint) ** 2) * dt


# =============================================================================
# robotics
# =============================================================================
LINKS2 = np.array([1.0, 0.8, 0.5])


def planar_fk(q):
    """Planar arm: 2x2 rotations from np.stack of cos/sin, chained with @."""
    p = np.zeros(2)
    rot = np.eye(2)
    for i in range(q.shape[0]):
        c, s = np.cos(q[i]), np.sin(q[i])
        rot = rot @ np.stack([np.stack([c, -s]), np.stack([s, c])])
        p = p + rot @ np.array([LINKS2[i], 0.0])
    return p


def rot_z(a):
    c, s = np.cos(a), np.sin(a)
    return np.stack([np.stack([c, -s, 0.0]), np.stack([s, c, 0.0]), np.array([0.0, 0.0, 1.0])])


def rot_y(a):
    c, s = np.cos(a), np.sin(a)
    z, o = np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([c, z, s]), np.stack([z, o, z]), np.stack([-s, z, c])])


def homog_block(rot, t):
    return np.block([[rot, t[:, None]], [np.zeros((1, 3)), np.ones((1, 1))]])


def homog_buffer(rot, t):
    tf = np.zeros_like(rot, shape=(4, 4))
    tf[:3, :3] = rot
    tf[:3, 3] = t
    tf[3, 3] = 1.0
    return tf


ARM_LINKS = [np.array([0.0, 0.0, 0.5]), np.array([0.7, 0.0, 0.0]), np.array([0.5, 0.0, 0.0]),
             np.array([0.2, 0.0, 0.1])]


def arm3d_fk(q, homog=homog_block):
    """3-D arm: homogeneous 4x4 transforms chained with @."""
    tf = np.eye(4)
    for i, rot in enumerate([rot_z, rot_y, rot_y, rot_z]):
        tf = tf @ homog(rot(q[i]), ARM_LINKS[i])
    return tf[:3, 3]


def arm3d_fk_buffer(q):
    return arm3d_fk(q, homog_buffer)


def ik_residual(q, target=np.array([0.6, 0.4, 0.9])):
    r = arm3d_fk(q) - target
    return 0.5 * r @ r


def quat_rotate(q, v):
    q = q / np.linalg.norm(q)
    w, xyz = q[0], q[1:]
    t = 2 * np.cross(xyz, v)
    return v + w * t + np.cross(xyz, t)


def quat_loss(q, v):
    r = quat_rotate(q, v)
    ang = np.arctan2(r[..., 1], r[..., 0])
    return np.sum(r[..., 2] ** 2) + np.sum(np.sin(ang))


def rigid_transform(params, pts):
    """2-D rigid transform in homogeneous coordinates and its inverse."""
    ang, tx, ty = params
    c, s = np.cos(ang), np.sin(ang)
    tf = np.stack([np.stack([c, -s, tx]), np.stack([s, c, ty]), np.array([0.0, 0.0, 1.0])])
    ph = np.concatenate([pts, np.ones((pts.shape[0], 1))], axis=1)
    out = (tf @ ph.T).T
    back = ph @ np.linalg.inv(tf).T
    return np.sum(out[:, :2] ** 2) + np.sum(back[:, 0])


# =============================================================================
# graphics / geometry
# =============================================================================
FACES = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]])


def mesh_area(v):
    """Face areas and normals by np.cross, vertex normals by np.add.at."""
    a, b, c = v[FACES[:, 0]], v[FACES[:, 1]], v[FACES[:, 2]]
    n = np.cross(b - a, c - a)
    area = 0.5 * np.linalg.norm(n, axis=1)
    fn = n / np.linalg.norm(n, axis=1, keepdims=True)
    vn = np.zeros_like(v)
    for k in range(3):
        np.add.at(vn, FACES[:, k], fn)
    vn = vn / np.linalg.norm(vn, axis=1)[:, None]
    return np.sum(area) + np.sum(vn[:, 0] * v[:, 1])


def soft_raster(tri, res=8, sigma=0.05):
    """Soft rasteriser: product of sigmoids of signed edge distances."""
    xs = (np.arange(res) + 0.5) / res
    px, py = np.meshgrid(xs, xs)
    img = np.ones((res, res))
    for i in range(3):
        a, b = tri[i], tri[(i + 1) % 3]
        e = b - a
        d = (e[0] * (py - a[1]) - e[1] * (px - a[0])) / np.linalg.norm(e)
        img = img * (1 / (1 + np.exp(-d / sigma)))
    target = np.zeros((res, res))
    target[2:6, 2:6] = 1.0
    return np.mean((img - target) ** 2)


def ray_sphere(center, radius, res=6):
    """Ray-sphere hits with np.where on the discriminant, Lambert shading."""
    ys, xs = np.meshgrid(np.linspace(-1, 1, res), np.linspace(-1, 1, res), indexing="ij")
    d = np.stack([xs, ys, np.ones_like(xs)], axis=-1)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    oc = -center
    b = np.sum(d * oc, axis=-1)
    c = np.sum(oc * oc) - radius ** 2
    disc = b * b - c
    hit = disc > 0
    t = -b - np.sqrt(np.where(hit, disc, 1.0))
    nrm = (t[..., None] * d - center) / radius
    light = np.array([0.3, 0.5, -1.0])
    light = light / np.linalg.norm(light)
    shade = np.where(hit, np.maximum(np.sum(nrm * -light, axis=-1), 0.0), 0.0)
    return np.sum(shade * np.arange(res * res).reshape(res, res))


def barycentric(tri, pts, vals):
    a, b, c = tri
    v0, v1 = b - a, c - a
    v2 = pts - a
    d00, d01, d11 = v0 @ v0, v0 @ v1, v1 @ v1
    d20, d21 = v2 @ v0, v2 @ v1
    den = d00 * d11 - d01 * d01
    v = (d11 * d20 - d01 * d21) / den
    w = (d00 * d21 - d01 * d20) / den
    u = 1.0 - v - w
    return np.sum((u * vals[0] + v * vals[1] + w * vals[2]) ** 2)


EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [0, 2], [1, 4], [4, 2], [4, 3]])


def laplacian_energy(v):
    """Edge lengths by fancy indexing, umbrella Laplacian by np.add.at."""
    d = v[EDGES[:, 0]] - v[EDGES[:, 1]]
    deg = np.zeros(v.shape[0])
    np.add.at(deg, EDGES.ravel(), 1)
    nb = np.zeros_like(v)
    np.add.at(nb, EDGES[:, 0], v[EDGES[:, 1]])
    np.add.at(nb, EDGES[:, 1], v[EDGES[:, 0]])
    lap = v - nb / deg[:, None]
    return np.sum(d ** 2) + np.sum(lap ** 2)


def rodrigues(rvec, v):
    theta = np.linalg.norm(rvec)
    if theta < 1e-8:
        return v + np.cross(rvec, v)
    k = rvec / theta
    return (v * np.cos(theta) + np.cross(k, v) * np.sin(theta)
            + k * np.dot(k, v) * (1 - np.cos(theta)))


def rodrigues_loss(rvec):
    return np.sum(rodrigues(rvec, np.array([0.3, -0.2, 0.9])) * np.array([1.0, 2.0, 3.0]))


# =============================================================================
# signal processing
# =============================================================================
def conv_loss(x, k):
    y = np.convolve(x, k, mode="same")
    z = np.convolve(y, k[::-1], mode="valid")
    return np.sum(y ** 2) + np.sum(z) + np.sum(np.convolve(x, k) ** 3)


def fft_conv(x, k):
    n = x.shape[0] + k.shape[0] - 1
    y = np.fft.irfft(np.fft.rfft(x, n) * np.fft.rfft(k, n), n)
    return np.sum(y ** 2) + np.sum(np.abs(np.fft.fft(x)) ** 2) / x.shape[0]


def interp_loss(xq, fp):
    xp = np.linspace(0.0, 1.0, fp.shape[0])
    y = np.interp(xq, xp, fp)
    return np.sum(y ** 2 * np.arange(1, xq.shape[0] + 1))


def integrate(y, dx=0.1):
    c = np.cumsum(y) * dx
    return (np.trapezoid(y ** 2, dx=dx) + np.sum(np.diff(y) ** 2) + np.sum(c[::2])
            + np.trapezoid(c, x=np.cumsum(np.ones_like(y))))


# =============================================================================
# the zoo: name -> (function, args, argnums)
# =============================================================================
_r = np.random.default_rng(0)
_GRID = np.stack(np.meshgrid(np.arange(3.0), np.arange(3.0), [0.0]), -1).reshape(9, 3) * 1.1
_LJ4 = np.array([[0.0, 0.0, 0.0], [1.12, 0.0, 0.0], [0.0, 1.15, 0.05], [0.6, 0.6, 0.95]])

ZOO = {
    "heat_roll": (heat_roll, (_r.uniform(0, 1, 10), 0.7), (0, 1)),
    "heat_slice": (heat_slice, (_r.uniform(0, 1, 10), 0.7), (0, 1)),
    "heat2d": (heat2d, (_r.uniform(0, 1, (5, 5)), 0.1), (0, 1)),
    "wave_leapfrog": (wave_leapfrog, (np.sin(np.linspace(0, np.pi, 10)), 1.3), (0, 1)),
    "burgers_rk4": (burgers_rk4, (0.5 + np.sin(np.linspace(0, 2 * np.pi, 12, endpoint=False)),
                                  0.05), (0, 1)),
    "double_buffer": (double_buffer, (_r.uniform(0, 1, 8), 0.3), (0, 1)),
    "copy_back": (copy_back, (_r.uniform(0, 1, 8), 0.3), (0, 1)),
    "gauss_seidel": (gauss_seidel, (_r.uniform(0, 1, 7),), (0,)),
    "shallow_water": (shallow_water, (1 + 0.1 * np.exp(-np.linspace(-2, 2, 12) ** 2), 9.81),
                      (0, 1)),
    "nbody": (nbody, (_r.standard_normal((4, 3)), _r.uniform(0.5, 1.5, 4)), (0, 1)),
    "cloth": (cloth, (_GRID + 0.01 * _r.standard_normal((9, 3)), 50.0), (0, 1)),
    "cloth_add_at": (cloth_add_at, (_GRID + 0.01 * _r.standard_normal((9, 3)), 50.0), (0, 1)),
    "lennard_jones": (lennard_jones, (_LJ4,), (0,)),
    "lennard_jones_where": (lennard_jones_where, (_LJ4,), (0,)),
    "verlet_lj": (verlet_lj, (_LJ4,), (0,)),
    "bouncing": (bouncing, (_r.uniform(0.1, 1, (3, 2)), _r.uniform(-1, 1, (3, 2))), (0, 1)),
    "implicit_heat": (implicit_heat, (_r.uniform(0, 1, 8), 0.5), (0, 1)),
    "backward_euler_newton": (backward_euler_newton, (np.array([1.0, 0.5]), 0.7), (0, 1)),
    "pendulum_rk4": (pendulum_rk4, ({"g": 9.81, "l": 1.2, "b": 0.1},), (0,)),
    "trajectory_buffer": (trajectory_buffer, (np.array([0.5, 0.2]),), (0,)),
    "lqr_cost": (lqr_cost, (0.3 * _r.standard_normal((6, 2)),
                            np.eye(3) + 0.1 * _r.standard_normal((3, 3)),
                            _r.standard_normal((3, 2)), _r.standard_normal(3)), (0, 1, 2, 3)),
    "lqr_gain": (lqr_gain, (0.1 * _r.standard_normal((2, 3)),
                            0.9 * np.eye(3) + 0.05 * _r.standard_normal((3, 3)),
                            0.5 * _r.standard_normal((3, 2)), _r.standard_normal(3)), (0, 1)),
    "mpc_pendulum": (mpc_pendulum, (np.array([0.5, 1.0, -0.3, 2.5, -2.8, 1.5, 0.2, 0.1]),),
                     (0,)),
    "cartpole": (cartpole, ({"mc": 1.0, "mp": 0.1, "l": 0.5}, np.linspace(-1, 1, 15)), (0, 1)),
    "pid": (pid, ((2.0, 0.5, 0.1),), (0,)),
    "planar_fk": (lambda q: np.sum(planar_fk(q) ** 2) + planar_fk(q)[0],
                  (np.array([0.3, 0.5, -0.4]),), (0,)),
    "ik_residual": (ik_residual, (np.array([0.3, 0.5, -0.4, 0.2]),), (0,)),
    "arm3d_buffer": (lambda q: np.sum(arm3d_fk_buffer(q) * np.array([1.0, -2.0, 0.5])),
                     (np.array([0.3, 0.5, -0.4, 0.2]),), (0,)),
    "quaternion": (quat_loss, (np.array([0.9, 0.1, -0.2, 0.3]), _r.standard_normal((5, 3))),
                   (0, 1)),
    "rigid_transform": (rigid_transform, ((0.3, 0.5, -0.2), _r.standard_normal((5, 2))), (0, 1)),
    "mesh_area": (mesh_area, (np.eye(4, 3, -1) + 0.05 * _r.standard_normal((4, 3)),), (0,)),
    "soft_raster": (soft_raster, (np.array([[0.2, 0.2], [0.8, 0.25], [0.4, 0.8]]),), (0,)),
    "ray_sphere": (ray_sphere, (np.array([0.1, -0.1, 3.0]), 1.2), (0, 1)),
    "barycentric": (barycentric, (np.array([[0, 0], [1, 0.1], [0.2, 1.0]]),
                                  _r.uniform(0, 0.5, (6, 2)), np.array([1.0, 2.0, 3.0])),
                    (0, 1, 2)),
    "laplacian_energy": (laplacian_energy, (_r.standard_normal((5, 3)),), (0,)),
    "rodrigues": (rodrigues_loss, (np.array([0.3, -0.5, 0.2]),), (0,)),
    "convolve": (conv_loss, (_r.standard_normal(9), _r.standard_normal(3)), (0, 1)),
    "fft_convolve": (fft_conv, (_r.standard_normal(8), _r.standard_normal(3)), (0, 1)),
    "interp": (interp_loss, (_r.uniform(0.05, 0.95, 6), _r.standard_normal(5)), (0, 1)),
    "integrate": (integrate, (_r.standard_normal(7),), (0,)),
}


# =============================================================================
# 1 + 5: gradients against finite differences; inputs unchanged
# =============================================================================
@pytest.mark.parametrize("name", list(ZOO))
def test_grad_matches_finite_differences(name):
    f, args, argnums = ZOO[name]
    before = copy.deepcopy(args)
    with warnings.catch_warnings():
        warnings.simplefilter("error", tg.EscapeWarning)  # no derivative may be lost
        g = tg.grad(f, argnums=argnums)(*args)
    for a, b in zip(_leaves(before), _leaves(args)):
        assert np.array_equal(a, b), "the call modified its input"
    for k, num in enumerate(argnums):
        got = _leaves(g[k])
        want = fd_grad(f, args, num)
        assert len(got) == len(want)
        for gl, wl in zip(got, want):
            assert np.shape(gl) == np.shape(wl)
            np.testing.assert_allclose(gl, wl, rtol=1e-6, atol=1e-6 * max(1.0, np.abs(wl).max()),
                                       err_msg=f"{name}: argument {num}")


# =============================================================================
# 3: jit(grad(f)) replays equal the eager gradient on new inputs
# =============================================================================
@pytest.mark.parametrize("name", list(ZOO))
def test_jit_grad_equals_eager(name):
    f, args, argnums = ZOO[name]
    eager = tg.grad(f, argnums=argnums)
    jitted = tg.jit(eager)
    for s in (0.0, 0.013, -0.021, 0.0):
        a = perturb(args, s)
        before = copy.deepcopy(a)
        assert_tree_close(jitted(*a), eager(*a), 1e-10)
        for x, y in zip(_leaves(before), _leaves(a)):
            assert np.array_equal(x, y)


BRANCHY = {
    # a Python `if` on a value: the small-angle branch of Rodrigues' formula
    "rodrigues small angle": (rodrigues_loss, [np.array([0.3, -0.5, 0.2]), np.zeros(3),
                                               np.array([1e-9, 0.0, 0.0]),
                                               np.array([0.1, 0.2, 0.3])]),
    # which controls saturate
    "mpc saturation": (mpc_pendulum, [np.array([0.5, 1.0, -0.3, 2.5, -2.8, 1.5, 0.2, 0.1]),
                                      np.array([2.5, -1.0, 0.3, 0.5, 0.8, -2.5, 3.2, 0.1])]),
    # which particles bounce (boolean-mask writes)
    "bouncing": (lambda x: bouncing(x, np.array([[0.2, -1.0], [0.1, 0.5], [-0.3, 0.0]])),
                 [np.array([[0.1, 0.3], [0.5, 0.9], [0.2, 0.05]]),
                  np.array([[0.1, 2.0], [0.5, 0.1], [0.2, 1.5]])]),
    # which rays hit the sphere (np.where on the discriminant)
    "ray-sphere hits": (lambda c: ray_sphere(c, 1.2), [np.array([0.1, -0.1, 3.0]),
                                                       np.array([1.5, 0.2, 2.5])]),
    # how many Newton iterations each implicit step takes
    "newton iterations": (lambda y: backward_euler_newton(y, 0.7),
                          [np.array([1.0, 0.5]), np.array([0.01, 0.002]),
                           np.array([2.0, -1.0])]),
    # interpolation intervals and extrapolation change with the query points
    "interp intervals": (lambda x: interp_loss(x, np.array([0.3, -1.0, 2.0, 0.5, 1.5])),
                         [np.array([0.1, 0.5, 0.7]), np.array([0.3, 0.9, 0.05]),
                          np.array([-0.2, 1.3, 0.6])]),
}


@pytest.mark.parametrize("name", list(BRANCHY))
def test_jit_grad_follows_branches(name):
    f, xs = BRANCHY[name]
    eager = tg.grad(f)
    jg, jf = tg.jit(eager), tg.jit(f)
    for x in xs + xs[::-1]:
        assert_tree_close(jg(x), eager(x), 1e-10)
        assert rel(jf(x), f(x)) <= 1e-12


# =============================================================================
# 2: Hessians, HVPs, jacfwd vs jacrev on small programs
# =============================================================================
SECOND_ORDER = ["heat_slice", "gauss_seidel", "nbody", "cloth_add_at", "lennard_jones",
                "implicit_heat", "mpc_pendulum", "ik_residual", "mesh_area", "ray_sphere",
                "laplacian_energy", "rodrigues", "convolve", "interp", "bouncing"]


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_hessian_hvp(name):
    f, args, argnums = ZOO[name]
    i0 = argnums[0]
    x = args[i0]

    def fx(z):
        return f(*[z if i == i0 else a for i, a in enumerate(args)])
    H = tg.hessian(fx)(x).reshape(x.size, x.size)
    gx = tg.grad(fx)
    eps = 1e-5
    H_fd = np.empty_like(H)
    for j in range(x.size):
        e = np.zeros(x.size)
        e[j] = eps
        e = e.reshape(x.shape)
        H_fd[:, j] = ((gx(x + e) - gx(x - e)) / (2 * eps)).ravel()
    assert rel(H, H_fd) <= 1e-5
    v = np.random.default_rng(1).standard_normal(x.shape)
    assert rel(tg.hvp(fx, x, v).ravel(), H @ v.ravel()) <= 1e-9
    assert rel(tg.jacfwd(gx)(x), tg.jacrev(gx)(x)) <= 1e-9


JACOBIANS = {
    "planar fk": (planar_fk, np.array([0.3, 0.5, -0.4])),
    "3-D fk (np.block)": (arm3d_fk, np.array([0.3, 0.5, -0.4, 0.2])),
    "3-D fk (zeros_like buffer)": (arm3d_fk_buffer, np.array([0.3, 0.5, -0.4, 0.2])),
    "quaternion rotation": (lambda q: quat_rotate(q, np.array([[1.0, 0.0, 0.5], [0.2, -1.0, 0.3]])),
                            np.array([0.9, 0.1, -0.2, 0.3])),
    "rodrigues": (lambda r: rodrigues(r, np.array([0.3, -0.2, 0.9])), np.array([0.3, -0.5, 0.2])),
    "heat step (in place)": (lambda u: heat_step(u, 0.7), np.linspace(0.1, 1.0, 6)),
    "burgers rk4 step": (lambda u: rk4_step(u, 0.05), np.linspace(0.1, 1.0, 6)),
    "implicit solve": (lambda u: np.linalg.solve(np.eye(4) * 3 + np.outer(u, u), u ** 2),
                       np.array([0.3, -0.5, 0.2, 0.8])),
}


@pytest.mark.parametrize("name", list(JACOBIANS))
def test_jacfwd_equals_jacrev_and_fd(name):
    f, x = JACOBIANS[name]
    jf, jr = tg.jacfwd(f)(x), tg.jacrev(f)(x)
    assert rel(jf, jr) <= 1e-12
    eps = 1e-6
    j_fd = np.stack([(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in np.eye(x.size)],
                    axis=-1)
    assert rel(jf, j_fd) <= 1e-7


# =============================================================================
# 4: checkpointing equals the plain tape
# =============================================================================
def heat_step(u, kappa, dx=0.1, dt=0.002):
    lap = np.zeros_like(u)
    lap[1:-1] = (u[2:] - 2 * u[1:-1] + u[:-2]) / dx ** 2
    u = u + dt * kappa * lap
    u[0] = 0.0
    return u


def test_step_heat_in_place_equals_tape():
    stepper = tg.step(heat_step, snapshots=3, steps=40)

    def run(step):
        def loss(u0, kappa):
            u = u0
            for _ in range(40):
                u = step(u, kappa)
            return np.sum(u ** 3)
        return loss
    u0, kappa = np.linspace(0.2, 1.0, 10), 0.7
    plain = tg.grad(run(heat_step), argnums=(0, 1))(u0, kappa)
    ck = tg.grad(run(stepper), argnums=(0, 1))(u0, kappa)
    assert_tree_close(ck, plain, 1e-12)
    assert stepper.stats.steps == 40 and stepper.stats.max_snapshots <= 3


def leapfrog(state, m, dt=0.01):
    x, v = state
    v = v + dt * gravity_acc(x, m)
    return x + dt * v, v


def test_loop_nbody_tuple_state_equals_tape():
    x0, m = ZOO["nbody"][1]

    def loss_plain(x0, m):
        s = (x0, np.zeros_like(x0))
        for _ in range(12):
            s = leapfrog(s, m)
        return np.sum(s[0][:, 0]) + 0.5 * np.sum(m[:, None] * s[1] ** 2)

    def loss_ck(x0, m):
        x, v = tg.loop(leapfrog, (x0, np.zeros_like(x0)), 12, m, snapshots=4)
        return np.sum(x[:, 0]) + 0.5 * np.sum(m[:, None] * v ** 2)
    assert_tree_close(tg.grad(loss_ck, argnums=(0, 1))(x0, m),
                      tg.grad(loss_plain, argnums=(0, 1))(x0, m), 1e-12)


def test_checkpoint_rk4_equals_tape():
    ck_step = tg.checkpoint(rk4_step)
    u0 = ZOO["burgers_rk4"][1][0]

    def loss(step):
        def f(u0, nu):
            u = u0
            for _ in range(6):
                u = step(u, nu)
            return np.sum(u ** 2)
        return f
    assert_tree_close(tg.grad(loss(ck_step), argnums=(0, 1))(u0, 0.05),
                      tg.grad(loss(rk4_step), argnums=(0, 1))(u0, 0.05), 1e-12)
    # and second order through the checkpointed step
    v = np.cos(np.arange(u0.size))
    assert rel(tg.hvp(lambda u: loss(ck_step)(u, 0.05), u0, v),
               tg.hvp(lambda u: loss(rk4_step)(u, 0.05), u0, v)) <= 1e-12


# =============================================================================
# float32 programs
# =============================================================================
def test_float32_heat_and_quaternion():
    u32 = np.random.default_rng(0).uniform(0, 1, 10).astype(np.float32)
    g32 = tg.grad(heat_slice, argnums=(0, 1))(u32, np.float32(0.7))
    g64 = tg.grad(heat_slice, argnums=(0, 1))(u32.astype(np.float64), 0.7)
    assert g32[0].dtype == np.float32 and np.asarray(g32[1]).dtype == np.float32
    assert rel(g32[0], g64[0]) <= 1e-5 and rel(g32[1], g64[1]) <= 1e-5
    jg = tg.jit(tg.grad(heat_slice, argnums=(0, 1)))
    for s in (0.0, 0.1):
        u = u32 + np.float32(s)
        assert_tree_close(jg(u, np.float32(0.7)),
                          tg.grad(heat_slice, argnums=(0, 1))(u, np.float32(0.7)), 1e-6)

    q = np.array([0.9, 0.1, -0.2, 0.3], np.float32)
    v = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    gq = tg.grad(quat_loss, argnums=(0, 1))(q, v)
    gq64 = tg.grad(quat_loss, argnums=(0, 1))(q.astype(np.float64), v.astype(np.float64))
    assert gq[0].dtype == np.float32 and gq[1].dtype == np.float32
    assert rel(gq[0], gq64[0]) <= 1e-4 and rel(gq[1], gq64[1]) <= 1e-4


# =============================================================================
# documented escapes are reported, not silently zero
# =============================================================================
def test_np_array_of_traced_scalars_warns():
    def fk(q):
        c, s = np.cos(q[0]), np.sin(q[0])
        rot = np.array([[c, -s], [s, c]])    # the documented escape: use np.stack
        return np.sum(rot @ np.array([1.0, 0.0]))
    with pytest.warns(tg.EscapeWarning):
        tg.grad(fk)(np.array([0.3]))


def test_trajectory_into_plain_rows_raises():
    def f(x0):
        traj = np.zeros(5)
        x = x0[0]
        for t in range(5):
            x = x - 0.1 * np.sin(x)
            traj[t] = x                      # a traced scalar into a plain buffer
        return np.sum(traj)
    with pytest.raises(tg.EscapeError):
        tg.grad(f)(np.array([0.5]))


# =============================================================================
# regressions: rules that decided from plain values, baked into jit plans
# =============================================================================
JIT_REGRESSIONS = {
    # norm's zero test (subgradient 0 at 0) was a constant of the first call
    "norm at zero": (lambda x: np.linalg.norm(x) + np.linalg.norm(x, 3) + np.linalg.norm(x, 0),
                     [np.zeros(3), np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 3.0])]),
    "norm rows at zero": (lambda x: np.sum(np.linalg.norm(x.reshape(2, 2), axis=1)),
                          [np.array([0.0, 0.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0, 4.0])]),
    "norm of a cross product": (lambda x: np.linalg.norm(np.cross(x[:3], x[3:])),
                                [np.array([1.0, 0, 0, 2, 0, 0]), np.array([1.0, 2, 3, 3, 1, 0])]),
    # np.angle's zero test in its derivative rules
    "angle at zero": (lambda x: np.sum(np.angle(x[:2] + 1j * x[2:])),
                      [np.array([0.0, 1, 0, 2]), np.array([1.0, 1, 3, 2])]),
    # np.interp's intervals and masks
    "interp x": (lambda x: np.sum(np.interp(x, np.linspace(0, 1, 5), np.arange(5.0) ** 2)
                                  * np.arange(1, 4)),
                 [np.array([0.1, 0.5, 0.7]), np.array([0.3, 0.9, 0.05]),
                  np.array([-0.2, 1.3, 0.6])]),
    "interp xp": (lambda p: np.sum(np.interp(np.array([0.1, 0.55, 0.7]), p, p ** 2)),
                  [np.array([0.0, 0.2, 0.4, 0.6, 0.8]), np.array([0.0, 0.05, 0.6, 0.65, 0.8])]),
    "interp period": (lambda x: np.sum(np.interp(x, np.array([0.1, 0.5, 0.3, 0.8]),
                                                 np.array([1.0, 2.0, 0.5, 0.2]),
                                                 period=1.0) ** 2),
                      [np.array([0.05, 0.4, 0.95]), np.array([0.35, 0.6, 1.7])]),
    # np.piecewise's condition masks
    "piecewise": (lambda x: np.sum(np.piecewise(x, [x < 0.5, x > 1.0],
                                                [lambda v: v ** 2, lambda v: 3 * v,
                                                 lambda v: -v])),
                  [np.array([0.05, 0.7, 1.95]), np.array([0.75, 0.6, 0.4])]),
    # np.unwrap's phase correction
    "unwrap": (lambda x: np.sum(np.unwrap(x * 4) ** 2),
               [np.array([0.1, 1.2, 0.1]), np.array([0.1, 0.2, 0.3])]),
    # np.geomspace's sign and np.polymul's trimming of leading zeros
    "geomspace sign": (lambda x: np.sum(np.geomspace(x[0], x[1], 4) ** 2),
                       [np.array([1.0, 2.0]), np.array([-1.0, -3.0]), np.array([2.0, 5.0])]),
    "polymul leading zeros": (lambda x: np.sum(np.polymul(x[:2], x[2:]) ** 2),
                              [np.array([0.0, 2.0, 1.0, 3.0]), np.array([1.0, 2.0, 0.0, 3.0]),
                               np.array([1.0, 2.0, 1.0, 3.0])]),
    # np.nan_to_num and the nan-reductions' NaN masks
    "nan_to_num": (lambda x: np.sum(np.nan_to_num(np.log(x) * x, nan=0.5, neginf=-3.0) ** 2),
                   [np.array([0.0, 1, -1, 2]), np.array([1.0, -1, 0, 2]),
                    np.array([1.0, 3, 2, 2])]),
    "nansum": (lambda x: np.nansum(np.sqrt(x) * x) + np.nanmax(np.sqrt(x)),
               [np.array([0.5, 1, -1, 2]), np.array([1.0, 3, 0.5, 2])]),
    "nanmean": (lambda x: np.nanmean(np.sqrt(x) * x) + np.nanvar(np.sqrt(x)),
                [np.array([0.5, 1, -1, 2]), np.array([1.0, 3, 0.5, 2])]),
}


@pytest.mark.parametrize("name", list(JIT_REGRESSIONS))
def test_jit_replay_of_value_dependent_rules(name):
    f, xs = JIT_REGRESSIONS[name]
    eager = tg.grad(f)
    jg, jf = tg.jit(eager), tg.jit(f)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for x in xs + xs[::-1]:
            np.testing.assert_allclose(jg(x), eager(x), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(jf(x), f(x), rtol=1e-12, atol=1e-12)
