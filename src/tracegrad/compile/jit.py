"""``tracegrad.jit``: trace a function once per input signature and path,
replay the compiled plan afterwards.

Call flow of a jitted function:

1. Eager shortcuts: ``TRACEGRAD_DISABLE_JIT=1``, or another transform is
   active (``grad(jit(f))``: the inputs are being traced by an outer level),
   run the function as it is. Eager is always correct; jit belongs
   outermost.
2. The *signature* is the pytree structure of the arguments, the shape and
   dtype of every array leaf, and the value of every other leaf (Python
   numbers, strings, None, ... are static: a new value traces again).
3. Each signature keeps a few plans, one per guard path, most recently
   used first. A plan whose guard fails raises :class:`GuardFailure` before
   any result is returned; the next plan is tried, and when none matches
   the function is traced again along the new path. A signature whose path
   keeps changing (more than ``max_paths`` traces) runs eagerly from then on.
4. Any error while replaying re-runs the call eagerly, which either raises
   the program's own error or returns its result: jit never fails where
   eager works.
"""
import functools
import os
import threading
import warnings

import numpy as np

from ..core.array import TracedArray, wrap
from ..core.collector import paused
from ..core.pytree import tree_flatten, tree_unflatten
from ..core.tape import level_stack
from .graph import CaptureLevel
from .plan import GuardFailure

MAX_PATHS = 8

_EAGER = object()


def disabled():
    """True when ``TRACEGRAD_DISABLE_JIT`` is set to a true value."""
    return os.environ.get("TRACEGRAD_DISABLE_JIT", "") not in ("", "0")


def _leaf_key(x):
    """(dynamic?, key) for one argument leaf."""
    t = type(x)
    if t is np.ndarray:
        return True, (x.shape, x.dtype.str)
    if t is TracedArray:
        v = x._v
        return True, (v.shape, v.dtype.str)
    if isinstance(x, np.ndarray):
        return True, (x.shape, x.dtype.str)
    if isinstance(x, np.generic):
        return True, ((), x.dtype.str, "scalar")
    if t is _StaticArg:
        return False, x.key
    try:
        hash(x)
        return False, ("static", t, x)
    except TypeError:
        return False, ("static-id", t, id(x))


class _StaticArg:
    """A positional argument named in ``static_argnums``: a leaf compared by value."""

    __slots__ = ("value", "key")

    def __init__(self, value):
        self.value = value
        if isinstance(value, np.ndarray):
            v = value._v if type(value) is TracedArray else value
            self.key = ("array", v.shape, v.dtype.str, v.tobytes())
        else:
            try:
                hash(value)
                self.key = ("value", type(value), value)
            except TypeError:
                self.key = ("id", id(value))

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return type(other) is _StaticArg and self.key == other.key


def _plain(x):
    if type(x) is TracedArray:
        return x._v
    if isinstance(x, np.generic):
        return np.asarray(x)
    return x


class _Entry:
    __slots__ = ("plans", "eager", "traces", "keep")

    def __init__(self):
        self.plans = []      # most recently used first
        self.eager = None    # reason, once this signature runs eagerly
        self.traces = 0
        self.keep = None     # unhashable static leaves kept alive (keyed by id)


