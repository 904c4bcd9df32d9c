"""A task as the API shows it, and its watch stream: the updates the replica's hub hands it,
written as Server-Sent Events."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from starlette.responses import StreamingResponse

from actors.webhooks.rules import task_body
from events.catalogue import QUEUED
from events.public_view import Stage, stage_of
from events.store import QueueCounts
from serve_app.http.context import Context
from serve_app.http.estimates import Eta, task_eta
from serve_app.http.fanout import Render
from serve_app.http.models import TaskViewOut
from serve_app.http.serving import serving_now
from serve_app.http.watch import Stream

if TYPE_CHECKING:
    from serve_app.http.results import Links

# What a stream is sent when the hub nudges it: a comment, which clients skip.
KEEPALIVE = b": ping\n\n"


class EventStream(StreamingResponse):
    """A `text/event-stream` body written as it comes: neither cached nor buffered on the way.

    A plain streaming response: each message is one write, with none of the per-message tasks
    and timers of FastAPI's own Server-Sent-Events response, which cost a replica more than the
    rest of a message when a thousand streams each get one per queue move.
    """

    media_type = "text/event-stream"

    def __init__(
        self, content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None, **rest: Any
    ) -> None:
        super().__init__(
            content,
            status_code,
            {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
            **rest,
        )


async def task_view_out(
    c: Context, task_id: str, view: dict[str, str], position: int | None, counts: QueueCounts | None = None
) -> TaskViewOut:
    """The task view as the API shows it: its public status and, while it is queued, its stage
    (from the pools' recent views), its position while it waits for its turn and its ETA (the
    queue's `counts` read here when not given)."""
    body = task_body(task_id, view)  # the same mapping the completion webhooks send
    status = body["status"] or QUEUED
    # Only a task in the waiting set has a place in it; a dispatched one is queued for its call.
    position = position if view.get("status", QUEUED) == QUEUED else None
    stage = Stage()
    if status == QUEUED:
        now = await serving_now(c)
        stage = stage_of(view, now.quota_until, now.blocked.get(body["kind"]))
    eta = Eta()
    if status == QUEUED:
        eta = await task_eta(c, task_id, view, position, counts or await c.store.counts())
    return TaskViewOut(**{**body, "status": status, "position": position, **eta.fields(), **stage.fields()})


def renderer(c: Context, links: Links | None = None) -> Render:
    """How the replica's hub makes a watched task's view into what its streams are sent: with
    the signed result link (`links`) a succeeded task's view carries, as `GET /v1/tasks/{id}`."""
    if links is None:
        return functools.partial(task_view_out, c)

    async def render(
        task_id: str, view: dict[str, str], position: int | None, counts: QueueCounts | None = None
    ) -> TaskViewOut:
        out = await task_view_out(c, task_id, view, position, counts)
        return links.attach(task_id, view, out, time.time())

    return render


def parse_event_id(value: str | None) -> tuple[int, int | None, str]:
    """(task events seen, position, stage) from a Last-Event-ID (`Update.event_id`: the time
    after the stage is left out); (0, None, "") when absent or unreadable."""
    if not value:
        return 0, None, ""
    seen, _, rest = value.partition("-")
    position, _, stage = rest.partition("-")
    stage = stage.partition(".")[0]
    try:
        return int(seen), (int(position) if position not in ("", "None") else None), stage
    except ValueError:
        return 0, None, ""


async def stream_messages(stream: Stream, last_event_id: str | None) -> AsyncIterator[bytes]:
    """The stream's messages, as written on the wire: each update the hub hands it that says
    something the watcher was not sent (by its message id `<events seen>-<position>-<stage>`),
    until its task ends or is gone or its token is revoked."""
    sent = parse_event_id(last_event_id)
    while not stream.revoked:
        stream.wake.clear()
        update = stream.update
        if update is not None:
            if update.view is None:
                return
            if update.key != sent:
                sent = update.key
                yield f"event: task\ndata: {update.data}\nid: {update.event_id}\n\n".encode()
            if update.ended:
                return
        if stream.ping:
            stream.ping = False
            yield KEEPALIVE
        await stream.wake.wait()
