"""Choose how each part of a captured graph runs and build the plan."""
from .plan import interpret


def lower(graph, options=None):
    """The plan for ``graph`` (see :mod:`.plan`)."""
    return interpret(graph)
