"""The QueueActor's snapshot taken off its loop: a shallow copy on the loop, serialised in a thread.

Every value the state holds per task (`TaskEntry`, `Lease`, `EndedAttempt`, `PendingWebhook`)
is frozen and replaced on change, so copying the dicts that hold them (a few milliseconds at
100,000 tasks) gives a state that later events cannot touch. The copy is then written out in
chunks from a thread, letting the loop thread take the interpreter between chunks: dispatch
never waits for a whole serialisation.
"""

from __future__ import annotations

import gc
import json
import time
from dataclasses import replace

import msgspec
from sortedcontainers import SortedList

from actors.queue.state import QueueState, snapshot

# Entries serialised per chunk: well under a millisecond of work each.
CHUNK = 500
_encode = msgspec.json.Encoder().encode


def frozen_copy(state: QueueState) -> QueueState:
    """A copy of `state` that no later `apply` changes (shares only frozen values)."""
    return replace(
        state,
        tasks=dict(state.tasks),
        queue=SortedList(),  # carried in `places` below: SortedList copies are slower than a list
        not_before=dict(state.not_before),
        running=dict(state.running),
        to_decide=dict(state.to_decide),
        outcomes={bucket: list(counts) for bucket, counts in state.outcomes.items()},
        tiers={pool: {b: list(c) for b, c in buckets.items()} for pool, buckets in state.tiers.items()},
        deadlines=SortedList(),  # derived from the tasks at a restore; not in the document
        lanes={},  # derived from the queue at a restore; not in the document
        alerts=dict(state.alerts),
        parked=dict(state.parked),
        disabled=dict(state.disabled),
        webhooks=dict(state.webhooks),
    )


def places(state: QueueState) -> list[tuple[float, int, str]]:
    """The waiting tasks' places, copied (the queue is a SortedList that `apply` changes)."""
    return list(state.queue)


def write(copy: QueueState, waiting: list[tuple[float, int, str]]) -> list[str]:
    """`document`, for a thread: with the objects alive now frozen out of the collector and the
    collector paused until it is done, so that no full collection over the whole state (tens
    of milliseconds at 100,000 tasks) lands in the middle and holds the loop thread."""
    gc.freeze()
    paused = gc.isenabled()
    gc.disable()
    try:
        return document(copy, waiting)
    finally:
        if paused:
            gc.enable()


def document(copy: QueueState, waiting: list[tuple[float, int, str]]) -> list[str]:
    """The snapshot document of `copy` with the queue `waiting`: what `json.dumps(snapshot(state))`
    gives, read back, in parts (joined by the store), each built holding the interpreter briefly.

    The entries are written by msgspec straight from their structs (a tenth of the time of a
    dict each through the standard encoder); their text is UTF-8 rather than escapes, and their
    numbers are finite (places, times, counts and integer options).
    """
    head = snapshot(replace(copy, tasks={}, queue=SortedList()))
    del head["tasks"], head["queue"]
    parts = ['{"tasks":[']
    entries = list(copy.tasks.values())
    for start in range(0, len(entries), CHUNK):
        tasks = _encode(entries[start : start + CHUNK])
        parts.append(("," if start else "") + tasks.decode()[1:-1])
        time.sleep(0)  # let the loop thread run
    parts.append('],"queue":[')
    for start in range(0, len(waiting), CHUNK * 4):
        queue = _encode(waiting[start : start + CHUNK * 4])
        parts.append(("," if start else "") + queue.decode()[1:-1])
        time.sleep(0)
    parts.append("],")
    parts.append(json.dumps(head, separators=(",", ":"))[1:])
    return parts
