"""What the watched tasks of one replica look like now: read again in one round trip per refresh
and rendered once per task, however many streams watch it and however many watch at all."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog
from redis.exceptions import RedisError

from actors.shell import Backoff
from events.catalogue import QUEUED, TERMINAL, Event
from events.errors import StoreUnavailableError
from events.keys import Keys
from events.lane_positions import Lanes
from events.projection import project
from events.read_ops import ZAdd, ZRem
from events.redis_store import RedisEventStore
from events.store import QueueCounts
from serve_app.http.models import TaskViewOut

log = structlog.get_logger("genqueue.watch")

# While the queue keeps moving, the positions of the watched tasks are read at most this often;
# a watched task's own change is read at once.
REFRESH_SECONDS = 0.25
# After a key event (a grant, a cooldown, a parked pool, a disabled key) the stages of the
# watched queued tasks are rendered again this long after it, at most this often: later than
# the pools' views the renderer reads are cached for (`Context.recent_pools`), so that they
# hold the event.
POOLS_SETTLE_SECONDS = 0.25
# Positions come from one ZRANGE of the queue's head rather than one ZRANK per waiting watched
# task while the head holds at most this many members per such task: a member of a reply costs
# the replica far less than a command of its own.
RANGE_PER_TASK = 32

# How a task's view hash, its position and the queue's counts become what the API shows.
Render = Callable[[str, dict[str, str], int | None, QueueCounts], Awaitable[TaskViewOut]]
# Hands a task's new update to its streams; False when no stream watches the task any more.
Publish = Callable[[str, "Update"], bool]


@dataclass(frozen=True, slots=True)
class Update:
    """A task as its watchers are sent it: the view after `seen` of its events (None: the task is
    gone) and that view as JSON, encoded once for every stream of the task, and when it was
    made (milliseconds since the epoch)."""

    seen: int
    view: TaskViewOut | None
    data: str = ""
    made_ms: int = 0

    @property
    def position(self) -> int | None:
        """The task's place in the queue while it waits."""
        return None if self.view is None else self.view.position

    @property
    def stage(self) -> str:
        """The stage of a queued task ("" otherwise)."""
        return "" if self.view is None else self.view.stage or ""

    @property
    def key(self) -> tuple[int, int | None, str]:
        """What a watcher has already been sent if its last message id names it."""
        return self.seen, self.position, self.stage

    @property
    def event_id(self) -> str:
        """The SSE message id: `<events seen>-<position>-<stage>`, empty parts left out at the
        end and an empty position kept in the middle ("7-3-waiting", "8--starting", "9"); a
        queued task's stage is followed by when the update was made ("8--starting.1796585642513").

        A dispatched task's stage may go from waiting_for_quota to starting and back with no
        event of its own (a place frees, and another task takes it): the time keeps each of
        those messages' ids apart. `watching.parse_event_id` reads the id without it.
        """
        position = "" if self.position is None else str(self.position)
        stage = f"{self.stage}.{self.made_ms}" if self.stage else ""
        return "-".join((str(self.seen), position, stage)).rstrip("-")

    @property
    def ended(self) -> bool:
        """Whether the task has ended (or is gone): its streams end after this update."""
        return self.view is None or self.view.status in TERMINAL

    @property
    def waiting(self) -> bool:
        """Whether the task waits for its turn, so that moves change its position."""
        return self.view is not None and self.view.status == QUEUED and self.view.position is not None

    @property
    def queued(self) -> bool:
        """Whether the task is queued (waiting for its turn, or dispatched and not yet calling)."""
        return self.view is not None and self.view.status == QUEUED


_EFFECTS: dict[type, tuple[bool, int]] = {}


def queue_effect(event: Event, keys: Keys) -> tuple[bool, int]:
    """(whether the event changes the waiting set, how many members it may add to it), from the
    read-model writes it makes; remembered per event type, whose writes to the set its fields
    do not change."""
    kind = type(event)
    if kind not in _EFFECTS:
        ops = [op for op in project(event, keys) if isinstance(op, ZAdd | ZRem) and op.key == keys.waiting]
        _EFFECTS[kind] = (bool(ops), sum(isinstance(op, ZAdd) for op in ops))
    return _EFFECTS[kind]


@dataclass(slots=True)
class _Read:
    views: list[dict[str, str]]
    ranks: list[int | None]
    head: list[str]
    counts: QueueCounts


