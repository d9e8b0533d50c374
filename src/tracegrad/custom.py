"""Custom derivative rules: ``custom_vjp``, ``custom_jvp``, ``defvjp``, ``defjvp``
and ``stop_gradient``.

``custom_vjp`` / ``custom_jvp`` follow JAX: decorate a function, then attach
its rule. ``defvjp`` / ``defjvp`` follow autograd: attach rules to a function
you do not own (a NumPy function without a rule, or a third-party Python
function such as ``scipy.special.logsumexp``).

How it works
------------
Each call of a decorated function on traced values records *one* primitive
(a fresh :class:`~tracegrad.core.primitive.Primitive` owned by the decorated
function, not entered in the global registry) whose value is the user's
function on plain arrays and whose rules call the user's rules. Rules run
with NumPy calls on possibly traced values, so they are recorded by the
enclosing levels: ``grad(grad(f))``, ``hessian`` and ``jacfwd(grad(f))`` work
through a custom rule as long as the rule itself is written with NumPy.

One rule serves both modes. A VJP rule is linear in the cotangent ``g``, so
its transpose is the JVP: tracegrad records ``g -> vjp(g)`` on a private tape
at ``g = 0`` and walks that tape backwards with the tangent as seed, which
gives ``J @ t``. Symmetrically a JVP rule is transposed into a VJP. So
``jvp``/``jacfwd``/``hessian`` work for ``custom_vjp`` functions (which JAX
refuses) and ``grad``/``jacrev`` for ``custom_jvp`` ones. The transposed rule
must be traceable: written with NumPy calls on ``g`` (or on the tangents).

Batches of (co)tangents (``jacrev``, ``jacfwd``) are pushed through a user
rule one element at a time, since user rules are written for one
(co)tangent; the transposed rules are walked once for the whole batch.

Residuals and higher order. ``custom_vjp``'s ``fwd`` runs once per call. When
only one transform tracks the inputs it runs on plain arrays; when several
are nested it runs with the innermost one hidden, so that the residuals carry
the outer levels' derivatives (which ``grad(grad(f))`` needs, as in JAX).
Functions with custom rules must not close over traced values: pass them as
arguments (closing over one raises an error).
"""
import functools
import inspect
import sys
import weakref

import numpy as np

from . import errors
from .core.array import TracedArray, bind, concrete, tags_of, wrap
from .core.primitive import (FUNCTION_HANDLERS, UFUNC_PRIMS, Primitive, Variadic, defprim)
from .core.pytree import tree_flatten, tree_unflatten
from .core.reverse import backward, unbroadcast
from .core.tape import Tape, hidden

__all__ = ["custom_vjp", "custom_jvp", "defvjp", "defjvp", "stop_gradient", "remove_rules"]


# --- stop_gradient ---------------------------------------------------------------------
def _identity(x):
    # A copy, not ``x`` itself: the result is a constant that derivative rules
    # may save, and a constant is not watched for writes. Returning the input's
    # buffer let a later in-place write to it (``a[::2] = stop_gradient(a[::2])
    # * x[::2]``) change the saved value and silently corrupt the gradient.
    return np.array(x, copy=True)


STOP_GRADIENT = defprim(
    "stop_gradient", _identity, nondiff=True,
    doc="Identity whose output carries no derivative (recorded by capturing levels).")


def stop_gradient(x):
    """Return ``x`` unchanged, as a constant for every derivative.

    Works in reverse, forward and higher-order modes; ``x`` may be a pytree.
    It is a primitive (``stop_gradient``), so ``jit`` still sees the value's
    dependence on its inputs.

    Examples
    --------
    >>> import numpy as np, tracegrad as tg
    >>> tg.grad(lambda x: x * tg.stop_gradient(x))(3.0)
    array(3.)
    """
    leaves, treedef = tree_flatten(x)
    if not any(type(a) is TracedArray for a in leaves):
        return x
    return tree_unflatten(treedef, [bind(STOP_GRADIENT, (a,), {}) if type(a) is TracedArray
                                    else a for a in leaves])


# --- recording a call whose value is already computed ----------------------------------
def _levels(leaves):
    """Active levels tracking any of ``leaves``, outermost first (or None)."""
    lvls = None
    for a in leaves:
        if type(a) is TracedArray:
            for lv in tags_of(a):   # (re-derived first if written through a view)
                if lv.active:
                    if lvls is None:
                        lvls = [lv]
                    elif lv not in lvls:
                        lvls.append(lv)
    if lvls is not None and len(lvls) > 1:
        lvls.sort(key=lambda lv: lv.depth)
    return lvls


def _plain(x):
    return x._v if type(x) is TracedArray else x


def _emit(prim, args, outs, params, lvls):
    """Record ``prim(*args) == outs`` (plain values computed by the caller) on
    ``lvls``; the tail of :func:`~tracegrad.core.array.bind`."""
    captures = any(lv.captures_all for lv in lvls)
    if prim.nout == 1:
        out = outs[0]
        if type(out) is not np.ndarray:
            out = np.asarray(out)
        if out.dtype.kind not in "fc" and not captures:
            return (out,)
        tags = {}
        t = wrap(out, tags)
        for lv in lvls:
            lv.process(prim, args, t, params, tags)
        return (t if tags else out,)
    ts = tuple(wrap(np.asarray(o), {}) for o in outs)
    for lv in lvls:
        lv.process_multi(prim, args, ts, params)
    return tuple(t if t._tg else t._v for t in ts)


