"""Products and contractions: matmul, dot, inner, outer, vdot, tensordot,
einsum (any subscripts, including repeated indices and ellipses).

``matmul`` and ``einsum`` are the primitives; dot/inner/outer/tensordot are
handlers that reduce to them, so their derivatives are those of matmul and
einsum. Cotangents with leading batch axes get their own einsum letters.
"""
import string

import numpy as np

from ..core.array import TracedArray, bind, concrete
from ..core.forward import _align
from ..core.primitive import (PRIMITIVES, UFUNC_PRIMS, Variadic, defhandler, defprim,
                              defufunc_method)


def _asarr(a):
    return a if isinstance(a, np.ndarray) else np.asarray(a)


def _sw(a):
    return np.swapaxes(a, -1, -2)


# --- matmul ----------------------------------------------------------------------
# 1-D operands are promoted to matrices (as NumPy does), the product is taken
# on the promoted forms, and the promoted axes are dropped again.
def _promote(a, b):
    return (a[None, :] if a.ndim == 1 else a), (b[:, None] if b.ndim == 1 else b)


def _demote(r, a, b):
    if b.ndim == 1:
        r = r[..., 0]
    if a.ndim == 1:
        r = r[..., 0, :] if b.ndim != 1 else r[..., 0]
    return r


def _g_promoted(g, a, b):
    if b.ndim == 1:
        g = g[..., None]
    if a.ndim == 1:
        g = g[..., None, :]
    return g


def _cj(x):
    # Complex operands pull back through their conjugate (the convention of
    # the elementwise rules: cotangent g * conj(d out / d in)).
    return np.conjugate(x) if np.iscomplexobj(x) else x


def _matmul_vjp_a(g, ans, a, b):
    a1, b1 = _promote(a, b)
    r = np.matmul(_g_promoted(g, a, b), _sw(_cj(b1)))
    return r[..., 0, :] if a.ndim == 1 else r


def _matmul_vjp_b(g, ans, a, b):
    a1, b1 = _promote(a, b)
    r = np.matmul(_sw(_cj(a1)), _g_promoted(g, a, b))
    return r[..., 0] if b.ndim == 1 else r


def _matmul_jvp_a(t, ans, a, b):
    a1, b1 = _promote(a, b)
    nb = t.ndim - a.ndim
    t1 = t[..., None, :] if a.ndim == 1 else t
    rank = max(a1.ndim, b1.ndim)
    return _demote(np.matmul(_align(t1, nb, rank), b1), a, b)


def _matmul_jvp_b(t, ans, a, b):
    a1, b1 = _promote(a, b)
    nb = t.ndim - b.ndim
    t1 = t[..., :, None] if b.ndim == 1 else t
    rank = max(a1.ndim, b1.ndim)
    return _demote(np.matmul(a1, _align(t1, nb, rank)), a, b)


def _matmul_impl(a, b):
    return np.matmul(a, b)


UFUNC_PRIMS[np.matmul] = defprim("matmul", _matmul_impl, vjp=(_matmul_vjp_a, _matmul_vjp_b),
                                 jvp=(_matmul_jvp_a, _matmul_jvp_b), save_ans=False)


@defhandler(np.dot)
def dot(a, b, out=None):
    if out is not None:
        from ..core.array import _inplace_error
        raise _inplace_error("np.dot(..., out=...)")
    a, b = _asarr(a), _asarr(b)
    if a.ndim == 0 or b.ndim == 0:
        return np.multiply(a, b)
    if b.ndim <= 2:
        return np.matmul(a, b)
    return tensordot(a, b, axes=([-1], [-2]))


@defhandler(np.vdot)
def vdot(a, b):
    a, b = _asarr(a), _asarr(b)
    return np.sum(np.conjugate(np.ravel(a)) * np.ravel(b))


@defhandler(np.inner)
def inner(a, b):
    a, b = _asarr(a), _asarr(b)
    if a.ndim == 0 or b.ndim == 0:
        return np.multiply(a, b)
    return tensordot(a, b, axes=([-1], [-1]))


@defhandler(np.outer)
def outer(a, b, out=None):
    a, b = np.ravel(a), np.ravel(b)
    return a[:, None] * b[None, :]


@defhandler(np.tensordot)
def tensordot(a, b, axes=2):
    a, b = _asarr(a), _asarr(b)
    if isinstance(axes, (int, np.integer)):
        axes_a = list(range(a.ndim - axes, a.ndim))
        axes_b = list(range(0, axes))
    else:
        axes_a, axes_b = axes
        axes_a = [axes_a] if isinstance(axes_a, (int, np.integer)) else list(axes_a)
        axes_b = [axes_b] if isinstance(axes_b, (int, np.integer)) else list(axes_b)
    axes_a = [x % a.ndim for x in axes_a]
    axes_b = [x % b.ndim for x in axes_b]
    if len(axes_a) != len(axes_b) or any(a.shape[i] != b.shape[j]
                                         for i, j in zip(axes_a, axes_b)):
        raise ValueError("shape-mismatch for sum")
    free_a = [i for i in range(a.ndim) if i not in axes_a]
    free_b = [j for j in range(b.ndim) if j not in axes_b]
    k = 1
    for i in axes_a:
        k *= a.shape[i]
    ma = 1
    for i in free_a:
        ma *= a.shape[i]
    nb_ = 1
    for j in free_b:
        nb_ *= b.shape[j]
    at = np.reshape(np.transpose(a, free_a + axes_a), (ma, k))
    bt = np.reshape(np.transpose(b, axes_b + free_b), (k, nb_))
    r = np.matmul(at, bt)
    return np.reshape(r, tuple(a.shape[i] for i in free_a) + tuple(b.shape[j] for j in free_b))


# --- einsum ------------------------------------------------------------------------
_LETTERS = string.ascii_letters


def _parse_einsum(subscripts, operands):
    """Explicit ``in1,in2->out`` form, with '...' kept."""
    subscripts = subscripts.replace(" ", "")
    if "->" in subscripts:
        ins, out = subscripts.split("->")
    else:
        ins = subscripts
        counts = {}
        for c in ins.replace(",", "").replace(".", ""):
            counts[c] = counts.get(c, 0) + 1
        out = ("..." if "..." in ins else "") + "".join(sorted(c for c, n in counts.items()
                                                               if n == 1))
    in_list = ins.split(",")
    if len(in_list) != len(operands):
        raise ValueError("more operands provided to einstein sum function than specified in "
                         "the subscripts string" if len(operands) > len(in_list) else
                         "fewer operands provided to einstein sum function than specified in "
                         "the subscripts string")
    return in_list, out


def _interleaved(args):
    ops = []
    subs = []
    args = list(args)
    out = None
    while len(args) >= 2:
        ops.append(args.pop(0))
        subs.append(args.pop(0))
    if args:
        out = args[0]

    def conv(s):
        return "".join("..." if x is Ellipsis else _LETTERS[x] for x in s)
    spec = ",".join(conv(s) for s in subs)
    if out is not None:
        spec += "->" + conv(out)
    return spec, ops


def _fresh(used, n):
    free = [c for c in _LETTERS if c not in used]
    return "".join(free[:n])


def _einsum_impl(*ops, ins, out, optimize):
    return np.einsum(",".join(ins) + "->" + out, *ops, optimize=optimize)


def _einsum(ins, out, ops, optimize=False):
    return bind(PRIMITIVES["einsum"], tuple(ops), {"ins": tuple(ins), "out": out,
                                                   "optimize": optimize})


