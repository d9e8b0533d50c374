"""Checkpointed differentiation: recompute instead of storing.

Three user-facing functions, exported from ``tracegrad``:

``checkpoint(fun)``
    A call records only its inputs and outputs; its intermediates are
    recomputed when the backward walk reaches it (JAX ``checkpoint``
    semantics). The call is one node on the tape whose VJP re-runs ``fun``
    under :func:`tracegrad.vjp`, so the rule is NumPy code again and higher
    derivatives work.

``step(fun, snapshots=..., steps=..., ...)``
    The body of the user's own time loop. Consecutive calls, each receiving
    the previous call's output as its state, form a *chain*. Only the states a
    schedule picks are kept (copies, in slots); when the backward walk reaches
    the chain, steps are re-run from the nearest snapshot, and each one is
    taped just before it is reversed, so at most one step's tape exists at a
    time.

``loop(fun, state, n, *params)``
    ``for _ in range(n): state = step(state, *params)`` with the offline
    (Revolve) schedule, since ``n`` is known.

How a chain sits on the tape
----------------------------
Each step call binds one node (inputs: the state's and the parameters'
traced leaves; output: the new state's float leaves) and saves nothing on it.
When the next call arrives and the previous state object is gone and no other
recorded operation used it, the previous node is folded into the node before
it, which then stands for a whole range of steps. A clean loop therefore
keeps two nodes on the tape whatever its length. A state that *is* used
elsewhere (a loss summed over time, a convergence test recorded on the tape)
keeps its node boundary, so its cotangent enters the reversal exactly where
it belongs.

Chain integrity: a call continues a chain only when its state is the very
object the previous call returned, with unchanged values; anything else
(state modified between steps, a branch from an earlier state) starts a new
chain whose first state is copied. Recomputation can therefore never start
from a state that the recorded program did not compute.
"""
import bisect
import cmath
import functools
import gc
import math
import os
import sys
import threading
import time
import warnings
import weakref

import numpy as np

from .. import errors
from ..api import _lift, _pull, _settle, _trace_reverse
from ..core.array import TracedArray, bind, is_traced, tags_of, unwrap, wrap
from ..core.forward import ForwardLevel
from ..core.primitive import Primitive, ShapeDtype, Variadic
from ..core.pytree import tree_flatten, tree_unflatten, treedef_is_leaf
from ..core.tape import Tape, level_stack
from . import schedule as _sched
from .schedule import (Advance, ForwardTaped, FreeSnapshot, RestoreSnapshot, Reverse,
                       TakeSnapshot)
from .storage import SnapshotStore, parse_bytes, state_nbytes

__all__ = ["checkpoint", "step", "loop", "Stepper", "CheckpointStats", "CheckpointError"]

_EMPTY = {}
#: a merge scans at most this many nodes recorded after the chain's head node
_MERGE_SCAN = 64
#: default slot count when neither ``snapshots`` nor ``memory`` is given
DEFAULT_SNAPSHOTS = 20
#: collect the young GC generations after each reversed step (see _pull_step)
_COLLECT = os.environ.get("TRACEGRAD_CHECKPOINT_GC", "1") != "0"


CheckpointError = errors.CheckpointError


# =============================================================================
# Small helpers
# =============================================================================

def _is_float_leaf(x):
    if isinstance(x, np.ndarray):
        return x.dtype.kind in "fc"
    if isinstance(x, (bool, np.bool_)):
        return False
    return isinstance(x, (float, complex, np.floating, np.complexfloating))


def _payload(x, level):
    """``x``'s payload on ``level`` (its tangent on a forward level)."""
    return tags_of(x).get(level) if type(x) is TracedArray else None


def _tapes():
    return [lv for lv in level_stack() if isinstance(lv, Tape)]


def _captures():
    return any(lv.captures_all for lv in level_stack())


def _fingerprint(x):
    """A summary of an array's values (two passes), to notice that a
    parameter was modified in place; ``None`` for non-numeric values."""
    if isinstance(x, np.ndarray) and x.dtype.kind in "biufc":
        f = x.ravel()
        if x.dtype.kind in "fc":
            return (x.shape, x.dtype.str, complex(f.sum()), complex(np.vdot(f, f)))
        return (x.shape, x.dtype.str, int(f.sum(dtype=np.int64)),
                int(np.dot(f[::7], f[::7].astype(np.int64))) if f.size else 0)
    return None


