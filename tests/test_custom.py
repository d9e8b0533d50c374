"""Custom rules: custom_vjp, custom_jvp, defvjp/defjvp for functions tracegrad
does not own, and stop_gradient -- in reverse, forward (by transposition),
batched and second-order modes."""
import sys
import types

import numpy as np
import pytest

import tracegrad as tg
from tracegrad import custom
from tracegrad.core.primitive import PRIMITIVES

X = np.array([0.3, 1.2, -0.7])
Y = np.array([1.0, 2.0, 3.0])


def fd_grad(f, x, eps=1e-6):
    x = np.asarray(x, float)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


# --- custom_vjp ------------------------------------------------------------------------
def make_sin_mul(counter=None):
    @tg.custom_vjp
    def f(x, y):
        return np.sin(x) * y

    def f_fwd(x, y):
        if counter is not None:
            counter["fwd"] += 1
        return f(x, y), (np.cos(x), np.sin(x), y)

    def f_bwd(res, g):
        if counter is not None:
            counter["bwd"] += 1
        c, s, y = res
        return (c * g * y, s * g)

    f.defvjp(f_fwd, f_bwd)
    return f


def test_custom_vjp_plain_call_runs_the_function():
    count = {"fwd": 0, "bwd": 0}
    f = make_sin_mul(count)
    np.testing.assert_allclose(f(X, Y), np.sin(X) * Y)
    assert count == {"fwd": 0, "bwd": 0}
    assert f.__name__ == "f"


def test_custom_vjp_grad_uses_the_rule():
    count = {"fwd": 0, "bwd": 0}
    f = make_sin_mul(count)
    gx, gy = tg.grad(lambda x, y: np.sum(f(x, y)), argnums=(0, 1))(X, Y)
    np.testing.assert_allclose(gx, np.cos(X) * Y)
    np.testing.assert_allclose(gy, np.sin(X))
    # one fwd, and one bwd shared by both inputs
    assert count == {"fwd": 1, "bwd": 1}


def test_custom_vjp_rule_is_really_used():
    @tg.custom_vjp
    def clip_gradient(x, lo, hi):
        return x

    def fwd(x, lo, hi):
        return x, (lo, hi)

    def bwd(res, g):
        lo, hi = res
        return (np.clip(g, lo, hi), None, None)
    clip_gradient.defvjp(fwd, bwd)
    g = tg.grad(lambda x: np.sum(clip_gradient(x, -1.0, 1.0) * np.array([3.0, 0.5, -4.0])))(X)
    np.testing.assert_array_equal(g, [1.0, 0.5, -1.0])


def test_custom_vjp_forward_mode_by_transposition():
    f = make_sin_mul()
    out, t = tg.jvp(lambda x: f(x, Y), (X,), (np.array([1.0, -2.0, 0.5]),))
    np.testing.assert_allclose(out, np.sin(X) * Y)
    np.testing.assert_allclose(t, np.cos(X) * Y * [1.0, -2.0, 0.5])
    J = np.diag(np.cos(X) * Y)
    np.testing.assert_allclose(tg.jacfwd(lambda x: f(x, Y))(X), J)
    np.testing.assert_allclose(tg.jacrev(lambda x: f(x, Y))(X), J)
    np.testing.assert_allclose(tg.jacobian(lambda x: f(x, Y))(X), J)
    _, lin = tg.linearize(lambda x: f(x, Y), X)
    np.testing.assert_allclose(lin(np.ones(3)), np.cos(X) * Y)


def test_custom_vjp_second_order_every_composition():
    f = make_sin_mul()

    def s(x):
        return np.sum(f(x, Y) ** 2)

    # d²/dx² (sin x · y)² = 2 y² cos 2x
    H = np.diag(2 * Y ** 2 * np.cos(2 * X))
    np.testing.assert_allclose(tg.hessian(s)(X), H, atol=1e-12)
    np.testing.assert_allclose(tg.jacrev(tg.grad(s))(X), H, atol=1e-12)
    np.testing.assert_allclose(tg.jacfwd(tg.jacfwd(s))(X), H, atol=1e-12)
    np.testing.assert_allclose(tg.jacrev(tg.jacfwd(s))(X), H, atol=1e-12)
    np.testing.assert_allclose(tg.hvp(s, X, np.ones(3)), H @ np.ones(3), atol=1e-12)
    assert np.isclose(tg.grad(tg.grad(lambda x: f(x, 2.0)))(0.5), -2 * np.sin(0.5))
    # third order: d³/dx³ sin(x)·2 = -2 cos x
    assert np.isclose(tg.grad(tg.grad(tg.grad(lambda x: f(x, 2.0))))(0.5), -2 * np.cos(0.5))


