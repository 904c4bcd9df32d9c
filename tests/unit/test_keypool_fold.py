"""The key pool as a fold: decided live, replayed from the log or a snapshot, restarted, all agree."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.audit import max_in_window
from actors.keypool.decide import grant_round, learn, probe_all, recovered_sends, reported_sends
from actors.keypool.state import (
    KeyPoolEvent,
    KeyPoolState,
    PoolState,
    Tuning,
    apply,
    call_name,
    replay,
    restore,
    sends,
    snapshot,
    window_capacity,
)
from actors.messages import CallFailure
from actors.providers.base import Failure
from events.catalogue import KeyGrantsRedated, KeyTokenGranted, StoredEvent
from events.codec import decode, encode
from events.days import PACIFIC

NOON = dt.datetime(2026, 11, 29, 12, 0, tzinfo=PACIFIC).timestamp()
LEAD = 0.05


def fresh() -> KeyPoolState:
    """Three pools as the configuration gives them: a (3 calls/s, two keys), b (4 calls/2 s, 40 a
    day) and c (4 calls/s, a $0.15 daily spend cap at $0.05 a call: 3 calls a day)."""
    tuning = Tuning(margin=0.02, probe_after=2, probe_step=0.2)
    return KeyPoolState(
        pools={
            "a": PoolState(
                name="a",
                rpm=180,
                window=1.0,
                key_ids=("a#1", "a#2"),
                tuning=tuning,
                hints={"a#1": "h1", "a#2": "h2"},
            ),
            "b": PoolState(
                name="b", rpm=120, window=2.0, key_ids=("b#1",), rpd=40, tuning=tuning, hints={"b#1": "h3"}
            ),
            "c": PoolState(
                name="c",
                rpm=240,
                window=1.0,
                key_ids=("c#1",),
                tuning=tuning,
                hints={"c#1": "h4"},
                price_per_image=0.05,
                max_spend_per_day=0.15,
            ),
        }
    )


class Sim:
    """Drives the pure key pool as the KeyPoolActor does: reports wait for the next grants,
    events are applied once appended, a restart rebuilds the state from the log."""

    def __init__(self, make: Callable[[], KeyPoolState] = fresh) -> None:
        self.make = make
        self.state = make()
        self.log: list[StoredEvent] = []
        self.reported: dict[str, float] = {}
        self.went_out: set[tuple[str, int]] = set()
        self.waiting: list[tuple[str, int]] = []
        self.now = NOON
        self.tasks = 0

    def append(self, events: Sequence[KeyPoolEvent]) -> None:
        """Store the events (through the codec, as Redis holds them) and fold in what was decided."""
        for event in events:
            stored = StoredEvent(f"1-{len(self.log) + 1}", decode(encode(event)))
            self.log.append(stored)
            apply(self.state, StoredEvent(stored.id, event))

    def acquire(self, n: int) -> None:
        """`n` more attempts wait for a token."""
        for _ in range(n):
            self.tasks += 1
            self.waiting.append((f"t{self.tasks}", 1))

    def _next(self) -> Iterator[tuple[str, int]]:
        while self.waiting:
            yield self.waiting.pop(0)

    def turn(self, flush: bool = False) -> list[KeyTokenGranted]:
        """One turn of the grant loop at `now`; with `flush`, reports no grant carries are written alone."""
        if learned := probe_all(list(self.state.pools.values()), self.now):
            self.append(learned)
        turn = grant_round(self.state, self.reported, self._next(), self.now, LEAD)
        events = turn.events
        if flush and not events and (record := reported_sends(self.state, self.reported, self.now)):
            events = [record]
        if events:
            self.append(events)
        if events or flush:
            self.reported = {}
        return turn.grants

    def send(self, pick: int, delay: float) -> None:
        """Granted calls go out `delay` after their grants (no later than now) and are reported:
        one picked among those not yet gone out, or all of them (`pick` -1)."""
        unsent = [key for key in self.state.grants if key not in self.went_out]
        for key in unsent if pick < 0 else unsent[pick % max(1, len(unsent)) :][:1]:
            granted = self.state.grants[key].at
            self.reported[call_name(*key)] = max(granted, min(self.now, granted + delay))
            self.went_out.add(key)

    def refused(self, pool: str, failure: Failure, retry_after: float, quota_value: int | None) -> None:
        """Upstream refused a call of `pool`; the pool learns from it."""
        target = self.state.pools[pool]
        report = CallFailure(
            key_id=target.key_ids[-1],
            failure=failure,
            code=429 if failure is not Failure.KEY_REJECTED else 403,
            retry_after=retry_after,
            quota_value=quota_value,
        )
        if events := learn(target, report, self.now):
            self.append(events)

    def live_view(self) -> dict[str, PoolState]:
        """The pools as the live actor decides with them: its state with the unwritten reports counted."""
        pools = {name: pool.copy() for name, pool in self.state.pools.items()}
        if (record := reported_sends(self.state, self.reported, self.now)) is not None:
            sends(pools, self.state.grants, record)
        return pools

    def play(
        self, step: tuple[object, ...], grants: dict[str, list[float]]
    ) -> tuple[dict[str, PoolState], KeyPoolState] | None:
        """One generated step (acquire, tick, send, 429, day, reject, restart); grants made go
        into `grants` by pool. A restart answers the live pools just before it and the state
        rebuilt after it."""
        match step:
            case ("acquire", int(n)):
                self.acquire(n)
            case ("tick", int(n), int(arrivals), delay):
                self.now += n * 0.05
                if isinstance(delay, float):  # the calls granted so far went out and are reported
                    self.send(-1, delay)
                self.acquire(arrivals)
                for g in self.turn(flush=n >= 20):
                    grants[g.pool].append(g.at)
            case ("send", int(pick), float(delay)):
                self.send(pick, delay)
            case ("429", str(pool), float(retry_after), quota):
                self.refused(pool, Failure.THROTTLED, retry_after, quota)  # type: ignore[arg-type]
            case ("day", str(pool)):
                self.refused(pool, Failure.QUOTA_DAY, 0.0, None)
            case ("reject", str(pool)):
                self.refused(pool, Failure.KEY_REJECTED, 0.0, None)
            case ("restart", int(cut), int(n), delay):
                self.now += n * 0.05
                if isinstance(delay, float):  # calls went out and were reported just before the crash
                    self.send(-1, delay)
                live = self.live_view()
                return live, self.restart(cut)
        return None

    def restart(self, cut: int) -> KeyPoolState:
        """Crash and start again: unwritten reports are lost; the state comes from a snapshot
        taken after `cut` events and the rest of the log; grants whose send the log lacks are dated now."""
        cut = min(cut, len(self.log))
        data = json.loads(json.dumps(snapshot(replay(self.log[:cut], self.make()))))
        rebuilt = replay(self.log[cut:], restore(data, self.make()))
        self.state, self.reported = rebuilt, {}
        if (dated := recovered_sends(rebuilt, self.now)) is not None:
            self.append([dated])
        return rebuilt


ops = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.integers(1, 6)),
        st.tuples(
            st.just("tick"), st.integers(1, 30), st.integers(0, 4), st.sampled_from([None, 0.0, 0.05, 0.3])
        ),
        st.tuples(st.just("send"), st.one_of(st.just(-1), st.integers(0, 50)), st.floats(0.0, 0.6)),
        st.tuples(
            st.just("429"),
            st.sampled_from(["a", "b", "c"]),
            st.floats(0.0, 1.0),
            st.sampled_from([None, 60, 120]),
        ),
        st.tuples(st.just("day"), st.sampled_from(["a", "b", "c"])),
        st.tuples(st.just("reject"), st.sampled_from(["a", "b"])),
        st.tuples(
            st.just("restart"),
            st.integers(0, 400),
            st.integers(0, 10),
            st.sampled_from([None, 0.0, 0.1, 0.5]),
        ),
    ),
    max_size=80,
)


@settings(max_examples=1000, deadline=None)
@given(ops)
def test_live_replayed_and_snapshot_restored_states_are_equal_and_a_restart_is_never_less_strict(
    steps: list[tuple[object, ...]],
) -> None:
    """Any run of grants, sends, 429s, parking, rejected keys, probes and restarts: the state
    folded live equals the one replayed from the stored log and the one restored from a
    snapshot plus the rest, no pool ever granted more than its capacity in a window, and a
    restart never counts a call from earlier, nor lets a pool grant sooner, than the live
    actor did."""
    sim = Sim()
    grants: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    for step in steps:
        restarted = sim.play(step, grants)
        if restarted is not None:
            live, after = restarted
            for name, pool in after.pools.items():
                mine, theirs = pool.limiter, live[name].limiter
                # Calls counted from no earlier: from now on it never has more places free.
                horizon = [sim.now + i * theirs.window / 20 for i in range(22)]
                assert all(mine.available(t) <= theirs.available(t) for t in horizon)
                assert pool.next_free_at(sim.now) >= live[name].next_free_at(sim.now)
    assert replay(sim.log, fresh()) == sim.state
    for cut in (0, len(sim.log) // 3, len(sim.log)):
        data = json.loads(json.dumps(snapshot(replay(sim.log[:cut], fresh()))))
        assert replay(sim.log[cut:], restore(data, fresh())) == sim.state
    for name, times in grants.items():
        pool = sim.state.pools[name]
        assert max_in_window(sorted(times), pool.window) <= window_capacity(pool.rpm, pool.window)
        assert not pool.day_limit or len(times) <= pool.day_limit  # a run stays within one Pacific day


def test_a_restart_counts_the_last_windows_calls_from_when_they_went_out() -> None:
    """Pool a takes 3 calls a second: two granted at 0 went out at 0.3 and 0.4, a third was
    granted at 0.5 and had not gone out at the crash; rebuilt from the log at 0.6, the next
    place frees a window after the first call went out (1.3), not after its grant (1.0), and
    the unsent call counts from the restart."""
    sim = Sim(lambda: KeyPoolState(pools={"a": PoolState(name="a", rpm=180, window=1.0, key_ids=("a#1",))}))
    sim.acquire(2)
    assert [g.at for g in sim.turn()] == [NOON, NOON]
    sim.now = NOON + 0.45
    sim.send(0, 0.3)  # the first went out at 0.3
    sim.send(0, 0.4)  # the second at 0.4
    sim.now = NOON + 0.5
    sim.acquire(1)
    assert [g.at for g in sim.turn()] == [NOON + 0.5]
    assert any(isinstance(s.event, KeyGrantsRedated) for s in sim.log)
    sim.now = NOON + 0.6
    restarted = sim.restart(cut=2)
    pool = restarted.pools["a"]
    assert list(pool.limiter.log) == [NOON + 0.3, NOON + 0.4, NOON + 0.6]
    assert pool.next_free_at(sim.now) == NOON + 0.3 + 1.0
    sim.now = NOON + 1.3 - LEAD
    sim.acquire(1)
    assert [g.at for g in sim.turn()] == [pytest.approx(NOON + 1.3)]


def test_a_call_that_went_out_after_a_restart_is_dated_again_by_the_next() -> None:
    """A grant dated at a start (0.2) whose call then went out (0.4) and was reported, but not
    yet written, when a second crash came: the second start dates it at its own time (0.5)."""
    sim = Sim(lambda: KeyPoolState(pools={"a": PoolState(name="a", rpm=180, window=1.0, key_ids=("a#1",))}))
    sim.acquire(1)
    sim.turn()
    sim.now = NOON + 0.2
    assert list(sim.restart(cut=0).pools["a"].limiter.log) == [NOON + 0.2]
    sim.now = NOON + 0.4
    sim.send(-1, 0.4)
    sim.now = NOON + 0.5
    assert list(sim.restart(cut=1).pools["a"].limiter.log) == [NOON + 0.5]
