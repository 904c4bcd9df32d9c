"""The archive: closed segments of the event stream as immutable files, chained by digest.

A segment is one zstd frame of JSON lines: a header line, one line per stream entry
(`[id, [name, value, ...]]`, the entry exactly as XRANGE gives it) and a trailer line:

    {"format": "genqueue-segment/1", "first": ID, "last": ID, "count": N, "prev_digest": HEX}
    ["1733450000000-0", ["type", "task.submitted", "v", "1", "task", "…", "data", "{…}"]]
    …
    {"count": N, "digest": HEX}

`digest` is the SHA-256 of the header and entry lines (every byte before the trailer); since
the header names the previous segment's digest, each digest covers the whole history before
it. A reader recomputes it and checks the count, so a half-written or altered file is never
read as whole. zstd over JSON lines, rather than Parquet, because a segment is always read
whole and in order (replay, audit, one task's events): zstd decodes at about a gigabyte a
second, orjson parses a line in about a microsecond, the entries stay byte for byte what
the stream held (no schema to keep in step with the catalogue), and no 40 MB columnar
library is needed.

A segment's name is its first and last stream ids, so writing the same segment again (after
a crash between the write and the trim) gives the same file: it is written under a
temporary name, moved into place and read back before anyone relies on it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import orjson
import zstandard

from events.catalogue import stream_id_key
from events.errors import GenqueueError

FORMAT = "genqueue-segment/1"
SUFFIX = ".jsonl.zst"
LEVEL = 3  # zstd's default: about 6x on events, hundreds of MB/s to write

# An entry as XRANGE returns it without decoding: its id and its fields, name, value, ...
Entry = tuple[str, Sequence[str]]


class ArchiveError(GenqueueError):
    """The archive cannot be written or read, or a segment is not whole."""


class SegmentError(ArchiveError):
    """A segment file is half-written, altered or not a segment."""


@dataclass(frozen=True, slots=True)
class Segment:
    """A segment's place in the log: its first and last stream ids."""

    first: str
    last: str

    @property
    def name(self) -> str:
        """The file name: `<first>_<last>.jsonl.zst`."""
        return f"{self.first}_{self.last}{SUFFIX}"

    @classmethod
    def parse(cls, name: str) -> Segment | None:
        """The segment a file name names, or None for any other file."""
        base = name.rsplit("/", 1)[-1]
        if not base.endswith(SUFFIX):
            return None
        first, sep, last = base[: -len(SUFFIX)].partition("_")
        try:
            stream_id_key(first), stream_id_key(last)
        except ValueError:
            return None
        return cls(first, last) if sep and "-" in first and "-" in last else None

    def sort_key(self) -> tuple[int, int]:
        """Segments sort by their first id."""
        return stream_id_key(self.first)


@dataclass(frozen=True, slots=True)
class Sealed:
    """A segment as written: where it sits in the log, its entries, its digest and its chain link."""

    segment: Segment
    count: int
    digest: str
    prev_digest: str
    bytes: int


@dataclass(frozen=True, slots=True)
class Opened:
    """A segment read back whole: its header's link, its digest (recomputed) and its entries."""

    segment: Segment
    prev_digest: str
    digest: str
    entries: list[Entry]


def encode(entries: Sequence[Entry], prev_digest: str) -> tuple[bytes, str]:
    """The compressed segment of `entries` (in stream order, at least one) chained to
    `prev_digest`, and its digest. The same entries and link give the same bytes."""
    if not entries:
        raise ValueError("a segment holds at least one entry")
    header = {
        "format": FORMAT,
        "first": entries[0][0],
        "last": entries[-1][0],
        "count": len(entries),
        "prev_digest": prev_digest,
    }
    lines = [orjson.dumps(header)]
    lines.extend(orjson.dumps([entry_id, list(fields)]) for entry_id, fields in entries)
    body = b"\n".join(lines) + b"\n"
    digest = hashlib.sha256(body).hexdigest()
    trailer = orjson.dumps({"count": len(entries), "digest": digest}) + b"\n"
    return zstandard.ZstdCompressor(level=LEVEL).compress(body + trailer), digest


