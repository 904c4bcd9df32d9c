"""The whole log as one: the archive's segments up to the archived point, then the live stream.

The stream is trimmed only up to the point a `log.archived` event recorded (`archived_to` in
the log hash), so reading the segments that cover `after`..`archived_to` and then the stream
after `archived_to` gives every entry once, in order: a segment written again after a
crash, or entries not yet trimmed, are cut off by id. The archived point is read again after
each page of the stream: when it moved past the page's start while the page was read, the
stream may have been trimmed under it, and the reader goes back to the archive.

While reading, a `Chain` follows the segments' hash chain: each header must name the digest
of the segment before it. A reader that replays (an actor, `replay --at`, `events export`)
stops at the first break (ArchiveError); the audit collects the breaks, compares each
segment's digest with the one its `log.archived` recorded, and names the first that does
not match.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

from events.archive import Archive, ArchiveError, Entry, Opened, Segment, SegmentError, covering
from events.catalogue import StoredEvent, stream_id_key
from events.codec import decode_flat
from events.log_events import LogArchived
from events.redis_store import RedisEventStore

PAGE = 20_000

Key = tuple[int, int]
# An entry whose fields may be bytes (`raw_pages`).
RawEntry = tuple[str, Sequence[str] | Sequence[bytes]]


async def archived_to(store: RedisEventStore) -> str:
    """The last stream id the archive holds and the stream may have lost ("0-0": none)."""
    return await store.log_field("archived_to") or "0-0"


def chain(segments: Iterable[Segment], upto: str) -> list[Segment]:
    """Of `segments` (in log order), one per first id, up to the archived point `upto`.

    Two files start at the same id only when a segment was written and never recorded (a
    crash before its `log.archived`) and the next pass wrote a longer or shorter one from the
    same place: the recorded one is the one that ends before the next segment starts (the
    last one: at or before `upto`), the longest of those.
    """
    groups: dict[str, list[Segment]] = {}
    for segment in segments:
        groups.setdefault(segment.first, []).append(segment)
    firsts = sorted(groups, key=stream_id_key)
    top = stream_id_key(upto)
    picked = []
    for i, first in enumerate(firsts):
        if stream_id_key(first) > top:
            break
        limit = stream_id_key(firsts[i + 1]) if i + 1 < len(firsts) else (top[0], top[1] + 1)
        options = groups[first]
        fitting = [s for s in options if stream_id_key(s.last) < limit]
        picked.append(max(fitting or options, key=lambda s: stream_id_key(s.last)))
    return picked


def _short(digest: str) -> str:
    return f"{digest[:12]}…" if digest else "none"


@dataclass(slots=True)
class Chain:
    """The hash chain of the segments read, in log order.

    `strict` (a replay): the first break raises ArchiveError. Otherwise (the audit) each
    segment's first problem is kept, `record` takes the digests the `log.archived` events
    hold, and `violations` names the first segment that does not match.
    """

    strict: bool = True
    digests: dict[str, str] = field(default_factory=dict)  # segment read -> its digest, recomputed
    recorded: dict[str, tuple[Segment, str]] = field(default_factory=dict)  # name -> (place, digest)
    last: tuple[str, str] | None = None  # (name, digest) of the segment read last
    covered: Key = (0, 0)  # the archived point the archive was read up to
    problems: dict[str, tuple[Key, str]] = field(default_factory=dict)

    def problem(self, segment: Segment, why: str) -> None:
        """`segment` does not match, for the reason `why`."""
        if self.strict:
            raise ArchiveError(f"archive segment {segment.name}: {why}")
        self.problems.setdefault(segment.name, (segment.sort_key(), why))

    def opened(self, opened: Opened, before: tuple[str, str] | None) -> None:
        """`opened` was read next; `before` is (name, digest) of the segment before it in the
        log ("", "" for the first segment), None when not known."""
        if before is not None and opened.prev_digest != before[1]:
            if before[0]:
                why = (
                    f"its header names {_short(opened.prev_digest)} as the digest before it, but "
                    f"{before[0]} has {_short(before[1])} (a segment between them is missing, "
                    "or one of them was altered)"
                )
            else:
                why = f"it is the archive's first segment, yet its header names {_short(opened.prev_digest)}"
            self.problem(opened.segment, why)
        self.digests[opened.segment.name] = opened.digest
        self.last = (opened.segment.name, opened.digest)

    def unreadable(self, segment: Segment, error: SegmentError) -> None:
        """`segment` is not whole (half-written, altered or gone)."""
        if self.strict:
            raise error
        self.problem(segment, str(error).removeprefix(f"{segment.name}: "))
        self.last = None

    def short(self, where: str, upto: str) -> None:
        """The archive's segments end at `where`, before the archived point `upto`."""
        if self.strict:
            raise ArchiveError(f"the archive ends at {where}, short of the archived point {upto}")
        self.problems.setdefault(
            f"after {where}", (stream_id_key(where), f"the archive ends there, short of {upto}")
        )

    def record(self, event: LogArchived) -> None:
        """A `log.archived` event: the digest its segment must have."""
        self.recorded[event.segment] = (Segment(event.first, event.last), event.digest)

    def violations(self) -> list[str]:
        """The first segment that does not match, in words (none: an empty list).

        A recorded segment must have been read with the recorded digest; a segment read must
        be recorded. A segment archived while the log was being read, past the archived
        point the read went through, is left out.
        """
        found = dict(self.problems)
        for name, (segment, digest) in self.recorded.items():
            if stream_id_key(segment.last) > self.covered or name in found:
                continue
            read = self.digests.get(name)
            if read is None:
                found[name] = (segment.sort_key(), "recorded by log.archived, but missing from the archive")
            elif read != digest:
                why = f"its digest is {_short(read)}, its log.archived recorded {_short(digest)} (altered?)"
                found[name] = (segment.sort_key(), why)
        for name in self.digests.keys() - self.recorded.keys() - found.keys():
            unrecorded = Segment.parse(name)
            if unrecorded is not None:
                found[name] = (unrecorded.sort_key(), "no log.archived event records it")
        if not found:
            return []
        name, (_, why) = min(found.items(), key=lambda item: item[1][0])
        more = f" ({len(found) - 1} more segment(s) do not match after it)" if len(found) > 1 else ""
        return [f"archive segment {name} does not match: {why}{more}"]