def test_custom_vjp_second_order_uses_the_bwd_rule():
    # bwd deliberately returns 2 g x (the derivative of x², not of the primal
    # x³): higher derivatives differentiate the rule, as in JAX.
    @tg.custom_vjp
    def f(x):
        return x ** 3

    f.defvjp(lambda x: (x ** 3, x), lambda x, g: (2 * g * x,))
    assert tg.grad(f)(1.5) == 3.0
    assert tg.grad(tg.grad(f))(1.5) == 2.0
    assert tg.hessian(f)(1.5) == 2.0
    assert tg.jvp(f, (1.5,), (1.0,))[1] == 3.0


def test_custom_vjp_nondiff_argnums_and_pytree_residuals():
    @tg.custom_vjp
    def apply(fn, x, scale):
        return fn(x) * scale

    def fwd(fn, x, scale):
        return apply(fn, x, scale), {"x": x, "extra": (scale, None, 3)}

    def bwd(fn, res, g):
        x, (scale, none, three) = res["x"], res["extra"]
        assert none is None and three == 3
        # d/dx fn(x) for fn = np.exp
        return (g * np.exp(x) * scale, np.sum(g * fn(x)))

    apply = tg.custom_vjp(apply.fun, nondiff_argnums=(0,))
    apply.defvjp(fwd, bwd)
    gx, gs = tg.grad(lambda x, s: np.sum(apply(np.exp, x, s)), argnums=(0, 1))(X, 2.0)
    np.testing.assert_allclose(gx, 2 * np.exp(X))
    np.testing.assert_allclose(gs, np.sum(np.exp(X)))
    # keyword arguments are bound to their positions
    g = tg.grad(lambda x: np.sum(apply(np.exp, x, scale=3.0)))(X)
    np.testing.assert_allclose(g, 3 * np.exp(X))
    # forward mode through the transposed bwd
    _, t = tg.jvp(lambda x: apply(np.exp, x, 2.0), (X,), (np.ones(3),))
    np.testing.assert_allclose(t, 2 * np.exp(X))


def test_custom_vjp_pytree_arguments_and_outputs():
    @tg.custom_vjp
    def f(p):
        return {"sum": p["a"] + p["b"], "prod": p["a"] * p["b"]}

    def fwd(p):
        return f(p), (p["a"], p["b"])

    def bwd(res, g):
        a, b = res
        return ({"a": g["sum"] + g["prod"] * b, "b": g["sum"] + g["prod"] * a},)

    f.defvjp(fwd, bwd)
    p = {"a": np.array([1.0, 2.0]), "b": np.array([3.0, -1.0])}

    def loss(p):
        o = f(p)
        return np.sum(o["sum"] ** 2) + np.sum(o["prod"])
    g = tg.grad(loss)(p)
    np.testing.assert_allclose(g["a"], 2 * (p["a"] + p["b"]) + p["b"])
    np.testing.assert_allclose(g["b"], 2 * (p["a"] + p["b"]) + p["a"])
    J = tg.jacfwd(lambda a: f({"a": a, "b": p["b"]})["prod"])(p["a"])
    np.testing.assert_allclose(J, np.diag(p["b"]))


def test_custom_vjp_none_cotangent_and_constant_args():
    @tg.custom_vjp
    def f(x, y):
        return x * y

    f.defvjp(lambda x, y: (x * y, (x, y)), lambda res, g: (g * res[1], None))
    gx, gy = tg.grad(lambda x, y: np.sum(f(x, y)), argnums=(0, 1))(X, Y)
    np.testing.assert_allclose(gx, Y)
    np.testing.assert_array_equal(gy, 0)
    # a Python number as an argument is a constant
    np.testing.assert_allclose(tg.grad(lambda x: np.sum(f(x, 2.0)))(X), 2.0)


