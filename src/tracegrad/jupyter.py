"""The ``%%grad`` cell magic: derivatives of a notebook cell.

Load it with ``%load_ext tracegrad`` (or ``c.InteractiveShellApp.extensions =
['tracegrad']`` in an IPython profile); ``%%grad?`` prints the usage below
and ``docs/magic.md`` is the guide. IPython is imported only by the functions
that need it, so this module (and ``import tracegrad``) works without it:
:func:`grad_cell` is the engine of the magic on a plain namespace dict.
"""
import ast
import html
import keyword
import numbers
import re
import warnings
from collections import OrderedDict

import numpy as np

from . import api
from .core.array import TracedArray

__all__ = ["grad_cell", "parse_grad_line", "GradSpec", "GradResult", "load_ipython_extension",
           "unload_ipython_extension", "HESSIAN_MAX_SIZE"]

#: ``--hessian`` refuses inputs with more elements than this (in total).
HESSIAN_MAX_SIZE = 2000

USAGE = "%%grad [TARGET] wrt NAME[, NAME ...] [--check [EPS]] [--hessian] " \
        "[--hvp NAME=EXPR] [--jvp NAME=EXPR] [--compile] [--as DICT] [-q]"

_OPTIONS = ("--check", "--hessian", "--hvp", "--jvp", "--compile", "--as", "-q", "--quiet")
_MISSING = object()
_IDENT = re.compile(r"^[A-Za-z_]\w*$")
_ASSIGN = re.compile(r"^\s*([A-Za-z_]\w*)\s*=(?!=)(.*)$", re.S)
_JIT_CACHE_SIZE = 16


class _FallbackUsageError(ValueError):
    """A misused ``%%grad`` when IPython is not installed (``grad_cell`` alone)."""


def _usage(msg):
    """An IPython ``UsageError`` (IPython shows it as one line, without a
    traceback), or a ``ValueError`` subclass when IPython is absent."""
    try:
        from IPython.core.error import UsageError
    except ImportError:  # pragma: no cover - exercised only without IPython
        UsageError = _FallbackUsageError
    return UsageError(f"%%grad: {msg}")


# --- the line: [TARGET] wrt NAMES [OPTIONS] ----------------------------------------------
class GradSpec:
    """A parsed ``%%grad`` line (see :func:`parse_grad_line`)."""

    def __init__(self):
        self.target = None          # the variable to differentiate, or None: last expression
        self.names = []             # wrt names, in order
        self.check = None           # None, or the finite-difference step (0.0: default step)
        self.hessian = False
        self.hvp = {}               # name -> EXPR source
        self.jvp = {}               # name -> EXPR source
        self.compile = False
        self.dict_name = "grads"
        self.quiet = False

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"GradSpec({fields})"


def _words(line):
    """Split on blanks outside brackets and quotes; strip quotes around a whole word."""
    words, cur, depth, quote = [], [], 0, None
    for ch in line:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise _usage(f"unbalanced {ch!r} in the line; {USAGE}")
        elif ch.isspace() and depth == 0:
            if cur:
                words.append("".join(cur))
                cur = []
            continue
        cur.append(ch)
    if quote or depth:
        raise _usage(f"unbalanced {'quote' if quote else 'bracket'} in the line; {USAGE}")
    if cur:
        words.append("".join(cur))
    return [w[1:-1] if len(w) >= 2 and w[0] == w[-1] and w[0] in "'\"" else w for w in words]


def _float_word(w):
    try:
        return float(w)
    except ValueError:
        return None


def _check_ident(name, what):
    if not _IDENT.match(name) or keyword.iskeyword(name):
        raise _usage(f"{what} {name!r} is not a Python variable name; {USAGE}")
    return name


def _name_expr(opt, arg, spec_names):
    m = _ASSIGN.match(arg)
    if not m or not m.group(2).strip():
        raise _usage(f"{opt} expects NAME=EXPR (one word: put an EXPR with spaces in quotes, "
                     f"e.g. {opt} \"w=2 * v\"), got {arg!r}")
    name, expr = m.group(1), m.group(2).strip()
    try:
        compile(expr, f"<{opt} {name}>", "eval")
    except SyntaxError as e:
        raise _usage(f"{opt} {name}=...: {expr!r} is not a Python expression ({e.msg})") from None
    if name in spec_names:
        raise _usage(f"{opt} names {name!r} twice")
    return name, expr