def _closure_check(leaves, what):
    for o in leaves:
        if type(o) is TracedArray and any(lv.active for lv in o._tg):
            raise errors.UnsupportedOperation(
                f"{what} returned a value that depends on a traced array it did not receive "
                f"as an argument (a closure over a traced value, or a traced value inside a "
                f"container argument). A function with a custom rule must receive every "
                f"differentiated value as a positional argument.")


# --- helpers shared by the rules -------------------------------------------------------
def _zeros(shape, dtype):
    dt = np.dtype(dtype)
    return np.zeros(shape, dt if dt.kind in "fc" else np.float64)


def _shape_dtype(x):
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return tuple(x.shape), x.dtype
    a = np.asarray(x)
    return a.shape, a.dtype


def _nb_of(g, ans):
    """Number of leading batch axes of a (co)tangent ``g`` of ``ans``."""
    if type(ans) is tuple:
        k = next(i for i, x in enumerate(g) if x is not None)
        return np.ndim(g[k]) - len(_shape_dtype(ans[k])[0])
    return np.ndim(g) - len(_shape_dtype(ans)[0])


def _batch_shape(xs, nb):
    for x in xs:
        if x is not None:
            return tuple(np.shape(x)[:nb])
    return ()


def _batched(fn, xs, nb, shapes):
    """Apply ``fn`` (one (co)tangent -> list of results, ``None`` = zero) to every
    element of a batch of (co)tangents ``xs`` and stack the results; ``shapes``
    are the (shape, dtype) of the results, for the zero entries."""
    batch = _batch_shape(xs, nb)
    rows = []
    for idx in np.ndindex(*batch):
        rows.append(fn([None if x is None else x[idx] for x in xs]))
    if not rows:        # an empty batch
        return [_zeros(batch + tuple(shape), dtype) for shape, dtype in shapes]
    out = []
    for k, (shape, dtype) in enumerate(shapes):
        col = [r[k] for r in rows]
        if all(c is None for c in col):
            out.append(None)
            continue
        col = [_zeros(shape, dtype) if c is None else _fit_shape(c, shape) for c in col]
        out.append(np.reshape(np.stack(col), batch + tuple(shape)))
    return out


def _fit_shape(c, shape):
    if type(c) is not TracedArray and type(c) is not np.ndarray:
        c = np.asarray(c)
    if c.shape != tuple(shape):
        c = unbroadcast(c, tuple(shape))
    return c


class _Once:
    """Compute-once cache for rules that produce every input's cotangent at once.

    ``backward`` asks a node's rule input by input, with the same cotangent
    object each time; the first request computes all cotangents and later
    ones (same ``key`` objects, compared by identity) reuse them. The cache
    holds weak references only and empties itself when the first key dies.
    """

    __slots__ = ("refs", "value", "__weakref__")

    def __init__(self):
        self.refs = None
        self.value = None

    def get(self, key, compute):
        refs = self.refs
        if refs is not None and len(refs) == len(key) and all(
                (r() if r is not None else None) is x for r, x in zip(refs, key)):
            return self.value
        value = compute()
        me = weakref.ref(self)

        def drop(ref, me=me):
            s = me()
            if s is not None and s.refs is not None and ref in s.refs:
                s.refs = s.value = None
        first = next((i for i, x in enumerate(key) if x is not None), None)
        if first is None:
            self.refs = None
        else:
            self.refs = tuple(None if x is None else weakref.ref(x, drop if i == first else None)
                              for i, x in enumerate(key))
        self.value = value
        return value


def _key(*parts):
    out = []
    for p in parts:
        if type(p) is tuple:
            out.extend(p)
        else:
            out.append(p)
    return tuple(out)


def _traced_var(x, tape):
    return x._tg.get(tape, -1) if type(x) is TracedArray else -1


def _nonzero_constant(c):
    return c is not None and np.any(np.asarray(_plain(c)) != 0)


def _transpose_error(who, rule):
    return errors.UnsupportedOperation(
        f"{who}: forward mode uses the transpose of its {rule} rule, but the rule's "
        f"result does not depend on its (co)tangent through traceable NumPy calls (it "
        f"converted it with np.asarray, float(), or a non-NumPy library?). Write the rule "
        f"with NumPy functions, or also define the other rule.")