def _einsum_vjp(i, g, ans, *ops, ins, out, optimize):
    used = set("".join(ins) + out)
    nb = g.ndim - ans.ndim
    bl = _fresh(used, nb)
    used |= set(bl)
    target = ins[i].replace("...", ".")  # '.' stands for all the ellipsis axes
    other_ins = [ins[j] for j in range(len(ins)) if j != i]
    other_ops = [ops[j] for j in range(len(ops)) if j != i]
    present = set("".join(other_ins) + out)
    uniq = list(dict.fromkeys(target))

    def sub(cs):
        return "".join(cs).replace(".", "...")
    # Each letter is produced once (a letter repeated inside operand i, 'ii',
    # is a diagonal: embedded with identities below), and only when the
    # output or another operand carries it (an einsum output letter must
    # appear in an input); letters summed away in the forward pass ('ii->',
    # 'ij->j') come back by broadcasting.
    keep = [c for c in uniq if c in present]
    # NumPy never sums ellipsis axes away: when operand i has none, produce
    # them and sum them here
    ell_sum = "." in present and "." not in target
    r = np.einsum(",".join([bl + out] + other_ins) + "->" + bl + ("..." if ell_sum else "")
                  + sub(keep), g, *[_cj(o) for o in other_ops])
    if ell_sum and r.ndim - nb - len(keep):
        r = np.sum(r, axis=tuple(range(nb, r.ndim - len(keep))))
    shape = np.shape(ops[i])
    ell = ()
    if "." in target:
        pre, post = target.split(".")
        ell = shape[len(pre):len(shape) - len(post)]
    if "." in keep:
        # the ellipsis axes of r are broadcast over every operand: sum them
        # down to operand i's own (broadcasting in the middle of the axes is
        # more than the walker's unbroadcast undoes)
        p = nb + keep.index(".")
        extra = r.ndim - nb - (len(keep) - 1) - len(ell)
        if extra > 0:
            r = np.sum(r, axis=tuple(range(p, p + extra)))
        axes = tuple(p + k for k, s in enumerate(ell) if s == 1 and r.shape[p + k] != 1)
        if axes:
            r = np.sum(r, axis=axes, keepdims=True)
    sizes = _letter_sizes(ins, ops)
    if len(keep) != len(uniq):
        kshape, fshape = [], []
        it = iter(r.shape[nb:])
        for c in uniq:
            if c == ".":
                if c in keep:
                    dims = [next(it) for _ in ell]
                    kshape += dims
                    fshape += dims
                else:
                    kshape += [1] * len(ell)
                    fshape += list(ell)
            elif c in keep:
                n = next(it)
                kshape.append(n)
                fshape.append(n)
            else:
                kshape.append(1)
                fshape.append(sizes[c])
        lead = tuple(r.shape[:nb])
        r = np.broadcast_to(np.reshape(r, lead + tuple(kshape)), lead + tuple(fshape))
    if len(uniq) != len(target):
        # rename repeated occurrences and tie them with identities
        fresh = iter(_fresh(used, len(target)))
        seen = set()
        renamed = []
        eyes = []
        for c in target:
            if c != "." and c in seen:
                f = next(fresh)
                renamed.append(f)
                eyes.append(c + f)
            else:
                renamed.append(c)
                seen.add(c)
        eye_ops = [np.eye(sizes[e[0]], dtype=r.dtype if r.dtype.kind in "fc" else float)
                   for e in eyes]
        r = np.einsum(",".join([bl + sub(uniq)] + eyes) + "->" + bl + sub(renamed), r, *eye_ops)
    return r


def _letter_sizes(ins, ops):
    sizes = {}
    for sub, op in zip(ins, ops):
        if "..." in sub:
            pre, post = sub.split("...")
            letters = list(pre) + [None] * (np.ndim(op) - len(pre) - len(post)) + list(post)
        else:
            letters = list(sub)
        for c, n in zip(letters, np.shape(op)):
            if c is not None:
                sizes[c] = n
    return sizes


def _einsum_jvp(ts, ans, *ops, ins, out, optimize):
    res = None
    for i, t in enumerate(ts):
        if t is None:
            continue
        nb = t.ndim - np.ndim(ops[i])
        bl = _fresh(set("".join(ins) + out), nb)
        new_ins = list(ins)
        new_ins[i] = bl + ins[i]
        new_ops = list(ops)
        new_ops[i] = t
        r = np.einsum(",".join(new_ins) + "->" + bl + out, *new_ops)
        res = r if res is None else res + r
    return res


defprim("einsum", _einsum_impl, vjp=Variadic(_einsum_vjp), jvp=_einsum_jvp, save_ans=False)


@defhandler(np.einsum)
def einsum(*operands, out=None, dtype=None, order="K", casting="safe", optimize=False):
    if out is not None:
        from ..core.array import _inplace_error
        raise _inplace_error("np.einsum(..., out=...)")
    if isinstance(operands[0], str):
        spec, ops = operands[0], list(operands[1:])
    else:
        spec, ops = _interleaved(operands)
    ops = [_asarr(o) for o in ops]
    if dtype is not None:
        ops = [o.astype(dtype) for o in ops]
    ins, out_sub = _parse_einsum(spec, ops)
    if optimize is not False and not isinstance(optimize, (bool, str)):
        optimize = "greedy"
    return _einsum(ins, out_sub, ops, optimize)


_ = TracedArray


# =====================================================================================
# np.linalg: solves, inverses, determinants, decompositions, norms (issue #3)
# =====================================================================================
# This section is appended to the module docstring (``__doc__ += _LINALG_DOC`` below),
# so ``help(tracegrad.rules.linalg)`` shows it.
_LINALG_DOC = """

np.linalg
---------
Primitives (each with a VJP and a JVP, written with NumPy calls so they
differentiate again): ``solve``, ``inv``, ``det``, ``slogdet``, ``cholesky``,
``eigh``, ``eigvalsh``, ``eig``, ``eigvals``, ``svd``, ``svdvals``, ``qr``,
``pinv`` and ``lstsq``. Everything else is a handler composing primitives:
``norm`` / ``vector_norm`` / ``matrix_norm`` (sums, sqrt, max, ``svdvals``),
``cond``, ``matrix_power`` and ``multi_dot`` (matmul), ``cross`` and ``kron``
(indexing and broadcasting), ``tensorinv`` / ``tensorsolve`` (reshape + inv /
solve), the ``np.linalg`` aliases of matmul, tensordot, outer, trace,
diagonal, vecdot and matrix_transpose; ``matrix_rank`` is non-differentiable.
Stacked (``...ij``) inputs work wherever NumPy accepts them (``lstsq`` is
2-D only in NumPy).

Conventions
~~~~~~~~~~~
* **Symmetric / Hermitian inputs.** ``eigh``, ``eigvalsh``, ``cholesky`` and
  ``svd(..., hermitian=True)`` read one triangle only. tracegrad treats them
  as functions on Hermitian matrices (as JAX, PyTorch and autograd do): the
  JVP uses ``(dA + dA^H)/2`` and the VJP returns a Hermitian cotangent. For
  an input that *is* a function producing Hermitian matrices the chain rule
  is exact; finite differences that perturb one triangle only will differ.
* **Repeated eigenvalues / singular values.** The eigenvector (singular
  vector) derivative has factors ``1/(λj - λi)`` (``1/(sj² - si²)``).
  Where two values are equal to working precision (``|λi - λj| <= n·eps·max|λ|``)
  that factor is set to 0, never inf or nan. This is exact when the loss does
  not depend on rotations of the vectors *within* the repeated eigenspace
  (e.g. it uses only eigenvalues, or only eigenvectors of simple
  eigenvalues). It is not exact in general: for a spectral function such as
  ``V @ diag(f(w)) @ V.T`` at exactly repeated ``w`` the true derivative
  contains ``f'(λ)`` (a divided difference) that cannot be recovered from the
  cotangents. Whenever the cotangent (VJP) or tangent (JVP) has a
  non-negligible component on such a pair, tracegrad emits a
  :class:`DegenerateDerivativeWarning`; no warning means the zeroed terms had
  nothing to multiply. ``eigvalsh``, ``eigvals`` and ``svdvals`` never need the
  factor (prefer them when only the values are used); note that an
  individual repeated eigenvalue is itself not differentiable: its derivative
  is reported as ``diag(V^H dA V)`` in NumPy's basis, which is exact for
  symmetric functions of the repeated values (their sum, a trace). For the SVD the
  off-diagonal factor is split as ``(J+K)/(2(sj-si)) + (J-K)/(2(sj+si))`` so
  functions such as the polar factor ``U @ Vh`` stay exact at repeated
  singular values (only the first part is zeroed).
* **Zero singular values.** Terms divided by ``s`` (the projections onto the
  complement for non-square inputs, and the complex phase term) are set to 0
  where ``s`` is 0 to working precision, with the same warning if they
  multiply something non-negligible.
* **Gauges.** Eigenvectors and singular vectors are defined up to a sign
  (real) or a phase (complex). For real inputs the sign is locally constant
  and the derivative is that of NumPy's output. ``eig`` follows LAPACK's
  normalisation (unit norm, largest-magnitude component real), so even
  complex eigenvectors of real matrices are differentiated exactly. For
  complex ``eigh`` / ``svd`` the phase convention is JAX's (``Im diag(V^H dV)
  = 0``); only phase-invariant functions of the vectors are meaningful.
  ``qr`` keeps LAPACK's real diagonal of ``R``. (LAPACK leaves a column whose
  pivot is exactly real with a zero subcolumn unreflected, so NumPy's complex
  ``qr`` jumps in sign at such inputs, e.g. real-valued complex matrices;
  tracegrad differentiates the branch that NumPy returned.)
* **Complete bases.** ``svd(full_matrices=True)`` and ``qr(mode='complete')``
  of non-square inputs return a basis of the orthogonal complement that is
  not unique. Its derivative is taken as the complement that does not rotate
  within itself (``Up^H dUp = 0``): exact for functions of the complement
  that are invariant under its rotations (projectors ``Up @ Up.T``, norms of
  projections), while NumPy's own basis may rotate arbitrarily.
* **Singular matrices.** ``det`` falls back to the adjugate (through the SVD)
  when the matrix is exactly singular, so its gradient stays finite. ``inv``,
  ``solve``, ``slogdet`` and ``qr`` (through ``R^{-1}``) raise NumPy's
  ``LinAlgError`` where their derivative does not exist. ``pinv`` and
  ``lstsq`` use the constant-rank derivative (Golub & Pereyra), valid
  wherever the numerical rank does not change.
* **Norms at zero.** Vector 2-norms, p-norms and the Frobenius norm take the
  subgradient 0 at the zero vector (like ``abs`` at 0), not nan.

>>> import numpy as np, tracegrad as tg
>>> A = np.array([[2.0, 1.0], [1.0, 3.0]])
>>> tg.grad(lambda A: np.linalg.slogdet(A)[1])(A)        # inv(A).T
array([[ 0.6, -0.2],
       [-0.2,  0.4]])
"""


