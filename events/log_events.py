"""The log's own events: a closed segment of the stream was archived, and the stream trimmed.

`log.archived` is appended only after the segment was written and read back with its digest
checked; the stream is trimmed up to `last` only after this event is in. Its `digest` covers
the segment's header (which names `prev_digest`) and every entry, so the segments form a hash
chain that `genqueue audit` walks end to end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True, kw_only=True)
class LogArchived:
    """Stream entries `first`..`last` (both included, `count` of them) are in the archive
    as segment `segment`, whose digest is `digest` and whose predecessor's is `prev_digest`
    ("" for the first segment)."""

    type: ClassVar[str] = "log.archived"
    version: ClassVar[int] = 1
    segment: str
    first: str
    last: str
    count: int
    digest: str
    prev_digest: str
    bytes: int
    at: float