def test_custom_vjp_multiple_outputs():
    @tg.custom_vjp
    def polar(x, y):
        return np.hypot(x, y), np.arctan2(y, x)

    def fwd(x, y):
        r = np.hypot(x, y)
        return (r, np.arctan2(y, x)), (x, y, r)

    def bwd(res, g):
        x, y, r = res
        gr, gt = g
        return (gr * x / r - gt * y / r ** 2, gr * y / r + gt * x / r ** 2)

    polar.defvjp(fwd, bwd)

    def ref(x, y):
        return np.hypot(x, y), np.arctan2(y, x)

    def loss(f):
        return lambda x, y: np.sum(f(x, y)[0] * 2 + f(x, y)[1] ** 2)
    for argnums in (0, 1):
        np.testing.assert_allclose(tg.grad(loss(polar), argnums)(X, Y),
                                   tg.grad(loss(ref), argnums)(X, Y))
    # only one output used: the other's cotangent is zero
    np.testing.assert_allclose(tg.grad(lambda x: np.sum(polar(x, Y)[1]))(X),
                               tg.grad(lambda x: np.sum(ref(x, Y)[1]))(X))
    Jf = tg.jacfwd(lambda x: polar(x, Y))(X)
    Jr = tg.jacrev(lambda x: polar(x, Y))(X)
    Jref = tg.jacrev(lambda x: ref(x, Y))(X)
    for a, b, c in zip(Jf, Jr, Jref):
        np.testing.assert_allclose(a, c, atol=1e-14)
        np.testing.assert_allclose(b, c, atol=1e-14)
    H = tg.hessian(lambda x: np.sum(polar(x, Y)[0]))(X)
    np.testing.assert_allclose(H, tg.hessian(lambda x: np.sum(ref(x, Y)[0]))(X), atol=1e-14)


def test_custom_vjp_matrix_rule_batched():
    # a bwd that is not elementwise: batches must go through it one at a time
    A = np.array([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]])

    @tg.custom_vjp
    def matvec(x):
        return A @ x

    matvec.defvjp(lambda x: (A @ x, None), lambda res, g: (A.T @ g,))
    np.testing.assert_allclose(tg.jacrev(matvec)(X), A)
    np.testing.assert_allclose(tg.jacfwd(matvec)(X), A)
    np.testing.assert_allclose(tg.jacobian(matvec)(X), A)
    np.testing.assert_allclose(tg.jacfwd(tg.jacrev(lambda x: np.sum(matvec(x) ** 2)))(X),
                               2 * A.T @ A, atol=1e-13)


def test_custom_vjp_inside_a_loop_and_reused():
    f = make_sin_mul()

    def loop(x):
        for _ in range(3):
            x = f(x, 0.5) + x
        return np.sum(x)

    def ref(x):
        for _ in range(3):
            x = np.sin(x) * 0.5 + x
        return np.sum(x)
    np.testing.assert_allclose(tg.grad(loop)(X), tg.grad(ref)(X))
    np.testing.assert_allclose(tg.hessian(loop)(X), tg.hessian(ref)(X), atol=1e-13)
    out, pull = tg.vjp(lambda x: f(x, Y), X)
    np.testing.assert_allclose(pull(np.ones(3))[0], np.cos(X) * Y)
    np.testing.assert_allclose(pull(2 * np.ones(3))[0], 2 * np.cos(X) * Y)


