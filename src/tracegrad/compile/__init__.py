"""jit: captured graphs lowered to fused, cached numba loops.

``graph`` (capture and guards) -> ``fuse`` (clusters) -> ``codegen`` (numba
source) -> ``cache`` (content-addressed modules on disk) -> ``plan``
(steps over slots), driven by ``jit``.
"""
from .jit import Jitted, jit

__all__ = ["jit", "Jitted"]
