"""Tapes, nodes and nesting levels.

Every transform that is running (a ``grad``, a ``jvp``, a ``jit`` capture)
owns one *level*. Levels are kept on a per-thread stack, so two threads
tracing at once never see each other's levels. A traced value carries one
*tag* per level it depends on (``{level: payload}``): for a reverse level the
payload is the value's variable id on that level's tape, for a forward level
it is the value's tangent.

A level is *active* while its transform records. When a level runs a rule
(a JVP rule during the forward pass, a VJP rule during the backward walk) the
level itself and every level nested inside it are hidden, so the rule's own
NumPy calls are recorded only by the levels outside it. That ordering is
what makes ``grad(grad(f))``, ``jvp(grad(f))`` and friends compose without
perturbation confusion.
"""
import threading

import numpy as np

from .. import errors


class _State(threading.local):
    def __init__(self):
        self.stack = []
        self.entered = 0   # levels entered so far (tells a transform a nested one ran)


_state = _State()


def level_stack():
    """The calling thread's stack of active levels, outermost first."""
    return _state.stack


def levels_entered():
    """How many levels the calling thread has entered so far."""
    return _state.entered


class Level:
    """Base class of a transform's level on the thread's stack."""

    __slots__ = ("depth", "active", "__weakref__")
    #: a capture level (jit) also records non-differentiable operations
    captures_all = False

    def __init__(self):
        self.depth = 0
        self.active = False

    def on_concrete(self, x, kind):
        """Called when a value this level tracks is used concretely; only
        capturing levels (``captures_all``) receive it."""

    def __enter__(self):
        stack = _state.stack
        self.depth = len(stack) + 1
        self.active = True
        stack.append(self)
        _state.entered += 1
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        """Stop recording: values tagged by this level become constants."""
        if self.active:
            self.active = False
            stack = _state.stack
            # Levels are closed in LIFO order, except when an exception
            # unwinds several at once; remove this one and anything inside it.
            if self in stack:
                del stack[stack.index(self):]


class hidden:
    """Hide ``level`` and every level nested inside it while a rule runs."""

    __slots__ = ("level", "saved")

    def __init__(self, level):
        self.level = level

    def __enter__(self):
        stack = _state.stack
        i = self.level.depth - 1
        self.saved = saved = stack[i:]
        del stack[i:]
        for lv in saved:
            lv.active = False

    def __exit__(self, *exc):
        for lv in self.saved:
            lv.active = True
        _state.stack.extend(self.saved)
        return False


class Node:
    """One recorded primitive application on a reverse tape.

    ``ins`` are the variable ids of the inputs (-1 for constants), ``out`` the
    id (or tuple of ids for a multi-output primitive). ``args``/``ans`` are
    the inputs and output saved for the VJP rule (``None`` when the rule does
    not need them); ``meta`` keeps each input's shape and dtype, which every
    rule may use even when the values themselves were not saved.
    """

    __slots__ = ("prim", "ins", "out", "params", "args", "ans", "meta", "vers", "where")

    def __init__(self, prim, ins, out, params, args, ans, meta):
        self.prim = prim
        self.ins = ins
        self.out = out
        self.params = params
        self.args = args
        self.ans = ans
        self.meta = meta
        self.vers = None
        self.where = None


class Tape(Level):
    """A reverse-mode level: records nodes in execution order."""

    __slots__ = ("nodes", "nvars", "mutated")

    def __init__(self):
        super().__init__()
        self.nodes = []
        self.nvars = 0
        # set when an in-place write happened while recording: only then
        # can a saved value have a snapshot the backward walk must use
        self.mutated = False

    def new_var(self):
        v = self.nvars
        self.nvars = v + 1
        return v


def current_levels():
    return list(_state.stack)


def no_levels_active():
    return not _state.stack




# Recording lives with the Tape, but needs TracedArray; array.py does not
# import this module, so the import below cannot cycle.
from .array import DEBUG, TracedArray, _user_frame  # noqa: E402
from .primitive import ShapeDtype  # noqa: E402


