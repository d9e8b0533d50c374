"""Shared helpers: peers (autograd, mygrad, jax, torch) are optional; a
benchmark for a peer that is not installed is skipped (asv treats
NotImplementedError raised in setup as "skip")."""
import importlib


def need(module):
    try:
        return importlib.import_module(module)
    except Exception as e:  # pragma: no cover - depends on the environment
        raise NotImplementedError(f"{module} is not installed: {e}")
