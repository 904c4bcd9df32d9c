"""Rolling-window rate limiting as arithmetic on `now`: a sliding-window log per quota pool."""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class SlidingWindowLog:
    """At most `capacity` grants in any window of `window` seconds, and a burst may take them all.

    Keeps the times of the last `capacity` grants. A grant at `now` is allowed iff fewer
    than `capacity` grants are logged or the oldest of the last `capacity` lies at least
    `window` seconds back; so any two grants `capacity` apart are `window` apart, and no
    half-open window [t, t + window) ever holds more than `capacity` grants.
    """

    capacity: int
    window: float
    log: deque[float] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {self.capacity}")
        if self.window <= 0:
            raise ValueError(f"window must be positive, got {self.window}")

    def available(self, now: float) -> int:
        """How many grants may be taken at `now`."""
        free = self.capacity - len(self.log)
        for t in self.log:
            if now - t >= self.window:
                free += 1
            else:
                break
        return free

    def next_free_at(self, now: float) -> float:
        """The earliest time at or after `now` when one grant is allowed."""
        if len(self.log) < self.capacity:
            return now
        at = self.log[0] + self.window
        if at - self.log[0] < self.window:  # rounding: the time returned must pass `take`
            at = math.nextafter(at, math.inf)
        return max(now, at)

    def take(self, now: float) -> bool:
        """Record a grant at `now` if allowed; False (and nothing recorded) otherwise."""
        if len(self.log) >= self.capacity:
            if now - self.log[0] < self.window:
                return False
            self.log.popleft()
        self.log.append(now)
        return True

    def record(self, at: float) -> None:
        """Replay a grant made at `at`, keeping only the last `capacity` grants in time order."""
        if self.log and at < self.log[-1]:
            items = sorted([*self.log, at])
            self.log = deque(items[-self.capacity :])
        else:
            self.log.append(at)
            while len(self.log) > self.capacity:
                self.log.popleft()

    def resize(self, capacity: int) -> None:
        """Change the capacity from now on, keeping the grants that still bind.

        Keeping the newest `capacity` grants gives the same rule for the new capacity: a
        grant is allowed iff the `capacity`-th latest lies a full window back.
        """
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        while len(self.log) > capacity:
            self.log.popleft()

    def copy(self) -> SlidingWindowLog:
        """An independent limiter with the same grants (a decision tries grants on a copy)."""
        return SlidingWindowLog(self.capacity, self.window, deque(self.log))

    def move(self, old: float, new: float) -> None:
        """Re-date the grant logged at `old` to `new` (later: when its call was really sent).

        Later is only ever stricter. A grant no longer in the log changes nothing.
        """
        items = list(self.log)
        i = bisect.bisect_left(items, old)
        if i == len(items) or items[i] != old or new < old:
            return
        del items[i]
        bisect.insort(items, new)
        self.log = deque(items)