def _pull_linear(who, rule, linear, in_specs, cts, nb):
    """Transpose of a linear map by one reverse walk.

    ``linear(xs)`` takes one array per ``in_specs`` entry ((shape, dtype), or
    ``None`` for an absent input, passed as ``None``) and returns a list of
    outputs. Returns the cotangents of the inputs for output cotangents
    ``cts`` (``None`` = zero; ``nb`` leading batch axes)."""
    tape = Tape()
    with tape:
        xs = []
        for spec in in_specs:
            if spec is None:
                xs.append(None)
                continue
            shape, dtype = spec
            xs.append(wrap(_zeros(shape, dtype), {tape: tape.new_var()}))
        ys = linear(xs)
    seeds = {}
    suspects = []
    for k, (y, c) in enumerate(zip(ys, cts)):
        if c is None or y is None:
            continue
        v = _traced_var(y, tape)
        if v < 0:
            # A result that does not depend on its (co)tangent: a true zero, or
            # a rule that dropped the trace (np.asarray). At 0 both look alike.
            if _nonzero_constant(y):
                raise _transpose_error(who, rule)
            suspects.append(k)
            continue
        if np.shape(c)[nb:] != np.shape(y):
            # the transpose of the unbroadcast the walker applies to this result
            c = unbroadcast(c, np.shape(y), nb)
        seeds[v] = c if v not in seeds else seeds[v] + c
    if suspects:
        probe = linear([None if spec is None else np.ones(*spec) for spec in in_specs])
        if any(_nonzero_constant(probe[k]) for k in suspects):
            raise _transpose_error(who, rule)
    if not seeds:
        return [None] * len(in_specs)
    res = backward(tape, seeds)
    return [None if x is None else res.get(x._tg[tape]) for x in xs]


def _specs(xs):
    return [_shape_dtype(x) for x in xs]


def _float_spec(x):
    shape, dtype = _shape_dtype(x)
    return (shape, dtype) if np.dtype(dtype).kind in "fc" else None


# --- argument handling -------------------------------------------------------------------
def _resolve_kwargs(fun, sig, args, kwargs):
    if sig is None:
        raise TypeError(f"{getattr(fun, '__name__', fun)} with a custom rule was called with "
                        f"keyword arguments, but its signature cannot be inspected; pass "
                        f"them positionally.")
    ba = sig.bind(*args, **kwargs)
    ba.apply_defaults()
    if ba.kwargs:
        raise TypeError("keyword-only arguments are not supported by functions with a custom "
                        "rule; make them positional (or close over them).")
    return ba.args


def _signature(fun):
    try:
        return inspect.signature(fun)
    except (TypeError, ValueError):
        return None


class _Call:
    """What one call of a decorated function passes to its rules (the
    primitive's only parameter): how to rebuild the arguments from the
    primitive's inputs, the non-differentiable arguments and the residuals."""

    __slots__ = ("in_tree", "counts", "nondiff", "nargs", "out_tree", "res", "once",
                 "__weakref__")

    def __init__(self, in_tree, counts, nondiff, nargs):
        self.in_tree = in_tree
        self.counts = counts
        self.nondiff = nondiff  # ((position, value), ...)
        self.nargs = nargs
        self.out_tree = None
        self.res = None
        self.once = _Once()

    def dargs(self, leaves):
        """The differentiable arguments (a tuple) rebuilt from leaves."""
        return tree_unflatten(self.in_tree, list(leaves))

    def full(self, leaves):
        d = iter(self.dargs(leaves))
        nd = dict(self.nondiff)
        return tuple(nd[i] if i in nd else next(d) for i in range(self.nargs))

    def nd_values(self):
        return tuple(v for _, v in self.nondiff)

    def out(self, leaves):
        return tree_unflatten(self.out_tree, list(leaves))

    def per_arg_leaves(self, cts, who):
        """Flatten a tuple of per-argument cotangents (``None`` = zero) to leaves."""
        if not isinstance(cts, (tuple, list)) or len(cts) != len(self.counts):
            raise errors.BadOutput(
                f"{who} must return a tuple with one cotangent per differentiable positional "
                f"argument ({len(self.counts)}), got {type(cts).__name__}"
                + (f" of length {len(cts)}" if isinstance(cts, (tuple, list)) else ""))
        out = []
        for c, n in zip(cts, self.counts):
            if c is None:
                out.extend([None] * n)
                continue
            leaves = tree_flatten(c)[0]
            if len(leaves) != n:
                raise errors.BadOutput(
                    f"{who} returned a cotangent with {len(leaves)} leaves for an argument "
                    f"with {n}; it must have the argument's structure.")
            out.extend(leaves)
        return out


class _Decorated:
    """Shared machinery of :class:`custom_vjp` and :class:`custom_jvp`."""

    kind = ""

    def __init__(self, fun, nondiff_argnums=()):
        functools.update_wrapper(self, fun)
        self.fun = fun
        nums = (nondiff_argnums,) if isinstance(nondiff_argnums, int) else nondiff_argnums
        self.nondiff_argnums = tuple(sorted(int(i) for i in nums))
        self._sig = _signature(fun)
        self._prims = {}

    def __repr__(self):
        return f"<{self.kind} {getattr(self.fun, '__qualname__', self.fun)}>"

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        return functools.partial(self, obj)

    def _split(self, args, kwargs):
        if kwargs:
            args = _resolve_kwargs(self.fun, self._sig, args, kwargs)
        nd = self.nondiff_argnums
        if nd:
            n = len(args)
            pos = [i % n if i < 0 else i for i in nd]
            if any(not 0 <= i < n for i in pos):
                raise TypeError(f"nondiff_argnums={nd} out of range for {n} arguments")
            nondiff = []
            for i in pos:
                v = args[i]
                if type(v) is TracedArray:
                    if any(lv.active and not lv.captures_all for lv in v._tg):
                        raise errors.UnsupportedOperation(
                            f"argument {i} of {self.__name__} is in nondiff_argnums but is "
                            f"being differentiated; pass it as a regular argument (and return "
                            f"a zero cotangent for it), or wrap it in tracegrad.stop_gradient.")
                    v = concrete(v, "nondiff argument")
                nondiff.append((i, v))
            dargs = tuple(a for i, a in enumerate(args) if i not in pos)
        else:
            nondiff = ()
            dargs = tuple(args)
        leaves, in_tree = tree_flatten(dargs)
        counts = tuple(len(tree_flatten(a)[0]) for a in dargs)
        return args, leaves, _Call(in_tree, counts, tuple(nondiff), len(args))

    def _prim(self, nout):
        prim = self._prims.get(nout)
        if prim is None:
            prim = self._make_prim(nout)
            self._prims[nout] = prim
        return prim

    def _impl(self, *leaves, call):
        # the primal function on plain values (what a capturing level replays)
        out = self.fun(*call.full(leaves))
        ol = tree_flatten(out)[0]
        return ol[0] if len(ol) == 1 else tuple(ol)

    def _finish(self, call, leaves, out, lvls):
        out_leaves, call.out_tree = tree_flatten(out)
        outs = [_plain(o) for o in out_leaves]
        res = _emit(self._prim(len(outs)), leaves, outs, {"call": call}, lvls)
        return call.out(res)


