"""Where new submits would land in the waiting set, read before any of them is written.

The submit script (`events.redis_submit`) gives a task its fair place: the current round for a
user with nothing waiting, else the round after the user's newest task, behind every task of
that round and those before it. The same rules (`events.admission.place_round`) read here from
the same keys tell how many waiting tasks would be ahead of each submit of a request, so that
an answer that depends on the place (a deadline its ETA misses) can be given before anything is
charged or written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from events.admission import FIRST_ROUND, NO_ROUND, place_round
from events.catalogue import ROUND_SPAN
from events.errors import StoreUnavailableError
from events.lane_positions import Lanes
from events.lane_reads import waiting_by_lane
from events.redis_store import UNAVAILABLE, RedisEventStore
from events.store import QueueCounts


@dataclass(frozen=True, slots=True)
class Places:
    """What two reads of the queue saw, for submits by (user, idempotency key) in request order.

    `rounds`: the round each user's next task would take; `ahead`: for each round a submit of
    the request may take, the waiting tasks in that round and those before it; `replays`: the
    submits whose idempotency key names a task already (they take no place); `counts`: the
    queue's counters, read with `ahead`. With lanes, `lane_ahead` holds the same counts for each
    (lane, round) in that lane's waiting set alone and `by_lane` each lane's waiting tasks.
    """

    rounds: dict[str, int]
    ahead: dict[int, int]
    replays: frozenset[int]
    counts: QueueCounts
    lane_ahead: dict[tuple[str, int], int] = field(default_factory=dict)
    by_lane: dict[str, int] = field(default_factory=dict)


async def places(
    store: RedisEventStore,
    submits: Sequence[tuple[str, str]],
    lanes: Lanes | None = None,
    submit_lanes: Sequence[str] = (),
) -> Places:
    """The places that submits by (user id, idempotency key or "") would take, in two round
    trips: the first task waiting, the last round dispatched, each user's newest round and each
    key; then the waiting tasks up to each round they may take, with the queue's counters (and
    with `lanes`, the same in the waiting set of each lane of `submit_lanes`, one a submit)."""
    r: Any = store._r  # the store's own client, as `events.eta_reads` reads it
    keys = store.keys
    users = list(dict.fromkeys(user for user, _ in submits))
    keyed = [(i, user, key) for i, (user, key) in enumerate(submits) if key]
    try:
        async with r.pipeline(transaction=True) as pipe:
            pipe.zrange(keys.waiting, 0, 0, withscores=True)
            pipe.hget(keys.stats, "dispatched_round")
            for user in users:
                pipe.hget(keys.user(user), "last_round")
            for _, user, key in keyed:
                pipe.hget(keys.idempotency(user, key), "task_id")
            first: list[Any] = await pipe.execute()
        head, dispatched = first[0], first[1]
        current = int(float(head[0][1])) // ROUND_SPAN if head else int(float(dispatched or FIRST_ROUND))
        newest = first[2 : 2 + len(users)]
        rounds = {
            user: place_round(current, NO_ROUND if last is None else int(float(last)))
            for user, last in zip(users, newest, strict=True)
        }
        replays = frozenset(
            i for (i, _, _), found in zip(keyed, first[2 + len(users) :], strict=True) if found
        )
        # A user's submits take one round each, from its next round on.
        taking = Counter(user for i, (user, _) in enumerate(submits) if i not in replays)
        wanted = sorted({rounds[user] + k for user, n in taking.items() for k in range(n)})
        async with r.pipeline(transaction=True) as pipe:
            for round_ in wanted:
                pipe.zcount(keys.waiting, "-inf", f"({(round_ + 1) * ROUND_SPAN}")
            pairs = [(lane, round_) for lane in dict.fromkeys(submit_lanes) for round_ in wanted]
            if lanes is not None:
                for lane, round_ in pairs:
                    pipe.zcount(keys.lane_waiting(lane), "-inf", f"({(round_ + 1) * ROUND_SPAN}")
                for name in lanes.names:
                    pipe.zcard(keys.lane_waiting(name))
            pipe.zcard(keys.waiting)
            pipe.scard(keys.running)
            pipe.hgetall(keys.stats)
            second: list[Any] = await pipe.execute()
    except UNAVAILABLE as exc:
        raise StoreUnavailableError(str(exc)) from exc
    waiting, running, stats = second[-3:]
    counts = QueueCounts(int(waiting), int(running), {k: float(v) for k, v in stats.items()})
    ahead = {round_: int(n) for round_, n in zip(wanted, second, strict=False)}
    if lanes is None:
        return Places(rounds, ahead, replays, counts)
    found = second[len(wanted) : -3]
    lane_ahead = {pair: int(n) for pair, n in zip(pairs, found, strict=False)}
    by_lane = waiting_by_lane(lanes, [int(n) for n in found[len(pairs) :]], int(waiting))
    return Places(rounds, ahead, replays, counts, lane_ahead, by_lane)
