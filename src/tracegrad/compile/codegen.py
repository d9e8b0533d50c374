"""numba source for fused groups: one loop computing every member of a group,
storing the values other steps need and accumulating reductions.

The scalar form of each elementwise primitive lives in the table
:data:`SCALAR` (keyed by primitive name, so rule files stay untouched). An
entry is ``(kind, template)``; ``template`` formats the operand expressions
``{0}, {1}, ...``. Kinds say how operands are typed:

``arith``  the result is floating; bool/int operands are cast to the result
           dtype first (NumPy's promotion), Python-number literals are
           written in the result dtype (NEP 50 weak scalars), a float32 result
           is rounded to float32;
``cmp``    comparison: bool result, weak literals in the other operand's dtype;
``logic``  operands by truth value, bool result;
``pred``   predicate of a float (isnan, ...), bool result;
``select`` ``where(c, a, b)``; ``cast`` ``astype``; ``ident`` a copy.

Two loop shapes are generated:

* *flat*: every input has the group's shape (C-contiguous) or one element;
  reductions are over all axes. The loop runs over blocks of ``BLOCK``
  elements: the body (vectorisable when it has no libm calls) stores each
  reduced value into a small buffer, which a second loop sums, so the sum
  carries no loop dependency in the body and its rounding error grows with
  ``BLOCK + n / BLOCK`` rather than ``n``. With ``parallel`` the blocks are
  spread over threads (``prange``), each writing its partial result.
* *nd*: nested loops over the group's shape, inputs indexed by their
  broadcast pattern, reductions over any axes accumulated into their output
  (in a register when they are trailing axes).
"""
import numpy as np

BLOCK = 512

# --- the scalar table -------------------------------------------------------------
# Templates are expressions over operand *names* (repeating an operand costs
# nothing): helpers called as functions cost numba compile time per kernel.
# tanh: Cody & Waite, a rational form near 0 and exp beyond (<= 2 ulp, about
# twice as fast as libm's); log1p: log(1 + u) corrected for the rounding of
# 1 + u (Goldberg; <= 1 ulp, about twice as fast as libm's).
_TANH = ("({0} if {0} == 0 else "
         "({0} + {0} * (({0} * {0}) * ((-0.96437492777225469787 * ({0} * {0}) "
         "- 0.99225929672236083313e2) * ({0} * {0}) - 0.16134119023996228053e4) / "
         "(((({0} * {0}) + 0.11274474380534949335e3) * ({0} * {0}) "
         "+ 0.22337720718962312926e4) * ({0} * {0}) + 0.48402357071988688686e4))) "
         "if abs({0}) < 0.5493061443340549 else (math.copysign(1.0, {0}) if abs({0}) > 22.0 "
         "else math.copysign(1.0 - 2.0 / (math.exp(2.0 * abs({0})) + 1.0), {0})))")
_LOG1P = ("({0} if {0} == 0 else (math.log(1.0 + {0}) if ((1.0 + {0}) - 1.0) == {0} else "
          "math.log(1.0 + {0}) - (((1.0 + {0}) - 1.0) - {0}) / (1.0 + {0})))")
_F = {}


def _t(kind, names, template):
    for n in names.split():
        _F[n] = (kind, template)


_t("arith", "add", "({0} + {1})")
_t("arith", "subtract", "({0} - {1})")
_t("arith", "multiply", "({0} * {1})")
_t("arith", "divide true_divide", "({0} / {1})")
_t("arith", "negative", "(-{0})")
_t("arith", "square", "({0} * {0})")
_t("arith", "reciprocal", "(1.0 / {0})")
_t("arith", "absolute fabs", "abs({0})")
_t("arith", "deg2rad", "({0} * 0.017453292519943295)")
_t("arith", "rad2deg", "({0} * 57.29577951308232)")
for _n in ("sqrt cbrt exp expm1 log log2 log10 sin cos tan arcsin arccos arctan sinh "
           "cosh arcsinh arccosh arctanh floor ceil trunc rint").split():
    _t("arith", _n, "np.%s({0})" % _n)
