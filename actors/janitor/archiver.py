"""The archiving pass: closed segments of the stream to the archive, the trim, and forgetting
finished tasks the archive answers for.

One pass (`archive_once`):

1. the cutoff: the newest stream id that is older than `[retention] live_seconds` and that
   every actor's newest snapshot covers (`snapshot:queue`, `snapshot:keypool` in the log
   hash; either missing: nothing is archived);
2. a segment found beyond `archived_to` (a crash between its write and its `log.archived`)
   is adopted when it opens whole, starts at the next stream entry, chains to the recorded
   digest and holds exactly the stream's entries; any other is removed and written again;
3. the entries after `archived_to` up to the cutoff, `[archive] segment_events` at a time:
   each segment is written and read back (`events.archive.Archive.write`), then
   `log.archived` is appended, then the stream is trimmed up to its last id. A full segment
   is written whenever there is one; a partial one only once its first entry is older than
   `now - live_seconds` by `partial_seconds` (an hour, or `live_seconds` if shorter), so a
   quiet log does not become a flood of tiny files (a segment holds at least an hour of
   log), or when the caller flushes (tests, benchmarks);
4. the read models of tasks that ended `forget_after` ago (`task_seconds`, or longer while
   their blobs or webhooks may still need them) are forgotten (`events.redis_forget`).

A pass whose archive fails (ArchiveError, OSError) trims and forgets nothing and raises the
`archive_unavailable` alert; the first pass that succeeds again resolves it. Submits never
wait on the archive.
"""

from __future__ import annotations

import asyncio
import math
import urllib.parse
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import cast

import structlog

from actors.config import Config
from events.archive import Archive, ArchiveError, Entry, Opened, Sealed, Segment, SegmentError, encode
from events.catalogue import AlertRaised, AlertResolved, LogArchived, stream_id_key, stream_id_ms
from events.redis_forget import Forgetting
from events.redis_store import RedisEventStore

log = structlog.get_logger("genqueue.archiver")

ALERT = "archive_unavailable"
SNAPSHOT_ACTORS = ("queue", "keypool")
# A partial segment waits until its first entry is this much older than `now - live_seconds`.
PARTIAL_SECONDS = 3600.0
_LAST_SEQ = 2**64 - 1


@dataclass(slots=True)
class Report:
    """What one pass did: segments written (and adopted after a crash), events and bytes
    archived, entries trimmed, stray segment files removed, tasks forgotten, the cutoff it
    used ("" when nothing could be archived) and the archive's error ("" when none)."""

    segments: int = 0
    adopted: int = 0
    events: int = 0
    bytes: int = 0
    trimmed: int = 0
    removed: int = 0
    forgotten: int = 0
    cutoff: str = ""
    error: str = ""


def cutoff(log_state: Mapping[str, str], now: float, live_seconds: float) -> str | None:
    """The newest stream id a pass may archive: before `now - live_seconds` and covered by every
    actor's newest snapshot; None when an actor has none yet."""
    covers = [log_state.get(f"snapshot:{actor}") for actor in SNAPSHOT_ACTORS]
    if any(not c for c in covers):
        return None
    ms = int((now - live_seconds) * 1000) - 1
    if ms < 0:
        return None
    ids = [f"{ms}-{_LAST_SEQ}", *(str(c) for c in covers)]
    return min(ids, key=stream_id_key)


def partial_seconds(live_seconds: float) -> float:
    """How much older than `now - live_seconds` a partial segment's first entry must be."""
    return min(PARTIAL_SECONDS, live_seconds)


def forget_after(config: Config) -> float:
    """How long after its end a task's read models may go: `task_seconds`, and never while its
    blobs may still be there (`[storage] retention_seconds`) or its completion webhook may still
    be retried (`[webhooks] max_seconds`; a restarted sender reads the view to send it)."""
    webhooks = config.webhooks.max_seconds if config.webhooks.enabled else 0.0
    return max(config.retention.task_seconds, config.storage.retention_seconds, webhooks)


