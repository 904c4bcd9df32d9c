"""Capacity planning: when each of N users starts and finishes, for a given set of pools and slots.

The schedule is the forecast's (`actors.forecast.start_times`): users are served in arrival
order (FIFO); each needs a slot, held for the call's latency, and a token from whichever
pool frees a place first, a place being reused one window (plus the key pool's margin)
after the call that took it. A project's priority pool counts against its standard one
(`NAME:RPM>OTHER`): the two are one budget, the standard pool's (`actors.linked_pools`).
Fallback routes and day limits are planned by `actors.route_plan`.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.forecast import PoolWindow, start_times, window_capacity
from actors.linked_pools import chains, shared_windows

WINDOW_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class PoolPlan:
    """One quota pool: its name, requests per minute and the pool whose window its calls also
    take a place in ("" for none). `rpd`: the calls it may make in the day (0: no limit),
    `price_per_image` USD a call, `window` its window in seconds (0: the plan's); the
    fallback planner (`actors.route_plan`) reads these three, `simulate` does not."""

    name: str
    rpm: int
    counts_against: str = ""
    rpd: int = 0
    price_per_image: float = 0.0
    window: float = 0.0


@dataclass(frozen=True, slots=True)
class Schedule:
    """Per user (in arrival order): arrival, start of the upstream call, and finish, in seconds."""

    arrivals: tuple[float, ...]
    starts: tuple[float, ...]
    finishes: tuple[float, ...]

    @property
    def waits(self) -> list[float]:
        """Seconds each user waited from arrival to start."""
        return [s - a for a, s in zip(self.arrivals, self.starts, strict=True)]

    @property
    def makespan(self) -> float:
        """Seconds from the first arrival to the last finish."""
        return max(self.finishes) - min(self.arrivals) if self.finishes else 0.0


def parse_pools(spec: str) -> tuple[PoolPlan, ...]:
    """`3x15` (three projects at 15 RPM) or `a:15,b:360`, where `NAME:RPM>OTHER` counts against
    the pool OTHER (`a:15,a-fast:10>a`); ValueError says what is wrong."""
    text = spec.strip()
    if "x" in text and ":" not in text:
        count, _, rpm = text.partition("x")
        if not count.isdigit() or not rpm.isdigit() or int(count) < 1 or int(rpm) < 1:
            raise ValueError(f"pools {spec!r}: COUNTxRPM needs two whole numbers >= 1, e.g. 3x15")
        return tuple(PoolPlan(f"pool-{i + 1}", int(rpm)) for i in range(int(count)))
    pools = []
    for part in text.split(","):
        name, _, rest = part.strip().partition(":")
        rpm, _, over = rest.partition(">")
        if not name or not rpm.isdigit() or int(rpm) < 1 or (">" in rest and not over):
            raise ValueError(
                f"pools {spec!r}: expected NAME:RPM[>OTHER][,NAME:RPM...] or COUNTxRPM, got {part!r}"
            )
        pools.append(PoolPlan(name, int(rpm), over))
    names = {p.name for p in pools}
    if len(names) != len(pools):
        raise ValueError(f"pools {spec!r}: a name is used twice")
    links = {p.name: p.counts_against for p in pools}
    for p in pools:
        if p.counts_against and (p.counts_against not in names or p.counts_against == p.name):
            raise ValueError(
                f"pools {spec!r}: {p.name} counts against {p.counts_against!r}, not another pool given"
            )
        seen, at = {p.name}, p.counts_against
        while at:
            if at in seen:
                raise ValueError(f"pools {spec!r}: {p.name}'s counts_against makes a cycle")
            seen.add(at)
            at = links[at]
    return tuple(pools)


def arrivals(users: int, arrival: str) -> list[float]:
    """Arrival times: `burst` (all at 0) or `ramp:SECONDS` (evenly spread over that time)."""
    if users < 1:
        raise ValueError("users must be >= 1")
    if arrival == "burst":
        return [0.0] * users
    kind, _, seconds = arrival.partition(":")
    try:
        span = float(seconds)
    except ValueError:
        span = -1.0
    if kind != "ramp" or span < 0:
        raise ValueError(f"arrival {arrival!r}: expected burst or ramp:SECONDS")
    return [span * i / users for i in range(users)]


def simulate(
    arrival_times: list[float],
    slots: int,
    latency: float,
    pools: tuple[PoolPlan, ...],
    window: float = WINDOW_SECONDS,
    margin: float = 0.0,
) -> Schedule:
    """Start and finish of each user, served in arrival order under slots and sliding windows."""
    if slots < 1 or latency < 0 or not pools:
        raise ValueError("slots must be >= 1, latency >= 0 and at least one pool given")
    ordered = sorted(arrival_times)
    windows = {p.name: PoolWindow(window_capacity(p.rpm, window), window + margin) for p in pools}
    links = chains({p.name: p.counts_against for p in pools})
    starts = start_times(ordered, [0.0] * slots, latency, shared_windows(windows, links))
    return Schedule(tuple(ordered), tuple(starts), tuple(s + latency for s in starts))


def bands(schedule: Schedule, window: float = WINDOW_SECONDS) -> list[tuple[int, int, float, float]]:
    """Users grouped by the window their call starts in: (first rank, last rank, first start, last start)."""
    out: list[tuple[int, int, float, float]] = []
    for rank, start in enumerate(schedule.starts, 1):
        band = int(start // window)
        if out and int(out[-1][2] // window) == band:
            first, _, lo, _ = out[-1]
            out[-1] = (first, rank, lo, start)
        else:
            out.append((rank, rank, start, start))
    return out


def cheapest(
    arrival_times: list[float],
    latency: float,
    rpm: int,
    target_wait: float,
    window: float = WINDOW_SECONDS,
    margin: float = 0.0,
    max_pools: int = 50,
) -> tuple[int, int] | None:
    """The fewest projects at `rpm` each, then the fewest slots, whose longest wait is within
    `target_wait`; None when even `max_pools` projects cannot."""
    users = len(arrival_times)

    def longest(count: int, slots: int) -> float:
        pools = tuple(PoolPlan(f"pool-{i + 1}", rpm) for i in range(count))
        return max(simulate(arrival_times, slots, latency, pools, window, margin).waits)

    for count in range(1, max_pools + 1):
        if longest(count, users) > target_wait:
            continue
        low, high = 1, users  # the longest wait only shrinks as slots grow
        while low < high:
            mid = (low + high) // 2
            if longest(count, mid) <= target_wait:
                high = mid
            else:
                low = mid + 1
        return count, low
    return None