def parse_grad_line(line):
    """Parse the line of a ``%%grad`` cell into a :class:`GradSpec`.

    Grammar: ``[TARGET] wrt NAME[, NAME ...] [OPTIONS]``. Options may come
    anywhere; an option's argument is one word, in which blanks are allowed
    inside brackets or quotes (``--hvp w=np.full(3, 2.0)``, ``--jvp "w=2 * v"``).

    Examples
    --------
    >>> s = parse_grad_line("loss wrt w, b --check 1e-5 --as g")
    >>> s.target, s.names, s.check, s.dict_name
    ('loss', ['w', 'b'], 1e-05, 'g')
    >>> parse_grad_line("wrt x --jvp x=np.ones(3)").jvp
    {'x': 'np.ones(3)'}
    """
    spec = GradSpec()
    words = _words(line)
    pos = []
    i = 0
    while i < len(words):
        w = words[i]
        i += 1
        if not w.startswith("-"):
            pos.append(w)
            continue
        opt, eq, inline = w.partition("=") if w.startswith("--") else (w, "", "")
        if opt not in _OPTIONS:
            raise _usage(f"unknown option {opt!r}; options are {', '.join(_OPTIONS)}. {USAGE}")

        def argument():
            nonlocal i
            if eq:
                return inline
            if i >= len(words):
                raise _usage(f"{opt} needs an argument; {USAGE}")
            i += 1
            return words[i - 1]

        if opt == "--check":
            eps = inline if eq else (words[i] if i < len(words) else None)
            val = _float_word(eps) if eps is not None else None
            if eq and val is None:
                raise _usage(f"--check={inline!r}: EPS must be a number")
            if val is not None:
                if not eq:
                    i += 1
                if not (np.isfinite(val) and val > 0):
                    raise _usage(f"--check EPS must be a positive step, got {eps}")
            spec.check = val if val is not None else 0.0
        elif opt == "--hessian":
            spec.hessian = True
        elif opt in ("--hvp", "--jvp"):
            table = spec.hvp if opt == "--hvp" else spec.jvp
            name, expr = _name_expr(opt, argument(), table)
            table[name] = expr
        elif opt == "--compile":
            spec.compile = True
        elif opt == "--as":
            spec.dict_name = _check_ident(argument(), "--as")
        else:
            spec.quiet = True
    if pos[:1] == ["wrt"]:
        rest = pos[1:]
    elif len(pos) >= 2 and pos[1] == "wrt":
        spec.target = _check_ident(pos[0], "TARGET")
        rest = pos[2:]
    else:
        raise _usage(f"expected '[TARGET] wrt NAME[, NAME ...]', got {line.strip()!r}. {USAGE}")
    names = [n for n in re.split(r"[,\s]+", " ".join(rest)) if n]
    if not names:
        raise _usage(f"name at least one variable after 'wrt'. {USAGE}")
    for n in names:
        _check_ident(n, "wrt name")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise _usage(f"wrt repeats {', '.join(dup)}")
    if spec.target in names:
        raise _usage(f"the target {spec.target!r} is also a wrt name; differentiate a value "
                     f"the cell computes from it")
    for opt, table in (("--hvp", spec.hvp), ("--jvp", spec.jvp)):
        for n in table:
            if n not in names:
                raise _usage(f"{opt} {n}=...: {n!r} is not one of the wrt names "
                             f"({', '.join(names)})")
    spec.names = names
    return spec


# --- pytree helpers (same traversal order as core.pytree) -----------------------------------
def _leaves_with_paths(tree, path=""):
    t = type(tree)
    if t is tuple or t is list:
        for k, c in enumerate(tree):
            yield from _leaves_with_paths(c, f"{path}[{k}]")
    elif t is dict:
        for k in sorted(tree):
            yield from _leaves_with_paths(tree[k], f"{path}[{k!r}]")
    else:
        yield path, tree


def _replace_leaf(tree, index, new):
    """``tree`` with its ``index``-th leaf replaced."""
    count = [0]

    def go(t):
        tt = type(t)
        if tt is tuple or tt is list:
            return tt(go(c) for c in t)
        if tt is dict:
            return {k: go(t[k]) for k in sorted(t)}
        k = count[0]
        count[0] += 1
        return new if k == index else t
    return go(tree)


