"""Tests of the pure checkpoint schedules in ``tracegrad.checkpoint.schedule``.

The acceptance criterion of :func:`revolve` is the closed form of Griewank &
Walther: its untaped step count must equal ``t(n, s)`` exactly.  Every
schedule is also *executed* on a toy chain over the integers modulo a prime,
so a schedule that starts a step from the wrong state gives a wrong adjoint
even if the bookkeeping in :func:`simulate` were fooled.
"""
import math
import time
from functools import lru_cache

import pytest
from hypothesis import given, strategies as st

from tracegrad.checkpoint.schedule import (
    Advance,
    ForwardTaped,
    FreeSnapshot,
    OnlineSchedule,
    RestoreSnapshot,
    Reverse,
    TakeSnapshot,
    count,
    optimal_advances,
    repetition_number,
    revolve,
    simulate,
    sqrt_schedule,
)
from tracegrad.checkpoint import schedule as schedule_module


# ---------------------------------------------------------------------------
# A toy chain to execute schedules on
# ---------------------------------------------------------------------------

P = 1_000_003  # prime, so the chain does not collapse onto a short cycle


def step_fn(i, x):
    return (x * x + 3 * x + i + 1) % P


def step_derivative(i, x):
    # Formal derivative of the polynomial step; the chain rule holds mod P.
    return (2 * x + 3) % P


def reference(n, x0=7):
    xs = [x0]
    for i in range(n):
        xs.append(step_fn(i, xs[-1]))
    adjoint = 1
    for i in range(n - 1, -1, -1):
        adjoint = adjoint * step_derivative(i, xs[i]) % P
    return xs, adjoint


def execute(actions, n, capacity=None, x0=7):
    """Run a schedule on the toy chain, trusting nothing but the values.

    The executor only holds a value, not the index the schedule claims it
    is, so a schedule that advances or tapes from the wrong state yields a
    wrong taped input and a wrong adjoint.
    """
    xs, want_adjoint = reference(n, x0)
    x = x0
    slots = {}
    tape = None
    adjoint = 1
    evaluations = 0
    reversed_steps = []
    for act in actions:
        if isinstance(act, Advance):
            for i in range(act.start, act.end):
                x = step_fn(i, x)
                evaluations += 1
        elif isinstance(act, TakeSnapshot):
            if capacity is not None:
                assert 0 <= act.slot < capacity
            slots[act.slot] = x
        elif isinstance(act, RestoreSnapshot):
            x = slots[act.slot]
        elif isinstance(act, FreeSnapshot):
            del slots[act.slot]
        elif isinstance(act, ForwardTaped):
            assert x == xs[act.step], f"taped step {act.step} started from a wrong state"
            tape = (act.step, x)
            x = step_fn(act.step, x)
            evaluations += 1
        elif isinstance(act, Reverse):
            step, x_in = tape
            tape = None
            adjoint = adjoint * step_derivative(step, x_in) % P
            reversed_steps.append(step)
    assert reversed_steps == list(range(n - 1, -1, -1))
    assert adjoint == want_adjoint
    assert not slots
    return evaluations


def online_schedule(n, s, end_known):
    """All actions of an online run; ``end_known``: the driver learns n at state n-1."""
    sched = OnlineSchedule(s)
    actions = []
    for i in range(n - 1 if end_known else n):
        actions += sched.forward(i)
    actions += sched.reverse(n)
    return actions


# ---------------------------------------------------------------------------
# Closed forms
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("s", range(1, 9))
def test_repetition_number_is_least_r(s):
    for n in range(0, 500):
        r = repetition_number(n, s)
        assert math.comb(s + r, s) >= n
        assert r == 0 or math.comb(s + r - 1, s) < n


def test_optimal_advances_special_cases():
    assert optimal_advances(5000, 20) == 17976
    assert repetition_number(5000, 20) == 4
    for n in range(0, 60):
        assert optimal_advances(n, 1) == n * (n - 1) // 2
        for s in range(max(n - 1, 1), n + 3):
            assert optimal_advances(n, s) == max(n - 1, 0)


@lru_cache(maxsize=None)
def best_split_cost(length, s):
    """Exhaustive minimum over the split point of the Revolve recursion."""
    if length <= 1:
        return 0
    if s == 1:
        return length * (length - 1) // 2
    return min(d + best_split_cost(length - d, s - 1) + best_split_cost(d, s)
               for d in range(1, length))