class custom_vjp(_Decorated):
    """Give a function a custom vector-Jacobian product (JAX's ``custom_vjp``).

    ::

        @tracegrad.custom_vjp
        def f(x, y):
            return np.sin(x) * y

        def f_fwd(x, y):                  # same signature as f
            return f(x, y), (np.cos(x), np.sin(x), y)      # (output, residuals)

        def f_bwd(res, g):                # one cotangent per positional argument
            cos_x, sin_x, y = res
            return (cos_x * g * y, sin_x * g)

        f.defvjp(f_fwd, f_bwd)

    Without any transform ``f`` is just called. Under ``grad``/``vjp`` the
    output and residuals come from ``fwd`` and the cotangents from ``bwd``;
    under ``jvp``/``jacfwd`` the transpose of ``bwd`` gives the tangent (see the
    module docstring), so ``bwd`` must be written with NumPy calls on ``g``.
    Residuals may be any pytree (arrays, numbers, ``None``, tuples, dicts).
    Cotangents may be ``None`` for zero, and have the argument's pytree
    structure.

    Parameters
    ----------
    fun : callable
        The primal function. Its differentiable arguments may be arrays,
        numbers or pytrees of them; keyword arguments are bound to positions.
    nondiff_argnums : tuple of int
        Arguments that are not differentiated (Python callables, flags,
        integers, shapes). They are passed first to ``bwd``:
        ``bwd(*nondiff_args, res, g)``, and ``bwd`` returns cotangents only for
        the other arguments.

    Examples
    --------
    >>> import numpy as np, tracegrad as tg
    >>> @tg.custom_vjp
    ... def clip_gradient(x):
    ...     return x
    >>> clip_gradient.defvjp(lambda x: (x, None), lambda res, g: (np.clip(g, -1, 1),))
    >>> tg.grad(lambda x: 3 * clip_gradient(x))(2.0)
    array(1.)
    """

    kind = "custom_vjp"

    def __init__(self, fun, nondiff_argnums=()):
        super().__init__(fun, nondiff_argnums)
        self.fwd = None
        self.bwd = None

    def defvjp(self, fwd, bwd):
        """Set the rule: ``fwd(*args) -> (out, residuals)`` and
        ``bwd(*nondiff_args, residuals, g) -> tuple of cotangents``."""
        self.fwd = fwd
        self.bwd = bwd

    def __call__(self, *args, **kwargs):
        args, leaves, call = self._split(args, kwargs)
        lvls = _levels(leaves)
        if lvls is None:
            return self.fun(*args)
        if self.bwd is None:
            raise errors.UnsupportedOperation(
                f"no VJP rule defined for custom_vjp function {self.__name__}; call "
                f"{self.__name__}.defvjp(fwd, bwd) first.")
        if all(lv.captures_all for lv in lvls):
            # only captured (jit), not differentiated: no residuals needed
            out = self.fun(*call.full([_plain(a) for a in leaves]))
            _closure_check(tree_flatten(out)[0], self.__name__)
            return self._finish(call, leaves, out, lvls)
        if len(lvls) == 1:
            r = self.fwd(*call.full([_plain(a) for a in leaves]))
            self._check_pair(r)
            _closure_check(tree_flatten(r[0])[0], f"fwd of {self.__name__}")
        else:
            # Nested transforms: the residuals must carry the outer levels'
            # derivatives, so fwd runs on traced values with only the
            # innermost level (and anything inside it) hidden.
            with hidden(lvls[-1]):
                r = self.fwd(*args)
            self._check_pair(r)
        out, call.res = r
        return self._finish(call, leaves, out, lvls)

    def _check_pair(self, r):
        if not (isinstance(r, (tuple, list)) and len(r) == 2):
            raise errors.BadOutput(f"fwd of custom_vjp function {self.__name__} must return a "
                                   f"pair (output, residuals)")

    def _make_prim(self, nout):
        return Primitive(f"custom_vjp({self.__qualname__})", self._impl,
                         vjp=Variadic(self._vjp_rule), jvp=self._jvp_rule, nout=nout,
                         save_args=False, save_ans=False)

    # reverse: call bwd (one cotangent at a time when batched)
    def _vjp_rule(self, i, g, ans, /, *leaves, call):
        return call.once.get(_key(g), lambda: self._bwd_all(g, ans, leaves, call))[i]

    def _bwd_leaves(self, call, g):
        gs = list(g) if type(g) is tuple else [g]
        cts = self.bwd(*call.nd_values(), call.res, call.out(gs))
        return call.per_arg_leaves(cts, f"bwd of {self.__name__}")

    def _bwd_all(self, g, ans, leaves, call):
        nb = _nb_of(g, ans)
        if nb == 0:
            return self._bwd_leaves(call, g)
        gs = list(g) if type(g) is tuple else [g]
        multi = type(g) is tuple
        return _batched(lambda row: self._bwd_leaves(call, tuple(row) if multi else row[0]),
                        gs, nb, _specs(leaves))

    # forward: the transpose of bwd, walked once for the whole batch
    def _jvp_rule(self, ts, ans, /, *leaves, call):
        nb = _tangent_nb(ts, leaves)
        outs = ans if type(ans) is tuple else (ans,)

        def linear(gs):
            return self._bwd_leaves(call, tuple(gs) if len(gs) > 1 else gs[0])
        touts = _pull_linear(f"custom_vjp function {self.__name__}", "bwd", linear,
                             [_shape_dtype(o) for o in outs], list(ts), nb)
        return tuple(touts) if type(ans) is tuple else touts[0]


