"""Operator tools over the event log alone: audit, one task's timeline, the queue at a moment, export."""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from actors.audit import Auditor, AuditReport
from actors.queue.state import QueueState, apply
from events.catalogue import StoredEvent
from events.codec import decode, decode_flat
from events.errors import EventDecodeError
from events.redis_store import RedisEventStore


async def entries(store: RedisEventStore, until: str = "+") -> AsyncIterator[tuple[str, dict[str, str]]]:
    """Every raw stream entry up to `until`, read in pages."""
    after = "0-0"
    while True:
        page = await store.read_raw(after, 10_000, until)
        if not page:
            return
        for entry in page:
            yield entry
        after = page[-1][0]


@dataclass(slots=True)
class AuditResult:
    """The audit report plus entries no codec path could read."""

    report: AuditReport
    events: int
    undecodable: list[tuple[str, str]] = field(default_factory=list)
    slots: int | None = None

    @property
    def violations(self) -> list[str]:
        """Every broken invariant, in words, naming the tasks or events at fault."""
        r = self.report
        found = []
        if r.ended_twice:
            found.append(f"{len(r.ended_twice)} task(s) ended twice: {', '.join(r.ended_twice[:10])}")
        if r.dispatched_twice:
            twice = ", ".join(r.dispatched_twice[:10])
            found.append(f"{len(r.dispatched_twice)} attempt(s) dispatched twice: {twice}")
        if r.overlapping:
            found.append(
                f"{len(r.overlapping)} task(s) ran two attempts at once: {', '.join(r.overlapping[:10])}"
            )
        if self.slots is not None and r.max_running > self.slots:
            found.append(f"running reached {r.max_running}, above {self.slots} slots")
        for pool, calls in r.max_window_calls.items():
            if calls > r.window_capacity[pool]:
                found.append(f"pool {pool}: {calls} calls in one window, limit {r.window_capacity[pool]}")
        if r.overdrawn:
            found.append(
                f"{len(r.overdrawn)} user(s) went below a zero balance: {', '.join(r.overdrawn[:10])}"
            )
        for error in r.refund_errors[:10]:
            found.append(f"credits: {error}")
        if r.delivered_twice:
            twice = ", ".join(r.delivered_twice[:10])
            found.append(f"{len(r.delivered_twice)} webhook(s) recorded delivered twice: {twice}")
        for entry_id, why in self.undecodable[:10]:
            found.append(f"event {entry_id}: {why}")
        return found


async def run_audit(url: str, namespace: str, slots: int | None = None) -> AuditResult:
    """Replay the whole stream through the auditor."""
    store = RedisEventStore.from_url(url, namespace)
    auditor = Auditor()
    undecodable: list[tuple[str, str]] = []
    feed = auditor.feed
    # The fold only grows its containers: the cycle collector would walk them again and
    # again for nothing (a fifth of the audit's time), so it pauses meanwhile.
    collecting = gc.isenabled()
    gc.disable()
    try:
        after = "0-0"
        while page := await store.read_flat(after, 20_000):
            for entry_id, flat in page:
                try:
                    event = decode_flat(flat)
                except EventDecodeError as exc:
                    undecodable.append((entry_id, str(exc)))
                    continue
                feed(StoredEvent(entry_id, event))
            after = page[-1][0]
    finally:
        if collecting:
            gc.enable()
        await store.close()
    # Tasks still waiting or running (report.still_live) have not ended yet: no violation.
    return AuditResult(auditor.finish(), auditor.events + len(undecodable), undecodable, slots)


async def task_timeline(url: str, namespace: str, task_id: str) -> list[dict[str, Any]]:
    """One task's events, in stream order."""
    store = RedisEventStore.from_url(url, namespace)
    try:
        return await store.task_log(task_id)
    finally:
        await store.close()


async def state_at(url: str, namespace: str, when: dt.datetime) -> QueueState:
    """The queue state folded from every event up to `when`."""
    store = RedisEventStore.from_url(url, namespace)
    state = QueueState()
    until = f"{int(when.timestamp() * 1000)}-{2**63 - 1}"
    try:
        async for entry_id, fields in entries(store, until):
            with contextlib.suppress(EventDecodeError):
                apply(state, StoredEvent(entry_id, decode(fields)))
    finally:
        await store.close()
    return state


async def export(url: str, namespace: str, out: TextIO, since: dt.datetime | None = None) -> int:
    """Write the stream as JSON lines ({id, type, v, task, data}); returns the number written."""
    store = RedisEventStore.from_url(url, namespace)
    written = 0
    try:
        after = "0-0" if since is None else f"{int(since.timestamp() * 1000) - 1}-{2**63 - 1}"
        while True:
            page = await store.read_raw(after, 10_000)
            if not page:
                break
            for entry_id, fields in page:
                line = {
                    "id": entry_id,
                    "type": fields.get("type"),
                    "v": int(fields.get("v", 0)),
                    "task": fields.get("task", ""),
                    "data": json.loads(fields.get("data", "null")),
                }
                out.write(json.dumps(line, separators=(",", ":")) + "\n")
                written += 1
            after = page[-1][0]
    finally:
        await store.close()
    return written
