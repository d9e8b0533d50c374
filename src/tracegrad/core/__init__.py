"""The eager core: traced arrays, tapes, primitives, forward and reverse walks."""
