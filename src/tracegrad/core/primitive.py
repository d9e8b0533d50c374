"""Primitives and the rule registry.

A primitive is one NumPy-level operation with its derivative rules next to
it. Rules are *data*: adding an operation means adding one table entry in a
``rules/`` module, and the generic tests iterate over this registry.

Conventions every rule follows
------------------------------
* ``impl(*arrays, **params)`` computes the value on plain ndarrays.
* A VJP rule for input ``i`` is ``vjp_i(g, ans, *args, **params)`` and returns
  the cotangent of that input. A JVP rule is either a tuple of per-input
  linear maps ``jvp_i(t, ans, *args, **params)`` whose results are summed, or
  one function ``jvp(tangents, ans, *args, **params)`` receiving every
  tangent (``None`` for inputs with zero tangent).
* Cotangents and tangents may carry *leading batch axes* (``jacrev`` pulls a
  batch of cotangents through one backward walk, ``jacfwd`` pushes a batch of
  tangents through one forward run). Rules therefore work on trailing axes:
  axes are stored normalised to negative values, and ``g.ndim - ans.ndim``
  (``t.ndim - x.ndim``) is the number of batch axes.
* Rules are written with NumPy calls on their inputs, so when an outer level
  is active the rule is itself recorded: higher derivatives come for free.
* Broadcasting is undone by the walkers (``reverse.unbroadcast``), never by
  rules: a rule may return a cotangent of the broadcast shape.
"""
import numpy as np

from .. import errors

#: name -> Primitive
PRIMITIVES = {}
#: ufunc -> Primitive for ``ufunc(...)`` calls
UFUNC_PRIMS = {}
#: NumPy function (the public object) -> handler taking the call's args
FUNCTION_HANDLERS = {}
#: (ufunc, method) -> handler for ufunc.reduce / accumulate / outer ...
UFUNC_METHOD_HANDLERS = {}


class Primitive:
    """One operation and its derivative rules.

    Parameters
    ----------
    name : str
        Unique name in the registry.
    impl : callable
        ``impl(*arrays, **params)`` on plain arrays.
    vjp : tuple of callables or None, optional
        One VJP rule per array input; ``None`` in a slot means the input is
        not differentiable (its cotangent is zero).
    jvp : callable or tuple of callables, optional
        See the module docstring.
    partials : tuple, optional
        Elementwise primitives only: ``partials[i](ans, *args)`` is the local
        derivative of the output with respect to input ``i`` (a number for a
        constant derivative, ``None`` when the input is not differentiable).
        VJP and JVP are then both derived from it.
    singular : bool
        The partial derivative can be infinite where the function is finite
        (sqrt at 0, log at 0, ...). A zero (co)tangent then contributes zero
        instead of ``0 * inf = nan``: the executed-path convention.
    nondiff : bool
        Output has zero derivative everywhere it is defined (comparisons,
        floor, sign, argmax...). Reverse and forward levels do not track it.
    nout : int
        Number of outputs (``impl`` returns a tuple when > 1).
    save_args, save_ans : bool
        Whether the VJP rules need input values / the output value. When not
        saved, rules receive ``ShapeDtype`` placeholders for the inputs.
    """

    __slots__ = ("name", "impl", "vjp", "jvp", "partials", "singular", "nondiff",
                 "nout", "save_args", "save_ans", "elementwise", "scalar", "doc",
                 "const_partials")

    def __init__(self, name, impl, vjp=None, jvp=None, partials=None, singular=False,
                 nondiff=False, nout=1, save_args=True, save_ans=True, scalar=None,
                 doc=None):
        self.name = name
        self.impl = impl
        self.partials = partials
        self.elementwise = partials is not None
        # add, subtract, negative...: the VJP needs no values at all
        self.const_partials = partials is not None and not any(callable(p) for p in partials)
        self.vjp = vjp
        self.jvp = jvp
        self.singular = singular
        self.nondiff = nondiff
        self.nout = nout
        if partials is not None:
            # Keep only what the partials read: `lambda ans, x, y: y` needs the
            # inputs, `lambda ans, x: 1 - ans * ans` only the output. Memory of
            # a long tape is mostly these saved values.
            fns = [p for p in partials if callable(p)]
            save_ans = save_ans and any(_reads(p, 0) for p in fns)
            save_args = save_args and any(_reads(p, k) for p in fns
                                          for k in range(1, len(partials) + 1))
        self.save_args = save_args
        self.save_ans = save_ans
        self.scalar = scalar
        self.doc = doc

    def __repr__(self):
        return f"<primitive {self.name}>"

    def differentiable_inputs(self, nargs):
        """Indices of inputs this primitive can differentiate."""
        if self.nondiff:
            return ()
        if self.partials is not None:
            return tuple(i for i, p in enumerate(self.partials) if p is not None)
        if self.vjp is None:
            return ()
        return tuple(i for i in range(nargs) if i < len(self.vjp) and self.vjp[i] is not None)


