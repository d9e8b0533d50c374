"""The small-value machine: graphs of small arrays run as an instruction
stream by one precompiled numba interpreter, with no per-graph compilation.

Fusing a loop pays for arrays of many elements. A program made of many
*small* arrays (an ODE integrated over 1,000 steps on a 3-element state, a
scalar recurrence) has hundreds of thousands of operations of a few elements
each: one kernel per group would mean thousands of compilations, and NumPy
calls cost a microsecond each. Such values live instead in one float64
buffer, each variable at its own offset, and a fixed interpreter (:func:`vm`,
generated from the same scalar table as the kernels and cached on disk like
them) executes instructions over it at a few nanoseconds each:

* elementwise operations with stride 0 (a scalar operand) or 1;
* ``GATHER`` (any data movement: getitem, reshape, transpose, broadcast,
  concatenate; its index map is computed once, at plan time, by running the
  primitive's own NumPy implementation on arrays of buffer offsets, so every
  indexing mode NumPy supports is covered exactly). A movement whose result
  is a contiguous run of the buffer costs nothing: the result aliases it;
* ``SCATTER`` / ``SCATTER_ACC`` / ``SCATTER_SET`` (the transposes of gathers:
  the adjoint of getitem, ``setitem``, ``add.at``) and the reductions ``sum``,
  ``max``, ``min``, ``prod`` over any axes, driven by an index map;
* small ``matmul``.

Values are float64 in the buffer; bool and integer values up to 32 bits are
stored exactly and converted back when they leave (64-bit integers stay in
NumPy). Only operations
whose NumPy result is float64 (or bool for comparisons) run here; float32 and
complex programs use kernels and NumPy.
"""
import numpy as np

from . import cache
from .codegen import BOOL_ONLY, SCALAR
from .plan import Step

#: largest array (elements) kept in the machine
VM_MAX = 1024
#: largest matmul (M*K*N) done by the machine's loop instead of BLAS
MATMUL_MAX = 4096

_F64 = np.dtype(np.float64)


def _ok_dtype(dt):
    # 64-bit integers would not survive the float64 buffer exactly above 2**53
    return dt == _F64 or dt.kind == "b" or (dt.kind in "iu" and dt.itemsize <= 4)


# --- opcodes ---------------------------------------------------------------------
def _vm_expr(name):
    """Scalar expression of an elementwise primitive over float64 operands
    ``x, y, z`` (bool results as 1.0 / 0.0), or None."""
    kind, tpl = SCALAR[name]
    if name == "power":
        tpl = "({0} ** {1})"
    if tpl is None:
        return None
    ops = ["x", "y", "z"]
    if kind == "arith":
        return tpl.format(*ops)
    if kind in ("cmp", "pred"):
        return f"(1.0 if {tpl.format(*ops)} else 0.0)"
    if kind == "logic":
        return f"(1.0 if {tpl.format(*[f'({v} != 0)' for v in ops])} else 0.0)"
    if kind == "select":
        return "(y if x != 0 else z)"
    return None


UNARY, BINARY, TERNARY = [], [], []
for _name, (_kind, _tpl) in SCALAR.items():
    if _kind in ("ident", "cast"):
        continue
    _e = _vm_expr(_name)
    if _e is None:
        continue
    _nin = 3 if _name in ("where", "clip") else (
        2 if "{1}" in (_tpl or "{0} {1}") or _name == "power" else 1)
    (UNARY, BINARY, TERNARY)[_nin - 1].append((_name, _e))
UNARY.append(("copy", "x"))
UNARY.append(("nonzero", "(1.0 if x != 0 else 0.0)"))
SPECIAL = ["gather", "scatter", "scatter_acc", "scatter_set", "red_sum", "red_max", "red_min",
           "red_prod", "matmul"]
OPS = ([n for n, _ in UNARY] + [n for n, _ in BINARY] + [n for n, _ in TERNARY] + SPECIAL)
OPCODE = {n: k for k, n in enumerate(OPS)}
_NIN = {**{n: 1 for n, _ in UNARY}, **{n: 2 for n, _ in BINARY}, **{n: 3 for n, _ in TERNARY}}
_EXPR = dict(UNARY + BINARY + TERNARY)