class Jitted:
    """A function compiled by :func:`jit` (callable like the original)."""

    def __init__(self, fun, static_argnums=(), max_paths=MAX_PATHS, options=None):
        self.fun = fun
        self.static_argnums = tuple(static_argnums)
        self.max_paths = max_paths
        self.options = dict(options or {})
        self._cache = {}
        self._lock = threading.RLock()
        self.stats = {"traces": 0, "replays": 0, "eager": 0, "guard_failures": 0}
        functools.update_wrapper(self, fun)

    def __repr__(self):
        return f"<jit({getattr(self.fun, '__name__', self.fun)!r})>"

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        return functools.partial(self, obj)

    # --- calling ------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        if disabled() or level_stack():
            self.stats["eager"] += 1
            return self.fun(*args, **kwargs)
        if self.static_argnums:
            n = len(args)
            static = {i % n for i in self.static_argnums if -n <= i < n}
            args = tuple(_StaticArg(a) if i in static else a for i, a in enumerate(args))
        leaves, treedef = tree_flatten((args, kwargs))
        keys = []
        dyn = []
        for i, x in enumerate(leaves):
            d, k = _leaf_key(x)
            keys.append(k)
            if d:
                dyn.append(i)
        sig = (treedef, tuple(keys))
        entry = self._cache.get(sig)
        if entry is None:
            with self._lock:
                entry = self._cache.setdefault(sig, _Entry())
        if entry.eager is not None:
            return self._eager(args, kwargs)
        inputs = [_plain(leaves[i]) for i in dyn]
        for plan in list(entry.plans):
            try:
                out = plan.run(inputs)
            except GuardFailure:
                self.stats["guard_failures"] += 1
                continue
            except Exception:
                # The program's own error (or a lowering bug): eager decides.
                return self._eager(args, kwargs)
            self.stats["replays"] += 1
            if entry.plans[0] is not plan:
                with self._lock:
                    if plan in entry.plans:
                        entry.plans.remove(plan)
                        entry.plans.insert(0, plan)
            return tree_unflatten(plan.out_tree, out)
        return self._trace(entry, leaves, treedef, dyn)

    def _trace(self, entry, leaves, treedef, dyn):
        """Run the function under a capture level, keep the plan, return the
        traced (eagerly computed) results.

        The cyclic garbage collector is paused meanwhile: a trace creates
        hundreds of thousands of long-lived objects (nodes, tapes), and
        collections that walk them all again and again made tracing and
        lowering several times slower."""
        with paused():
            return self._trace_nogc(entry, leaves, treedef, dyn)

    def _trace_nogc(self, entry, leaves, treedef, dyn):
        level = CaptureLevel()
        graph = level.graph
        leaves = list(leaves)
        arr_inputs = [_plain(leaves[i]) for i in dyn]
        with level:
            for i in dyn:
                # a private copy: the function may write into its input in place
                arr = np.array(_plain(leaves[i]), copy=True)
                v = level.new_input(arr)
                leaves[i] = wrap(arr, {level: v})
            leaves = [x.value if type(x) is _StaticArg else x for x in leaves]
            args, kwargs = tree_unflatten(treedef, leaves)
            res = self.fun(*args, **kwargs)
            out_leaves, out_tree = tree_flatten(res)
            graph.outputs = [level.output_ref(x) for x in out_leaves]
            graph.out_tree = out_tree
            level.guard_unseen()
        self.stats["traces"] += 1
        traced = [_result(x) for x in out_leaves]
        result = tree_unflatten(out_tree, traced)
        with self._lock:
            entry.traces += 1
            if graph.escaped is not None:
                entry.eager = graph.escaped
                return result
            if entry.traces > self.max_paths:
                entry.eager = (f"more than {self.max_paths} traces for one signature "
                               "(a guarded value changes from call to call)")
                return result
        plan = self._lower(graph, [arr_inputs[k] for k in range(len(arr_inputs))], traced)
        with self._lock:
            if plan is None:
                entry.eager = "lowering failed"
            else:
                entry.plans.insert(0, plan)
                del entry.plans[self.max_paths:]
        return result

    def _lower(self, graph, inputs, traced):
        """Lower ``graph`` and run the plan once on the traced inputs: this
        compiles its kernels now (not on the second call) and checks the
        plan against the traced results; a plan that disagrees is replaced
        by the plain NumPy plan."""
        from .lower import lower
        from .plan import interpret
        try:
            plan = lower(graph, self.options)
            out = plan.run(inputs)
            bad = _mismatch(out, traced)
        except Exception as e:
            bad = repr(e)
        if bad is None:
            return plan
        warnings.warn(f"tracegrad.jit: the compiled plan of {self!r} disagrees with eager "
                      f"execution ({bad}); using NumPy calls for it. Please report this.",
                      RuntimeWarning, stacklevel=3)
        try:
            plan = interpret(graph)
            return plan if _mismatch(plan.run(inputs), traced) is None else None
        except Exception:
            return None

    def _eager(self, args, kwargs):
        self.stats["eager"] += 1
        args = tuple(a.value if type(a) is _StaticArg else a for a in args)
        return self.fun(*args, **kwargs)

    # --- introspection ---------------------------------------------------------------
    def plans(self):
        """The cached plans, per signature (for inspection and tests)."""
        return {sig: list(e.plans) for sig, e in self._cache.items()}

    def eager_reasons(self):
        return {sig: e.eager for sig, e in self._cache.items() if e.eager is not None}

    def clear_cache(self):
        with self._lock:
            self._cache.clear()


