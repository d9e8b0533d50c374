"""NumPy functions that run through NumPy's own Python code (``func._implementation``).

Many NumPy functions are written in Python on top of other NumPy calls
(``np.average`` calls ``mean``, ``multiply`` and ``sum``). Called on a traced
array, such a function can run its ``_implementation`` unchanged: every call
inside dispatches back to tracegrad and is recorded as the primitive it is,
so no rule needs to be written.

This is an **allow-list**, not a default. Many ``_implementation`` functions
call ``np.asarray(x)`` or ``np.array(x, subok=False)``, which silently turns
a traced array into a plain one and drops its derivative, or write results
into a plain buffer (``out = np.empty_like(x); out[...] = ...``). A function
is listed only after reading its source for the NumPy versions we support
and checking, in ``tests/test_fallback.py``, that its gradient matches
finite differences. Everything else keeps raising
:class:`tracegrad.UnsupportedOperation`.

Each entry says why the implementation is safe (what it calls).
"""
import numpy as np

from ..core.primitive import defhandler

#: function -> why its ``_implementation`` keeps traced arrays traced
FALLBACK = {}


def _allow(func, why):
    impl = getattr(func, "_implementation", None)
    if impl is None:
        raise TypeError(f"{func!r} has no _implementation")
    FALLBACK[func] = why
    defhandler(func)(impl)


_TABLE = [
    (np.average, "asanyarray, mean / multiply + sum / true_divide, broadcast_to"),
    (np.diff, "asanyarray, broadcast_to + concatenate for prepend/append, slicing, subtract"),
    (np.triu, "asanyarray, where with a plain np.tri mask"),
    (np.tril, "asanyarray, where with a plain np.tri mask"),
    (np.sinc, "asanyarray, multiply, where(x, x, eps), sin, divide"),
    (np.i0, "asanyarray, abs, np.piecewise (a tracegrad handler), exp/sqrt and the Clenshaw "
            "recurrence in plain arithmetic"),
    (np.polyadd, "atleast_1d, zeros + concatenate, add"),
    (np.polysub, "atleast_1d, zeros + concatenate, subtract"),
    (np.append, "asanyarray, ravel, concatenate"),
    (np.real_if_close, "asanyarray, .real when the imaginary part is negligible"),
    (np.rollaxis, "normalize_axis_index, a[...] or a.transpose"),
    (np.extract, "ravel, nonzero of the (plain) condition, take"),
    (np.resize, "ravel, concatenate of repeats + slicing, reshape; zeros_like when empty"),
]
if hasattr(np, "cumulative_sum"):  # NumPy >= 2.1
    _TABLE += [
        (np.cumulative_sum, "atleast_1d, add.accumulate, full_like + concatenate for "
                            "include_initial"),
        (np.cumulative_prod, "atleast_1d, multiply.accumulate, full_like + concatenate for "
                             "include_initial"),
    ]

for _f, _why in _TABLE:
    _allow(_f, _why)


def is_fallback(func):
    """True when ``func`` runs through its ``_implementation`` on traced arrays."""
    return func in FALLBACK


__all__ = ["FALLBACK", "is_fallback"]
