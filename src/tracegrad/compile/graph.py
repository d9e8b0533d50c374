"""Graph capture: run a function once under a capturing level and keep a
static graph of every primitive it applied, with guards.

The :class:`CaptureLevel` is the outermost level while ``jit`` traces. Its
``captures_all`` flag makes :func:`tracegrad.core.array.bind` hand it every
primitive, differentiable or not, including int/bool results. Because it is
*outside* every transform that the function runs (``grad``, ``jvp``, ...),
it also records the NumPy calls that those transforms' rules make: the
backward pass of ``jit(grad(f))`` lands in the graph as ordinary primitives,
after the forward ones.

Values reach a primitive either as traced values of this level (graph
*variables*) or as plain values (*constants*, hoisted into the graph's
constant table). Array constants are snapshotted when recorded, because the
traced program may later overwrite the buffer in place; a jit therefore sees
closed-over arrays as they were when it traced (as JAX does).

Where the program uses a traced value concretely (``if x > 0``, ``int(n)``,
an index array), :func:`tracegrad.core.array.concrete` calls
:meth:`CaptureLevel.on_concrete` and a :class:`Guard` records the value the
path depended on. A replay recomputes the guarded variable and compares.

A traced buffer that reaches a primitive as a *plain* array (``np.asarray(x)``
and similar escapes) would freeze its trace-time value into the graph; the
level notices when such a constant shares memory with a value produced
during the trace and marks the graph as not replayable (``escaped``), so jit
runs that signature eagerly instead.
"""
import numpy as np

from ..core.array import TracedArray
from ..core.tape import Level

_F64 = np.dtype(np.float64)
#: guard kinds compared by truth value; every other kind compares the whole value
TRUTH_KINDS = frozenset({"bool"})
#: primitives whose result depends only on shapes and dtypes (static for a
#: signature): their traced value is kept and they become constants
STATIC_PRIMS = frozenset({"nondiff.iscomplexobj", "nondiff.isrealobj", "nondiff.ndim",
                          "nondiff.size", "nondiff.shape", "nondiff.result_type",
                          "nondiff.can_cast", "nondiff.may_share_memory",
                          "nondiff.shares_memory"})


class Guard:
    """The program took a path that depended on the value of ``var``.

    ``outcome`` is what the replay must reproduce: the truth value for
    ``kind == "bool"``, otherwise the exact value (dtype, shape and bytes).
    ``pos`` is the number of nodes recorded when the guard was taken.
    """

    __slots__ = ("var", "kind", "outcome", "pos")

    def __init__(self, var, kind, outcome, pos):
        self.var = var
        self.kind = kind
        self.outcome = outcome
        self.pos = pos

    def __repr__(self):
        return f"Guard(v{self.var}, {self.kind}, pos={self.pos})"


def outcome(value, kind):
    """The hashable fact a guard of ``kind`` checks about ``value``."""
    if kind in TRUTH_KINDS:
        return bool(value)
    a = value if type(value) is np.ndarray else np.asarray(value)
    return (a.dtype.str, a.shape, a.tobytes())


class GNode:
    """One primitive application: ``outs = prim(*ins, **params)``.

    ``ins`` are references: ``r >= 0`` a variable, ``r < 0`` the constant
    ``consts[-1 - r]``.
    """

    __slots__ = ("prim", "ins", "params", "outs")

    def __init__(self, prim, ins, params, outs):
        self.prim = prim
        self.ins = ins
        self.params = params
        self.outs = outs

    def __repr__(self):
        return f"GNode({self.prim.name}, {self.ins} -> {self.outs})"


class Graph:
    """A traced program: inputs, constants, nodes, guards, outputs."""

    def __init__(self):
        self.inputs = []     # variable of each dynamic input leaf
        self.consts = []     # constant values
        self.nodes = []
        self.guards = []
        self.avals = []      # (shape, dtype) of each variable
        self.outputs = []    # reference of each output leaf
        self.static = {}     # var -> value, for results of STATIC_PRIMS
        self.out_tree = None
        self.escaped = None  # description of a detected escape, or None

    @property
    def path(self):
        return tuple(g.outcome for g in self.guards)

    def const(self, ref):
        return self.consts[-1 - ref]

    def __repr__(self):
        return (f"<Graph {len(self.inputs)} inputs, {len(self.nodes)} nodes, "
                f"{len(self.consts)} consts, {len(self.guards)} guards>")


