"""Fusion: cluster the graph's elementwise work into groups that one loop
computes, and turn each group into a kernel step.

A *group* has an iteration shape (the shape of its members' outputs). Nodes
are visited in recorded order; an elementwise node with a scalar form
(:data:`.codegen.SCALAR`: arithmetic, transcendental functions, comparisons,
``where``, casts, ``broadcast_to``) joins the most recent group of its shape
unless one of its inputs depends on that group through a step outside it
(which would make the group wait for itself). A reduction (``sum``, ``max``,
``min``, ``prod`` over any axes) whose input a group computes closes over
that group: it is accumulated in the same loop. Its result is only
available after the loop, so nodes consuming it start a new group.

Everything else (matmul, linalg, gathers and scatters, shape changes,
reductions of values no group computes) stays a NumPy call.

For ``jit(value_and_grad(f))`` the recorded backward pass consists of
elementwise products with the partial derivatives and ``sum`` reductions
(undoing broadcasting): forward and adjoint fall into the same group, the
value is a reduction of the loop and the gradient is stored by it, with no
intermediate array ever written to memory.
"""
import warnings

import numpy as np

from . import cache
from .codegen import (_TRIG_F64, BOOL_ONLY, REDUCE, SCALAR, KernelIR, Operand, kernel_source,
                      ok_dtype)
from .plan import Step

_ndarray = np.ndarray
_SCALARS = (bool, int, float, np.bool_, np.integer, np.floating)


class Group:
    __slots__ = ("id", "shape", "members", "reds", "order")

    def __init__(self, gid, shape, order):
        self.id = gid
        self.shape = shape
        self.members = []   # node indices (elementwise)
        self.reds = []      # node indices (reductions)
        self.order = order  # position of its first member

    @property
    def nodes(self):
        return self.members + self.reds


def _const_ok(c):
    if isinstance(c, _SCALARS):
        return ok_dtype(np.result_type(c))
    if isinstance(c, _ndarray):
        return ok_dtype(c.dtype)
    return False


def ew_fusable(graph, node):
    """Whether ``node`` has a scalar form usable in a kernel."""
    name = node.prim.name
    if name not in SCALAR or len(node.outs) != 1:
        return False
    shape, dt = graph.avals[node.outs[0]]
    if dt.kind not in "fb" or not ok_dtype(dt) or 0 in shape:
        return False
    if node.params and name not in ("astype", "broadcast_to"):
        return False
    if name in BOOL_ONLY and not _all_bool(graph, node):
        return False
    for r in node.ins:
        if r >= 0:
            if not ok_dtype(graph.avals[r][1]):
                return False
        elif not _const_ok(graph.const(r)):
            return False
    return True


def _all_bool(graph, node):
    for r in node.ins:
        dt = graph.avals[r][1] if r >= 0 else np.result_type(graph.const(r))
        if dt.kind != "b":
            return False
    return True


def red_fusable(graph, node):
    if node.prim.name not in REDUCE or len(node.outs) != 1 or len(node.ins) != 1:
        return False
    p = node.params
    if set(p) != {"axis", "keepdims"}:
        return False
    r = node.ins[0]
    if r < 0:
        return False
    dt = graph.avals[node.outs[0]][1]
    return dt.kind == "f" and ok_dtype(dt) and graph.avals[r][1] == dt


