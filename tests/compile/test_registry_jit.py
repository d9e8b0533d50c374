"""Every case of the rule registry (tests/rules/cases.py) under jit.

For each differentiable case, ``jit(vjp-pull)`` and ``jit(jvp)`` are traced
on one draw and replayed on a second draw of the same shapes (other values),
in the default lowering and with kernels only (marked slow: a few hundred
kernels to compile on a cold cache); both must equal eager tracegrad. Cases
whose path depends on values (masks, sorting) may trace again on the
replay: the comparison still holds. Skipped when the registry cases are not
importable.
"""
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracegrad as tg
from tracegrad.compile import jit

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "rules"))
cases = pytest.importorskip("cases")

ALL = [c for c in cases.ALL_CASES]
MODES = {"default": {}, "kernels": {"vm": False}}


def _leaves(t):
    from tracegrad.core.pytree import tree_flatten
    return tree_flatten(t)[0]


def _close(a, b, rtol):
    la, lb = _leaves(a), _leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape and x.dtype == y.dtype, (x.shape, y.shape, x.dtype, y.dtype)
        if x.dtype.kind in "fc":
            scale = float(np.max(np.abs(y), initial=0.0, where=np.isfinite(y)))
            np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * 1e-3 * (1 + scale),
                                       equal_nan=True)
        else:
            np.testing.assert_array_equal(x, y)


def _draw(case, data):
    d = cases.Draw(data, np.float64, False)
    fun, args = case.build(d)
    return fun, tuple(np.asarray(a) for a in args)


def _redraw(args, rng):
    """Same shapes, values moved a little (keeps the case's domain and margins)."""
    out = []
    for a in args:
        if a.dtype.kind == "f":
            out.append(a + rng.uniform(-1e-3, 1e-3, a.shape).astype(a.dtype))
        elif a.dtype.kind == "c":
            out.append(a + (rng.uniform(-1e-3, 1e-3, a.shape)
                            + 1j * rng.uniform(-1e-3, 1e-3, a.shape)).astype(a.dtype))
        else:
            out.append(a)
    return tuple(out)


@pytest.mark.parametrize("mode", ["default", pytest.param("kernels", marks=pytest.mark.slow)])
@pytest.mark.parametrize("case", ALL, ids=lambda c: c.name)
def test_case_under_jit(case, mode):
    @settings(max_examples=2, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data):
        fun, args = _draw(case, data)
        rng = np.random.default_rng(0)
        out = fun(*args)
        cts = [rng.uniform(-1, 1, np.shape(o)).astype(np.result_type(o))
               if np.result_type(o).kind in "fc" else None for o in _leaves(out)]
        tans = [rng.uniform(-1, 1, a.shape).astype(a.dtype) for a in args]

        def pull(*a):
            o, f_vjp = tg.vjp(fun, *a)
            from tracegrad.core.pytree import tree_flatten, tree_unflatten
            ol, od = tree_flatten(o)
            ct = tree_unflatten(od, [c if c is not None else np.zeros(np.shape(x), float)
                                     for c, x in zip(cts, ol)])
            return o, f_vjp(ct)

        def push(*a):
            return tg.jvp(fun, a, tuple(tans))

        for f in (pull, push):
            jf = jit(f, **MODES[mode])
            for a in (args, _redraw(args, rng)):
                with np.errstate(all="ignore"):
                    ref = f(*a)
                    got = jf(*a)
                _close(got, ref, 1e-10)

    run()