def test_custom_vjp_errors():
    @tg.custom_vjp
    def f(x):
        return x * 2
    assert f(3.0) == 6.0            # no rule needed without a transform
    with pytest.raises(tg.UnsupportedOperation, match="defvjp"):
        tg.grad(f)(1.0)

    f.defvjp(lambda x: (x * 2, None), lambda res, g: g * 2)     # not a tuple
    with pytest.raises(tg.BadOutput, match="tuple"):
        tg.grad(f)(1.0)

    outer = np.array(2.0)

    def closing(x):
        @tg.custom_vjp
        def h(z):
            return z * x                  # closes over the traced x
        h.defvjp(lambda z: (z * x, None), lambda res, g: (g,))
        return h(outer * x)
    with pytest.raises(tg.UnsupportedOperation, match="closure"):
        tg.grad(lambda x: closing(x) + x)(1.0)

    @tg.custom_vjp
    def bad_fwd(x):
        return x

    bad_fwd.defvjp(lambda x: x, lambda res, g: (g,))
    with pytest.raises(tg.BadOutput, match="pair"):
        tg.grad(bad_fwd)(1.0)


def test_custom_vjp_untraceable_bwd_in_forward_mode_is_an_error():
    @tg.custom_vjp
    def f(x):
        return x * 2

    # np.asarray(g) drops g's trace: fine in reverse mode, but forward mode
    # cannot transpose it, and must say so rather than return zero.
    f.defvjp(lambda x: (x * 2, None), lambda res, g: (np.asarray(g) * 2 + 0.0,))
    assert tg.grad(f)(1.0) == 2.0
    with pytest.raises(tg.UnsupportedOperation, match="transpose"):
        tg.jvp(f, (1.0,), (1.0,))


def test_custom_vjp_primitive_is_not_registered():
    before = set(PRIMITIVES)
    f = make_sin_mul()
    tg.grad(lambda x: np.sum(f(x, Y)))(X)
    assert set(PRIMITIVES) == before


def test_custom_vjp_as_method():
    class Model:
        def __init__(self, w):
            self.w = w

        @tg.custom_vjp
        def __call__(self, x):
            return self.w * x

    # self is an argument like any other (JAX's rule too): a Python object is
    # a constant leaf, and bwd returns None as its cotangent
    Model.__call__.defvjp(lambda self, x: (self.w * x, self.w),
                          lambda res, g: (None, g * res))
    m = Model(3.0)
    assert tg.grad(lambda x: m(x))(2.0) == 3.0


# --- custom_jvp ------------------------------------------------------------------------
def make_softplus(counter=None):
    @tg.custom_jvp
    def softplus(x):
        return np.log1p(np.exp(x))

    @softplus.defjvp
    def softplus_jvp(primals, tangents):
        if counter is not None:
            counter["jvp"] += 1
        (x,), (t,) = primals, tangents
        return softplus(x), t / (1 + np.exp(-x))
    return softplus


def expit(x):
    return 1 / (1 + np.exp(-x))


def test_custom_jvp_forward_and_reverse():
    count = {"jvp": 0}
    sp_ = make_softplus(count)
    np.testing.assert_allclose(sp_(X), np.log1p(np.exp(X)))
    assert count["jvp"] == 0
    _, t = tg.jvp(sp_, (X,), (np.ones(3),))
    np.testing.assert_allclose(t, expit(X))
    np.testing.assert_allclose(tg.grad(lambda x: np.sum(sp_(x)))(X), expit(X))
    np.testing.assert_allclose(tg.jacfwd(sp_)(X), np.diag(expit(X)))
    np.testing.assert_allclose(tg.jacrev(sp_)(X), np.diag(expit(X)))
    np.testing.assert_allclose(tg.jacobian(sp_)(X), np.diag(expit(X)))
    H = np.diag(expit(X) * (1 - expit(X)))
    np.testing.assert_allclose(tg.hessian(lambda x: np.sum(sp_(x)))(X), H, atol=1e-14)
    np.testing.assert_allclose(tg.jacrev(tg.grad(lambda x: np.sum(sp_(x))))(X), H, atol=1e-14)
    np.testing.assert_allclose(tg.jacfwd(tg.jacfwd(lambda x: np.sum(sp_(x))))(X), H,
                               atol=1e-14)


