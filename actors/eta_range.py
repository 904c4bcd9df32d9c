"""The ETA range: the p50 and p90 of when a queued task's upstream call starts, from one snapshot.

Pure arithmetic over `actors.forecast`; time and randomness are parameters. A snapshot holds
what decides the starts: each pool's window (a place comes back a window, the key pool's
margin and the recent `reuse_delay` after its grant; pools that count against another come
as one window with it, `actors.linked_pools`; with fallback routes, only the pools of the
routes that serve now give places, `actors.serving_routes`), the calls in flight or granted with
their start times, the tasks that hold a slot but still wait for a token, and recent call
times. Every task ahead still needs a place: the waiting tasks ahead and the dispatched ones
without a token, which take theirs first. A task starts once it has a place and a free slot
(`forecast.start_table`), and never sooner than the hand-off to its call.

How the two figures differ:

- A slot held by a call in flight frees when the call ends: its start plus a call time drawn
  from the recent calls that lasted longer than it has run so far. The k-th slot to free is the
  median (p50) or the 90th percentile (p90) of the k-th earliest end over `draws` draws, so a
  burst's first calls free their slots over the spread of call times, not all at one instant.
- A call the forecast starts holds its slot for the mean call (p50) or the 90th percentile
  call (p90), plus the hand-off to the next call (outcome, dispatch, token), at most
  HANDOFF_CAP: held time beyond that is a wait for quota, which the pools account for.
- One slow call delays the calls after it on its slot, but n calls in a row spread by about
  √n times one call's spread, not n times: the p90 keeps 1/√n of the p90 table's lead,
  n being the task's p50 wait in calls.
- The p90 adds START_JITTER for the hand-offs before a call starts (the submit's own round
  trip, a busy replica or actor), which the pools and slots do not show.

Places are not drawn: a pool grants at known times. A 429 (a task in line again), a lower
learned rate, a cancelled task ahead, a later task's worker asking for the window's last place
first, or a user's cap on running tasks moves starts in ways no snapshot shows.

Positions move between snapshots; the queue's counters square them (`Forecast.ahead`).
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from actors import forecast
from actors.forecast import PoolWindow, StartTable

# Held time beyond the call that counts as the hand-off to the next call; more is quota wait.
HANDOFF_CAP = 0.1
# Seconds the p90 adds for the hand-offs before a call starts.
START_JITTER = 0.25
# Draws of the calls in flight, at most; fewer for many calls (DRAW_BUDGET draws in all).
DRAWS = 64
DRAW_BUDGET = 4096
# Recent calls needed before their mean replaces the queue's all-time mean.
MIN_SAMPLE = 8
# Quantile points of a prior's spread.
PRIOR_POINTS = 9
# A place counts as taken again on demand when its next grant came within this share of a window
# after it freed; later ones (nothing waited for it) say nothing of the pace. Fewer than
# MIN_REUSES such grants say nothing either.
ON_DEMAND = 0.5
MIN_REUSES = 5
# The counters that grow by one as a slot holder ends its attempt and leaves the running set.
OUTCOMES = ("succeeded", "attempts_failed", "throttled")


def outcomes(stats: Mapping[str, float]) -> float:
    """The attempts that ended and gave their slot back, from the queue's counters."""
    return sum(stats.get(name, 0.0) for name in OUTCOMES)


def quantile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile (0-1) of sorted values, by linear interpolation."""
    if len(ordered) == 1:
        return ordered[0]
    x = q * (len(ordered) - 1)
    i = min(int(x), len(ordered) - 2)
    return ordered[i] + (ordered[i + 1] - ordered[i]) * (x - i)


@dataclass(frozen=True, slots=True)
class CallTimes:
    """How long a call lasts: the mean, and recent calls' times (sorted) for its spread."""

    mean: float
    sample: tuple[float, ...]

    @property
    def p90(self) -> float:
        """The 90th percentile call."""
        return max(self.mean, quantile(self.sample, 0.9))

    def draw(self, ran: float, rng: random.Random) -> float:
        """A call's time, given that it has run `ran` seconds: a recent call that lasted longer,
        or `ran` (the call ends about now) when none did."""
        longer = self.sample[_above(self.sample, ran) :]
        return rng.choice(longer) if longer else ran


def _above(ordered: Sequence[float], value: float) -> int:
    """The index of the first sorted value above `value`."""
    lo, hi = 0, len(ordered)
    while lo < hi:
        mid = (lo + hi) // 2
        if ordered[mid] <= value:
            lo = mid + 1
        else:
            hi = mid
    return lo