class Fanout:
    """Keeps each watched task's latest `Update`. A task that had events of its own (or gained
    its first stream) is read again at once; while the queue moves, the positions of the waiting
    ones are read at most every `refresh_seconds`. Each refresh is one MULTI/EXEC: HGETALL and
    ZRANK of the changed tasks, the positions of the waiting ones (a ZRANGE of the queue's head,
    or a ZRANK each) and the queue's counts, so that every view and ETA of a refresh agrees."""

    def __init__(
        self,
        store: RedisEventStore,
        publish: Publish,
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        lanes: Lanes | None = None,
    ) -> None:
        self._store = store
        self._publish = publish
        # With priority lanes a position is not a rank in the queue's head: each is read.
        self._lanes = lanes
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self.render: Render | None = None
        self._views: dict[str, dict[str, str]] = {}
        self._updates: dict[str, Update] = {}
        self._changed: set[str] = set()
        self._moved = False
        self._added = 0  # members the waiting set may have gained since positions were read
        self._positions_at = -math.inf
        # Stages to render again after a key event (`pools_changed`): from when, and whether of
        # every queued task or only the dispatched ones; and when a blocked task's pools are back.
        self._pools_due = math.inf
        self._pools_every = False
        # When the latest key event's own render is due: a render due earlier (for an earlier
        # event) may read pools' views from before it, so another follows until this one.
        self._pools_settled = -math.inf
        self._unblock_at = math.inf
        # Tasks whose streams opened, each until its own render settles (when its stream opened
        # plus POOLS_SETTLE_SECONDS): its first render may have read pools' views older than a
        # key event the tail did not decode.
        self._opened: dict[str, float] = {}
        self._signal = asyncio.Event()

    def current(self, task_id: str) -> Update | None:
        """The task's latest update, if it is watched and has been read."""
        return self._updates.get(task_id)

    def changed(self, task_id: str) -> None:
        """Read the task again as soon as possible."""
        self._changed.add(task_id)
        self._signal.set()

    def opened(self, task_id: str) -> None:
        """A stream of a task not watched before: read it at once, and render its stage again
        once POOLS_SETTLE_SECONDS have passed. Its first render reads the pools' views the
        replica holds (up to POOLS_FRESH_SECONDS old), and a key event that landed while no
        stream was open on the replica was not decoded, so nothing else would render it again.
        A render due earlier (for a key event) renders it too, and another follows once its own
        time has come."""
        self._opened[task_id] = self._settles()
        self.changed(task_id)

    def moved(self, added: int) -> None:
        """The waiting set changed (`added` members at most went in): read positions soon."""
        self._moved = True
        self._added += added
        self._signal.set()

    def pools_changed(self, every: bool) -> None:
        """A key event changed what the pools can do: render the stages of the dispatched queued
        tasks again (`every`: of all the queued ones, for a pool parked or a key disabled) once
        POOLS_SETTLE_SECONDS have passed."""
        self._settles()
        self._pools_every = self._pools_every or every
        self._signal.set()

    def _settles(self) -> float:
        """Schedule the stages' render for POOLS_SETTLE_SECONDS from now (a render due earlier
        stays due, and another follows then); when that is."""
        settled = self._clock() + POOLS_SETTLE_SECONDS
        self._pools_due = min(self._pools_due, settled)
        self._pools_settled = max(self._pools_settled, settled)
        return settled

    def forget(self, task_id: str) -> None:
        """No stream watches the task any more."""
        self._views.pop(task_id, None)
        self._updates.pop(task_id, None)
        self._changed.discard(task_id)
        self._opened.pop(task_id, None)

    def _due_in(self) -> float | None:
        """Seconds until the next refresh is due: 0 now, None when nothing waits for one."""
        if self._changed:
            return 0.0
        now = self._clock()
        if self._unblock_at <= now:
            self._unblock_at = math.inf
            self.pools_changed(every=True)
        due = min(self._pools_due, self._unblock_at)
        if self._moved:
            due = min(due, self._positions_at + self._refresh_seconds)
        return None if due == math.inf else max(0.0, due - now)

    async def run(self, tailing: asyncio.Event) -> None:
        """Refresh whenever one is due, until cancelled; starts once the tail has its place."""
        await tailing.wait()
        backoff = Backoff()
        while True:
            due = self._due_in()
            if due is None or due > 0:
                self._signal.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(due):
                        await self._signal.wait()
                continue
            changed, positions, added = sorted(self._changed), False, 0
            self._changed.clear()
            if self._moved and self._clock() >= self._positions_at + self._refresh_seconds:
                positions, added = True, self._added
                self._moved, self._added, self._positions_at = False, 0, self._clock()
            stages, opened = self.stages_due()
            try:
                await self._refresh(changed, positions, added, stages, opened)
                backoff.reset()
            except (StoreUnavailableError, RedisError, OSError) as exc:
                log.warning("watch: could not read the watched tasks", error=str(exc))
                self._changed.update(changed)
                if positions:
                    self.moved(added)
                if stages is not None:
                    self._opened.update(dict.fromkeys(opened, self._clock()))
                    self.pools_changed(stages)
                await backoff.wait()

    def stages_due(self) -> tuple[bool | None, set[str]]:
        """Whether the stages are to be rendered again now (None: not; True: of every queued
        task, False: of the dispatched ones), and the tasks whose streams opened since.

        A render due for one key event (or stream) may come before a later event's views are
        read (those cached up to POOLS_FRESH_SECONDS before it are used): each key event and
        each opened stream still gets its own render once POOLS_SETTLE_SECONDS have passed
        since it; an opened task stays named until then.
        """
        now = self._clock()
        if now < self._pools_due:
            return None, set()
        stages, self._pools_every, self._pools_due = self._pools_every, False, math.inf
        opened = set(self._opened)
        self._opened = {t: at for t, at in self._opened.items() if at > now}
        if self._pools_settled > now:
            self._pools_due, self._pools_every = self._pools_settled, stages
        return stages, opened

    async def _refresh(
        self, changed: list[str], positions: bool, added: int, stages: bool | None, opened: set[str]
    ) -> None:
        render = self.render
        if render is None:  # streams that only learn of revocations
            return
        fresh = set(changed)
        waiting = [t for t, u in self._updates.items() if u.waiting and t not in fresh] if positions else []
        known = [p for t in waiting if (p := self._updates[t].position) is not None]
        last = max(known, default=-1) + added
        by_range = bool(waiting) and last + 1 <= RANGE_PER_TASK * len(waiting) and self._lanes is None
        ranked = changed if by_range else changed + waiting
        got = await self._read(changed, ranked, last if by_range else -1)
        ranks = dict(zip(ranked, got.ranks, strict=True))
        if by_range:
            head = {task_id: rank for rank, task_id in enumerate(got.head)}
            ranks.update((t, head.get(t)) for t in waiting)
        for task_id, view in zip(changed, got.views, strict=True):
            await self._show(task_id, view or None, ranks[task_id], got.counts, render)
        for task_id in waiting:
            rank, known_view = ranks[task_id], self._views.get(task_id)
            if rank is None or known_view is None:
                # Left the queue: its own event tells how; read it whole.
                self.changed(task_id)
                fresh.add(task_id)
            elif rank != self._updates[task_id].position or stages:
                await self._show(task_id, known_view, rank, got.counts, render)
                fresh.add(task_id)
        if stages is not None:
            # The pools changed: the stages of the queued tasks may have (their views did not).
            again = [
                (t, u.position)
                for t, u in self._updates.items()
                if t not in fresh and u.queued and (stages or not u.waiting or t in opened)
            ]
            for task_id, rank in again:
                if (known_view := self._views.get(task_id)) is not None:
                    await self._show(task_id, known_view, rank, got.counts, render)

    async def _show(
        self, task_id: str, view: dict[str, str] | None, rank: int | None, counts: QueueCounts, render: Render
    ) -> None:
        if view is None:
            update = Update(0, None)
        else:
            out = await render(task_id, view, rank, counts)
            made = time.time_ns() // 1_000_000
            update = Update(int(view.get("events", 0)), out, out.model_dump_json(), made)
            if out.blocked_until is not None:
                # Its stage changes when the pools are back, with no event to say so.
                back = self._clock() + max(POOLS_SETTLE_SECONDS, out.blocked_until - time.time())
                self._unblock_at = min(self._unblock_at, back)
        # The stream may have closed while the task was read.
        if self._publish(task_id, update):
            if view is not None:
                self._views[task_id] = view
            self._updates[task_id] = update

    async def _read(self, views: Sequence[str], ranks: Sequence[str], last: int) -> _Read:
        """One MULTI/EXEC: the views, the ranks, the queue's first `last + 1` members, the counts."""
        found, ranked, head, counts = await self._store.watched(views, ranks, last + 1, self._lanes)
        return _Read(views=found, ranks=ranked, head=head, counts=counts)