_LEAF = {
    "gather": ["for j in range(n):", "    buf[o + j] = buf[aux[p + j]]"],
    "scatter": ["for j in range(b):", "    buf[o + j] = 0.0",
                "for j in range(n):", "    buf[o + aux[p + j]] += buf[a + j * sa]"],
    "scatter_acc": ["for j in range(n):", "    buf[o + aux[p + j]] += buf[a + j * sa]"],
    "scatter_set": ["for j in range(n):", "    buf[o + aux[p + j]] = buf[a + j * sa]"],
    "red_sum": ["for j in range(b):", "    buf[o + j] = 0.0",
                "for j in range(n):", "    buf[o + aux[p + j]] += buf[a + j]"],
    "red_prod": ["for j in range(b):", "    buf[o + j] = 1.0",
                 "for j in range(n):", "    buf[o + aux[p + j]] *= buf[a + j]"],
    "red_max": ["for j in range(b):", "    buf[o + j] = -np.inf",
                "for j in range(n):", "    k = o + aux[p + j]", "    v = buf[a + j]",
                "    if v > buf[k] or v != v:", "        buf[k] = v"],
    "red_min": ["for j in range(b):", "    buf[o + j] = np.inf",
                "for j in range(n):", "    k = o + aux[p + j]", "    v = buf[a + j]",
                "    if v < buf[k] or v != v:", "        buf[k] = v"],
    # (M, K) @ (K, N): n = M, c = K, sc = N
    "matmul": ["for i in range(n):", "    for jj in range(sc):", "        s = 0.0",
               "        for k in range(c):", "            s += buf[a + i * c + k] * buf[b + k * sc + jj]",
               "        buf[o + i * sc + jj] = s"],
}


def _leaf(name):
    if name in _LEAF:
        return _LEAF[name]
    e = _EXPR[name]
    nin = _NIN[name]
    lines = ["for j in range(n):", "    x = buf[a + j * sa]"]
    if nin >= 2:
        lines.append("    y = buf[b + j * sb]")
    if nin >= 3:
        lines.append("    z = buf[c + j * sc]")
    lines.append(f"    buf[o + j] = {e}")
    return lines


def vm_source():
    """Source of the interpreter. Elementwise opcodes share one element loop
    (a balanced if-tree inside it picks the expression): far less code for
    numba to compile than a loop per opcode, and the machine's arrays are
    small, so dispatching per element costs about the same."""
    out = ["import math", "import numpy as np", "from numba import njit",
           "from tracegrad.compile import rt", "", "",
           "@njit(cache=True, error_model='numpy', nogil=True)",
           "def vm(code, aux, buf, start, stop):",
           "    for pc in range(start, stop):",
           "        op = code[pc, 0]", "        o = code[pc, 1]", "        n = code[pc, 2]",
           "        a = code[pc, 3]", "        sa = code[pc, 4]", "        b = code[pc, 5]",
           "        sb = code[pc, 6]", "        c = code[pc, 7]", "        sc = code[pc, 8]",
           "        p = code[pc, 9]"]
    nelem = len(UNARY) + len(BINARY) + len(TERNARY)

    def tree(lo, hi, ind, leaf):
        if hi - lo == 1:
            out.extend(ind + ln for ln in leaf(OPS[lo]))
            return
        mid = (lo + hi) // 2
        out.append(f"{ind}if op < {mid}:")
        tree(lo, mid, ind + "    ", leaf)
        out.append(f"{ind}else:")
        tree(mid, hi, ind + "    ", leaf)

    out += [f"        if op < {nelem}:",
            "            for j in range(n):",
            "                x = buf[a + j * sa]",
            "                y = buf[b + j * sb]",
            "                z = buf[c + j * sc]"]
    tree(0, nelem, "                ", lambda name: [f"r = {_EXPR[name]}"])
    out.append("                buf[o + j] = r")
    out.append("        else:")
    tree(nelem, len(OPS), "            ", _leaf)
    return "\n".join(out) + "\n"


_VM = []


def machine():
    """The compiled interpreter (loaded from the disk cache when present)."""
    if not _VM:
        _VM.append(cache.load(vm_source(), "vm"))
    return _VM[0]


# --- which nodes run here -------------------------------------------------------------
MOVE = {"getitem", "reshape", "transpose", "broadcast_to", "concatenate", "stack", "copy", "real",
        "take_along"}
REDS = {"sum": "red_sum", "max": "red_max", "min": "red_min", "prod": "red_prod"}
_SCALAR_TYPES = (bool, int, float, np.bool_, np.integer, np.floating)