def test_closed_form_equals_exhaustive_recursion():
    for s in range(1, 9):
        for n in range(0, 80):
            assert optimal_advances(n, s) == best_split_cost(n, s), (n, s)


@pytest.mark.parametrize("bad", [(-1, 2), (3, 0), (3, -2), (2.0, 2), (2, None)])
def test_invalid_arguments(bad):
    with pytest.raises(ValueError):
        revolve(*bad)
    with pytest.raises(ValueError):
        optimal_advances(*bad)


# ---------------------------------------------------------------------------
# Offline revolve
# ---------------------------------------------------------------------------

def check_revolve(n, s):
    actions = revolve(n, s)
    simulate(actions, n, capacity=s)
    c = count(actions)
    assert c["advances"] == optimal_advances(n, s), (n, s)
    assert c["taped"] == c["reversals"] == n
    assert c["evaluations"] == c["advances"] + n
    assert c["max_snapshots"] <= min(s, max(n - 1, 0))
    return actions, c


@pytest.mark.parametrize("s", range(1, 13))
def test_revolve_matches_closed_form_on_grid(s):
    for n in range(0, 301):
        check_revolve(n, s)


@pytest.mark.parametrize("n, s, advances", [
    (5000, 20, 17976),
    (10000, 30, 34016),
    (3000, 3, optimal_advances(3000, 3)),
    (2000, 64, optimal_advances(2000, 64)),
])
def test_revolve_large(n, s, advances):
    _, c = check_revolve(n, s)
    assert c["advances"] == advances
    if (n, s) == (5000, 20):
        assert c["evaluations"] == 22976
        assert c["max_snapshots"] == 20


def test_revolve_is_fast():
    start = time.perf_counter()
    revolve(5000, 20)
    assert time.perf_counter() - start < 1.0


@pytest.mark.slow
def test_revolve_large_chain_is_fast():
    start = time.perf_counter()
    actions = revolve(100_000, 50)
    assert time.perf_counter() - start < 5.0
    assert count(actions)["advances"] == optimal_advances(100_000, 50)


def test_revolve_deep_chain_without_recursion():
    # With s ~ n the Revolve recursion is n levels deep; the generator is
    # iterative, so this must not hit the interpreter's recursion limit.
    n = 5000
    _, c = check_revolve(n, n)
    assert c["advances"] == n - 1
    assert c["max_snapshots"] == n - 1


def test_revolve_edge_cases():
    assert revolve(0, 3) == []
    assert revolve(1, 1) == [ForwardTaped(0), Reverse(0)]
    assert revolve(2, 5) == [
        TakeSnapshot(0, 0), Advance(0, 1), ForwardTaped(1), Reverse(1),
        RestoreSnapshot(0, 0), FreeSnapshot(0, 0), ForwardTaped(0), Reverse(0),
    ]
    # s = 1: every step recomputed from x[0], n(n-1)/2 advances.
    actions = revolve(6, 1)
    assert count(actions)["advances"] == 15
    assert count(actions)["max_snapshots"] == 1
    assert [a for a in actions if isinstance(a, Advance)] == [
        Advance(0, i) for i in range(5, 0, -1)]


@pytest.mark.parametrize("n, s", [(1, 1), (2, 1), (7, 2), (30, 3), (100, 4), (257, 6),
                                  (1000, 10), (5000, 20)])
def test_revolve_executes_on_toy_chain(n, s):
    actions = revolve(n, s)
    assert execute(actions, n, capacity=s) == count(actions)["evaluations"]


@given(n=st.integers(0, 1500), s=st.integers(1, 60))
def test_revolve_property(n, s):
    actions, c = check_revolve(n, s)
    assert execute(actions, n, capacity=s) == c["evaluations"]


# ---------------------------------------------------------------------------
# sqrt schedule
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("s", [None, 1, 2, 3, 5, 8, 20, 64])
def test_sqrt_schedule_valid(s):
    for n in list(range(0, 60)) + [99, 100, 101, 257, 1000]:
        actions = sqrt_schedule(n, s)
        simulate(actions, n, capacity=s)
        c = count(actions)
        assert c["taped"] == c["reversals"] == n
        # Never better than the optimum at the slots it actually used.
        if n:
            assert c["advances"] >= optimal_advances(n, max(c["max_snapshots"], 1))
        if s is not None:
            assert c["max_snapshots"] <= s
        if n in (100, 257, 1000, 99):
            assert execute(actions, n, capacity=s) == c["evaluations"]