_t("arith", "tanh", _TANH)
_t("arith", "log1p", _LOG1P)
_t("arith", "exp2", "np.exp2({0})")
_t("arith", "arctan2", "np.arctan2({0}, {1})")
_t("arith", "hypot", "np.hypot({0}, {1})")
_t("arith", "copysign", "np.copysign({0}, {1})")
_t("arith", "maximum", "({0} if ({0} != {0} or {0} >= {1}) else {1})")
_t("arith", "minimum", "({0} if ({0} != {0} or {0} <= {1}) else {1})")
_t("arith", "fmax", "({0} if ({1} != {1} or {0} >= {1}) else {1})")
_t("arith", "fmin", "({0} if ({1} != {1} or {0} <= {1}) else {1})")
_t("arith", "clip", "({M} if ({M} != {M} or {M} <= {{2}}) else {{2}})".format(
    M="({0} if ({0} != {0} or {0} >= {1}) else {1})"))
_t("arith", "sign", "(1.0 if {0} > 0 else (-1.0 if {0} < 0 else (0.0 if {0} == 0 else {0})))")
_t("arith", "logaddexp", "rt.logaddexp({0}, {1})")
_t("arith", "power", None)  # special-cased: small integer exponents are multiplications
_t("cmp", "greater", "({0} > {1})")
_t("cmp", "greater_equal", "({0} >= {1})")
_t("cmp", "less", "({0} < {1})")
_t("cmp", "less_equal", "({0} <= {1})")
_t("cmp", "equal", "({0} == {1})")
_t("cmp", "not_equal", "({0} != {1})")
_t("logic", "logical_and", "({0} and {1})")
_t("logic", "logical_or", "({0} or {1})")
_t("logic", "logical_xor", "({0} != {1})")
_t("logic", "logical_not", "(not {0})")
# on booleans the bitwise ufuncs are logical (integer operands stay in NumPy)
_t("logic", "bitwise_and", "({0} and {1})")
_t("logic", "bitwise_or", "({0} or {1})")
_t("logic", "bitwise_xor", "({0} != {1})")
_t("logic", "invert", "(not {0})")
#: primitives fused only when every operand is boolean
BOOL_ONLY = frozenset({"bitwise_and", "bitwise_or", "bitwise_xor", "invert"})
_t("pred", "isnan", "np.isnan({0})")
_t("pred", "isinf", "np.isinf({0})")
_t("pred", "isfinite", "np.isfinite({0})")
_t("pred", "signbit", "(math.copysign(1.0, {0}) < 0)")
_t("select", "where", "({1} if {0} else {2})")
_t("cast", "astype", "{0}")
_t("ident", "copy positive broadcast_to", "{0}")
_t("ident", "conjugate real", "{0}")  # real dtypes only (complex is never fused)

SCALAR = _F
#: float64 forms without libm calls (see :mod:`.rt`): a loop calling libm
#: cannot be vectorised, and these are faster even as scalar code
_VECTOR_F64 = {"exp": "rt.exp({0})", "tanh": "rt.tanh({0})", "log": "rt.log({0})",
               "log1p": "rt.log1p({0})"}
#: float64 sin/cos valid for |x| <= 1.6e6, in kernels that flag other arguments
#: (see fuse._fast_trig): the kernel is then rerun with libm's
_TRIG_F64 = {"sin": "rt.sin({0})", "cos": "rt.cos({0})"}
_t("arith", "trig_range_flag", "rt.trig_range_flag({0})")
#: reductions that can close a group: name -> (identity, combine template)
REDUCE = {
    "sum": (0.0, "({a} + {v})"),
    "prod": (1.0, "({a} * {v})"),
    "max": (-np.inf, "({v} if ({v} > {a} or {v} != {v}) else {a})"),
    "min": (np.inf, "({v} if ({v} < {a} or {v} != {v}) else {a})"),
}

#: rough cost of one scalar evaluation, in "simple arithmetic" units; used
#: by the cost model and to decide parallelism.
COST = {"sin": 12, "cos": 12, "tan": 20, "exp": 6, "expm1": 12, "log": 8, "log1p": 12,
        "log2": 10, "log10": 10, "tanh": 16, "sinh": 16, "cosh": 16, "arcsin": 14,
        "arccos": 14, "arctan": 12, "arctan2": 16, "arcsinh": 18, "arccosh": 18,
        "arctanh": 16, "sqrt": 4, "cbrt": 12, "power": 20, "exp2": 6, "hypot": 6,
        "divide": 2, "logaddexp": 20}

