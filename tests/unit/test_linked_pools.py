"""Pools that count against another: a priority pool whose every call also takes a place in its
project's standard pool's window adds no capacity. `/v1/queue`'s pools, `quota_until`, the
throughput bound, the ETA and the planner see the pair as the standard pool alone, not as two
independent windows."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Sequence
from dataclasses import replace

import pytest

from actors import eta_range
from actors.config import PRIORITY, Config, PoolConfig, QueueConfig, Secret, tier_price
from actors.forecast import PoolWindow
from actors.linked_pools import chains, shared_rates, shared_windows
from actors.planner import arrivals, parse_pools, simulate
from events.catalogue import KeyTokenGranted
from events.eta_reads import QueueReads, Recent
from events.memory_store import MemoryEventStore
from serve_app.http.estimates import snapshot, throughput
from serve_app.http.pools import PoolView, grant_reads, read_pools
from serve_app.http.serving import serving

NOW = 1_000_000.0
WINDOW = 10.0
RPM = 90  # 15 calls a window of 10 s


def key(name: str) -> tuple[Secret, ...]:
    return (Secret(f"key-of-pool-{name}-0000000000"),)


def config(*pools: PoolConfig, slots: int = 40) -> Config:
    return replace(Config(), pools=pools, queue=QueueConfig(slots=slots))


STD = PoolConfig("std", RPM, key("std"), window_seconds=WINDOW)
FAST = PoolConfig(
    "fast", RPM, key("fast"), window_seconds=WINDOW, service_tier=PRIORITY, counts_against="std"
)
LINKED = config(STD, FAST)
UNLINKED = config(STD, replace(FAST, counts_against=""))
ALONE = config(STD)


def grant(pool: str, at: float, n: int) -> KeyTokenGranted:
    return KeyTokenGranted(
        pool=pool, key_id=f"{pool}#1", task_id=f"{n:032d}", attempt=1, capacity=15, window=WINDOW, at=at
    )


def views(cfg: Config, grants: Sequence[KeyTokenGranted], now: float = NOW) -> list[PoolView]:
    async def main() -> list[PoolView]:
        store = MemoryEventStore()
        if grants:
            await store.append(list(grants))
        return await read_pools(store, cfg, now)

    return asyncio.run(main())


# The standard pool made 6 calls in the window, the priority pool 4: "alone", the standard pool
# made all 10 itself.
SPLIT = [grant("std", NOW - 9 + i, i) for i in range(6)] + [
    grant("fast", NOW - 3 + i * 0.5, 6 + i) for i in range(4)
]
ALL_STD = [replace(g, pool="std", key_id="std#1") for g in SPLIT]


def test_pool_entries_carry_tier_price_and_what_they_count_against() -> None:
    """/v1/queue's pool entries show the tier, the price of an image and the chain; the standard
    pool's window holds the priority pool's calls too, and the priority pool has only the places
    left in both windows."""
    std, fast = (v.as_json() for v in views(LINKED, SPLIT))
    assert (std["service_tier"], std["price_per_image"], std["counts_against"]) == ("standard", 0.067, [])
    assert (fast["service_tier"], fast["price_per_image"], fast["counts_against"]) == (
        "priority",
        tier_price(PRIORITY),
        ["std"],
    )
    assert (std["window_used"], std["window_left"]) == (10, 5)
    assert (fast["window_used"], fast["window_left"]) == (4, 5)
    _, unlinked = (v.as_json() for v in views(UNLINKED, SPLIT))
    assert unlinked["window_left"] == 11


def test_quota_until_of_a_linked_pair_is_the_standard_pools_alone() -> None:
    """Both windows hold a place: none is spent. The standard window full (15 calls of both
    pools) with the priority pool's own window at 9 of 15: the priority pool is not free
    either, and quota returns when the standard window's oldest call leaves it, as for the
    standard pool alone; unlinked, the priority pool's free places hide that."""
    full = [grant("std", NOW - 9 + i * 0.1, i) for i in range(6)] + [
        grant("fast", NOW - 5 + i * 0.1, 6 + i) for i in range(9)
    ]
    alone = [replace(g, pool="std", key_id="std#1") for g in full]
    margin = LINKED.keypool.margin_seconds
    assert serving(views(LINKED, SPLIT), NOW).quota_until is None
    linked = serving(views(LINKED, full), NOW).quota_until
    assert linked == serving(views(ALONE, alone), NOW).quota_until
    assert linked == pytest.approx(NOW - 9 + WINDOW + margin)
    assert serving(views(UNLINKED, full), NOW).quota_until is None