async def _archived(
    archive: Archive, after: str, upto: str, top: Key, count: int, check: Chain
) -> AsyncIterator[list[Entry]]:
    """The archived entries after `after` up to `top` (at most the archived point `upto`)."""
    listed = chain(await asyncio.to_thread(archive.segments), upto)
    wanted = [s for s in covering(listed, after, upto) if s.sort_key() <= top]
    lo, goal = stream_id_key(after), min(top, stream_id_key(upto))
    before: tuple[str, str] | None = None
    if wanted and wanted[0].sort_key() > lo:
        # Nothing of the first segment wanted was read yet: the chain must lead to it.
        place = listed.index(wanted[0])
        before = await _link_before(archive, listed[place - 1] if place else None, check)
    elif wanted:
        before = check.last if check.last and check.last[0] == _name_before(listed, wanted[0]) else None
    reached = lo >= goal
    # The next segment is read while this one's entries are folded (zstd and SHA-256 run
    # without the GIL), one ahead at most.
    ahead = _open(archive, wanted[0]) if wanted else None
    try:
        for place, segment in enumerate(wanted):
            assert ahead is not None
            current, ahead = ahead, None
            try:
                opened = await current
            except SegmentError as exc:
                check.unreadable(segment, exc)
                before = None
                continue
            finally:
                if place + 1 < len(wanted):
                    ahead = _open(archive, wanted[place + 1])
            check.opened(opened, before)
            before = (segment.name, opened.digest)
            entries = opened.entries
            if segment.sort_key() <= lo or stream_id_key(segment.last) > top:
                entries = [e for e in entries if lo < stream_id_key(e[0]) <= top]
            for start in range(0, len(entries), count):
                yield entries[start : start + count]
            lo = max(lo, stream_id_key(segment.last))
            if lo >= goal:
                reached = True
                break
    finally:
        if ahead is not None:  # not wanted after all: whatever it raises is of no interest
            ahead.add_done_callback(lambda read: read.cancelled() or read.exception())
    if not reached:
        check.short(wanted[-1].last if wanted else after, upto)
    check.covered = max(check.covered, goal)