def _check_inputs(ns, names):
    missing = [n for n in names if n not in ns]
    if missing:
        raise _usage(f"unknown name{'s' if len(missing) > 1 else ''} "
                     f"{', '.join(missing)}: define {'them' if len(missing) > 1 else 'it'} "
                     f"in an earlier cell before differentiating with respect to "
                     f"{'them' if len(missing) > 1 else 'it'}")
    for n in names:
        for path, leaf in _leaves_with_paths(ns[n]):
            where = f"{n}{path}"
            if isinstance(leaf, (bool, np.bool_)):
                kind = "a bool"
            elif isinstance(leaf, (np.ndarray, np.generic)):
                if leaf.dtype.kind in "fc":
                    continue
                kind = f"an array of dtype {leaf.dtype}"
            elif isinstance(leaf, (float, complex)):
                continue
            else:
                t = type(leaf).__name__
                kind = f"{'an' if t[0] in 'aeiou' else 'a'} {t}"
            raise _usage(f"{where} is {kind}; only float or complex arrays and numbers (or "
                         f"tuples/lists/dicts of them) can be differentiated. Convert it first "
                         f"(e.g. {n} = np.asarray({n}, dtype=float)) or leave it out of wrt.")


def _tangent(ns_globals, ns, opt, name, expr, primal):
    __tracebackhide__ = True
    try:
        v = eval(compile(expr, f"<{opt} {name}>", "eval"), ns_globals, ns)
    except Exception as e:
        raise _usage(f"{opt} {name}={expr}: evaluating it raised "
                     f"{type(e).__name__}: {e}") from e
    pl = list(_leaves_with_paths(primal))
    tl = list(_leaves_with_paths(v))
    if [p for p, _ in pl] != [p for p, _ in tl]:
        raise _usage(f"{opt} {name}={expr}: the value has a different structure than {name} "
                     f"(leaves {[p or name for p, _ in tl]} vs {[p or name for p, _ in pl]})")
    out = []
    for (path, p), (_, t) in zip(pl, tl):
        t = np.asarray(t)
        if t.shape != np.shape(p):
            raise _usage(f"{opt} {name}={expr}: shape {t.shape} does not match "
                         f"{name}{path}'s shape {np.shape(p)}")
        if t.dtype.kind not in "fciub":
            raise _usage(f"{opt} {name}={expr}: dtype {t.dtype} is not numeric")
        out.append(t.astype(np.result_type(p)))
    it = iter(out)
    return _map_leaves(primal, lambda _: next(it))


def _map_leaves(tree, f):
    tt = type(tree)
    if tt is tuple or tt is list:
        return tt(_map_leaves(c, f) for c in tree)
    if tt is dict:
        return {k: _map_leaves(tree[k], f) for k in sorted(tree)}
    return f(tree)


# --- hygiene -----------------------------------------------------------------------------------
def _plain(v):
    p = getattr(v, "_v", None)
    return p if type(p) is np.ndarray else np.array(v)


def _clean_namespace(ns):
    """Replace every TracedArray in ``ns`` (and one level inside its lists,
    dicts and tuples) with its plain value."""
    for k, v in list(ns.items()):
        if type(v) is TracedArray:
            ns[k] = _plain(v)
        elif isinstance(v, list):
            for j, x in enumerate(v):
                if type(x) is TracedArray:
                    v[j] = _plain(x)
        elif isinstance(v, dict):
            for kk, x in list(v.items()):
                if type(x) is TracedArray:
                    v[kk] = _plain(x)
        elif isinstance(v, tuple) and any(type(x) is TracedArray for x in v):
            items = [_plain(x) if type(x) is TracedArray else x for x in v]
            try:
                ns[k] = type(v)._make(items) if hasattr(type(v), "_make") else type(v)(items)
            except Exception:  # an exotic tuple subclass: a plain tuple beats a leak
                ns[k] = tuple(items)


