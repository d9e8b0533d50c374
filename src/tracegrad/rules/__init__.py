"""Derivative rules as tables, one module per family. Importing this package
registers every rule."""
from . import elementwise, reductions, indexing, shape, linalg, nondiff  # noqa: F401
