"""Products and contractions: matmul, dot, inner, outer, vdot, tensordot,
einsum (any subscripts, including repeated indices and ellipses).

``matmul`` and ``einsum`` are the primitives; dot/inner/outer/tensordot are
handlers that reduce to them, so their derivatives are those of matmul and
einsum. Cotangents with leading batch axes get their own einsum letters.
"""
import string

import numpy as np

from ..core.array import TracedArray, bind
from ..core.forward import _align
from ..core.primitive import PRIMITIVES, UFUNC_PRIMS, Variadic, defhandler, defprim


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


def _matmul_vjp_a(g, ans, a, b):
    a1, b1 = _promote(a, b)
    r = np.matmul(_g_promoted(g, a, b), _sw(b1))
    return r[..., 0, :] if a.ndim == 1 else r


def _matmul_vjp_b(g, ans, a, b):
    a1, b1 = _promote(a, b)
    r = np.matmul(_sw(a1), _g_promoted(g, a, b))
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
    target = ins[i]
    # Letters repeated inside operand i (a diagonal like 'ii') cannot be an
    # einsum output: produce each once, then embed with identity matrices.
    seen = []
    dup = []
    for c in target.replace("...", "."):
        if c == ".":
            seen.append(c)
            continue
        if c in seen:
            dup.append(c)
        seen.append(c)
    other_ins = [ins[j] for j in range(len(ins)) if j != i]
    other_ops = [ops[j] for j in range(len(ops)) if j != i]
    if not dup:
        res_sub = bl + target
        # letters of operand i absent from the other operands and the output
        # were summed in the forward pass: they come back by broadcasting.
        present = set("".join(other_ins) + out)
        missing = [c for c in target.replace("...", "") if c not in present]
        if missing:
            sub_core = "".join(c for c in target if c not in missing)
            r = np.einsum(",".join([bl + out] + other_ins) + "->" + bl + sub_core, g, *other_ops)
            # re-insert the missing axes, broadcast to the operand's shape
            shape_map = _letter_sizes(ins, ops)
            full = []
            it = iter(r.shape[nb:])
            tgt = target
            if "..." in tgt:
                pre, post = tgt.split("...")
                ell = ops[i].ndim - len(pre) - len(post)
                letters = list(pre) + ["."] * ell + list(post)
            else:
                letters = list(tgt)
            for c in letters:
                full.append(1 if c in missing else next(it))
            r = np.reshape(r, r.shape[:nb] + tuple(full))
            return np.broadcast_to(r, r.shape[:nb] + ops[i].shape)
        return np.einsum(",".join([bl + out] + other_ins) + "->" + res_sub, g, *other_ops)
    uniq = []
    for c in target.replace("...", "."):
        if c not in uniq or c == ".":
            uniq.append(c)
    uniq_sub = "".join(uniq).replace(".", "...")
    r = np.einsum(",".join([bl + out] + other_ins) + "->" + bl + uniq_sub, g, *other_ops)
    # rename repeated occurrences and tie them with identities
    fresh = iter(_fresh(used, len(target)))
    seen2 = set()
    renamed = []
    eyes = []
    for c in target.replace("...", "."):
        if c != "." and c in seen2:
            f = next(fresh)
            renamed.append(f)
            eyes.append(c + f)
        else:
            renamed.append(c)
            seen2.add(c)
    sizes = _letter_sizes(ins, ops)
    eye_ops = [np.eye(sizes[e[0]], dtype=r.dtype if r.dtype.kind in "fc" else float)
               for e in eyes]
    spec = ",".join([bl + uniq_sub] + eyes) + "->" + bl + "".join(renamed).replace(".", "...")
    return np.einsum(spec, r, *eye_ops)


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