def snapshot(a):
    """A read-only copy of ``a``; a broadcast array (zero strides) stays a
    broadcast of a copy of the smallest array it was broadcast from."""
    if a.ndim and any(st == 0 and n > 1 for st, n in zip(a.strides, a.shape)):
        key = tuple(slice(0, 1) if (st == 0 and n > 1) else slice(None)
                    for st, n in zip(a.strides, a.shape))
        return np.broadcast_to(np.array(a[key], copy=True), a.shape)
    snap = np.array(a, copy=True)
    snap.flags.writeable = False
    return snap


def _root(a):
    b = a.base
    while isinstance(b, np.ndarray):
        a = b
        b = a.base
    return a


class CaptureLevel(Level):
    """The level ``jit`` traces under: records every primitive into a Graph."""

    captures_all = True

    def __init__(self):
        super().__init__()
        self.graph = Graph()
        self._const_ids = {}   # id(array) -> (array, const ref) for dedup
        self._scalar_ids = {}  # (type, repr) -> const ref
        self._owned = {}       # id(root buffer) -> buffer, written during the trace
        self._pinned = set()   # ids of buffers whose full value a guard fixes
        self._avals = self.graph.avals
        self._nodes = self.graph.nodes
        self._small = {}       # (dtype, shape, bytes) of a small array -> const ref
        self._discrete = {}    # var -> value of each integer/boolean result (see guard_unseen)

    # --- variables and constants ------------------------------------------------
    def new_input(self, arr):
        """A graph input holding ``arr`` (a private copy the trace may write)."""
        v = self._newvar(arr)
        self.graph.inputs.append(v)
        r = _root(arr)
        self._owned[id(r)] = r
        return v

    def _newvar(self, a):
        avals = self.graph.avals
        v = len(avals)
        avals.append((a.shape, a.dtype))
        return v

    def ref(self, a):
        """Reference of ``a`` as a primitive's argument."""
        if type(a) is TracedArray:
            v = a._tg.get(self)
            if v is not None:
                return v
            return self._const_array(a._v)
        if isinstance(a, np.ndarray):
            return self._const_array(a)
        return self._const_scalar(a)

    def _const_scalar(self, c):
        try:
            key = (type(c), repr(c))
            hash(c)
        except TypeError:
            key = None
        if key is not None:
            r = self._scalar_ids.get(key)
            if r is not None:
                return r
        consts = self.graph.consts
        consts.append(c)
        r = -len(consts)
        if key is not None:
            self._scalar_ids[key] = r
        return r

    def _const_array(self, a):
        if self.graph.escaped is None:
            rid = id(_root(a))
            if rid in self._owned and rid not in self._pinned:
                self.graph.escaped = ("a value computed during the trace reached a primitive "
                                      "as a plain array (np.asarray(x) or similar)")
        prev = self._const_ids.get(id(a))
        if prev is not None:
            orig, snap, r = prev
            if orig is a and snap.shape == a.shape and snap.dtype == a.dtype and \
                    np.array_equal(snap, a, equal_nan=snap.dtype.kind in "fc"):
                return r
        key = None
        if a.size <= 4 and a.dtype.kind in "biufc":
            # tiny arrays (the 0-d scalars backward rules make) are constants
            # by value: one entry however many array objects carry it
            key = (a.dtype.str, a.shape, a.tobytes())
            r = self._small.get(key)
            if r is not None:
                return r
        snap = snapshot(a)
        consts = self.graph.consts
        consts.append(snap)
        r = -len(consts)
        self._const_ids[id(a)] = (a, snap, r)
        if key is not None:
            self._small[key] = r
        return r

    def _own(self, out):
        # a view's root buffer was owned when the viewed value was recorded
        if out.base is None:
            self._owned[id(out)] = out

    # --- the level protocol -------------------------------------------------------
    def _refs(self, args):
        ins = []
        owned = self._owned
        for a in args:
            if type(a) is TracedArray:
                r = a._tg.get(self)
                if r is not None:
                    # every buffer a traced value lives in (outputs are owned
                    # when recorded; this catches fresh copies made by the
                    # transforms): a plain array sharing it later is an escape
                    b = a._v
                    if b.base is None:
                        owned[id(b)] = b
                    ins.append(r)
                    continue
            ins.append(self.ref(a))
        return tuple(ins)

    def process(self, prim, args, t, params, tags):
        # the hot path of a trace (once per recorded primitive): _refs,
        # _newvar and _own inlined
        ins = []
        owned = self._owned
        for a in args:
            if type(a) is TracedArray:
                r = a._tg.get(self)
                if r is not None:
                    b = a._v
                    if b.base is None:
                        owned[id(b)] = b
                    ins.append(r)
                    continue
            ins.append(self.ref(a))
        out = t._v
        avals = self._avals
        v = len(avals)
        dt = out.dtype
        avals.append((out.shape, dt))
        tags[self] = v
        if dt is not _F64 and dt.kind in "biu":
            self._discrete[v] = out
        if prim.name in STATIC_PRIMS:
            self.graph.static[v] = snapshot(out)
        self._nodes.append(GNode(prim, tuple(ins), params, (v,)))
        if out.base is None:
            owned[id(out)] = out

    def process_multi(self, prim, args, outs, params):
        ins = self._refs(args)
        vs = []
        for o in outs:
            v = self._newvar(o)
            o._tg[self] = v
            vs.append(v)
            self._own(o._v)
            if o._v.dtype.kind in "biu":
                self._discrete[v] = o._v
        self.graph.nodes.append(GNode(prim, ins, params, tuple(vs)))

    def on_concrete(self, x, kind):
        if x._al is not None and x._alver != x._al.version:
            from ..core.array import _refresh
            _refresh(x)
        v = x._tg.get(self)
        if v is None:
            return
        try:
            oc = outcome(x._v, kind)
        except Exception:
            return  # the program's own use of the value raises the error
        self.graph.guards.append(Guard(v, kind, oc, len(self.graph.nodes)))
        if kind not in TRUTH_KINDS:
            self._pinned.add(id(_root(x._v)))

    def guard_unseen(self):
        """Guard every integer or boolean result that no recorded operation
        read (and that is not an output) on its whole value.

        Such a value was either dropped or used where no hook sees it:
        indexing a *plain* array (``table[np.searchsorted(grid, x)]``,
        ``plain[mask]``) calls nothing in Python, and its result would be
        frozen into the plan as a constant. Guarding the index makes a replay
        whose index differs take another path, never reuse the frozen result.
        (An index read by recorded operations and *also* used on a plain
        array is not caught; the common forms are.) Called once, after the
        trace."""
        if not self._discrete:
            return  # nothing to guard: skip the pass over every node
        graph = self.graph
        read = {r for node in graph.nodes for r in node.ins if r >= 0}
        read.update(r for r in graph.outputs if isinstance(r, int) and r >= 0)
        read.update(g.var for g in graph.guards)
        for v, val in self._discrete.items():
            if v not in read and v not in graph.static:
                graph.guards.append(Guard(v, "index", outcome(val, "index"), len(graph.nodes)))
        self._discrete = {}

    # --- outputs ------------------------------------------------------------------
    def output_ref(self, x):
        """Reference of an output leaf; a non-array leaf is a static constant."""
        if type(x) is TracedArray:
            if x._al is not None and x._alver != x._al.version:
                from ..core.array import _refresh
                _refresh(x)
            v = x._tg.get(self)
            if v is not None:
                return v
            return self._const_array(x._v)
        if isinstance(x, np.ndarray):
            return self._const_array(x)
        consts = self.graph.consts
        consts.append(x)
        return -len(consts)
