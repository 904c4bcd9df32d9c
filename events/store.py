"""The event store interface shared by the Redis store and the in-memory one."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from events.admission import Admission, Refusal
from events.catalogue import Event, StoredEvent, TaskSubmitted
from events.lane_positions import Lanes

NO_BOUNDS = Admission()


@dataclass(frozen=True, slots=True)
class Expect:
    """A precondition on a task view: the append happens only if it still holds."""

    status: str
    attempt: int


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """Figures read from the read models for the queue overview."""

    waiting: int
    running: int
    stats: dict[str, float]


@dataclass(frozen=True, slots=True)
class SubmitReceipt:
    """What a submit learns in its own transaction: the stream id, its position, the counts."""

    id: str
    position: int | None
    counts: QueueCounts
    duplicate_of: str | None = None
    duplicate_digest: str = ""
    refused: Refusal | None = None
    balance: int | None = None


class EventStore(Protocol):
    """An append-only, totally ordered event log with read models beside it."""

    async def append(
        self, events: Sequence[Event], expect: Mapping[str, Expect] | None = None
    ) -> list[str] | None:
        """Append events and their read-model writes atomically.

        With `expect`, the append happens only if every named task view still has the
        expected status and attempt; otherwise nothing is written and None is returned.
        """
        ...

    async def append_many(
        self, groups: Sequence[tuple[Sequence[Event], Mapping[str, Expect] | None]]
    ) -> list[list[str] | None]:
        """Append several groups in one step, each as `append` would after the ones before it:
        its events' ids, or None when its expectations did not hold."""
        ...

    async def submit(self, event: TaskSubmitted, admission: Admission = NO_BOUNDS) -> SubmitReceipt:
        """Check the token's rate and the idempotency key, admit and append a task.submitted
        (with its charge) and read its position and the queue counts, all in one atomic step;
        or refuse it (or name the first task of its idempotency key) and write nothing."""
        ...

    async def submit_many(
        self, events: Sequence[TaskSubmitted], admissions: Sequence[Admission]
    ) -> list[SubmitReceipt]:
        """Each submit with its admission, as `submit` makes it, in one round trip, each with its
        own receipt, in order. Submits that share a rate (its token) count once against it: the
        first takes the hit and the others pass exactly when it did."""
        ...

    async def read(self, after: str = "0-0", count: int | None = None) -> list[StoredEvent]:
        """Events after stream id `after`, in order, at most `count`."""
        ...

    async def read_range(self, start: str = "-", end: str = "+") -> list[StoredEvent]:
        """Events between two stream ids, both included."""
        ...

    async def tail(self, after: str, block_ms: int, count: int = 1000) -> list[StoredEvent]:
        """Events after `after`, waiting up to `block_ms` for the first one."""
        ...

    async def last_id(self) -> str:
        """The id of the newest event, or "0-0"."""
        ...

    async def task_view(self, task_id: str) -> dict[str, str] | None:
        """The task view hash, or None for an unknown task."""
        ...

    async def task_view_and_position(
        self, task_id: str, lanes: Lanes | None = None
    ) -> tuple[dict[str, str] | None, int | None]:
        """The task view and its waiting-set rank (with `lanes`, how many waiting tasks start
        before it: `events.lane_positions`), read atomically."""
        ...

    async def task_log(self, task_id: str) -> list[dict[str, str]]:
        """The task's events, as stream fields, in stream order."""
        ...

    async def position(self, task_id: str, lanes: Lanes | None = None) -> int | None:
        """How many waiting tasks are ahead of this one (with `lanes`, start before it); None if
        it is not waiting."""
        ...

    async def positions(self, task_ids: Sequence[str], lanes: Lanes | None = None) -> list[int | None]:
        """`position` of each task, read atomically."""
        ...

    async def counts(self) -> QueueCounts:
        """Waiting and running counts and the counters."""
        ...

    async def waiting_by_lane(self, lanes: Lanes) -> dict[str, int]:
        """Each lane's waiting tasks ("" for those in no configured lane), read atomically."""
        ...

    async def grant_times(
        self, since: Mapping[str, float], newest: Mapping[str, int] | None = None
    ) -> dict[str, list[float]]:
        """For each pool named, the times of its grants after its `since`, oldest first; with
        `newest`, only that many of the latest (a limiter never looks further back)."""
        ...

    async def pool_states(self, names: Sequence[str]) -> dict[str, dict[str, str]]:
        """Each named pool's read model: cooldown_until, parked_until, learned_rpm, disabled:<key id>."""
        ...

    async def user(self, user_id: str, entries: int = 20) -> tuple[dict[str, str], list[dict[str, Any]]]:
        """A user's totals hash (balance, granted, charged, refunded) and newest ledger entries."""
        ...

    async def recent_failures(self) -> list[dict[str, Any]]:
        """The newest failed tasks (task_id, kind, error, at), newest first."""
        ...

    async def token(self, digest: str) -> dict[str, str] | None:
        """The token read model (token_id, user_id, role) for a token's SHA-256 digest."""
        ...

    async def save_snapshot(self, actor: str, covers: str, document: str | list[str], keep: int = 3) -> None:
        """Store an actor's snapshot (covering the stream up to `covers`) and append snapshot.taken.

        A list is the document in parts, stored as their concatenation (no client joins them).
        """
        ...

    def snapshot_documents(self, actor: str) -> AsyncGenerator[str, None]:
        """An actor's stored snapshots, newest first, each read when the iteration reaches it."""
        ...

    async def histograms(self, names: Sequence[str]) -> dict[str, dict[str, float]]:
        """Bucket counts (`le:<bound>`), `sum` and `count` of each named histogram."""
        ...

    async def alerts(self) -> list[dict[str, Any]]:
        """The active alerts."""
        ...

    async def load_scripts(self) -> None:
        """Make the store ready to run its server-side scripts (no-op where there are none)."""
        ...

    async def ping(self) -> bool:
        """Whether the store answers."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