_size = __import__("math").prod
_chain = __import__("itertools").chain.from_iterable


def _exact_ints(c):
    """A 64-bit integer constant whose values the float64 buffer holds exactly."""
    if c.dtype.kind not in "iu":
        return False
    lim = 2 ** 53
    return bool(np.all(c <= lim)) and (c.dtype.kind == "u" or bool(np.all(c >= -lim)))


def small_values(graph):
    """Per variable: can the machine hold it (size and dtype)? Computed once
    per graph, so :func:`vm_ok` only looks values up."""
    by_shape = {}
    by_dtype = {}
    out = []
    add = out.append
    for shape, dt in graph.avals:
        ok = by_shape.get(shape)
        if ok is None:
            ok = by_shape[shape] = 0 < _size(shape) <= VM_MAX
        if ok and dt is not _F64:
            ok = by_dtype.get(dt)
            if ok is None:
                ok = by_dtype[dt] = _ok_dtype(dt)
        add(ok)
    return out


def vm_ok(graph, node, small=None):
    """Whether the machine runs ``node`` (small, real, supported); ``small``
    is :func:`small_values` of the graph."""
    return VMCheck(graph, small)(node)


class VMCheck:
    """:func:`vm_ok` for the nodes of one graph: ``check(node)``. Constants
    are checked once each (a long program refers to the same ones again and
    again)."""

    def __init__(self, graph, small=None):
        self.graph = graph
        self.avals = graph.avals
        self.small = small_values(graph) if small is None else small
        self.const_ok = {}

    def _const(self, r):
        c = self.graph.const(r)
        if isinstance(c, np.ndarray):
            ok = not (c.size > VM_MAX or not (_ok_dtype(c.dtype) or _exact_ints(c)))
        else:
            ok = isinstance(c, _SCALAR_TYPES)
        self.const_ok[r] = ok
        return ok

    def __call__(self, node):
        outs = node.outs
        small = self.small
        if len(outs) == 1 and node.prim.name in _ARITH and not node.params:
            # the common case, checked first: float64 arithmetic on small values
            o = outs[0]
            if not small[o] or self.avals[o][1] is not _F64:
                return self.check(node)
            const_ok = self.const_ok
            for r in node.ins:
                if r >= 0:
                    if not small[r]:
                        return False
                else:
                    ok = const_ok.get(r)
                    if not (self._const(r) if ok is None else ok):
                        return False
            return True
        return self.check(node)

    def check(self, node):
        outs = node.outs
        if len(outs) != 1:
            return False
        small = self.small
        if not small[outs[0]]:
            return False
        const_ok = self.const_ok
        for r in node.ins:
            if r >= 0:
                if not small[r]:
                    return False
            else:
                ok = const_ok.get(r)
                if not (self._const(r) if ok is None else ok):
                    return False
        name = node.prim.name
        out_dt = self.avals[outs[0]][1]
        kind = _KIND.get(name)
        if kind is not None:
            if node.params and name != "astype":
                return False
            if name in BOOL_ONLY:
                from .fuse import _all_bool
                if not _all_bool(self.graph, node):
                    return False
            if kind == "arith" or kind == "select":
                return out_dt is _F64 or out_dt == _F64
            if kind in ("cmp", "logic", "pred"):
                return out_dt.kind == "b"
            if kind == "ident":
                return True
            if kind == "cast":
                return out_dt == _F64 or out_dt.kind == "b"
            return False
        if name in MOVE:
            if name == "take_along":
                return node.ins[1] < 0  # a constant index array
            return True
        avals = self.avals
        if name in REDS:
            p = node.params
            return (set(p) == {"axis", "keepdims"} and out_dt == _F64 and node.ins[0] >= 0
                    and avals[node.ins[0]][1] == _F64)
        if name == "scatter":
            g = node.ins[0]
            return g >= 0 and len(avals[g][0]) == node.params["kndim"]
        if name in ("setitem", "add_at"):
            return out_dt == _F64 or name == "setitem"
        if name == "matmul":
            if out_dt != _F64 or len(node.ins) != 2:
                return False
            sh = [_shape_of(self.graph, r) for r in node.ins]
            if any(len(s) not in (1, 2) for s in sh):
                return False
            m = sh[0][0] if len(sh[0]) == 2 else 1
            k = sh[0][-1]
            n = sh[1][1] if len(sh[1]) == 2 else 1
            return m * k * n <= MATMUL_MAX
        return False