from ..errors import DegenerateDerivativeWarning  # noqa: E402,F401  (raised below)


import operator  # noqa: E402
import warnings  # noqa: E402

from .. import errors  # noqa: E402
from ..core.primitive import unsupported  # noqa: E402
from .indexing import take_along  # noqa: E402

try:  # result types of np.linalg (NumPy >= 2)
    from numpy.linalg._linalg import (EigResult, EighResult, QRResult, SlogdetResult,  # noqa: E402
                                      SVDResult)
except ImportError:  # pragma: no cover
    EigResult = EighResult = QRResult = SlogdetResult = SVDResult = None

_la = np.linalg


def _val(x):
    """The plain value of a (possibly traced) array: for dtypes, shapes and
    warnings only. A decision that changes a result must be a traced NumPy
    call (recorded, so jit recomputes it each call) or go through bool()/int()
    (which jit guards); a plain one would be baked into a jitted plan."""
    return x._v if type(x) is TracedArray else x


def _is_plain_zero(x):
    return x is None or (type(x) is not TracedArray and not np.any(x))


def _H(x):
    x = np.swapaxes(x, -1, -2)
    return np.conjugate(x) if x.dtype.kind == "c" else x


def _herm(x):
    return (x + _H(x)) * 0.5


def _conjc(x):
    return np.conjugate(x) if x.dtype.kind == "c" else x


def _real(x):
    return np.real(x) if x.dtype.kind == "c" else x


def _diag(x):
    return np.diagonal(x, 0, -2, -1)


def _diag_embed(v):
    n = v.shape[-1]
    return v[..., None] * np.eye(n, dtype=_val(v).real.dtype)


def _eps(x):
    return np.finfo(_val(x).dtype).eps


def _tril_mask(n, k, dtype=float):
    return np.tril(np.ones((n, n), dtype), k)


def _wrap_result(cls, *vals):
    return cls(*vals) if cls is not None else tuple(vals)


def _no_out(out, what):
    if out is not None:
        from ..core.array import _inplace_error
        raise _inplace_error(f"{what}(..., out=...)")


def _warn_degenerate(what, mask, *parts):
    """Warn when any of ``parts`` is non-negligible where ``mask`` is set
    (``mask`` broadcasts against the parts' trailing axes). Only warns, so it
    reads plain values (no jit guard)."""
    mask = _val(mask)
    if not np.any(mask):
        return
    for p in parts:
        pv = np.abs(_val(p))
        if pv.size == 0:
            continue
        big = np.max(pv)
        if big == 0:
            continue
        m = np.broadcast_to(mask, pv.shape)
        if np.any(pv[m] > np.sqrt(np.finfo(pv.dtype).eps) * big):
            warnings.warn(
                f"{what}: repeated eigenvalues/singular values (or a zero singular value) met a "
                f"non-negligible (co)tangent; the ill-defined terms were set to 0, so this "
                f"derivative may be inaccurate. Use eigvalsh/eigvals/svdvals when only the values "
                f"are needed; see help(tracegrad.rules.linalg).",
                DegenerateDerivativeWarning, stacklevel=2)
            return


def _ties(w):
    """Boolean (..., n, n): off-diagonal pairs whose values are equal to working precision.

    Traced NumPy calls on ``w``: under jit(grad) the mask is recomputed each
    call, not the first call's ties baked into the plan."""
    n = w.shape[-1]
    d = np.abs(w[..., None, :] - w[..., :, None])
    scale = np.max(np.abs(w), axis=-1, keepdims=True)[..., None] if n else 0.0
    tie = d <= n * np.finfo(_val(w).dtype).eps * scale
    return tie & ~np.eye(n, dtype=bool)


def _inv_gaps(w, tie):
    """F[..., i, j] = 1 / (w[j] - w[i]) off the diagonal, 0 on it and at ties."""
    n = w.shape[-1]
    bad = tie | np.eye(n, dtype=bool)
    d = w[..., None, :] - w[..., :, None]
    one = np.ones((), _val(d).dtype)
    return np.where(bad, np.zeros((), _val(d).dtype), 1 / np.where(bad, one, d))


def _safe_recip(s):
    """(1/s where s is nonzero to working precision, else 0; mask of the zeros).
    The mask is traced, as in _ties."""
    dt = _val(s).dtype
    n = s.shape[-1]
    tol = max(n, 1) * np.finfo(dt).eps * (np.max(s, axis=-1, keepdims=True) if n else 0)
    small = s <= tol
    one = np.ones((), dt)
    return np.where(small, np.zeros((), dt), 1 / np.where(small, one, s)), small


# --- solve -------------------------------------------------------------------------------
# The primitive takes b as a stack of matrices (..., n, k); the handler promotes a
# 1-D b as NumPy does.
def _solve_impl(a, b):
    return _la.solve(a, b)


def _solve_vjp_a(g, ans, a, b):
    gb = _la.solve(_H(a), g)
    return -(gb @ _H(ans))


def _solve_vjp_b(g, ans, a, b):
    return _la.solve(_H(a), g)


def _solve_jvp(ts, ans, a, b):
    ta, tb = ts
    rhs = None
    if tb is not None:
        rhs = _align(tb, tb.ndim - b.ndim, ans.ndim)
    if ta is not None:
        t = -(_align(ta, ta.ndim - a.ndim, ans.ndim) @ ans)
        rhs = t if rhs is None else rhs + t
    return _la.solve(a, rhs)


defprim("linalg.solve", _solve_impl, vjp=(_solve_vjp_a, _solve_vjp_b), jvp=_solve_jvp,
        save_ans=True)


@defhandler(_la.solve)
def solve(a, b):
    a, b = _asarr(a), _asarr(b)
    if b.ndim == 1:
        return bind(PRIMITIVES["linalg.solve"], (a, b[:, None]), {})[..., 0]
    return bind(PRIMITIVES["linalg.solve"], (a, b), {})


# --- inv -----------------------------------------------------------------------------------
defprim("linalg.inv", _la.inv,
        vjp=(lambda g, ans, a: -(_H(ans) @ g @ _H(ans)),),
        jvp=(lambda t, ans, a: -(ans @ t @ ans),), save_args=False)


@defhandler(_la.inv)
def inv(a):
    return bind(PRIMITIVES["linalg.inv"], (_asarr(a),), {})


@defhandler(_la.tensorinv)
def tensorinv(a, ind=2):
    a = _asarr(a)
    if ind <= 0:
        raise ValueError("Invalid ind argument.")
    oldshape = a.shape
    prod = 1
    for s in oldshape[ind:]:
        prod *= s
    invshape = oldshape[ind:] + oldshape[:ind]
    return np.reshape(inv(np.reshape(a, (prod, -1))), invshape)


@defhandler(_la.tensorsolve)
def tensorsolve(a, b, axes=None):
    a, b = _asarr(a), _asarr(b)
    an = a.ndim
    if axes is not None:
        allaxes = list(range(an))
        for k in axes:
            allaxes.remove(k)
            allaxes.insert(an, k)
        a = np.transpose(a, allaxes)
    oldshape = a.shape[-(an - b.ndim):]
    prod = 1
    for k in oldshape:
        prod *= k
    if a.size != prod ** 2:
        raise _la.LinAlgError(
            "Input arrays must satisfy the requirement prod(a.shape[b.ndim:]) == "
            "prod(a.shape[:b.ndim])")
    res = solve(np.reshape(a, (prod, prod)), np.ravel(b))
    return np.reshape(res, oldshape)


