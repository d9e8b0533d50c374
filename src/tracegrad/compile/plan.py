"""Execution plans: a captured graph lowered to a list of steps over slots.

A plan owns a flat list of *slots*: the constants first, then one slot per
graph variable. Each step reads slots and writes slots:

* :class:`NumpyStep` calls a primitive's ``impl`` (NumPy / BLAS), the
  fallback for every operation without a lowering, so a plan never fails
  where eager execution works;
* :class:`GuardStep` recomputes nothing: it checks a guarded variable right
  after the step that produced it and raises :class:`GuardFailure` when the
  program would take another path;
* fused kernels (:mod:`.fuse`, :mod:`.codegen`) and the small-value machine
  (:mod:`.vm`) add their own step types.

Slots are released after their last use, so peak memory follows the
program's live values, not the whole graph.
"""
import numpy as np

from .graph import TRUTH_KINDS, outcome

_ndarray = np.ndarray
_asarray = np.asarray


class GuardFailure(Exception):
    """A replay reached a guard whose value differs from the traced path."""

    def __init__(self, index, actual):
        super().__init__(index)
        self.index = index
        self.actual = actual


class Step:
    """Base class: ``run(vals)`` reads and writes the slot list; ``reads``
    are the slots it reads, ``free`` those released after it."""

    __slots__ = ("free", "reads")
    name = "step"

    def describe(self):
        return self.name


class NumpyStep(Step):
    """``vals[out] = impl(*vals[ins], **params)`` (one or several outputs)."""

    __slots__ = ("fn", "ins", "params", "outs", "prim")

    def __init__(self, prim, ins, params, outs):
        self.prim = prim
        self.fn = prim.impl
        self.ins = ins
        self.params = params
        self.outs = outs
        self.free = ()
        self.reads = ins

    @property
    def name(self):
        return "numpy:" + self.prim.name

    def describe(self):
        return self.name

    def slots(self):
        return self.ins + self.outs

    def remap(self, m):
        self.ins = self.reads = tuple(m[s] for s in self.ins)
        self.outs = tuple(m[s] for s in self.outs)
        self.free = tuple(m[s] for s in self.free)

    def run(self, vals):
        r = self.fn(*[vals[i] for i in self.ins], **self.params)
        outs = self.outs
        if len(outs) == 1:
            if type(r) is tuple:
                # a multi-result primitive with one result (np.nonzero of a vector)
                (r,) = r
            if type(r) is not _ndarray:
                r = _asarray(r)
            vals[outs[0]] = r
        else:
            for o, x in zip(outs, r):
                vals[o] = x if type(x) is _ndarray else _asarray(x)


class GuardStep(Step):
    """Check that guard ``index`` still holds on the slot it watches."""

    __slots__ = ("slot", "kind", "expected", "index")
    name = "guard"

    def __init__(self, slot, kind, expected, index):
        self.slot = slot
        self.kind = kind
        self.expected = expected
        self.index = index
        self.free = ()
        self.reads = (slot,)

    def slots(self):
        return (self.slot,)

    def remap(self, m):
        self.slot = m[self.slot]
        self.reads = (self.slot,)
        self.free = tuple(m[s] for s in self.free)

    def run(self, vals):
        v = vals[self.slot]
        if self.kind in TRUTH_KINDS:
            try:
                ok = bool(v) == self.expected
            except Exception:
                ok = False
            if not ok:
                raise GuardFailure(self.index, None)
            return
        try:
            oc = outcome(v, self.kind)
        except Exception:
            oc = None
        if oc != self.expected:
            raise GuardFailure(self.index, oc)


def simplify(graph):
    """Rewrite results of shape/dtype queries (``graph.static``) as constants
    and drop the guards on them: they hold for every call of the signature."""
    if not graph.static:
        return graph
    rep = {}
    for v, val in graph.static.items():
        graph.consts.append(val if val.ndim else val[()])
        rep[v] = -len(graph.consts)
    for node in graph.nodes:
        if any(r in rep for r in node.ins):
            node.ins = tuple(rep.get(r, r) for r in node.ins)
    graph.outputs = [rep.get(r, r) if r >= 0 else r for r in graph.outputs]
    graph.guards = [g for g in graph.guards if g.var not in rep]
    graph.static = {}
    return graph