#: elementwise primitives the machine has opcodes for: name -> scalar kind
_KIND = {n: k for n, (k, _) in SCALAR.items()
         if n != "broadcast_to" and (n in OPCODE or k in ("ident", "cast"))}


#: float64 arithmetic the machine runs (checked first by VMCheck)
_ARITH = frozenset(n for n, k in _KIND.items() if k in ("arith", "select") and n not in BOOL_ONLY)
#: elementwise primitives lowered to one instruction: name -> opcode
_ELEM_OP = {n: OPCODE[n] for n, k in _KIND.items()
            if k in ("arith", "cmp", "logic", "pred", "select")}


def _shape_of(graph, r):
    if r >= 0:
        return graph.avals[r][0]
    return np.shape(graph.const(r))


# --- programs ------------------------------------------------------------------------------
class Program:
    """The machine code of one plan: instructions, index maps, the buffer
    layout (with constants preloaded) and a pool of buffers."""

    def __init__(self, graph, nconst):
        self.graph = graph
        self.nconst = nconst
        self.addr = {}       # ref -> offset (a value's elements are contiguous)
        self.top = 0
        self.init = []       # (offset, float64 values) preloaded constants
        self.code = []
        self.aux = []
        self.naux = 0
        self.lits = {}
        self.pool = []
        self.template = None

    # layout
    def alloc(self, n):
        off = self.top
        self.top += max(int(n), 1)
        return off

    def const_ref(self, r):
        off = self.addr.get(r)
        if off is None:
            c = self.graph.const(r)
            a = np.asarray(c, dtype=np.float64).reshape(-1)
            off = self.alloc(a.size)
            self.init.append((off, a))
            self.addr[r] = off
        return off

    def literal(self, value):
        key = float(value)
        key = (key, bool(np.signbit(key))) if key == key else ("nan",)
        off = self.lits.get(key)
        if off is None:
            off = self.alloc(1)
            self.init.append((off, np.array([float(value)])))
            self.lits[key] = off
        return off

    def put_aux(self, idx):
        p = self.naux
        idx = np.ascontiguousarray(idx, dtype=np.int64).reshape(-1)
        self.aux.append(idx)
        self.naux += idx.size
        return p

    def emit(self, op, o=0, n=0, a=0, sa=0, b=0, sb=0, c=0, sc=0, p=0):
        self.code.append((OPCODE[op], o, n, a, sa, b, sb, c, sc, p))

    def finish(self):
        self.code_arr = np.fromiter(_chain(self.code), dtype=np.int64,
                                    count=10 * len(self.code)).reshape(-1, 10)
        self.aux_arr = (np.concatenate(self.aux) if self.aux else np.zeros(1, np.int64))
        t = np.zeros(max(self.top, 1))
        for off, vals in self.init:
            t[off:off + vals.size] = vals
        self.template = t
        self.fn = machine()
        # only the arrays are needed from now on
        self.ninstr = len(self.code)
        self.graph = self.addr = self.init = self.code = self.aux = self.lits = None

    def acquire(self):
        try:
            return self.pool.pop()
        except IndexError:
            return self.template.copy()

    def release(self, buf):
        if len(self.pool) < 4:
            self.pool.append(buf)


def _hashable(x):
    """A hashable stand-in for primitive parameters (arrays by value), or None."""
    if isinstance(x, np.ndarray):
        return ("a", x.dtype.str, x.shape, x.tobytes())
    if isinstance(x, (tuple, list)):
        items = tuple(_hashable(e) for e in x)
        return None if any(e is None for e in items) else (type(x).__name__,) + items
    if isinstance(x, dict):
        items = tuple((k, _hashable(v)) for k, v in sorted(x.items()))
        return None if any(v is None for _, v in items) else ("d",) + items
    if isinstance(x, slice):
        return ("s", x.start, x.stop, x.step)
    try:
        hash(x)
    except TypeError:
        return None
    return ("v", type(x).__name__, x)


#: (prim name, input shape, params) -> (relative index map, contiguous?), and
#: (prim name, input shapes, params) -> (input of each element, index in it)
_MAPS = {}


