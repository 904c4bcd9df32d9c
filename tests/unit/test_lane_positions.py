"""Positions among priority lanes (`events.lane_positions`), held to what the pure queue does."""

from __future__ import annotations

import random

import pytest

from actors.queue.decide import Policy
from events.lane_positions import REST, Lanes, tasks_before
from tests.unit.test_queue_lanes import Queue

WEIGHTS = {"paid": 4.0, "free": 1.0}


def brief(lane: str, rank: int, waiting: dict[str, int], weights: dict[str, float]) -> int:
    """rank + sum over the other lanes M of min(n_M, floor((rank + 1) * w_M / w_L))."""
    return rank + sum(
        min(n, int((rank + 1) * weights.get(m, 1.0) // weights.get(lane, 1.0)))
        for m, n in waiting.items()
        if m != lane
    )


def test_by_weight_alone_it_is_the_weighted_share_of_the_other_lanes() -> None:
    lanes = Lanes.of(WEIGHTS)
    assert lanes is not None
    waiting = {"paid": 10, "free": 100}
    assert tasks_before("paid", 0, waiting, lanes) == 0
    assert tasks_before("paid", 7, waiting, lanes) == 7 + 2
    assert tasks_before("free", 0, waiting, lanes) == 4
    assert tasks_before("free", 5, waiting, lanes) == 5 + 10  # paid has only 10 waiting
    rng = random.Random(7)
    for _ in range(200):
        weights = {"a": rng.choice([0.5, 1.0, 2.0, 3.0]), "b": 1.0, REST: 1.0}
        waiting = {lane: rng.randint(0, 30) for lane in weights}
        lane = rng.choice(list(weights))
        rank = rng.randint(0, max(0, waiting[lane] - 1))
        by_weight = Lanes.of({"a": weights["a"], "b": 1.0})
        assert by_weight is not None
        assert tasks_before(lane, rank, waiting, by_weight) == brief(lane, rank, waiting, weights)


def test_without_other_lanes_waiting_the_position_is_the_rank() -> None:
    lanes = Lanes.of(WEIGHTS, slots=10)
    assert lanes is not None
    assert tasks_before("free", 12, {"free": 40}, lanes) == 12
    assert tasks_before("paid", 3, {"paid": 5, "free": 0}, lanes) == 3


def test_one_slot_is_strict_priority_to_the_heavier_lane() -> None:
    lanes = Lanes.of(WEIGHTS, slots=1)
    assert lanes is not None
    assert tasks_before("free", 0, {"paid": 30, "free": 5}, lanes) == 30
    assert tasks_before("paid", 29, {"paid": 30, "free": 5}, lanes) == 29


def started_before(slots: int, weights: dict[str, float], counts: dict[str, int], seed: int) -> list[int]:
    """Every task of the mix submitted at once in a random order, the first slots filled, then slots
    freed one at a time (the oldest first): for each task still waiting after the first fill, the
    formula's position then less how many of those tasks actually started before it."""
    q = Queue(Policy(slots=slots, lease_seconds=1e9, max_attempts=3, workers=1, weights=weights))
    order = [lane for lane, n in counts.items() for _ in range(n)]
    random.Random(seed).shuffle(order)
    lane_of = {q.submit(lane, 1)[0]: lane for lane in order}
    held = q.dispatch()
    first = {d.task_id for d in held}
    rank, waiting = {}, dict.fromkeys(counts, 0)
    for task_id, lane in lane_of.items():
        if task_id not in first:
            rank[task_id], waiting[lane] = waiting[lane], waiting[lane] + 1
    started: list[str] = []
    while held:
        q.finish(held[:1])
        new = q.dispatch()
        held = held[1:] + new
        started += [d.task_id for d in new]
    actual = {task_id: i for i, task_id in enumerate(started)}
    lanes = Lanes.of(weights, slots)
    assert lanes is not None and set(actual) == set(rank)
    return [tasks_before(lane_of[t], rank[t], waiting, lanes) - actual[t] for t in rank]


@pytest.mark.parametrize("slots", [1, 2, 3, 5, 10, 32])
def test_positions_match_the_queue_within_one_turn_of_the_slots(slots: int) -> None:
    """Against the real dispatch rule, on random mixes of two and three lanes: exact with one slot
    (strict priority); otherwise off by at most the slots (the shares are reached, and a lane
    that runs out hands its slots on, one at a time as they free), and exact for most tasks."""
    rng = random.Random(slots)
    errors: list[int] = []
    for seed in range(25):
        weights = {"paid": float(rng.choice([1, 2, 3, 4, 10])), "free": 1.0}
        if seed % 2:
            weights["mid"] = rng.choice([0.5, 1.0, 2.0, 3.0])
        counts = {lane: rng.randint(0, 40 + 2 * slots) for lane in weights}
        errors += started_before(slots, weights, counts, seed)
    assert errors
    if slots == 1:
        assert set(errors) == {0}
    assert max(abs(e) for e in errors) <= slots
    assert sum(abs(e) <= 2 for e in errors) >= 0.8 * len(errors)


def test_by_weight_alone_the_formula_misses_what_few_slots_do() -> None:
    """Why the slots count: with two slots and weights 4:1 the lanes each hold one slot, so they
    start tasks one for one, not four for one; the shares by slot see it, the weights do not."""
    lanes = Lanes.of(WEIGHTS, slots=2)
    assert lanes is not None
    waiting = {"paid": 40, "free": 40}
    assert tasks_before("free", 9, waiting, lanes) == 9 + 10
    assert brief("free", 9, waiting, WEIGHTS) == 9 + 40
    assert max(abs(e) for e in started_before(2, WEIGHTS, {"paid": 42, "free": 42}, 3)) <= 2