# --- det, slogdet ------------------------------------------------------------------------
def _cofactor(a, det):
    """∂det/∂A = det · A^{-T}, finite for singular A (adjugate through the SVD)."""
    try:
        return det[..., None, None] * np.swapaxes(_la.inv(a), -1, -2)
    except _la.LinAlgError:
        pass
    u, s, vh = _la.svd(a)
    n = s.shape[-1]
    # prod_{j != i} s_j without dividing by s
    ones = np.ones(_val(s).shape[:-1] + (1,), _val(s).dtype)
    left = np.cumprod(np.concatenate([ones, s[..., :-1]], axis=-1), axis=-1)
    right = np.flip(np.cumprod(np.concatenate([ones, np.flip(s[..., 1:], axis=-1)], axis=-1),
                               axis=-1), axis=-1)
    others = left * right if n else s
    phase = _la.det(u) * _la.det(vh)
    adj = phase[..., None, None] * ((_H(vh) * others[..., None, :]) @ _H(u))
    return np.swapaxes(adj, -1, -2)


def _det_vjp(g, ans, a):
    c = _cofactor(a, ans)
    if c.dtype.kind == "c":
        c = np.conjugate(c)
    return g[..., None, None] * c


def _det_jvp(t, ans, a):
    c = _cofactor(a, ans)
    return np.sum(c * t, axis=(-2, -1))


defprim("linalg.det", _la.det, vjp=(_det_vjp,), jvp=(_det_jvp,))


@defhandler(_la.det)
def det(a):
    return bind(PRIMITIVES["linalg.det"], (_asarr(a),), {})


def _slogdet_impl(a):
    r = _la.slogdet(a)
    return r[0], r[1]


def _slogdet_vjp(g, ans, a):
    gsign, glog = g
    sign, _ = ans
    coef = glog
    if sign.dtype.kind == "c":
        coef = coef - 1j * np.imag(np.conjugate(gsign) * sign)
    return coef[..., None, None] * _H(_la.inv(a))


def _slogdet_jvp(t, ans, a):
    sign, _ = ans
    tr = np.sum(np.swapaxes(_la.inv(a), -1, -2) * t, axis=(-2, -1))
    if sign.dtype.kind == "c":
        return sign * (1j * np.imag(tr)), np.real(tr)
    return None, tr


defprim("linalg.slogdet", _slogdet_impl, vjp=(_slogdet_vjp,), jvp=(_slogdet_jvp,), nout=2)


@defhandler(_la.slogdet)
def slogdet(a):
    sign, logdet = bind(PRIMITIVES["linalg.slogdet"], (_asarr(a),), {})
    return _wrap_result(SlogdetResult, sign, logdet)


# --- cholesky ------------------------------------------------------------------------------
def _phi(x):
    """Lower triangle with the diagonal halved."""
    n = x.shape[-1]
    return x * (_tril_mask(n, 0) - 0.5 * np.eye(n))


def _cholesky_jvp(t, ans, a, upper):
    L = _H(ans) if upper else ans
    Linv = _la.inv(L)
    dL = L @ _phi(Linv @ _herm(t) @ _H(Linv))
    return _H(dL) if upper else dL


def _cholesky_vjp(g, ans, a, upper):
    L = _H(ans) if upper else ans
    Lbar = _H(g) if upper else g
    Linv = _la.inv(L)
    return _herm(_H(Linv) @ _phi(_H(L) @ Lbar) @ Linv)


defprim("linalg.cholesky", lambda a, upper: _la.cholesky(a, upper=upper),
        vjp=(_cholesky_vjp,), jvp=(_cholesky_jvp,), save_args=False)


@defhandler(_la.cholesky)
def cholesky(a, /, *, upper=False):
    return bind(PRIMITIVES["linalg.cholesky"], (_asarr(a),), {"upper": bool(upper)})


# --- eigh, eigvalsh ------------------------------------------------------------------------
def _eigh_impl(a, UPLO):
    w, v = _la.eigh(a, UPLO)
    return w, v


def _eigh_jvp(t, ans, a, UPLO):
    w, V = ans
    M = _H(V) @ _herm(t) @ V
    dw = _real(_diag(M))
    tie = _ties(w)
    _warn_degenerate("eigh (forward mode, eigenvectors)", tie, M)
    dV = V @ (_inv_gaps(w, tie) * M)
    return dw, dV


def _eigh_vjp(g, ans, a, UPLO):
    wbar, Vbar = g
    w, V = ans
    inner = _diag_embed(wbar)
    if not _is_plain_zero(Vbar):
        X = _H(V) @ Vbar
        tie = _ties(w)
        _warn_degenerate("eigh (reverse mode, eigenvectors)", tie, X)
        inner = inner + _inv_gaps(w, tie) * X
    return _herm(V @ inner @ _H(V))


defprim("linalg.eigh", _eigh_impl, vjp=(_eigh_vjp,), jvp=(_eigh_jvp,), nout=2,
        save_args=False)


@defhandler(_la.eigh)
def eigh(a, UPLO="L"):
    w, v = bind(PRIMITIVES["linalg.eigh"], (_asarr(a),), {"UPLO": UPLO})
    return _wrap_result(EighResult, w, v)


def _eigvalsh_vjp(g, ans, a, UPLO):
    V = _la.eigh(a, UPLO)[1]
    return _herm((V * g[..., None, :]) @ _H(V))


def _eigvalsh_jvp(t, ans, a, UPLO):
    V = _la.eigh(a, UPLO)[1]
    return _real(np.sum(_conjc(V) * (_herm(t) @ V), axis=-2))


defprim("linalg.eigvalsh", lambda a, UPLO: _la.eigvalsh(a, UPLO),
        vjp=(_eigvalsh_vjp,), jvp=(_eigvalsh_jvp,), save_ans=False)


@defhandler(_la.eigvalsh)
def eigvalsh(a, UPLO="L"):
    return bind(PRIMITIVES["linalg.eigvalsh"], (_asarr(a),), {"UPLO": UPLO})


# --- eig, eigvals --------------------------------------------------------------------------
# NumPy (LAPACK geev) normalises each eigenvector to unit norm with its
# largest-magnitude component real. The derivative keeps exactly that gauge:
# du = V (F ∘ V^{-1} dA V), then each column gets c·v (norm) + iθ·v (phase of
# the pivot component p) so that Re(v^H dv) = 0 and Im(dv_p / v_p) = 0.
def _eig_impl(a):
    w, v = _la.eig(a)
    return w, v


def _pivots(V):
    # traced argmax: under jit the pivot follows each call's eigenvectors
    n = V.shape[-1]
    p = np.argmax(np.abs(V), axis=-2)
    return (np.arange(n)[:, None] == p[..., None, :]).astype(_val(V).real.dtype)


def _eig_jvp(t, ans, a):
    w, V = ans
    M = _la.solve(V, t) @ V
    dw = _diag(M)
    tie = _ties(w)
    _warn_degenerate("eig (forward mode, eigenvectors)", tie, M)
    du = V @ (_inv_gaps(w, tie) * M)
    coef = -_real(np.sum(_conjc(V) * du, axis=-2))
    if V.dtype.kind == "c":
        onehot = _pivots(V)
        vp = np.sum(onehot * V, axis=-2)
        coef = coef - 1j * np.imag(np.sum(onehot * du, axis=-2) / vp)
    return dw, du + V * coef[..., None, :]


def _eig_vjp(g, ans, a):
    wbar, Vbar = g
    w, V = ans
    inner = _diag_embed(wbar)
    if not _is_plain_zero(Vbar):
        ab = np.sum(_conjc(Vbar) * V, axis=-2)
        Vb2 = Vbar - V * _real(ab)[..., None, :]
        if V.dtype.kind == "c":
            onehot = _pivots(V)
            vp = np.sum(onehot * V, axis=-2)
            Vb2 = Vb2 + onehot * (1j * np.imag(ab) / np.conjugate(vp))[..., None, :]
        X = _H(V) @ Vb2
        tie = _ties(w)
        _warn_degenerate("eig (reverse mode, eigenvectors)", tie, X)
        F = _inv_gaps(w, tie)
        inner = inner + (np.conjugate(F) if F.dtype.kind == "c" else F) * X
    return _la.solve(_H(V), inner @ _H(V))