class Variadic:
    """Per-input rule table for primitives taking any number of inputs:
    ``rule(i, ...)`` is the rule for input ``i``."""

    __slots__ = ("rule",)

    def __init__(self, rule):
        self.rule = rule

    def __getitem__(self, i):
        rule = self.rule
        return lambda *a, **k: rule(i, *a, **k)

    def __len__(self):
        return 1 << 30


class ShapeDtype:
    """Stand-in for an input whose value the VJP rule does not need."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype):
        self.shape = shape
        self.dtype = dtype

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        n = 1
        for s in self.shape:
            n *= s
        return n

    def __repr__(self):
        return f"ShapeDtype({self.shape}, {self.dtype})"


def _reads(fn, i):
    """Whether ``fn`` reads its ``i``-th positional parameter (conservatively
    True when that cannot be told from its code)."""
    import dis
    code = getattr(fn, "__code__", None)
    if code is None or code.co_flags & 0x04 or i >= code.co_argcount:
        return True
    name = code.co_varnames[i]
    if name in code.co_cellvars:
        return True
    return any(ins.opname.startswith("LOAD_FAST") and name in (
        ins.argval if isinstance(ins.argval, tuple) else (ins.argval,))
        for ins in dis.get_instructions(code))


def register(prim):
    if prim.name in PRIMITIVES:
        raise ValueError(f"primitive {prim.name!r} is already registered")
    PRIMITIVES[prim.name] = prim
    return prim


def defprim(name, impl, vjp=None, jvp=None, **kw):
    """Define and register a primitive (see :class:`Primitive`)."""
    return register(Primitive(name, impl, vjp=vjp, jvp=jvp, **kw))


def defelementwise(ufunc, *partials, singular=False, name=None, scalar=None):
    """Register a differentiable ufunc from its partial derivatives.

    ``partials[i](ans, *args)`` is ∂out/∂arg_i evaluated elementwise; the VJP
    is ``g * conj(partial)`` and the JVP ``t * partial``, both derived here.
    """
    if len(partials) != ufunc.nin:
        raise ValueError(f"{ufunc.__name__} takes {ufunc.nin} inputs, got {len(partials)} partials")
    prim = defprim(name or ufunc.__name__, ufunc, partials=tuple(partials), singular=singular,
                   scalar=scalar)
    UFUNC_PRIMS[ufunc] = prim
    return prim


def defnondiff_ufunc(ufunc, name=None):
    """Register a ufunc whose derivative is zero wherever it is defined."""
    prim = defprim(name or ufunc.__name__, ufunc, nondiff=True)
    UFUNC_PRIMS[ufunc] = prim
    return prim


def defhandler(*funcs):
    """Decorator: ``handler(*args, **kwargs)`` implements ``funcs`` on traced arrays."""
    def deco(handler):
        for f in funcs:
            if f in FUNCTION_HANDLERS:
                raise ValueError(f"a handler for {f} is already registered")
            FUNCTION_HANDLERS[f] = handler
        return handler
    return deco


def defufunc_method(ufunc, method):
    """Decorator registering a handler for ``ufunc.<method>`` on traced arrays."""
    def deco(handler):
        UFUNC_METHOD_HANDLERS[(ufunc, method)] = handler
        return handler
    return deco


def func_name(func):
    mod = getattr(func, "__module__", None) or "numpy"
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    if mod.startswith("numpy"):
        mod = "np" + mod[len("numpy"):]
        mod = mod.replace("np.linalg._linalg", "np.linalg").replace("np._core.fromnumeric", "np")
        if mod.startswith("np._") or mod.startswith("np.lib"):
            mod = "np"
    return f"{mod}.{name}"


def unsupported(what):
    return errors.UnsupportedOperation(
        f"{what} has no derivative rule in tracegrad, so calling it on a traced array would "
        f"silently drop the derivative. Express the computation with supported NumPy functions, "
        f"or register a rule, e.g. tracegrad.defvjp(func, lambda ans, x: lambda g: ...). "
        f"See docs/supported.md for the supported functions.")
