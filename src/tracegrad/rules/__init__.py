"""Derivative rules as tables, one module per family. Importing this package
registers every rule."""
from . import elementwise, reductions, indexing, shape, linalg, nondiff  # noqa: F401
from . import fft  # noqa: F401  (np.fft and np.angle)
from . import special  # noqa: F401  (scipy.special; registers nothing without SciPy)
from . import sorting, signal, fallback  # noqa: F401
from . import polynomial  # noqa: F401  (numpy.polynomial: a clear error, not a silent zero)