def redacted(url: str) -> str:
    """An archive URL fit for a log: without credentials or query."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


async def archive_once(
    store: RedisEventStore,
    archive: Archive,
    config: Config,
    now: float,
    *,
    flush: bool = False,
    keep: Collection[str] = frozenset(),
) -> Report:
    """One archiving pass at `now` (see the module's docstring). `flush` writes a partial last
    segment at once; `keep` names tasks whose blobs are still stored (not forgotten yet).
    Raises StoreUnavailableError when Redis is down; an archive failure is in the report."""
    state = await store.log_state()
    run = _Pass(store, archive, now)
    after, digest = state.get("archived_to", "0-0"), state.get("digest", "")
    if after != "0-0":
        run.report.trimmed += await store.trim_to(after)  # a trim a crash cut short
    cut = cutoff(state, now, config.retention.live_seconds)
    try:
        if cut is not None:
            run.report.cutoff = cut
            after, digest = await run.recover(after, digest)
            live = config.retention.live_seconds
            ripe = math.inf if flush else now - live - partial_seconds(live)
            await run.segments(config.archive.segment_events, cut, ripe, after, digest)
    except (ArchiveError, OSError) as exc:
        run.report.error = str(exc).replace(archive.url, redacted(archive.url)) or type(exc).__name__
        await _alert(store, now, run.report.error)
        log.warning(
            "archiving failed; nothing trimmed", archive=redacted(archive.url), error=run.report.error
        )
        return run.report
    await _alert(store, now, "")
    if config.retention.task_seconds > 0:
        rule = Forgetting(
            ended_before=now - forget_after(config),
            archived_to=await store.log_field("archived_to") or "0-0",
            blobs_expire=config.storage.retention_seconds > 0,
            keep=keep,
        )
        run.report.forgotten = await store.forget_ended(rule)
    return run.report


@dataclass(slots=True)
class _Pass:
    """One pass's store, archive and clock, and what it did so far."""

    store: RedisEventStore
    archive: Archive
    now: float
    report: Report = field(default_factory=Report)

    async def segments(self, size: int, cut: str, ripe: float, after: str, digest: str) -> None:
        """Write the segments after `after` up to `cut`: the full ones, and a partial one whose
        first entry was appended before `ripe` (epoch seconds)."""
        while page := await self.store.read_flat(after, size, cut):
            if len(page) < size and stream_id_ms(page[0][0]) > ripe * 1000:
                return
            # `[id, [name, value, ...]]` rows as the server sent them: entries as they are.
            sealed = await asyncio.to_thread(self.archive.write, cast(list[Entry], page), digest)
            await self.record(sealed)
            after, digest = sealed.segment.last, sealed.digest

    async def record(self, sealed: Sealed) -> None:
        """`log.archived` for a segment in the archive (`mark`), then the trim up to its last entry."""
        segment = sealed.segment
        await self.mark(sealed)
        self.report.trimmed += await self.store.trim_to(segment.last)
        self.report.segments += 1
        self.report.events += sealed.count
        self.report.bytes += sealed.bytes
        log.info(
            "log segment archived",
            segment=segment.name,
            events=sealed.count,
            bytes=sealed.bytes,
            archive=redacted(self.archive.url),
        )

    async def mark(self, sealed: Sealed) -> None:
        """Append the `log.archived` of a segment in the archive: the archived point moves to its
        last entry, which the stream may still hold until the trim."""
        segment = sealed.segment
        event = LogArchived(
            segment=segment.name,
            first=segment.first,
            last=segment.last,
            count=sealed.count,
            digest=sealed.digest,
            prev_digest=sealed.prev_digest,
            bytes=sealed.bytes,
            at=self.now,
        )
        await self.store.append([event])

    async def recover(self, after: str, digest: str) -> tuple[str, str]:
        """Adopt the segments a crash left beyond `after` that hold exactly the stream's next
        entries; remove the rest. Returns the archived point and digest to go on from."""
        while True:
            found = await asyncio.to_thread(self.archive.segments)
            beyond = [s for s in found if stream_id_key(s.last) > stream_id_key(after)]
            if not beyond:
                return after, digest
            opened = await self.adoptable(beyond[0], after, digest)
            if opened is None:
                for stray in beyond:
                    await asyncio.to_thread(self.archive.remove, stray)
                    self.report.removed += 1
                    log.warning(
                        "stray log segment removed", segment=stray.name, archive=redacted(self.archive.url)
                    )
                return after, digest
            data, _ = await asyncio.to_thread(encode, opened.entries, digest)
            await self.record(Sealed(opened.segment, len(opened.entries), opened.digest, digest, len(data)))
            self.report.adopted += 1
            after, digest = opened.segment.last, opened.digest

    async def adoptable(self, segment: Segment, after: str, digest: str) -> Opened | None:
        """The segment, opened, if it chains to `digest` and holds exactly the stream's entries
        after `after` up to its last; None if not (half-written, altered, out of place)."""
        try:
            opened = await asyncio.to_thread(self.archive.open, segment)
        except SegmentError:
            return None
        if opened.prev_digest != digest:
            return None
        page = await self.store.read_flat(after, len(opened.entries) + 1, segment.last)
        stream = [(str(entry_id), list(fields)) for entry_id, fields in page]
        return opened if stream == [(i, list(f)) for i, f in opened.entries] else None


async def _alert(store: RedisEventStore, now: float, failure: str) -> None:
    """Raise `archive_unavailable` when a pass failed (`failure`), resolve it when one succeeds;
    only on a change, so a restarted janitor neither repeats nor loses it."""
    active = any(a.get("name") == ALERT for a in await store.alerts())
    if failure and not active:
        detail = f"the log archive cannot be written, so the stream is not trimmed: {failure}"[:500]
        await store.append([AlertRaised(name=ALERT, value=1.0, threshold=0.5, detail=detail, at=now)])
    elif not failure and active:
        await store.append([AlertResolved(name=ALERT, value=0.0, at=now)])
