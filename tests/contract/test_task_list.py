"""The task list's indexes and the intake switch over every store: pages newest first with no
task twice and none skipped while tasks arrive, status indexes that follow the view, and
submits refused while intake is paused."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from events.admission import Admission, Rate
from events.catalogue import (
    CreditsGranted,
    IntakePaused,
    IntakeResumed,
    TaskDispatched,
    TaskFailed,
    TaskStarted,
    TaskSubmitted,
    TaskSucceeded,
)
from events.ops_models import TaskIndex
from events.store import EventStore
from tests.contract.test_event_store import run as run  # the fixture: every store
from tests.helpers import submitted


async def page_through(
    store: Any, index: TaskIndex, size: int, between: Any = None
) -> list[tuple[str, float]]:
    """Every entry of `index`, a page of `size` at a time from the newest, each page read after
    the last entry of the one before; `between()` runs between pages."""
    seen: list[tuple[str, float]] = []
    before = None
    while True:
        (page,) = await store.task_index_pages([index], before, size)
        seen += page
        if len(page) < size:
            return seen
        before = (page[-1][1], page[-1][0])
        if between is not None:
            await between()


def test_pages_are_newest_first_with_no_task_twice_or_skipped_while_tasks_arrive(run: Any) -> None:
    """25 tasks (threes at the same instant, as a batch's are) paged 4 at a time while a new task
    is submitted before every page: the pages hold exactly the 25, newest first, ties by id,
    each once."""

    async def body(store: EventStore) -> None:
        times = [100.0 + i // 3 for i in range(25)]  # threes share an instant: ties in the index
        first = [submitted(at=t, user=f"u{i % 3}") for i, t in enumerate(times)]
        await store.append(first)  # at these times (a submit is stamped with the store's clock)
        later: list[TaskSubmitted] = []

        async def arrive() -> None:
            later.append(submitted(at=1000.0 + len(later), user="late"))
            assert (await store.submit(later[-1])).id

        seen = await page_through(store, TaskIndex("all"), 4, arrive)
        ids = [task_id for task_id, _ in seen]
        want = sorted(((e.at, e.task_id) for e in first), reverse=True)
        assert ids == [task_id for _, task_id in want] and len(later) == 6
        mine = await page_through(store, TaskIndex("user", "u1"), 2)
        assert [t for t, _ in mine] == [t for _, t in want if t in {e.task_id for e in first[1::3]}]

    run(body)


def test_status_indexes_follow_the_view_and_a_token_lists_its_submits(run: Any) -> None:
    """A task is in the index of the status its view holds, and only there, scored by when it took
    it; the index of the token that submitted it holds it, another token's does not."""

    async def body(store: EventStore) -> None:
        a, b = (replace(submitted(at=10.0 + i), token_id="tok-a") for i in range(2))
        c = replace(submitted(at=12.0), token_id="tok-c")
        await store.append([a, b, c])

        async def members(status: str) -> list[str]:
            (page,) = await store.task_index_pages([TaskIndex("status", status)], None, 100)
            return [t for t, _ in page]

        assert await members("queued") == [c.task_id, b.task_id, a.task_id]
        await store.append(
            [TaskDispatched(task_id=a.task_id, attempt=1, worker=0, lease_deadline=99, at=20.0)]
        )
        await store.append([TaskStarted(task_id=a.task_id, attempt=1, pool="p", key_id="k", at=21.0)])
        assert await members("queued") == [c.task_id, b.task_id]
        (running,) = await store.task_index_pages([TaskIndex("status", "running")], None, 10)
        assert running == [(a.task_id, 20.0)]
        done = TaskSucceeded(
            task_id=a.task_id, attempt=1, result="r", mime_type="image/png", elapsed=1, at=22.0
        )
        await store.append([done, TaskFailed(task_id=b.task_id, attempt=0, error="x", at=23.0)])
        assert (await members("running"), await members("succeeded")) == ([], [a.task_id])
        assert (await members("failed"), await members("queued")) == ([b.task_id], [c.task_id])
        (token_a,) = await store.task_index_pages([TaskIndex("token", "tok-a")], None, 10)
        assert [t for t, _ in token_a] == [b.task_id, a.task_id]

    run(body)


def test_a_paused_intake_refuses_submits_writing_nothing_until_resumed(run: Any) -> None:
    """While intake is paused a submit is refused with the pause's wait, takes no rate hit, is not
    charged and writes no event; after the resume the same submit is accepted."""

    async def body(store: EventStore) -> None:
        rate = Rate(f"tok-{uuid.uuid4().hex[:6]}", 1, 60_000)
        paid = Admission(price=2, rate=rate)
        await store.append([CreditsGranted(user_id="ann", amount=5, at=0.0)])
        await store.append([IntakePaused(reason="upgrade", retry_after=30, by="ops", at=1.0)])
        intake = await store.intake()  # type: ignore[attr-defined]
        assert (intake.paused, intake.reason, intake.retry_after, intake.by) == (True, "upgrade", 30, "ops")
        before = len(await store.read())
        event = submitted(user="ann", at=2.0)
        refused = await store.submit(event, paid)
        assert refused.refused is not None and refused.refused.reason == "paused"
        assert refused.refused.wait_ms == 30_000 and not refused.id
        assert len(await store.read()) == before
        assert (await store.user("ann"))[0]["balance"] == "5"
        await store.append([IntakeResumed(by="ops", at=3.0)])
        assert not (await store.intake()).paused  # type: ignore[attr-defined]
        accepted = await store.submit(event, paid)  # the one rate hit is still free: none was taken
        assert accepted.refused is None and accepted.balance == 3
        for index in (TaskIndex("all"), TaskIndex("user", "ann"), TaskIndex("status", "queued")):
            assert [t for t, _ in (await store.task_index_pages([index], None, 5))[0]] == [event.task_id]

    run(body)