def _tangent_nb(ts, args):
    for t, a in zip(ts, args):
        if t is not None:
            return np.ndim(t) - len(_shape_dtype(a)[0])
    return 0


class custom_jvp(_Decorated):
    """Give a function a custom Jacobian-vector product (JAX's ``custom_jvp``).

    ::

        @tracegrad.custom_jvp
        def log1pexp(x):
            return np.log1p(np.exp(x))

        @log1pexp.defjvp
        def log1pexp_jvp(primals, tangents):
            (x,), (t,) = primals, tangents
            return log1pexp(x), t / (1 + np.exp(-x))

    The rule receives the differentiable arguments and their tangents (zeros
    for arguments without one) as tuples and returns ``(out, tangent_out)``;
    ``tangent_out`` must be linear in the tangents and written with NumPy
    calls, because reverse mode (``grad``, ``jacrev``) uses its transpose.
    With ``nondiff_argnums`` the rule is ``rule(*nondiff_args, primals,
    tangents)``. The primal output always comes from ``fun``.

    Examples
    --------
    >>> import numpy as np, tracegrad as tg
    >>> @tg.custom_jvp
    ... def f(x):
    ...     return np.sin(x)
    >>> _ = f.defjvp(lambda p, t: (f(p[0]), 2.0 * t[0]))    # a deliberately wrong rule
    >>> tg.grad(f)(0.3), tg.jvp(f, (0.3,), (1.0,))[1]
    (array(2.), array(2.))
    """

    kind = "custom_jvp"

    def __init__(self, fun, nondiff_argnums=()):
        super().__init__(fun, nondiff_argnums)
        self.jvp = None

    def defjvp(self, jvp):
        """Set ``jvp(primals, tangents) -> (out, tangent_out)``; usable as a decorator."""
        self.jvp = jvp
        return jvp

    def defjvps(self, *jvps):
        """One rule per differentiable argument, ``jvp_i(t_i, ans, *primals) ->
        tangent contribution`` (``None`` = zero derivative); contributions are summed."""
        def rule(*a):
            primals, tangents = a[-2], a[-1]
            ans = self.fun(*a[:-2], *primals) if not self.nondiff_argnums else \
                self.fun(*self._merge(a[:-2], primals))
            out = None
            for f, t in zip(jvps, tangents):
                if f is None:
                    continue
                c = f(t, ans, *primals)
                out = c if out is None else out + c
            return ans, out
        self.jvp = rule

    def _merge(self, nd_values, primals):
        nd = dict(zip(self.nondiff_argnums, nd_values))
        p = iter(primals)
        return tuple(nd[i] if i in nd else next(p) for i in range(len(nd) + len(primals)))

    def __call__(self, *args, **kwargs):
        args, leaves, call = self._split(args, kwargs)
        lvls = _levels(leaves)
        if lvls is None:
            return self.fun(*args)
        if self.jvp is None:
            raise errors.UnsupportedOperation(
                f"no JVP rule defined for custom_jvp function {self.__name__}; call "
                f"{self.__name__}.defjvp(rule) first.")
        out = self.fun(*call.full([_plain(a) for a in leaves]))
        _closure_check(tree_flatten(out)[0], self.__name__)
        return self._finish(call, leaves, out, lvls)

    def _make_prim(self, nout):
        return Primitive(f"custom_jvp({self.__qualname__})", self._impl,
                         vjp=Variadic(self._vjp_rule), jvp=self._jvp_rule, nout=nout,
                         save_args=True, save_ans=False)

    def _rule_tangent_leaves(self, call, leaves, ts):
        primals = call.dargs(leaves)
        tangents = call.dargs(ts)
        r = self.jvp(*call.nd_values(), primals, tangents)
        if not (isinstance(r, (tuple, list)) and len(r) == 2):
            raise errors.BadOutput(f"the JVP rule of {self.__name__} must return a pair "
                                   f"(out, tangent_out)")
        return tree_flatten(r[1])[0]

    def _filled(self, leaves, ts):
        return [t if t is not None else _zeros(*_shape_dtype(a)) for a, t in zip(leaves, ts)]

    # forward: call the rule (one tangent at a time when batched)
    def _jvp_rule(self, ts, ans, /, *leaves, call):
        nb = _tangent_nb(ts, leaves)
        outs = ans if type(ans) is tuple else (ans,)
        if nb == 0:
            tl = self._rule_tangent_leaves(call, leaves, self._filled(leaves, ts))
        else:
            tl = _batched(lambda row: self._rule_tangent_leaves(call, leaves,
                                                                 self._filled(leaves, row)),
                          list(ts), nb, [_shape_dtype(o) for o in outs])
        tl = self._check_tangents(tl, outs)
        return tuple(tl) if type(ans) is tuple else tl[0]

    def _check_tangents(self, tl, outs):
        if len(tl) != len(outs):
            raise errors.BadOutput(
                f"the JVP rule of {self.__name__} returned {len(tl)} tangent leaves for "
                f"{len(outs)} outputs; tangent_out must have the output's structure.")
        return tl

    # reverse: the transpose of the rule, walked once for the whole batch
    def _vjp_rule(self, i, g, ans, /, *leaves, call):
        return call.once.get(_key(g), lambda: self._transposed(g, ans, leaves, call))[i]

    def _transposed(self, g, ans, leaves, call):
        nb = _nb_of(g, ans)
        outs = ans if type(ans) is tuple else (ans,)
        gs = list(g) if type(g) is tuple else [g]

        def linear(ts):
            ts = self._filled(leaves, ts)
            return self._check_tangents(self._rule_tangent_leaves(call, leaves, ts), outs)
        return _pull_linear(f"custom_jvp function {self.__name__}", "JVP", linear,
                            [_float_spec(a) for a in leaves], gs, nb)


