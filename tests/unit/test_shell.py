"""The actors' shell kit: backoff, store retries, recovery from snapshot plus replay, snapshot cadence."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from actors.queue.state import QueueState, apply, restore, snapshot
from actors.shell import (
    FIRST_DELAY,
    MAX_DELAY,
    Backoff,
    Cadence,
    Recovered,
    next_delay,
    parse_document,
    recover,
    retrying,
    take_snapshot,
)
from events.catalogue import Event, TaskDispatched
from events.errors import StoreUnavailableError
from events.memory_store import MemoryEventStore
from tests.helpers import snapshots_of, submitted

log = structlog.get_logger("test.shell")


def flaky(failures: int, value: str) -> Callable[[], Awaitable[str]]:
    """A step that raises StoreUnavailableError `failures` times, then returns `value`."""
    calls = {"n": 0}

    async def step() -> str:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise StoreUnavailableError("connection refused")
        return value

    return step


def events(n: int) -> list[Event]:
    """`n` submits, each other one dispatched."""
    out: list[Event] = []
    for i in range(n):
        out.append(submitted(f"t{i}", at=float(i)))
        if i % 2:
            out.append(TaskDispatched(task_id=f"t{i}", attempt=1, worker=0, lease_deadline=99.0, at=float(i)))
    return out


async def recover_queue(store: MemoryEventStore) -> Recovered[QueueState]:
    """Recover a queue state as the QueueActor does."""
    return await recover(
        store,
        "queue",
        load=restore,
        empty=QueueState,
        covers=lambda state: state.last_id,
        fold=apply,
        log=log,
    )


def test_delays_double_from_first_to_max() -> None:
    """The waits go 0.05, 0.1, ... and stay at 2 s once there."""
    delays = [FIRST_DELAY]
    for _ in range(8):
        delays.append(next_delay(delays[-1]))
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    assert MAX_DELAY == 2.0


def test_backoff_reset_starts_again_from_the_first_delay() -> None:
    """After a success the next wait is the shortest again."""
    backoff = Backoff()
    backoff.delay = MAX_DELAY
    backoff.reset()
    assert backoff.delay == FIRST_DELAY


def test_retrying_rides_out_an_outage_and_logs_each_wait() -> None:
    """A step that fails twice with the store down returns its value on the third try."""
    with capture_logs() as logs:
        assert asyncio.run(retrying("store down; retrying", flaky(2, "ok"), log)) == "ok"
    assert [(e["event"], e["delay"]) for e in logs] == [
        ("store down; retrying", 0.05),
        ("store down; retrying", 0.1),
    ]


def test_retrying_gives_up_at_its_deadline() -> None:
    """With a deadline already passed the outage is raised at once, not waited out."""
    with pytest.raises(StoreUnavailableError):
        asyncio.run(retrying("store down", flaky(1, "ok"), log, deadline=0.0))


def test_retrying_lets_other_errors_through() -> None:
    """Only a store outage is retried: any other error reaches the caller."""

    async def broken() -> str:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        asyncio.run(retrying("store down", broken, log))


def test_recover_without_a_snapshot_replays_everything() -> None:
    """An empty snapshot list means the whole log is folded into an empty state."""

    async def main() -> Recovered[QueueState]:
        store = MemoryEventStore()
        await store.append(events(5))
        return await recover_queue(store)

    recovered = asyncio.run(main())
    assert (recovered.covers, recovered.replayed) == ("0-0", 7)
    assert recovered.state.waiting == 3 and len(recovered.state.running) == 2
    assert recovered.summary()["snapshot"] == "0-0"


def test_recover_skips_an_unreadable_snapshot() -> None:
    """The newest snapshot that does not parse is logged and the one before it is used."""

    async def main() -> tuple[Recovered[QueueState], str]:
        store = MemoryEventStore()
        await store.append(events(3))
        state = (await recover_queue(store)).state
        await store.save_snapshot("queue", state.last_id, json.dumps(snapshot(state)))
        await store.save_snapshot("queue", state.last_id, "{not json")
        return await recover_queue(store), state.last_id

    with capture_logs() as logs:
        recovered, covers = asyncio.run(main())
    assert recovered.covers == covers
    assert [e["event"] for e in logs] == ["snapshot skipped"]


@settings(max_examples=30, deadline=None)
@given(total=st.integers(0, 12), at=st.integers(0, 12))
def test_snapshot_plus_replay_equals_the_whole_fold(total: int, at: int) -> None:
    """Wherever the snapshot was taken, recovery gives the state that folding the whole log gives."""
    cut = min(at, total)

    async def main() -> tuple[Recovered[QueueState], QueueState]:
        store = MemoryEventStore()
        all_events = events(total)
        await store.append(all_events[:cut])
        state = (await recover_queue(store)).state
        assert await take_snapshot(store, "queue", state.last_id, lambda: snapshot(state), log)
        await store.append(all_events[cut:])
        whole = QueueState()
        for stored in await store.read():
            apply(whole, stored)
        return await recover_queue(store), whole

    recovered, whole = asyncio.run(main())
    assert snapshot(recovered.state) == snapshot(whole)


def test_take_snapshot_skips_a_state_that_cannot_be_serialised() -> None:
    """A document that json cannot write is logged and skipped; nothing is saved."""

    async def main() -> tuple[bool, list[str]]:
        store = MemoryEventStore()
        taken = await take_snapshot(store, "queue", "1-1", lambda: {"x": object()}, log)
        return taken, await snapshots_of(store, "queue")

    with capture_logs() as logs:
        assert asyncio.run(main()) == (False, [])
    assert logs[0]["event"] == "snapshot skipped: the state could not be serialised"


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=20,
    )
)
def test_a_document_parses_as_the_standard_parser_reads_it(data: object) -> None:
    """Whatever the standard encoder wrote (text in any script, NaN and infinities, every float
    and 64-bit integer) comes back as the standard parser reads it."""
    document = json.dumps({"v": data}, separators=(",", ":"))
    assert json.dumps(parse_document(document)) == json.dumps(json.loads(document))


def test_a_document_that_is_not_json_is_a_value_error() -> None:
    for broken in ('{"v": 1', "", "{'v': 1}", '{"v": NaNa}'):
        with pytest.raises(ValueError):
            parse_document(broken)


def test_cadence_is_due_after_enough_events() -> None:
    """`every` events make a snapshot due at once, whatever the time."""
    cadence = Cadence(every=3, seconds=60.0, at=0.0)
    cadence.count(2)
    assert not cadence.due(1.0)
    cadence.count()
    assert cadence.due(1.0)


def test_cadence_is_due_after_its_seconds_only_with_new_events() -> None:
    """A quiet actor takes no snapshot; one with any event since takes one after `seconds`."""
    cadence = Cadence(every=1000, seconds=10.0, at=0.0)
    assert not cadence.due(11.0)
    cadence.count()
    assert not cadence.due(9.0)
    assert cadence.due(10.0)
    cadence.taken(10.0)
    assert (cadence.since, cadence.at) == (0, 10.0)
    assert not cadence.due(25.0)


def test_cadence_force_makes_the_next_check_due() -> None:
    """An operator's request makes the next check due even with no new event."""
    cadence = Cadence(every=1000, seconds=10.0, at=0.0)
    cadence.force()
    assert cadence.due(0.0)
