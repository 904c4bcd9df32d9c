"""The key pool's line shares tokens among priority lanes by weight (`actors.keypool.line`):
at each step the waiting lane with the least virtual time (tokens handed to it, each 1 / its
weight), task order within a lane; a lane back from idle starts level with those waiting;
with no lanes, task order as before."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable
from typing import TypeVar

from actors.keypool.decide import grant_round
from actors.keypool.line import Line, Waiter
from actors.keypool.state import KeyPoolState, PoolState, Tuning, apply_pool
from actors.messages import Token
from events.catalogue import KeyTokenGranted

T = TypeVar("T")
WEIGHTS = {"paid": 4.0, "free": 1.0}


def run(body: Callable[[], T]) -> T:
    """`body` inside a running event loop (the line's futures need one)."""

    async def main() -> T:
        return body()

    return asyncio.run(main())


def nothing_known(task_id: str, attempt: int) -> Token | None:
    return None


def flood(line: Line, lanes: Iterable[tuple[str, int]]) -> None:
    """Join `count` waiters to each lane, in the order given, task ids "<lane>-<n>"."""
    order = itertools.count()
    for lane, count in lanes:
        for n in range(count):
            line.join(float(next(order)), f"{lane}-{n}", 1, lane=lane)


def taken(line: Line, count: int) -> list[Waiter]:
    """The first `count` waiters one turn takes off the line (put back afterwards, ungranted)."""
    served: list[Waiter] = []
    for _ in itertools.islice(line.take(nothing_known, served, []), count):
        pass
    line.hand_out(served, [])
    return served


def grant(waiters: Iterable[Waiter], at: float) -> list[KeyTokenGranted]:
    return [
        KeyTokenGranted(
            pool="p", key_id="k", task_id=w.task_id, attempt=w.attempt, capacity=1, window=60.0, at=at
        )
        for w in waiters
    ]


def hand_out_turn(line: Line, count: int) -> list[Waiter]:
    """One turn of the grant loop that grants the first `count` waiters taken."""
    served: list[Waiter] = []
    for _ in itertools.islice(line.take(nothing_known, served, []), count):
        pass
    line.hand_out(served, grant(served, 0.0))
    return served


def lanes_of(waiters: Iterable[Waiter]) -> str:
    return "".join(w.lane[0].upper() for w in waiters)


def test_paid_waiters_joining_after_a_free_flood_are_served_among_the_first() -> None:
    """Five paid waiters that joined after 100 free ones: paid is below its share, so all
    five are served within the first six (one free in between, when paid's 1/4 exceeds 0/1)."""

    def body() -> str:
        line = Line(WEIGHTS)
        flood(line, [("free", 100), ("paid", 5)])
        return lanes_of(taken(line, 6))

    assert run(body) == "PFPPPP"


def test_with_both_lanes_flooded_paid_gets_four_of_every_five() -> None:
    """Over a long turn, each run of five holds exactly four paid and one free: no lane is
    starved, and within a lane the waiters come in task order."""

    def body() -> list[Waiter]:
        line = Line(WEIGHTS)
        flood(line, [("free", 500), ("paid", 500)])
        return taken(line, 500)

    waiters = run(body)
    order = lanes_of(waiters)
    assert order[:5] == "PFPPP"
    for start in range(0, 500, 5):
        assert sorted(order[start : start + 5]) == ["F", "P", "P", "P", "P"], start
    assert order.count("P") == 400 and order.count("F") == 100
    for lane in ("paid", "free"):
        ids = [w.task_id for w in waiters if w.lane == lane]
        assert ids == [f"{lane}-{n}" for n in range(len(ids))]


def test_free_waiters_are_never_starved_across_turns() -> None:
    """Turn after turn of one grant each (however places free up: a lane's virtual time does
    not depend on when): while free waits, every five consecutive grants include a free one."""

    def body() -> str:
        line = Line(WEIGHTS)
        flood(line, [("free", 300), ("paid", 300)])
        return lanes_of(w for _ in range(300) for w in hand_out_turn(line, 1))

    order = run(body)
    assert all("F" in order[i : i + 5] for i in range(len(order) - 4))
    assert order.count("P") == 240 and order.count("F") == 60


def test_a_lane_with_nothing_waiting_lends_its_share() -> None:
    """Only free waits: it takes every token, whatever paid's weight."""

    def body() -> str:
        line = Line(WEIGHTS)
        flood(line, [("free", 10)])
        return lanes_of(hand_out_turn(line, 10))

    assert run(body) == "F" * 10


def test_without_lanes_the_order_is_task_order_then_arrival() -> None:
    """No weights: one line in (order, arrival), a lane named by the caller notwithstanding."""

    def body() -> list[str]:
        line = Line()
        for task_id, order, lane in [
            ("c", 3.0, "paid"),
            ("a", 1.0, "free"),
            ("b2", 2.0, ""),
            ("b1", 2.0, "x"),
        ]:
            line.join(order, task_id, 1, lane=lane)
        line.join(0.5, "first", 1)
        return [w.task_id for w in taken(line, 10)]

    assert run(body) == ["first", "a", "b2", "b1", "c"]


def test_a_lane_back_from_idle_banks_nothing_while_others_wait() -> None:
    """Paid took 8 tokens alone (virtual time 2). Free, idle all along, joins while paid
    waits: it starts level with paid (2), not at 0, so it does not take the next 2 tokens in
    a row; the tie goes to paid, then free gets its share."""

    def body() -> str:
        line = Line(WEIGHTS)
        flood(line, [("paid", 8)])
        hand_out_turn(line, 8)
        flood(line, [("paid", 10), ("free", 10)])
        assert line.vtime("free") == line.vtime("paid") == 2.0
        return lanes_of(taken(line, 5))

    assert run(body) == "PFPPP"


def test_after_an_idle_spell_both_lanes_start_level() -> None:
    """Free took 5 tokens, then nothing waited; paid took 4; then nothing waited again. When
    both come back, each starts at the furthest virtual time reached: neither is owed tokens
    for the time it was away, and the next five tokens go 4 paid to 1 free."""

    def body() -> str:
        line = Line(WEIGHTS)
        flood(line, [("free", 5)])
        hand_out_turn(line, 5)
        flood(line, [("paid", 4)])
        hand_out_turn(line, 4)
        flood(line, [("paid", 10), ("free", 10)])
        return lanes_of(taken(line, 5))

    assert run(body) == "PFPPP"


def test_waiters_not_granted_go_back_to_their_own_lane() -> None:
    """A turn that grants nothing puts each waiter back in its lane, in task order; answered
    waiters are skipped; `refuse_all` answers every lane; the length counts all lanes."""

    def body() -> tuple[list[str], list[str], int, int]:
        line = Line(WEIGHTS)
        flood(line, [("free", 3), ("paid", 3)])
        first = [w.task_id for w in taken(line, 6)]
        again = [w.task_id for w in taken(line, 6)]
        before = len(line)
        futures = [line.join(100.0, "late", 1, lane="paid"), line.join(101.0, "late2", 1, lane="free")]
        line.refuse_all(Token(reason="no quota pool can serve"))
        assert all(f.done() and not f.result().granted for f in futures)
        return first, again, before, len(line)

    first, again, before, after = run(body)
    assert first == again == ["paid-0", "free-0", "paid-1", "paid-2", "free-1", "free-2"]
    assert before == 6 and after == 0


def test_a_repeated_acquire_gets_its_grant_and_takes_no_share() -> None:
    """A waiter whose grant is known is answered and does not count as served for its lane."""

    def body() -> tuple[str, Token]:
        line = Line(WEIGHTS)
        known = Token("p", "k")
        repeated = line.join(0.0, "paid-again", 1, lane="paid")
        flood(line, [("paid", 3), ("free", 3)])
        served: list[Waiter] = []
        lookup: Callable[[str, int], Token | None] = lambda t, a: known if t == "paid-again" else None  # noqa: E731
        for _ in itertools.islice(line.take(lookup, served, []), 4):
            pass
        return lanes_of(served), repeated.result()

    order, token = run(body)
    assert order == "PFPP" and token.granted


def test_reserved_places_of_a_window_are_left_to_their_lane() -> None:
    """paid reserves 0.3 of each window: of a pool's 10 places a turn gives free waiters 7,
    then shuts free's lane (later free waiters are not even taken off the line), and the 3
    kept places go to paid waiters that join after them."""
    tuning = Tuning(margin=0.0, probe_after=2, probe_step=0.2)
    pools = {"a": PoolState(name="a", rpm=600, window=1.0, key_ids=("a#1",), tuning=tuning)}

    def body() -> tuple[list[str], list[str], int]:
        line = Line(WEIGHTS, {"paid": 0.3})
        state = KeyPoolState(pools=pools)
        flood(line, [("free", 20)])
        served: list[Waiter] = []
        shut: set[str] = set()
        first = grant_round(state, {}, line.take(nothing_known, served, [], shut), 1000.0, 0.0, shut)
        line.hand_out(served, first.grants)
        for g in first.grants:
            apply_pool(state.pools[g.pool], g)
        asked = len(served)
        flood(line, [("paid", 5)])
        served, shut = [], set()
        second = grant_round(state, {}, line.take(nothing_known, served, [], shut), 1000.0, 0.0, shut)
        return [g.task_id for g in first.grants], [g.task_id for g in second.grants], asked

    first, second, asked = run(body)
    assert first == [f"free-{n}" for n in range(7)] and asked == 8
    assert second == ["paid-0", "paid-1", "paid-2"]


def test_a_lane_leaving_reserved_places_is_due_when_a_place_beyond_them_frees() -> None:
    """free leaves paid's 3 of 10 places: after its 7 grants at 1000.0 (places are free, but
    only kept ones) the next turn is due at 1001.0, when the first grant leaves the window,
    not at once (a grant loop woken at once would find nothing to do, again and again).
    A turn within the lead of 1001.0 grants the next 7 free waiters for 1001.0 (the 7 places
    that leave the window then); one before the lead grants nothing and is due at 1001.0 again."""
    tuning = Tuning(margin=0.0, probe_after=2, probe_step=0.2)
    pools = {"a": PoolState(name="a", rpm=600, window=1.0, key_ids=("a#1",), tuning=tuning)}
    lead = 0.05

    def body() -> tuple[float, float, list[tuple[str, float]]]:
        line = Line(WEIGHTS, {"paid": 0.3})
        state = KeyPoolState(pools=pools)
        flood(line, [("free", 20)])

        def turn(now: float) -> tuple[float, list[KeyTokenGranted]]:
            served: list[Waiter] = []
            shut: set[str] = set()
            result = grant_round(state, {}, line.take(nothing_known, served, [], shut), now, lead, shut)
            line.hand_out(served, result.grants)
            for g in result.grants:
                apply_pool(state.pools[g.pool], g)
            return result.next_free, result.grants

        first, granted = turn(1000.0)
        assert len(granted) == 7
        early, none = turn(1000.5)
        assert none == []
        _, ahead = turn(1001.0 - lead / 2)
        return first, early, [(g.task_id, g.at) for g in ahead]

    first, early, ahead = run(body)
    assert first == 1001.0 and early == 1001.0
    assert ahead == [(f"free-{n}", 1001.0) for n in range(7, 14)]