def prior_times(provider: str, latency: float, jitter: float, timeout: float) -> tuple[float, ...]:
    """The spread assumed before any call is measured: the offline provider's own (its latency
    plus or minus its jitter, evenly); for an upstream, from half to twice `latency` (its
    prior, `forecast.prior_latency`), evenly on a log scale, none past the timeout."""
    points = [(2 * i + 1) / PRIOR_POINTS - 1 for i in range(PRIOR_POINTS)]  # -1 … 1
    if provider == "offline":
        return tuple(max(0.0, latency + jitter * p) for p in points)
    return tuple(min(timeout, latency * 2**p) for p in points)


def call_times(
    stats: Mapping[str, float], recent: Sequence[float], prior: tuple[float, ...], ran: float
) -> CallTimes:
    """What is known of a call's time: MIN_SAMPLE recent calls or more give mean and spread;
    else the queue's all-time mean with the recent spread (or the prior's, scaled to it); with
    no call measured, the prior, though never shorter than the oldest call in flight has `ran`."""
    sample = tuple(sorted(recent))
    if len(sample) >= MIN_SAMPLE:
        return CallTimes(max(statistics.fmean(sample), forecast.MIN_LATENCY), sample)
    count = stats.get("elapsed_count", 0.0)
    prior_mean = statistics.fmean(prior)
    mean = stats.get("elapsed_sum", 0.0) / count if count else max(prior_mean, ran)
    mean = max(mean, forecast.MIN_LATENCY)
    if not sample:
        scale = mean / prior_mean if prior_mean > 0 else 1.0
        sample = tuple(t * scale for t in prior) if prior_mean > 0 else (mean,)
    return CallTimes(mean, sample)


def reuse_delay(grants: Sequence[tuple[float, int]], window: float) -> float:
    """How much later than `window` (with the key pool's margin) after its grant a pool's place is
    granted again while tasks wait for it: the median, over recent grants (time and the pool's
    capacity then, oldest first), of the gap to the grant one capacity before, less `window`.

    A call goes out some milliseconds after its grant and its place counts from then; a busy
    key pool grants a freed place some milliseconds late. Each reuse adds both, and a task
    many windows back waits for all of them.
    """
    late = []
    for k, (at, capacity) in enumerate(grants):
        if 0 < capacity <= k:
            gap = at - grants[k - capacity][0] - window
            if -window < gap < ON_DEMAND * window:
                late.append(max(0.0, gap))
    return statistics.median(late) if len(late) >= MIN_REUSES else 0.0