# --- running the cell ---------------------------------------------------------------------------
class _Cell:
    """The cell compiled once, with the last expression split off if it is the target."""

    def __init__(self, cell, spec, shell):
        src = shell.transform_cell(cell) if shell is not None else cell
        if not src.strip():
            raise _usage("the cell is empty; write the computation to differentiate below "
                         "the %%grad line")
        filename = "<%%grad cell>"
        if shell is not None:
            try:
                filename = shell.compile.cache(src, shell.execution_count)
            except Exception:  # pragma: no cover - older/unusual shells
                pass
        tree = ast.parse(src, filename)
        self.source = src
        self.expr = None
        self.label = spec.target
        body = tree.body
        if spec.target is None:
            if not body or not isinstance(body[-1], ast.Expr):
                raise _usage("the cell does not end with an expression: end it with the value "
                             "to differentiate (e.g. np.sum(r ** 2)) or name the variable it "
                             "assigns: %%grad TARGET wrt ...")
            last = body[-1].value
            self.label = last.id if isinstance(last, ast.Name) and last.id not in spec.names \
                else "out"
            self.expr = compile(ast.Expression(last), filename, "eval")
            body = body[:-1]
        self.body = compile(ast.Module(body, type_ignores=[]), filename, "exec")
        names = [n for n in ast.walk(tree) if isinstance(n, ast.Name)]
        stores = {n.id for n in names if not isinstance(n.ctx, ast.Load)}
        # what the cell reads from the namespace without assigning it (--compile's inputs)
        self.reads = sorted({n.id for n in names if isinstance(n.ctx, ast.Load)} - stores)


def _check_target(out, label, from_expr):
    __tracebackhide__ = True
    what = f"the cell's last expression ({label})" if from_expr else f"the target {label!r}"
    if out is None:
        hint = " (the last line is a call returning None, such as print?)" if from_expr else ""
        raise _usage(f"{what} is None{hint}; it must be a real scalar")
    if isinstance(out, (tuple, list, dict)) or not isinstance(
            out, (np.ndarray, numbers.Number, np.generic)):
        raise _usage(f"{what} is a {type(out).__name__}; it must be a real scalar (reduce with "
                     f"np.sum/np.mean, or use tracegrad.jacrev for vector outputs)")
    shape = np.shape(out)
    if int(np.prod(shape)) != 1:
        raise _usage(f"{what} has shape {shape}; it must be a real scalar: reduce it (e.g. "
                     f"np.sum(...) or np.mean(...)) or use tracegrad.jacrev for the Jacobian")
    if np.iscomplexobj(out._v if type(out) is TracedArray else out):
        raise _usage(f"{what} is complex; differentiate np.real(...) or np.abs(...) of it")
    return out


class _Runner:
    """Calls the cell as a function of the wrt values (and, for ``--compile``,
    of the other float arrays it reads), returning the target."""

    def __init__(self, cell, spec, ns, gns, originals, extras=()):
        self.cell, self.spec, self.ns, self.gns = cell, spec, ns, gns
        self.originals = originals
        self.extras = tuple(extras)
        self.runs = 0
        self.rebound = set()

    def __call__(self, *vals):
        __tracebackhide__ = True
        ns, spec, cell = self.ns, self.spec, self.cell
        keys = list(spec.names) + list(self.extras)
        try:
            for n, v in zip(keys, vals):
                ns[n] = v
            before = ns.get(spec.target, _MISSING) if spec.target else None
            self.runs += 1
            exec(cell.body, self.gns, ns)
            for n, v in zip(spec.names, vals):
                if ns.get(n, _MISSING) is not v:
                    self.rebound.add(n)
            if cell.expr is not None:
                out = eval(cell.expr, self.gns, ns)
            else:
                out = ns.get(spec.target, _MISSING)
                if out is _MISSING:
                    raise _usage(f"the cell did not assign the target {spec.target!r}; assign "
                                 f"it ({spec.target} = ...) or omit TARGET to differentiate "
                                 f"the cell's last expression")
                if out is before:
                    raise _usage(f"the cell did not assign the target {spec.target!r} (it "
                                 f"still holds the value from before the cell)")
            return _check_target(out, cell.label, cell.expr is not None)
        finally:
            self.restore()

    def restore(self):
        for n, v in self.originals.items():
            self.ns[n] = v
        _clean_namespace(self.ns)


def _leaf_arrays(tree):
    return [(p, np.asarray(x)) for p, x in _leaves_with_paths(tree)]


