"""genqueue_client's watch over httpx.MockTransport (a fake network): messages as the server writes
them, a stream that breaks or ends early is opened again with Last-Event-ID, nothing is repeated."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from genqueue_client import AsyncClient, Client, Retries, Update
from genqueue_client import errors as client_errors

QUICK = Retries(attempts=3, total_seconds=5.0, base_seconds=0.001, cap_seconds=0.002)
KEEPALIVE = b": ping\n\n"

Watch = Callable[..., list[Update]]


def message(event_id: str, status: str, position: int | None = None) -> bytes:
    """A watch message as `serve_app.http.watching.stream_messages` writes it."""
    view = {"task_id": "t1", "user_id": "u", "kind": "photography", "status": status, "position": position}
    return f"event: task\ndata: {json.dumps(view)}\nid: {event_id}\n\n".encode()


class Breaking(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body sent in `chunks`, then the connection drops (or, `drop` false, ends)."""

    def __init__(self, chunks: list[bytes], drop: bool) -> None:
        self.chunks, self.drop = chunks, drop

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.drop:
            raise httpx.ReadError("connection reset")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.drop:
            raise httpx.ReadError("connection reset")


class Server:
    """Answers each watch request with the next scripted stream (or status); records Last-Event-ID."""

    def __init__(self, *streams: tuple[list[bytes], bool] | int, status: str = "running") -> None:
        self.streams = list(streams)
        self.resumed_from: list[str | None] = []
        self.status = status  # what the task view says when read
        self.reads = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/watch"):
            self.reads += 1
            return httpx.Response(200, json={"task_id": "t1", "status": self.status})
        self.resumed_from.append(request.headers.get("Last-Event-ID"))
        script = self.streams.pop(0)
        if isinstance(script, int):
            body = {"title": "Not found", "status": script, "detail": "no task t1"}
            return httpx.Response(script, json=body)
        chunks, drop = script
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=Breaking(chunks, drop)
        )


def watch_sync(server: Server, last_event_id: str = "") -> list[Update]:
    with Client("http://genqueue.test", retries=QUICK, transport=httpx.MockTransport(server)) as client:
        return list(client.watch("t1", last_event_id))


def watch_async(server: Server, last_event_id: str = "") -> list[Update]:
    async def main() -> list[Update]:
        transport = httpx.MockTransport(server)
        async with AsyncClient("http://genqueue.test", retries=QUICK, transport=transport) as client:
            return [u async for u in client.watch("t1", last_event_id)]

    return asyncio.run(main())


WATCHES = [watch_sync, watch_async]


@pytest.mark.parametrize("watch", WATCHES, ids=["sync", "async"])
def test_a_dropped_stream_resumes_from_the_last_update(watch: Watch) -> None:
    """A drop mid-message (and after a keep-alive) reopens with the last id; each update comes once."""
    half = message("3-1-waiting", "queued", 1)[:25]
    server = Server(
        ([message("2-2-waiting", "queued", 2), KEEPALIVE, half], True),
        ([KEEPALIVE, message("3-1-waiting", "queued", 1)], True),
        ([message("5", "succeeded")], False),
    )
    updates = watch(server)
    assert [u.id for u in updates] == ["2-2-waiting", "3-1-waiting", "5"]
    assert [u.view.position for u in updates] == [2, 1, None]
    assert server.resumed_from == [None, "2-2-waiting", "3-1-waiting"]
    assert updates[-1].ended and not any(u.ended for u in updates[:-1])


@pytest.mark.parametrize("watch", WATCHES, ids=["sync", "async"])
def test_a_stream_that_ends_before_the_task_is_opened_again(watch: Watch) -> None:
    """A stream closed cleanly while the task runs is reopened; the watch ends at the terminal update."""
    server = Server(([message("4", "running")], False), ([message("6", "failed")], False))
    assert [u.view.status for u in watch(server, "1-0-waiting")] == ["running", "failed"]
    assert server.resumed_from == ["1-0-waiting", "4"]


@pytest.mark.parametrize("watch", WATCHES, ids=["sync", "async"])
def test_a_task_gone_while_watched_raises_not_found(watch: Watch) -> None:
    """A reopened stream answered 404 ends the watch with NotFound."""
    server = Server(([message("4", "running")], False), 404)
    with pytest.raises(client_errors.NotFound):
        watch(server)


@pytest.mark.parametrize("watch", WATCHES, ids=["sync", "async"])
def test_a_stream_that_keeps_breaking_gives_up(watch: Watch) -> None:
    """Three drops without a message in between exhaust three attempts: ConnectionFailed."""
    server = Server(
        ([KEEPALIVE], True), ([KEEPALIVE], True), ([KEEPALIVE], True), ([message("9", "failed")], False)
    )
    with pytest.raises(client_errors.ConnectionFailed):
        watch(server)
    assert len(server.resumed_from) == 3


@pytest.mark.parametrize("watch", WATCHES, ids=["sync", "async"])
def test_a_watch_resumed_after_the_last_update_ends_at_once(watch: Watch) -> None:
    """Resumed with the terminal update's id, the stream sends nothing: one read of the task
    says it has ended, and the watch ends without an update."""
    server = Server(([KEEPALIVE], False), status="succeeded")
    assert watch(server, "6") == []
    assert server.resumed_from == ["6"] and server.reads == 1
