"""Kernels compile while lowering in these tests, so that a test calling a
jitted function twice checks the compiled kernel, not the NumPy calls a group
runs until it is reused (test_tiers.py covers that path)."""
import pytest

from tracegrad.compile import fuse


@pytest.fixture(autouse=True)
def _compile_kernels_at_once(monkeypatch, request):
    if request.module.__name__.endswith("test_tiers"):
        return
    monkeypatch.setattr(fuse, "COMPILE_AFTER", 0)