def _fd_runs(run, vals, eps):
    """Central differences of the target along one random direction per
    input leaf: ``[(name_index, leaf_index, path, dx, df, tol)]``."""
    rng = np.random.default_rng(0)
    out = []
    for i, val in enumerate(vals):
        for j, (path, x) in enumerate(_leaf_arrays(val)):
            single = np.finfo(x.dtype).eps > 1e-10  # float32, complex64, float16
            step = eps or (1e-3 if single else 1e-6)
            tol = 1e-2 if single else 1e-4
            if x.size == 0:
                out.append((i, j, path, np.zeros(x.shape, x.dtype), 0.0, tol))
                continue
            u = rng.standard_normal(x.shape)
            if x.dtype.kind == "c":
                u = u + 1j * rng.standard_normal(x.shape)
            u = u / np.sqrt(np.sum(np.abs(u) ** 2))
            h = step * max(1.0, float(np.max(np.abs(x))))
            orig = _nth_leaf(val, j)
            fs, xs = [], []
            for sgn in (1, -1):
                xp = (x + sgn * h * u).astype(x.dtype)
                xs.append(xp)
                leaf = xp.item() if isinstance(orig, (float, complex)) else xp
                args = list(vals)
                args[i] = _replace_leaf(val, j, leaf)
                fs.append(float(np.real(np.asarray(run(*args)))))
            dx = xs[0].astype(np.complex128 if x.dtype.kind == "c" else np.float64) - xs[1]
            out.append((i, j, path, dx, fs[0] - fs[1], tol))
    return out


def _nth_leaf(tree, j):
    return [x for _, x in _leaves_with_paths(tree)][j]


def _rel_err(df, ad):
    num = abs(df - ad)
    den = max(abs(df), abs(ad))
    if num == 0.0:
        return 0.0
    return num / den if den > 0 else float("inf")


def _jit_or_raise():
    import tracegrad
    jit = getattr(tracegrad, "jit", None)
    if not callable(jit):
        raise _usage("--compile needs tracegrad.jit, which this version of tracegrad does not "
                     "have yet; run the cell without --compile")
    return jit


def grad_cell(line, cell, namespace, shell=None, _jit_cache=None):
    """Run ``cell`` with the ``wrt`` variables of ``namespace`` traced and bind
    its derivatives there: the engine of the ``%%grad`` magic.

    Parameters
    ----------
    line : str
        The magic's line, ``[TARGET] wrt NAME[, NAME ...] [OPTIONS]`` (see
        :func:`parse_grad_line` and ``docs/magic.md``).
    cell : str
        Python source; it runs in ``namespace`` as the cell's globals.
    namespace : dict
        The user namespace (``shell.user_ns`` in IPython).
    shell : IPython InteractiveShell, optional
        When given, the cell goes through IPython's input transformations
        (``%line`` magics, ``!cmd``) and its source is cached for tracebacks.

    Returns
    -------
    GradResult or None
        ``None`` with ``-q``, so that nothing is displayed.

    Examples
    --------
    >>> import numpy as np
    >>> ns = {"np": np, "w": np.array([1.0, 2.0])}
    >>> res = grad_cell("loss wrt w -q", "loss = np.sum(w ** 2)", ns)
    >>> ns["dloss_dw"], ns["grads"]["w"] is ns["dloss_dw"], type(ns["loss"]).__name__
    (array([2., 4.]), True, 'ndarray')
    """
    __tracebackhide__ = True
    spec = parse_grad_line(line)
    ns = namespace
    gns = shell.user_global_ns if shell is not None else ns
    _check_inputs(ns, spec.names)
    if spec.hessian:
        size = sum(np.size(x) for n in spec.names for _, x in _leaves_with_paths(ns[n]))
        if size > HESSIAN_MAX_SIZE:
            raise _usage(f"--hessian: the inputs have {size} elements, so the Hessian would "
                         f"have {size}x{size} entries (more than {HESSIAN_MAX_SIZE} inputs "
                         f"are refused); use --hvp NAME=EXPR for Hessian-vector products "
                         f"instead")
    jit = _jit_or_raise() if spec.compile else None
    code = _Cell(cell, spec, shell)
    label = code.label
    originals = {n: ns[n] for n in spec.names}
    vals = list(originals.values())
    tangents = {}
    for opt, table in (("--hvp", spec.hvp), ("--jvp", spec.jvp)):
        for n, expr in table.items():
            tangents[opt, n] = _tangent(gns, ns, opt, n, expr, originals[n])

    runner = _Runner(code, spec, ns, gns, originals)
    argnums = tuple(range(len(vals)))
    result = GradResult(label, spec, code.expr is not None)
    fd = None
    try:
        # Extra runs first, so the namespace ends with the values of the main run.
        fd = _fd_runs(runner, vals, spec.check) if spec.check is not None else None
        if spec.hessian:
            H = api.hessian(runner, argnums=argnums)(*vals)
            for a, na in enumerate(spec.names):
                for b, nb in enumerate(spec.names):
                    result.hessian[na, nb] = H[a][b]
        if spec.hvp:
            v = tuple(tangents.get(("--hvp", n), _zeros_like(x)) for n, x in originals.items())
            hv = api.hvp(lambda xs: runner(*xs), tuple(vals), v)
            result.hvp = dict(zip(spec.names, hv))
        if spec.jvp:
            t = tuple(tangents.get(("--jvp", n), _zeros_like(x)) for n, x in originals.items())
            result.jvp = api.jvp(runner, tuple(vals), t)[1]
        if jit is None:
            value, grads = api.value_and_grad(runner, argnums=argnums)(*vals)
        else:
            value, grads, compiled_runs = _compiled(jit, _jit_cache, code, spec, ns, gns,
                                                    originals, vals)
            runner.runs += compiled_runs
            result.compiled = True
    finally:
        runner.restore()
    if runner.rebound:
        warnings.warn(f"%%grad: the cell rebinds {', '.join(sorted(runner.rebound))}; wrt "
                      f"variables are restored to their values from before the cell, so the "
                      f"new value is discarded", UserWarning, stacklevel=2)
    result.value = value
    result.runs = runner.runs
    result.grads = dict(zip(spec.names, grads))
    if fd is not None:
        leaves = {i: [x for _, x in _leaf_arrays(g)] for i, g in enumerate(grads)}
        for i, j, path, dx, df, tol in fd:
            g = leaves[i][j]
            ad = float(np.real(np.vdot(g, dx))) if dx.size else 0.0
            result.check[spec.names[i], path] = (_rel_err(df, ad), tol)
    result._bind(ns)
    if spec.compile and spec.target is not None:
        ns[spec.target] = value
    return None if spec.quiet else result


