"""``numpy.polynomial``: coefficients must not silently lose their derivative.

The functions of ``numpy.polynomial`` are plain Python (no ``__array_function__``
dispatch) and convert their coefficient arrays with ``np.array(c, ...)``, which
copies a traced array into a plain one without calling any Python hook: the
gradient with respect to the coefficients came back as exactly zero. Their
evaluation in ``x`` is ordinary NumPy arithmetic and differentiates fine.

Importing tracegrad wraps the coefficient-taking entry points so that a
*traced* coefficient array raises :class:`tracegrad.EscapeError` (per
``escape_policy``) naming the function and the supported alternative; plain
coefficients go straight to NumPy's code. ``uninstall()`` restores them.
"""
import functools

import numpy.polynomial as _npp
from numpy.polynomial import polyutils as _pu

from ..core.array import escape, is_tracked

#: module -> functions taking points then coefficients (``f(x, c)``, ``f(x, y, c)``, ...)
_VAL = {
    "polynomial": ("polyval", "polyval2d", "polyval3d", "polygrid2d", "polygrid3d",
                   "polyvalfromroots"),
    "chebyshev": ("chebval", "chebval2d", "chebval3d", "chebgrid2d", "chebgrid3d"),
    "legendre": ("legval", "legval2d", "legval3d", "leggrid2d", "leggrid3d"),
    "hermite": ("hermval", "hermval2d", "hermval3d", "hermgrid2d", "hermgrid3d"),
    "hermite_e": ("hermeval", "hermeval2d", "hermeval3d", "hermegrid2d", "hermegrid3d"),
    "laguerre": ("lagval", "lagval2d", "lagval3d", "laggrid2d", "laggrid3d"),
}
_ORIGINAL = {}


def _traced(a):
    if is_tracked(a):
        return True
    return isinstance(a, (list, tuple)) and any(_traced(e) for e in a)


def _report(name):
    escape("escape", f"numpy.polynomial.{name} converts its coefficients with np.array, "
           "which drops their derivative (the gradient would be exactly zero). Evaluate the "
           "polynomial with NumPy arithmetic on the traced coefficients instead, e.g. "
           "np.polyval(c[::-1], x) for power series, or Horner's rule written out.", depth=3)


def _guard(fn, name, positions):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if any(p < len(args) and _traced(args[p]) for p in positions) or _traced(
                kwargs.get("c")):
            _report(name)
        return fn(*args, **kwargs)
    wrapper.__tracegrad_original__ = fn
    return wrapper


def install():
    """Wrap the coefficient-taking functions of ``numpy.polynomial`` (and the
    coefficient conversion every polynomial class uses)."""
    if _ORIGINAL:
        return
    for modname, names in _VAL.items():
        mod = getattr(_npp, modname)
        for name in names:
            fn = getattr(mod, name, None)
            if fn is None:
                continue
            # the coefficients (the roots for polyvalfromroots) follow the points
            positions = (3,) if name.endswith("3d") else (2,) if name.endswith("2d") else (1,)
            _ORIGINAL[(mod, name)] = fn
            setattr(mod, name, _guard(fn, f"{modname}.{name}", positions))
    _ORIGINAL[(_pu, "as_series")] = _pu.as_series
    _pu.as_series = _guard(_pu.as_series, "polyutils.as_series (Polynomial(c) and friends)",
                           (0,))


def uninstall():
    """Restore NumPy's own functions."""
    for (mod, name), fn in _ORIGINAL.items():
        setattr(mod, name, fn)
    _ORIGINAL.clear()


install()
