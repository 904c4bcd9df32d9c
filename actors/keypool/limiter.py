"""Rolling-window rate limiting as arithmetic on `now`: a sliding-window log per quota pool."""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class SlidingWindowLog:
    """At most `capacity` grants in any window of `window` seconds, and a burst may take them all.

    Keeps grant times in time order. A grant at `now` is allowed iff fewer than `capacity`
    logged grants lie less than `window` seconds back; so no half-open window
    [t, t + window) ever holds more than the capacity in force at its last grant.

    A grant is forgotten once it is both older than the newest `capacity` grants and a full
    window older than the newest grant: from then on it can never bind again. Forgetting only
    by count would lose, on a shrink, grants that bind again when the capacity grows back in
    the same window. Every change ends with the same rule, so live grants, replayed ones and
    a restored log hold the same times.
    """

    capacity: int
    window: float
    log: deque[float] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {self.capacity}")
        if self.window <= 0:
            raise ValueError(f"window must be positive, got {self.window}")

    def _in_window(self, now: float) -> int:
        """How many logged grants lie less than a window before `now` (a binary search: the log
        may hold a large pool's whole window)."""
        window = self.window
        expired = bisect.bisect_left(self.log, True, key=lambda t: now - t < window)
        return len(self.log) - expired

    def _forget(self) -> None:
        """Drop the grants that can never bind again (see the class docstring)."""
        log = self.log
        while len(log) > self.capacity and log[-1] - log[0] >= self.window:
            log.popleft()

    def _insert(self, at: float) -> None:
        """Log a grant at `at`, keeping time order."""
        if self.log and at < self.log[-1]:
            bisect.insort(self.log, at)
        else:
            self.log.append(at)
        self._forget()

    def available(self, now: float) -> int:
        """How many grants may be taken at `now`."""
        return max(0, self.capacity - self._in_window(now))

    def next_free_at(self, now: float, places: int = 1) -> float:
        """The earliest time at or after `now` when `places` grants are allowed (inf: never, the
        window holds fewer)."""
        need = self.capacity - places + 1  # the newest grants that must leave the window
        if need < 1:
            return math.inf
        n = len(self.log)
        if n < need:
            return now
        # The need-th newest grant must be a window old.
        oldest = self.log[n - need]
        at = oldest + self.window
        if at - oldest < self.window:  # rounding: the time returned must pass `take`
            at = math.nextafter(at, math.inf)
        return max(now, at)

    def take(self, now: float) -> bool:
        """Record a grant at `now` if allowed; False (and nothing recorded) otherwise."""
        n = len(self.log)
        if n >= self.capacity and now - self.log[n - self.capacity] < self.window:
            return False
        self._insert(now)
        return True

    def record(self, at: float) -> None:
        """Replay a grant made at `at` (in any order)."""
        self._insert(at)

    def resize(self, capacity: int) -> None:
        """Change the capacity from now on, keeping every grant that may still bind."""
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._forget()

    def copy(self) -> SlidingWindowLog:
        """An independent limiter with the same grants (a decision tries grants on a copy)."""
        return SlidingWindowLog(self.capacity, self.window, deque(self.log))

    def move(self, old: float, new: float) -> None:
        """Re-date the grant logged at `old` to `new` (later: when its call was really sent).

        Later is only ever stricter. A grant no longer in the log changes nothing.
        """
        log = self.log
        i = bisect.bisect_left(log, old)
        if i == len(log) or log[i] != old or new < old:
            return
        del log[i]
        bisect.insort(log, new)
        self._forget()
