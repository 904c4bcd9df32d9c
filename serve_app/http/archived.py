"""Tasks past their retention, answered from the archive: which segments hold a task's events,
and a few segments kept per replica, indexed by task.

A task's read models (view, audit list, index entries) are deleted once it ended long enough
ago and its terminal event is archived, so its history is in the archive. A time-ordered id
(`events.task_ids`) tells when the task was made: the segment holding that moment holds its
`task.submitted` (give or take `SKEW_MS` for the clocks and the upload), and the ones after
it the rest of its history, read until its ending (and `late_ms` after it, for its refund
and first webhook outcome) and at most `FOLLOW` segments on. An id without a time (made before that layout)
is looked for in the newest `SCAN` segments. A bounded read either way: a task outside it
answers as unknown.

With `[archive] serve_reads = false` nothing is read: an id whose time lies at or before the
archived point answers 410 Gone, any other unknown id 404. The answer depends on the id and the
archived point alone, never on whether the task exists or whose it is.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from actors.archiving import archive_of
from events.archive import Archive, ArchiveError, Entry, Opened, Segment
from events.catalogue import Event, stream_id_key, stream_id_ms
from events.codec import decode_flat, log_entry
from events.errors import EventDecodeError
from events.log_reader import archived_to, chain
from events.projection import fold_task_view
from events.redis_store import RedisEventStore
from events.task_ids import made_at_ms
from serve_app.http.auth import Caller
from serve_app.http.context import Context
from serve_app.http.problems import Gone, NotFound, Unavailable

log = structlog.get_logger("genqueue.api")

CACHE_BYTES = 128 * 2**20  # segments kept per replica, by the size of their tasks' entries
SKEW_MS = 300_000  # how far a submit's stream id may lie from its id's time
FOLLOW = 8  # segments read after the one holding a task's submit
LATE_MS = 60_000  # read on after a task's ending, for its refund and first webhook outcome
SCAN = 4  # newest segments searched for an id that carries no time
ENDINGS = frozenset({"task.succeeded", "task.failed", "task.cancelled", "task.expired"})
ENTRY_BYTES = 200  # what one task's slot in a segment's index costs besides its entries (key, dict)


def _field(fields: Sequence[str], name: str) -> str:
    """One field of an entry as XRANGE gives it (name, value, ...)."""
    if len(fields) == 8 and fields[4] == "task" and name in ("type", "task"):
        return fields[1] if name == "type" else fields[5]
    pairs = dict(zip(fields[::2], fields[1::2], strict=False))
    return pairs.get(name, "")


@dataclass(frozen=True, slots=True)
class Indexed:
    """A segment's entries by task, each task's as one JSON array (so a cached segment costs
    about its decompressed size, not a Python object per field)."""

    segment: Segment
    tasks: dict[str, bytes]
    size: int

    @classmethod
    def of(cls, opened: Opened) -> Indexed:
        """The index of a segment read whole."""
        grouped: dict[str, list[Entry]] = {}
        for entry in opened.entries:
            task = _field(entry[1], "task")
            if task:
                grouped.setdefault(task, []).append(entry)
        tasks = {task: orjson.dumps(entries) for task, entries in grouped.items()}
        return cls(opened.segment, tasks, sum(map(len, tasks.values())) + ENTRY_BYTES * len(tasks))

    def entries(self, task_id: str) -> list[Entry]:
        """The task's entries in this segment, in log order."""
        found = self.tasks.get(task_id)
        return [(e[0], e[1]) for e in orjson.loads(found)] if found else []


