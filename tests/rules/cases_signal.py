"""Registry cases for the primitives of ``rules/signal.py`` and ``rules/sorting.py``,
plus the checking helpers their own tests share.

The sorting and signal families compose existing primitives; the only new
primitives are ``convolve`` (with its rules) and the index-valued
``nondiff.nanargmax`` / ``nondiff.nanargmin``. Their cases below follow the
format of ``cases.py`` and are registered when this module is imported;
``cases.py`` must import it (``import cases_signal`` at its end) for the
generic checks of ``test_registry.py`` to run them.

The helpers (:func:`check`) run one function through every check the
family tests use: values against plain NumPy, reverse mode against central
finite differences, the forward/reverse dot-product test, ``jacfwd`` against
``jacrev`` and, optionally, second order.
"""
import numpy as np

import tracegrad as tg
from tracegrad.core.pytree import tree_flatten, tree_unflatten

try:
    from cases import case, nondiff_case
except ImportError:  # the generic registry checks are not in this checkout
    def case(*prims, **opts):
        return lambda build: build
    nondiff_case = case


# ======================================================================================
# Cases (see cases.py for the format)
# ======================================================================================
def _conv_fun(kind, mode):
    if kind == "convolve":
        return lambda a, v: np.convolve(a, v, mode)
    return lambda a, v: np.correlate(a, v, mode)


@case("convolve")
def convolve_(d):
    n, m = d.integer(1, 4), d.integer(1, 4)
    f = _conv_fun(d.choice(["convolve", "correlate"]), d.choice(["full", "same", "valid"]))
    return f, (d.array((n,)), d.array((m,)))


@case("convolve", name="convolve[complex]", complex=True)
def convolve_complex(d):
    n, m = d.integer(1, 4), d.integer(1, 4)
    f = _conv_fun(d.choice(["convolve", "correlate"]), d.choice(["full", "same", "valid"]))
    return f, (d.carray((n,)), d.carray((m,)))


@case("convolve", name="convolve[poly]")
def convolve_poly(d):
    # polymul is a convolution; polyval/polyder/polyint compose arithmetic with it
    n, m = d.integer(1, 4), d.integer(1, 4)
    a = d.array((n,), 0.5, 2.0)
    v = d.array((m,), 0.5, 2.0)
    return (lambda a, v: np.polymul(a, v)), (a, v)


def _nan_lattice(d):
    x = d.array(d.shape(min_dims=1), step=0.25, lo=-2, hi=2)
    # keep the first element of every slice finite so no slice is all-NaN
    mask = d.mask(x.shape)
    mask.flat[0] = False
    x = np.where(mask, np.nan, x)
    x[(0,) * x.ndim] = 1.0
    return x


@nondiff_case("nondiff.nanargmax")
def nanargmax_(d):
    x = _nan_lattice(d)
    return (lambda x: np.nanargmax(x)), (x,)


@nondiff_case("nondiff.nanargmin")
def nanargmin_(d):
    x = _nan_lattice(d)
    return (lambda x: np.nanargmin(x)), (x,)


# ======================================================================================
# Helpers for test_sorting.py / test_signal.py / test_fallback.py
# ======================================================================================
def leaves(tree):
    return tree_flatten(tree)[0]


def _rand(rng, a):
    a = np.asarray(a)
    r = rng.standard_normal(a.shape)
    if a.dtype.kind == "c":
        r = r + 1j * rng.standard_normal(a.shape)
    return r


def _pair(a, b):
    return float(np.real(np.vdot(np.asarray(a), np.asarray(b))))