_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))


def ok_dtype(dt):
    """Dtypes a kernel handles: float32/64, bool, and integers as operands."""
    return dt in _FLOATS or dt.kind in "biu" and dt.itemsize <= 8


# --- literals and casts -----------------------------------------------------------------
def literal(value, dtype):
    """Source text of scalar ``value`` as a ``dtype`` constant."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return "True" if bool(value) else "False"
    if dtype.kind in "iu":
        return f"np.{dtype.name}({int(value)})"
    v = float(value)
    if v != v:
        s = "np.nan"
    elif v in (np.inf, -np.inf):
        s = "np.inf" if v > 0 else "(-np.inf)"
    else:
        s = repr(v)
        if v == 0 and np.signbit(v):
            s = "(-0.0)"
    if dtype == np.float32:
        return f"np.float32({s})"
    return s


def cast(expr, src, dst):
    src, dst = np.dtype(src), np.dtype(dst)
    if src == dst:
        return expr
    if dst.kind == "b":
        return f"({expr} != 0)"
    if dst == np.float32:
        return f"np.float32({expr})"
    if dst == np.float64:
        return f"np.float64({expr})"
    return f"np.{dst.name}({expr})"


# --- kernel IR -------------------------------------------------------------------------
class Operand:
    """An operand inside a kernel: input ``k``, op result ``j`` or a literal."""

    __slots__ = ("kind", "index", "dtype", "value", "weak")

    def __init__(self, kind, index=None, dtype=None, value=None, weak=False):
        self.kind = kind      # "in", "op", "lit"
        self.index = index
        self.dtype = np.dtype(dtype)
        self.value = value
        self.weak = weak      # a Python number (NEP 50: takes the other operand's dtype)


class KernelIR:
    """A fused group as a loop body.

    ``inputs``: per input ``(kind, dtype, shape)`` with kind ``"full"``,
    ``"scalar"`` or ``"bcast"``; ``ops``: ``(name, operands, out dtype,
    params)``; ``stores``: op indices written to output arrays; ``reds``:
    ``(op index, reduction name, axes, dtype)``.
    """

    def __init__(self, shape):
        self.shape = tuple(shape)
        self.inputs = []
        self.ops = []
        self.stores = []
        self.reds = []
        self.fast_trig = False

    @property
    def flat(self):
        nd = len(self.shape)
        return (all(k in ("full", "scalar") for k, _, _ in self.inputs)
                and all(len(ax) == nd for _, _, ax, _ in self.reds))

    def cost(self):
        """Scalar work per element (arithmetic units)."""
        return sum(COST.get(op[0], 1) for op in self.ops)


def _opexpr(ir, j, names):
    name, args, dt, params = ir.ops[j]
    kind, tpl = SCALAR[name]
    dt = np.dtype(dt)

    def operand(a, want=None):
        if a.kind == "lit":
            return literal(a.value, want if (want is not None and (a.weak or want.kind == "b"))
                           else a.dtype)
        e = names[(a.kind, a.index)]
        if want is not None and a.dtype != want and (a.dtype.kind != "f" or want.kind == "b"):
            return cast(e, a.dtype, want)
        return e

    if kind in ("arith",):
        if name == "power":
            return _power(args, dt, operand)
        ops = [operand(a, dt) for a in args]
        if dt == np.float64 and (name in _VECTOR_F64 or (ir.fast_trig and name in _TRIG_F64)):
            tpl = _VECTOR_F64.get(name) or _TRIG_F64[name]
        e = tpl.format(*ops)
        return f"np.float32({e})" if dt == np.float32 else e
    if kind == "cmp":
        strong = [a.dtype for a in args if not a.weak]
        common = np.result_type(*strong) if strong else np.dtype(np.float64)
        ops = [operand(a, common) if a.kind == "lit" else operand(a) for a in args]
        return tpl.format(*ops)
    if kind == "logic":
        return tpl.format(*[operand(a, np.dtype(bool)) for a in args])
    if kind == "pred":
        return tpl.format(*[operand(a) for a in args])
    if kind == "select":
        c = operand(args[0], np.dtype(bool))
        a, b = operand(args[1], dt), operand(args[2], dt)
        e = tpl.format(c, a, b)
        return f"np.float32({e})" if dt == np.float32 else e
    if kind == "cast":
        a = args[0]
        if a.kind == "lit":
            return literal(a.value, dt)
        return cast(names[(a.kind, a.index)], a.dtype, dt)
    if kind == "ident":
        return operand(args[0], dt)
    raise AssertionError(kind)


def _power(args, dt, operand):
    x, y = args
    xe = operand(x, dt)
    if y.kind == "lit":
        v = float(y.value)
        if v == int(v) and abs(v) <= 4:
            k = int(v)
            if k == 0:
                return literal(1.0, dt)
            m = "(" + " * ".join([xe] * abs(k)) + ")"
            e = m if k > 0 else f"(1.0 / {m})"
            return f"np.float32({e})" if dt == np.float32 else e
    e = f"({xe} ** {operand(y, dt)})"
    return f"np.float32({e})" if dt == np.float32 else e


def kernel_source(ir, parallel=False):
    """``(source, argument order)`` of the numba kernel for ``ir``."""
    if ir.flat:
        return _flat_source(ir, parallel)
    return _nd_source(ir)


_HEADER = ("import math\nimport numpy as np\nfrom numba import njit, prange\n"
           "from tracegrad.compile import rt\n\n")


def _decorator(parallel):
    p = ", parallel=True" if parallel else ""
    return f"@njit(cache=True, error_model='numpy', nogil=True{p})"


def _body(ir, names, ind):
    """Lines computing every op, storing outputs; returns (lines, red value exprs)."""
    lines = []
    for j in range(len(ir.ops)):
        lines.append(f"{ind}t{j} = {_opexpr(ir, j, names)}")
        names[("op", j)] = f"t{j}"
    return lines


def _flat_source(ir, parallel):
    nin = len(ir.inputs)
    args = ["n"]
    names = {}
    loads = []
    for k, (kind, dt, _) in enumerate(ir.inputs):
        if kind == "scalar":
            args.append(f"x{k}")
            names[("in", k)] = f"x{k}"
        else:
            args.append(f"a{k}")
            names[("in", k)] = f"x{k}"
            loads.append(k)
    outs = [f"o{m}" for m in range(len(ir.stores))]
    reds = [f"r{m}" for m in range(len(ir.reds))]
    args += outs + reds
    src = [_HEADER, _decorator(parallel),
           f"def kernel({', '.join(args)}):"]
    if not ir.reds:
        loop = "prange" if parallel else "range"
        src.append(f"    for i in {loop}(n):")
        ind = "        "
        src += [f"{ind}x{k} = a{k}[i]" for k in loads]
        src += _body(ir, names, ind)
        src += [f"{ind}o{m}[i] = t{j}" for m, j in enumerate(ir.stores)]
        return "\n".join(src) + "\n", nin
    # blocked: body stores reduced values in per-block buffers
    ind = "            "
    red_dt = [_acc_dtype(dt) for _, _, _, dt in ir.reds]
    if parallel:
        src.append(f"    nb = (n + {BLOCK - 1}) // {BLOCK}")
        for m, (j, rn, _, dt) in enumerate(ir.reds):
            src.append(f"    p{m} = np.empty(nb, np.{red_dt[m]})")
        src.append("    for b in prange(nb):")
        src.append(f"        b0 = b * {BLOCK}")
        for m in range(len(ir.reds)):
            src.append(f"        u{m} = np.empty({BLOCK}, np.{red_dt[m]})")
    else:
        for m in range(len(ir.reds)):
            src.append(f"    u{m} = np.empty({BLOCK}, np.{red_dt[m]})")
            src.append(f"    acc{m} = {literal(REDUCE[ir.reds[m][1]][0], red_dt[m])}")
        src.append(f"    for b0 in range(0, n, {BLOCK}):")
    src.append(f"        m = min({BLOCK}, n - b0)")
    src.append("        for j in range(m):")
    src.append(f"{ind}i = b0 + j")
    src += [f"{ind}x{k} = a{k}[i]" for k in loads]
    src += _body(ir, names, ind)
    src += [f"{ind}o{m}[i] = t{j}" for m, j in enumerate(ir.stores)]
    src += [f"{ind}u{m}[j] = t{j}" for m, (j, _, _, _) in enumerate(ir.reds)]
    for m, (j, rn, _, dt) in enumerate(ir.reds):
        ident, comb = REDUCE[rn]
        src.append(f"        s{m} = {literal(ident, red_dt[m])}")
        src.append("        for j in range(m):")
        src.append(f"            s{m} = {comb.format(a=f's{m}', v=f'u{m}[j]')}")
        if parallel:
            src.append(f"        p{m}[b] = s{m}")
        else:
            src.append(f"        acc{m} = {comb.format(a=f'acc{m}', v=f's{m}')}")
    for m, (j, rn, _, dt) in enumerate(ir.reds):
        if parallel:
            ident, comb = REDUCE[rn]
            src.append(f"    acc{m} = {literal(ident, red_dt[m])}")
            src.append("    for b in range(nb):")
            src.append(f"        acc{m} = {comb.format(a=f'acc{m}', v=f'p{m}[b]')}")
        src.append(f"    r{m}[0] = acc{m}")
    return "\n".join(src) + "\n", nin


def _acc_dtype(dt):
    return "float64" if np.dtype(dt).kind == "f" else np.dtype(dt).name


def _nd_source(ir):
    shape = ir.shape
    nd = len(shape)
    args = [f"n{d}" for d in range(nd)]
    names = {}
    loads = []
    idx = [f"i{d}" for d in range(nd)]
    for k, (kind, dt, ishape) in enumerate(ir.inputs):
        if kind == "scalar":
            args.append(f"x{k}")
        else:
            args.append(f"a{k}")
            off = nd - len(ishape)
            sub = [("0" if ishape[d] == 1 and shape[off + d] != 1 else idx[off + d])
                   for d in range(len(ishape))]
            loads.append(f"x{k} = a{k}[{', '.join(sub)}]" if sub else f"x{k} = a{k}[()]")
        names[("in", k)] = f"x{k}"
    args += [f"o{m}" for m in range(len(ir.stores))]
    args += [f"r{m}" for m in range(len(ir.reds))]
    src = [_HEADER, _decorator(False), f"def kernel({', '.join(args)}):"]
    # reductions over trailing axes [level, nd) accumulate in a register
    reg = {}
    for m, (j, rn, axes, dt) in enumerate(ir.reds):
        axes = tuple(sorted(axes))
        if axes and axes == tuple(range(nd - len(axes), nd)):
            reg[m] = nd - len(axes)
    pre = {}
    post = {}
    for m, lvl in reg.items():
        rn = ir.reds[m][1]
        dt = _acc_dtype(ir.reds[m][3])
        pre.setdefault(lvl, []).append(f"acc{m} = {literal(REDUCE[rn][0], dt)}")
        sub = ", ".join(idx[d] if d < lvl else "0" for d in range(nd))
        post.setdefault(lvl, []).append(f"r{m}[{sub}] = acc{m}")
    ind = "    "
    for d in range(nd):
        src += [ind + s for s in pre.get(d, ())]
        src.append(f"{ind}for i{d} in range(n{d}):")
        ind += "    "
    src += [ind + s for s in pre.get(nd, ())]
    src += [ind + s for s in loads]
    src += _body(ir, names, ind)
    out_idx = ", ".join(idx) if nd else "()"
    src += [f"{ind}o{m}[{out_idx}] = t{j}" for m, j in enumerate(ir.stores)]
    for m, (j, rn, axes, dt) in enumerate(ir.reds):
        comb = REDUCE[rn][1]
        if m in reg:
            src.append(f"{ind}acc{m} = {comb.format(a=f'acc{m}', v=f't{j}')}")
        else:
            sub = ", ".join("0" if d in axes else idx[d] for d in range(nd)) if nd else "()"
            src.append(f"{ind}r{m}[{sub}] = {comb.format(a=f'r{m}[{sub}]', v=f't{j}')}")
    for d in range(nd, 0, -1):
        ind = ind[:-4]
        src += [ind + s for s in post.get(d - 1, ())]
    return "\n".join(src) + "\n", len(ir.inputs)
