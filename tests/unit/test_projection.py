"""The task view read model equals the pure fold of the task's events."""

from __future__ import annotations

import asyncio

from events.catalogue import (
    Event,
    TaskAttemptFailed,
    TaskDispatched,
    TaskRetryScheduled,
    TaskStarted,
    TaskSucceeded,
)
from events.memory_store import MemoryEventStore
from events.projection import fold_task_view
from tests.helpers import submitted


def test_read_model_hash_equals_the_folded_view() -> None:
    """Applying the projection ops gives the same view as folding view_fields."""
    s = submitted(at=1.0)
    t = s.task_id
    events: list[Event] = [
        s,
        TaskDispatched(task_id=t, attempt=1, worker=0, lease_deadline=9, at=2),
        TaskAttemptFailed(task_id=t, attempt=1, error="503", retryable=True, at=3),
        TaskRetryScheduled(task_id=t, attempt=1, not_before=4, order=1.0, at=3),
        TaskDispatched(task_id=t, attempt=2, worker=1, lease_deadline=19, at=4),
        TaskStarted(task_id=t, attempt=2, pool="p", key_id="p#1", at=5),
        TaskSucceeded(task_id=t, attempt=2, result="r", mime_type="image/png", elapsed=1, at=6),
    ]

    async def main() -> dict[str, str] | None:
        store = MemoryEventStore()
        for e in events:
            await store.append([e])
        return await store.task_view(t)

    view = asyncio.run(main())
    assert view == fold_task_view(events)
    assert (
        view is not None and view["status"] == "succeeded" and view["attempts"] == "2" and view["error"] == ""
    )


def test_slot_hold_time_is_counted_only_when_known() -> None:
    """A success that knows its dispatch time adds to held_sum/held_count; an old one does not."""
    from events.catalogue import TaskSucceeded
    from events.keys import Keys
    from events.projection import project
    from events.read_ops import HIncr

    keys = Keys("t")

    def held(event: TaskSucceeded) -> dict[str, float]:
        return {
            op.field: op.amount
            for op in project(event, keys)
            if isinstance(op, HIncr) and op.field.startswith("held")
        }

    known = TaskSucceeded(
        task_id="a", attempt=1, result="r", mime_type="image/png", elapsed=0.5, held=0.8, at=2
    )
    old = TaskSucceeded(task_id="b", attempt=1, result="r", mime_type="image/png", elapsed=0.5, at=2)
    assert held(known) == {"held_sum": 0.8, "held_count": 1} and held(old) == {}
