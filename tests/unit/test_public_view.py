"""What a caller is told about a task: `running` only while its call is in flight, the stage of a
queued task, when no pool can serve, and the SSE ids that resume a stream."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.config import Config, ConfigError, PoolConfig, Secret, parse
from actors.keypool.status import outage, pool_status
from actors.webhooks.rules import task_body
from events.catalogue import (
    Event,
    KeyCooledDown,
    KeyDisabled,
    KeyParked,
    KeyTokenGranted,
    TaskAttemptFailed,
    TaskDispatched,
    TaskLeaseExpired,
    TaskRetryScheduled,
    TaskStarted,
    TaskSucceeded,
    TaskUpstreamThrottled,
)
from events.memory_store import MemoryEventStore
from events.projection import fold_task_view
from events.public_view import Blocked, at_iso, call_in_flight, iso, public_status, stage_of
from serve_app.http.context import POOLS_FRESH_SECONDS
from serve_app.http.fanout import POOLS_SETTLE_SECONDS, Update
from serve_app.http.models import TaskViewOut
from serve_app.http.pools import read_pools
from serve_app.http.serving import serving
from serve_app.http.watching import parse_event_id
from tests.helpers import submitted

T = "t" * 32
BLOCKED = Blocked("upstream rejected every API key", None)


def dispatched(attempt: int, at: float = 2.0) -> TaskDispatched:
    return TaskDispatched(task_id=T, attempt=attempt, worker=0, lease_deadline=at + 300, at=at)


def granted(attempt: int, at: float = 3.0) -> KeyTokenGranted:
    return KeyTokenGranted(pool="p", key_id="p#1", task_id=T, attempt=attempt, capacity=2, window=1.0, at=at)


def started(attempt: int, at: float = 4.0) -> TaskStarted:
    return TaskStarted(task_id=T, attempt=attempt, pool="p", key_id="p#1", at=at)


def failed(attempt: int, at: float = 5.0) -> TaskAttemptFailed:
    return TaskAttemptFailed(task_id=T, attempt=attempt, error="boom", retryable=True, at=at)


def throttled(attempt: int, at: float, code: int) -> TaskUpstreamThrottled:
    return TaskUpstreamThrottled(
        task_id=T,
        attempt=attempt,
        pool="p",
        key_id="p#1",
        code=code,
        quota="key" if code == 403 else "minute",
        retry_after=0.0,
        order=1.0,
        reason="",
        at=at,
    )


def seen(
    events: Sequence[Event], quota_until: float | None = None, blocked: Blocked | None = None
) -> tuple[str, str | None]:
    """(public status, stage) of the task after `events`."""
    view = fold_task_view([submitted(T), *events])
    return public_status(view), stage_of(view, quota_until, blocked).stage


def test_a_task_runs_only_from_its_started_event_to_its_outcome() -> None:
    """Dispatched is queued (starting, or waiting for quota while the windows are spent); a grant
    makes it starting whatever the windows; started is running; an ended call is queued again."""
    assert seen([]) == ("queued", "waiting")
    assert seen([dispatched(1)]) == ("queued", "starting")
    assert seen([dispatched(1)], quota_until=9.0) == ("queued", "waiting_for_quota")
    assert seen([dispatched(1), granted(1)], quota_until=9.0) == ("queued", "starting")
    assert seen([dispatched(1), granted(1), started(1)], quota_until=9.0) == ("running", None)
    assert seen([dispatched(1), granted(1), started(1), failed(1)]) == ("queued", "waiting")
    lease = TaskLeaseExpired(task_id=T, attempt=1, at=6.0)
    assert seen([dispatched(1), started(1), lease]) == ("queued", "waiting")
    retry = TaskRetryScheduled(task_id=T, attempt=1, not_before=7.0, order=1.0, at=6.0)
    second: list[Event] = [dispatched(1), started(1), failed(1), retry, dispatched(2, 8.0)]
    assert seen(second) == ("queued", "starting")  # attempt 1's start says nothing of attempt 2
    assert seen([*second, started(2, 9.0)]) == ("running", None)
    done = TaskSucceeded(task_id=T, attempt=2, result="r", mime_type="image/png", elapsed=1.0, at=10.0)
    assert seen([*second, started(2, 9.0), done], blocked=BLOCKED) == ("succeeded", None)


def test_a_blocked_kind_shows_on_every_queued_task_but_not_on_a_running_one() -> None:
    """No pool can serve: waiting and dispatched tasks say blocked, with the reason; a call in
    flight still runs."""
    view = fold_task_view([submitted(T)])
    stage = stage_of(view, None, BLOCKED)
    assert (stage.stage, stage.blocked_reason, stage.blocked_until) == ("blocked", BLOCKED.reason, None)
    assert seen([dispatched(1)], blocked=BLOCKED) == ("queued", "blocked")
    assert seen([dispatched(1), started(1)], blocked=BLOCKED) == ("running", None)
    back = throttled(1, 5.0, 403)
    assert seen([dispatched(1), started(1), back], blocked=BLOCKED) == ("queued", "blocked")


def test_a_grant_made_ahead_of_the_dispatch_counts_for_the_attempt_it_names() -> None:
    """A token granted for attempt 2 before its dispatch: waiting until dispatched, then starting."""
    retry = TaskRetryScheduled(task_id=T, attempt=1, not_before=7.0, order=1.0, at=6.0)
    before: list[Event] = [dispatched(1), started(1), failed(1), retry, granted(2, 7.5)]
    assert seen(before, quota_until=20.0) == ("queued", "waiting")
    assert seen([*before, dispatched(2, 8.0)], quota_until=20.0) == ("queued", "starting")


def test_a_view_written_before_the_call_fields_runs_from_its_start() -> None:
    """An older read model without `call`: running once started after its dispatch."""
    old = {"status": "running", "attempts": "2", "dispatched_at": "5.0", "started_at": "4.0"}
    assert public_status(old) == "queued" and not call_in_flight(old)
    assert public_status({**old, "started_at": "6.0"}) == "running"


PHASES = st.lists(st.sampled_from(["dispatch", "grant", "start", "fail", "retry", "throttle"]), max_size=12)


@given(PHASES)
def test_running_is_shown_only_after_the_current_attempts_start(phases: list[str]) -> None:
    """For any order of an attempt's events (as guarded appends allow), the view says running
    exactly when the newest attempt has started and has not ended."""
    events: list[Event] = []
    attempt, started_attempt, at = 0, 0, 1.0
    for phase in phases:
        at += 1.0
        if phase == "dispatch":
            attempt += 1
            events.append(dispatched(attempt, at))
        elif phase == "grant" and attempt and started_attempt != attempt:
            events.append(granted(attempt, at))
        elif phase == "start" and attempt:
            events.append(started(attempt, at))
            started_attempt = attempt
        elif phase == "fail" and attempt:
            events.append(failed(attempt, at))
            started_attempt = 0
        elif phase == "retry" and attempt:
            events.append(TaskRetryScheduled(task_id=T, attempt=attempt, not_before=at, order=1.0, at=at))
            started_attempt = 0
        elif phase == "throttle" and attempt:
            events.append(throttled(attempt, at, 429))
            started_attempt = 0
    view = fold_task_view([submitted(T), *events])
    in_queue_status = view.get("status") == "running"
    expected = in_queue_status and started_attempt == attempt and attempt > 0
    assert (public_status(view) == "running") == expected


def test_times_are_iso_8601_in_utc() -> None:
    """Every numeric `*_at` has its `*_at_iso`, ending in Z; absent times are null."""
    assert iso(0.0) == "1970-01-01T00:00:00.000Z" and iso(None) is None
    assert iso(1_700_000_000.25) == "2023-11-14T22:13:20.250Z"
    shown = at_iso(fold_task_view([submitted(T, at=1_700_000_000.0), dispatched(1, 1_700_000_001.5)]))
    assert shown == {
        "submitted_at_iso": "2023-11-14T22:13:20.000Z",
        "dispatched_at_iso": "2023-11-14T22:13:21.500Z",
        "started_at_iso": None,
        "finished_at_iso": None,
        "deadline_iso": None,
    }
    timed = fold_task_view([replace(submitted(T, at=1_700_000_000.0), deadline=1_700_000_030.0)])
    assert task_body(T, timed)["deadline"] == 1_700_000_030.0
    assert at_iso(timed)["deadline_iso"] == "2023-11-14T22:13:50.000Z"
    numeric = {name for name in TaskViewOut.model_fields if name.endswith("_at")}
    assert {f"{name}_iso" for name in numeric} <= set(TaskViewOut.model_fields)


HINTS = {"p#1": "aaaa"}


def test_an_outage_says_why_and_until_when() -> None:
    """Every key rejected: no end; every pool parked: the first one back; one pool serving, or
    only cooling down: no outage."""
    keyless = pool_status("a", HINTS, {"p#1": "aaaa"}, 0.0, 0.0, 10.0)
    parked = pool_status("b", HINTS, {}, 5000.0, 0.0, 10.0)
    later = pool_status("c", HINTS, {}, 9000.0, 0.0, 10.0)
    cooling = pool_status("d", HINTS, {}, 0.0, 60.0, 10.0)
    down = outage([keyless])
    assert down is not None and down.until is None and "rejected every API key" in down.reason
    down = outage([parked, later])
    assert down is not None and down.until == 5000.0 and "daily quota" in down.reason
    assert "1970-01-01T01:23:20Z" in down.reason
    down = outage([keyless, later])
    assert down is not None and down.until == 9000.0 and "lost its API keys" in down.reason
    assert outage([keyless, cooling]) is None and outage([]) is None


def pools_config(*rpm_window: tuple[int, float]) -> Config:
    pools = tuple(
        PoolConfig(name=f"p{i}", rpm=rpm, keys=(Secret(f"key-of-pool-{i}"),), window_seconds=window)
        for i, (rpm, window) in enumerate(rpm_window)
    )
    return replace(Config(), pools=pools)


def serving_after(
    config: Config, events: Sequence[Event], now: float
) -> tuple[dict[str, Blocked], float | None]:
    async def main() -> tuple[dict[str, Blocked], float | None]:
        store = MemoryEventStore()
        if events:
            await store.append(list(events))
        found = serving(await read_pools(store, config, now), now)
        return found.blocked, found.quota_until

    return asyncio.run(main())


def grant(pool: str, at: float, n: int) -> KeyTokenGranted:
    return KeyTokenGranted(
        pool=pool, key_id=f"{pool}#1", task_id=f"{n:032d}", attempt=1, capacity=2, window=1.0, at=at
    )


def test_the_first_free_place_of_any_pool_is_when_quota_returns() -> None:
    """Two pools of 2 calls a second: free places now (None); both full: the first place frees a
    window and the margin after the oldest counted grant; a cooldown delays its pool."""
    config = pools_config((120, 1.0), (120, 1.0))
    margin = config.keypool.margin_seconds
    now = 100.5
    assert serving_after(config, [grant("p0", 100.1, 1)], now) == ({}, None)
    full = [grant("p0", 100.1, 1), grant("p0", 100.2, 2), grant("p1", 100.3, 3), grant("p1", 100.4, 4)]
    blocked, until = serving_after(config, full, now)
    assert blocked == {} and until == pytest.approx(101.1 + margin)
    cool = KeyCooledDown(pool="p0", key_id="p0#1", until=103.0, retry_after=2.5, quota_id="", at=now)
    assert serving_after(config, [*full, cool], now)[1] == pytest.approx(101.3 + margin)


def test_every_kind_is_blocked_while_no_pool_serves() -> None:
    """Every key rejected blocks both kinds with no end; a parked pool beside a keyless one gives
    its return time."""
    config = pools_config((60, 60.0), (60, 60.0))
    hint = {p.name: p.key_hints[f"{p.name}#1"] for p in config.pools}
    off = [
        KeyDisabled(pool=p, key_id=f"{p}#1", hint=hint[p], code=403, reason="PERMISSION_DENIED", at=1.0)
        for p in ("p0", "p1")
    ]
    blocked, until = serving_after(config, off, 50.0)
    assert set(blocked) == {"photography", "fitting"} and until is None
    assert blocked["fitting"].until is None and "rejected every API key" in blocked["fitting"].reason
    parked = KeyParked(pool="p1", key_id="p1#1", until=7000.0, quota_id="", reason="", at=1.0)
    blocked, _ = serving_after(config, [off[0], parked], 50.0)
    assert blocked["photography"].until == 7000.0
    assert serving_after(config, [off[0]], 50.0) == ({}, None)


def view_out(position: int | None, stage: str | None, status: str = "queued") -> TaskViewOut:
    return TaskViewOut(
        task_id=T, user_id="u", kind="photography", status=status, position=position, stage=stage
    )


def test_sse_ids_name_the_position_and_stage_and_never_none() -> None:
    """Ids are `<seen>-<position>-<stage>` with empty parts left out at the end, a stage followed
    by when the update was made; each reads back as the key that decides what a reconnect is
    sent, and so do the ids of older versions."""
    cases = [
        (Update(1, view_out(3, "waiting"), made_ms=1_796_585_642_001), "1-3-waiting.1796585642001"),
        (Update(2, view_out(None, "waiting_for_quota"), made_ms=7), "2--waiting_for_quota.7"),
        (Update(3, view_out(None, None, "running"), made_ms=9), "3"),
    ]
    for update, text in cases:
        assert update.event_id == text and "None" not in text
        assert parse_event_id(text) == update.key
    assert parse_event_id("4-None") == (4, None, "") and parse_event_id("2-7") == (2, 7, "")
    assert parse_event_id("1-3-waiting") == (1, 3, "waiting")  # an older version's, with no time
    assert parse_event_id("x-1") == (0, None, "") and parse_event_id(None) == (0, None, "")


def test_stage_renders_wait_for_the_pools_cache_to_hold_the_key_event() -> None:
    """A key event's re-render comes after the pools' views the renderer reads are refreshed."""
    assert POOLS_SETTLE_SECONDS > POOLS_FRESH_SECONDS


def test_when_blocked_is_refuse_or_accept() -> None:
    """`[admission] when_blocked` defaults to refuse; anything but refuse or accept is refused."""
    assert parse({}, {}).admission.when_blocked == "refuse"
    assert parse({"admission": {"when_blocked": "accept"}}, {}).admission.when_blocked == "accept"
    with pytest.raises(ConfigError, match=r"admission\.when_blocked"):
        parse({"admission": {"when_blocked": "queue"}}, {})
    assert math.isfinite(POOLS_SETTLE_SECONDS)