defprim("linalg.eig", _eig_impl, vjp=(_eig_vjp,), jvp=(_eig_jvp,), nout=2, save_args=False)


@defhandler(_la.eig)
def eig(a):
    w, v = bind(PRIMITIVES["linalg.eig"], (_asarr(a),), {})
    return _wrap_result(EigResult, w, v)


def _eig_matching(a, w):
    """Eigenvectors of ``a`` ordered like the eigenvalues ``w`` (from eigvals)."""
    w2, V = _la.eig(a)
    # traced tests and a traced gather (bool() is a jit guard; take_along uses
    # the index computed at run time)
    if w.shape and not bool(np.all(w == w2)):
        order = np.argmin(np.abs(w[..., :, None] - w2[..., None, :]), axis=-1)
        if bool(np.any(order != np.arange(w.shape[-1]))):
            V = take_along(V, np.broadcast_to(order[..., None, :], V.shape), -1)
    return V


def _eigvals_vjp(g, ans, a):
    V = _eig_matching(a, ans)
    return _la.solve(_H(V), g[..., :, None] * _H(V))


def _eigvals_jvp(t, ans, a):
    V = _eig_matching(a, ans)
    Vinv = _la.inv(V)
    return np.sum(np.swapaxes(Vinv, -1, -2) * (t @ V), axis=-2)


defprim("linalg.eigvals", _la.eigvals, vjp=(_eigvals_vjp,), jvp=(_eigvals_jvp,))


@defhandler(_la.eigvals)
def eigvals(a):
    return bind(PRIMITIVES["linalg.eigvals"], (_asarr(a),), {})


# --- svd, svdvals --------------------------------------------------------------------------
# Reduced factors U (m,k), s (k), V (n,k); F_ij = 1/(s_j² - s_i²) with ties zeroed.
# full_matrices=True adds the complements Up (m,m-k) / Vp (n,n-k), differentiated
# as the non-rotating complement: dUp = -U S^{-1} V^H dA^H Up, dVp = -V S^{-1} U^H dA Vp.
def _svd_impl(a, full_matrices, hermitian):
    u, s, vh = _la.svd(a, full_matrices=full_matrices, compute_uv=True, hermitian=hermitian)
    return u, s, vh


def _svd_split(s, tie):
    """G = 1/(2(s_j - s_i)) (ties zeroed) and Hs = 1/(2(s_j + s_i)) (0 where both are 0)."""
    n = s.shape[-1]
    G = _inv_gaps(s, tie) * 0.5
    dt = _val(s).dtype
    tot = s[..., None, :] + s[..., :, None]
    both0 = (tot == 0) | np.eye(n, dtype=bool)          # traced, as in _ties
    one = np.ones((), dt)
    Hs = np.where(both0, np.zeros((), dt), 0.5 / np.where(both0, one, tot))
    return G, Hs


def _svd_jvp(t, ans, a, full_matrices, hermitian):
    u, s, vh = ans
    m, n = a.shape[-2:]
    k = min(m, n)
    U, Vh = u[..., :, :k], vh[..., :k, :]
    V = _H(Vh)
    if hermitian:
        t = _herm(t)
    dS = _H(U) @ t @ V
    ds = _real(_diag(dS))
    tie = _ties(s)
    A1 = dS + _H(dS)
    A2 = dS - _H(dS)
    _warn_degenerate("svd (forward mode, singular vectors)", tie, A1)
    G, Hs = _svd_split(s, tie)
    # F∘(dS S + S dS^H) = G∘A1 + Hs∘A2 and F∘(S dS + dS^H S) = G∘A1 - Hs∘A2,
    # F_ij = 1/(s_j² - s_i²), G_ij = 1/(2(s_j - s_i)), Hs_ij = 1/(2(s_j + s_i)).
    dU_in = G * A1 + Hs * A2
    dV_in = G * A1 - Hs * A2
    sinv, small = _safe_recip(s)
    if dS.dtype.kind == "c":
        dU_in = dU_in + _diag_embed(1j * np.imag(_diag(dS)) * sinv)
    dU = U @ dU_in
    dV = V @ dV_in
    if m > k:
        dAV = t @ V
        dU = dU + (dAV - U @ (_H(U) @ dAV)) * sinv[..., None, :]
    if n > k:
        dAHU = _H(t) @ U
        dV = dV + (dAHU - V @ (_H(V) @ dAHU)) * sinv[..., None, :]
    if full_matrices and m > k:
        Up = u[..., :, k:]
        dUp = -(U @ (sinv[..., :, None] * (_H(V) @ (_H(t) @ Up))))
        dU = np.concatenate([dU, dUp], axis=-1)
    if full_matrices and n > k:
        Vp = _H(vh[..., k:, :])
        dVp = -(V @ (sinv[..., :, None] * (_H(U) @ (t @ Vp))))
        dV = np.concatenate([dV, dVp], axis=-1)
    return dU, ds, _H(dV)


def _svd_vjp(g, ans, a, full_matrices, hermitian):
    gu, gs, gvh = g
    u, s, vh = ans
    m, n = a.shape[-2:]
    k = min(m, n)
    U, Vh = u[..., :, :k], vh[..., :k, :]
    V = _H(Vh)
    Ubar = gu[..., :, :k]
    Vbar = _H(gvh[..., :k, :])
    inner = _diag_embed(gs)
    sinv, small = _safe_recip(s)
    tie = _ties(s)
    X = Y = None
    if not _is_plain_zero(Ubar):
        X = _H(U) @ Ubar
    if not _is_plain_zero(Vbar):
        Y = _H(V) @ Vbar
    if X is not None or Y is not None:
        _warn_degenerate("svd (reverse mode, singular vectors)", tie,
                         *[z for z in (X, Y) if z is not None])
        G, Hs = _svd_split(s, tie)
        J = X - _H(X) if X is not None else 0
        K = Y - _H(Y) if Y is not None else 0
        # (J_ij s_j + s_i K_ij) / (s_j² - s_i²) = (J+K) G + (J-K) Hs
        inner = inner + (J + K) * G + (J - K) * Hs
        if X is not None and X.dtype.kind == "c":
            inner = inner + _diag_embed(1j * np.imag(_diag(X)) * sinv)
    r = U @ inner @ Vh
    if m > k and X is not None:
        P = Ubar - U @ X
        _warn_degenerate("svd (reverse mode, zero singular value)", small[..., None, :], P)
        r = r + (P * sinv[..., None, :]) @ Vh
    if n > k and Y is not None:
        Q = Vbar - V @ Y
        _warn_degenerate("svd (reverse mode, zero singular value)", small[..., None, :], Q)
        r = r + U @ (sinv[..., :, None] * _H(Q))
    if full_matrices and m > k:
        gUp = gu[..., :, k:]
        if not _is_plain_zero(gUp):
            Up = u[..., :, k:]
            r = r - ((Up @ (_H(gUp) @ U)) * sinv[..., None, :]) @ Vh
    if full_matrices and n > k:
        gVp = _H(gvh[..., k:, :])
        if not _is_plain_zero(gVp):
            Vp = _H(vh[..., k:, :])
            r = r - U @ (sinv[..., :, None] * ((Vh @ gVp) @ _H(Vp)))
    return _herm(r) if hermitian else r


defprim("linalg.svd", _svd_impl, vjp=(_svd_vjp,), jvp=(_svd_jvp,), nout=3, save_args=False)


def _svdvals_uv(a, hermitian):
    u, s, vh = _la.svd(a, full_matrices=False, hermitian=hermitian)
    return u, vh


def _svdvals_vjp(g, ans, a, hermitian):
    u, vh = _svdvals_uv(a, hermitian)
    r = (u * g[..., None, :]) @ vh
    return _herm(r) if hermitian else r


def _svdvals_jvp(t, ans, a, hermitian):
    u, vh = _svdvals_uv(a, hermitian)
    if hermitian:
        t = _herm(t)
    return _real(np.sum(_conjc(u) * (t @ _H(vh)), axis=-2))


defprim("linalg.svdvals",
        lambda a, hermitian: _la.svd(a, compute_uv=False, hermitian=hermitian),
        vjp=(_svdvals_vjp,), jvp=(_svdvals_jvp,), save_ans=False)


@defhandler(_la.svd)
def svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    a = _asarr(a)
    if not compute_uv:
        return bind(PRIMITIVES["linalg.svdvals"], (a,), {"hermitian": bool(hermitian)})
    u, s, vh = bind(PRIMITIVES["linalg.svd"], (a,), {"full_matrices": bool(full_matrices),
                                                     "hermitian": bool(hermitian)})
    return _wrap_result(SVDResult, u, s, vh)