# --- rules for functions you do not own (autograd's defvjp / defjvp) ------------------------
#: function (and its differentiable wrapper) -> _Rules
_RULES = {}


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    if type(a) is tuple:
        return tuple(_add(x, y) for x, y in zip(a, b))
    return a + b


def _as_list(x, multi):
    return list(x) if multi else [x]


class _Rules:
    """The VJP/JVP makers attached to one function, and the primitive(s) that
    record its calls."""

    def __init__(self, func):
        self.func = func
        self.name = _qualname(func)
        self.vjps = {}
        self.jvps = {}
        self._prims = {}
        self.installed = []      # (namespace, attribute, previous value)
        self.once = _Once()
        if isinstance(func, np.ufunc):
            self.kind = "ufunc"
        elif func in FUNCTION_HANDLERS or hasattr(func, "_implementation"):
            self.kind = "numpy"
        else:
            self.kind = "python"
        self._positions(func)
        self.wrapper = None

    def _positions(self, func):
        self.pos_names = []
        self.defaults = {}
        sig = None if self.kind == "ufunc" else _signature(func)
        if sig is None:
            return
        for p in sig.parameters.values():
            if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                break
            self.pos_names.append(p.name)
            if p.default is not p.empty:
                self.defaults[p.name] = p.default

    # --- calls ---------------------------------------------------------------------------
    def _move(self, args, kwargs):
        """Bind keyword arguments that name a position with a rule to that position."""
        rule_pos = set(self.vjps) | set(self.jvps)
        top = max(rule_pos, default=-1)
        names = self.pos_names[len(args):top + 1]
        if not any(n in kwargs for n in names):
            return args, kwargs
        args = list(args)
        kwargs = dict(kwargs)
        for n in names:
            if n in kwargs:
                args.append(kwargs.pop(n))
            elif n in self.defaults:
                args.append(self.defaults[n])
            else:
                raise TypeError(f"{self.name}() missing required argument {n!r}")
        return tuple(args), kwargs

    def __call__(self, *args, **kwargs):
        if kwargs and self.pos_names:
            args, kwargs = self._move(args, kwargs)
        lvls = _levels(args)
        if kwargs:
            for k, v in kwargs.items():
                if type(v) is TracedArray and any(lv.active for lv in v._tg):
                    raise errors.UnsupportedOperation(
                        f"{self.name}: keyword argument {k!r} is traced but has no derivative "
                        f"rule; pass it positionally to an argument with a rule (see "
                        f"tracegrad.defvjp's argnums) or through tracegrad.stop_gradient.")
        if lvls is None:
            if _nested_traced(args) or _nested_traced(kwargs.values()):
                raise errors.UnsupportedOperation(
                    f"{self.name} received a traced array inside a list, tuple or dict; its "
                    f"derivative rules cover top-level positional arguments only.")
            return self.func(*args, **kwargs)
        for i, a in enumerate(args):
            if i not in self.vjps and i not in self.jvps and type(a) is TracedArray and any(
                    lv.active and not lv.captures_all for lv in a._tg):
                raise errors.UnsupportedOperation(
                    f"{self.name}: argument {i} is traced but has no derivative rule; add one "
                    f"with tracegrad.defvjp(..., argnums=...), or pass None as its rule if it "
                    f"is not differentiable, or wrap it in tracegrad.stop_gradient.")
        out = self.func(*[_plain(a) for a in args], **kwargs)
        multi = type(out) is tuple
        outs = list(out) if multi else [out]
        _closure_check(outs, self.name)
        res = _emit(self._prim(len(outs), multi), args, [_plain(o) for o in outs], kwargs, lvls)
        return tuple(res) if multi else res[0]

    def _prim(self, nout, multi):
        prim = self._prims.get((nout, multi))
        if prim is None:
            prim = self._prims[(nout, multi)] = Primitive(
                self.name, self.func, vjp=Variadic(self._vjp_rule), jvp=self._jvp_rule,
                nout=nout)
        return prim

    # --- rules ---------------------------------------------------------------------------
    def _vjp_rule(self, i, g, ans, /, *args, **kw):
        if i in self.vjps:
            maker = self.vjps[i]
            if maker is None:
                return None
            vjp = maker(ans, *args, **kw)
            nb = _nb_of(g, ans)
            if nb == 0:
                return vjp(g)
            multi = type(g) is tuple
            gs = list(g) if multi else [g]
            return _batched(lambda row: [vjp(tuple(row) if multi else row[0])], gs, nb,
                            [_shape_dtype(args[i])])[0]
        if i in self.jvps:
            return self.once.get(_key(g, ans), lambda: self._transposed(g, ans, args, kw))[i]
        return None

    def _transposed(self, g, ans, args, kw):
        multi = type(ans) is tuple
        idx = [j for j, m in self.jvps.items() if m is not None and j < len(args)]
        specs = [_float_spec(a) if j in idx else None for j, a in enumerate(args)]
        nb = _nb_of(g, ans)

        def linear(ts):
            out = None
            for j in idx:
                if ts[j] is not None:
                    out = _add(out, self.jvps[j](ts[j], ans, *args, **kw))
            return _as_list(out, multi) if out is not None else [None] * (len(ans) if multi
                                                                           else 1)
        return _pull_linear(self.name, "JVP", linear, specs, _as_list(g, multi), nb)

    def _jvp_rule(self, ts, ans, /, *args, **kw):
        multi = type(ans) is tuple
        outs = list(ans) if multi else [ans]
        nb = _tangent_nb(ts, args)
        out = None
        via_vjp = []
        for j, t in enumerate(ts):
            if t is None:
                continue
            if j in self.jvps:
                maker = self.jvps[j]
                if maker is None:
                    continue
                if nb == 0:
                    c = maker(t, ans, *args, **kw)
                else:
                    c = _batched(lambda row, m=maker: _as_list(m(row[0], ans, *args, **kw), multi),
                                 [t], nb, [_shape_dtype(o) for o in outs])
                    c = tuple(c) if multi else c[0]
                out = _add(out, c)
            elif self.vjps.get(j) is not None:
                via_vjp.append(j)
        if via_vjp:
            def linear(gs):
                g = tuple(gs) if multi else gs[0]
                return [self.vjps[j](ans, *args, **kw)(g) for j in via_vjp]
            c = _pull_linear(self.name, "VJP", linear, [_shape_dtype(o) for o in outs],
                             [ts[j] for j in via_vjp], nb)
            out = _add(out, tuple(c) if multi else c[0])
        return out

    # --- installation ----------------------------------------------------------------------
    def install_dispatch(self):
        if self.kind == "ufunc":
            if not any(ns is UFUNC_PRIMS for ns, _, _ in self.installed):
                self.installed.append((UFUNC_PRIMS, self.func, UFUNC_PRIMS.get(self.func)))
                UFUNC_PRIMS[self.func] = self._prim(self.func.nout, self.func.nout > 1)
        elif self.kind == "numpy":
            if not any(ns is FUNCTION_HANDLERS for ns, _, _ in self.installed):
                self.installed.append((FUNCTION_HANDLERS, self.func,
                                       FUNCTION_HANDLERS.get(self.func)))
                FUNCTION_HANDLERS[self.func] = self

    def install_modules(self):
        """Point every loaded module attribute that is ``func`` at the wrapper."""
        func, wrapper = self.func, self.wrapper
        for mod in list(sys.modules.values()):
            d = getattr(mod, "__dict__", None)
            if not isinstance(d, dict):
                continue
            for k, v in list(d.items()):
                if v is func:
                    self.installed.append((mod, k, func))
                    setattr(mod, k, wrapper)

    def uninstall(self):
        for ns, key, prev in reversed(self.installed):
            if isinstance(ns, dict):
                if prev is None:
                    ns.pop(key, None)
                else:
                    ns[key] = prev
            elif getattr(ns, key, None) is self.wrapper:
                setattr(ns, key, prev)
        self.installed = []


