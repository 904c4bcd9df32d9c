"""Fallback routes in the key pool: an attempt takes its token from the first route of its chain
that serves, waits for it while its windows are merely spent, moves on when it is parked for the
day or out of keys, or cannot start the call by the task's deadline; a dearer route than the
task was charged for is never used."""

from __future__ import annotations

import math

from actors.keypool.decide import grant_round
from actors.keypool.routes import Want, pools_for, route_groups
from actors.keypool.state import KeyPoolState, PoolState, Tuning, apply_pool
from events.catalogue import KeyParked
from tests.unit.test_keypool_fold import LEAD, NOON

PRIMARY, FALLBACK = ("a",), ("b",)


def state() -> KeyPoolState:
    """a: the primary route's pool, 2 calls a second; b: the fallback's, 2 calls a second."""
    tuning = Tuning(margin=0.0, probe_after=2, probe_step=0.2)
    return KeyPoolState(
        pools={
            "a": PoolState(name="a", rpm=120, window=1.0, key_ids=("a#1",), tuning=tuning),
            "b": PoolState(name="b", rpm=120, window=1.0, key_ids=("b#1",), tuning=tuning),
        }
    )


def grants_of(s: KeyPoolState, wants: list[Want], now: float) -> tuple[dict[str, str], float]:
    """What one round grants (task -> pool), and when the next round is due."""
    turn = grant_round(s, {}, iter(wants), now, LEAD)
    for g in turn.grants:
        apply_pool(s.pools[g.pool], g)
    return {g.task_id: g.pool for g in turn.grants}, turn.next_free


def test_the_primary_route_is_waited_for_while_its_window_is_spent() -> None:
    """Four attempts on the chain (a, b): two go to a now; the other two wait for a (b has
    places, but a serves), and the round says when a frees, not now (no busy turn)."""
    s = state()
    wants = [Want(f"t{i}", 1, (PRIMARY, FALLBACK)) for i in range(4)]
    granted, next_free = grants_of(s, wants, NOON)
    assert granted == {"t0": "a", "t1": "a"}
    assert next_free == NOON + 1.0


def test_a_route_parked_for_the_day_is_left_for_the_next() -> None:
    """a parked until midnight: the attempts take b's places."""
    s = state()
    apply_pool(
        s.pools["a"],
        KeyParked(pool="a", key_id="a#1", until=NOON + 3600, quota_id="PerDay", reason="day", at=NOON),
    )
    wants = [Want(f"t{i}", 1, (PRIMARY, FALLBACK)) for i in range(3)]
    granted, _ = grants_of(s, wants, NOON)
    assert granted == {"t0": "b", "t1": "b"}


def test_a_deadline_the_primary_cannot_meet_takes_the_fallback() -> None:
    """a is spent until NOON + 1; a task that must start by NOON + 0.5 takes b, one that may
    wait until NOON + 2 waits for a."""
    s = state()
    grants_of(s, [Want("x", 1, (PRIMARY,)), Want("y", 1, (PRIMARY,))], NOON)
    hurried = Want("h", 1, (PRIMARY, FALLBACK), until=NOON + 0.5)
    patient = Want("p", 1, (PRIMARY, FALLBACK), until=NOON + 2.0)
    assert [p.name for p in pools_for(s.pools, hurried, NOON)] == ["b"]
    assert [p.name for p in pools_for(s.pools, patient, NOON)] == ["a"]
    granted, _ = grants_of(s, [patient, hurried], NOON)
    assert granted == {"h": "b"}


def test_a_dearer_route_is_not_among_a_tasks_routes_unless_it_was_charged_for_it() -> None:
    """Chain (a at 1 credit, b at 3): a task charged 1 may use a only; one charged 3 both."""
    chain = [(("a",), 1), (("b",), 3)]
    assert route_groups(chain, 1) == (("a",),)
    assert route_groups(chain, 3) == (("a",), ("b",))
    s = state()
    apply_pool(
        s.pools["a"],
        KeyParked(pool="a", key_id="a#1", until=NOON + 3600, quota_id="PerDay", reason="day", at=NOON),
    )
    granted, next_free = grants_of(s, [Want("cheap", 1, route_groups(chain, 1))], NOON)
    assert granted == {} and next_free == NOON + 3600
    granted, _ = grants_of(s, [Want("dear", 1, route_groups(chain, 3))], NOON)
    assert granted == {"dear": "b"}


def test_attempts_without_routes_are_served_as_before() -> None:
    """A bare (task, attempt) may use any pool: three calls from a and b's four places."""
    s = state()
    turn = grant_round(s, {}, iter([("t0", 1), ("t1", 1), ("t2", 1)]), NOON, LEAD)
    assert len(turn.grants) == 3 and math.isfinite(turn.next_free)