def test_custom_jvp_rule_is_really_used():
    @tg.custom_jvp
    def f(x, y):
        return np.sin(x) * y

    # a deliberately different rule: d/dx = 10 y, d/dy = x
    f.defjvp(lambda p, t: (f(*p), 10 * p[1] * t[0] + p[0] * t[1]))
    gx, gy = tg.grad(lambda x, y: np.sum(f(x, y)), argnums=(0, 1))(X, Y)
    np.testing.assert_allclose(gx, 10 * Y)
    np.testing.assert_allclose(gy, X)
    _, t = tg.jvp(f, (X, Y), (np.ones(3), np.zeros(3)))
    np.testing.assert_allclose(t, 10 * Y)
    # second order differentiates the rule's tangent map (10 y, x): not even
    # symmetric here, which shows it is the rule, not sin(x) * y, that counts
    H = tg.hessian(lambda v: np.sum(f(v[0], v[1])))(np.array([0.3, 2.0]))
    np.testing.assert_allclose(H, [[0.0, 10.0], [1.0, 0.0]])


def test_custom_jvp_nondiff_argnums_and_defjvps():
    @tg.custom_jvp
    def power(n, x):
        return x ** n

    power = tg.custom_jvp(power.fun, nondiff_argnums=(0,))

    @power.defjvp
    def power_jvp(n, primals, tangents):
        (x,), (t,) = primals, tangents
        return x ** n, n * x ** (n - 1) * t

    np.testing.assert_allclose(tg.grad(lambda x: np.sum(power(3, x)))(X), 3 * X ** 2)
    np.testing.assert_allclose(tg.hessian(lambda x: np.sum(power(3, x)))(X), np.diag(6 * X),
                               atol=1e-14)

    @tg.custom_jvp
    def mul(x, y):
        return x * y
    mul.defjvps(lambda t, ans, x, y: t * y, lambda t, ans, x, y: x * t)
    gx, gy = tg.grad(lambda x, y: np.sum(mul(x, y)), argnums=(0, 1))(X, Y)
    np.testing.assert_allclose(gx, Y)
    np.testing.assert_allclose(gy, X)
    np.testing.assert_allclose(tg.jacfwd(mul, 1)(X, Y), np.diag(X))


def test_custom_jvp_matrix_rule_and_batches():
    A = np.array([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]])

    @tg.custom_jvp
    def matvec(x):
        return A @ x
    matvec.defjvp(lambda p, t: (A @ p[0], A @ t[0]))
    np.testing.assert_allclose(tg.jacfwd(matvec)(X), A)
    np.testing.assert_allclose(tg.jacrev(matvec)(X), A)
    np.testing.assert_allclose(tg.hessian(lambda x: np.sum(matvec(x) ** 2))(X), 2 * A.T @ A,
                               atol=1e-13)


def test_custom_jvp_errors():
    @tg.custom_jvp
    def f(x):
        return x
    with pytest.raises(tg.UnsupportedOperation, match="defjvp"):
        tg.grad(f)(1.0)
    f.defjvp(lambda p, t: p[0])
    with pytest.raises(tg.BadOutput, match="pair"):
        tg.jvp(f, (1.0,), (1.0,))


# --- stop_gradient -----------------------------------------------------------------------
def test_stop_gradient_every_mode():
    def f(x):
        return np.sum(x ** 2 * tg.stop_gradient(x))
    np.testing.assert_allclose(tg.grad(f)(X), 2 * X * X)
    _, t = tg.jvp(f, (X,), (np.ones(3),))
    np.testing.assert_allclose(t, np.sum(2 * X * X))
    np.testing.assert_allclose(tg.jacfwd(f)(X), 2 * X * X)
    np.testing.assert_allclose(tg.hessian(f)(X), np.diag(2 * X))
    np.testing.assert_allclose(tg.jacrev(tg.jacrev(f))(X), np.diag(2 * X))
    assert tg.grad(lambda x: tg.stop_gradient(x) * 1.0 + 0.0 * x)(2.0) == 0.0
    # inside the rule of an outer derivative: grad of (x * stop(grad of x²))
    g = tg.grad(lambda x: x * tg.stop_gradient(tg.grad(lambda y: y ** 2)(x)))(3.0)
    assert g == 6.0