def _zeros_like(tree):
    return _map_leaves(tree, lambda x: np.zeros(np.shape(x), np.result_type(x)))


def _compiled(jit, cache, code, spec, ns, gns, originals, vals):
    __tracebackhide__ = True
    extras = [n for n in code.reads if n not in originals and n != spec.target
              and type(ns.get(n)) is np.ndarray and ns[n].dtype.kind in "fc"]
    key = (code.source, spec.target, tuple(spec.names), tuple(extras))
    entry = cache.get(key) if cache is not None else None
    if entry is None:
        every = dict(originals)
        every.update((n, ns[n]) for n in extras)
        runner = _Runner(code, spec, ns, gns, every, extras)
        entry = (runner, jit(api.value_and_grad(runner, argnums=tuple(range(len(vals))))))
        if cache is not None:
            cache[key] = entry
            while len(cache) > _JIT_CACHE_SIZE:
                cache.popitem(last=False)
    runner, fn = entry
    runner.originals = dict(originals)
    runner.originals.update((n, ns[n]) for n in extras)
    before = runner.runs
    try:
        value, grads = fn(*vals, *[ns[n] for n in extras])
    finally:
        runner.restore()
    return value, grads, runner.runs - before


# --- the result and its display --------------------------------------------------------------
def _fmt(x):
    return "—" if x is None else f"{x:.4g}"


