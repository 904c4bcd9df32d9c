"""The cost of one ETA: the forecast's simulation per submit against one lookup in a start table.

For a few queue shapes it prints the microseconds one ETA costs at positions 10 and 10,000 by
simulating every task ahead (`forecast.eta_seconds`, as each submit did) and by a lookup in
the start table (`forecast.start_table`), the table's build time, that both give the same
figure, and the time to build a replica's whole forecast of the ETA range from one read of the
queue (`eta_range.build`: the p50 and p90 tables and the draws of the calls in flight).

    python bench/eta.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.eta_range import CallTimes, Snapshot
from actors.eta_range import build as build_range
from actors.forecast import PoolWindow, eta_seconds, start_table

NOW = 1_700_000_000.0


def shapes() -> dict[str, tuple[int, int, float, list[PoolWindow]]]:
    """(slots, running, slot hold, pools) per queue shape, with grants logged as a busy queue has."""
    rng = random.Random(1)

    def grants(count: int) -> tuple[float, ...]:
        return tuple(sorted(NOW - rng.uniform(0, 60) for _ in range(count)))

    return {
        "3 pools x 15/min, 40 slots, 2 s calls": (40, 40, 2.0, [PoolWindow(15, 60.02, grants(15))] * 3),
        "1 pool x 1,200/min, 40 slots, 2 s calls": (40, 40, 2.0, [PoolWindow(1200, 60.02, grants(1200))]),
        "1 pool x 6,000,000/min, 40 slots, 4 ms calls": (
            40,
            40,
            0.004,
            [PoolWindow(6_000_000, 60.02, grants(120_000))],
        ),
    }


def best(call: Callable[[], object], repeat: int, budget: float = 0.2) -> float:
    """Seconds one call takes: the best of `repeat` rounds of as many calls as fit in `budget`."""
    start = time.perf_counter()
    call()
    once = max(time.perf_counter() - start, 1e-7)
    number = max(1, min(100_000, int(budget / once)))
    rounds = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            call()
        rounds.append((time.perf_counter() - start) / number)
    return min(rounds)


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'queue':46} {'position':>8} {'simulated':>12} {'table':>9} {'build':>10}  same  {'range':>9}")
    for name, (slots, running, hold, pools) in shapes().items():
        queue = (slots, running, hold, pools)
        build = best(partial(start_table, NOW, *queue, 10_040), args.repeat, 1.0)
        times = CallTimes(hold, tuple(hold * (0.75 + i / 40) for i in range(21)))
        calls = tuple(NOW - hold * i / running for i in range(running))
        snapshot = Snapshot(NOW, slots, tuple(pools), calls, (), running, 0.0, times, 0.01)
        whole = best(partial(build_range, snapshot, 10_040, random.Random(0)), args.repeat, 1.0)
        table = start_table(NOW, *queue, 10_040)
        for position in (10, 10_000):
            simulated = best(partial(eta_seconds, position, NOW, *queue), args.repeat, 1.0)
            lookup = best(partial(table.eta, position, NOW), args.repeat)
            same = round(table.eta(position, NOW), 1) == round(eta_seconds(position, NOW, *queue), 1)
            print(
                f"{name:46} {position:>8} {simulated * 1e6:>10.1f}us {lookup * 1e6:>7.2f}us "
                f"{build * 1e3:>8.2f}ms  {same!s:5} {whole * 1e3:>7.2f}ms"
            )


if __name__ == "__main__":
    main()