def _nested_traced(values):
    for v in values:
        if type(v) in (list, tuple, dict):
            for leaf in tree_flatten(v)[0]:
                if type(leaf) is TracedArray and any(lv.active for lv in leaf._tg):
                    return True
    return False


def _qualname(func):
    mod = getattr(func, "__module__", None)
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    return f"{mod}.{name}" if mod else name


def _rules_for(func):
    rules = _RULES.get(func)
    if rules is None:
        rules = _Rules(func)
        _RULES[func] = rules
        if rules.kind == "python":
            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                return rules(*args, **kwargs)
            wrapper.__tracegrad_rules__ = rules
            rules.wrapper = wrapper
            _RULES[wrapper] = rules
        else:
            rules.wrapper = func
    return rules


def _define(table, func, makers, argnums, install):
    rules = _rules_for(func)
    if argnums is None:
        argnums = tuple(range(len(makers)))
    elif isinstance(argnums, int):
        argnums = (argnums,)
    if len(argnums) != len(makers):
        raise ValueError(f"{len(makers)} rules for argnums={tuple(argnums)}: give one rule per "
                         f"argument number")
    for a, m in zip(argnums, makers):
        if m is not None and not callable(m):
            raise TypeError(f"the rule for argument {a} is not callable: {m!r}")
        getattr(rules, table)[int(a)] = m
    if rules.kind != "python":
        rules.install_dispatch()
    elif install:
        rules.install_modules()
    return rules.wrapper