def test_the_throughput_bound_counts_the_standard_rate_once() -> None:
    """A standard pool and a priority pool counting against it sustain the standard rate, from
    the configuration and from the views alike."""
    slots_free = {"elapsed_sum": 0.01, "elapsed_count": 1.0}
    alone, _ = throughput(ALONE, slots_free)
    assert alone == pytest.approx(RPM / 60)
    assert throughput(LINKED, slots_free)[0] == pytest.approx(alone)
    assert throughput(LINKED, slots_free, views(LINKED, SPLIT))[0] == pytest.approx(alone)
    assert throughput(UNLINKED, slots_free)[0] == pytest.approx(2 * alone)


def etas(
    cfg: Config, grants: Sequence[KeyTokenGranted], positions: Sequence[int]
) -> list[tuple[float, float]]:
    """The ETA range, p50 and p90 seconds, of the task at each position, as a replica works it out."""
    since, newest = grant_reads(cfg, NOW)
    by_pool: dict[str, list[tuple[str, float]]] = {p.name: [] for p in cfg.pools}
    for g in sorted(grants, key=lambda g: g.at):
        if g.at > since[g.pool]:
            by_pool[g.pool].append((f"{g.task_id}:1", g.at))
    reads = QueueReads((), {}, max(positions) + 1, {p: g[-newest[p] :] for p, g in by_pool.items()}, {})
    recent = Recent([], [], {})
    built = eta_range.build(snapshot(cfg, reads, recent, NOW), max(positions) + 1, random.Random(0))
    out = []
    for position in positions:
        found = built.range(position, NOW)
        assert found is not None
        out.append(found)
    return out


POSITIONS = [0, 4, 5, 6, 14, 15, 20, 29, 30, 44, 45, 60, 100]


def test_the_eta_of_a_linked_pair_is_the_standard_pools_alone() -> None:
    """5 places left in the shared window now, the others as its calls leave it: every position's
    ETA equals the standard pool's alone, and is later than two independent windows promise."""
    linked = etas(LINKED, SPLIT, POSITIONS)
    assert linked == etas(ALONE, ALL_STD, POSITIONS)
    unlinked = etas(UNLINKED, SPLIT, POSITIONS)
    assert linked[1][0] < 1.0 < linked[2][0]  # the 6th task waits for the window's first call to leave
    assert unlinked[2][0] < 1.0  # unlinked: 16 places free at once
    assert all(u[0] <= lk[0] for u, lk in zip(unlinked, linked, strict=True))
    assert linked[-1][0] > unlinked[-1][0] + 2 * WINDOW


def test_a_linked_pool_serves_within_its_standard_window_when_the_standard_pool_cannot() -> None:
    """The standard pool without keys: the priority pool still serves, at most at its own
    capacity and never beyond the standard window's; neither serving, the group does not."""
    std, fast = PoolWindow(15, 10.0, (), math.inf), PoolWindow(4, 10.0, (), NOW)
    links = chains({"std": "", "fast": "std"})
    (shared,) = shared_windows({"std": std, "fast": fast}, links)
    assert (shared.capacity, shared.available_from) == (4, NOW)
    (both,) = shared_windows({"std": replace(std, available_from=0.0), "fast": fast}, links)
    assert both.capacity == 15
    assert shared_rates({"std": 90.0, "fast": 24.0}, links, {"fast"}) == [24.0]
    assert shared_rates({"std": 90.0, "fast": 24.0}, links, set()) == []
    # A chain: fast -> mid -> std is one group, in the order of its root.
    three = chains({"fast": "mid", "std": "", "mid": "std"})
    assert three["fast"] == ("mid", "std")
    assert shared_rates({"fast": 10.0, "std": 90.0, "mid": 30.0}, three, {"fast", "std", "mid"}) == [90.0]


def test_the_planner_plans_a_linked_pair_as_the_standard_pool_alone() -> None:
    """60 users at once, 40 slots, 20 s calls: a 15 RPM project with a 15 RPM priority pool
    counting against it starts 15 a minute like the project alone (makespan 200 s), not 30 a
    minute as two projects would (80 s)."""
    burst = arrivals(60, "burst")
    linked = simulate(burst, 40, 20.0, parse_pools("std:15,fast:15>std"))
    alone = simulate(burst, 40, 20.0, parse_pools("std:15"))
    two = simulate(burst, 40, 20.0, parse_pools("std:15,fast:15"))
    assert linked.starts == alone.starts
    assert (linked.makespan, two.makespan) == (200.0, 80.0)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("std:15,fast:15>", "NAME:RPM[>OTHER]"),
        ("std:15,fast:15>nope", "not another pool given"),
        ("fast:15>fast", "not another pool given"),
        ("a:15>b,b:15>a", "cycle"),
    ],
)
def test_a_pool_spec_counting_against_no_other_pool_is_refused(spec: str, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse_pools(spec)
