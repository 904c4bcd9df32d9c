"""The task list, `GET /v1/tasks`: the caller's tasks newest first, filtered, paged by a cursor.

A page is read from the sorted sets the projection keeps (`events.ops_models`), one
ZREVRANGEBYSCORE after the cursor's place, so it costs O(log n + limit) whatever the number
of tasks. The cursor is the (score, task id) of the last task looked at: tasks submitted
while a client pages sort before it and never shift a later page, so paging shows no task
twice and skips none.

Where a filter cannot be served by one index (a status together with a user, or a service
token's own tasks by status), the owner's index is read and each task's view checked; a
request then looks at most at SCAN_BUDGET tasks, and may answer fewer than `limit` with a
next cursor.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from events.catalogue import CANCELLED, EXPIRED, FAILED, QUEUED, RUNNING, SUCCEEDED
from events.ops_models import TaskIndex
from serve_app.http.auth import SERVICE, USER, Caller
from serve_app.http.context import Context
from serve_app.http.deps import CallerDep, Ctx
from serve_app.http.models import USER_ID_PATTERN, TaskPage, TaskViewOut
from serve_app.http.problem_docs import responses
from serve_app.http.problems import Forbidden, Unprocessable
from serve_app.http.watching import task_view_out

router = APIRouter()

LIMIT_DEFAULT, LIMIT_MAX = 20, 100
# Index entries one request may look at when each task's view decides whether it is listed.
SCAN_BUDGET = 1000
SCAN_CHUNK = 200
CURSOR_MAX_CHARS = 200
_TASK_ID = re.compile(r"[0-9a-f]{32}")

Status = Literal["queued", "running", "succeeded", "failed", "cancelled", "expired"]
# The indexes a public status is found in: the stored status, and for `queued` also the
# dispatched tasks whose call has not started (stored `running`, shown `queued`).
_STATUS_INDEXES = {
    QUEUED: (QUEUED, RUNNING),
    RUNNING: (RUNNING,),
    SUCCEEDED: (SUCCEEDED,),
    FAILED: (FAILED,),
    CANCELLED: (CANCELLED,),
    EXPIRED: (EXPIRED,),
}

Position = tuple[float, str]


@dataclass(frozen=True, slots=True)
class Listing:
    """Where a list is read from, and the status its tasks must show (None: any)."""

    sources: tuple[TaskIndex, ...]
    status: str | None = None

    @property
    def fingerprint(self) -> str:
        """What a cursor carries so that it is refused by any other list."""
        named = "|".join(f"{s.by}:{s.value}" for s in self.sources) + f"|{self.status or ''}"
        return hashlib.sha256(named.encode()).hexdigest()[:12]


def listing(caller: Caller, user_id: str | None, status: str | None) -> Listing:
    """The list `caller` asked for: a user sees its own tasks; a service token the tasks it
    submitted, or those of a user in its scope; an admin every task, or a user's."""
    if caller.role == USER:
        if user_id not in (None, caller.user_id):
            raise Forbidden("a user token lists only its own tasks")
        owner = TaskIndex("user", caller.user_id)
    elif user_id is not None:
        caller.may_see(user_id)  # a 403 outside a service token's scope
        owner = TaskIndex("user", user_id)
    elif caller.role == SERVICE:
        owner = TaskIndex("token", caller.token_id)
    elif status is not None:
        return Listing(tuple(TaskIndex("status", s) for s in _STATUS_INDEXES[status]), status)
    else:
        owner = TaskIndex("all")
    return Listing((owner,), status)


def encode_cursor(listing: Listing, at: Position) -> str:
    """The opaque cursor of the place after `at` in `listing`."""
    raw = json.dumps([at[0], at[1], listing.fingerprint], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(listing: Listing, text: str) -> Position:
    """The place a cursor names; a 422 for one that is malformed or belongs to another list."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw)
    except (ValueError, binascii.Error):
        value = None
    if not (isinstance(value, list) and len(value) == 3):
        raise _bad_cursor("it is not a cursor this API gave")
    score, task_id, fingerprint = value
    ok_score = isinstance(score, int | float) and not isinstance(score, bool) and math.isfinite(score)
    if not ok_score or not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id):
        raise _bad_cursor("it is not a cursor this API gave")
    if fingerprint != listing.fingerprint:
        raise _bad_cursor("it belongs to a list with other filters or another caller")
    return float(score), task_id


def _bad_cursor(why: str) -> Unprocessable:
    return Unprocessable(
        f"cursor: {why}; start again without a cursor",
        errors=[{"field": "cursor", "message": why}],
    )


def merge(pages: list[list[tuple[str, float]]], want: int) -> tuple[list[Position], bool]:
    """The places of several index pages read after one place, newest first, as far as all of
    them are known (an index that filled its page may hold more below its last entry); and
    whether every index is exhausted."""
    full = [page[-1] for page in pages if len(page) >= want]
    floor = max(((s, m) for m, s in full), default=None)
    seen: set[str] = set()
    merged = []
    for score, task_id in sorted(((s, m) for page in pages for m, s in page), reverse=True):
        if task_id not in seen and (floor is None or (score, task_id) >= floor):
            seen.add(task_id)
            merged.append((score, task_id))
    return merged, not full


async def read_page(
    c: Context, chosen: Listing, after: Position | None, limit: int
) -> tuple[list[TaskViewOut], Position | None]:
    """Up to `limit` tasks of `chosen` after `after`, and the place to go on from (None: the
    list ends)."""
    items: list[TaskViewOut] = []
    counts = await c.store.counts()
    place, scanned, want = after, 0, limit + 1
    while True:
        entries, exhausted = merge(await c.store.task_index_pages(chosen.sources, place, want), want)
        views, ranks = await c.store.task_views([task_id for _, task_id in entries], c.lanes)
        for (score, task_id), view, rank in zip(entries, views, ranks, strict=True):
            if len(items) == limit or scanned == SCAN_BUDGET:
                return items, place
            scanned += 1
            place = (score, task_id)
            if not view:
                continue
            item = await task_view_out(c, task_id, view, rank, counts)
            if chosen.status is None or item.status == chosen.status:
                items.append(item)
        if exhausted:
            return items, None
        want = SCAN_CHUNK


@router.get("/v1/tasks", response_model=TaskPage, tags=["tasks"], responses=responses(Unprocessable))
async def list_tasks(
    c: Ctx,
    caller: CallerDep,
    status: Annotated[Status | None, Query(description="Only tasks that show this status.")] = None,
    user_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=128,
            pattern=USER_ID_PATTERN,
            description="Only this user's tasks (an admin, or a service token within its scope).",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=LIMIT_MAX, description="Tasks per page.")] = LIMIT_DEFAULT,
    cursor: Annotated[
        str | None,
        Query(min_length=1, max_length=CURSOR_MAX_CHARS, description="`next_cursor` of the page before."),
    ] = None,
) -> TaskPage:
    """The caller's tasks, newest first, as `GET /v1/tasks/{id}` shows each.

    A user token lists its own tasks; a service token the tasks it submitted, or with
    `user_id` that user's (within its scope); an admin every task, or with `user_id` one
    user's. Newest first means by submit time, except for an admin's list by `status` alone,
    which puts first the task that most recently took that status (the latest failure first).
    Pages follow `next_cursor`; tasks submitted meanwhile do not shift them.
    """
    chosen = listing(caller, user_id, status)
    after = None if cursor is None else decode_cursor(chosen, cursor)
    items, place = await read_page(c, chosen, after, limit)
    return TaskPage(tasks=items, next_cursor=None if place is None else encode_cursor(chosen, place))