class GradResult:
    """What ``%%grad`` returns: the value, the gradients and everything bound.

    Attributes
    ----------
    label : str
        The target's name (``out`` for an unnamed last expression).
    value : ndarray
        The target's value (0-d).
    grads : dict
        Input name -> gradient (same structure as the input).
    check : dict
        ``(name, leaf path) -> (relative error, tolerance)`` with ``--check``.
    hessian, hvp : dict
        ``(name, name) -> block`` and ``name -> (H v) block`` when asked.
    jvp : ndarray or None
        The directional derivative with ``--jvp``.
    bindings : dict
        Every variable the magic bound in the namespace.
    runs : int
        How many times the cell ran.
    """

    def __init__(self, label, spec, from_expr):
        self.label = label
        self.spec = spec
        self.from_expr = from_expr
        self.value = None
        self.grads = {}
        self.check = {}
        self.hessian = {}
        self.hvp = {}
        self.jvp = None
        self.bindings = {}
        self.runs = 0
        self.compiled = False

    def _bind(self, ns):
        t = self.label
        b = self.bindings
        for n, g in self.grads.items():
            b[f"d{t}_d{n}"] = g
        b[self.spec.dict_name] = dict(self.grads)
        names = list(self.grads)
        for a, na in enumerate(names):
            for nb in names[a:]:
                if (na, nb) in self.hessian:
                    key = f"d2{t}_d{na}2" if na == nb else f"d2{t}_d{na}_d{nb}"
                    b[key] = self.hessian[na, nb]
        for n, hv in self.hvp.items():
            b[f"hvp_{t}_{n}"] = hv
        if self.jvp is not None:
            b[f"jvp_{t}"] = self.jvp
        ns.update(b)

    @property
    def check_ok(self):
        """True when every finite-difference error is within its tolerance
        (``None`` without ``--check``)."""
        if not self.check:
            return None
        return all(err <= tol for err, tol in self.check.values())

    def rows(self):
        """One row per gradient leaf: ``(binding, shape, dtype, l2 norm,
        max abs, check error or None, check ok or None)``."""
        out = []
        for n, g in self.grads.items():
            for path, leaf in _leaves_with_paths(g):
                a = np.asarray(leaf)
                l2 = float(np.sqrt(np.sum(np.abs(a) ** 2))) if a.size else 0.0
                mx = float(np.max(np.abs(a))) if a.size else None
                err = self.check.get((n, path))
                out.append((f"d{self.label}_d{n}{path}", a.shape, str(a.dtype), l2, mx,
                            None if err is None else err[0],
                            None if err is None else err[0] <= err[1]))
        return out

    def _extras(self):
        """The bindings that are not gradient rows: ``[(name, description)]``."""
        out = [(self.spec.dict_name, f"dict of {len(self.grads)} gradient"
                f"{'s' if len(self.grads) != 1 else ''}")]
        grad_names = {f"d{self.label}_d{n}" for n in self.grads}
        for k, v in self.bindings.items():
            if k in grad_names or k == self.spec.dict_name:
                continue
            shapes = [np.shape(x) for _, x in _leaves_with_paths(v)]
            if len(shapes) == 1 and shapes[0] == ():
                desc = f"= {_fmt(float(np.real(np.asarray(v))))}"
            elif len(shapes) == 1:
                desc = f"shape {shapes[0]}"
            else:
                desc = f"{len(shapes)} leaves"
            out.append((k, desc))
        return out

    def _title(self):
        val = float(np.real(np.asarray(self.value)))
        what = "last expression" if self.from_expr else "target"
        ran = f"cell ran {self.runs}×" + (", compiled" if self.compiled else "")
        return (f"{self.label} = {_fmt(val)} ({what}); gradients w.r.t. "
                f"{', '.join(self.grads)}; {ran}")

    _HEAD = ("name", "shape", "dtype", "‖g‖₂", "max |g|", "check (rel. err)")

    def _cells(self, row):
        name, shape, dtype, l2, mx, err, ok = row
        chk = "—" if err is None else f"{_fmt(err)} {'✓' if ok else '✗'}"
        return [name, str(shape), dtype, _fmt(l2), _fmt(mx), chk]

    def _text(self):
        rows = [list(self._HEAD)] + [self._cells(r) for r in self.rows()]
        widths = [max(len(r[k]) for r in rows) for k in range(len(self._HEAD))]
        lines = [self._title()]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        lines.append("bound: " + ", ".join(f"{k} ({d})" for k, d in self._extras()))
        if self.check and not self.check_ok:
            lines.append("✗ finite differences disagree with the gradient beyond tolerance")
        return "\n".join(lines)

    def __repr__(self):
        return self._text()

    def _repr_pretty_(self, p, cycle):
        p.text("GradResult(...)" if cycle else self._text())

    def _repr_html_(self):
        def e(s):
            return html.escape(s, quote=False)
        head = "".join(f"<th>{e(h)}</th>" for h in self._HEAD)
        body = []
        for r in self.rows():
            cells = self._cells(r)
            tds = [f"<td><code>{e(cells[0])}</code></td>"]
            tds += [f"<td>{e(c)}</td>" for c in cells[1:5]]
            style = "" if r[6] is None else (' style="color:#080"' if r[6]
                                             else ' style="color:#c00;font-weight:bold"')
            tds.append(f"<td{style}>{e(cells[5])}</td>")
            body.append("<tr>" + "".join(tds) + "</tr>")
        extras = ", ".join(f"<code>{e(k)}</code> ({e(d)})" for k, d in self._extras())
        warn = ""
        if self.check and not self.check_ok:
            warn = ('<p style="color:#c00">✗ finite differences disagree with the gradient '
                    'beyond tolerance</p>')
        return (f'<div class="tracegrad-grad"><p><b>%%grad</b> {e(self._title())}</p>'
                f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
                f"<p>bound: {extras}</p>{warn}</div>")