def cluster(graph, live, exclude=frozenset()):
    """Assign live nodes to groups. Returns ``(units, groups)``: ``units`` in
    recorded order, each a node index or a :class:`Group`.

    A node may join group ``G`` only if none of its inputs from outside ``G``
    depends on ``G`` through other units: contracting ``G`` into one step
    must leave the unit graph acyclic. Units only depend on units holding
    earlier nodes, so the search backwards from an input stops at units
    whose last node precedes ``G``'s first.
    """
    nodes = graph.nodes
    avals = graph.avals
    unit_of = {}       # var -> unit key (group id, or ("n", node index))
    red_out = set()    # vars that are reduction results
    preds = {}         # unit key -> set of unit keys it reads from
    last = {}          # unit key -> position of its last node
    by_shape = {}
    units = []
    groups = []

    def reaches(gkey, start, first):
        # does unit `start` depend on unit `gkey`?
        stack = [start]
        seen = {start}
        while stack:
            u = stack.pop()
            if u == gkey:
                return True
            if last[u] < first:
                continue
            for p in preds[u]:
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
        return False

    for pos, i in enumerate(live):
        node = nodes[i]
        if i not in exclude and ew_fusable(graph, node):
            shape = avals[node.outs[0]][0]
            target = None
            for G in reversed(by_shape.get(shape, ())):
                ok = True
                for r in node.ins:
                    if r < 0:
                        continue
                    u = unit_of.get(r)
                    if u is None:
                        continue  # a graph input
                    if u == G.id and r not in red_out:
                        continue
                    if u == G.id or reaches(G.id, u, G.order):
                        ok = False
                        break
                if ok:
                    target = G
                    break
            if target is None:
                target = Group(len(groups), shape, pos)
                groups.append(target)
                by_shape.setdefault(shape, []).append(target)
                units.append(target)
                preds[target.id] = set()
            key = target.id
            target.members.append(i)
            for r in node.ins:
                u = unit_of.get(r) if r >= 0 else None
                if u is not None and u != key:
                    preds[key].add(u)
            last[key] = pos
            unit_of[node.outs[0]] = key
            continue
        if i not in exclude and red_fusable(graph, node):
            r = node.ins[0]
            key = unit_of.get(r)
            if (type(key) is int and r not in red_out
                    and avals[r][0] == groups[key].shape):
                G = groups[key]
                G.reds.append(i)
                o = node.outs[0]
                unit_of[o] = key
                red_out.add(o)
                last[key] = pos
                continue
        key = ("n", i)
        units.append(i)
        preds[key] = set(unit_of[r] for r in node.ins if r >= 0 and r in unit_of)
        last[key] = pos
        for o in node.outs:
            unit_of[o] = key
    return units, groups


def worth_fusing(graph, G):
    """A group of one cheap operation is no better than NumPy's call."""
    real = [i for i in G.members if SCALAR[graph.nodes[i].prim.name][0] != "ident"]
    return len(real) + len(G.reds) >= 2


# --- kernels ---------------------------------------------------------------------------
def _compact(c):
    """A broadcast constant (zero strides) as the smallest array it was broadcast from."""
    if c.ndim and any(st == 0 and n > 1 for st, n in zip(c.strides, c.shape)):
        key = tuple(slice(0, 1) if (st == 0 and n > 1) else slice(None)
                    for st, n in zip(c.strides, c.shape))
        return np.ascontiguousarray(c[key])
    return c


def _literal_of(c):
    """``(value, dtype, weak)`` when constant ``c`` can be written as a literal."""
    if isinstance(c, (bool, int, float)):
        return c, np.result_type(c), True
    if isinstance(c, np.generic):
        return c.item(), c.dtype, False
    if isinstance(c, _ndarray) and c.size == 1:
        return c.reshape(-1)[0].item(), c.dtype, False
    return None


