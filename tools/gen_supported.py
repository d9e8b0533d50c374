#!/usr/bin/env python
"""Generate docs/supported.md from tracegrad's registry.

The table lists every NumPy function, ufunc and ufunc method that tracegrad
differentiates, and how: a primitive with its own derivative rule, a handler
composing recorded primitives, NumPy's own Python implementation run on
traced arrays (the allow-list of ``rules/fallback.py``), or a function whose
derivative is zero (integer, boolean or piecewise-constant results). It is
read from the registry (``FUNCTION_HANDLERS``, ``UFUNC_PRIMS``,
``UFUNC_METHOD_HANDLERS``, ``PRIMITIVES``, ``FALLBACK``), so it cannot go
stale: ``tests/test_supported_docs.py`` regenerates it and compares.

Usage::

    python tools/gen_supported.py           # rewrite docs/supported.md
    python tools/gen_supported.py --stdout  # print instead
    python tools/gen_supported.py --check   # exit 1 when the file is stale
"""
import inspect
import operator
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "supported.md"
#: the heading of the section that only exists when SciPy is installed
SCIPY_HEADING = "## scipy.special"

_PRIM_RE = re.compile(r"""PRIMITIVES\[\s*["']([^"']+)["']\s*\]""")


def _registry():
    import tracegrad  # noqa: F401  (registers every rule)
    from tracegrad.core import primitive as P
    from tracegrad.rules.fallback import FALLBACK
    return P, FALLBACK


def public_name(func):
    """``np.linalg.solve``, ``np.sum``, ``operator.getitem``, ``scipy.special.erf``."""
    if func is operator.getitem:
        return "operator.getitem (x[key])"
    if func is operator.setitem:
        return "operator.setitem (x[key] = v)"
    name = getattr(func, "__name__", repr(func))
    if isinstance(func, np.ufunc):
        if getattr(np, name, None) is func:
            return f"np.{name}"
        try:
            import scipy.special as sps
            for k in sorted(dir(sps)):
                if not k.startswith("_") and getattr(sps, k) is func:
                    return f"scipy.special.{k}"
        except ImportError:
            pass
        return f"scipy.special.{name}"
    mod = getattr(func, "__module__", None) or ""
    qual = getattr(func, "__qualname__", name)
    for sub in ("linalg", "fft", "random", "ma", "polynomial"):
        ns = getattr(np, sub, None)
        if ns is not None and getattr(ns, name, None) is func and (
                getattr(np, name, None) is not func or sub in mod):
            return f"np.{sub}.{name}"
    if getattr(np, name, None) is func:
        return f"np.{name}"
    if qual.startswith("ndarray."):
        return f"np.{qual}"
    if mod.startswith("scipy"):
        return f"scipy.special.{name}" if "special" in mod else f"{mod}.{name}"
    return f"{mod}.{qual}" if mod else qual


def _family(obj):
    mod = getattr(obj, "__module__", "") or ""
    if mod.startswith("tracegrad.rules."):
        return mod.rsplit(".", 1)[1]
    if mod.startswith("tracegrad."):
        return mod.split(".", 1)[1]
    return ""


def _source(f):
    try:
        return inspect.getsource(f)
    except (OSError, TypeError):
        return ""


def _handler_prims(handler, P):
    """Primitives a handler binds directly: named in its source or closure, or
    in the source of a helper function of the same module that it calls."""
    src = _source(handler)
    names = {n for n in _PRIM_RE.findall(src) if n in P.PRIMITIVES}
    for cell in getattr(handler, "__closure__", None) or ():
        try:
            v = cell.cell_contents
        except ValueError:
            continue
        if isinstance(v, P.Primitive):
            names.add(v.name)
        elif isinstance(v, str) and v in P.PRIMITIVES and "PRIMITIVES[" in src:
            names.add(v)
    glb = getattr(handler, "__globals__", {})
    mod = getattr(handler, "__module__", None)
    for ident in set(re.findall(r"(?<![\w.])([A-Za-z_]\w*)\(", src)):
        helper = glb.get(ident)
        if (inspect.isfunction(helper) and helper is not handler
                and helper.__module__ == mod and helper.__name__ == ident):
            names.update(n for n in _PRIM_RE.findall(_source(helper)) if n in P.PRIMITIVES)
    return sorted(names)


def _how_handler(func, handler, P, FALLBACK):
    if func in FALLBACK:
        return "NumPy's `_implementation` (allow-listed)"
    prims = _handler_prims(handler, P)
    if prims and all(P.PRIMITIVES[n].nondiff for n in prims):
        return "zero derivative"
    if prims:
        return "rule: " + ", ".join(f"`{n}`" for n in prims)
    return "composed handler"


def _prim_family(prim):
    cands = []
    if prim.partials:
        cands += [p for p in prim.partials if callable(p)]
    vjp = prim.vjp
    if vjp is not None:
        if hasattr(vjp, "rule"):
            cands.append(vjp.rule)
        else:
            cands += [r for r in vjp if callable(r)]
    jvp = prim.jvp
    if callable(jvp):
        cands.append(jvp)
    elif jvp is not None:
        cands += [r for r in jvp if callable(r)]
    cands.append(prim.impl)
    for c in cands:
        fam = _family(c)
        if fam:
            return fam
    return "elementwise" if prim.elementwise else ""


