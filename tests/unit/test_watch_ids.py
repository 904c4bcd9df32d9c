"""A watch stream's message ids: one id a message, even when a dispatched task's stage goes from
waiting_for_quota to starting and back with no event of its own, and a reconnect with any of
them is sent only what changed since."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from serve_app.http.fanout import Update
from serve_app.http.models import TaskViewOut
from serve_app.http.watch import Stream
from serve_app.http.watching import parse_event_id, stream_messages


def _update(seen: int, status: str, stage: str | None, made_ms: int) -> Update:
    view = TaskViewOut.model_construct(
        task_id="t", user_id="u", kind="photography", status=status, stage=stage
    )
    return Update(seen, view, "{}", made_ms)


def _id(message: bytes) -> str:
    return next(line for line in message.decode().splitlines() if line.startswith("id: "))[4:]


async def _next(messages: AsyncIterator[bytes], stream: Stream, update: Update) -> str:
    stream.send(update)
    return _id(await asyncio.wait_for(anext(messages), 5))


def test_a_stage_that_goes_back_and_forth_keeps_its_ids_apart() -> None:
    async def scenario() -> tuple[list[str], list[Update]]:
        stream = Stream("t", "token")
        updates = [
            _update(3, "queued", "waiting_for_quota", 1_796_585_642_001),
            _update(3, "queued", "starting", 1_796_585_642_250),
            _update(3, "queued", "waiting_for_quota", 1_796_585_642_500),
            _update(5, "succeeded", None, 1_796_585_643_000),
        ]
        messages = stream_messages(stream, None)
        ids = [await _next(messages, stream, update) for update in updates]
        return ids, updates

    ids, updates = asyncio.run(scenario())
    assert ids == [
        "3--waiting_for_quota.1796585642001",
        "3--starting.1796585642250",
        "3--waiting_for_quota.1796585642500",
        "5",
    ]
    assert [parse_event_id(i) for i in ids] == [u.key for u in updates]


def test_a_reconnect_is_sent_only_what_changed_since_its_last_id() -> None:
    """Resumed with the id of the update the task still stands at (made at another time, on
    another replica), the stream sends nothing for it; the next change goes out."""

    async def scenario() -> list[str]:
        stream = Stream("t", "token")
        stream.send(_update(3, "queued", "starting", 1_796_585_642_900))
        messages = stream_messages(stream, "3--starting.1796585642250")
        return [await _next(messages, stream, _update(4, "running", None, 1_796_585_643_000))]

    assert asyncio.run(scenario()) == ["4"]
