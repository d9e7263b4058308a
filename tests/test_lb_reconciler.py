"""The reconciler's rules, as pure decisions."""

from skycap.lb.backends import DISABLED, DRAINING, ENABLED, Member, MemberState
from skycap.lb.reconciler import ADD, DRAIN, ENABLE, REMOVE, PoolMemory, in_step, plan

A, B, C = Member("10.0.0.1", 80), Member("10.0.0.2", 80), Member("10.0.0.3", 80)
RULES = {"drain_seconds": 10.0, "empty_grace_seconds": 30.0}


def actions(result):
    return [(c.action, c.member) for c in result.changes]


def test_adds_new_ready_endpoints_and_adopts_what_is_right():
    memory = PoolMemory()
    result = plan({A, B}, {A: MemberState(ENABLED)}, memory, now=0, trusted=True, **RULES)
    assert actions(result) == [(ADD, B)]


def test_nothing_to_do_when_in_step():
    current = {A: MemberState(ENABLED), B: MemberState(ENABLED)}
    result = plan({A, B}, current, PoolMemory(), now=0, trusted=True, **RULES)
    assert result.changes == [] and in_step({A, B}, current)


def test_drains_then_removes_after_drain_seconds():
    memory = PoolMemory()
    result = plan({A}, {A: MemberState(ENABLED), B: MemberState(ENABLED)}, memory, now=100, trusted=True, **RULES)
    assert actions(result) == [(DRAIN, B)] and result.wake_in == 10
    result = plan({A}, {A: MemberState(ENABLED), B: MemberState(DRAINING, 3)}, memory, now=105, trusted=True, **RULES)
    assert actions(result) == [] and result.wake_in == 5
    result = plan({A}, {A: MemberState(ENABLED), B: MemberState(DRAINING, 3)}, memory, now=110, trusted=True, **RULES)
    assert actions(result) == [(REMOVE, B)]


def test_a_drained_member_without_connections_goes_at_once():
    memory = PoolMemory()
    result = plan({A}, {A: MemberState(ENABLED), B: MemberState(DRAINING, 0)}, memory, now=0, trusted=True, **RULES)
    assert actions(result) == [(REMOVE, B)]


def test_a_draining_member_that_is_ready_again_is_enabled():
    memory = PoolMemory(draining_since={B: 0})
    result = plan({A, B}, {A: MemberState(ENABLED), B: MemberState(DRAINING)}, memory, now=1, trusted=True, **RULES)
    assert actions(result) == [(ENABLE, B)] and B not in memory.draining_since
    result = plan({A}, {A: MemberState(DISABLED)}, PoolMemory(), now=1, trusted=True, **RULES)
    assert actions(result) == [(ENABLE, A)]


def test_unknown_desired_changes_nothing():
    result = plan(None, {A: MemberState(ENABLED)}, PoolMemory(), now=0, trusted=True, **RULES)
    assert result.changes == [] and result.held


def test_a_stale_view_adds_but_never_drains_or_removes():
    current = {A: MemberState(ENABLED), C: MemberState(DRAINING, 0)}
    result = plan({B}, current, PoolMemory(), now=0, trusted=False, **RULES)
    assert actions(result) == [(ADD, B)] and "stale" in result.held
    result = plan(set(), current, PoolMemory(), now=1000, trusted=False, **RULES)
    assert actions(result) == []


def test_an_empty_service_keeps_its_pool_for_the_grace_period_then_empties_it_loudly():
    memory = PoolMemory()
    current = {A: MemberState(ENABLED), B: MemberState(ENABLED)}
    result = plan(set(), current, memory, now=0, trusted=True, **RULES)
    assert actions(result) == [] and "no ready endpoint" in result.held and result.wake_in == 30
    result = plan(set(), current, memory, now=29, trusted=True, **RULES)
    assert actions(result) == []
    result = plan(set(), current, memory, now=31, trusted=True, **RULES)
    assert actions(result) == [(DRAIN, A), (DRAIN, B)] and "emptying the pool" in result.loud


def test_a_transient_empty_list_resets_the_grace_period():
    memory = PoolMemory()
    current = {A: MemberState(ENABLED)}
    plan(set(), current, memory, now=0, trusted=True, **RULES)
    plan({A}, current, memory, now=20, trusted=True, **RULES)
    result = plan(set(), current, memory, now=40, trusted=True, **RULES)
    assert actions(result) == []


def test_drain_seconds_zero_removes_at_once():
    result = plan(set(), {}, PoolMemory(), now=0, trusted=True, **RULES)
    assert result.changes == []
    result = plan({A}, {A: MemberState(ENABLED), B: MemberState(ENABLED)}, PoolMemory(), now=0, trusted=True,
                  drain_seconds=0, empty_grace_seconds=30)
    assert actions(result) == [(DRAIN, B), (REMOVE, B)]