def _versions(prim, args, ans):
    """Versions of the saved values that live in an alias group (views or
    mutated arrays), so the backward walk can find the right snapshot."""
    vers = [0] * (len(args) + 1)
    if prim.save_args:
        for i, a in enumerate(args):
            if type(a) is TracedArray and a._al is not None:
                vers[i] = a._al.version
                a._al.watch[id(a)] = a
    if prim.save_ans and type(ans) is TracedArray and ans._al is not None:
        vers[-1] = ans._al.version
        ans._al.watch[id(ans)] = ans
    return vers


_SCALAR = ((), None)
_new = object.__new__


def _where():
    f = _user_frame(3)
    return f"{f.f_code.co_filename}:{f.f_lineno}" if f is not None else "<unknown>"


def _scan(self, args):
    """Variable ids and (shape, dtype) of the inputs; whether any is tracked
    by this tape; whether any lives in an alias group."""
    ins = []
    meta = []
    found = False
    grouped = False
    for a in args:
        if type(a) is TracedArray:
            if a._al is not None:
                grouped = True
            v = a._tg.get(self, -1)
            if v >= 0:
                found = True
            ins.append(v)
            meta.append((a.shape, a.dtype))
        else:
            ins.append(-1)
            meta.append((a.shape, a.dtype) if isinstance(a, np.ndarray) else _SCALAR)
    return ins, meta, found, grouped


def _record(self, prim, args, t, params, tags):
    if prim.nondiff:
        return
    # _scan inlined: this runs once per traced operation
    ins = []
    meta = []
    found = False
    grouped = False
    for a in args:
        if type(a) is TracedArray:
            if a._al is not None:
                grouped = True
            v = a._tg.get(self, -1)
            if v >= 0:
                found = True
            ins.append(v)
            meta.append((a.shape, a.dtype))
        else:
            ins.append(-1)
            meta.append((a.shape, a.dtype) if isinstance(a, np.ndarray) else _SCALAR)
    if not found:
        return
    v = self.nvars
    self.nvars = v + 1
    tags[self] = v
    # Values a rule does not need are not kept alive: only their shapes
    # (in meta) are, and the walker hands the rule ShapeDtype stand-ins.
    # Built field by field: cheaper than a call to Node.__init__, and this
    # runs once per traced operation.
    node = _new(Node)
    node.prim = prim
    node.ins = ins
    node.out = v
    node.params = params
    node.args = args if prim.save_args else None
    # (shape, dtype) when the output is not kept: the walker builds a
    # ShapeDtype only for the rules that need one
    node.ans = t if prim.save_ans else (t.shape, t.dtype)
    node.meta = meta
    node.vers = _versions(prim, args, t) if grouped or (prim.save_ans and t._al is not None) \
        else None
    node.where = _where() if DEBUG[0] else None
    self.nodes.append(node)


def _record_multi(self, prim, args, outs, params):
    if prim.nondiff:
        return
    ins, meta, found, grouped = _scan(self, args)
    if not found:
        return
    vs = []
    for t in outs:
        if t.dtype.kind in "fc":
            v = self.nvars
            self.nvars = v + 1
            t._tg[self] = v
            vs.append(v)
        else:
            vs.append(-1)
    ans = outs if prim.save_ans else tuple(ShapeDtype(t.shape, t.dtype) for t in outs)
    node = Node(prim, ins, tuple(vs), params, args if prim.save_args else None, ans, meta)
    if grouped:
        node.vers = _versions(prim, args, None)
    self.nodes.append(node)


Tape.process = _record
Tape.process_multi = _record_multi


class Alias:
    """The arrays that share one buffer: a root and the views derived from it.

    Writes are recorded against the root's value (a new variable per level,
    cost proportional to the written region); views learn of a write through
    ``version`` and re-derive their variables from the root by replaying
    their chain of view primitives the next time they are used. ``watch``
    holds the members that some node saved for its backward rule and that
    have not been snapshotted since: a write overlapping one of them first
    copies its old value, so no saved value is ever silently overwritten.
    """

    __slots__ = ("root", "version", "watch")

    def __init__(self, root):
        self.root = root
        self.version = 0
        self.watch = {}
