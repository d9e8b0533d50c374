"""tracegrad: exact derivatives of ordinary NumPy code.

>>> import numpy as np, tracegrad as tg
>>> tg.grad(lambda x: np.sum(np.sin(x) ** 2))(np.array([0.5, 1.0])).round(4)
array([0.8415, 0.9093])
"""
from . import rules as _rules  # noqa: F401  (registers every derivative rule)
from .api import (check_grads, grad, hessian, hvp, jacfwd, jacobian, jacrev, jvp, linearize,
                  value_and_grad, vjp)
from .checkpoint import CheckpointError, CheckpointStats, checkpoint, loop, step
from .compile import jit
from .core.array import TracedArray, debug_nans, escape_policy
from .custom import custom_jvp, custom_vjp, defjvp, defvjp, stop_gradient
from .errors import (BadArgnums, BadOutput, EscapeError, EscapeWarning, InPlaceError,
                     NonDifferentiableInput, NonFiniteError, NonScalarOutput, TracegradError,
                     UnsupportedOperation)

__version__ = "0.1.0"

__all__ = [
    "grad", "value_and_grad", "vjp", "jvp", "linearize", "jacfwd", "jacrev", "jacobian",
    "hessian", "hvp", "check_grads", "jit", "TracedArray", "debug_nans", "escape_policy",
    "custom_vjp", "custom_jvp", "defvjp", "defjvp", "stop_gradient",
    "checkpoint", "step", "loop", "CheckpointStats", "CheckpointError",
    "TracegradError", "UnsupportedOperation", "NonScalarOutput", "NonDifferentiableInput",
    "BadArgnums", "BadOutput", "InPlaceError", "EscapeError", "EscapeWarning", "NonFiniteError",
]


def load_ipython_extension(ipython):  # `%load_ext tracegrad`: IPython is imported only here
    from .jupyter import load_ipython_extension as load
    return load(ipython)


def unload_ipython_extension(ipython):
    from .jupyter import unload_ipython_extension as unload
    return unload(ipython)
