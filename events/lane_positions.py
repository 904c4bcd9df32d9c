"""How many tasks start before a waiting task when the queue has priority lanes.

With `[[lanes]]` the QueueActor gives each free slot to the lane, among those with tasks
waiting, that holds the fewest slots per unit of weight (`actors.config.lanes.next_lane`),
and inside a lane takes the queue's fair order. Once every slot is held (as whenever a task
waits), each lane holds its share of the slots: the slots dealt one at a time by that rule,
no lane taking more than it has tasks. A freed slot goes back to the lane that held it, so
the lanes start tasks at the rates of their shares. A task that is `rank` in its lane then
starts after its `rank` elders and, from each other lane M, the tasks M starts while its own
lane starts `rank + 1`: `rank + sum over M of min(n_M, floor((rank + 1) * h_M / h_L))` with
h the shares, taken again each time a lane runs out of tasks (the shares of those left change).

Unbounded slots (`slots` 0) make the shares the weights: the position is then
`rank + sum over M of min(n_M, floor((rank + 1) * w_M / w_L))`. With slots, the shares are
whole numbers of slots: one slot and two lanes is strict priority to the heavier.

Where it differs from what happens: the shares hold once every slot is held, and a lane that
runs out of tasks hands its slots on one at a time as they free (not at once), so a figure
is off by at most about one turn of the slots; reserved slots and tasks held back by a retry
delay or a per-user cap are not counted. Tasks in no configured lane ("", older tasks, or a
lane no longer configured) count as one lane of weight 1, `REST`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

# The lane of tasks that ride no configured lane.
REST = ""
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Lanes:
    """The configured lanes' weights, by name, and the queue's slots (0: shares by weight)."""

    weights: tuple[tuple[str, float], ...]
    slots: int = 0

    @staticmethod
    def of(weights: Mapping[str, float], slots: int = 0) -> Lanes | None:
        """The lanes of `weights` (None without lanes: positions are the waiting set's ranks)."""
        return Lanes(tuple(weights.items()), slots) if weights else None

    @property
    def names(self) -> tuple[str, ...]:
        """The configured lanes' names."""
        return tuple(name for name, _ in self.weights)

    def weight(self, lane: str) -> float:
        """A lane's weight; 1 for a lane not configured (REST)."""
        return dict(self.weights).get(lane, 1.0)


def shares(lanes: Lanes, left: Mapping[str, float]) -> dict[str, float]:
    """Of the lanes with tasks `left`, the share of slots each holds: the slots dealt one at a
    time to the lane with the fewest per unit of weight (ties to the heavier, then by name), no
    lane taking more slots than it has tasks; the weights themselves with no slot count."""
    active = tuple(sorted((lane, n) for lane, n in left.items() if n > 0))
    if not lanes.slots:
        return {lane: lanes.weight(lane) for lane, _ in active}
    # A lane with at least `slots` tasks is capped by nothing: one key for all such counts.
    capped = tuple((lane, min(math.ceil(n - _EPSILON), lanes.slots)) for lane, n in active)
    return dict(_dealt(lanes, capped))


@functools.lru_cache(maxsize=1024)
def _dealt(lanes: Lanes, caps: tuple[tuple[str, int], ...]) -> tuple[tuple[str, float], ...]:
    held = dict.fromkeys((lane for lane, _ in caps), 0)
    cap = dict(caps)
    for _ in range(lanes.slots):
        open_ = [lane for lane in held if held[lane] < cap[lane]]
        if not open_:
            break
        lane = min(open_, key=lambda m: (held[m] / lanes.weight(m), -lanes.weight(m), m))
        held[lane] += 1
    return tuple((lane, float(n)) for lane, n in held.items())


def tasks_before(lane: str, rank: int, waiting: Mapping[str, int], lanes: Lanes) -> int:
    """How many waiting tasks start before the task `rank` (0: the first) in `lane`, given each
    lane's count of waiting tasks (`waiting`, by lane; REST for tasks in no configured lane)."""
    left = {m: float(n) for m, n in waiting.items() if n > 0 and m != lane}
    counts = dict(left)
    left[lane] = float(max(waiting.get(lane, 0), rank + 1))
    need = float(rank + 1)  # starts of its own lane up to and including the task's
    done = dict.fromkeys(counts, 0.0)
    while True:
        share = shares(lanes, left)
        own = share.get(lane, 0.0)
        until = need / own if own else math.inf
        ends = [left[m] / h for m, h in share.items() if m != lane and h > 0]
        step = min([until, *ends])
        for m, h in share.items():
            if m != lane:
                took = min(left[m], step * h)
                done[m] += took
                left[m] = 0.0 if left[m] - took < _EPSILON else left[m] - took
        if step == until:
            return rank + sum(int(min(counts[m], math.floor(done[m] + _EPSILON))) for m in counts)
        need -= step * own
        left[lane] -= step * own