def handoff(held_beyond: Sequence[float], hand_ins: Sequence[float]) -> float:
    """Seconds a slot stays held around a call besides the call (dispatch, token, outcome), at
    most HANDOFF_CAP: the median of recent calls' held time beyond the call, or before any call
    ended, of the calls in flight's time from dispatch to start; 0 with neither."""
    seen = held_beyond or hand_ins
    return min(HANDOFF_CAP, statistics.median(seen)) if seen else 0.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The queue as one read saw it, at `at` (epoch seconds).

    `calls`: when each slot holder with a token started its call (or will, for a grant made
    ahead); `needing`: the slot holders still waiting for a token, in the order they get one;
    `running` and `outcomes`: the counters read with it, which square later positions;
    `needing_lanes`: each needing holder's priority lane (empty without lanes).
    """

    at: float
    slots: int
    pools: tuple[PoolWindow, ...]
    calls: tuple[float, ...]
    needing: tuple[str, ...]
    running: int
    outcomes: float
    times: CallTimes
    handoff: float
    needing_lanes: tuple[str, ...] = ()


def needing_before(lanes: Sequence[str], lane: str, own: int, weights: Mapping[str, float]) -> int:
    """Of the slot holders waiting for a token, in lanes `lanes`, how many get one before a task
    of `lane` that needs `own` of its lane's tokens first (those ahead of it in its lane, and
    its own): the key pool shares tokens by weight, so while that lane gets `own`, another lane
    M gets `own * w_M / w_lane` of them (those of its holders, at most). A lane `weights` does
    not name weighs 1."""
    counts: dict[str, int] = {}
    for name in lanes:
        counts[name] = counts.get(name, 0) + 1
    w = weights.get(lane, 1.0)
    mine = counts.pop(lane, 0)
    share = mine + own
    return mine + sum(min(n, math.floor(share * weights.get(m, 1.0) / w)) for m, n in counts.items())


def slot_frees(
    now: float, starts: Sequence[float], times: CallTimes, extra: float, draws: int, rng: random.Random
) -> tuple[list[float], list[float]]:
    """When the slots held by the calls started at `starts` free, earliest first: the median and
    the 90th percentile of the k-th earliest end over `draws` draws, plus `extra` each."""
    if not starts:
        return [], []
    by_rank: list[list[float]] = [[] for _ in starts]
    for _ in range(draws):
        ends = sorted(s + times.draw(max(0.0, now - s), rng) for s in starts)
        for k, end in enumerate(ends):
            by_rank[k].append(end)
    p50, p90 = [], []
    for ends in by_rank:
        ends.sort()
        p50.append(quantile(ends, 0.5) + extra)
        p90.append(quantile(ends, 0.9) + extra)
    return p50, p90


@dataclass(frozen=True, slots=True)
class Forecast:
    """The p50 and p90 start tables of one snapshot, and how to read them."""

    snapshot: Snapshot
    p50: StartTable
    p90: StartTable
    cycle: float

    def ahead(
        self,
        position: int,
        running: int,
        stats: Mapping[str, float],
        lane: str | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> int:
        """Tasks that still need a place before the one `position` waiting tasks are ahead of,
        as the snapshot counts them (`running` and `stats`: the counters read with `position`).

        The slot holders without a token in the snapshot (with `weights`, priority lanes: those
        of the task's `lane` and the other lanes' shares, `needing_before`); and the tasks that
        left the waiting set since, which hold a slot now (more `running`) or already gave it
        back (more outcomes) but whose token the snapshot did not see. Counters read before the
        snapshot give the same figure by the same sums, negative.
        """
        moved = running - self.snapshot.running + outcomes(stats) - self.snapshot.outcomes
        s = self.snapshot
        needing = len(s.needing)
        if weights and lane is not None and len(s.needing_lanes) == needing:
            # Its lane's tokens it waits for: at most the waiting tasks ahead of it, and its own.
            needing = needing_before(s.needing_lanes, lane, position + 1, weights)
        return max(0, position + needing + round(moved))

    def dispatched_ahead(
        self,
        task_id: str,
        running: int,
        stats: Mapping[str, float],
        weights: Mapping[str, float] | None = None,
    ) -> int:
        """Tasks that still need a place before a slot holder waiting for its token: those before
        it in the snapshot (with `weights`, priority lanes: those of its lane before it and the
        other lanes' shares), or, dispatched since, every one the snapshot knew and those since."""
        s = self.snapshot
        if task_id in s.needing:
            i = s.needing.index(task_id)
            if weights and len(s.needing_lanes) == len(s.needing):
                lane = s.needing_lanes[i]
                before = [m for j, m in enumerate(s.needing_lanes) if m != lane or j < i]
                return needing_before(before, lane, 1, weights)
            return i
        return max(0, self.ahead(0, running, stats) - 1)

    def range(self, ahead: int, now: float) -> tuple[float, float] | None:
        """(p50, p90) seconds from `now` until the call of a task with `ahead` tasks before it
        starts; None when no pool will ever grant."""
        p50 = self.p50.eta(ahead, now)
        if not math.isfinite(p50):
            return None
        # No call starts sooner than the hand-off to it (dispatch, token) from now.
        p50 = max(self.snapshot.handoff, p50)
        slow = self.p90.eta(ahead, now)
        slow = max(p50, slow) if math.isfinite(slow) else p50
        in_row = max(1.0, p50 / self.cycle) if self.cycle > 0 else 1.0
        return p50, p50 + (slow - p50) / math.sqrt(in_row) + START_JITTER


def build(snapshot: Snapshot, horizon: int, rng: random.Random) -> Forecast:
    """The forecast of `snapshot` for positions up to `horizon` (the p50 and p90 tables)."""
    s = snapshot
    draws = max(8, min(DRAWS, DRAW_BUDGET // max(1, len(s.calls))))
    busy50, busy90 = slot_frees(s.at, s.calls, s.times, s.handoff, draws, rng)
    # The slot holders without a token take the first places, with the slots they hold.
    cycle = s.times.mean + s.handoff
    span = horizon + len(s.needing)
    p50 = forecast.start_table(s.at, s.slots, len(busy50), cycle, s.pools, span, busy=busy50)
    slow = s.times.p90 + s.handoff
    p90 = forecast.start_table(s.at, s.slots, len(busy90), slow, s.pools, span, busy=busy90)
    return Forecast(s, p50, p90, cycle)