def _contiguous(idx):
    """Whether the flat index array ``idx`` is one increasing run."""
    return idx.size == 1 or bool((idx[1:] - idx[:-1] == 1).all())


def _rel_map(node, shape):
    """(index map, contiguous?, first index) of a one-input data movement
    applied to an array of ``shape``, relative to its input."""
    name = node.prim.name
    params = node.params
    try:
        key = tuple(params.items())
        hash(key)
    except TypeError:
        key = _hashable(params)
    ck = (name, shape, key) if key is not None else None
    hit = _MAPS.get(ck) if ck is not None else None
    if hit is None:
        rel = np.asarray(node.prim.impl(np.arange(_size(shape)).reshape(shape),
                                        **params)).reshape(-1)
        hit = (rel, _contiguous(rel), int(rel[0]))
        if ck is not None and len(_MAPS) < 100000:
            _MAPS[ck] = hit
    return hit


class Lowerer:
    """Emit instructions for machine nodes, in plan order."""

    def __init__(self, prog):
        self.prog = prog
        self.graph = prog.graph
        self.avals = prog.graph.avals
        self.addr = prog.addr
        self.lit_of = {}     # constant ref -> offset of its literal

    def shape(self, r):
        if r >= 0:
            return self.avals[r][0]
        return np.shape(self.graph.const(r))

    def operand(self, r, loads):
        """Offset of ``r``; a value produced outside the machine is loaded."""
        prog = self.prog
        off = prog.addr.get(r)
        if off is not None:
            return off
        if r < 0:
            return prog.const_ref(r)
        n = _size(self.avals[r][0])
        off = prog.alloc(n)
        prog.addr[r] = off
        loads.append((r, off, n))
        return off

    def elem_operand(self, r, out_shape, loads):
        """(offset, stride) of an elementwise operand broadcast to ``out_shape``."""
        if r >= 0:
            shape = self.avals[r][0]
            off = self.addr.get(r)
            if off is None:
                off = self.operand(r, loads)
            if shape == out_shape:
                return off, 1
            n = _size(shape)
            if n == 1:
                return off, 0
        else:
            off = self.lit_of.get(r)
            if off is not None:
                return off, 0
            c = self.graph.const(r)
            if not isinstance(c, np.ndarray) or c.size == 1:
                off = self.lit_of[r] = self.prog.literal(np.asarray(c).reshape(-1)[0])
                return off, 0
            shape = c.shape
            off = self.operand(r, loads)
            if shape == out_shape:
                return off, 1
            n = c.size
        prog = self.prog
        idx = np.broadcast_to(np.arange(off, off + n).reshape(shape), out_shape)
        t = prog.alloc(idx.size)
        prog.emit("gather", o=t, n=idx.size, p=prog.put_aux(idx))
        return t, 1

    def nodes(self, nodes, indices, loads):
        """Lower ``nodes[i]`` for ``i`` in ``indices``: :meth:`node` with the
        common case (an elementwise operation on values already in the
        buffer, or on literals) inlined, since a long program is mostly that."""
        prog = self.prog
        emit = prog.code.append
        addr = self.addr
        avals = self.avals
        lit_of = self.lit_of
        eo = self.elem_operand
        elem_op = _ELEM_OP
        slow = self.node
        for i in indices:
            node = nodes[i]
            op = elem_op.get(node.prim.name)
            if op is None:
                ins = node.ins
                if node.prim.name in MOVE and len(ins) == 1 and ins[0] >= 0:
                    # a movement whose result is a contiguous run: an alias
                    r = ins[0]
                    _, contig, first = _rel_map(node, avals[r][0])
                    if contig:
                        off = addr.get(r)
                        if off is None:
                            off = self.operand(r, loads)
                        addr[node.outs[0]] = first + off
                        continue
                slow(node, loads)
                continue
            out = node.outs[0]
            oshape = avals[out][0]
            ins = node.ins
            r = ins[0]
            a = addr.get(r) if r >= 0 else lit_of.get(r)
            if a is None:
                a, sa = eo(r, oshape, loads)
            elif r < 0:
                sa = 0
            elif avals[r][0] == oshape:
                sa = 1
            else:
                a, sa = eo(r, oshape, loads)
            if len(ins) == 1:
                b = sb = c = sc = 0
            else:
                r = ins[1]
                b = addr.get(r) if r >= 0 else lit_of.get(r)
                if b is None:
                    b, sb = eo(r, oshape, loads)
                elif r < 0:
                    sb = 0
                elif avals[r][0] == oshape:
                    sb = 1
                else:
                    b, sb = eo(r, oshape, loads)
                if len(ins) == 2:
                    c = sc = 0
                else:
                    c, sc = eo(ins[2], oshape, loads)
            n = _size(oshape)
            o = prog.top
            prog.top = o + (n if n > 0 else 1)
            emit((op, o, n, a, sa, b, sb, c, sc, 0))
            addr[out] = o

    def elementwise(self, node, op, loads):
        """An elementwise operation (opcode ``op``)."""
        prog = self.prog
        out = node.outs[0]
        oshape = self.avals[out][0]
        n = _size(oshape)
        ins = node.ins
        eo = self.elem_operand
        a, sa = eo(ins[0], oshape, loads)
        if len(ins) == 1:
            b = sb = c = sc = 0
        else:
            b, sb = eo(ins[1], oshape, loads)
            if len(ins) == 2:
                c = sc = 0
            else:
                c, sc = eo(ins[2], oshape, loads)
        o = prog.top
        prog.top = o + (n if n > 0 else 1)
        prog.code.append((op, o, n, a, sa, b, sb, c, sc, 0))
        self.addr[out] = o

    def _move_map(self, node, loads):
        """Absolute buffer offsets of a data movement's result (and whether
        they are one contiguous run)."""
        name = node.prim.name
        if len(node.ins) == 1:
            r = node.ins[0]
            rel, contig, _ = _rel_map(node, self.shape(r))
            return rel, self.operand(r, loads), contig
        if name != "take_along":
            # concatenate, stack: the map over the inputs laid end to end is
            # cached as (input, index in it) per element
            shapes = tuple(self.shape(r) for r in node.ins)
            params = node.params
            try:
                key = tuple(params.items())
                hash(key)
            except TypeError:
                key = _hashable(params)
            ck = (name, shapes, key) if key is not None else None
            hit = _MAPS.get(ck) if ck is not None else None
            if hit is None:
                sizes = [_size(sh) for sh in shapes]
                starts = np.cumsum([0] + sizes)
                virt = np.asarray(node.prim.impl(
                    *[np.arange(st, st + n).reshape(sh)
                      for st, n, sh in zip(starts.tolist(), sizes, shapes)],
                    **params)).reshape(-1)
                which = np.searchsorted(starts, virt, side="right") - 1
                hit = (which, virt - starts[which])
                if ck is not None and len(_MAPS) < 100000:
                    _MAPS[ck] = hit
            which, local = hit
            offs = np.array([self.operand(r, loads) for r in node.ins], dtype=np.int64)
            res = offs[which] + local
            return res, 0, _contiguous(res)
        args = []
        for k, r in enumerate(node.ins):
            if k == 1:
                args.append(self.graph.const(r))
                continue
            off = self.operand(r, loads)
            shape = self.shape(r)
            args.append(np.arange(off, off + _size(shape)).reshape(shape))
        res = np.asarray(node.prim.impl(*args, **node.params)).reshape(-1)
        return res, 0, _contiguous(res)

    def node(self, node, loads):
        name = node.prim.name
        op = _ELEM_OP.get(name)
        if op is not None:
            self.elementwise(node, op, loads)
            return
        prog = self.prog
        out = node.outs[0]
        oshape, odt = self.avals[out]
        n = _size(oshape)
        kind = _KIND.get(name)
        if name in MOVE:
            rel, off, contig = self._move_map(node, loads)
            if contig:
                prog.addr[out] = int(rel[0]) + off  # an alias: no instruction
                return
            o = prog.alloc(n)
            prog.emit("gather", o=o, n=n, p=prog.put_aux(rel + off if off else rel))
            prog.addr[out] = o
            return
        if name in REDS:
            r = node.ins[0]
            a = self.operand(r, loads)
            ishape = self.shape(r)
            axes = node.params["axis"]
            nd = len(ishape)
            kshape = tuple(1 if (d - nd) in axes else s for d, s in enumerate(ishape))
            m = _size(kshape)
            idx = np.broadcast_to(np.arange(m).reshape(kshape), ishape)
            o = prog.alloc(m)
            prog.emit(REDS[name], o=o, n=_size(ishape), a=a, b=m, p=prog.put_aux(idx))
            prog.addr[out] = o
            return
        if name == "scatter":
            r = node.ins[0]
            a = self.operand(r, loads)
            shape = node.params["shape"]
            key = (shape, node.params["key"])
            try:
                hash(key)
            except TypeError:
                key = _hashable(key)
            pos = _MAPS.get(("scatter", key)) if key is not None else None
            if pos is None:
                pos = np.ascontiguousarray(
                    np.arange(_size(shape)).reshape(shape)[node.params["key"]].reshape(-1))
                if key is not None:
                    _MAPS[("scatter", key)] = pos
            o = prog.alloc(n)
            prog.emit("scatter", o=o, n=pos.size, a=a, sa=1, b=n, p=prog.put_aux(pos))
            prog.addr[out] = o
            return
        if name in ("setitem", "add_at"):
            x, v = node.ins
            xo, xs = self.elem_operand(x, oshape, loads)
            o = prog.alloc(n)
            prog.emit("copy", o=o, n=n, a=xo, sa=xs)
            pos = np.arange(n).reshape(oshape)[node.params["key"]]
            vo, vs = self.elem_operand(v, pos.shape, loads)
            op = "scatter_set" if name == "setitem" else "scatter_acc"
            prog.emit(op, o=o, n=pos.size, a=vo, sa=vs, p=prog.put_aux(pos))
            prog.addr[out] = o
            return
        if name == "matmul":
            ra, rb = node.ins
            sa_, sb_ = self.shape(ra), self.shape(rb)
            a = self.operand(ra, loads)
            b = self.operand(rb, loads)
            m = sa_[0] if len(sa_) == 2 else 1
            k = sa_[-1]
            nn = sb_[1] if len(sb_) == 2 else 1
            o = prog.alloc(n)
            prog.emit("matmul", o=o, n=m, a=a, b=b, c=k, sc=nn)
            prog.addr[out] = o
            return
        # copies and casts
        r = node.ins[0]
        a, s = self.elem_operand(r, oshape, loads)
        if kind == "cast" and odt.kind == "b":
            o = prog.alloc(n)
            prog.emit("nonzero", o=o, n=n, a=a, sa=s)
            prog.addr[out] = o
            return
        if s == 1:
            prog.addr[out] = a  # same values: alias
            return
        o = prog.alloc(n)
        prog.emit("copy", o=o, n=n, a=a, sa=s)
        prog.addr[out] = o