def check(f, *args, rng=None, eps=1e-6, fd_rtol=1e-6, dot_rtol=1e-10, jac=True,
          second=False, values=True, exact=False):
    """Check ``f(*args)`` (arrays in, an array or tuple of arrays out) in every mode.

    * the traced value equals plain NumPy's (bit for bit with ``exact``);
    * ``<w, f(x + t u)>`` by central differences matches ``<vjp(w), u>``;
    * ``<w, J u>`` from ``jvp`` matches ``<J^T w, u>`` from ``vjp``;
    * ``jacfwd`` equals ``jacrev`` (with ``jac``);
    * with ``second``: the Hessian of ``<w, f>`` by forward-over-reverse
      equals forward-over-forward.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    args = tuple(np.asarray(a) for a in args)
    argnums = tuple(range(len(args)))
    ref = f(*args)
    out, pull = tg.vjp(f, *args)
    outs, refs = leaves(out), leaves(ref)
    assert len(outs) == len(refs)
    if values:
        for o, r in zip(outs, refs):
            o, r = np.asarray(o), np.asarray(r)
            assert type(o) is np.ndarray
            assert o.shape == r.shape, (o.shape, r.shape)
            assert o.dtype == r.dtype, (o.dtype, r.dtype)
            if exact:
                np.testing.assert_array_equal(o, r)
            else:
                np.testing.assert_allclose(o, r, rtol=1e-13, atol=1e-300, equal_nan=True)
    w = [_rand(rng, o) for o in outs]
    cts = pull(tree_unflatten(tree_flatten(out)[1],
                              [wk.astype(np.asarray(o).dtype) for wk, o in zip(w, outs)]))
    us = [_rand(rng, a) for a in args]
    ad = sum(_pair(c, u) for c, u in zip(cts, us))

    def phi(t):
        ys = leaves(f(*[a + t * u for a, u in zip(args, us)]))
        return sum(_pair(wk, y) for wk, y in zip(w, ys))
    fd = (phi(eps) - phi(-eps)) / (2 * eps)
    scale = sum(float(np.sum(np.abs(c) * np.abs(u))) for c, u in zip(cts, us))
    assert abs(ad - fd) <= fd_rtol * (scale + abs(fd)) + 1e-8, (ad, fd)
    # forward against reverse
    _, tout = tg.jvp(f, args, tuple(u.astype(a.dtype) for u, a in zip(us, args)))
    lhs = sum(_pair(wk, t) for wk, t in zip(w, leaves(tout)))
    if any(np.asarray(a).dtype in (np.float32, np.complex64) for a in list(args) + outs):
        dot_rtol = max(dot_rtol, 1e-5)
    sc = abs(lhs) + abs(ad) + scale
    assert abs(lhs - ad) <= dot_rtol * sc + 1e-300, (lhs, ad)
    real = all(np.asarray(x).dtype.kind != "c" for x in list(args) + outs)
    if jac and real:
        # (complex Jacobians follow different conventions in the two modes)
        Jf = leaves(tg.jacfwd(f, argnums)(*args))
        Jr = leaves(tg.jacrev(f, argnums)(*args))
        for a, b in zip(Jf, Jr):
            m = 1 + np.max(np.abs(b), initial=0)
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * m)
    if second:
        def s(*xs):
            return sum(np.sum(np.real(wk * y)) for wk, y in zip(w, leaves(f(*xs))))
        for k in argnums:
            # forward-over-reverse against forward-over-forward
            H1 = tg.jacfwd(tg.grad(s, k), k)(*args)
            H2 = tg.jacfwd(tg.jacfwd(s, k), k)(*args)
            m = 1 + np.max(np.abs(H2), initial=0)
            np.testing.assert_allclose(H1, H2, rtol=1e-10, atol=1e-10 * m)
    return cts


def spread(rng, shape, gap=0.1, scale=1.0):
    """Float array of ``shape`` whose values are pairwise at least ``gap``
    apart (no ties, so sorting and selection are differentiable)."""
    n = int(np.prod(shape, dtype=np.int64))
    vals = (rng.permutation(n) - n / 2) * gap * scale
    vals = vals + rng.uniform(-0.2, 0.2, n) * gap * scale
    return vals.reshape(shape)