def defvjp(func, *vjp_makers, argnums=None, install=False):
    """Attach VJP rules to a function you do not own; return the differentiable function.

    ``vjp_makers[k](ans, *args, **kwargs)`` returns a function ``g -> cotangent``
    of positional argument ``argnums[k]`` (default ``k``), autograd style; ``None``
    marks a non-differentiable argument. For a function with several outputs
    (a tuple), ``ans`` and ``g`` are tuples. Forward mode (``jvp``, ``jacfwd``,
    ``hessian``) uses the transpose of these rules, so write them with NumPy
    calls on ``g``. Keyword arguments naming a position with a rule (``b=`` in
    ``logsumexp(a, axis, b)``) are bound to that position; other keyword
    arguments are passed through to ``func`` and to the makers.

    What happens to ``func`` depends on what it is:

    * a NumPy ufunc or a NumPy function dispatched through
      ``__array_function__``: the rule is entered in tracegrad's dispatch
      tables, so ``func`` itself, called unchanged anywhere, now
      differentiates (replacing a built-in rule if there was one). ``func``
      is returned.
    * any other Python function (e.g. ``scipy.special.logsumexp``): NumPy
      cannot dispatch it, so a wrapper is returned that calls ``func`` itself
      on plain inputs and records one differentiable operation on traced ones.
      Call the wrapper (``logsumexp = tracegrad.defvjp(sp.logsumexp, ...)``).
      With ``install=True`` every already-imported module attribute bound to
      ``func`` (``scipy.special.logsumexp``, and names other modules imported
      with ``from ... import``) is rebound to the wrapper, so unchanged code
      that looks the name up at call time differentiates too. That patches
      third-party modules process-wide (plain calls still reach ``func``
      unchanged); names bound later from an unpatched module, and references
      held inside closures or default arguments, are not affected. Undo with
      :func:`remove_rules`.

    Calling ``defvjp`` again for the same function (or its wrapper) adds or
    replaces rules for the named arguments; :func:`defjvp` rules may be added
    to the same function.

    Examples
    --------
    >>> import numpy as np, tracegrad as tg
    >>> def cube(x):                          # imagine it is compiled code
    ...     return np.asarray(x) ** 3
    >>> cube = tg.defvjp(cube, lambda ans, x: lambda g: g * 3 * x ** 2)
    >>> tg.grad(cube)(2.0), tg.jvp(cube, (2.0,), (1.0,))[1], tg.hessian(cube)(2.0)
    (array(12.), array(12.), array(12.))
    """
    return _define("vjps", _unwrap(func), vjp_makers, argnums, install)


def defjvp(func, *jvp_makers, argnums=None, install=False):
    """Attach JVP rules to a function you do not own; return the differentiable function.

    ``jvp_makers[k](t, ans, *args, **kwargs)`` returns the output tangent
    contributed by the tangent ``t`` of positional argument ``argnums[k]``
    (autograd's ``defjvp``); contributions of several arguments are summed.
    Reverse mode uses the transpose of these rules (they must be linear in
    ``t`` and written with NumPy calls). Everything else is as in :func:`defvjp`,
    and both kinds of rule may be given for one function.

    Examples
    --------
    >>> import numpy as np, tracegrad as tg
    >>> def cube(x):
    ...     return np.asarray(x) ** 3
    >>> cube = tg.defjvp(cube, lambda t, ans, x: t * 3 * x ** 2)
    >>> tg.grad(cube)(2.0)
    array(12.)
    """
    return _define("jvps", _unwrap(func), jvp_makers, argnums, install)


def _unwrap(func):
    rules = getattr(func, "__tracegrad_rules__", None)
    return rules.func if rules is not None else func


def remove_rules(func):
    """Undo :func:`defvjp` / :func:`defjvp` for ``func`` (or its wrapper): restore
    the dispatch tables and any module attributes ``install=True`` rebound."""
    rules = _RULES.get(func) or _RULES.get(_unwrap(func))
    if rules is None:
        return
    rules.uninstall()
    _RULES.pop(rules.func, None)
    if rules.wrapper is not rules.func:
        _RULES.pop(rules.wrapper, None)