class VMStep(Step):
    """Run instructions ``[start, stop)`` of a program: load the values
    produced outside the machine, store those needed outside it."""

    __slots__ = ("prog", "start", "stop", "loads", "stores", "bslot", "first", "last", "label")

    def __init__(self, prog, start, stop, loads, stores, bslot, first, last):
        self.prog = prog
        self.start = start
        self.stop = stop
        self.loads = loads      # (slot, offset, size)
        self.stores = stores    # (slot, offset, shape, dtype)
        self.bslot = bslot
        self.first = first
        self.last = last
        self.free = ()
        self.reads = tuple(s for s, _, _ in loads)
        self.label = f"vm[{stop - start} instructions]"

    @property
    def name(self):
        return self.label

    def describe(self):
        return self.label

    def slots(self):
        return tuple(s for s, _, _ in self.loads) + tuple(s for s, *_ in self.stores) + (
            self.bslot,)

    def remap(self, m):
        self.loads = [(m[s], off, n) for s, off, n in self.loads]
        self.stores = [(m[s], off, shape, dt) for s, off, shape, dt in self.stores]
        self.bslot = m[self.bslot]
        self.reads = tuple(s for s, _, _ in self.loads)
        self.free = tuple(m[s] for s in self.free)

    def run(self, vals):
        prog = self.prog
        buf = vals[self.bslot]
        if buf is None:
            buf = prog.acquire()
            vals[self.bslot] = buf
        for s, off, size in self.loads:
            buf[off:off + size] = vals[s].reshape(-1)
        if self.stop > self.start:
            prog.fn(prog.code_arr, prog.aux_arr, buf, self.start, self.stop)
        for s, off, shape, dt in self.stores:
            v = buf[off:off + _size(shape)].reshape(shape)
            vals[s] = v.astype(dt) if dt != _F64 else v.copy()
        if self.last:
            vals[self.bslot] = None
            prog.release(buf)