def test_sqrt_schedule_default_costs():
    for n in [4, 10, 100, 1000, 4096, 5000]:
        c = count(sqrt_schedule(n))
        root = math.isqrt(n - 1) + 1
        assert c["advances"] <= 2 * n
        assert c["max_snapshots"] <= 2 * root
    c = count(sqrt_schedule(10000))
    assert c["advances"] == 9900 + 100 * 99  # sweep to the last boundary + interiors
    assert c["max_snapshots"] == 100 + 98


def test_sqrt_schedule_with_budget():
    # Enough slots for two levels: about 2n evaluations within the budget.
    c = count(sqrt_schedule(1000, 70))
    assert c["max_snapshots"] <= 70 and c["advances"] < 2 * 1000
    # Too few slots: boundaries every ceil(n/s) steps, quadratic inside.
    assert count(sqrt_schedule(20, 1))["advances"] == 20 * 19 // 2
    c = count(sqrt_schedule(100, 10))
    assert c["max_snapshots"] == 10
    assert c["advances"] == 90 + 10 * 45
    # revolve is never worse at the same budget.
    for n, s in [(100, 10), (1000, 70), (1000, 40), (5000, 20)]:
        assert count(sqrt_schedule(n, s))["advances"] >= optimal_advances(n, s)


# ---------------------------------------------------------------------------
# Online schedule
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("end_known", [False, True])
@pytest.mark.parametrize("s", [1, 2, 3, 5, 8, 13])
def test_online_valid_and_executes(s, end_known):
    for n in list(range(1, 80)) + [150, 333, 1000]:
        actions = online_schedule(n, s, end_known)
        simulate(actions, n, capacity=s)
        c = count(actions)
        assert c["taped"] == c["reversals"] == n
        assert c["max_snapshots"] <= s
        assert c["advances"] >= optimal_advances(n, s)
        assert execute(actions, n, capacity=s) == c["evaluations"]


@given(n=st.integers(1, 600), s=st.integers(1, 30), end_known=st.booleans())
def test_online_property(n, s, end_known):
    actions = online_schedule(n, s, end_known)
    simulate(actions, n, capacity=s)
    assert execute(actions, n, capacity=s) == count(actions)["evaluations"]


def test_online_forward_actions_shape():
    sched = OnlineSchedule(3)
    assert sched.forward(0) == [TakeSnapshot(0, 0), Advance(0, 1)]
    assert sched.forward(1) == [TakeSnapshot(1, 1), Advance(1, 2)]
    assert sched.forward(2) == [TakeSnapshot(2, 2), Advance(2, 3)]
    # Full: the next call either stores nothing or replaces one held state.
    acts = sched.forward(3)
    assert acts[-1] == Advance(3, 4)
    assert len(acts) in (1, 3)
    assert len(sched.held) == 3 and sched.held[0] == (0, 0)


def test_online_few_steps_store_everything():
    # n <= s: every state is kept, 2n evaluations (offline needs 2n - 1).
    for s in (5, 20):
        for n in range(1, s + 1):
            c = count(online_schedule(n, s, end_known=False))
            assert c["advances"] == n
            c = count(online_schedule(n, s, end_known=True))
            assert c["advances"] == n - 1


def test_online_misuse():
    sched = OnlineSchedule(4)
    sched.forward(0)
    with pytest.raises(ValueError):
        sched.forward(2)
    sched.forward(1)
    with pytest.raises(ValueError):
        sched.reverse(5)
    sched.reverse(2)
    with pytest.raises(RuntimeError):
        sched.forward(2)
    with pytest.raises(RuntimeError):
        sched.reverse(2)
    with pytest.raises(ValueError):
        OnlineSchedule(0)


def ratio(actions, n, s):
    return count(actions)["evaluations"] / (optimal_advances(n, s) + n)


def test_online_cost_model_matches_actual_schedules():
    # The sweep test below predicts costs from the held states; check the
    # prediction against real schedules.
    for s in (5, 9, 20):
        sched = OnlineSchedule(s)
        for n in range(1, 400):
            held = [c for c, _ in sched.held]
            check = n < 60 or n % 11 == 0
            if n > 1 and check:
                known = (n - 1) + schedule_module._held_cost(held, n - 1, s)
                assert known == count(online_schedule(n, s, True))["advances"]
            sched.forward(n - 1)
            held = [c for c, _ in sched.held]
            if check:
                detect = n + schedule_module._held_cost(held, n, s)
                assert detect == count(online_schedule(n, s, False))["advances"]


