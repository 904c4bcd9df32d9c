"""The QueueActor's snapshot taken off its loop: a copy later events cannot change, written as the
same document the plain snapshot gives."""

from __future__ import annotations

import json
from dataclasses import replace

from actors.queue.snapshots import document, frozen_copy, places
from actors.queue.state import QueueState, apply, restore, snapshot
from events.catalogue import (
    CreditsCharged,
    Event,
    StoredEvent,
    TaskAttemptFailed,
    TaskDispatched,
    TaskRetryScheduled,
    TaskUpstreamThrottled,
)
from tests.helpers import submitted


def _throttled(t: str, attempt: int) -> TaskUpstreamThrottled:
    return TaskUpstreamThrottled(
        task_id=t,
        attempt=attempt,
        pool="p",
        key_id="k",
        code=429,
        quota="minute",
        retry_after=0,
        order=0,
        reason="",
        at=3,
    )


def _fold(state: QueueState, events: list[Event], start: int) -> int:
    for i, event in enumerate(events, start):
        apply(state, StoredEvent(f"1-{i}", event))
    return start + len(events)


def _busy(n: int) -> tuple[QueueState, list[str]]:
    """A state with n tasks: charged, some running, some throttled back, some awaiting a retry."""
    state = QueueState()
    ids: list[str] = []
    seq = 0
    for i in range(n):
        task = submitted(user=f"u{i % 7}", at=float(i))
        ids.append(task.task_id)
        seq = _fold(
            state, [task, CreditsCharged(user_id=task.user_id, task_id=task.task_id, amount=2, at=1)], seq
        )
    for i, t in enumerate(ids[: n // 2]):
        seq = _fold(state, [TaskDispatched(task_id=t, attempt=1, worker=i % 2, lease_deadline=99, at=2)], seq)
        if i % 3 == 0:
            seq = _fold(state, [_throttled(t, 1)], seq)
        elif i % 3 == 1:
            seq = _fold(
                state, [TaskAttemptFailed(task_id=t, attempt=1, error="e", retryable=True, at=3)], seq
            )
    return state, ids


def test_the_document_is_the_plain_snapshot() -> None:
    """Written in chunks, the document parses to exactly what `snapshot` gives, and restores."""
    state, _ = _busy(1_700)  # several chunks, the last one partial
    text = "".join(document(frozen_copy(state), places(state)))
    assert json.loads(text) == json.loads(json.dumps(snapshot(state)))
    assert snapshot(restore(json.loads(text))) == snapshot(state)


def test_the_document_keeps_text_and_options_as_they_were() -> None:
    """Prompts in any script (written as UTF-8, not escapes), quotes, control characters and
    the largest seed come back from the document as they went in."""
    state = QueueState()
    prompts = ["portrait, 柔らかい光 — «studio»", 'say "cheese"\n\t\\', "\u2028 emoji 📸", ""]
    for i, prompt in enumerate(prompts):
        task = replace(
            submitted(at=float(i)), prompt=prompt, options={"seed": 2**31 - 1, "aspect_ratio": "3:4"}
        )
        _fold(state, [task], i)
    text = "".join(document(frozen_copy(state), places(state)))
    assert sorted(e["prompt"] for e in json.loads(text)["tasks"]) == sorted(prompts)
    assert json.loads(text) == json.loads(json.dumps(snapshot(state)))
    assert snapshot(restore(json.loads(text))) == snapshot(state)


def test_a_copy_does_not_see_later_events() -> None:
    """Charges, dispatches, throttles and retries folded after the copy leave its document as it was."""
    state, ids = _busy(300)
    before = json.loads(json.dumps(snapshot(state)))
    copy, waiting = frozen_copy(state), places(state)
    seq = 10_000
    for i, t in enumerate(ids):
        entry = state.tasks[t]
        seq = _fold(state, [CreditsCharged(user_id=entry.user_id, task_id=t, amount=5, at=9)], seq)
        if state.is_waiting(t):
            seq = _fold(
                state,
                [TaskDispatched(task_id=t, attempt=entry.attempts + 1, worker=0, lease_deadline=9, at=9)],
                seq,
            )
            seq = _fold(
                state,
                [_throttled(t, entry.attempts + 1)],
                seq,
            )
        elif t in state.to_decide:
            seq = _fold(
                state,
                [TaskRetryScheduled(task_id=t, attempt=1, not_before=20.0, order=entry.order, at=9)],
                seq,
            )
        if i % 10 == 0:
            seq = _fold(state, [submitted(at=50.0 + i)], seq)
    assert json.loads(json.dumps(snapshot(state))) != before
    assert json.loads("".join(document(copy, waiting))) == before