def _mismatch(out, ref):
    """None when the plan's outputs match the traced ones (up to rounding)."""
    for a, b in zip(out, ref):
        if isinstance(b, np.ndarray) or isinstance(a, np.ndarray):
            a, b = np.asarray(a), np.asarray(b)
            if a.shape != b.shape or a.dtype != b.dtype:
                return f"output {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
            if a.dtype.kind in "fc":
                tol = 1e-4 if a.dtype.itemsize <= 8 and a.dtype.kind == "f" and \
                    a.dtype.itemsize == 4 else 1e-7
                scale = float(np.max(np.abs(b), initial=0.0, where=np.isfinite(b)))
                with np.errstate(invalid="ignore"):
                    ok = np.isclose(a, b, rtol=tol, atol=tol * 1e-3 * (1.0 + scale),
                                    equal_nan=True)
                if not ok.all():
                    return "values differ"
            elif not np.array_equal(a, b):
                return "values differ"
        elif type(a) is not type(b) or a != b:
            return "static outputs differ"
    return None


def _result(x):
    """A traced output as the plain value the caller receives."""
    if type(x) is TracedArray:
        return x._v
    return x


def jit(fun=None, *, static_argnums=(), max_paths=MAX_PATHS, **options):
    """Compile ``fun``: trace it once per input signature into a static
    graph, fuse its elementwise work into numba loops, and replay.

    Parameters
    ----------
    fun : callable
        Any function of arrays: plain NumPy code, ``grad(f)``,
        ``value_and_grad(f)``, a ``vjp`` closure, nested transforms.
    static_argnums : tuple of int
        Positional arguments that are part of the cache key by value even
        when they are arrays (non-array leaves always are).
    max_paths : int
        Traces kept per signature for different guard paths; a signature
        traced more often runs eagerly from then on.
    **options
        Lowering options: ``fuse=False`` (NumPy calls only), ``vm=False``
        (no small-value machine), ``parallel`` ("auto", True, False),
        ``executor`` ("auto", "fused", "blocked": the cost model's choice
        between a fused loop and NumPy calls on blocks), ``compile_after``
        (runs of a plan before its fused groups are compiled, default 2;
        until then they run as NumPy calls; 0 compiles while lowering).

    Returns
    -------
    Jitted
        A callable returning plain arrays, equal to ``fun``'s results.

    Notes
    -----
    Python control flow on traced values (``if x > 0``, ``int(n)``, index
    arrays) becomes a guard: a call whose guarded values differ takes the
    other path (traced again and cached), never a result of the wrong path.
    Python numbers and other non-array arguments are static. Like JAX, jit
    traces ``fun`` once: side effects and random numbers inside it happen at
    trace time, and closed-over arrays are captured by value.
    Inside another transform (``grad(jit(f))``) the function runs eagerly.
    ``TRACEGRAD_DISABLE_JIT=1`` runs everything eagerly.

    Examples
    --------
    >>> import numpy as np, tracegrad as tg
    >>> f = tg.jit(tg.value_and_grad(lambda x: np.sum(np.sin(x) * x)))
    >>> v, g = f(np.array([0.5, 1.0]))
    >>> bool(np.allclose(g, np.sin([0.5, 1.0]) + np.array([0.5, 1.0]) * np.cos([0.5, 1.0])))
    True
    """
    if fun is None:
        return functools.partial(jit, static_argnums=static_argnums, max_paths=max_paths,
                                 **options)
    if isinstance(static_argnums, int):
        static_argnums = (static_argnums,)
    return Jitted(fun, static_argnums, max_paths, options)