class KernelStep(Step):
    """Call a fused kernel: inputs from slots, outputs and reductions to slots.

    Tiered: a group whose kernel is not compiled yet (in this process or in
    the disk cache) first runs as NumPy calls (:class:`NumpyGroup`), and its
    kernel is compiled on the run after ``countdown`` runs, when the plan has
    shown it is reused. That run also executes the NumPy version and checks
    the kernel against it; a kernel that disagrees is dropped (with a
    warning) and the group stays on NumPy. A function called once or twice
    never waits for numba."""

    __slots__ = ("fn", "ir", "ins", "in_kinds", "outs", "out_dtypes", "reds", "shape", "n",
                 "flat", "source", "post_views", "label", "pending", "countdown", "flagged",
                 "safe", "safe_source")

    @property
    def name(self):
        return self.label

    def describe(self):
        return self.label if self.pending is None else self.label + " (NumPy until reused)"

    @property
    def compiled(self):
        return self.pending is None and not isinstance(self.fn, (NumpyGroup, BlockedNumpy))

    def _args(self, vals, flag=False):
        flat = self.flat
        n = self.n
        args = [n] if flat else list(self.shape)
        for s, kind in zip(self.ins, self.in_kinds):
            a = vals[s]
            if kind == 0:      # full
                if flat:
                    if not a.flags.c_contiguous:
                        a = np.ascontiguousarray(a)
                    a = a.reshape(n)
            elif kind == 1:    # scalar
                a = a.reshape(-1)[0]
            args.append(a)
        outs = []
        shape = self.shape
        for dt in self.out_dtypes:
            o = np.empty(shape, dt)
            outs.append(o)
            args.append(o.reshape(n) if flat else o)
        reds = []
        for slot, rshape, final, dt, ident in self.reds:
            r = np.full(rshape, ident, dt) if not flat else np.empty(1, dt)
            reds.append(r)
            args.append(r)
        if flag:
            args.append(np.empty(1))  # the fast sin/cos range flag (flat kernels)
        return args, outs, reds

    def _call(self, vals, fn, flagged):
        """Run ``fn``; a kernel with fast sin/cos whose arguments left their
        range (its flag is set) is run again as the libm kernel."""
        args, outs, reds = self._args(vals, flagged)
        fn(*args)
        if flagged and args[-1][0] > 0:
            if self.safe is None:
                self.safe = cache.load(self.safe_source)
            args, outs, reds = self._args(vals)
            self.safe(*args)
        return outs, reds

    def run(self, vals):
        if self.pending is not None:
            self.countdown -= 1
            if self.countdown < 0:
                self._promote(vals)
        outs, reds = self._call(vals, self.fn, self.flagged)
        for o, s in zip(outs, self.outs):
            vals[s] = o
        for r, (slot, rshape, final, dt, ident) in zip(reds, self.reds):
            vals[slot] = r.reshape(final)
        for step in self.post_views:
            step.run(vals)

    def _promote(self, vals):
        """Compile the kernel and check it against the NumPy version on this
        run's inputs before using it."""
        source, self.pending = self.pending, None
        if source is None:
            return  # another thread replaying the same plan is promoting it
        flagged = self.safe_source is not None
        try:
            fn = cache.load(source)
            outs, reds = self._call(vals, fn, flagged)
            outs0, reds0 = self._call(vals, self.fn, False)
            bad = next((k for k, (a, b) in enumerate(zip(outs + reds, outs0 + reds0))
                        if not _agree(a, b)), None)
        except Exception as e:  # pragma: no cover - a lowering gap
            bad = repr(e)
        if bad is None:
            self.fn = fn
            self.flagged = flagged
            return
        warnings.warn(f"tracegrad.jit: the compiled kernel of {self.label} disagrees with "
                      f"NumPy (result {bad}); keeping NumPy for it. Please report this.",
                      RuntimeWarning, stacklevel=4)


