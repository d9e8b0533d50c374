"""Choose how each part of a captured graph runs and build the plan.

1. Dead nodes are dropped (only outputs and guards are needed).
2. Small values (at most :data:`.vm.VM_MAX` elements, float64/bool/int) go
   to the small-value machine (:mod:`.vm`): no compilation per graph.
3. :func:`.fuse.cluster` groups the remaining elementwise work; groups too
   small to gain anything dissolve back into NumPy calls.
4. Units (groups and single nodes) are ordered topologically, each as early
   as its inputs allow, so guards are checked as soon as their value exists;
   consecutive machine nodes form one machine segment.
5. Each group becomes a compiled kernel step, each other node a NumPy step,
   and slots are released after their last reader.

A group that fails to compile runs as NumPy calls: a plan never fails where
eager execution works.
"""
import heapq
import warnings

from .fuse import Group, build_kernel, cluster, worth_fusing
from .plan import (GuardStep, NumpyStep, Plan, assign_frees, interpret, live_nodes, simplify,
                   slot_of)
from .vm import Lowerer, Program, VMCheck, VMStep


def lower(graph, options=None):
    """The plan for ``graph`` (see :mod:`.plan`)."""
    options = options or {}
    if options.get("fuse", True) is False and options.get("vm", True) is False:
        return interpret(graph)
    simplify(graph)
    nodes = graph.nodes
    live = live_nodes(graph)
    vm_nodes = set()
    all_vm = not live
    if options.get("vm", True) is not False:
        ok = VMCheck(graph)
        flags = [ok(nodes[i]) for i in live]
        all_vm = all(flags)
        vm_nodes = set(live) if all_vm else {i for i, f in zip(live, flags) if f}
    if all_vm:
        # all in the machine (a program of small arrays): recorded order
        flat_units = live
        order = range(len(live))
        needed = set(r for r in graph.outputs if r >= 0)
        needed.update(g.var for g in graph.guards)
    else:
        if options.get("fuse", True) is False:
            units = list(live)
        else:
            units, _ = cluster(graph, live, vm_nodes)
        flat_units = []
        for u in units:
            if isinstance(u, Group):
                if worth_fusing(graph, u):
                    flat_units.append(u)
                else:
                    flat_units.extend(u.nodes)
            else:
                flat_units.append(u)
        order, needed = schedule(graph, flat_units, vm_nodes)

    nconst = len(graph.consts)
    nvars = len(graph.avals)
    extra = []

    def add_const(c):
        extra.append(c)
        return nconst + nvars + len(extra) - 1

    by_var = {}
    for k, g in enumerate(graph.guards):
        by_var.setdefault(g.var, []).append(k)

    def guards_for(outs):
        for o in outs:
            for gk in by_var.get(o, ()):
                g = graph.guards[gk]
                steps.append(GuardStep(nconst + o, g.kind, g.outcome, gk))

    steps = []
    for k in by_var_inputs(graph, by_var):
        g = graph.guards[k]
        steps.append(GuardStep(nconst + g.var, g.kind, g.outcome, k))

    prog = None
    seg = None   # (start, loads, produced vars) of the open machine segment
    vm_steps = []

    def close_segment():
        nonlocal seg
        if seg is None:
            return
        start, loads, produced = seg
        stores = []
        for o in produced:
            if o in needed:
                shape, dt = graph.avals[o]
                stores.append((nconst + o, prog.addr[o], shape, dt))
        step = VMStep(prog, start, len(prog.code), [(nconst + r, off, n) for r, off, n in loads],
                      stores, bslot, False, False)
        steps.append(step)
        vm_steps.append(step)
        guards_for(produced)
        seg = None

    if all_vm and live:
        # one machine segment: a tight loop
        prog = Program(graph, nconst)
        lowerer = Lowerer(prog)
        bslot = add_const(None)
        loads = []
        lowerer.nodes(nodes, live, loads)
        seg = (0, loads, [o for i in live for o in nodes[i].outs if o in needed])
        order = ()
    for k in order:
        u = flat_units[k]
        if not isinstance(u, Group) and u in vm_nodes:
            if prog is None:
                prog = Program(graph, nconst)
                lowerer = Lowerer(prog)
                bslot = add_const(None)
            if seg is None:
                seg = (len(prog.code), [], [])
            lowerer.node(nodes[u], seg[1])
            seg[2].extend(nodes[u].outs)
            continue
        close_segment()
        group_nodes = u.nodes if isinstance(u, Group) else [u]
        step = None
        if isinstance(u, Group):
            try:
                step = build_kernel(graph, u, nconst, needed, add_const,
                                    options.get("parallel", "auto"),
                                    options.get("executor", "auto"),
                                    options.get("compile_after"))
            except Exception as e:  # a lowering gap: NumPy instead
                warnings.warn(f"tracegrad.jit: could not compile a fused group ({e!r}); "
                              "running it with NumPy", RuntimeWarning, stacklevel=2)
        if step is not None:
            steps.append(step)
        else:
            for i in sorted(group_nodes):
                steps.append(numpy_step(nodes[i], nconst))
        guards_for([o for i in group_nodes for o in nodes[i].outs])
    close_segment()
    if prog is not None:
        prog.finish()
        vm_steps[0].first = True
        vm_steps[-1].last = True
    plan = Plan(graph, steps, nconst, extra)
    keep = set(plan.out_slots) | set(range(nconst)) | set(range(nconst + nvars,
                                                                nconst + nvars + len(extra)))
    assign_frees(steps, keep)
    return plan.compact()


def numpy_step(node, nconst):
    return NumpyStep(node.prim, tuple(slot_of(r, nconst) for r in node.ins), node.params,
                     tuple(nconst + o for o in node.outs))


def by_var_inputs(graph, by_var):
    """Guards on graph inputs (checked first)."""
    out = []
    for v in graph.inputs:
        out.extend(by_var.get(v, ()))
    return sorted(out)


def schedule(graph, units, vm_nodes=frozenset()):
    """Topological order of ``units`` (node indices and groups), each placed
    as early as possible; and the variables read outside their unit (for
    machine nodes: outside the machine)."""
    nodes = graph.nodes
    prod = {}
    for k, u in enumerate(units):
        for i in (u.nodes if isinstance(u, Group) else (u,)):
            for o in nodes[i].outs:
                prod[o] = k
    deps = [set() for _ in units]
    users = [[] for _ in units]
    needed = set(r for r in graph.outputs if r >= 0)
    needed.update(g.var for g in graph.guards)
    for k, u in enumerate(units):
        in_vm = not isinstance(u, Group) and u in vm_nodes
        for i in (u.nodes if isinstance(u, Group) else (u,)):
            for r in nodes[i].ins:
                if r >= 0:
                    p = prod.get(r)
                    if p is not None and p != k:
                        pu = units[p]
                        if not (in_vm and not isinstance(pu, Group) and pu in vm_nodes):
                            needed.add(r)
                        if p not in deps[k]:
                            deps[k].add(p)
                            users[p].append(k)
    prio = [min(u.nodes) if isinstance(u, Group) else u for u in units]
    indeg = [len(d) for d in deps]
    heap = [(prio[k], k) for k in range(len(units)) if indeg[k] == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        _, k = heapq.heappop(heap)
        order.append(k)
        for u in users[k]:
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(heap, (prio[u], u))
    if len(order) != len(units):
        raise AssertionError("fusion produced a cycle")
    return order, needed