@defhandler(_la.svdvals)
def svdvals(x, /):
    return svd(x, compute_uv=False)


# --- qr ----------------------------------------------------------------------------------
# Square/tall reduced part (j-towns.github.io/papers/qr-derivative.pdf): with
# P = dA R^{-1}, C = Q^H P, Ω the skew-Hermitian part built from tril(C, -1) and
# i·Im diag(C): dQ = Q(Ω - C) + P, dR = (C - Ω) R. Wide inputs A = [X | Y] use the
# square rule on X and R2 = Q^H Y. mode='complete' with m > n adds the non-rotating
# complement dQp = -Q P^H Qp.
def _qr_impl(a, mode):
    q, r = _la.qr(a, mode=mode)
    return q, r


def _skew_from(C):
    n = C.shape[-1]
    low = C * _tril_mask(n, -1)
    om = low - _H(low)
    if C.dtype.kind == "c":
        om = om + _diag_embed(1j * np.imag(_diag(C)))
    return om


def _qr_square_jvp(dX, Q, R):
    P = dX @ _la.inv(R)
    C = _H(Q) @ P
    om = _skew_from(C)
    return Q @ (om - C) + P, (C - om) @ R, P


def _qr_square_vjp(Qbar, Rbar, Q, R, extra_P=None):
    n = R.shape[-1]
    X = Rbar @ _H(R) - _H(Q) @ Qbar
    up = X * _tril_mask(n, -1).T
    Cbar = up + _H(up) + _diag_embed(_real(_diag(X)))
    Pbar = Qbar + Q @ Cbar
    if extra_P is not None:
        Pbar = Pbar + extra_P
    return _H(_la.solve(R, _H(Pbar)))


def _qr_jvp(t, ans, a, mode):
    q, r = ans
    m, n = a.shape[-2:]
    if m >= n:
        Q, R = q[..., :, :n], r[..., :n, :]
        dQ, dR, P = _qr_square_jvp(t, Q, R)
        if q.shape[-1] > n:  # complete
            Qp = q[..., :, n:]
            dQp = -(Q @ (_H(P) @ Qp))
            dQ = np.concatenate([dQ, dQp], axis=-1)
            dR = np.concatenate([dR, np.zeros(dR.shape[:-2] + (m - n, n), _val(dR).dtype)],
                                axis=-2)
        return dQ, dR
    R1 = r[..., :, :m]
    Y = a[..., :, m:]
    dQ, dR1, _ = _qr_square_jvp(t[..., :, :m], q, R1)
    dR2 = _H(dQ) @ Y + _H(q) @ t[..., :, m:]
    return dQ, np.concatenate([dR1, dR2], axis=-1)


def _qr_vjp(g, ans, a, mode):
    gq, gr = g
    q, r = ans
    m, n = a.shape[-2:]
    if m >= n:
        Q, R = q[..., :, :n], r[..., :n, :]
        Qbar, Rbar = gq[..., :, :n], gr[..., :n, :]
        extra = None
        if q.shape[-1] > n:
            gQp = gq[..., :, n:]
            if not _is_plain_zero(gQp):
                Qp = q[..., :, n:]
                extra = -(Qp @ (_H(gQp) @ Q))
        return _qr_square_vjp(Qbar, Rbar, Q, R, extra)
    R1 = r[..., :, :m]
    Y = a[..., :, m:]
    gR1, gR2 = gr[..., :, :m], gr[..., :, m:]
    Qbar = gq + Y @ _H(gR2)
    Xbar = _qr_square_vjp(Qbar, gR1, q, R1)
    Ybar = q @ gR2
    return np.concatenate([Xbar, Ybar], axis=-1)


defprim("linalg.qr", _qr_impl, vjp=(_qr_vjp,), jvp=(_qr_jvp,), nout=2)


@defhandler(_la.qr)
def qr(a, mode="reduced"):
    a = _asarr(a)
    if mode == "raw":
        raise unsupported("np.linalg.qr(..., mode='raw') (Householder reflectors)")
    if mode == "r":
        return bind(PRIMITIVES["linalg.qr"], (a,), {"mode": "reduced"})[1]
    if mode not in ("reduced", "complete"):
        _la.qr(_val(a), mode=mode)  # let NumPy raise its own error
        raise unsupported(f"np.linalg.qr(..., mode={mode!r})")
    q, r = bind(PRIMITIVES["linalg.qr"], (a,), {"mode": mode})
    return _wrap_result(QRResult, q, r)


# --- pinv, lstsq ---------------------------------------------------------------------------
# Constant-rank derivative (Golub & Pereyra 1973):
# dP = -P dA P + P P^H dA^H (I - A P) + (I - P A) dA^H P^H P.
def _pinv_jvp_core(t, P, a):
    tH = _H(t)
    PPh = P @ _H(P)
    term2 = PPh @ tH
    term2 = term2 - (term2 @ a) @ P
    term3 = tH @ (_H(P) @ P)
    term3 = term3 - P @ (a @ term3)
    return -(P @ t @ P) + term2 + term3


def _pinv_vjp_core(g, P, a):
    Ph = _H(P)
    gh = _H(g)
    t1 = -(Ph @ g @ Ph)
    t2 = gh @ (P @ Ph)
    t2 = t2 - a @ (P @ t2)
    t3 = (Ph @ P) @ gh
    t3 = t3 - (t3 @ P) @ a
    return t1 + t2 + t3


def _pinv_impl(a, rcond, hermitian):
    return _la.pinv(a, rcond=rcond, hermitian=hermitian)


def _pinv_vjp(g, ans, a, rcond, hermitian):
    r = _pinv_vjp_core(g, ans, a)
    return _herm(r) if hermitian else r


def _pinv_jvp(t, ans, a, rcond, hermitian):
    return _pinv_jvp_core(_herm(t) if hermitian else t, ans, a)


defprim("linalg.pinv", _pinv_impl, vjp=(_pinv_vjp,), jvp=(_pinv_jvp,))

_NoValue = getattr(np, "_NoValue", None)


@defhandler(_la.pinv)
def pinv(a, rcond=None, hermitian=False, *, rtol=_NoValue):
    a = _asarr(a)
    if rcond is None:
        if rtol is _NoValue:
            rcond = 1e-15
        elif rtol is None:
            rcond = max(a.shape[-2:]) * np.finfo(a.dtype).eps
        else:
            rcond = rtol
    elif rtol is not _NoValue:
        raise ValueError("`rtol` and `rcond` can't be both set.")
    rcond = concrete(rcond, "value")     # a parameter: jit guards a traced one
    return bind(PRIMITIVES["linalg.pinv"], (a,), {"rcond": rcond, "hermitian": bool(hermitian)})


def _lstsq_impl(a, b, rcond):
    return _la.lstsq(a, b, rcond=rcond)[0]


def _lstsq_vjp_a(g, ans, a, b, rcond):
    P = _la.pinv(a, rcond=rcond)
    b2, g2 = (b[:, None], g[..., :, None]) if b.ndim == 1 else (b, g)
    return _pinv_vjp_core(g2 @ _H(b2), P, a)


def _lstsq_vjp_b(g, ans, a, b, rcond):
    P = _la.pinv(a, rcond=rcond)
    if b.ndim == 1:
        return (_H(P) @ g[..., :, None])[..., 0]
    return _H(P) @ g


def _lstsq_jvp(ts, ans, a, b, rcond):
    ta, tb = ts
    P = _la.pinv(a, rcond=rcond)
    vec = b.ndim == 1
    out = None
    if ta is not None:
        out = _pinv_jvp_core(ta, P, a) @ b
    if tb is not None:
        r = (P @ tb[..., :, None])[..., 0] if vec else P @ tb
        out = r if out is None else out + r
    return out


defprim("linalg.lstsq", _lstsq_impl, vjp=(_lstsq_vjp_a, _lstsq_vjp_b), jvp=_lstsq_jvp,
        save_ans=False)


@defhandler(_la.lstsq)
def lstsq(a, b, rcond=None):
    a, b = _asarr(a), _asarr(b)
    if a.ndim != 2:
        _la.lstsq(_val(a), _val(b), rcond)  # NumPy's own error for stacked input
    m, n = a.shape
    dt = np.result_type(_val(a), _val(b))
    if rcond is None:
        rcond = np.finfo(dt if dt.kind in "fc" else np.float64).eps * max(m, n)
    x = bind(PRIMITIVES["linalg.lstsq"], (a, b), {"rcond": rcond})
    s = svdvals(a)
    # the rank decides whether residuals are returned: int() of a traced count,
    # which jit guards (a plain count would fix the first call's rank)
    rank = int(np.sum(s > rcond * s[0])) if s.size else 0
    if rank == n and m > n:
        r = b - (a @ x)
        resid = np.sum(_sqabs(r), axis=0)
        if b.ndim == 1:
            resid = np.reshape(resid, (1,))
    else:
        resid = np.empty((0,), dtype=_val(s).dtype)
    return x, resid, np.int32(rank), s