def live_nodes(graph):
    """Indices of the nodes that outputs or guards depend on, in order."""
    need = set(r for r in graph.outputs if isinstance(r, int) and r >= 0)
    need.update(g.var for g in graph.guards)
    keep = []
    nodes = graph.nodes
    add = need.add
    for i in range(len(nodes) - 1, -1, -1):
        node = nodes[i]
        outs = node.outs
        if (outs[0] in need) if len(outs) == 1 else any(o in need for o in outs):
            keep.append(i)
            for r in node.ins:
                if r >= 0:
                    add(r)
    keep.reverse()
    return keep


class Plan:
    """A graph lowered to steps; ``run(inputs)`` returns the output leaves."""

    def __init__(self, graph, steps, nconst, extra=()):
        # The graph itself is not kept: a plan of 100k+ steps should not also
        # hold 100k+ nodes for the garbage collector to walk forever.
        self.path = graph.path
        self.out_tree = graph.out_tree
        self.guards = [(g.var, g.kind) for g in graph.guards]
        self.steps = steps
        self.nconst = nconst
        # constants, one slot per variable, then constants made while lowering
        self.init = list(graph.consts) + [None] * len(graph.avals) + list(extra)
        self.in_slots = [nconst + v for v in graph.inputs]
        self.out_slots = [slot_of(r, nconst) for r in graph.outputs]
        self.const_outs = [r < 0 for r in graph.outputs]

    def run(self, inputs):
        vals = self.init[:]
        for s, x in zip(self.in_slots, inputs):
            vals[s] = x
        for step in self.steps:
            step.run(vals)
            for s in step.free:
                vals[s] = None
        out = []
        for s, c in zip(self.out_slots, self.const_outs):
            x = vals[s]
            if c and type(x) is _ndarray:
                x = x.copy()  # constants are shared, read-only snapshots
            out.append(x)
        return out

    def describe(self):
        """One line per step (for tests and debugging)."""
        return [s.describe() for s in self.steps]

    def compact(self):
        """Keep only the slots some step, input or output uses, renumbered.

        A graph has a slot per variable, but a plan whose values mostly live
        inside the small-value machine touches few of them: 166,000 slots
        copied at the start of every replay, for a dozen used. Steps that
        cannot renumber their slots (no ``remap``) leave the plan as it is."""
        steps = self.steps
        if not all(hasattr(st, "remap") for st in steps):
            return self
        used = set(self.in_slots)
        used.update(self.out_slots)
        for st in steps:
            used.update(st.slots())
        order = sorted(used)
        if len(order) == len(self.init):
            return self
        m = {s: k for k, s in enumerate(order)}
        self.init = [self.init[s] for s in order]
        self.nconst = sum(1 for s in order if s < self.nconst)
        self.in_slots = [m[s] for s in self.in_slots]
        self.out_slots = [m[s] for s in self.out_slots]
        for st in steps:
            st.remap(m)
        return self


def slot_of(ref, nconst):
    return nconst + ref if ref >= 0 else -1 - ref


def assign_frees(steps, keep_slots):
    """Set each step's ``free``: the slots whose last reader it is."""
    last = {}
    for k, step in enumerate(steps):
        for s in step.reads:
            last[s] = k
    frees = [[] for _ in steps]
    for s, k in last.items():
        if s not in keep_slots:
            frees[k].append(s)
    for step, fr in zip(steps, frees):
        step.free = tuple(fr)


def interpret(graph):
    """The plain plan: every live node as a NumPy call, guards after their
    producers (the correctness baseline every lowering is tested against)."""
    simplify(graph)
    nconst = len(graph.consts)
    steps = []
    guards_after = _guards_by_producer(graph)
    for g_i in guards_after.get(None, ()):
        steps.append(_guard_step(graph, g_i, nconst))
    for i in live_nodes(graph):
        node = graph.nodes[i]
        steps.append(NumpyStep(node.prim, tuple(slot_of(r, nconst) for r in node.ins),
                               node.params, tuple(nconst + o for o in node.outs)))
        for g_i in guards_after.get(i, ()):
            steps.append(_guard_step(graph, g_i, nconst))
    plan = Plan(graph, steps, nconst)
    keep = set(s for s in plan.out_slots) | set(range(nconst))
    assign_frees(steps, keep)
    return plan.compact()


def _guards_by_producer(graph):
    """guard index -> grouped under the index of the node producing its var
    (None for guards on inputs)."""
    producer = {}
    for i, node in enumerate(graph.nodes):
        for o in node.outs:
            producer[o] = i
    out = {}
    for k, g in enumerate(graph.guards):
        out.setdefault(producer.get(g.var), []).append(k)
    return out


def _guard_step(graph, k, nconst):
    g = graph.guards[k]
    return GuardStep(nconst + g.var, g.kind, g.outcome, k)