def test_stop_gradient_values_and_pytrees():
    assert tg.stop_gradient(3.0) == 3.0
    a = np.arange(3.0)
    assert tg.stop_gradient(a) is a
    tree = {"a": a, "b": (1.0, None)}
    assert tg.stop_gradient(tree) is tree

    def f(x):
        out = tg.stop_gradient({"u": x, "v": (x * 2, "label")})
        assert type(out["u"]) is np.ndarray and out["v"][1] == "label"
        return np.sum(out["u"] * x + out["v"][0])
    np.testing.assert_allclose(tg.grad(f)(X), X)


def test_stop_gradient_is_a_registered_nondiff_primitive():
    prim = PRIMITIVES["stop_gradient"]
    assert prim.nondiff and prim is custom.STOP_GRADIENT


# --- defvjp / defjvp for functions tracegrad does not own ---------------------------------
@pytest.fixture
def cleanup():
    funcs = []
    yield funcs
    for f in funcs:
        custom.remove_rules(f)


def _escaping_cube(x):
    """Stands for compiled third-party code: converts its input to a plain array."""
    return np.asarray(x) ** 3


def test_defvjp_python_function(cleanup):
    cleanup.append(_escaping_cube)
    cube = tg.defvjp(_escaping_cube, lambda ans, x: lambda g: g * 3 * x ** 2)
    assert cube is not _escaping_cube and cube.__name__ == "_escaping_cube"
    np.testing.assert_allclose(cube(X), X ** 3)               # plain call
    np.testing.assert_allclose(tg.grad(lambda x: np.sum(cube(x)))(X), 3 * X ** 2)
    np.testing.assert_allclose(tg.jvp(cube, (X,), (np.ones(3),))[1], 3 * X ** 2)
    np.testing.assert_allclose(tg.jacfwd(cube)(X), np.diag(3 * X ** 2))
    np.testing.assert_allclose(tg.jacrev(cube)(X), np.diag(3 * X ** 2))
    np.testing.assert_allclose(tg.hessian(lambda x: np.sum(cube(x)))(X), np.diag(6 * X))
    np.testing.assert_allclose(tg.grad(tg.grad(lambda x: cube(x)))(1.5), 9.0)
    # the unwrapped function still drops the derivative: that is why defvjp wraps
    np.testing.assert_array_equal(tg.grad(lambda x: np.sum(_escaping_cube(x)))(X), 0)


def test_defjvp_python_function_and_both(cleanup):
    def scale2(x, y):
        return np.asarray(x) * np.asarray(y) * 2

    cleanup.append(scale2)
    f = tg.defjvp(scale2, lambda t, ans, x, y: 2 * t * y, lambda t, ans, x, y: 2 * x * t)
    gx, gy = tg.grad(lambda x, y: np.sum(f(x, y)), argnums=(0, 1))(X, Y)
    np.testing.assert_allclose(gx, 2 * Y)
    np.testing.assert_allclose(gy, 2 * X)
    np.testing.assert_allclose(tg.jacrev(f)(X, Y), np.diag(2 * Y))
    # adding a VJP rule to the same function (through the wrapper): both kinds coexist
    g = tg.defvjp(f, lambda ans, x, y: lambda g: 100 * g)
    assert g is f
    assert np.all(tg.grad(lambda x: np.sum(f(x, Y)))(X) == 100)     # VJP rule used
    np.testing.assert_allclose(tg.jvp(lambda x: f(x, Y), (X,), (np.ones(3),))[1], 2 * Y)


def test_defvjp_argnums_kwargs_and_nondiff(cleanup):
    def weighted(x, w=None, power=1):
        w = np.ones_like(np.asarray(x)) if w is None else np.asarray(w)
        return np.asarray(x) ** power * w

    cleanup.append(weighted)
    f = tg.defvjp(weighted,
                  lambda ans, x, w=None, power=1: lambda g: g * power * x ** (power - 1) * w,
                  lambda ans, x, w=None, power=1: lambda g: g * x ** power,
                  argnums=(0, 1))
    gx, gw = tg.grad(lambda x, w: np.sum(f(x, w=w, power=2)), argnums=(0, 1))(X, Y)
    np.testing.assert_allclose(gx, 2 * X * Y)
    np.testing.assert_allclose(gw, X ** 2)
    # a traced argument without a rule is an error, not a silent zero
    with pytest.raises(tg.UnsupportedOperation, match="no derivative rule"):
        tg.grad(lambda p: np.sum(weighted_pos(f, X, Y, p)))(2.0)


