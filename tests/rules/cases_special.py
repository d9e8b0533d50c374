"""Registry cases (see cases.py for the format) for the ``scipy.special`` rules
of ``tracegrad.rules.special`` and for ``stop_gradient``.

Importing this module adds its cases to the tables of ``cases.py``. Without
SciPy only ``stop_gradient`` has a case, matching what is registered.
Parameters without a derivative (Bessel orders, ``s`` of ``zeta``, ``a`` of
the incomplete gamma, integer orders) are drawn as plain values and closed
over; everything in ``args`` is differentiated.
"""
import numpy as np

import tracegrad as tg
from cases import case, nondiff_case

try:
    import scipy.special as sp
except ImportError:  # SciPy is optional
    sp = None

P = "scipy.special."

nondiff_case("stop_gradient", name="stop_gradient")(
    lambda d: (tg.stop_gradient, (d.array(d.shape()),)))


def _unary(name, fun, lo, hi, away=0.0, cplx=None, **opts):
    def build(d):
        return fun, (d.array(d.shape(), lo, hi, away=away),)
    case(P + name, name=P + name, **opts)(build)
    if cplx is not None:
        (rlo, rhi), (ilo, ihi) = cplx

        def cbuild(d):
            return fun, (d.carray(d.shape(), (rlo, rhi), (ilo, ihi)),)
        case(P + name, name=P + name + "[complex]", complex=True, **opts)(cbuild)


def _values(d, shape, dom):
    """``dom`` = (lo, hi[, away[, step[, offset]]])."""
    lo, hi, away, step, offset = tuple(dom) + (0.0, None, 0.0)[len(dom) - 2:]
    return d.array(shape, lo, hi, away=away, step=step, offset=offset)


def _binary(name, fun, dom0, dom1, **opts):
    def build(d):
        s0, s1 = d.shapes(2)
        return fun, (_values(d, s0, dom0), _values(d, s1, dom1))
    case(P + name, name=P + name, **opts)(build)


def _param(name, fun, params, dom, pshape=True, **opts):
    """``fun(p, x)`` differentiated in ``x`` only; ``p`` drawn from ``params``
    (a list of values, or a (lo, hi) float range) and closed over."""
    def build(d):
        s0, s1 = d.shapes(2) if pshape else ((), d.shape())
        if isinstance(params, list):
            p = np.full(s0, d.choice(params, "param"))
        else:
            p = d.array(s0, *params, dtype=np.float64)
        return (lambda x: fun(p, x)), (d.array(s1, *dom),)
    case(P + name, name=P + name, **opts)(build)


