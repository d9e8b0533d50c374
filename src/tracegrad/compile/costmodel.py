"""Per-group choice between a fused numba loop and NumPy calls on blocks.

A fused loop evaluates each function with a scalar libm call; NumPy may
evaluate the same function with SIMD code (``exp``, ``log``, ``tanh``... on
CPUs with AVX-512, NumPy's float64 versions are 3-6x faster than the scalar
ones). So a group heavy in such functions can be faster as a sequence of
NumPy ufunc calls with ``out=`` over cache-sized blocks (each temporary stays
in L1/L2) than as one loop, while arithmetic and memory-bound groups are
always faster fused.

The costs per element are *measured* on the machine the first time they
are needed: each function through the small-value machine (the same scalar
code a kernel runs, and already compiled) and through its NumPy ufunc on a
block, and the table is kept next to the kernels in the cache directory.
:func:`choose` compares the sums for a group's operations.
"""
import json
import os
import time

import numpy as np

from . import cache

#: elements per block when a group runs as NumPy calls
BLOCK = 8192
#: a block executor pays this per NumPy call (seconds), measured with the table
_FUNCS = ["sin", "cos", "tan", "exp", "expm1", "log", "log1p", "log2", "log10", "tanh", "sinh",
          "cosh", "arcsin", "arccos", "arctan", "arcsinh", "arctanh", "sqrt", "cbrt", "exp2",
          "multiply", "add", "divide", "power", "arctan2", "hypot"]
_TRANSCENDENTAL = frozenset(_FUNCS[:20]) - {"sqrt"}
_table = {}


def _path():
    import hashlib
    h = hashlib.sha256((cache.version_stamp() + np.__version__).encode()).hexdigest()[:16]
    return os.path.join(cache.cache_dir(), f"costs-{h}.json")


def table():
    """``{name: (fused ns/element, NumPy ns/element)}`` and the NumPy call
    overhead (``"__call__"``), measured once per machine and cached."""
    if _table:
        return _table
    p = _path()
    try:
        with open(p) as f:
            _table.update(json.load(f))
            return _table
    except (OSError, ValueError):
        pass
    _table.update(calibrate())
    try:
        tmp = p + f".{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(_table, f)
        os.replace(tmp, p)
    except OSError:  # pragma: no cover - read-only cache: keep it in memory
        pass
    return _table


def _best(fn, reps=5):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def calibrate(n=BLOCK):
    """Measure both executors per function (about 0.1 s)."""
    from .vm import OPCODE, machine
    vm = machine()
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 0.9, n)
    y = rng.uniform(0.1, 0.9, n)
    out = {}
    buf = np.concatenate([x, y, np.zeros(n)])
    empty = np.zeros((1, 10), np.int64)
    aux = np.zeros(1, np.int64)
    base = _best(lambda: vm(empty, aux, buf, 0, 1))
    # the machine's own per-element cost (a copy), beyond a kernel's loop
    copy = np.array([[OPCODE["copy"], 2 * n, n, 0, 1, 0, 0, 0, 0, 0]], np.int64)
    t_copy = max(_best(lambda: vm(copy, aux, buf, 0, 1)) - base, 0.0)
    for name in _FUNCS:
        if name not in OPCODE:
            continue
        uf = getattr(np, name)
        code = np.array([[OPCODE[name], 2 * n, n, 0, 1, n, 1, 0, 0, 0]], np.int64)
        t_vm = _best(lambda: vm(code, aux, buf, 0, 1)) - base
        o = np.empty(n)
        if uf.nin == 1:
            t_np = _best(lambda: uf(x, out=o))
        else:
            t_np = _best(lambda: uf(x, y, out=o))
        out[name] = (max(t_vm - t_copy, 0.0) / n * 1e9 + 0.3, t_np / n * 1e9)
    # Kernels evaluate these with rt's vector intrinsics, not the machine's
    # libm call. Timing them would compile a loop on a machine's first jit
    # (seconds); they are taken as half the cheaper of libm and NumPy
    # instead (measured on an AVX2 EPYC: exp 2.2 ns vs 5.3/5.6, log 2.3 vs
    # 4.6 NumPy, tanh 3.8-4.2 vs 14).
    from .codegen import _VECTOR_F64
    for name in _VECTOR_F64:
        if name in out:
            f, b = out[name]
            out[name] = (0.5 * min(f, b), b)
    small = np.empty(1)
    one = np.ones(1)
    out["__call__"] = _best(lambda: np.multiply(one, one, out=small), 20) * 1e9  # ns
    return out


def costs(ops):
    """(fused, blocked) estimated ns per element for a list of op names."""
    t = table()
    call = t.get("__call__", 800.0)
    fused = blocked = 0.0
    for name in ops:
        f, b = t.get(name, (0.3, 0.5))
        if name not in _TRANSCENDENTAL:
            f = 0.3  # arithmetic in a compiled loop pipelines (and often vectorises)
        fused += f
        # a NumPy call per op per block, plus the temporary's L1/L2 traffic
        blocked += b + call / BLOCK + 0.15
    return fused, blocked


def choose(ir, option="auto"):
    """``"fused"`` or ``"blocked"`` for a kernel IR (flat groups only)."""
    if option in ("fused", "blocked"):
        return option if (option == "fused" or ir.flat) else "fused"
    if not ir.flat or not any(op[0] in _TRANSCENDENTAL for op in ir.ops):
        return "fused"
    fused, blocked = costs([op[0] for op in ir.ops])
    return "blocked" if blocked < 0.85 * fused else "fused"




