"""An in-memory EventStore for pure unit tests; same contract as the Redis store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from events import lane_reads
from events.admission import (
    FIRST_ROUND,
    NO_ROUND,
    Admission,
    Refusal,
    Seen,
    admit,
    place_round,
    rate_wait,
    refuse,
)
from events.catalogue import Event, SnapshotTaken, StoredEvent, TaskSubmitted, round_of, stream_id_key
from events.codec import decode, encode, log_entry
from events.daily_spend import SPENT, day_key
from events.keys import Keys
from events.lane_positions import Lanes
from events.lane_reads import position_in
from events.ops_models import Intake, TaskIndex, paused_refusal
from events.projection import project, view_guarded
from events.read_ops import Delete, Expire, HDel, HIncr, HSet, LPush, Op, SAdd, SRem, ZAdd, ZRem, ZTrim
from events.store import NO_BOUNDS, Expect, QueueCounts, SubmitReceipt


class MemoryEventStore:
    """EventStore in dicts; ids count up like Redis stream ids within one millisecond."""

    def __init__(self, namespace: str = "test") -> None:
        self.keys = Keys(namespace)
        self._entries: list[tuple[str, dict[str, str]]] = []
        self._hashes: dict[str, dict[str, str]] = {}
        self._zsets: dict[str, dict[str, float]] = {}
        self._sets: dict[str, set[str]] = {}
        self._lists: dict[str, list[str]] = {}
        self._seq = 0
        self._rounds: dict[int, int] = {}
        self._changed = asyncio.Condition()

    def _apply(self, op: Op) -> None:
        match op:
            case HSet():
                self._hashes.setdefault(op.key, {}).update({k: str(v) for k, v in op.mapping.items()})
            case HIncr():
                h = self._hashes.setdefault(op.key, {})
                if isinstance(op.amount, int) and "." not in h.get(op.field, "0"):
                    h[op.field] = str(int(h.get(op.field, "0")) + op.amount)  # as HINCRBY does
                else:
                    h[op.field] = str(float(h.get(op.field, 0)) + op.amount)
            case ZAdd():
                self._zsets.setdefault(op.key, {})[op.member] = op.score
            case ZRem():
                self._zsets.get(op.key, {}).pop(op.member, None)
            case SAdd():
                self._sets.setdefault(op.key, set()).add(op.member)
            case SRem():
                self._sets.get(op.key, set()).discard(op.member)
            case HDel():
                self._hashes.get(op.key, {}).pop(op.field, None)
            case LPush():
                values = self._lists.setdefault(op.key, [])
                values.insert(0, op.value)
                del values[op.keep :]
            case Delete():
                for space in (self._hashes, self._zsets, self._sets, self._lists):
                    space.pop(op.key, None)
            case Expire():
                pass  # nothing here lives long enough to expire
            case ZTrim():
                z = self._zsets.get(op.key, {})
                for member in [m for m, score in z.items() if score <= op.max_score]:
                    del z[member]

    async def append(
        self, events: Sequence[Event], expect: Mapping[str, Expect] | None = None
    ) -> list[str] | None:
        """Append atomically (one event loop step)."""
        for task_id, want in (expect or {}).items():
            view = self._hashes.get(self.keys.task(task_id), {})
            if view.get("status") != want.status or int(view.get("attempts", -1)) != want.attempt:
                return None
        ids = []
        for event in events:
            self._seq += 1
            eid = f"1-{self._seq}"
            fields = encode(event)
            self._entries.append((eid, fields))
            # As the Redis script: a task's read models are written only while its view exists.
            guard = view_guarded(event, self.keys)
            skip = guard[1] if guard is not None and guard[0] not in self._hashes else frozenset()
            if fields["task"] and self.keys.task_log(fields["task"]) not in skip:
                self._lists.setdefault(self.keys.task_log(fields["task"]), []).append(eid)
            for op in project(event, self.keys):
                if op.key not in skip:
                    self._apply(op)
            ids.append(eid)
        async with self._changed:
            self._changed.notify_all()
        return ids

    async def append_many(
        self, groups: Sequence[tuple[Sequence[Event], Mapping[str, Expect] | None]]
    ) -> list[list[str] | None]:
        """Append each group in turn, as `append` does."""
        return [await self.append(events, expect) for events, expect in groups]

    async def submit(self, event: TaskSubmitted, admission: Admission = NO_BOUNDS) -> SubmitReceipt:
        """The token's rate, the idempotency key, admission, append, and position and counts, in
        one step (as the Redis store's script does)."""
        (done,) = await self.submit_many([event], [admission])
        return done

    async def submit_many(
        self, events: Sequence[TaskSubmitted], admissions: Sequence[Admission]
    ) -> list[SubmitReceipt]:
        """Each submit in turn; submits that share a rate count once against it (the first
        takes the hit, the others pass exactly when it did), as in the Redis store."""
        first: dict[str, str] = {}
        out = []
        for event, admission in zip(events, admissions, strict=True):
            token = admission.rate.token if admission.rate else ""
            named = first.setdefault(token, event.task_id)
            out.append(await self._submit(event, admission, named == event.task_id, named))
        return out

    def _rate(self, admission: Admission, hit: bool, member: str, now: int) -> Refusal | None:
        """The moving window of `admission.rate`: a hit named `member`, or (not `hit`) a look
        whether the hit named `member` was taken."""
        rate = admission.rate
        if rate is None:
            return None
        window = self._zsets.setdefault(self.keys.rate(rate.token), {})
        for old in [m for m, at in window.items() if at <= now - rate.window_ms]:
            del window[old]
        oldest = int(min(window.values(), default=now))
        wait = rate_wait(len(window), 1, rate.limit, oldest, rate.window_ms, now)
        if not hit:
            wait = 0 if member in window else max(1, wait)
        if wait:
            return Refusal("rate", 0, admission.price, 0, wait_ms=wait, rate=rate)
        if hit:
            window[member] = now
        return None

    async def _submit(
        self, event: TaskSubmitted, admission: Admission, hit: bool, member: str
    ) -> SubmitReceipt:
        intake = Intake.of(self._hashes.get(self.keys.intake, {}))
        if intake.paused:
            paused = paused_refusal(intake.retry_after, admission.price)
            return SubmitReceipt("", None, QueueCounts(0, 0, {}), refused=paused)
        limited = self._rate(admission, hit, member, int(event.at * 1000))
        if limited is not None:
            return SubmitReceipt("", None, QueueCounts(0, 0, {}), refused=limited)
        if event.idempotency_key:
            first = self._hashes.get(self.keys.idempotency(event.user_id, event.idempotency_key))
            if first:
                return SubmitReceipt("", None, await self.counts(), first["task_id"], first["digest"])
        user = self._hashes.get(self.keys.user(event.user_id), {})
        waiting = self._zsets.get(self.keys.waiting, {})
        if waiting:
            current = round_of(min(waiting.values()))
        else:
            current = int(self._hashes.get(self.keys.stats, {}).get("dispatched_round", FIRST_ROUND))
        seen = Seen(
            int(user.get("balance", 0)),
            bool(int(user.get("welcomed", 0))),
            int(user.get("last_round", NO_ROUND)),
            current,
            len(waiting),
            int(self._hashes.get(day_key(self.keys, event.user_id, event.at), {}).get(SPENT, 0)),
        )
        refusal = refuse(admission, seen, event.at)
        if refusal is not None:
            return SubmitReceipt("", None, await self.counts(), refused=refusal)
        round_ = place_round(seen.current_round, seen.last_round)
        self._rounds[round_] = n = self._rounds.get(round_, 0) + 1
        admitted = admit(event, admission, seen, round_, n)
        assert not isinstance(admitted, Refusal)
        ids = await self.append(admitted)
        assert ids is not None
        balance = int(self._hashes.get(self.keys.user(event.user_id), {}).get("balance", 0))
        index = [e.type for e in admitted].index(TaskSubmitted.type)
        return SubmitReceipt(
            ids[index], await self.position(event.task_id), await self.counts(), balance=balance
        )

    async def user(self, user_id: str, entries: int = 20) -> tuple[dict[str, str], list[dict[str, Any]]]:
        """The user's hash and newest ledger entries."""
        ledger = self._lists.get(self.keys.ledger(user_id), [])[:entries]
        return dict(self._hashes.get(self.keys.user(user_id), {})), [json.loads(e) for e in ledger]

    async def recent_failures(self) -> list[dict[str, Any]]:
        """The newest failed tasks."""
        return [json.loads(r) for r in self._lists.get(self.keys.failures, [])]

    async def token(self, digest: str) -> dict[str, str] | None:
        """The token read model."""
        found = self._hashes.get(self.keys.token(digest))
        return dict(found) if found else None

    async def read(self, after: str = "0-0", count: int | None = None) -> list[StoredEvent]:
        """Events after `after`."""
        key = stream_id_key(after)
        out = [StoredEvent(i, decode(f)) for i, f in self._entries if stream_id_key(i) > key]
        return out[:count] if count is not None else out

    async def read_range(self, start: str = "-", end: str = "+") -> list[StoredEvent]:
        """Events between two ids, both included."""
        lo = (0, 0) if start == "-" else stream_id_key(start)
        hi = (2**63, 2**63) if end == "+" else stream_id_key(end)
        return [StoredEvent(i, decode(f)) for i, f in self._entries if lo <= stream_id_key(i) <= hi]

    async def tail(self, after: str, block_ms: int, count: int = 1000) -> list[StoredEvent]:
        """Wait up to `block_ms` for events after `after`."""
        found = await self.read(after, count)
        if found:
            return found
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait(), block_ms / 1000)
            except TimeoutError:
                return []
        return await self.read(after, count)

    async def last_id(self) -> str:
        """The newest id."""
        return self._entries[-1][0] if self._entries else "0-0"

    async def task_view(self, task_id: str) -> dict[str, str] | None:
        """The task view."""
        view = self._hashes.get(self.keys.task(task_id))
        return dict(view) if view else None

    async def task_view_and_position(
        self, task_id: str, lanes: Lanes | None = None
    ) -> tuple[dict[str, str] | None, int | None]:
        """The view and its rank (with `lanes`, the tasks that start before it), in one step."""
        return await self.task_view(task_id), await self.position(task_id, lanes)

    async def task_log(self, task_id: str) -> list[dict[str, str]]:
        """The task's events."""
        entries = dict(self._entries)
        return [json.loads(log_entry(entries[r])) for r in self._lists.get(self.keys.task_log(task_id), [])]

    async def position(self, task_id: str, lanes: Lanes | None = None) -> int | None:
        """Rank in the waiting set; with `lanes`, how many waiting tasks start before it."""
        if lanes is not None:
            return position_in(self._zsets, self.keys, lanes, task_id)
        waiting = self._zsets.get(self.keys.waiting, {})
        if task_id not in waiting:
            return None
        ranked = sorted(waiting, key=lambda m: (waiting[m], m))
        return ranked.index(task_id)

    async def positions(self, task_ids: Sequence[str], lanes: Lanes | None = None) -> list[int | None]:
        """`position` of each task."""
        return [await self.position(t, lanes) for t in task_ids]

    async def waiting_by_lane(self, lanes: Lanes) -> dict[str, int]:
        """Each lane's waiting tasks ("" for those in no configured lane)."""
        cards = [len(self._zsets.get(self.keys.lane_waiting(name), {})) for name in lanes.names]
        return lane_reads.waiting_by_lane(lanes, cards, len(self._zsets.get(self.keys.waiting, {})))

    async def counts(self) -> QueueCounts:
        """Counts and counters."""
        stats = {k: float(v) for k, v in self._hashes.get(self.keys.stats, {}).items()}
        return QueueCounts(
            len(self._zsets.get(self.keys.waiting, {})),
            len(self._sets.get(self.keys.running, set())),
            stats,
        )

    async def grant_times(
        self, since: Mapping[str, float], newest: Mapping[str, int] | None = None
    ) -> dict[str, list[float]]:
        """Per pool, grant times after `since` (the latest `newest[pool]` of them)."""
        out = {}
        for pool, t in since.items():
            times = sorted(s for s in self._zsets.get(self.keys.grants(pool), {}).values() if s > t)
            keep = (newest or {}).get(pool)
            out[pool] = times[-keep:] if keep else times
        return out

    async def pool_states(self, names: Sequence[str]) -> dict[str, dict[str, str]]:
        """Each pool's read model."""
        return {name: dict(self._hashes.get(self.keys.pool(name), {})) for name in names}

    async def save_snapshot(self, actor: str, covers: str, document: str | list[str], keep: int = 3) -> None:
        """Keep the newest `keep` snapshots and append snapshot.taken."""
        document = document if isinstance(document, str) else "".join(document)
        docs = self._lists.setdefault(self.keys.snapshots(actor), [])
        docs.insert(0, document)
        del docs[keep:]
        await self.append([SnapshotTaken(actor=actor, covers=covers, bytes=len(document), at=0.0)])

    async def snapshot_documents(self, actor: str) -> AsyncGenerator[str, None]:
        """Newest first, one at a time."""
        for document in list(self._lists.get(self.keys.snapshots(actor), [])):
            yield document

    async def histograms(self, names: Sequence[str]) -> dict[str, dict[str, float]]:
        """Each histogram hash as numbers."""
        return {
            n: {k: float(v) for k, v in self._hashes.get(self.keys.histogram(n), {}).items()} for n in names
        }

    async def alerts(self) -> list[dict[str, Any]]:
        """The active alerts."""
        raw = self._hashes.get(self.keys.alerts, {}).values()
        return sorted((json.loads(r) for r in raw), key=lambda a: str(a["name"]))

    async def task_index_pages(
        self, indexes: Sequence[TaskIndex], before: tuple[float, str] | None, count: int
    ) -> list[list[tuple[str, float]]]:
        """Each index's first `count` (task id, score) after `before`, (score, id) descending."""
        pages = []
        for index in indexes:
            members = self._zsets.get(index.key(self.keys), {})
            ranked = sorted(((s, m) for m, s in members.items()), reverse=True)
            pages.append([(m, s) for s, m in ranked if before is None or (s, m) < before][:count])
        return pages

    async def task_views(
        self, task_ids: Sequence[str], lanes: Lanes | None = None
    ) -> tuple[list[dict[str, str]], list[int | None]]:
        """Each task's view ({} for none) and waiting-set rank (with `lanes`: tasks before it)."""
        return [await self.task_view(t) or {} for t in task_ids], await self.positions(task_ids, lanes)

    async def intake(self) -> Intake:
        """The intake switch."""
        return Intake.of(self._hashes.get(self.keys.intake, {}))

    async def load_scripts(self) -> None:
        """Nothing to load."""

    async def ping(self) -> bool:
        """Always answers."""
        return True

    async def close(self) -> None:
        """Nothing to release."""
