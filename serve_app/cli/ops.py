"""Operator tools over the event log alone: audit, one task's timeline, the queue at a moment, export.

Each reads the whole log, the archive's segments then the live stream (`events.log_reader`);
the audit also checks the archive's hash chain.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import json
from dataclasses import dataclass, field
from typing import Any, TextIO

from actors.audit import Auditor, AuditReport
from actors.queue.state import QueueState, apply
from events.archive import Archive
from events.catalogue import LogArchived, StoredEvent
from events.codec import decode_flat
from events.errors import EventDecodeError
from events.log_reader import Chain, pages, raw_pages
from events.redis_store import RedisEventStore


@dataclass(slots=True)
class AuditResult:
    """The audit report plus entries no codec path could read."""

    report: AuditReport
    events: int
    undecodable: list[tuple[str, str]] = field(default_factory=list)
    slots: int | None = None
    chain: list[str] = field(default_factory=list)  # the first archive segment that does not match

    @property
    def violations(self) -> list[str]:
        """Every broken invariant, in words, naming the tasks or events at fault."""
        r = self.report
        found = list(self.chain)
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
        if r.expired_after_start:
            started = ", ".join(r.expired_after_start[:10])
            found.append(
                f"{len(r.expired_after_start)} task(s) expired after a call of theirs started: {started}"
            )
        if r.expired_unknown_attempt:
            unknown = ", ".join(r.expired_unknown_attempt[:10])
            found.append(
                f"{len(r.expired_unknown_attempt)} expiry event(s) of an attempt never dispatched "
                f"or of a task not waiting: {unknown}"
            )
        if r.delivered_twice:
            twice = ", ".join(r.delivered_twice[:10])
            found.append(f"{len(r.delivered_twice)} webhook(s) recorded delivered twice: {twice}")
        for entry_id, why in self.undecodable[:10]:
            found.append(f"event {entry_id}: {why}")
        return found


async def run_audit(
    url: str, namespace: str, slots: int | None = None, archive: Archive | None = None
) -> AuditResult:
    """Replay the whole log (`archive`'s segments, then the stream) through the auditor, and
    check the archive's hash chain on the way."""
    store = RedisEventStore.from_url(url, namespace)
    auditor = Auditor()
    check = Chain(strict=False)
    undecodable: list[tuple[str, str]] = []
    feed = auditor.feed
    # The fold only grows its containers: the cycle collector would walk them again and
    # again for nothing (a fifth of the audit's time), so it pauses meanwhile.
    collecting = gc.isenabled()
    gc.disable()
    try:
        async for page in raw_pages(store, archive, check=check):
            for entry_id, flat in page:
                try:
                    event = decode_flat(flat)
                except EventDecodeError as exc:
                    undecodable.append((entry_id, str(exc)))
                    continue
                if type(event) is LogArchived:
                    check.record(event)
                feed(StoredEvent(entry_id, event))
    finally:
        if collecting:
            gc.enable()
        await store.close()
    # Tasks still waiting or running (report.still_live) have not ended yet: no violation.
    events = auditor.events + len(undecodable)
    return AuditResult(auditor.finish(), events, undecodable, slots, check.violations())


async def task_timeline(
    url: str, namespace: str, task_id: str, archive: Archive | None = None
) -> list[dict[str, Any]]:
    """One task's events, in stream order: from its audit list (entries trimmed from the stream
    read from `archive`), or, once its read models are gone, from the archive alone."""
    from serve_app.http.archived import ArchivedTasks, log_line

    store = RedisEventStore.from_url(url, namespace)
    try:
        if archive is None:
            return await store.task_log(task_id)
        reader = ArchivedTasks(archive)
        found = await store.task_log(task_id, archived=functools.partial(reader.by_ids, store, task_id))
        if found:
            return found
        return [log_line(fields) for _, fields in await reader.history(store, task_id)]
    finally:
        await store.close()


async def state_at(url: str, namespace: str, when: dt.datetime, archive: Archive | None = None) -> QueueState:
    """The queue state folded from every event up to `when`."""
    store = RedisEventStore.from_url(url, namespace)
    state = QueueState()
    until = f"{int(when.timestamp() * 1000)}-{2**63 - 1}"
    try:
        async for page in raw_pages(store, archive, end=until):
            for entry_id, flat in page:
                with contextlib.suppress(EventDecodeError):
                    apply(state, StoredEvent(entry_id, decode_flat(flat)))
    finally:
        await store.close()
    return state


async def export(
    url: str, namespace: str, out: TextIO, since: dt.datetime | None = None, archive: Archive | None = None
) -> int:
    """Write the log as JSON lines ({id, type, v, task, data}); returns the number written."""
    store = RedisEventStore.from_url(url, namespace)
    written = 0
    after = "0-0" if since is None else f"{int(since.timestamp() * 1000) - 1}-{2**63 - 1}"
    try:
        async for page in pages(store, archive, after):
            for entry_id, flat in page:
                fields = dict(zip(flat[::2], flat[1::2], strict=False))
                line = {
                    "id": entry_id,
                    "type": fields.get("type"),
                    "v": int(fields.get("v", 0)),
                    "task": fields.get("task", ""),
                    "data": json.loads(fields.get("data", "null")),
                }
                out.write(json.dumps(line, separators=(",", ":")) + "\n")
                written += 1
    finally:
        await store.close()
    return written
