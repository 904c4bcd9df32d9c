"""Priority lanes under a flood: a paid burst alone, then the same paid burst behind ten times as
many free tasks, on one genqueue with `[[lanes]]` paid (weight --paid-weight, --paid-reserved of the slots and
of each window kept for it) and free (weight 1).

Each run's waits come from the event log (a task's first `task.started` minus its submit), by
lane. The flood comes two ways, one user a task:
  mixed       one burst of free and paid together, a paid task every ratio + 1 submits;
  free first  the free tasks first, then the paid ones once the free ones are in (as long after
              as the mixed flood's submits took), so every free task is ahead of every paid one
              in the queue's fair order and has taken the window's budget when the paid ones
              arrive: only the lanes put the paid tasks first, and they get their share of the
              places as the window frees (the reserved part at once).
Each flood is compared with the same paid tasks alone: mixed, with each pressed at the second it
was submitted in the flood (so the yardstick has the flood's arrivals, not 60 at once); free
first, with the 60 pressed at once, as they are behind the flood.
A wait is from a task's submit (its acceptance into the queue) to its start, and again from when
its user pressed (`from_press`: the time to get through the ingress counts; the 60 alone, pressed
at once, are its yardstick). Prints, for each, the paid p50/p90 wait alone and in the flood (and
their ratio) and split by hop (`paid_hops_*`: submit to dispatch, to grant, to the call's
start), the free tasks' p50/p90/longest wait, each lane's ETA error at submit (|told -
waited| / max(waited, 1 s)), and, with --provider gemini, upstream's calls and 429s. The offline
provider answers with its stock PNG unless --render (upstream draws on its own machines: Pillow
drawing the free tasks' images on the same cores took the CPU the hand-offs need).

    python bench/flood.py --provider gemini --paid 60 --pools 3x600 --window 1 --latency 0.5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.config import LaneConfig, ProviderConfig
from bench.burst import read_log
from bench.common import (
    add_client_nice,
    add_render,
    bench_config,
    bench_pools,
    emulator_process,
    lower_priority,
    own_serve_ports,
    print_figures,
    upstream_counts,
)
from events.catalogue import (
    YIELDED_QUOTA,
    StoredEvent,
    TaskDispatched,
    TaskStarted,
    TaskSubmitted,
    TaskUpstreamThrottled,
)
from events.key_events import KeyTokenGranted
from serve_app.cli.burst import percentile, run_burst

PAID, FREE = "paid", "free"


@dataclass(frozen=True, slots=True)
class Burst:
    """One burst's figures: each lane's waits (from the submit's acceptance, and from when its
    user pressed) and ETA errors at submit, each lane's submit times (seconds after the burst's
    first), the paid tasks' waits split by hop (`hops`; the first, to the dispatch, is the wait
    for a slot), and the slots taken back for the paid lane so far (the whole log's)."""

    waits: dict[str, list[float]]
    pressed: dict[str, list[float]]
    errors: dict[str, list[float]]
    arrivals: dict[str, list[float]]
    hops: dict[str, list[float]]
    yielded: int


def waits_by_lane(log: list[StoredEvent], since: float) -> dict[str, list[float]]:
    """Each lane's waits (first task.started minus submit) of the tasks submitted after `since`."""
    submitted: dict[str, TaskSubmitted] = {}
    started: dict[str, float] = {}
    for stored in log:
        event = stored.event
        if isinstance(event, TaskSubmitted) and event.at >= since:
            submitted[event.task_id] = event
        elif isinstance(event, TaskStarted) and event.task_id not in started:
            started[event.task_id] = event.at
    waits: dict[str, list[float]] = {}
    for task_id, event in submitted.items():
        if task_id in started:
            waits.setdefault(event.lane, []).append(started[task_id] - event.at)
    return waits


def hops(log: list[StoredEvent], since: float, lane: str) -> dict[str, list[float]]:
    """Each `lane` task's wait split at its first started attempt's events (their times, each
    process's clock on this one machine): submit to dispatch (the wait for a slot, in the
    QueueActor), dispatch to grant (the hand-off to the key pool and its line), grant to the
    call's start (the hand-off to the worker, and a place granted ahead of its freeing). With
    `tokens_per_round` the grant comes before its dispatch: dispatch to grant is negative."""
    submitted: dict[str, float] = {}
    dispatched: dict[tuple[str, int], float] = {}
    granted: dict[tuple[str, int], float] = {}
    split: dict[str, list[float]] = {"to_dispatch": [], "to_grant": [], "to_start": []}
    for stored in log:
        event = stored.event
        if isinstance(event, TaskSubmitted) and event.at >= since and event.lane == lane:
            submitted[event.task_id] = event.at
        elif isinstance(event, TaskDispatched) and event.task_id in submitted:
            dispatched[event.task_id, event.attempt] = event.at
        elif isinstance(event, KeyTokenGranted) and event.task_id in submitted:
            granted[event.task_id, event.attempt] = event.at
        elif isinstance(event, TaskStarted) and (event.task_id, event.attempt) in dispatched:
            attempt = (event.task_id, event.attempt)
            if event.task_id in submitted:  # its first call: the task leaves `submitted`
                at_dispatch = dispatched[attempt]
                split["to_dispatch"].append(at_dispatch - submitted.pop(event.task_id))
                if (at_grant := granted.get(attempt)) is not None:
                    split["to_grant"].append(at_grant - at_dispatch)
                    split["to_start"].append(event.at - at_grant)
    return split


def summary(waits: list[float]) -> dict[str, float]:
    return {
        "n": len(waits),
        "p50_s": round(percentile(waits, 50), 3),
        "p90_s": round(percentile(waits, 90), 3),
        "max_s": round(max(waits, default=0.0), 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--paid", type=int, default=60, help="paid tasks in each run")
    p.add_argument("--ratio", type=int, default=10, help="free tasks per paid task in the flood")
    p.add_argument("--paid-weight", type=float, default=9.0)
    p.add_argument("--paid-reserved", type=float, default=0.2, help="of the slots and of each window")
    p.add_argument("--slots", type=int, default=20)
    p.add_argument("--latency", type=float, default=0.5)
    p.add_argument("--pools", default="3x600", help="COUNTxRPM")
    p.add_argument("--window", type=float, default=1.0)
    p.add_argument("--provider", default="offline", choices=["offline", "gemini"])
    add_render(p)
    add_client_nice(p, "the burst clients")
    p.add_argument("--json", action="store_true", help="print JSON only")
    args = p.parse_args()
    count, _, rpm = args.pools.partition("x")
    pools = bench_pools(int(count), int(rpm), args.window, 1)
    own_serve_ports()
    from serve_app.runtime import running

    with contextlib.ExitStack() as stack:
        emulator = ""
        if args.provider == "gemini":
            emulator = stack.enter_context(emulator_process(pools, args.window, args.latency, 0.0))
        provider = ProviderConfig(
            name=args.provider,
            base_url=emulator,
            latency_seconds=args.latency,
            expected_call_seconds=args.latency,
            image_size="512",
            timeout_seconds=30,
            render=args.render,
        )
        config = bench_config(pools, args.slots, provider)
        lanes = (LaneConfig(PAID, args.paid_weight, args.paid_reserved), LaneConfig(FREE, 1.0, default=True))
        config = replace(config, lanes=lanes)
        with running(config, dashboard=False) as live:
            lower_priority(args.client_nice)

            def burst(
                n: int, lane_of: Callable[[int], str | None], press_at: Callable[[int], float] | None = None
            ) -> Burst:
                """One burst, and its figures from the event log and the views."""
                since = time.time()
                result = asyncio.run(
                    run_burst(live.api_url, n, "photography", poll=0.2, task_lane=lane_of, press_at=press_at)
                )
                time.sleep(args.window)  # the windows empty before the next run
                log = asyncio.run(read_log(live.config))
                submits = sorted(
                    (s.event for s in log if isinstance(s.event, TaskSubmitted) and s.event.at >= since),
                    key=lambda e: e.at,
                )
                arrivals: dict[str, list[float]] = {}
                for e in submits:
                    arrivals.setdefault(e.lane, []).append(e.at - submits[0].at)
                lanes = {e.task_id: e.lane for e in submits}
                errors: dict[str, list[float]] = {}
                pressed: dict[str, list[float]] = {}
                for task_id, view in result.views.items():
                    if task_id in result.pressed and view.get("started_at"):
                        lane = lanes.get(task_id, "")
                        pressed.setdefault(lane, []).append(view["started_at"] - result.pressed[task_id])
                    if task_id in result.predicted and view.get("started_at"):
                        wait = max(view["started_at"] - view["submitted_at"], 1.0)
                        error = (
                            abs(result.predicted[task_id] - (view["started_at"] - view["submitted_at"]))
                            / wait
                        )
                        errors.setdefault(lanes.get(task_id, ""), []).append(error)
                yielded = sum(
                    1
                    for s in log
                    if isinstance(s.event, TaskUpstreamThrottled) and s.event.quota == YIELDED_QUOTA
                )
                waits = waits_by_lane(log, since)
                return Burst(waits, pressed, errors, arrivals, hops(log, since, PAID), yielded)

            alone = burst(args.paid, lambda i: PAID)
            flood = args.paid * args.ratio
            every = args.ratio + 1
            mixed = burst(flood + args.paid, lambda i: PAID if i % every == args.ratio else FREE)
            # The mixed flood's own yardstick: the same paid tasks, each pressed when it was in
            # the flood (its submit's offset in that burst), with no free task around them.
            offsets = mixed.arrivals.get(PAID, [])
            paced = burst(len(offsets), lambda i: PAID, lambda i: offsets[i])
            # Free first: the paid tasks pressed once the mixed flood's submits had all been
            # accepted, so that every free task is in the queue ahead of them (pressed at once,
            # the submit gate would let them in ahead of the free ones still waiting to enter).
            span = max((times[-1] for times in mixed.arrivals.values() if times), default=0.0)
            first = burst(
                flood + args.paid, lambda i: FREE if i < flood else PAID, lambda i: 0.0 if i < flood else span
            )
            figures: dict[str, object] = {
                "paid_alone": summary(alone.waits.get(PAID, [])),
                "paid_alone_paced": summary(paced.waits.get(PAID, [])),
                "paid_from_press_alone": summary(alone.pressed.get(PAID, [])),
                "paid_arrivals_span_s": round(offsets[-1], 3) if offsets else None,
            }
            for name, run, base in (("", mixed, paced), ("_free_first", first, alone)):
                figures[f"paid_in_flood{name}"] = summary(run.waits.get(PAID, []))
                figures[f"free_in_flood{name}"] = summary(run.waits.get(FREE, []))
                a = percentile(base.waits.get(PAID, []), 90)
                b = percentile(run.waits.get(PAID, []), 90)
                figures[f"paid_p90_ratio{name}"] = round(b / a, 3) if a else None
                # From the user's press: the flood's paid tasks and the 60 alone were each
                # pressed at one instant, so the time to get in counts on both sides.
                figures[f"paid_from_press_in_flood{name}"] = summary(run.pressed.get(PAID, []))
                figures[f"free_from_press_in_flood{name}"] = summary(run.pressed.get(FREE, []))
                a = percentile(alone.pressed.get(PAID, []), 90)
                b = percentile(run.pressed.get(PAID, []), 90)
                figures[f"paid_from_press_p90_ratio{name}"] = round(b / a, 3) if a else None
            shapes = {"alone": alone, "in_flood": mixed, "alone_paced": paced, "in_flood_free_first": first}
            for name, run in shapes.items():
                figures[f"paid_hops_{name}"] = {hop: summary(waits) for hop, waits in run.hops.items()}
            figures["slots_taken_back"] = first.yielded  # the whole log's, at the last burst
            for name, errors in (
                ("paid_alone", alone.errors.get(PAID, [])),
                ("paid_in_flood", mixed.errors.get(PAID, [])),
                ("free_in_flood", mixed.errors.get(FREE, [])),
                ("paid_in_flood_free_first", first.errors.get(PAID, [])),
                ("free_in_flood_free_first", first.errors.get(FREE, [])),
            ):
                figures[f"eta_error_{name}"] = {
                    "p50": round(percentile(errors, 50), 3),
                    "p90": round(percentile(errors, 90), 3),
                }
            if emulator:
                figures.update(upstream_counts(emulator))
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
