"""The log's life in configuration: how long Redis keeps events and task read models, and
where the archive is."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """How long the log and the read models stay in Redis.

    Events older than `live_seconds` that every actor's newest snapshot covers are written
    to the archive and trimmed from the stream; a task's view, audit trail and index entries
    are deleted `task_seconds` after it ended (it is then read from the archive; 0: kept). Looked
    at every `every_seconds`. `live_seconds = 0` keeps every event in Redis (no archive, no trim).
    """

    live_seconds: float = 86_400.0
    task_seconds: float = 86_400.0
    every_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class ArchiveConfig:
    """Where closed segments of the log go: an fsspec URL (`file:///srv/genqueue/archive`,
    `s3://bucket/genqueue/archive`, `gs://...`); empty means `file://<data_dir>/archive`.
    A segment holds at most `segment_events` events. With `serve_reads`, a task past its
    retention is still answered from the archive; without, it answers 410 Gone."""

    url: str = ""
    segment_events: int = 100_000
    serve_reads: bool = True
