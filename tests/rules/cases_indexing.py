"""Registry cases for indexing handlers composed of existing primitives
(joined to ``cases.py``'s tables on import; see its docstring)."""
import numpy as np

from cases import case


@case("setitem")
def put_along_axis_(d):
    """np.put_along_axis: a recorded setitem (repeated indices: the last write wins)."""
    s = d.shape(min_dims=1)
    ax = d.axis(len(s))
    ishape = list(s)
    ishape[ax] = d.integer(1, 3)
    idx = d.index(s[ax], tuple(ishape))
    vshape = tuple(d.choice([1, k]) for k in ishape)

    def f(x, v):
        y = x * 1.0
        np.put_along_axis(y, idx, v, axis=ax)
        return y
    return f, (d.array(s), d.array(vshape))


@case("setitem")
def put_along_axis_flat(d):
    """np.put_along_axis(..., axis=None): writes into the flattened array."""
    s = d.shape(min_dims=1)
    n = int(np.prod(s))
    idx = d.index(n, (d.integer(1, 3),))

    def f(x, v):
        y = x * 1.0
        np.put_along_axis(y, idx, v, axis=None)
        return y
    return f, (d.array(s), d.array(d.choice([(), (1,)])))