def weighted_pos(f, x, w, p):
    return f(x, w, p)


def test_defvjp_none_marks_nondifferentiable(cleanup):
    def shift(x, k):
        return np.asarray(x) + np.asarray(k)

    cleanup.append(shift)
    f = tg.defvjp(shift, lambda ans, x, k: lambda g: g, None)
    gx, gk = tg.grad(lambda x, k: np.sum(f(x, k)), argnums=(0, 1))(X, Y)
    np.testing.assert_allclose(gx, 1)
    np.testing.assert_allclose(gk, 0)


def test_defvjp_multiple_outputs(cleanup):
    def sincos(x):
        x = np.asarray(x)
        return np.sin(x), np.cos(x)

    cleanup.append(sincos)
    f = tg.defvjp(sincos, lambda ans, x: lambda g: g[0] * ans[1] - g[1] * ans[0])
    g = tg.grad(lambda x: np.sum(f(x)[0] * 2 + f(x)[1]))(X)
    np.testing.assert_allclose(g, 2 * np.cos(X) - np.sin(X))
    J = tg.jacfwd(f)(X)
    np.testing.assert_allclose(J[0], np.diag(np.cos(X)))
    np.testing.assert_allclose(J[1], np.diag(-np.sin(X)))
    np.testing.assert_allclose(tg.hessian(lambda x: np.sum(f(x)[0]))(X), np.diag(-np.sin(X)),
                               atol=1e-15)


def test_defvjp_install_patches_module_attributes(cleanup):
    mod = types.ModuleType("tg_third_party")

    def lib_cube(x):
        return np.asarray(x) ** 3
    lib_cube.__module__ = "tg_third_party"
    mod.lib_cube = lib_cube
    user = types.ModuleType("tg_user_code")
    user.cube = lib_cube                     # `from tg_third_party import lib_cube as cube`
    sys.modules["tg_third_party"] = mod
    sys.modules["tg_user_code"] = user
    try:
        cleanup.append(lib_cube)
        w = tg.defvjp(lib_cube, lambda ans, x: lambda g: g * 3 * x ** 2, install=True)
        assert mod.lib_cube is w and user.cube is w
        np.testing.assert_allclose(tg.grad(lambda x: np.sum(mod.lib_cube(x)))(X), 3 * X ** 2)
        np.testing.assert_allclose(tg.grad(lambda x: np.sum(user.cube(x)))(X), 3 * X ** 2)
        custom.remove_rules(lib_cube)
        assert mod.lib_cube is lib_cube and user.cube is lib_cube
    finally:
        del sys.modules["tg_third_party"], sys.modules["tg_user_code"]


def test_defvjp_numpy_function_is_dispatched_and_restored(cleanup):
    # A NumPy function reached through __array_function__: the rule goes into
    # the dispatch table, so the unchanged np.i0 call differentiates (here with
    # a deliberately recognisable rule, replacing any built-in one).
    from tracegrad.core.primitive import FUNCTION_HANDLERS
    prev = FUNCTION_HANDLERS.get(np.i0)
    cleanup.append(np.i0)
    out = tg.defvjp(np.i0, lambda ans, x: lambda g: g * 7.0)
    assert out is np.i0
    np.testing.assert_array_equal(tg.grad(lambda x: np.sum(np.i0(x)))(X), 7.0)
    np.testing.assert_array_equal(tg.jvp(np.i0, (X,), (np.ones(3),))[1], 7.0)
    custom.remove_rules(np.i0)
    assert FUNCTION_HANDLERS.get(np.i0) is prev