class ArchivedTasks:
    """One replica's reads of the archive: segments listed once per archived point, indexed ones
    kept up to `cache_bytes` (least recently used go first), one read per segment at a time."""

    def __init__(self, archive: Archive, late_ms: int = LATE_MS, cache_bytes: int = CACHE_BYTES) -> None:
        self.archive = archive
        self.late_ms = late_ms
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, Indexed] = OrderedDict()
        self._size = 0
        self._loading: dict[str, asyncio.Future[Indexed]] = {}
        self._listed: tuple[str, list[Segment]] = ("", [])
        self.reads = 0  # segments read from the archive (the cache's misses)

    async def segments(self, upto: str) -> list[Segment]:
        """The segments recorded up to the archived point `upto`, in log order."""
        if self._listed[0] != upto:
            self._listed = (upto, chain(await asyncio.to_thread(self.archive.segments), upto))
        return self._listed[1]

    async def indexed(self, segment: Segment) -> Indexed:
        """A segment's index, from the cache or read (once, however many ask at the same time)."""
        if (hit := self._cache.get(segment.name)) is not None:
            self._cache.move_to_end(segment.name)
            return hit
        loading = self._loading.get(segment.name)
        if loading is None:
            loading = asyncio.ensure_future(asyncio.to_thread(self._read, segment))
            self._loading[segment.name] = loading
            loading.add_done_callback(lambda _: self._loading.pop(segment.name, None))
        indexed = await asyncio.shield(loading)
        if segment.name not in self._cache:
            self._cache[segment.name] = indexed
            self._size += indexed.size
            while self._size > self.cache_bytes and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._size -= old.size
        return indexed

    def _read(self, segment: Segment) -> Indexed:
        self.reads += 1
        return Indexed.of(self.archive.open(segment))

    async def history(self, store: RedisEventStore, task_id: str) -> list[Entry]:
        """The task's entries in the archive, from its submit on ([] when not found there)."""
        upto = await archived_to(store)
        if upto == "0-0":
            return []
        listed = await self.segments(upto)
        made = made_at_ms(task_id)
        if made is None:
            return await self._scan(listed, task_id)
        if made - SKEW_MS > stream_id_ms(upto):
            return []
        found: list[Entry] = []
        submit: int | None = None  # the place of the segment holding the submit, among those read
        ended: int | None = None  # when the task ended (ms)
        candidates = [s for s in listed if stream_id_ms(s.last) >= made - SKEW_MS]
        for n, segment in enumerate(candidates):
            start = stream_id_ms(segment.first)
            if submit is None and start > made + SKEW_MS:
                break
            if submit is not None and (
                n - submit > FOLLOW or (ended is not None and start > ended + self.late_ms)
            ):
                break
            entries = (await self.indexed(segment)).entries(task_id)
            if submit is None:
                if not any(_field(f, "type") == "task.submitted" for _, f in entries):
                    continue
                submit = n
            found += entries
            if ended is None:
                ended = next((stream_id_ms(i) for i, f in entries if _field(f, "type") in ENDINGS), None)
        return found

    async def _scan(self, listed: list[Segment], task_id: str) -> list[Entry]:
        """The task's entries in the newest SCAN segments, if its submit is among them."""
        found: list[list[Entry]] = []
        for segment in reversed(listed[-SCAN:]):
            entries = (await self.indexed(segment)).entries(task_id)
            found.append(entries)
            if any(_field(f, "type") == "task.submitted" for _, f in entries):
                return [entry for part in reversed(found) for entry in part]
        return []

    async def by_ids(self, store: RedisEventStore, task_id: str, ids: list[str]) -> dict[str, Sequence[str]]:
        """The task's entries with these stream ids (trimmed from the stream), by id."""
        wanted = set(ids)
        keys = sorted(map(stream_id_key, ids))
        listed = await self.segments(await archived_to(store))
        found: dict[str, Sequence[str]] = {}
        for segment in listed:
            lo, hi = segment.sort_key(), stream_id_key(segment.last)
            if any(lo <= key <= hi for key in keys):
                for entry_id, fields in (await self.indexed(segment)).entries(task_id):
                    if entry_id in wanted:
                        found[entry_id] = fields
        return found


_replicas: weakref.WeakKeyDictionary[Context, ArchivedTasks] = weakref.WeakKeyDictionary()


def archived_tasks(c: Context) -> ArchivedTasks:
    """The replica's reader of archived tasks (made on first use)."""
    reader = _replicas.get(c)
    if reader is None:
        reader = _replicas[c] = ArchivedTasks(archive_of(c.config))
    return reader


async def _history(c: Context, task_id: str, caller: Caller) -> list[Entry]:
    """The history of a task that has no read models, for `caller`: a 404 when unknown or
    another user's, a 410 when reads from the archive are off, a 503 when it cannot be read."""
    if not c.config.archive.serve_reads:
        made, upto = made_at_ms(task_id), await archived_to(c.store)
        if made is not None and upto != "0-0" and made - SKEW_MS <= stream_id_ms(upto):
            raise Gone(
                f"task {task_id} is past its retention and was archived (if it existed); "
                "reads from the archive are off ([archive] serve_reads = false)"
            )
        raise NotFound(f"no task {task_id}")
    try:
        history = await archived_tasks(c).history(c.store, task_id)
    except ArchiveError as exc:
        log.warning("archive unreadable", task_id=task_id, error=str(exc))
        raise Unavailable(f"task {task_id} is archived and the archive cannot be read now", 30) from exc
    owner = next((_event_owner(f) for _, f in history if _field(f, "type") == "task.submitted"), None)
    if owner is None or not caller.may_see(owner):
        raise NotFound(f"no task {task_id}")
    return history


def _event_owner(fields: Sequence[str]) -> str:
    data: dict[str, Any] = orjson.loads(_field(fields, "data") or "{}")
    return str(data.get("user_id", ""))


def _events(history: list[Entry]) -> list[Event]:
    events = []
    for _, fields in history:
        try:
            events.append(decode_flat(fields))
        except EventDecodeError:
            continue
    return events


async def archived_view(c: Context, task_id: str, caller: Caller) -> dict[str, str]:
    """The view of a task whose read models are gone, folded from its archived events as the
    live hash was (`events.projection.view_fields`)."""
    return fold_task_view(_events(await _history(c, task_id, caller)))


def log_line(fields: Sequence[str]) -> dict[str, Any]:
    """One line of a task's audit trail from an entry's fields, as `task_log` gives it."""
    line: dict[str, Any] = orjson.loads(log_entry(dict(zip(fields[::2], fields[1::2], strict=False))))
    return line


async def archived_log(c: Context, task_id: str, caller: Caller) -> list[dict[str, Any]]:
    """The audit trail of a task whose read models are gone, from the archive."""
    return [log_line(fields) for _, fields in await _history(c, task_id, caller)]


async def task_log(c: Context, task_id: str) -> list[dict[str, Any]]:
    """A task's audit trail, its entries trimmed from the stream read from the archive."""
    lookup = functools.partial(archived_tasks(c).by_ids, c.store, task_id)

    async def trimmed(ids: list[str]) -> Mapping[str, Sequence[str]]:
        try:
            return await lookup(ids)
        except ArchiveError as exc:
            raise Unavailable(
                f"part of task {task_id}'s trail is archived and cannot be read now", 30
            ) from exc

    return await c.store.task_log(task_id, archived=trimmed)