@pytest.mark.parametrize("s", [
    5, 6, 9, 16, 29, 40,
    *(pytest.param(s, marks=pytest.mark.slow) for s in range(5, 41)
      if s not in (5, 6, 9, 16, 29, 40)),
])
def test_online_within_ten_percent_of_revolve(s):
    """Total evaluations within 1.1x of revolve for max(10, s + 1) <= n <= 5000.

    One forward sweep serves every n: after ``forward(n - 1)`` the cost of
    stopping there follows from the held states.  The one exception is
    n = s + 1 when the end is only detected at state n: *any* online
    schedule then needs 2s + 3 evaluations against revolve's 2s + 1 (all s
    slots are full when x[s] arrives, so x[s] or an earlier state must be
    recomputed), which exceeds 1.1 for s < 10.
    """
    sched = OnlineSchedule(s)
    t = schedule_module._t
    for n in range(1, 5001):
        held = [c for c, _ in sched.held]
        known = (n - 1) + (schedule_module._held_cost(held, n - 1, s) if n > 1 else 0) + n
        sched.forward(n - 1)
        held = [c for c, _ in sched.held]
        detect = n + schedule_module._held_cost(held, n, s) + n
        offline = t(n, s) + n
        if n < max(10, s + 1):
            continue
        assert 10 * known <= 11 * offline, (n, known, offline)
        if n == s + 1:
            assert detect == 2 * s + 3 and offline == 2 * s + 1
        else:
            assert 10 * detect <= 11 * offline, (n, detect, offline)


def test_online_spot_ratios():
    for n, s in [(5000, 20), (1000, 10), (5000, 5), (2000, 40)]:
        for end_known in (False, True):
            actions = online_schedule(n, s, end_known)
            simulate(actions, n, capacity=s)
            assert ratio(actions, n, s) <= 1.1


# ---------------------------------------------------------------------------
# count and simulate
# ---------------------------------------------------------------------------

def test_count_hand_made():
    actions = [
        TakeSnapshot(0, 0), Advance(0, 1), TakeSnapshot(1, 1), Advance(1, 2),
        ForwardTaped(2), Reverse(2),
        RestoreSnapshot(1, 1), FreeSnapshot(1, 1), ForwardTaped(1), Reverse(1),
        RestoreSnapshot(0, 0), FreeSnapshot(0, 0), ForwardTaped(0), Reverse(0),
    ]
    simulate(actions, 3, capacity=2)
    assert count(actions) == {"advances": 2, "taped": 3, "reversals": 3,
                              "max_snapshots": 2, "evaluations": 5}


GOOD = [TakeSnapshot(0, 0), Advance(0, 1), ForwardTaped(1), Reverse(1),
        RestoreSnapshot(0, 0), FreeSnapshot(0, 0), ForwardTaped(0), Reverse(0)]


def test_simulate_accepts_good():
    simulate(GOOD, 2, capacity=1)


@pytest.mark.parametrize("actions, capacity, match", [
    ([Advance(1, 2)] + GOOD[2:], None, "current state is 0"),
    ([TakeSnapshot(0, 3)] + GOOD[1:], 2, "outside range"),
    (GOOD[:1] + [TakeSnapshot(0, 0)] + GOOD[1:], None, "still holds"),
    (GOOD[:4] + [RestoreSnapshot(0, 1)] + GOOD[5:], None, "slot 1 holds None"),
    (GOOD[:5] + [FreeSnapshot(0, 2)] + GOOD[6:], None, "slot 2"),
    ([TakeSnapshot(0, 0), ForwardTaped(0), Reverse(0)], None, "next step to reverse is 1"),
    (GOOD[:3] + [Advance(2, 2)] + GOOD[3:], None, "must be followed by Reverse"),
    (GOOD[:2] + [Reverse(1)] + GOOD[4:], None, "directly follow ForwardTaped"),
    (GOOD[:4] + [ForwardTaped(0), Reverse(0)], None, "current state is None"),
    (GOOD[:4], None, "before reversing step 0"),
    (GOOD[:4] + [RestoreSnapshot(0, 0), ForwardTaped(0), Reverse(0)], None, "still held"),
    (GOOD[:7], None, "unreversed"),
    ([TakeSnapshot(0, 0), Advance(0, 3)] + GOOD[2:], None, "end <= 2"),
    (GOOD[:2] + ["ForwardTaped(1)"] + GOOD[3:], None, "not a schedule action"),
])
def test_simulate_rejects(actions, capacity, match):
    with pytest.raises(AssertionError, match=match):
        simulate(actions, 2, capacity=capacity)