def test_defvjp_ufunc_works_unchanged(cleanup):
    # scipy.special.spence is a ufunc without a built-in rule
    sp = pytest.importorskip("scipy.special")
    from tracegrad.core.primitive import UFUNC_PRIMS
    if sp.spence in UFUNC_PRIMS:
        pytest.skip("spence has a built-in rule now")
    with pytest.raises(tg.UnsupportedOperation):
        tg.grad(sp.spence)(2.0)
    cleanup.append(sp.spence)
    out = tg.defvjp(sp.spence, lambda ans, z: lambda g: g * np.log(z) / (1 - z))
    assert out is sp.spence
    z = np.array([0.5, 2.0, 3.0])
    np.testing.assert_allclose(tg.grad(lambda z: np.sum(sp.spence(z)))(z),
                               fd_grad(lambda z: np.sum(sp.spence(z)), z), rtol=1e-7)
    np.testing.assert_allclose(tg.jacfwd(sp.spence)(z), np.diag(np.log(z) / (1 - z)))
    # second order through the rule: d/dz log(z)/(1-z)
    h = tg.grad(tg.grad(lambda z: sp.spence(z)))(2.0)
    assert np.isclose(h, (1 / 2.0 * (1 - 2.0) + np.log(2.0)) / (1 - 2.0) ** 2)
    custom.remove_rules(sp.spence)
    assert sp.spence not in UFUNC_PRIMS


def test_defvjp_logsumexp_from_scipy(cleanup):
    sp = pytest.importorskip("scipy.special")
    cleanup.append(sp.logsumexp)

    def lse_vjp(ans, a, axis=None, b=None, keepdims=False, return_sign=False):
        def vjp(g):
            full = ans if keepdims or axis is None else np.expand_dims(ans, axis)
            gf = g if keepdims or axis is None else np.expand_dims(g, axis)
            w = np.exp(a - full)
            return gf * (w if b is None else w * b)
        return vjp
    lse = tg.defvjp(sp.logsumexp, lse_vjp)
    A = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]])
    np.testing.assert_allclose(lse(A, axis=1), sp.logsumexp(A, axis=1))
    g = tg.grad(lambda a: np.sum(lse(a, axis=1)))(A)
    np.testing.assert_allclose(g, sp.softmax(A, axis=1))
    np.testing.assert_allclose(tg.grad(lse)(A), sp.softmax(A))
    J = tg.jacfwd(lambda a: lse(a, axis=1))(A)
    np.testing.assert_allclose(J, tg.jacrev(lambda a: lse(a, axis=1))(A), atol=1e-15)
    H = tg.hessian(lambda x: lse(x))(A[0])
    s = sp.softmax(A[0])
    np.testing.assert_allclose(H, np.diag(s) - np.outer(s, s), atol=1e-14)


def test_defvjp_traced_value_in_a_container_is_an_error(cleanup):
    def total(xs):
        return sum(np.asarray(x) for x in xs)

    cleanup.append(total)
    f = tg.defvjp(total, lambda ans, xs: lambda g: [g for _ in xs])
    with pytest.raises(tg.UnsupportedOperation, match="inside a list"):
        tg.grad(lambda x: f([x, x]))(1.0)


def test_custom_rules_under_jit():
    jit = pytest.importorskip("tracegrad.compile.jit").jit
    f = make_sin_mul()
    sp_ = make_softplus()

    def loss(x):
        return np.sum(f(x, Y) ** 2) + np.sum(sp_(x) * tg.stop_gradient(x))

    for k in range(3):
        x = X + 0.1 * k
        np.testing.assert_allclose(jit(loss)(x), loss(x))
        np.testing.assert_allclose(jit(tg.grad(loss))(x), tg.grad(loss)(x))
    np.testing.assert_allclose(tg.grad(jit(loss))(X), tg.grad(loss)(X))


def test_custom_vjp_on_a_value_written_through_a_view():
    f = make_sin_mul()

    def loss(x):
        y = x * 1.0
        v = y[1:]
        v[0] = x[0] * 3.0            # writes y[1] through the view
        return np.sum(f(y, Y))

    def ref(x):
        y = np.stack([x[0], x[0] * 3.0, x[2]])
        return np.sum(np.sin(y) * Y)
    np.testing.assert_allclose(tg.grad(loss)(X), tg.grad(ref)(X))