def _matrix_rank_impl(A, tol, hermitian, rtol):
    return _la.matrix_rank(A, tol=tol, hermitian=hermitian, rtol=rtol)


defprim("linalg.matrix_rank", _matrix_rank_impl, nondiff=True)


@defhandler(_la.matrix_rank)
def matrix_rank(A, tol=None, hermitian=False, *, rtol=None):
    return bind(PRIMITIVES["linalg.matrix_rank"], (_asarr(A),),
                {"tol": concrete(tol, "value"), "hermitian": hermitian,
                 "rtol": concrete(rtol, "value")})


# --- norms ---------------------------------------------------------------------------------
def _sqabs(x):
    return np.real(x * np.conjugate(x)) if x.dtype.kind == "c" else x * x


def _safe_sqrt(s):
    """sqrt with the subgradient 0 at 0 (executed-path double-where)."""
    # The zero test is traced: under jit the mask is part of the graph and the
    # branch a guard, instead of a constant baked in from the first call.
    zero = s == 0
    if not bool(np.any(zero)):
        return np.sqrt(s)
    one = np.ones((), _val(s).dtype)
    return np.where(zero, np.zeros((), _val(s).dtype), np.sqrt(np.where(zero, one, s)))


def _safe_root(s, p):
    zero = s == 0  # traced, as in _safe_sqrt
    if not bool(np.any(zero)):
        return s ** (1.0 / p)
    one = np.ones((), _val(s).dtype)
    return np.where(zero, np.zeros((), _val(s).dtype), np.where(zero, one, s) ** (1.0 / p))


def _svd_norm(x, row_axis, col_axis, op):
    y = np.moveaxis(x, (row_axis, col_axis), (-2, -1))
    return op(svdvals(y), axis=-1)


@defhandler(_la.norm)
def norm(x, ord=None, axis=None, keepdims=False):
    x = _asarr(x)
    if x.dtype.kind not in "fc":
        x = x.astype(float)
    if axis is None:
        nd = x.ndim
        if (ord is None or (ord in ("f", "fro") and nd == 2) or (ord == 2 and nd == 1)):
            r = _safe_sqrt(np.sum(_sqabs(np.ravel(x))))
            if keepdims:
                r = np.reshape(r, nd * [1])
            return r
    nd = x.ndim
    if axis is None:
        axis = tuple(range(nd))
    elif not isinstance(axis, tuple):
        try:
            axis = int(axis)
        except Exception as e:
            raise TypeError("'axis' must be None, an integer or a tuple of integers") from e
        axis = (axis,)
    if len(axis) == 1:
        if ord == np.inf:
            return np.max(np.abs(x), axis=axis, keepdims=keepdims)
        if ord == -np.inf:
            return np.min(np.abs(x), axis=axis, keepdims=keepdims)
        if ord == 0:
            # a count: no derivative, but traced so that jit recomputes it
            return np.sum((x != 0).astype(_val(x).real.dtype), axis=axis, keepdims=keepdims)
        if ord == 1:
            return np.sum(np.abs(x), axis=axis, keepdims=keepdims)
        if ord is None or ord == 2:
            return _safe_sqrt(np.sum(_sqabs(x), axis=axis, keepdims=keepdims))
        if isinstance(ord, str):
            raise ValueError(f"Invalid norm order '{ord}' for vectors")
        s = np.sum(np.abs(x) ** ord, axis=axis, keepdims=keepdims)
        return _safe_root(s, ord)
    if len(axis) == 2:
        row_axis, col_axis = axis
        row_axis = np.lib.array_utils.normalize_axis_index(row_axis, nd)
        col_axis = np.lib.array_utils.normalize_axis_index(col_axis, nd)
        if row_axis == col_axis:
            raise ValueError("Duplicate axes given.")
        if ord == 2:
            r = _svd_norm(x, row_axis, col_axis, np.max)
        elif ord == -2:
            r = _svd_norm(x, row_axis, col_axis, np.min)
        elif ord == 1:
            if col_axis > row_axis:
                col_axis -= 1
            r = np.max(np.sum(np.abs(x), axis=row_axis), axis=col_axis)
        elif ord == np.inf:
            if row_axis > col_axis:
                row_axis -= 1
            r = np.max(np.sum(np.abs(x), axis=col_axis), axis=row_axis)
        elif ord == -1:
            if col_axis > row_axis:
                col_axis -= 1
            r = np.min(np.sum(np.abs(x), axis=row_axis), axis=col_axis)
        elif ord == -np.inf:
            if row_axis > col_axis:
                row_axis -= 1
            r = np.min(np.sum(np.abs(x), axis=col_axis), axis=row_axis)
        elif ord in (None, "fro", "f"):
            r = _safe_sqrt(np.sum(_sqabs(x), axis=axis))
        elif ord == "nuc":
            r = _svd_norm(x, row_axis, col_axis, np.sum)
        else:
            raise ValueError("Invalid norm order for matrices.")
        if keepdims:
            shape = list(x.shape)
            shape[axis[0]] = 1
            shape[axis[1]] = 1
            r = np.reshape(r, shape)
        return r
    raise ValueError("Improper number of dimensions to norm.")


@defhandler(_la.vector_norm)
def vector_norm(x, /, *, axis=None, keepdims=False, ord=2):
    x = _asarr(x)
    shape = list(x.shape)
    if axis is None:
        x = np.ravel(x)
        _axis = 0
    elif isinstance(axis, tuple):
        normalized = tuple(np.lib.array_utils.normalize_axis_index(a, x.ndim) for a in axis)
        rest = tuple(i for i in range(x.ndim) if i not in normalized)
        newshape = axis + rest
        x = np.transpose(x, newshape)
        prod = 1
        for i in axis:
            prod *= shape[i]
        x = np.reshape(x, (prod,) + tuple(shape[i] for i in rest))
        _axis = 0
    else:
        _axis = axis
    res = norm(x, axis=_axis, ord=ord)
    if keepdims:
        kept = (tuple(range(len(shape))) if axis is None else
                (axis if isinstance(axis, tuple) else (axis,)))
        for i in kept:
            shape[np.lib.array_utils.normalize_axis_index(i, len(shape))] = 1
        res = np.reshape(res, tuple(shape))
    return res


@defhandler(_la.matrix_norm)
def matrix_norm(x, /, *, keepdims=False, ord="fro"):
    return norm(x, axis=(-2, -1), keepdims=keepdims, ord=ord)


@defhandler(_la.cond)
def cond(x, p=None):
    x = _asarr(x)
    if p is None or p in (2, -2):
        s = svdvals(x)
        with np.errstate(all="ignore"):
            return s[..., -1] / s[..., 0] if p == -2 else s[..., 0] / s[..., -1]
    return norm(x, p, axis=(-2, -1)) * norm(inv(x), p, axis=(-2, -1))


# --- products built from matmul / einsum ---------------------------------------------------
@defhandler(_la.matrix_power)
def matrix_power(a, n):
    a = _asarr(a)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        _la.matrix_power(_val(a), n)  # NumPy's error
    try:
        n = operator.index(n)
    except TypeError as e:
        raise TypeError("exponent must be an integer") from e
    if n == 0:
        return np.broadcast_to(np.eye(a.shape[-1], dtype=a.dtype), a.shape).copy()
    if n < 0:
        a = inv(a)
        n = abs(n)
    if n == 1:
        return np.copy(a)
    if n == 2:
        return np.matmul(a, a)
    if n == 3:
        return np.matmul(np.matmul(a, a), a)
    z = result = None
    while n > 0:
        z = a if z is None else np.matmul(z, z)
        n, bit = divmod(n, 2)
        if bit:
            result = z if result is None else np.matmul(result, z)
    return result


def _chain_order(shapes):
    """Optimal parenthesisation of a matrix chain (as NumPy's multi_dot)."""
    n = len(shapes)
    p = [s[0] for s in shapes] + [shapes[-1][1]]
    m = [[0] * n for _ in range(n)]
    s = [[0] * n for _ in range(n)]
    for ln in range(1, n):
        for i in range(n - ln):
            j = i + ln
            m[i][j] = float("inf")
            for k in range(i, j):
                q = m[i][k] + m[k + 1][j] + p[i] * p[k + 1] * p[j + 1]
                if q < m[i][j]:
                    m[i][j] = q
                    s[i][j] = k
    return s