if sp is not None:
    _RIGHT = ((0.5, 2.0), (-1.0, 1.0))     # right half plane, away from poles and cuts
    _C = ((-1.0, 1.0), (-1.0, 1.0))
    _unary("erf", sp.erf, -2.0, 2.0, cplx=_C)
    _unary("erfc", sp.erfc, -2.0, 2.0, cplx=_C)
    _unary("erfi", sp.erfi, -1.5, 1.5)
    _unary("erfcx", sp.erfcx, -1.5, 2.0)
    _unary("dawsn", sp.dawsn, -2.0, 2.0)
    _unary("erfinv", sp.erfinv, -0.9, 0.9)
    _unary("erfcinv", sp.erfcinv, 0.1, 1.9)
    _unary("ndtr", sp.ndtr, -3.0, 3.0)
    _unary("log_ndtr", sp.log_ndtr, -6.0, 3.0)
    _unary("ndtri", sp.ndtri, 0.05, 0.95)
    _unary("ndtri_exp", sp.ndtri_exp, -3.0, -0.1)
    _unary("expit", sp.expit, -4.0, 4.0)
    _unary("logit", sp.logit, 0.05, 0.95)
    _unary("log_expit", sp.log_expit, -4.0, 4.0)
    _unary("gammaln", sp.gammaln, 0.3, 4.0)
    _unary("loggamma", sp.loggamma, 0.3, 4.0, cplx=_RIGHT)
    _unary("gamma", sp.gamma, 0.3, 3.0, cplx=_RIGHT)
    _unary("rgamma", sp.rgamma, 0.3, 3.0)
    _unary("digamma", sp.psi, 0.3, 4.0)
    _unary("entr", sp.entr, 0.1, 3.0)
    _unary("exp1", sp.exp1, 0.2, 3.0)
    _unary("expi", sp.expi, -3.0, 3.0, away=0.2)
    _unary("i0", sp.i0, -3.0, 3.0)
    _unary("i0e", sp.i0e, -3.0, 3.0, away=0.05)     # |x| has a kink at 0
    _unary("i1", sp.i1, -3.0, 3.0)
    _unary("i1e", sp.i1e, -3.0, 3.0, away=0.05)
    _unary("k0", sp.k0, 0.2, 3.0)
    _unary("k0e", sp.k0e, 0.2, 3.0)
    _unary("k1", sp.k1, 0.2, 3.0)
    _unary("k1e", sp.k1e, 0.2, 3.0)
    _unary("j0", sp.j0, -5.0, 5.0)
    _unary("j1", sp.j1, -5.0, 5.0)
    _unary("y0", sp.y0, 0.3, 5.0)
    _unary("y1", sp.y1, 0.3, 5.0)
    _unary("log1p", sp.log1p, -0.8, 2.0)
    _unary("expm1", sp.expm1, -2.0, 2.0)
    _unary("cosm1", sp.cosm1, -3.0, 3.0, away=0.05)

    _binary("beta", sp.beta, (0.5, 3.0), (0.5, 3.0))
    _binary("betaln", sp.betaln, (0.5, 3.0), (0.5, 3.0))
    # Keep away from points where both the value and the gradient vanish
    # (x == 0 for xlogy; x == y for kl_div; r == 0 for the Huber losses):
    # finite differences there are pure rounding noise.
    _binary("xlogy", sp.xlogy, (-2.0, 2.0, 0.1), (0.2, 3.0))
    _binary("xlog1py", sp.xlog1py, (-2.0, 2.0, 0.1), (-0.5, 2.0))
    _binary("rel_entr", sp.rel_entr, (0.1, 3.0), (0.1, 3.0))
    _binary("kl_div", sp.kl_div, (0.15, 2.95, 0.0, 0.1, 0.05), (0.1, 3.0, 0.0, 0.1))
    _binary("pseudo_huber", sp.pseudo_huber, (0.5, 2.0), (-2.0, 2.0, 0.1))
    _binary("owens_t", sp.owens_t, (-2.0, 2.0), (-2.0, 2.0))
    _binary("boxcox", sp.boxcox, (0.3, 3.0), (-1.0, 2.0))
    # lmbda kept away from 0, where SciPy switches formula (exp(y)) and the
    # finite differences in lmbda lose their accuracy
    _binary("inv_boxcox", sp.inv_boxcox, (-0.4, 1.0), (0.25, 1.5))

    @case(P + "huber", name=P + "huber")
    def huber_(d):
        # |r| on a lattice (±0.25, ±0.75, ...) and delta near 1: never at the kink |r| == delta
        s0, s1 = d.shapes(2)
        return sp.huber, (d.array(s0, 0.9, 1.1), d.array(s1, -2.75, 2.75, step=0.5, offset=0.25))

    _param("gammainc", sp.gammainc, (0.5, 3.0), (0.2, 3.0))
    _param("gammaincc", sp.gammaincc, (0.5, 3.0), (0.2, 3.0))
    _param("gammaincinv", sp.gammaincinv, (0.5, 3.0), (0.1, 0.9))
    _param("gammainccinv", sp.gammainccinv, (0.5, 3.0), (0.1, 0.9))
    _param("zeta", sp.zeta, [2.0, 3.5], (0.5, 3.0))
    _param("expn", sp.expn, [1, 2, 3], (0.2, 3.0))
    _param("iv", sp.iv, [0.0, 0.5, 1.0, 2.5], (0.2, 3.0))
    _param("ive", sp.ive, [0.0, 0.5, 1.0, 2.5], (0.2, 3.0))
    _param("jv", sp.jv, [0.0, 0.5, 1.0, 2.5], (0.2, 4.0))
    _param("yv", sp.yv, [0.0, 0.5, 1.0, 2.5], (0.5, 4.0))
    _param("kv", sp.kv, [0.0, 0.5, 1.0, 2.5], (0.2, 3.0))
    _param("kve", sp.kve, [0.0, 0.5, 1.0, 2.5], (0.2, 3.0))

    from tracegrad.rules.special import log_softmax, logsumexp, polygamma, softmax

    _param("polygamma", polygamma, [0, 1, 2, 3], (0.5, 3.0))

    @case(P + "logsumexp", name=P + "logsumexp")
    def logsumexp_(d):
        keepdims = d.boolean()
        if d.boolean():
            a = d.array(d.shape(), -2.0, 2.0)
            axis = d.axes(a.ndim)
            return (lambda a: logsumexp(a, axis=axis, keepdims=keepdims)), (a,)
        sa, sb = d.shapes(2)
        a, b = d.array(sa, -2.0, 2.0), d.array(sb, 0.3, 2.0)
        axis = d.axes(len(np.broadcast_shapes(sa, sb)))
        return (lambda a, b: logsumexp(a, axis, b, keepdims)), (a, b)

    @case(P + "logsumexp_sign", name=P + "logsumexp[return_sign]")
    def logsumexp_sign_(d):
        sa, sb = d.shapes(2)
        a, b = d.array(sa, -2.0, 2.0), d.array(sb, 0.3, 2.0)
        axis = d.axes(len(np.broadcast_shapes(sa, sb)))
        keepdims = d.boolean()
        return (lambda a, b: logsumexp(a, axis=axis, b=b, keepdims=keepdims,
                                       return_sign=True)), (a, b)

    @case(P + "softmax", name=P + "softmax")
    def softmax_(d):
        x = d.array(d.shape(), -2.0, 2.0)
        axis = d.axes(x.ndim)
        return (lambda x: softmax(x, axis=axis)), (x,)

    @case(P + "log_softmax", name=P + "log_softmax")
    def log_softmax_(d):
        x = d.array(d.shape(), -2.0, 2.0)
        axis = d.axes(x.ndim)
        return (lambda x: log_softmax(x, axis=axis)), (x,)