def _open(archive: Archive, segment: Segment) -> asyncio.Future[Opened]:
    """`archive.open(segment)`, started in a thread."""
    return asyncio.ensure_future(asyncio.to_thread(archive.open, segment))


def _name_before(listed: list[Segment], segment: Segment) -> str:
    place = listed.index(segment)
    return listed[place - 1].name if place else ""


async def _link_before(archive: Archive, previous: Segment | None, check: Chain) -> tuple[str, str] | None:
    """(name, digest) of the segment before a read that starts at a segment's first entry
    ("", "" when none is before it): read from the chain, else from the segment itself."""
    if previous is None:
        return ("", "")
    if check.last is not None and check.last[0] == previous.name:
        return check.last
    try:
        opened = await asyncio.to_thread(archive.open, previous)
    except SegmentError as exc:
        check.unreadable(previous, exc)
        return None
    return (previous.name, opened.digest)


async def pages(
    store: RedisEventStore,
    archive: Archive | None,
    after: str = "0-0",
    end: str = "+",
    count: int = PAGE,
    check: Chain | None = None,
) -> AsyncIterator[list[Entry]]:
    """Every entry after `after` up to `end` (included), archive then live, in pages.

    Raises ArchiveError when part of the wanted range is archived and `archive` is None,
    lacks a segment of it or holds one that breaks the chain (with a `check` that is not
    strict, the breaks are kept there instead and the read goes on).
    """
    async for page in _pages(store, archive, after, end, count, check, raw=False):
        yield cast(list[Entry], page)


async def raw_pages(
    store: RedisEventStore,
    archive: Archive | None,
    after: str = "0-0",
    end: str = "+",
    count: int = PAGE,
    check: Chain | None = None,
) -> AsyncIterator[list[RawEntry]]:
    """`pages` for `codec.decode_flat`: the stream's entries keep their fields as bytes (the
    archive's are text), which spares the read decoding every field to text."""
    async for page in _pages(store, archive, after, end, count, check, raw=True):
        yield page


async def _pages(
    store: RedisEventStore,
    archive: Archive | None,
    after: str,
    end: str,
    count: int,
    check: Chain | None,
    raw: bool,
) -> AsyncIterator[list[RawEntry]]:
    """`pages`, the stream's fields as bytes if `raw`."""
    check = check if check is not None else Chain()
    top: Key = stream_id_key(end) if end != "+" else (2**64, 0)
    position = after
    upto = await archived_to(store)
    while True:
        if stream_id_key(upto) > stream_id_key(position):
            if archive is None:
                raise ArchiveError(f"events up to {upto} are archived; set [archive] url to read them")
            async for archived in _archived(archive, position, upto, top, count, check):
                yield cast(list[RawEntry], archived)
            if top <= stream_id_key(upto):
                return
            position = upto
        page = cast(list[RawEntry], await store.read_flat(position, count, end, raw=raw))
        now = await archived_to(store)
        if now != upto:
            upto = now
            if stream_id_key(now) > stream_id_key(position):
                continue  # trimmed under the page, perhaps: read that part from the archive
        if not page:
            return
        yield page
        position = page[-1][0]


async def events(
    store: RedisEventStore,
    archive: Archive | None,
    after: str = "0-0",
    end: str = "+",
    check: Chain | None = None,
) -> AsyncIterator[list[StoredEvent]]:
    """`pages`, decoded (an entry no codec path can read raises EventDecodeError)."""
    async for page in raw_pages(store, archive, after, end, check=check):
        yield [StoredEvent(entry_id, decode_flat(fields)) for entry_id, fields in page]