# --- IPython registration --------------------------------------------------------------------
_MAGICS = None
_MAGIC_DOC = """Differentiate a cell: %%grad [TARGET] wrt NAME[, NAME ...] [OPTIONS]

The cell runs once, in the notebook namespace, with the variables NAME traced.
TARGET is a variable the cell assigns; without it the value of the cell's last
expression is differentiated and called ``out`` (or, if that expression is a
bare variable name, named after it). TARGET must be a real scalar.

Binds, for each NAME, ``d<TARGET>_d<NAME>`` (same structure as NAME) and all
of them as the dict ``grads``; returns a table of them (name, shape, dtype,
l2 norm, max |g|, finite-difference error).

Options (anywhere on the line; an option's argument is one word, which may
contain blanks inside brackets or quotes: --hvp w=np.full(3, 2.0), --jvp "w=2*v"):

  --check [EPS]    also compare with central finite differences along one random
                   direction per input (step EPS*max(1, max|x|), default 1e-6;
                   1e-3 for float32); runs the cell 2 more times per input array
  --hessian        bind d2<TARGET>_d<NAME>2 and d2<TARGET>_d<A>_d<B> (A before B);
                   refused above 2000 input elements: use --hvp instead
  --hvp NAME=EXPR  bind hvp_<TARGET>_<N> for every N: the Hessian times the
                   direction EXPR for NAME (zero for names not given); repeatable
  --jvp NAME=EXPR  bind jvp_<TARGET>, the forward-mode derivative along EXPR
                   (zero for names not given); repeatable
  --compile        run value and gradient through tracegrad.jit
  --as DICT        bind the dict of gradients as DICT instead of grads
  -q, --quiet      bind everything, display nothing (the magic returns None)

EXPRs are evaluated in the namespace before the cell runs. --check, --hessian,
--hvp and --jvp run the cell again (before the main run). Afterwards the wrt
variables hold their original objects and no traced array is left in the
namespace (nor one level inside its lists, dicts and tuples), even when the
cell raises; the cell's own exceptions propagate unchanged.
"""


def _magics_class():
    global _MAGICS
    if _MAGICS is None:
        from IPython.core.magic import Magics, cell_magic, magics_class

        @magics_class
        class GradMagics(Magics):
            """The ``%%grad`` cell magic (see ``tracegrad.jupyter``)."""

            def __init__(self, shell=None, **kwargs):
                super().__init__(shell=shell, **kwargs)
                self._jit_cache = OrderedDict()

            @cell_magic
            def grad(self, line, cell):
                __tracebackhide__ = True
                return grad_cell(line, cell, self.shell.user_ns, shell=self.shell,
                                 _jit_cache=self._jit_cache)
            grad.__doc__ = _MAGIC_DOC

        _MAGICS = GradMagics
    return _MAGICS


def load_ipython_extension(ipython):
    """Register the ``%%grad`` cell magic on ``ipython`` (an InteractiveShell).

    IPython calls it for ``%load_ext tracegrad`` and for a profile's
    ``c.InteractiveShellApp.extensions = ['tracegrad']``; ``tracegrad``
    re-exports it. Then ``%%grad?`` shows the usage.
    """
    ipython.register_magics(_magics_class())


def unload_ipython_extension(ipython):
    """Remove the ``%%grad`` magic (``%unload_ext tracegrad``)."""
    mm = ipython.magics_manager
    cell = mm.magics.get("cell", {})
    fn = cell.get("grad")
    if fn is not None and type(getattr(fn, "__self__", None)).__name__ == "GradMagics":
        del cell["grad"]
    mm.registry.pop("GradMagics", None)
