"""Flatten and unflatten pytrees made of tuples, lists and dicts.

Leaves are anything that is not a tuple (namedtuples included), list, dict or ``None``
(arrays, Python numbers). ``None`` is an empty subtree, as in JAX: a parameter dict may hold
``{"w": w, "b": None}`` and its gradient has ``None`` in the same place. Dict leaves are
ordered by sorted key, as in JAX, so two dicts with the same keys flatten alike whatever their
insertion order.
"""

_LEAF = None
_NONE = ("None",)   # the tree definition of None: no leaves


class _Named:
    """Tree-definition tag of a namedtuple type (compares by the type)."""

    __slots__ = ("cls",)

    def __init__(self, cls):
        self.cls = cls

    def __eq__(self, other):
        return type(other) is _Named and other.cls is self.cls

    def __hash__(self):
        return hash(self.cls)


def tree_flatten(tree):
    """Return ``(leaves, treedef)`` for a pytree."""
    leaves = []
    treedef = _flatten(tree, leaves)
    return leaves, treedef


def _flatten(tree, leaves):
    if tree is None:
        return _NONE
    t = type(tree)
    if t is tuple or t is list:
        return (t, tuple(_flatten(c, leaves) for c in tree))
    if isinstance(tree, tuple) and hasattr(t, "_fields"):
        # namedtuples (np.linalg.eigh's EighResult, user records) keep their type
        return (_Named(t), tuple(_flatten(c, leaves) for c in tree))
    if t is dict:
        keys = sorted(tree)
        return (dict, tuple(keys), tuple(_flatten(tree[k], leaves) for k in keys))
    leaves.append(tree)
    return _LEAF


def tree_unflatten(treedef, leaves):
    """Rebuild a pytree of ``treedef``'s structure from ``leaves``."""
    it = iter(leaves)
    out = _unflatten(treedef, it)
    return out


def _unflatten(treedef, it):
    if treedef is _LEAF:
        return next(it)
    if treedef is _NONE:
        return None
    if treedef[0] is dict:
        _, keys, children = treedef
        return {k: _unflatten(c, it) for k, c in zip(keys, children)}
    t, children = treedef
    if type(t) is _Named:
        return t.cls(*[_unflatten(c, it) for c in children])
    return t(_unflatten(c, it) for c in children)


def tree_map(f, tree, *rest):
    """Apply ``f`` leafwise to one or more pytrees of the same structure."""
    leaves, treedef = tree_flatten(tree)
    others = [tree_flatten(r)[0] for r in rest]
    return tree_unflatten(treedef, [f(*xs) for xs in zip(leaves, *others)])


def treedef_is_leaf(treedef):
    return treedef is _LEAF
