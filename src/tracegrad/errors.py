"""Exception types raised by tracegrad.

Every error a user can trigger has its own type so that callers can catch
precisely what they expect, and every message says what to do next.
"""


class TracegradError(Exception):
    """Base class of every tracegrad error."""


class UnsupportedOperation(TracegradError, NotImplementedError):
    """A NumPy function or method was applied to a traced array but tracegrad
    has no derivative rule for it.

    Raised instead of silently running plain NumPy (which would drop the
    derivative). Register a rule with ``tracegrad.defvjp`` or express the
    computation with supported functions.
    """


class NonScalarOutput(TracegradError, TypeError):
    """``grad`` was asked to differentiate a function whose output is not a scalar."""


class NonDifferentiableInput(TracegradError, TypeError):
    """An input selected for differentiation has an integer, boolean or
    non-numeric dtype."""


class BadArgnums(TracegradError, ValueError):
    """``argnums`` is out of range, repeated, or not an int / tuple of ints."""


class BadOutput(TracegradError, TypeError):
    """The differentiated function returned something that is not an array,
    a number, or a pytree (tuple/list/dict) of them, or ``has_aux`` was set
    but the function did not return a ``(output, aux)`` pair."""


class InPlaceError(TracegradError, RuntimeError):
    """An in-place operation would corrupt a value saved for the backward pass,
    or is not supported on traced arrays."""


class EscapeError(TracegradError, RuntimeError):
    """A traced value was converted to a plain array or written into a plain
    buffer, which would silently drop its derivative."""


class EscapeWarning(UserWarning):
    """A traced value was turned into a plain number (``float(x)``,
    ``x.item()``): the computation continues on the value, without its
    derivative. Silence with ``tracegrad.escape_policy(convert="ignore")``."""


class NonFiniteError(TracegradError, FloatingPointError):
    """Under ``tracegrad.debug_nans()``: an operation produced a NaN or an
    infinity from finite inputs, in the forward or the backward pass."""


class DegenerateDerivativeWarning(RuntimeWarning):
    """A linear-algebra derivative met repeated eigenvalues or singular values
    (or a zero singular value) and dropped terms that multiplied a
    non-negligible (co)tangent: the result may be inaccurate. See the
    ``np.linalg`` section of :mod:`tracegrad.rules.linalg`."""


class CheckpointError(TracegradError, RuntimeError):
    """Recomputation would not reproduce the recorded program: a step is not
    deterministic, a parameter array was modified in place between steps, or
    a step function closes over a traced value instead of taking it as an
    argument."""
