"""The cyclic collector is paused during transforms and restored after."""
import gc
import threading

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.core import collector


def _collector_off_inside(x):
    assert not gc.isenabled()
    return np.sum(x ** 2)


@pytest.mark.parametrize("transform", [
    lambda f, x: tg.grad(f)(x),
    lambda f, x: tg.value_and_grad(f)(x),
    lambda f, x: tg.vjp(f, x)[1](1.0),
    lambda f, x: tg.jvp(f, (x,), (x,)),
    lambda f, x: tg.jacfwd(f)(x),
    lambda f, x: tg.jacrev(f)(x),
    lambda f, x: tg.hessian(f)(x),
])
@pytest.mark.parametrize("enabled", [True, False])
def test_state_restored(transform, enabled):
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        transform(_collector_off_inside, np.arange(3.0))
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_restored_when_the_function_raises():
    assert gc.isenabled()

    def bad(x):
        raise KeyError("boom")
    with pytest.raises(KeyError):
        tg.grad(bad)(np.ones(2))
    assert gc.isenabled()


def test_overlapping_pauses_from_threads():
    """The collector comes back only when the last paused call returns."""
    assert gc.isenabled()
    inside = threading.Event()
    release = threading.Event()

    def worker():
        with collector.paused():
            inside.set()
            release.wait(10)

    t = threading.Thread(target=worker)
    t.start()
    inside.wait(10)
    with collector.paused():
        assert not gc.isenabled()
    assert not gc.isenabled()   # the worker still holds its pause
    release.set()
    t.join()
    assert gc.isenabled()