def _sample(x):
    """Up to 64 values of ``x`` at fixed positions: a cheap check that a
    recomputed state equals the recorded one."""
    f = np.asarray(x).ravel()
    if f.size > 64:
        f = f[::-(-f.size // 64)]
    return f.copy()


def _same_fp(a, b):
    if a == b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same_fp(x, y) for x, y in zip(a, b))
    if isinstance(a, complex):
        return cmath.isnan(a) and cmath.isnan(b)
    if isinstance(a, float):
        return math.isnan(a) and math.isnan(b)
    return False


def _same_static(a, b):
    """Equality of two non-array leaves (Python scalars, strings, None, ...)."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, (int, float, complex, str, bytes, np.generic)):
        return _same_fp(a, b)
    return False


def _closure_error(fun, what):
    name = getattr(fun, "__name__", "the function")
    return CheckpointError(
        f"{what} {name} returned a traced value although it was run on plain inputs: it "
        f"reads a differentiated value that is not among its arguments (a closure over a "
        f"variable of the function being differentiated). Pass that value as an argument, "
        f"e.g. step(state, nu) instead of a step that reads nu from the enclosing scope.")


def _vjp_flat(fun, primals, ct, nb):
    """Cotangents of ``primals`` for ``fun(*primals) -> tuple`` pulled back from ``ct``."""
    tape, ins, treedef, out_leaves, out_def, out_vars, _ = _trace_reverse(fun, primals, False)
    return _pull(tape, ins, treedef, out_leaves, out_def, out_vars, ct, free=True, nb=nb)


def _jvp_flat(fun, primals, tangents, nb):
    """Output tangents of ``fun(*primals) -> tuple``; ``None`` tangents are zero."""
    level = ForwardLevel(nb)
    with level:
        traced = [x if t is None else _lift(x, level, t) for x, t in zip(primals, tangents)]
        outs = fun(*traced)
    return tuple(_payload(o, level) for o in outs)


def _trace_owned(fun, primals, n_owned):
    """``api._trace_reverse`` for plain inputs, the first ``n_owned`` of which
    belong to the caller and are not used again: those are wrapped without
    the defensive copy (an in-place write by ``fun`` can only touch them)."""
    tape = Tape()
    with tape:
        ins = []
        traced = []
        for k, x in enumerate(primals):
            arr = x if type(x) is np.ndarray else np.asarray(x)
            if k >= n_owned or arr.base is not None or not arr.flags.writeable:
                arr = np.array(arr, copy=True)
            v = tape.new_var()
            ins.append((v, ShapeDtype(arr.shape, arr.dtype)))
            traced.append(wrap(arr, {tape: v}))
        res = _settle(fun(*traced))
    out_leaves, out_def = tree_flatten(res)
    out_vars = [tags_of(x).get(tape, -1) if type(x) is TracedArray else -1 for x in out_leaves]
    treedef = tree_flatten(tuple(primals))[1]
    return tape, ins, treedef, out_leaves, out_def, out_vars


def _zeros_like_ct(x, batch):
    shape = np.shape(x)
    dt = np.result_type(x)
    if dt.kind not in "fc":
        dt = np.dtype(float)
    return np.zeros(tuple(batch) + tuple(shape), dt)


def _nb_of(g, ans):
    if type(g) is tuple:
        for x, a in zip(g, ans):
            if x is not None:
                return np.ndim(x) - len(a.shape)
        return 0
    return np.ndim(g) - len(ans.shape)


def _batch_of(g, nb):
    for x in g:
        if x is not None:
            return np.shape(x)[:nb]
    return ()


class _NodeRule:
    """The VJP of one tape node, computed once per visit for every input.

    The backward walk asks a node for one input's cotangent at a time
    (``vjp[i](g, ...)``). A recomputing rule must not run once per input, so
    the first request of a visit computes all of them and the rest are served
    from the cache, which is dropped after the last input the node's tape
    will ask for (``expect``). ``compute(g, ans, args)`` returns one
    cotangent (or ``None``) per input.
    """

    __slots__ = ("compute", "jvp", "info", "last", "_g", "_cts")

    def __init__(self, compute, jvp, ins, info=None):
        self.compute = compute
        self.jvp = jvp
        self.info = info
        wanted = [i for i, v in enumerate(ins) if v >= 0]
        self.last = wanted[-1] if wanted else -1
        self._g = None
        self._cts = None

    def __call__(self, i, g, ans, *args, **params):
        if self._cts is None or self._g is not g:
            self._g = None
            self._cts = None
            cts = self.compute(g, ans, args)
            self._g = g
            self._cts = cts
        c = self._cts[i]
        if i >= self.last:
            self._g = None
            self._cts = None
        return c


def _adopt(prim, marks, make_rule, nout, name):
    """Give every node that ``bind`` just recorded for ``prim`` its own
    primitive (a per-node rule cache). Returns ``{tape: node}``."""
    out = {}
    for tape, m in marks.items():
        nodes = tape.nodes
        if len(nodes) > m and nodes[m].prim is prim:
            node = nodes[m]
            rule = make_rule(node)
            node.prim = Primitive(name, _no_impl, vjp=Variadic(rule), jvp=rule.jvp, nout=nout)
            out[tape] = node
    return out


def _no_impl(*args, **kwargs):
    raise RuntimeError("a checkpoint node's primitive is never evaluated directly")


def _rule_of(node):
    return node.prim.vjp.rule


# =============================================================================
# checkpoint(fun)
# =============================================================================

def checkpoint(fun=None):
    """Recompute ``fun``'s intermediates in the backward pass instead of storing them.

    A call of the returned function appears on the tape as a single node that
    keeps only its inputs. When the backward walk reaches it, ``fun`` is run
    again under :func:`tracegrad.vjp` on the saved inputs and the cotangent is
    pulled back through that fresh tape, which is dropped right after. Memory
    for the call's intermediates is thus needed once, during its own backward
    step, at the price of evaluating ``fun`` a second time.

    Parameters
    ----------
    fun : callable
        Ordinary NumPy code. Arguments and results may be pytrees (tuples,
        lists, dicts) of arrays; traced array leaves are differentiated, any
        other argument (Python numbers, strings, plain arrays, objects) is
        treated as a constant. ``fun`` must be deterministic and must take
        every differentiated value it reads as an argument (see
        :class:`CheckpointError`).

    Returns
    -------
    callable
        Same signature as ``fun``. Outside any ``grad``/``vjp`` it simply
        calls ``fun``; under forward mode alone it is ``fun`` too (forward
        mode stores nothing). Calls may nest, and ``grad(grad(...))``,
        ``jvp``, ``jacfwd``/``jacrev`` and ``hessian`` work through it.

    See Also
    --------
    step : checkpointing for the steps of a long loop.

    Examples
    --------
    >>> import numpy as np, tracegrad as tg
    >>> @tg.checkpoint
    ... def block(x, w):
    ...     for _ in range(3):
    ...         x = np.tanh(w * x)
    ...     return x
    >>> x = np.linspace(0.0, 1.0, 4)
    >>> g = tg.grad(lambda w: np.sum(block(x, w)))(0.5)
    >>> ref = tg.grad(lambda w: np.sum(block.__wrapped__(x, w)))(0.5)
    >>> bool(np.isclose(g, ref, rtol=1e-12))
    True
    """
    if fun is None:
        return checkpoint
    if not callable(fun):
        raise TypeError(f"checkpoint expects a function, got {type(fun).__name__}")
    name = f"checkpoint({getattr(fun, '__name__', 'fun')})"

    @functools.wraps(fun)
    def wrapper(*args, **kwargs):
        tapes = _tapes()
        if not tapes or _captures():
            return fun(*args, **kwargs)
        leaves, tdef = tree_flatten((args, kwargs))
        dyn = [i for i, x in enumerate(leaves) if is_traced(x)]
        if not dyn:
            return fun(*args, **kwargs)
        plain = [unwrap(x) for x in leaves]
        a, kw = tree_unflatten(tdef, plain)
        out = fun(*a, **kw)
        ol, odef = tree_flatten(out)
        if any(type(y) is TracedArray for y in ol):
            raise _closure_error(fun, "the checkpointed function")
        fo = [i for i, y in enumerate(ol) if _is_float_leaf(y)]
        if not fo:
            return out
        # The recomputation closes over the constant leaves only; the traced
        # ones are saved by the node itself.
        const = list(plain)
        for i in dyn:
            const[i] = None

        def f_dyn(*vals):
            full = list(const)
            for i, v in zip(dyn, vals):
                full[i] = v
            a2, kw2 = tree_unflatten(tdef, full)
            res = tree_flatten(fun(*a2, **kw2))[0]
            return tuple(res[i] for i in fo)

        nout = len(fo)
        outs = tuple(ol[i] for i in fo)

        def jvp_rule(ts, ans, *vals, **params):
            nb = next(np.ndim(t) - np.ndim(v) for t, v in zip(ts, vals) if t is not None)
            touts = _jvp_flat(f_dyn, vals, ts, nb)
            return touts if nout > 1 else touts[0]

        def compute(g, ans, vals):
            nb = _nb_of(g, ans)
            ct = g if type(g) is tuple else (g,)
            return list(_vjp_flat(f_dyn, vals, ct, nb))

        prim = Primitive(name, lambda *v: outs if nout > 1 else outs[0], jvp=jvp_rule,
                         nout=nout, save_args=True, save_ans=False)
        marks = {t: len(t.nodes) for t in tapes}
        res = bind(prim, tuple(leaves[i] for i in dyn), _EMPTY)
        _adopt(prim, marks, lambda node: _NodeRule(compute, jvp_rule, node.ins), nout, name)
        res = res if nout > 1 else (res,)
        for i, r in zip(fo, res):
            ol[i] = r
        return tree_unflatten(odef, ol)

    wrapper.__wrapped__ = fun
    return wrapper


# =============================================================================
# Statistics and progress
# =============================================================================

class CheckpointStats:
    """What a checkpointed run did, for one gradient evaluation.

    Attributes
    ----------
    steps : int
        Step calls in the forward sweep (the user's loop).
    segments : int
        Chains the calls formed (more than one when the state was changed
        between steps, see :func:`step`).
    snapshots : int
        Slot budget of the chains (the initial state included).
    schedule : str
        ``"revolve"``, ``"online"`` or ``"sqrt"``.
    forward_evaluations, recomputations, taped : int
        Step evaluations in the forward sweep, untaped re-evaluations during
        the backward walk, and taped evaluations (one per reversed step).
    evaluations : int
        Their sum.
    snapshots_taken, restores, max_snapshots : int
        Snapshot writes, reads, and the most slots held at once.
    bytes_held, peak_bytes : int
        Snapshot storage (RAM and disk) held now and at most.
    peak_ram_bytes, peak_disk_bytes : int
        The same, per storage level.
    disk_bytes_written, disk_bytes_read : int
        Disk traffic.
    forward_time, reverse_time : float
        Seconds spent in step evaluations of the forward sweep and in the
        reversal (recomputation, taping and pulling back).
    """

    _FIELDS = ("steps", "segments", "snapshots", "schedule", "forward_evaluations",
               "recomputations", "taped", "evaluations", "snapshots_taken", "restores",
               "max_snapshots", "bytes_held", "peak_bytes", "peak_ram_bytes", "peak_disk_bytes",
               "disk_bytes_written", "disk_bytes_read", "forward_time", "reverse_time")

    def __init__(self):
        self.steps = 0
        self.segments = 0
        self.snapshots = 0
        self.schedule = None
        self.forward_evaluations = 0
        self.recomputations = 0
        self.taped = 0
        self.snapshots_taken = 0
        self.restores = 0
        self.max_snapshots = 0
        self._in_use = 0
        self.bytes_held = 0
        self.peak_bytes = 0
        self._ram = 0
        self._disk = 0
        self.peak_ram_bytes = 0
        self.peak_disk_bytes = 0
        self.disk_bytes_written = 0
        self.disk_bytes_read = 0
        self.forward_time = 0.0
        self.reverse_time = 0.0

    @property
    def evaluations(self):
        return self.forward_evaluations + self.recomputations + self.taped

    def _held(self, nbytes, disk):
        self.bytes_held += nbytes
        self.peak_bytes = max(self.peak_bytes, self.bytes_held)
        if disk:
            self._disk += nbytes
            self.peak_disk_bytes = max(self.peak_disk_bytes, self._disk)
        else:
            self._ram += nbytes
            self.peak_ram_bytes = max(self.peak_ram_bytes, self._ram)

    def _slots(self, delta):
        self._in_use += delta
        self.max_snapshots = max(self.max_snapshots, self._in_use)

    def as_dict(self):
        """The statistics as a plain dict."""
        return {k: getattr(self, k) for k in self._FIELDS}

    def __repr__(self):
        d = self.as_dict()
        parts = []
        for k, v in d.items():
            if k.endswith("_time"):
                parts.append(f"{k}={v:.3g}s")
            elif "bytes" in k:
                parts.append(f"{k}={_fmt_bytes(v)}")
            else:
                parts.append(f"{k}={v!r}")
        return "CheckpointStats(" + ", ".join(parts) + ")"


def _fmt_bytes(n):
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return str(n)


class _TextBar:
    """Minimal progress line on stderr when tqdm is not installed."""

    def __init__(self, total, desc):
        self.total = total
        self.desc = desc
        self.n = 0
        self._last = 0.0
        self._t0 = time.perf_counter()

    def update(self, k=1):
        self.n += k
        now = time.perf_counter()
        if now - self._last >= 0.5 or self.n >= self.total:
            self._last = now
            el = now - self._t0
            eta = el / self.n * (self.total - self.n) if self.n else float("nan")
            sys.stderr.write(f"\r{self.desc}: {self.n}/{self.total} steps "
                             f"[{el:.0f}s elapsed, ~{eta:.0f}s left]")
            sys.stderr.flush()

    def close(self):
        sys.stderr.write("\n")
        sys.stderr.flush()


def _make_bar(total, desc, forced):
    """A tqdm bar when tqdm is installed; else a text line on stderr, only
    when asked for explicitly or when stderr is a terminal."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        isatty = getattr(sys.stderr, "isatty", None)
        if forced or (isatty is not None and isatty()):
            return _TextBar(total, desc)
        return None
    return tqdm(total=total, desc=desc, unit="step", leave=False)


# =============================================================================
# Streaming schedules
# =============================================================================
# The colleague's schedule module returns whole action lists; a list for
# n = 10,000 steps holds ~40,000 Action objects (~3 MB), which is more than the
# snapshots of a small state. These generators yield the identical actions
# one at a time (tests compare them with revolve() and OnlineSchedule.reverse()).

def _stream_reversal(a, b, s, slot, free, restore):
    """Generator twin of ``schedule._emit_reversal`` (same actions, same order)."""
    stack = [(a, b, s, slot, restore)]
    while stack:
        a, b, s, slot, restore = stack.pop()
        if restore:
            yield RestoreSnapshot(a, slot)
        if b - a == 1:
            if slot is not None:
                free.append(slot)
                yield FreeSnapshot(a, slot)
            yield ForwardTaped(a)
            yield Reverse(a)
            continue
        if s == 1:
            for i in range(b - 1, a - 1, -1):
                if i != b - 1:
                    yield RestoreSnapshot(a, slot)
                if i == a:
                    free.append(slot)
                    yield FreeSnapshot(a, slot)
                else:
                    yield Advance(a, i)
                yield ForwardTaped(i)
                yield Reverse(i)
            continue
        m = a + _sched._split(b - a, s)
        yield Advance(a, m)
        if b - m >= 2:
            slot_m = free.pop()
            yield TakeSnapshot(m, slot_m)
        else:
            slot_m = None
        stack.append((a, m, s, slot, True))
        stack.append((m, b, s - 1, slot_m, False))


def stream_revolve(n, s):
    """Yield the actions of ``schedule.revolve(n, s)`` one at a time."""
    _sched._check_args(n, s)
    if n == 0:
        return
    if n == 1:
        yield ForwardTaped(0)
        yield Reverse(0)
        return
    s = min(s, n - 1)
    free = list(range(s - 1, 0, -1))
    yield TakeSnapshot(0, 0)
    yield from _stream_reversal(0, n, s, 0, free, False)


def stream_from_held(held, end, s, free):
    """Reverse steps ``0 .. end - 1`` from the held states ``{step: slot}``.

    Each segment after a held state is reversed by Revolve with the slots not
    pinned by earlier held states (the reversal of
    :meth:`schedule.OnlineSchedule.reverse`). ``held`` must contain state 0
    and at most ``s`` states below ``end``; ``free`` lists the other slots.
    """
    cs = sorted(held)
    bounds = cs + [end]
    for j in range(len(cs) - 1, -1, -1):
        yield from _stream_reversal(bounds[j], bounds[j + 1], s - j, held[cs[j]], free, True)


# =============================================================================
# Parameters of a chain
# =============================================================================

class _ParamEntry:
    """The non-state arguments of a run of consecutive steps that used the
    same objects. Holds plain values for recomputation, weak references to
    traced leaves (higher order), and fingerprints of array leaves so that an
    in-place modification is noticed instead of silently recomputed."""

    __slots__ = ("start", "pdef", "plain", "refs", "dyn", "fps", "call")

    def __init__(self, start, leaves, pdef):
        self.start = start
        self.pdef = pdef
        self.plain = []
        self.refs = []
        self.dyn = []
        self.fps = []
        self.call = None        # (args, kwargs) of the plain values, built on first use
        for j, x in enumerate(leaves):
            if type(x) is TracedArray:
                self.plain.append(unwrap(x))
                self.refs.append(weakref.ref(x))
                if is_traced(x):
                    self.dyn.append(j)
            else:
                self.plain.append(x)
                self.refs.append(None)
            self.fps.append(_fingerprint(unwrap(x)) if isinstance(x, np.ndarray) else None)

    def same(self, leaves, pdef):
        if pdef != self.pdef or len(leaves) != len(self.plain):
            return False
        for x, p, r in zip(leaves, self.plain, self.refs):
            if r is not None:
                if r() is not x:
                    return False
            elif isinstance(x, np.ndarray) or isinstance(p, np.ndarray):
                if x is not p:
                    return False
            elif not (_same_static(x, p) if isinstance(x, (int, float, complex, str, bytes,
                                                            np.generic)) else x is p):
                return False
        return True

    def plain_call(self):
        if self.call is None:
            self.call = tree_unflatten(self.pdef, self.plain)
        return self.call

    def check(self, where):
        for j, (p, fp) in enumerate(zip(self.plain, self.fps)):
            if fp is not None and not _same_fp(_fingerprint(p), fp):
                raise CheckpointError(
                    f"parameter leaf {j} of a checkpointed step was modified in place {where}; "
                    f"re-running earlier steps would use the new values. Pass a new array "
                    f"(e.g. f = f.copy()) or make it part of the state.")

    def traced(self):
        out = []
        for x, r in zip(self.plain, self.refs):
            if r is None:
                out.append(x)
                continue
            t = r()
            if t is None:
                raise CheckpointError(
                    "a higher-order derivative through tracegrad.step needs the traced "
                    "parameters of every step, but one of them no longer exists; pass the "
                    "same parameter objects to every step call")
            out.append(t)
        return out


class _Params:
    def __init__(self):
        self.starts = []
        self.entries = []

    def add(self, k, leaves, pdef):
        if self.entries:
            e = self.entries[-1]
            if e.same(leaves, pdef):
                return e
        e = _ParamEntry(k, leaves, pdef)
        self.starts.append(k)
        self.entries.append(e)
        return e

    def at(self, k):
        return self.entries[bisect.bisect_right(self.starts, k) - 1]

    def check(self, lo, hi):
        i = bisect.bisect_right(self.starts, lo) - 1
        j = bisect.bisect_right(self.starts, hi - 1)
        for e in self.entries[max(i, 0):j]:
            e.check("while the steps ran or after")

    def any_traced(self):
        for e in self.entries:
            for r in e.refs:
                if r is not None:
                    t = r()
                    if t is not None and is_traced(t):
                        return True
        return False


# =============================================================================
# Configuration, chains
# =============================================================================

class _Config:
    __slots__ = ("steps", "snapshots", "memory", "schedule", "disk", "disk_snapshots",
                 "disk_memory", "progress", "progress_after", "jit")

    def __init__(self, steps, snapshots, memory, schedule, disk, disk_snapshots, disk_memory,
                 progress, progress_after, jit=False):
        if steps is not None and (not isinstance(steps, (int, np.integer)) or steps < 0):
            raise ValueError(f"steps must be an int >= 0 or None, got {steps!r}")
        if snapshots is not None and (not isinstance(snapshots, (int, np.integer))
                                      or snapshots < 1):
            raise ValueError(f"snapshots must be an int >= 1, got {snapshots!r}")
        if schedule not in (None, "revolve", "online", "sqrt"):
            raise ValueError(f"schedule must be 'revolve', 'online', 'sqrt' or None, got "
                             f"{schedule!r}")
        if schedule in ("revolve", "sqrt") and steps is None:
            raise ValueError(f"schedule={schedule!r} plans the whole chain in advance and needs "
                             f"steps=n (the number of step calls); use schedule='online' when "
                             f"it is not known")
        if disk_snapshots and disk_memory is not None:
            raise ValueError("give the disk level as disk_snapshots or disk_memory, not both")
        self.steps = None if steps is None else int(steps)
        self.snapshots = None if snapshots is None else int(snapshots)
        self.memory = None if memory is None else parse_bytes(memory)
        self.schedule = schedule
        self.disk = disk
        self.disk_snapshots = int(disk_snapshots or 0)
        self.disk_memory = None if disk_memory is None else parse_bytes(disk_memory)
        self.progress = progress
        self.progress_after = progress_after
        self.jit = bool(jit)

    def slots(self, nbytes):
        """``(ram_slots, disk_slots)`` for a state of ``nbytes`` bytes."""
        nbytes = max(nbytes, 1)
        ram = self.snapshots
        if self.memory is not None:
            by_mem = self.memory // nbytes
            if by_mem < 1:
                raise ValueError(
                    f"memory={_fmt_bytes(self.memory)} cannot hold a single snapshot of the "
                    f"state ({_fmt_bytes(nbytes)}); raise the budget")
            ram = by_mem if ram is None else min(ram, by_mem)
        if ram is None:
            ram = DEFAULT_SNAPSHOTS
        disk = self.disk_snapshots
        if self.disk_memory is not None:
            disk = self.disk_memory // nbytes
        return int(ram), int(disk)

    def kind(self, steps):
        if self.schedule is not None:
            return self.schedule
        return "online" if steps is None else "revolve"


class _JitSteps:
    """Compiled versions of a step function (``step(..., jit=True)``).

    ``fwd`` is ``tracegrad.jit`` of the step itself (the untaped
    recomputations); ``vjp(...)`` returns, per state/parameter structure, the
    compiled function running the step under ``tracegrad.vjp`` and pulling a
    cotangent back, forward and backward fused into one plan. Both are used
    only while no transform level is active (the backward walk of ``grad``):
    ``jit`` runs eagerly inside other transforms anyway.
    """

    #: more traces than this (a static value changing every step, such as a
    #: Python int in the state) and the chain goes back to eager steps
    MAX_TRACES = 32

    def __init__(self, fun):
        from ..compile import jit
        self._jit = jit
        self.fun = fun
        self.fwd = jit(lambda state, args, kwargs: fun(state, *args, **kwargs))
        self._vjps = {}
        self.off = False

    def check(self, f):
        if f.stats["traces"] > self.MAX_TRACES and not self.off:
            self.off = True
            warnings.warn(
                f"tracegrad.step(..., jit=True): the compiled step of "
                f"{getattr(self.fun, '__name__', 'fun')} was traced more than "
                f"{self.MAX_TRACES} times (a Python number in its state or parameters "
                f"changes every step?); running it eagerly from now on",
                RuntimeWarning, stacklevel=2)

    def vjp(self, sdef, pdef, fi, dyn, name):
        key = (sdef, pdef, fi, dyn)
        f = self._vjps.get(key)
        if f is None:
            fun = self.fun
            from ..api import vjp as _vjp

            def taped(fl, dl, base, pstatic, adj):
                box = []

                def keep(fo, ol):
                    box[:] = fo
                g = _float_step(fun, sdef, pdef, name, base, pstatic, fi, dyn, keep)
                out, pull = _vjp(g, *fl, *dl)
                ct = tuple(adj[i] if adj[i] is not None else np.zeros_like(o)
                           for i, o in zip(box, out))
                return out, pull(ct), np.array(box, dtype=np.int64)

            f = self._vjps[key] = self._jit(taped)
        return f


def _split_grads(grads, fi, dyn, pacc):
    """A step's input cotangents: the state's (returned, by leaf position) and
    the dynamic parameters' (added into ``pacc``)."""
    new = {i: grads[m] for m, i in enumerate(fi)}
    off = len(fi)
    for m, j in enumerate(dyn):
        c = grads[off + m]
        prev = pacc.get(j)
        pacc[j] = c if prev is None else prev + c
    return new


def _float_step(fun, sdef, pdef, name, base, pstatic, fi, dyn, record):
    """The step as a function of its float state leaves (positions ``fi`` in
    ``base``) and dynamic parameters (positions ``dyn`` in ``pstatic``),
    returning its float output leaves; ``record(fo, ol)`` receives each
    call's float output positions and all output leaves."""
    def f(*vals):
        st = list(base)
        for i, v in zip(fi, vals):
            st[i] = v
        pp = list(pstatic)
        for j, v in zip(dyn, vals[len(fi):]):
            pp[j] = v
        params, kw = tree_unflatten(pdef, pp)
        ol, odef = tree_flatten(fun(tree_unflatten(sdef, st), *params, **kw))
        if odef != sdef:
            raise _structure_error(name, sdef, odef)
        fo = [i for i, y in enumerate(ol) if _is_float_leaf(y)]
        record(fo, ol)
        return tuple(ol[i] for i in fo)
    return f


class _Chain:
    """The states, schedule and recomputation of one chain of step calls.

    Steps are numbered from 0 within the chain; state ``k`` is step ``k``'s
    input. The forward sweep is the user's loop: it runs the schedule's
    snapshot actions for the states it passes. The reversal executes the rest
    of the schedule one action at a time, pausing after each requested range
    of steps (a tape node) has been reversed.
    """

    def __init__(self, fun, cfg, sdef, x0, stats, steps, root_refs, jitted=None):
        self.fun = fun
        self.jitted = jitted
        self.name = getattr(fun, "__name__", None) or getattr(
            getattr(fun, "func", None), "__name__", "step")
        self.sdef = sdef
        self.leaf = treedef_is_leaf(sdef)
        self.n = 0
        self.params = _Params()
        self.stats = stats
        ram, disk = cfg.slots(state_nbytes(x0))
        self.s = ram + disk
        self.store = SnapshotStore(self.s, disk_slots=disk, disk_dir=cfg.disk, stats=stats)
        self.store.set_root(x0)
        self.root_refs = root_refs
        self.kind = cfg.kind(steps)
        self.planned = steps
        self.cfg = cfg
        self.held = {}            # step -> slot
        self.stream = None
        self.pending = None
        self.adv_end = 0
        self.next_rev = None      # the step the stream reverses next; None: no valid stream
        self.cur = None
        self.online = None
        self.fp_out = None
        self.step_time = 0.0
        self.bar = None
        self.warned = False
        self._nt_key = None
        self._nt = False
        if self.kind == "revolve":
            self.stream = stream_revolve(steps, self.s)
        elif self.kind == "sqrt":
            self.stream = iter(_sched.sqrt_schedule(steps, self.s))
        else:
            self.online = _sched.OnlineSchedule(self.s)
        stats.segments += 1
        stats.snapshots = max(stats.snapshots, self.s)
        stats.schedule = self.kind

    # --- snapshots ------------------------------------------------------------
    def _take(self, step, slot, leaves):
        self.store.put(slot, step, leaves)
        self.held[step] = slot
        self.stats._slots(+1)

    def _free(self, step, slot):
        if self.held.get(step) == slot:
            del self.held[step]
            self.stats._slots(-1)
        self.store.free(slot)

    def _next(self):
        act = self.pending
        if act is not None:
            self.pending = None
            return act
        return next(self.stream, None)

    def _peek(self):
        if self.pending is None:
            self.pending = next(self.stream, None)
        return self.pending

    # --- forward sweep --------------------------------------------------------
    def forward(self, k, x):
        """Snapshot actions while state ``k`` (plain leaves ``x``) is current."""
        if self.online is not None:
            for act in self.online.forward(k):
                t = type(act)
                if t is TakeSnapshot:
                    self._take(act.step, act.slot, x)
                elif t is FreeSnapshot:
                    self._free(act.step, act.slot)
        elif self.stream is not None and k >= self.adv_end:
            while True:
                act = self._peek()
                t = type(act)
                if t is TakeSnapshot and act.step == k:
                    self._take(act.step, act.slot, x)
                    self.pending = None
                elif t is FreeSnapshot:
                    self._free(act.step, act.slot)
                    self.pending = None
                elif t is Advance and act.start == k:
                    self.adv_end = act.end
                    self.pending = None
                    break
                elif t is ForwardTaped and act.step == k:
                    # The reversal starts by taping this step from here.
                    self.cur = [np.array(v, copy=True) if isinstance(v, np.ndarray) else v
                                for v in x]
                    self.next_rev = k
                    break
                else:
                    self._deviate(k)
                    break
        self.n = k + 1

    def _deviate(self, k):
        self.stream = None
        self.pending = None
        self.next_rev = None
        self.cur = None
        if not self.warned and self.planned is not None and k >= self.planned:
            self.warned = True
            warnings.warn(
                f"tracegrad.step({self.name}): more than steps={self.planned} step calls in one "
                f"chain; the extra steps take no snapshots and are recomputed from the last one. "
                f"Pass the right steps= (or leave it out for the online schedule).",
                RuntimeWarning, stacklevel=4)

    # --- evaluation -----------------------------------------------------------
    def _eval(self, k, cur):
        params, kw = self.params.at(k).plain_call()
        jitted = self.jitted
        if jitted is not None and not jitted.off and not level_stack():
            state = cur[0] if self.leaf else tree_unflatten(self.sdef, cur)
            leaves, odef = tree_flatten(jitted.fwd(state, params, kw))
            jitted.check(jitted.fwd)
            if odef != self.sdef:
                raise _structure_error(self.name, self.sdef, odef)
            return leaves
        if self.leaf:
            out = self.fun(cur[0], *params, **kw)
            if isinstance(out, (tuple, list, dict)):
                raise _structure_error(self.name, self.sdef, tree_flatten(out)[1])
            return [out]
        out = self.fun(tree_unflatten(self.sdef, cur), *params, **kw)
        leaves, odef = tree_flatten(out)
        if odef != self.sdef:
            raise _structure_error(self.name, self.sdef, odef)
        return leaves

    def _advance(self, a, b, cur):
        st = self.stats
        for k in range(a, b):
            cur = self._eval(k, cur)
            st.recomputations += 1
        return cur

    def _taped_reverse(self, k, cur, adj, pacc, nb):
        """Tape step ``k`` from state ``cur`` (owned by the chain) and pull
        ``adj`` (the cotangent of state ``k + 1``) back through it. Returns
        the cotangent of state ``k``; parameter cotangents add into ``pacc``.

        The automatic GC is paused meanwhile and generation 0 collected
        after: a step's tape is reference-cyclic as soon as the step slices
        (the core's alias groups), and collected this way it is freed before
        the next step instead of one dead tape per step piling up in the
        older generations."""
        paused = _COLLECT and gc.isenabled()
        if paused:
            gc.disable()
        try:
            new = self._taped_reverse_inner(k, cur, adj, pacc, nb)
        finally:
            if paused:
                gc.enable()
        if _COLLECT:
            gc.collect(0)
        return new

    def _taped_reverse_inner(self, k, cur, adj, pacc, nb):
        e = self.params.at(k)
        fi = [i for i, x in enumerate(cur) if _is_float_leaf(x)]
        dyn = e.dyn
        if self.jitted is not None and not self.jitted.off and nb == 0 and not level_stack():
            return self._taped_reverse_jit(k, e, cur, fi, adj, pacc)
        base = list(cur)
        for i in fi:
            base[i] = None
        plain = e.plain
        pdef = e.pdef
        fun = self.fun
        sdef = self.sdef
        name = self.name
        box = []
        f = _float_step(fun, sdef, pdef, name, base, plain, fi, dyn,
                        lambda fo, ol: box.append((fo, ol)))

        primals = [cur[i] for i in fi] + [plain[j] for j in dyn]
        cur = None
        tape, ins, treedef, out_leaves, out_def, out_vars = _trace_owned(f, primals, len(fi))
        primals = None
        fo, ol = box.pop()
        self.stats.taped += 1
        if k == self.n - 1:
            self._check_replay(k, [unwrap(ol[i]) for i in fo])
        batch = _batch_of(adj.values(), nb)
        ct = []
        for i in fo:
            c = adj.get(i)
            ct.append(_zeros_like_ct(unwrap(ol[i]), batch) if c is None else c)
        adj = None
        ol = None
        grads = _pull(tape, ins, treedef, out_leaves, out_def, out_vars, tuple(ct), free=True,
                      nb=nb)
        return _split_grads(grads, fi, dyn, pacc)

    def _taped_reverse_jit(self, k, e, cur, fi, adj, pacc):
        dyn = e.dyn
        f = self.jitted.vjp(self.sdef, e.pdef, tuple(fi), tuple(dyn), self.name)
        base = list(cur)
        for i in fi:
            base[i] = None
        pstatic = list(e.plain)
        for j in dyn:
            pstatic[j] = None
        fl = [cur[i] for i in fi]
        dl = [e.plain[j] for j in dyn]
        cur = None
        out, grads, fo = f(fl, dl, base, pstatic, [adj.get(i) for i in range(len(base))])
        self.jitted.check(f)
        self.stats.taped += 1
        if k == self.n - 1:
            self._check_replay(k, out)
        return _split_grads(grads, fi, dyn, pacc)

    def _check_replay(self, k, outs):
        """The re-run of the chain's last step must give what the forward run
        gave (to rounding: a compiled re-run may fuse differently)."""
        fp = self.fp_out
        if fp is None:
            return
        same = len(outs) == len(fp) and all(
            a.shape == b.shape and np.allclose(a, b, rtol=1e-9, atol=0.0, equal_nan=True)
            for a, b in ((_sample(o), f) for o, f in zip(outs, fp)))
        if not same:
            raise CheckpointError(
                f"re-running step {k} of tracegrad.step({self.name}) gave a different "
                f"result than the forward run: the step is not a deterministic function of "
                f"its arguments (random numbers, global state, a value modified in place). "
                f"Checkpointed gradients would be wrong; pass such values as arguments.")

    # --- reversal ---------------------------------------------------------------
    def _replan(self, end):
        """A fresh reversal of steps ``0 .. end - 1`` from the held snapshots."""
        self.online = None      # the online placement ends with the first reversal
        self.cur = None
        self.pending = None
        for k in sorted(self.held):
            if k >= end:
                self._free(k, self.held[k])
        if 0 not in self.held:
            used = set(self.store.used())
            slot = 0 if 0 not in used else min(set(range(self.s)) - used)
            self._take(0, slot, None)
        while len(self.held) > self.s:
            k = max(self.held)
            self._free(k, self.held[k])
        used = set(self.store.used())
        free = sorted(set(range(self.s)) - used, reverse=True)
        self.stream = stream_from_held(dict(self.held), end, self.s, free)
        self.next_rev = end - 1

    def reverse(self, h, e, g, nb, dp):
        """Reverse steps ``e - 1 .. h`` given the cotangent ``g`` ({leaf: ct})
        of state ``e``. Returns the cotangents of state ``h`` ({leaf: ct}) and
        of the parameters ``dp`` summed over the steps ({param leaf: ct})."""
        t0 = time.perf_counter()
        self.params.check(h, e)
        if self.stream is None or self.next_rev != e - 1:
            self._replan(e)
        self._progress_start(e)
        adj = g
        pacc = {}
        st = self.stats
        try:
            while True:
                act = self._next()
                t = type(act)
                if t is Advance:
                    self.cur = self._advance(act.start, act.end, self.cur)
                elif t is TakeSnapshot:
                    self._take(act.step, act.slot, self.cur)
                elif t is RestoreSnapshot:
                    self.cur = self.store.get(act.slot)
                elif t is FreeSnapshot:
                    self._free(act.step, act.slot)
                elif t is ForwardTaped:
                    k = act.step
                    rev = self._next()
                    if type(rev) is not Reverse or rev.step != k:
                        raise RuntimeError(f"internal error: ForwardTaped({k}) is not followed "
                                           f"by Reverse({k})")
                    cur, self.cur = self.cur, None
                    adj = self._taped_reverse(k, cur, adj, pacc, nb)
                    cur = None
                    self.next_rev = k - 1
                    if self.bar is not None:
                        self.bar.update(1)
                    if k == h:
                        break
                else:
                    raise RuntimeError(f"internal error: the schedule ended before step {h} of "
                                       f"tracegrad.step({self.name}) was reversed")
        except BaseException:
            self.stream = None
            self.next_rev = None
            self._progress_end()
            raise
        finally:
            st.reverse_time += time.perf_counter() - t0
        if self.next_rev < 0:
            # Fully reversed: drop the slot buffers; the root stays so that a
            # second walk can re-run the chain.
            self.stream = None
            self.next_rev = None
            for k in list(self.held):
                self._free(k, self.held[k])
            self.store.release()
            self._progress_end()
        return adj, pacc

    def reverse_traced(self, h, e, g, nb, ds, dp):
        """Reversal when the states depend on an active outer level (higher
        order): rebuild state ``h`` from the traced chain root and
        differentiate steps ``h .. e - 1`` as one function, recorded by the
        outer levels."""
        root = []
        for leaf, r in zip(self.store.root(), self.root_refs):
            if r is None:
                root.append(leaf)
                continue
            t = r()
            if t is None:
                raise CheckpointError(
                    "a higher-order derivative through tracegrad.step needs the chain's "
                    "initial state, which no longer exists")
            root.append(t)
        cur = root
        for k in range(h):
            cur = self._eval_traced(k, cur)
        e0 = self.params.at(h)
        pl = e0.traced()
        fun, sdef, params = self.fun, self.sdef, self.params
        base = list(cur)
        fo_box = []

        def f(*vals):
            st = list(base)
            for i, v in zip(ds, vals):
                st[i] = v
            pvals = vals[len(ds):]
            for k in range(h, e):
                ek = params.at(k)
                pp = ek.traced()
                for j, v in zip(dp, pvals):
                    pp[j] = v
                p, kw = tree_unflatten(ek.pdef, pp)
                st, odef = tree_flatten(fun(tree_unflatten(sdef, st), *p, **kw))
                if odef != sdef:
                    raise _structure_error(self.name, sdef, odef)
            fo = [i for i, y in enumerate(st) if _is_float_leaf(y)]
            fo_box.append(fo)
            return tuple(st[i] for i in fo)

        primals = [cur[i] for i in ds] + [pl[j] for j in dp]
        tr = _trace_reverse(f, primals, False)
        fo = fo_box[0]
        batch = _batch_of(g.values(), nb)
        ct = tuple(g[i] if g.get(i) is not None else _zeros_like_ct(unwrap(tr[3][m]), batch)
                   for m, i in enumerate(fo))
        grads = _pull(*tr[:6], ct, free=True, nb=nb)
        self.stats.taped += e - h
        self.stats.recomputations += h
        sct = {i: grads[m] for m, i in enumerate(ds)}
        pct = {j: grads[len(ds) + m] for m, j in enumerate(dp)}
        return sct, pct

    def _eval_traced(self, k, cur):
        ek = self.params.at(k)
        p, kw = tree_unflatten(ek.pdef, ek.traced())
        leaves, odef = tree_flatten(self.fun(tree_unflatten(self.sdef, cur), *p, **kw))
        if odef != self.sdef:
            raise _structure_error(self.name, self.sdef, odef)
        return leaves

    def needs_traced(self):
        """Whether the chain's inputs are traced by a level active now (a
        higher-order walk); cached per set of active levels, since a walk
        asks once per node."""
        key = tuple(map(id, level_stack()))
        if key == self._nt_key:
            return self._nt
        res = False
        for r in self.root_refs:
            if r is not None:
                t = r()
                if t is not None and is_traced(t):
                    res = True
                    break
        if not res and key:
            res = self.params.any_traced()
        self._nt_key, self._nt = key, res
        return res

    def state_at(self, h):
        """A private copy of state ``h`` (plain), from the nearest snapshot."""
        best = max((k for k in self.held if k <= h), default=None)
        if best is None or best == 0:
            cur = self.store.root()
            best = 0
        else:
            cur = self.store.get(self.held[best])
        return self._advance(best, h, cur)

    # --- progress ---------------------------------------------------------------
    def _progress_start(self, e):
        if self.bar is not None or self.cfg.progress is False:
            return
        show = self.cfg.progress is True
        if not show and self.step_time > 0:
            r = _sched.repetition_number(max(e, 0), max(self.s, 1))
            show = self.step_time * e * (r + 3) > self.cfg.progress_after
        if show:
            self.bar = _make_bar(e, f"reversing {self.name}", self.cfg.progress is True)

    def _progress_end(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _structure_error(name, sdef, odef):
    return TypeError(
        f"tracegrad.step({name}) must return a new state with the structure of its state "
        f"argument (a step maps state -> state), got {odef} for {sdef}")


# =============================================================================
# step(): the user-facing chain driver
# =============================================================================

class _NodeInfo:
    """What one tape node of a chain stands for: steps ``start .. end - 1``;
    its inputs are state leaves ``ds`` and parameter leaves ``dp`` (at
    ``start``), its outputs the float leaves ``fo`` of state ``end``."""

    __slots__ = ("chain", "start", "end", "ds", "dp", "fo", "in_refs")

    def __init__(self, chain, start, end, ds, dp, fo, in_refs):
        self.chain = chain
        self.start = start
        self.end = end
        self.ds = ds
        self.dp = dp
        self.fo = fo
        self.in_refs = in_refs

    def compute(self, g, ans, args):
        nb = _nb_of(g, ans)
        gl = g if type(g) is tuple else (g,)
        gd = {i: c for i, c in zip(self.fo, gl)}
        chain = self.chain
        if chain.needs_traced():
            sct, pct = chain.reverse_traced(self.start, self.end, gd, nb, self.ds, self.dp)
        else:
            sct, pct = chain.reverse(self.start, self.end, gd, nb, self.dp)
        return [sct.get(i) for i in self.ds] + [pct.get(j) for j in self.dp]

    def jvp(self, ts, ans, *args, **params):
        """Forward walk over a recorded tape (``linearize``, ``jacobian``):
        push the input tangents through steps ``start .. end - 1``."""
        chain = self.chain
        nb = None
        for t, a in zip(ts, args):
            if t is not None:
                nb = np.ndim(t) - len(a.shape)
                break
        cur = chain.state_at(self.start)
        ds, dp, start, end = self.ds, self.dp, self.start, self.end
        e0 = chain.params.at(start)
        pvals = [e0.plain[j] for j in dp]

        def f(*vals):
            st = list(cur)
            for i, v in zip(ds, vals):
                st[i] = v
            for k in range(start, end):
                ek = chain.params.at(k)
                pp = list(ek.plain)
                for j, v in zip(dp, vals[len(ds):]):
                    pp[j] = v
                p, kw = tree_unflatten(ek.pdef, pp)
                st = tree_flatten(chain.fun(tree_unflatten(chain.sdef, st), *p, **kw))[0]
            return tuple(st[i] for i in self.fo)

        primals = [cur[i] for i in ds] + pvals
        outs = _jvp_flat(f, primals, list(ts), nb)
        return outs if len(self.fo) > 1 else outs[0]


class _Rec:
    """A chain's nodes on one tape: ``head`` (possibly a merged range) and
    ``last`` (the most recent step's node, merged into ``head`` when safe)."""

    __slots__ = ("head", "last")

    def __init__(self, node):
        self.head = node
        self.last = node


class _Live:
    """A chain whose last output may be passed to the next step call."""

    __slots__ = ("chain", "recs", "out_refs", "fo", "order", "static", "key")

    def __init__(self, chain, recs, out_refs, fo, order, static, key):
        self.chain = chain
        self.recs = recs
        self.out_refs = out_refs
        self.fo = fo
        self.order = order
        self.static = static
        self.key = key


class Stepper:
    """A step function whose consecutive calls are checkpointed as a chain.

    Created by :func:`step`; call it like the undecorated function. See
    :func:`step` for the semantics and options.

    Attributes
    ----------
    stats : CheckpointStats
        Statistics of the most recent gradient evaluation.
    """

    def __init__(self, fun, cfg):
        if not callable(fun):
            raise TypeError(f"step expects a function, got {type(fun).__name__}")
        self.fun = fun
        self._cfg = cfg
        self._local = threading.local()   # live chains and the current run, per thread
        self._stats = CheckpointStats()
        self._bound = weakref.WeakKeyDictionary()
        self._jitted = None
        functools.update_wrapper(self, fun)

    @property
    def _live(self):
        d = getattr(self._local, "live", None)
        if d is None:
            d = self._local.live = {}
        return d

    @property
    def stats(self):
        """:class:`CheckpointStats` of the most recent gradient evaluation."""
        return self._stats

    def __repr__(self):
        return f"<tracegrad.step({getattr(self.fun, '__name__', 'fun')})>"

    def __get__(self, obj, objtype=None):
        # A decorated method: ``self.step(state, ...)`` checkpoints
        # ``fun(obj, state, ...)``, with one chain registry per instance.
        if obj is None:
            return self
        try:
            bound = self._bound.get(obj)
        except TypeError:
            bound = None
        if bound is None:
            bound = Stepper(functools.partial(self.fun, obj), self._cfg)
            bound.__name__ = getattr(self.fun, "__name__", "step")
            try:
                self._bound[obj] = bound
            except TypeError:
                pass
        return bound

    def __call__(self, state, *params, **kwargs):
        return self._call(state, params, kwargs, self._cfg.steps)

    # --- the hot path -----------------------------------------------------------
    def _call(self, state, params, kwargs, steps):
        tapes = _tapes()
        if not tapes or _captures():
            return self.fun(state, *params, **kwargs)
        sl, sdef = tree_flatten(state)
        pl, pdef = tree_flatten((params, kwargs))
        ds = [i for i, x in enumerate(sl) if is_traced(x)]
        if not ds and not any(is_traced(p) for p in pl):
            return self.fun(state, *params, **kwargs)
        live = self._continuation(sl, sdef)
        if live is not None:
            chain = live.chain
            recs = live.recs
            k = chain.n
            for tape, rec in recs.items():
                if rec.last is not rec.head and not _merge(tape, rec):
                    rec.head = rec.last
        else:
            chain = self._new_chain(sl, sdef, steps, tapes)
            recs = {}
            k = 0
        x_plain = [unwrap(x) for x in sl]
        chain.forward(k, x_plain)
        entry = chain.params.add(k, pl, pdef)
        run_in = [np.array(x, copy=True) if isinstance(x, np.ndarray) else x for x in x_plain]
        pargs, pkw = entry.plain_call()
        t0 = time.perf_counter()
        out = self.fun(tree_unflatten(sdef, run_in), *pargs, **pkw)
        dt = time.perf_counter() - t0
        st = chain.stats
        st.forward_time += dt
        st.forward_evaluations += 1
        st.steps += 1
        chain.step_time = dt if k == 0 else 0.9 * chain.step_time + 0.1 * dt
        ol, odef = tree_flatten(out)
        if odef != sdef:
            raise _structure_error(chain.name, sdef, odef)
        for y in ol:
            if type(y) is TracedArray:
                raise _closure_error(self.fun, "the step function")
        fo = [i for i, y in enumerate(ol) if _is_float_leaf(y)]
        dp = entry.dyn
        args = tuple(sl[i] for i in ds) + tuple(pl[j] for j in dp)
        if not fo or not args:
            return out
        outs = tuple(ol[i] for i in fo)
        nout = len(fo)
        jvp_rule = _bind_jvp(chain, k, x_plain, ds, dp, fo, entry)
        prim = Primitive(f"step({chain.name})", lambda *a: outs if nout > 1 else outs[0],
                         jvp=jvp_rule, nout=nout, save_args=(k == 0), save_ans=False)
        marks = {t: len(t.nodes) for t in tapes}
        res = bind(prim, args, _EMPTY)
        in_refs = tuple(weakref.ref(sl[i]) for i in ds)

        def make_rule(node):
            info = _NodeInfo(chain, k, k + 1, ds, dp, fo, in_refs)
            return _NodeRule(info.compute, info.jvp, node.ins, info)

        nodes = _adopt(prim, marks, make_rule, nout, f"step({chain.name})")
        res = res if nout > 1 else (res,)
        for i, r in zip(fo, res):
            ol[i] = r
        # Remember the output so the next call can continue the chain.
        chain.fp_out = tuple(_sample(o) for o in outs)
        if nodes:
            for tape, node in nodes.items():
                rec = recs.get(tape)
                if rec is None:
                    recs[tape] = _Rec(node)
                else:
                    rec.last = node
            self._remember(chain, recs, ol, fo)
        return tree_unflatten(odef, ol)

    def _continuation(self, sl, sdef):
        key = None
        for x in sl:
            if type(x) is TracedArray:
                key = id(x)
                break
        if key is None:
            return None
        live = self._live.get(key)
        if live is None:
            return None
        chain = live.chain
        if sdef != chain.sdef or len(sl) != len(live.static):
            return None
        fo = live.fo
        refs = iter(live.out_refs)
        for i, x in enumerate(sl):
            s = live.static[i]
            if i in fo:
                if next(refs)() is not x:
                    return None
            elif isinstance(s, np.ndarray):
                if not (isinstance(x, np.ndarray) and x.shape == s.shape and x.dtype == s.dtype
                        and np.array_equal(x, s)):
                    return None
            elif not _same_static(x, s):
                return None
        # An in-place write through the core gives the array a new variable
        # on each tape; the chain would then recompute a value the program
        # no longer has.
        for tape, rec in live.recs.items():
            outs = rec.last.out if type(rec.last.out) is tuple else (rec.last.out,)
            for i, v in zip(live.order, outs):
                if tags_of(sl[i]).get(tape, -1) != v:
                    return None
        del self._live[key]
        return live

    def _remember(self, chain, recs, ol, fo):
        first = None
        out_refs = []
        static = []
        fos = set(fo)
        for i, y in enumerate(ol):
            if i in fos:
                if type(y) is not TracedArray:
                    return          # some output is not traced: no continuation
                out_refs.append(weakref.ref(y))
                if first is None:
                    first = y
                static.append(None)
            elif isinstance(y, np.ndarray):
                static.append(y.copy())
            else:
                static.append(y)
        key = id(first)
        live_map = self._live

        def gone(_ref, key=key, live_map=live_map):
            ent = live_map.get(key)
            if ent is not None and ent.out_refs[0] is _ref:
                del live_map[key]

        out_refs[0] = weakref.ref(first, gone)
        self._live[key] = _Live(chain, recs, out_refs, fos, tuple(fo), static, key)

    def _new_chain(self, sl, sdef, steps, tapes):
        outer = tapes[0]
        run = getattr(self._local, "run", None)
        if run is None or run[0]() is not outer:
            self._stats = CheckpointStats()
            self._local.run = (weakref.ref(outer), self._stats)
        x0 = [unwrap(x) for x in sl]
        # Only leaves some active level tracks need their traced object for a
        # higher-order reversal; an untracked buffer (``np.zeros_like(u)``, often
        # a temporary that dies after the first call) is a constant, and its
        # stored plain value serves.
        root_refs = [weakref.ref(x) if is_traced(x) else None for x in sl]
        if self._cfg.jit and self._jitted is None:
            self._jitted = _JitSteps(self.fun)
        return _Chain(self.fun, self._cfg, sdef, x0, self._stats, steps, root_refs,
                      self._jitted)


def _bind_jvp(chain, k, x_plain, ds, dp, fo, entry):
    """JVP of step ``k`` for forward levels active while it is recorded."""
    fun, sdef = chain.fun, chain.sdef
    base = list(x_plain)
    nout = len(fo)

    def f(*vals):
        st = list(base)
        for i, v in zip(ds, vals):
            st[i] = v
        pp = list(entry.plain)
        for j, v in zip(dp, vals[len(ds):]):
            pp[j] = v
        p, kw = tree_unflatten(entry.pdef, pp)
        ol = tree_flatten(fun(tree_unflatten(sdef, st), *p, **kw))[0]
        return tuple(ol[i] for i in fo)

    def jvp_rule(ts, ans, *vals, **params):
        nb = next(np.ndim(t) - np.ndim(v) for t, v in zip(ts, vals) if t is not None)
        touts = _jvp_flat(f, vals, ts, nb)
        return touts if nout > 1 else touts[0]

    return jvp_rule


def _merge(tape, rec):
    """Fold ``rec.last`` into ``rec.head`` on ``tape`` when that cannot change
    any gradient: the state between them no longer exists and no other
    recorded operation uses it. Returns whether it merged."""
    H, N = rec.head, rec.last
    rH, rN = _rule_of(H).info, _rule_of(N).info
    if rH.end != rN.start or rN.ds != rH.fo or rN.dp != rH.dp:
        return False
    outH = H.out if type(H.out) is tuple else (H.out,)
    nds = len(rN.ds)
    if tuple(N.ins[:nds]) != outH or N.ins[nds:] != H.ins[len(rH.ds):]:
        return False
    for r in rN.in_refs:
        if r() is not None:
            return False
    nodes = tape.nodes
    top = len(nodes) - 1
    iN = next((j for j in range(top, max(top - _MERGE_SCAN, -1), -1) if nodes[j] is N), None)
    if iN is None:
        return False
    iH = next((j for j in range(iN - 1, max(iN - 1 - _MERGE_SCAN, -1), -1) if nodes[j] is H),
              None)
    if iH is None:
        return False
    dead = set(outH)
    for j in range(iH + 1, top + 1):
        if j != iN:
            for v in nodes[j].ins:
                if v in dead:
                    return False
    del nodes[iN]
    H.out = N.out
    H.ans = N.ans
    rH.end = rN.end
    rH.fo = rN.fo
    return True


def step(fun=None, *, steps=None, snapshots=None, memory=None, schedule=None, disk=None,
         disk_snapshots=0, disk_memory=None, progress=None, progress_after=10.0, jit=False):
    """Checkpoint the steps of a loop the user writes.

    Decorate the function computing one time step and keep your own ``for``
    or ``while`` loop. Under ``grad``/``vjp`` consecutive calls, each
    receiving the state the previous call returned, form a *chain*: only the
    states a schedule picks are kept (at most ``snapshots`` of them), and the
    backward walk re-runs steps from the nearest one, taping a single step
    at a time. Memory is that of ``snapshots`` states, whatever the number of
    steps; the price is re-evaluating steps (about ``r`` times each, with
    ``r`` the repetition number of the binomial schedule, 4 for 5000 steps
    and 20 snapshots).

    Parameters
    ----------
    fun : callable
        ``fun(state, *params, **kwargs) -> new_state``. ``state`` may be a
        pytree (tuple/list/dict) of arrays and numbers and the result must
        have the same structure. ``params`` are anything else the step reads:
        traced parameters receive gradients accumulated over all steps;
        numbers, plain arrays and objects are constants. ``fun`` must be
        deterministic and must not modify its parameters in place.
    steps : int, optional
        Number of step calls in one loop. Known in advance it enables the
        optimal offline schedule (binomial checkpointing, Revolve); without
        it the online schedule places snapshots as the loop runs (for
        ``while`` loops, adaptive time steps).
    snapshots : int, optional
        Slots for states, the initial state included (default 20 when
        ``memory`` is not given either).
    memory : int or str, optional
        The slot budget as bytes (``"256MB"``, ``2**28``); the number of
        slots is derived from the size of the state. With ``snapshots`` too,
        the smaller count wins.
    schedule : {None, "revolve", "online", "sqrt"}
        ``None`` picks ``"revolve"`` when ``steps`` is given, else
        ``"online"``. ``"sqrt"`` is the simple two-level schedule (needs
        ``steps``).
    disk : str or bool, optional
        Folder for the disk level (a temporary folder inside it is used and
        removed); ``True`` or ``None`` use the system's temporary folder.
    disk_snapshots, disk_memory : int, int or str
        Additional slots on disk (as a count or a byte budget). Snapshots are
        ``.npy`` files written through ``np.lib.format.open_memmap``, never
        pickled.
    progress : bool or None
        Show a progress bar (tqdm when installed) while the chain is
        reversed: always (``True``), never (``False``), or when the reversal
        is expected to take more than ``progress_after`` seconds (``None``).
    jit : bool
        Compile the step with :func:`tracegrad.jit` for the backward walk:
        the recomputations replay the compiled step, and each reversed step
        runs as one compiled plan fusing the step and its pullback. Traced
        and compiled once per state structure (and per path, if the step
        branches on values); the forward sweep itself runs eagerly, since it
        is recorded by the gradient being taken.

    Returns
    -------
    Stepper
        Callable like ``fun``; ``.stats`` holds the :class:`CheckpointStats`
        of the most recent gradient evaluation.

    Notes
    -----
    A call continues the chain only when its state is the object the
    previous call returned, unchanged. If the program modifies the state
    between steps (``u = step(u); u = u * mask``), the next call starts a new
    chain (a new *segment*) from a copy of its state: gradients stay exact,
    but each segment keeps its own first state, so put such modifications
    inside the step function. Using intermediate states elsewhere (a loss
    summed over time) is fine and costs nothing extra.

    Outside any differentiation, or under forward mode alone, the function
    is simply called.

    Examples
    --------
    >>> import numpy as np, tracegrad as tg
    >>> @tg.step(snapshots=4, steps=50)
    ... def heat(u, k):
    ...     lap = np.concatenate([u[1:2] - u[:1], u[2:] - 2 * u[1:-1] + u[:-2], u[-2:-1] - u[-1:]])
    ...     return u + 0.1 * k * lap
    >>> def loss(u0, k):
    ...     u = u0
    ...     for _ in range(50):
    ...         u = heat(u, k)
    ...     return np.sum(u ** 3)
    >>> u0 = np.sin(np.linspace(0, 3, 16))
    >>> g = tg.grad(loss, argnums=(0, 1))(u0, 0.5)
    >>> def plain(u0, k):
    ...     u = u0
    ...     for _ in range(50):
    ...         u = heat.__wrapped__(u, k)
    ...     return np.sum(u ** 3)
    >>> ref = tg.grad(plain, argnums=(0, 1))(u0, 0.5)
    >>> bool(np.allclose(g[0], ref[0], rtol=1e-12) and np.isclose(g[1], ref[1], rtol=1e-12))
    True
    >>> heat.stats.max_snapshots <= 4, heat.stats.taped
    (True, 50)
    """
    cfg = _Config(steps, snapshots, memory, schedule, disk, disk_snapshots, disk_memory,
                  progress, progress_after, jit)
    if fun is None:
        return lambda f: Stepper(f, cfg)
    return Stepper(fun, cfg)


def loop(fun, state, n, *params, snapshots=None, memory=None, schedule=None, disk=None,
         disk_snapshots=0, disk_memory=None, progress=None, progress_after=10.0, jit=False,
         **kwargs):
    """Run ``state = fun(state, *params, **kwargs)`` ``n`` times, checkpointed.

    The explicit form of :func:`step` for a loop of known length; the
    offline (Revolve) schedule is used. ``fun`` may be a function or a
    :class:`Stepper` made by :func:`step` (its options are then used, its
    ``stats`` filled, and the options given here must be left out).

    Examples
    --------
    >>> import numpy as np, tracegrad as tg
    >>> f = lambda x, a: x + 0.01 * np.sin(a * x)
    >>> g = tg.grad(lambda a: np.sum(tg.loop(f, np.ones(3), 100, a, snapshots=5)))(2.0)
    >>> ref = tg.grad(lambda a: np.sum(_unrolled(f, np.ones(3), 100, a)))(2.0)
    >>> bool(np.isclose(g, ref, rtol=1e-12))
    True
    """
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    n = int(n)
    if isinstance(fun, Stepper):
        given = dict(snapshots=snapshots, memory=memory, schedule=schedule, disk=disk,
                     disk_memory=disk_memory, progress=progress)
        if any(v is not None for v in given.values()) or disk_snapshots or jit:
            raise TypeError("loop(stepper, ...) uses the options of the tracegrad.step object; "
                            "do not pass checkpoint options here too")
        stepper = fun
        if stepper._cfg.schedule in ("revolve", "sqrt") and stepper._cfg.steps not in (None, n):
            raise ValueError(f"the step was created with steps={stepper._cfg.steps} but loop "
                             f"runs {n} steps")
    else:
        stepper = Stepper(fun, _Config(n, snapshots, memory, schedule, disk, disk_snapshots,
                                       disk_memory, progress, progress_after, jit))
    kind = stepper._cfg.kind(n)
    plan = n if kind != "online" else None
    for _ in range(n):
        state = stepper._call(state, params, kwargs, plan)
    return state


def _unrolled(f, x, n, *params):
    """Reference loop used by the doctest of :func:`loop`."""
    for _ in range(n):
        x = f(x, *params)
    return x