def _agree(a, b):
    """Kernel and NumPy results equal up to the rounding of reassociated
    reductions and of the 2-ulp tanh/log1p forms."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind not in "fc":
        return bool(np.array_equal(a, b))
    with np.errstate(invalid="ignore", over="ignore"):
        scale = float(np.max(np.abs(b), initial=0.0, where=np.isfinite(b)))
        tol = 1e-4 if a.dtype.itemsize <= 4 or a.dtype == np.complex64 else 1e-9
        return bool(np.isclose(a, b, rtol=tol, atol=tol * 1e-3 * (1.0 + scale),
                               equal_nan=True).all())


#: runs of a plan on NumPy calls before a group's kernel is compiled (the
#: first run is the check right after tracing); 0 compiles while lowering
COMPILE_AFTER = 2


def build_kernel(graph, G, nconst, needed, extra, parallel="auto", executor="auto",
                 compile_after=None):
    """A :class:`KernelStep` for group ``G``; ``needed`` holds the vars other
    steps read (stored by the kernel); ``extra(c)`` gives a slot to a new
    constant (a compacted broadcast constant). The kernel is compiled now
    when it is cached (in memory or on disk) or ``compile_after`` is 0,
    else after ``compile_after`` runs (default :data:`COMPILE_AFTER`)."""
    from .plan import NumpyStep, slot_of
    nodes = graph.nodes
    avals = graph.avals
    ir = KernelIR(G.shape)
    opidx = {}        # var -> op index
    in_index = {}     # ref -> input index
    in_slots = []
    in_kinds = []
    post_views = []
    for i in sorted(G.members):
        node = nodes[i]
        operands = []
        for r in node.ins:
            if r >= 0 and r in opidx:
                operands.append(Operand("op", opidx[r], avals[r][1]))
                continue
            if r < 0:
                c = graph.const(r)
                lit = _literal_of(c) if not isinstance(c, _ndarray) or c.size == 1 else None
                if lit is None and isinstance(c, _ndarray):
                    cc = _compact(c)
                    if cc.size == 1:
                        lit = _literal_of(cc)
                if lit is not None:
                    v, dt, weak = lit
                    operands.append(Operand("lit", dtype=dt, value=v, weak=weak))
                    continue
            k = in_index.get(r)
            if k is None:
                k = len(ir.inputs)
                in_index[r] = k
                if r >= 0:
                    shape, dt = avals[r]
                    slot = nconst + r
                else:
                    c0 = graph.const(r)
                    c = _compact(c0)
                    slot = slot_of(r, nconst) if c is c0 else extra(c)
                    shape, dt = c.shape, c.dtype
                size = int(np.prod(shape)) if shape else 1
                if tuple(shape) == G.shape:
                    kind = "full"
                elif size == 1:
                    kind = "scalar"
                else:
                    kind = "bcast"
                ir.inputs.append((kind, dt, tuple(shape)))
                in_slots.append(slot)
                in_kinds.append(kind)
            operands.append(Operand("in", k, ir.inputs[k][1]))
        o = node.outs[0]
        dt = avals[o][1]
        params = node.params
        ir.ops.append((node.prim.name, operands, dt, params))
        opidx[o] = len(ir.ops) - 1
    stores = []
    store_vars = []
    for i in G.members:
        o = nodes[i].outs[0]
        if o in needed:
            node = nodes[i]
            if node.prim.name == "broadcast_to":
                # a view, not a materialised array
                post_views.append(NumpyStep(node.prim, tuple(slot_of(r, nconst) for r in node.ins),
                                            node.params, (nconst + o,)))
                continue
            stores.append(opidx[o])
            store_vars.append(o)
    ir.stores = stores
    red_specs = []
    nd = len(G.shape)
    for i in G.reds:
        node = nodes[i]
        r = node.ins[0]
        axes = tuple(sorted(nd + a if a < 0 else a for a in node.params["axis"]))
        o = node.outs[0]
        dt = avals[o][1]
        ir.reds.append((opidx[r], node.prim.name, axes, dt))
        rshape = tuple(1 if d in axes else n for d, n in enumerate(G.shape))
        red_specs.append((nconst + o, rshape, avals[o][0], dt, REDUCE[node.prim.name][0]))
    n = int(np.prod(G.shape)) if G.shape else 1
    from .costmodel import choose
    how = choose(ir, executor) if n >= 4096 or executor == "blocked" else "fused"
    par = how == "fused" and _want_parallel(parallel, ir, n)
    step = KernelStep.__new__(KernelStep)
    step.pending = None
    step.countdown = 0
    step.flagged = False
    step.safe = step.safe_source = None
    if how == "blocked":
        source = None
        step.fn = BlockedNumpy(ir)
    else:
        source, _ = kernel_source(ir, parallel=par and ir.flat)
        fast = _fast_trig(ir)
        if fast is not None:
            # sin/cos as vector code, valid for |x| <= 1.6e6: the kernel
            # flags an argument outside that, and the libm kernel reruns it
            step.safe_source = source
            source, _ = kernel_source(fast, parallel=par)
        after = COMPILE_AFTER if compile_after is None else int(compile_after)
        if after <= 0 or cache.compiled_before(source):
            step.fn = cache.load(source)
            step.flagged = fast is not None
        else:
            step.fn = NumpyGroup(ir)
            step.pending = source
            step.countdown = after
    step.ir = ir
    step.source = source
    step.flat = ir.flat
    step.n = n
    step.shape = G.shape
    step.ins = tuple(in_slots)
    step.in_kinds = tuple({"full": 0, "scalar": 1, "bcast": 2}[k] for k in in_kinds)
    step.outs = tuple(nconst + o for o in store_vars)
    step.out_dtypes = tuple(avals[o][1] for o in store_vars)
    step.reds = tuple(red_specs)
    step.post_views = tuple(post_views)
    step.free = ()
    step.reads = step.ins + tuple(x for v in post_views for x in v.ins)
    step.label = (f"{'blocked' if how == 'blocked' else 'kernel'}"
                  f"[{'flat' if ir.flat else 'nd'}{'/par' if par and ir.flat else ''} "
                  f"{len(ir.ops)} ops, {len(ir.reds)} red, shape={G.shape}]")
    return step


def _fast_trig(ir):
    """A copy of flat ``ir`` computing float64 sin/cos by :mod:`.rt`'s vector
    forms, with one more reduction: the max of a per-element flag, 1 where
    an argument is outside their range (or not finite). None when ``ir`` is
    not flat or has no float64 sin/cos."""
    trig = [j for j, (name, _, dt, _) in enumerate(ir.ops)
            if name in _TRIG_F64 and np.dtype(dt) == np.float64]
    if not trig or not ir.flat:
        return None
    f64 = np.dtype(np.float64)
    fast = KernelIR(ir.shape)
    fast.inputs = list(ir.inputs)
    fast.ops = list(ir.ops)
    fast.stores = list(ir.stores)
    fast.reds = list(ir.reds)
    fast.fast_trig = True
    flag = None
    for j in trig:
        fast.ops.append(("trig_range_flag", [ir.ops[j][1][0]], f64, {}))
        k = Operand("op", len(fast.ops) - 1, f64)
        if flag is not None:
            fast.ops.append(("maximum", [flag, k], f64, {}))
            k = Operand("op", len(fast.ops) - 1, f64)
        flag = k
    fast.reds.append((flag.index, "max", tuple(range(len(ir.shape))), f64))
    return fast


#: elements at which a group may use several threads
PARALLEL_MIN = 1 << 18


def _want_parallel(parallel, ir, n):
    if parallel is True:
        return True
    if parallel is False or parallel is None:
        return False
    if not _threadsafe_layer():
        return False
    return n * max(ir.cost(), 1) >= PARALLEL_MIN * 8


_LAYER = []


def _threadsafe_layer():
    """Parallel kernels only with a threading layer that tolerates calls from
    several Python threads at once (OpenMP or TBB, not numba's workqueue)."""
    if not _LAYER:
        ok = False
        try:
            import numba
            if numba.config.NUMBA_NUM_THREADS >= 2:
                layer = numba.config.THREADING_LAYER
                if layer in ("omp", "tbb", "threadsafe", "default"):
                    try:
                        from numba.np.ufunc import omppool  # noqa: F401
                        ok = True
                    except ImportError:
                        try:
                            from numba.np.ufunc import tbbpool  # noqa: F401
                            ok = True
                        except ImportError:
                            ok = False
        except Exception:
            ok = False
        _LAYER.append(ok)
    return _LAYER[0]


# --- NumPy calls for a group (before its kernel is compiled) -------------------------------
class NumpyGroup:
    """A group evaluated as whole-array NumPy calls, with a kernel's calling
    convention (``(n or *shape, *inputs, *outputs, *reductions)``): what a
    group runs until its kernel is compiled. Each operation is the NumPy ufunc
    eager execution calls, so results equal eager ones."""

    def __init__(self, ir):
        self.ir = ir

    def __call__(self, *args):
        ir = self.ir
        nd = 1 if ir.flat else len(ir.shape)
        shape = tuple(args[:nd])
        args = args[nd:]
        nin, nst = len(ir.inputs), len(ir.stores)
        ins, outs, reds = args[:nin], args[nin:nin + nst], args[nin + nst:]
        stored = {j: m for m, j in enumerate(ir.stores)}
        vals = []
        with np.errstate(all="ignore"):
            for j, (name, operands, dt, params) in enumerate(ir.ops):
                m = stored.get(j)
                out = outs[m] if m is not None else np.empty(shape, dt)
                ops = [ins[a.index] if a.kind == "in" else vals[a.index] if a.kind == "op"
                       else (a.value if a.weak else a.dtype.type(a.value)) for a in operands]
                _np_apply(name, ops, out)
                vals.append(out)
            for r, (j, rn, axes, _) in zip(reds, ir.reds):
                uf = _REDUCERS[rn]
                kw = {"dtype": r.dtype} if rn in ("sum", "prod") else {}
                if ir.flat:
                    r[0] = uf.reduce(vals[j], axis=None, **kw)
                else:
                    # one pass over everything: r's initial identity plays no part
                    r[...] = uf.reduce(vals[j], axis=axes, keepdims=True, **kw)


_REDUCERS = {"sum": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}


# --- NumPy calls on blocks (the cost model's alternative to a fused loop) ----------------
class BlockedNumpy:
    """A flat group evaluated as NumPy ufunc calls with ``out=`` on blocks of
    :data:`.costmodel.BLOCK` elements, temporaries reused by liveness so they
    stay in cache. Same calling convention as a flat kernel:
    ``(n, *inputs, *outputs, *reductions)``."""

    def __init__(self, ir):
        from .costmodel import BLOCK
        self.ir = ir
        self.block = BLOCK
        nops = len(ir.ops)
        last = [-1] * nops
        for j, (_, args, _, _) in enumerate(ir.ops):
            for a in args:
                if a.kind == "op":
                    last[a.index] = j
        stored = {j: m for m, j in enumerate(ir.stores)}
        for _, (j, _, _, _) in enumerate(ir.reds):
            last[j] = nops  # read after the ops of the block
        # buffer assignment: ("out", m) for stored ops, ("tmp", k) otherwise
        free = {}
        self.where = []
        ntmp = []
        for j, (_, args, dt, _) in enumerate(ir.ops):
            for a in args:  # release operands whose last reader is this op
                if a.kind == "op" and last[a.index] == j and a.index not in stored:
                    kind, k = self.where[a.index]
                    free.setdefault(np.dtype(self.ir.ops[a.index][2]).str, []).append(k)
            if j in stored:
                self.where.append(("out", stored[j]))
                continue
            lst = free.get(np.dtype(dt).str)
            if lst:
                k = lst.pop()
            else:
                k = len(ntmp)
                ntmp.append(np.dtype(dt))
            self.where.append(("tmp", k))
        self.tmp_dtypes = ntmp

    def __call__(self, n, *args):
        from .codegen import REDUCE
        ir = self.ir
        nin, nst = len(ir.inputs), len(ir.stores)
        ins, outs, reds = args[:nin], args[nin:nin + nst], args[nin + nst:]
        B = self.block
        tmps = [np.empty(min(B, n), dt) for dt in self.tmp_dtypes]
        accs = [REDUCE[rn][0] for _, rn, _, _ in ir.reds]
        full = [k == "full" for k, _, _ in ir.inputs]
        with np.errstate(all="ignore"):
            for b0 in range(0, n, B):
                m = min(B, n - b0)
                xs = [a[b0:b0 + m] if f else a for a, f in zip(ins, full)]
                vals = []
                for j, (name, operands, dt, params) in enumerate(ir.ops):
                    kind, k = self.where[j]
                    out = outs[k][b0:b0 + m] if kind == "out" else tmps[k][:m]
                    ops = [xs[a.index] if a.kind == "in" else vals[a.index] if a.kind == "op"
                           else (a.value if a.weak else a.dtype.type(a.value)) for a in operands]
                    _np_apply(name, ops, out)
                    vals.append(out)
                for r, (j, rn, _, _) in enumerate(ir.reds):
                    v = vals[j]
                    if rn == "sum":
                        accs[r] = accs[r] + float(np.add.reduce(v))
                    elif rn == "prod":
                        accs[r] = accs[r] * float(np.multiply.reduce(v))
                    elif rn == "max":
                        accs[r] = float(np.maximum(accs[r], np.maximum.reduce(v)))
                    else:
                        accs[r] = float(np.minimum(accs[r], np.minimum.reduce(v)))
        for r, acc in zip(reds, accs):
            r[0] = acc


def _np_apply(name, ops, out):
    kind = SCALAR[name][0]
    if name == "where":
        c, a, b = ops
        np.copyto(out, b, casting="unsafe")
        np.copyto(out, a, casting="unsafe", where=c)
    elif name == "clip":
        np.clip(ops[0], ops[1], ops[2], out=out)
    elif kind in ("ident", "cast"):
        np.copyto(out, ops[0], casting="unsafe")
    else:
        getattr(np, "divide" if name == "true_divide" else name)(*ops, out=out)