def _prim_kind(prim):
    if prim.nondiff:
        return "zero derivative"
    if prim.elementwise:
        return "elementwise partials"
    modes = []
    if prim.vjp is not None:
        modes.append("vjp")
    if prim.jvp is not None:
        modes.append("jvp")
    return " + ".join(modes) or "no rule"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def render():
    """The text of docs/supported.md for the installed NumPy (and SciPy)."""
    P, FALLBACK = _registry()
    funcs, scipy_rows = [], []
    for func, handler in P.FUNCTION_HANDLERS.items():
        name = public_name(func)
        fam = "fallback" if func in FALLBACK else _family(handler)
        row = (f"`{name}`", _how_handler(func, handler, P, FALLBACK), fam)
        (scipy_rows if name.startswith("scipy.") else funcs).append(row)
    ufuncs = []
    for uf, prim in P.UFUNC_PRIMS.items():
        name = public_name(uf)
        how = "zero derivative" if prim.nondiff else (
            f"elementwise rule `{prim.name}`" if prim.elementwise else f"rule `{prim.name}`")
        row = (f"`{name}`", how, _prim_family(prim) or "elementwise")
        (scipy_rows if name.startswith("scipy.") else ufuncs).append(row)
    methods = []
    for (uf, meth), handler in P.UFUNC_METHOD_HANDLERS.items():
        prims = _handler_prims(handler, P)
        how = ("rule: " + ", ".join(f"`{n}`" for n in prims)) if prims else "composed handler"
        methods.append((f"`{public_name(uf)}.{meth}`", how, _family(handler)))
    prims, scipy_prims = [], []
    ufunc_prims = {id(p) for p in P.UFUNC_PRIMS.values()}
    for n, p in P.PRIMITIVES.items():
        fam = _prim_family(p) or ("elementwise" if id(p) in ufunc_prims else "")
        (scipy_prims if n.startswith("scipy.") else prims).append(
            (f"`{n}`", _prim_kind(p), fam))
    fb = [(f"`{public_name(f)}`", why) for f, why in FALLBACK.items()]
    for rows in (funcs, ufuncs, methods, prims, fb, scipy_rows, scipy_prims):
        rows.sort(key=lambda r: (r[0].strip("`").lower(), r))

    n_zero = sum(1 for r in funcs + ufuncs if r[1] == "zero derivative")
    out = [
        "# Supported NumPy functions",
        "",
        "<!-- Generated by tools/gen_supported.py from tracegrad's registry: do not edit by",
        "     hand. Regenerate with `python tools/gen_supported.py`; "
        "tests/test_supported_docs.py",
        "     fails when this file is stale. -->",
        "",
        "Calling anything not listed here on a traced array raises",
        "`tracegrad.UnsupportedOperation` (never a silently wrong derivative). Register your own",
        "rule with `tracegrad.defvjp(func, lambda ans, x: lambda g: ...)` or decorate a function",
        "with `tracegrad.custom_vjp`.",
        "",
        "How each entry is differentiated:",
        "",
        "* **rule** — the handler binds the named primitive(s), whose derivative rules live in",
        "  `src/tracegrad/rules/<family>.py` (see the primitive table below);",
        "* **composed handler** — the handler is written with other NumPy calls, each recorded",
        "  as its primitive, so the derivative follows from theirs;",
        "* **NumPy's `_implementation`** — NumPy's own Python code runs on the traced arrays",
        "  (an allow-list of functions verified not to drop the derivative: `rules/fallback.py`);",
        "* **zero derivative** — integer, boolean or piecewise-constant results; they are",
        "  computed on the values and carry no derivative.",
        "",
        "Methods of traced arrays (`x.sum()`, `x.T`, `x.reshape(...)`, ...) call the functions",
        "below.",
        "",
        f"Totals: {len(funcs)} functions, {len(ufuncs)} ufuncs, {len(methods)} ufunc methods, "
        f"{len(prims)} primitives; {len(fb)} functions run through NumPy's `_implementation`; "
        f"{n_zero} functions and ufuncs have a zero derivative.",
        "",
        "## Functions",
        "",
    ]
    out += _table(("function", "how", "family"), funcs)
    out += ["", "## Ufuncs", ""]
    out += _table(("ufunc", "how", "family"), ufuncs)
    out += ["", "## Ufunc methods", ""]
    out += _table(("method", "how", "family"), methods)
    out += ["", "## `_implementation` allow-list", "",
            "These run NumPy's own Python code on traced arrays; each is checked against",
            "finite differences in `tests/test_fallback.py`.", ""]
    out += _table(("function", "what its implementation calls"), fb)
    out += ["", "## Primitives", "",
            "Every primitive in the registry, with the rules it carries.", ""]
    out += _table(("primitive", "rules", "family"), prims)
    if scipy_rows or scipy_prims:
        out += ["", SCIPY_HEADING, "",
                "Registered only when SciPy is installed (not counted in the totals above).",
                ""]
        out += _table(("function", "how", "family"), scipy_rows)
        out += ["", "Their primitives:", ""]
        out += _table(("primitive", "rules", "family"), scipy_prims)
    return "\n".join(out) + "\n"


def strip_scipy(text):
    """``text`` without the SciPy section (for comparing across environments)."""
    i = text.find("\n" + SCIPY_HEADING + "\n")
    return (text if i < 0 else text[:i]).rstrip("\n") + "\n"


def main(argv):
    text = render()
    if "--stdout" in argv:
        sys.stdout.write(text)
        return 0
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            sys.stderr.write(f"{OUT} is stale: run python tools/gen_supported.py\n")
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