def _chain(arrays, order, i, j):
    if i == j:
        return arrays[i]
    return np.matmul(_chain(arrays, order, i, order[i][j]),
                     _chain(arrays, order, order[i][j] + 1, j))


@defhandler(_la.multi_dot)
def multi_dot(arrays, *, out=None):
    _no_out(out, "np.linalg.multi_dot")
    arrays = [_asarr(a) for a in arrays]
    n = len(arrays)
    if n < 2:
        raise ValueError("Expecting at least two arrays.")
    if n == 2:
        return dot(arrays[0], arrays[1])
    first1, last1 = arrays[0].ndim == 1, arrays[-1].ndim == 1
    if first1:
        arrays[0] = np.reshape(arrays[0], (1, -1))
    if last1:
        arrays[-1] = np.reshape(arrays[-1], (-1, 1))
    for a in arrays:
        if a.ndim != 2:
            raise _la.LinAlgError(f"{a.ndim}-dimensional array given. Array must be "
                                  "two-dimensional")
    if n == 3:
        A, B, C = arrays
        a0, a1b0 = A.shape
        b1c0, c1 = C.shape
        cost1 = a0 * b1c0 * (a1b0 + c1)
        cost2 = a1b0 * c1 * (a0 + b1c0)
        r = np.matmul(np.matmul(A, B), C) if cost1 < cost2 else np.matmul(A, np.matmul(B, C))
    else:
        r = _chain(arrays, _chain_order([a.shape for a in arrays]), 0, n - 1)
    if first1 and last1:
        return r[0, 0]
    if first1 or last1:
        return np.ravel(r)
    return r


def _cross3(a0, a1, a2, b0, b1, b2):
    return (a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0)


@defhandler(np.cross)
def cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    a, b = _asarr(a), _asarr(b)
    if axis is not None:
        axisa, axisb, axisc = (axis,) * 3
    a = np.moveaxis(a, axisa, -1)
    b = np.moveaxis(b, axisb, -1)
    if a.shape[-1] not in (2, 3) or b.shape[-1] not in (2, 3):
        raise ValueError("incompatible dimensions for cross product\n"
                         "(dimension must be 2 or 3)")
    if a.shape[-1] == 2 or b.shape[-1] == 2:
        warnings.warn("Arrays of 2-dimensional vectors are deprecated. Use arrays of "
                      "3-dimensional vectors instead. (deprecated in NumPy 2.0)",
                      DeprecationWarning, stacklevel=3)
    if a.shape[-1] == 2 and b.shape[-1] == 2:
        return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]

    def comps(v):
        if v.shape[-1] == 3:
            return v[..., 0], v[..., 1], v[..., 2]
        return v[..., 0], v[..., 1], np.zeros((), _val(v).dtype)
    ca, cb = comps(a), comps(b)
    c0, c1, c2 = _cross3(*ca, *cb)
    shape = np.broadcast_shapes(np.shape(c0), np.shape(c1), np.shape(c2))
    c = np.stack([np.broadcast_to(c0, shape), np.broadcast_to(c1, shape),
                  np.broadcast_to(c2, shape)], axis=-1)
    return np.moveaxis(c, -1, axisc)


@defhandler(_la.cross)
def linalg_cross(x1, x2, /, *, axis=-1):
    x1, x2 = _asarr(x1), _asarr(x2)
    if x1.shape[axis] != 3 or x2.shape[axis] != 3:
        raise ValueError("Both input arrays must be (arrays of) 3-dimensional vectors, but they "
                         f"are {x1.shape[axis]} and {x2.shape[axis]} dimensional instead.")
    return cross(x1, x2, axis=axis)


@defhandler(np.kron)
def kron(a, b):
    a, b = _asarr(a), _asarr(b)
    if a.ndim == 0 or b.ndim == 0:
        return np.multiply(a, b)
    nd = max(a.ndim, b.ndim)
    as_ = (1,) * (nd - a.ndim) + a.shape
    bs = (1,) * (nd - b.ndim) + b.shape
    ai = []
    bi = []
    for x, y in zip(as_, bs):
        ai += [x, 1]
        bi += [1, y]
    r = np.reshape(a, tuple(ai)) * np.reshape(b, tuple(bi))
    return np.reshape(r, tuple(x * y for x, y in zip(as_, bs)))


# np.linalg's array-API aliases
@defhandler(_la.matmul)
def linalg_matmul(x1, x2, /):
    return np.matmul(x1, x2)


@defhandler(_la.tensordot)
def linalg_tensordot(x1, x2, /, *, axes=2):
    return tensordot(x1, x2, axes=axes)


@defhandler(_la.outer)
def linalg_outer(x1, x2, /):
    x1, x2 = _asarr(x1), _asarr(x2)
    if x1.ndim != 1 or x2.ndim != 1:
        raise ValueError("Input arrays must be one-dimensional, but they are "
                         f"x1.ndim={x1.ndim} and x2.ndim={x2.ndim}.")
    return outer(x1, x2)


@defhandler(_la.trace)
def linalg_trace(x, /, *, offset=0, dtype=None):
    return np.trace(x, offset=offset, axis1=-2, axis2=-1, dtype=dtype)


@defhandler(_la.diagonal)
def linalg_diagonal(x, /, *, offset=0):
    return np.diagonal(x, offset=offset, axis1=-2, axis2=-1)


@defhandler(_la.vecdot)
def linalg_vecdot(x1, x2, /, *, axis=-1):
    x1, x2 = _asarr(x1), _asarr(x2)
    if x1.dtype.kind == "c":
        x1 = np.conjugate(x1)
    return np.sum(x1 * x2, axis=axis)


def _gufunc_kwargs(name, kwargs):
    dtype = kwargs.pop("dtype", None)
    if kwargs:
        raise TypeError(f"np.{name}: tracegrad supports only dtype= (and out=) here, "
                        f"not {sorted(kwargs)}")
    return dtype


def _cast(r, dtype):
    return r if dtype is None else r.astype(dtype)


# NumPy >= 2.2's vector gufuncs: np.vecdot conjugates its first argument,
# np.vecmat its vector, np.matvec nothing. They reduce to matmul and sum,
# whose rules apply (batch axes broadcast as in the gufunc).
if hasattr(np, "vecdot") and isinstance(np.vecdot, np.ufunc):
    @defufunc_method(np.vecdot, "__call__")
    def _np_vecdot(x1, x2, axis=-1, **kwargs):
        dtype = _gufunc_kwargs("vecdot", kwargs)
        x1, x2 = _asarr(x1), _asarr(x2)
        return _cast(np.sum(_cj(x1) * x2, axis=axis), dtype)

if hasattr(np, "matvec") and isinstance(np.matvec, np.ufunc):
    @defufunc_method(np.matvec, "__call__")
    def _np_matvec(x1, x2, **kwargs):
        dtype = _gufunc_kwargs("matvec", kwargs)
        x1, x2 = _asarr(x1), _asarr(x2)
        if x1.ndim < 2 or x2.ndim < 1:
            raise ValueError("np.matvec: needs a matrix (ndim >= 2) and a vector (ndim >= 1)")
        return _cast(np.matmul(x1, x2[..., None])[..., 0], dtype)

    @defufunc_method(np.vecmat, "__call__")
    def _np_vecmat(x1, x2, **kwargs):
        dtype = _gufunc_kwargs("vecmat", kwargs)
        x1, x2 = _asarr(x1), _asarr(x2)
        if x1.ndim < 1 or x2.ndim < 2:
            raise ValueError("np.vecmat: needs a vector (ndim >= 1) and a matrix (ndim >= 2)")
        return _cast(np.matmul(_cj(x1)[..., None, :], x2)[..., 0, :], dtype)


@defhandler(_la.matrix_transpose)
def linalg_matrix_transpose(x, /):
    x = _asarr(x)
    if x.ndim < 2:
        raise ValueError("Input array must be at least 2-dimensional, but it is "
                         f"{x.ndim}")
    return np.swapaxes(x, -1, -2)


__doc__ += _LINALG_DOC
_ = errors


@defhandler(np.einsum_path)
def einsum_path(*operands, **kwargs):
    # the contraction order depends on shapes only: plan it on the plain values
    return np.einsum_path(*[o._v if type(o) is TracedArray else o for o in operands], **kwargs)