def decode(data: bytes, segment: Segment | None = None) -> Opened:
    """The segment in `data`, checked whole: it decompresses, its header and trailer are there,
    the count matches, the digest recomputed matches the trailer's, and (given `segment`,
    the name it was found under) its first and last ids are the name's. Raises SegmentError."""
    where = segment.name if segment else "segment"
    try:
        text = zstandard.ZstdDecompressor().decompress(data)
    except zstandard.ZstdError as exc:
        raise SegmentError(f"{where}: not a whole zstd frame ({exc})") from exc
    # Split once and hash a view: a segment's text runs to tens of megabytes, not worth copying.
    lines = text.split(b"\n")
    while lines and not lines[-1]:
        lines.pop()
    trailer_line = lines.pop() if lines else b""
    end = len(text)
    while end and text[end - 1] == 0x0A:
        end -= 1
    covered = memoryview(text)[: max(0, end - len(trailer_line))]  # the header and entry lines
    try:
        trailer = orjson.loads(trailer_line)
        header = orjson.loads(lines[0])
        entries: list[Entry] = [(row[0], row[1]) for row in map(orjson.loads, lines[1:])]
    except (orjson.JSONDecodeError, IndexError, TypeError, KeyError) as exc:
        raise SegmentError(f"{where}: unreadable ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT or not isinstance(trailer, dict):
        raise SegmentError(f"{where}: no segment header or trailer (half-written?)")
    digest = hashlib.sha256(covered).hexdigest()
    if trailer.get("digest") != digest:
        raise SegmentError(f"{where}: digest {digest[:12]}… does not match its trailer (altered?)")
    if not entries or header.get("count") != len(entries) or trailer.get("count") != len(entries):
        raise SegmentError(f"{where}: {len(entries)} entries, header says {header.get('count')}")
    found = Segment(entries[0][0], entries[-1][0])
    if (header.get("first"), header.get("last")) != (found.first, found.last):
        raise SegmentError(f"{where}: entries {found.first}..{found.last} are not the header's range")
    if segment is not None and found != segment:
        raise SegmentError(f"{where}: holds {found.first}..{found.last}, not what its name says")
    return Opened(found, str(header.get("prev_digest", "")), digest, entries)


class Archive:
    """Segment files under one fsspec URL (`file://…`, `s3://…`, `gs://…`). Blocking calls:
    run them in a thread from an event loop."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self._fs, self._root = fsspec.core.url_to_fs(url, **(storage_options or {}))

    def _path(self, name: str) -> str:
        return f"{self._root.rstrip('/')}/{name}"

    def segments(self) -> list[Segment]:
        """Every segment file present, in log order (temporary files of a write in progress are not)."""
        try:
            names = self._fs.ls(self._root, detail=False) if self._fs.exists(self._root) else []
        except OSError as exc:
            raise ArchiveError(f"cannot list {self.url}: {exc}") from exc
        found = [s for s in map(Segment.parse, names) if s is not None]
        return sorted(found, key=Segment.sort_key)

    def write(self, entries: Sequence[Entry], prev_digest: str) -> Sealed:
        """Write `entries` as one segment chained to `prev_digest`, then read it back and check it.

        The bytes go to a temporary name first and are moved into place, so the segment's own
        name never shows a half-written file where the store allows it (a local disk); object
        stores make a whole object visible at once. Writing a segment that is already there
        replaces it with the same bytes.
        """
        data, digest = encode(entries, prev_digest)
        segment = Segment(entries[0][0], entries[-1][0])
        scratch = self._path(f".writing-{uuid.uuid4().hex}")
        try:
            self._fs.makedirs(self._root, exist_ok=True)
            with self._fs.open(scratch, "wb") as fh:
                fh.write(data)
            self._fs.mv(scratch, self._path(segment.name))
        except OSError as exc:
            raise ArchiveError(f"cannot write {segment.name} to {self.url}: {exc}") from exc
        finally:
            try:
                if self._fs.exists(scratch):
                    self._fs.rm(scratch)
            except OSError:
                pass
        opened = self.open(segment)
        if opened.digest != digest or opened.prev_digest != prev_digest:
            raise ArchiveError(f"{segment.name} read back differently from what was written")
        return Sealed(segment, len(entries), digest, prev_digest, len(data))

    def open(self, segment: Segment) -> Opened:
        """A segment read and checked whole (SegmentError if it is not)."""
        try:
            with self._fs.open(self._path(segment.name), "rb") as fh:
                data = fh.read()
        except FileNotFoundError as exc:
            raise SegmentError(f"{segment.name}: missing from {self.url}") from exc
        except OSError as exc:
            raise ArchiveError(f"cannot read {segment.name} from {self.url}: {exc}") from exc
        return decode(data, segment)

    def remove(self, segment: Segment) -> None:
        """Delete a segment file (one that was never recorded as archived)."""
        try:
            self._fs.rm(self._path(segment.name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ArchiveError(f"cannot remove {segment.name} from {self.url}: {exc}") from exc


def covering(segments: Iterable[Segment], after: str, upto: str) -> list[Segment]:
    """Of `segments` (in log order), those holding entries after `after` up to `upto` (the
    archived point): what a reader reads before the live stream."""
    lo, hi = stream_id_key(after), stream_id_key(upto)
    return [s for s in segments if stream_id_key(s.last) > lo and stream_id_key(s.first) <= hi]
