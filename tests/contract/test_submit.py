"""Submits and batch submits over every store: rate, idempotency, credits, bounds, and what is written."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis

from events.admission import Admission, Rate
from events.catalogue import CreditsGranted, TaskSubmitted, round_of
from events.codec import encode
from events.projection import fold_task_view
from events.redis_store import RedisEventStore
from events.store import EventStore, SubmitReceipt
from tests.contract.test_event_store import run as run  # the fixture: every store
from tests.helpers import submitted

PRICE_3 = Admission(price=3)


def _keyed(user: str, key: str, digest: str = "d") -> TaskSubmitted:
    return replace(submitted(user=user), idempotency_key=key, digest=digest)


def _reasons(receipts: list[SubmitReceipt]) -> list[str]:
    return [r.refused.reason if r.refused else "ok" for r in receipts]


def test_concurrent_submits_and_batches_of_one_user_never_overdraw(run: Any) -> None:
    """Forty concurrent submits and four concurrent batches of ten, each costing 3, against a
    balance of 10 and then 18: exactly 3 and then 6 are accepted, and the balance ends at 0."""

    async def body(store: EventStore) -> None:
        await store.append([CreditsGranted(user_id="ann", amount=10, at=0.0)])
        singles = await asyncio.gather(*(store.submit(submitted(user="ann"), PRICE_3) for _ in range(40)))
        assert _reasons(singles).count("ok") == 3 and set(_reasons(singles)) == {"ok", "credits"}
        assert sorted(r.balance for r in singles if r.balance is not None) == [1, 4, 7]
        await store.append([CreditsGranted(user_id="ann", amount=17, at=0.0)])
        batches = await asyncio.gather(
            *(store.submit_many([submitted(user="ann") for _ in range(10)], [PRICE_3] * 10) for _ in range(4))
        )
        receipts = [r for batch in batches for r in batch]
        assert _reasons(receipts).count("ok") == 6
        refusal = next(r.refused for r in receipts if r.refused)
        assert refusal is not None and (refusal.balance, refusal.price) == (0, 3)
        totals, _ = await store.user("ann")
        assert (totals["balance"], totals["charged"]) == ("0", "27")
        assert sum(1 for s in await store.read() if isinstance(s.event, TaskSubmitted)) == 9

    run(body)


def test_a_repeated_key_returns_the_first_task_and_digest_in_and_across_batches(run: Any) -> None:
    """A key's repeat (single, later in the same batch, or in another batch) names its first task
    and digest and writes nothing; keys of other users and refused submits hold no task."""

    async def body(store: EventStore) -> None:
        first = await store.submit(_keyed("ann", "k1", "d1"))
        assert first.duplicate_of is None and first.id
        a, b = _keyed("ann", "k2", "d2"), _keyed("ann", "k2", "other")
        batch = await store.submit_many(
            [a, b, _keyed("ann", "k1", "d9"), _keyed("bob", "k1")], [Admission()] * 4
        )
        assert batch[0].duplicate_of is None
        assert (batch[1].duplicate_of, batch[1].duplicate_digest) == (a.task_id, "d2")
        ids = [s.event.task_id for s in await store.read() if isinstance(s.event, TaskSubmitted)]
        assert (batch[2].duplicate_of, batch[2].duplicate_digest) == (ids[0], "d1")
        assert batch[3].duplicate_of is None and len(ids) == 3
        again = await store.submit_many([_keyed("ann", "k2", "d2")], [Admission()])
        assert again[0].duplicate_of == a.task_id and again[0].id == ""
        poor = await store.submit(_keyed("cat", "k3"), PRICE_3)
        assert poor.refused is not None and poor.refused.reason == "credits"
        await store.append([CreditsGranted(user_id="cat", amount=3, at=0.0)])
        assert (await store.submit(_keyed("cat", "k3"), PRICE_3)).duplicate_of is None

    run(body)


def test_refusals_name_their_bound_and_write_nothing(run: Any) -> None:
    """A full queue, a user's full share and a short balance are refused in that order, with
    the figures decided on, and leave the stream, balance and round counters as they were."""

    async def body(store: EventStore) -> None:
        await store.append([CreditsGranted(user_id="ann", amount=1, at=0.0)])
        bounds = Admission(price=1, per_user_waiting=2, max_waiting=4)
        receipts = await store.submit_many(
            [submitted(user=u) for u in ("ann", "bob", "bob", "bob", "cat", "dan")], [bounds] * 6
        )
        assert _reasons(receipts) == ["ok", "credits", "credits", "credits", "credits", "credits"]
        await store.append([CreditsGranted(user_id=u, amount=5, at=0.0) for u in ("bob", "cat")])
        before = await store.last_id()
        receipts = await store.submit_many(
            [submitted(user=u) for u in ("bob", "bob", "bob", "cat", "cat", "dan")], [bounds] * 6
        )
        assert _reasons(receipts) == ["ok", "ok", "user_waiting", "ok", "queue_full", "queue_full"]
        user_full, queue_full = receipts[2].refused, receipts[4].refused
        assert user_full is not None and (user_full.waiting, user_full.balance) == (2, 3)
        assert queue_full is not None and queue_full.waiting == 4 and receipts[4].counts.waiting == 4
        assert len(await store.read(before)) == 6  # three tasks and their charges
        assert (await store.user("cat"))[0]["balance"] == "4"
        # A refusal takes no number in its round: five were refused in round 0 before bob's
        # first task, which is still its second.
        orders = [s.event.order for s in await store.read() if isinstance(s.event, TaskSubmitted)]
        assert [(round_of(o), int(o) % 2**20) for o in orders] == [(0, 1), (0, 2), (1, 1), (0, 3)]

    run(body)


def test_the_default_grant_comes_once_and_pays_for_the_first_task(run: Any) -> None:
    """A new user's first submit is granted the default credits and charged; the grant never
    comes again, in the same batch or later."""

    async def body(store: EventStore) -> None:
        welcome = Admission(price=2, default_grant=5)
        receipts = await store.submit_many([submitted(user="new") for _ in range(4)], [welcome] * 4)
        assert _reasons(receipts) == ["ok", "ok", "credits", "credits"]
        assert [r.balance for r in receipts[:2]] == [3, 1]
        types = [s.event.type for s in await store.read()]
        assert types.count("credits.granted") == 1 and types.count("credits.charged") == 2
        totals, ledger = await store.user("new")
        assert (totals["granted"], totals["balance"], totals["welcomed"]) == ("5", "1", "1")
        assert [e["amount"] for e in ledger] == [-2, -2, 5]

    run(body)


def test_a_tokens_rate_is_a_moving_window_and_a_batch_counts_once(run: Any) -> None:
    """Three submits a minute: the fourth is refused with the wait until the oldest leaves the
    window, another token is not; a batch is one hit, all of whose items pass or are refused."""

    async def body(store: EventStore) -> None:
        token = uuid.uuid4().hex[:12]
        limited = Admission(rate=Rate(token, 3, 60_000))
        receipts = [await store.submit(submitted(user="ann"), limited) for _ in range(4)]
        assert _reasons(receipts) == ["ok", "ok", "ok", "rate"]
        refusal = receipts[3].refused
        assert refusal is not None and 0 < refusal.wait_ms <= 60_000 and refusal.rate == limited.rate
        other = Admission(rate=Rate(token + "x", 2, 60_000))
        assert (
            _reasons(await store.submit_many([submitted(user="ann") for _ in range(5)], [other] * 5))
            == ["ok"] * 5
        )
        assert (
            _reasons(await store.submit_many([submitted(user="bob") for _ in range(3)], [other] * 3))
            == ["ok"] * 3
        )
        refused = await store.submit_many([submitted(user="cat") for _ in range(3)], [other] * 3)
        assert _reasons(refused) == ["rate"] * 3
        assert not [s for s in await store.read() if getattr(s.event, "user_id", "") == "cat"]

    run(body)


def test_the_store_writes_what_the_codec_and_the_projection_say(run: Any) -> None:
    """Each stored entry is the codec's encoding of its event, byte for byte, and the task view,
    the user's newest round, the waiting score and the idempotency record follow the events."""

    async def body(store: EventStore) -> None:
        welcome = Admission(price=2, default_grant=5)
        prompt = 'say "order":1.0, 1111111111 and 1165084444327937 \u00e9\u4e2d\U0001f600\x00\\u0041'
        tasks = [replace(_keyed(f"u{i}", f"key{i}"), prompt=prompt) for i in range(3)]
        await store.submit_many(tasks, [welcome] * 3)
        await store.submit(replace(submitted(user="u0"), prompt=prompt), welcome)
        stored = await store.read()
        if isinstance(store, RedisEventStore):
            raw = await store.read_raw()
            assert [(i, fields) for i, fields in raw] == [(s.id, encode(s.event)) for s in stored]
        submits = [s.event for s in stored if isinstance(s.event, TaskSubmitted)]
        assert [e.prompt for e in submits] == [prompt] * 4
        for event in submits:
            task_events = [s.event for s in stored if getattr(s.event, "task_id", "") == event.task_id]
            view = await store.task_view(event.task_id)
            assert view == fold_task_view(task_events)
            totals, _ = await store.user(event.user_id)
            newest = max(round_of(e.order) for e in submits if e.user_id == event.user_id)
            assert totals["last_round"] == str(newest)
            ahead = sum(1 for e in submits if e.order < event.order)
            assert await store.position(event.task_id) == ahead
        receipt = await store.submit(_keyed("u1", "key1"), welcome)
        assert receipt.duplicate_of == tasks[1].task_id and receipt.duplicate_digest == "d"

    run(body)


def _top_level(stats: dict[str, Any]) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def test_a_submit_is_one_round_trip_and_so_is_a_batch(store_url: str) -> None:
    """By the server's INFO commandstats, a submit is one EVALSHA and a batch of 20 twenty
    EVALSHAs, sent in one write; no WATCH, MULTI, EXEC, EVAL or SCRIPT, even after the
    server forgets the script (it is loaded again, once)."""
    sends = 0

    class Counting(aioredis.Connection):
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            nonlocal sends
            sends += 1
            await super().send_packed_command(command, check_health)

    async def main() -> None:
        nonlocal sends
        pool = aioredis.BlockingConnectionPool.from_url(
            store_url, max_connections=1, decode_responses=True, connection_class=Counting
        )
        store = RedisEventStore(aioredis.Redis(connection_pool=pool), f"rt{uuid.uuid4().hex[:8]}")
        admin = aioredis.from_url(store_url)
        bounds = Admission(
            price=1, default_grant=100, per_user_waiting=50, max_waiting=1000, rate=Rate("t", 100, 1000)
        )
        try:
            await store.submit(submitted(user="warm"), bounds)  # the script loaded, the connection open
            before, sends = _top_level(await admin.info("commandstats")), 0
            receipt = await store.submit(_keyed("ann", "k"), bounds)
            middle, single = _top_level(await admin.info("commandstats")), sends
            batch = await store.submit_many([_keyed("bob", f"k{i}") for i in range(20)], [bounds] * 20)
            after, many = _top_level(await admin.info("commandstats")), sends - single
            await admin.script_flush()
            again = await store.submit_many([submitted(user="cat") for _ in range(3)], [bounds] * 3)
            flushed = _top_level(await admin.info("commandstats"))
        finally:
            await store.close()
            await admin.aclose()
        assert receipt.id and all(r.id for r in batch) and all(r.id for r in again)
        assert (single, many) == (1, 1)
        assert middle.get("evalsha", 0) - before.get("evalsha", 0) == 1
        assert after.get("evalsha", 0) - middle.get("evalsha", 0) == 20
        for name in ("watch", "multi", "exec", "eval", "script|load", "script|exists"):
            assert after.get(name, 0) == before.get(name, 0), name
        assert flushed.get("script|load", 0) - after.get("script|load", 0) == 1

    asyncio.run(main())


def test_a_durable_batch_waits_for_the_append_only_file(store_url: str) -> None:
    """With WAITAOF, a batch is confirmed by the server's append-only file on the connection
    that wrote it, and every item is there."""

    async def main() -> list[SubmitReceipt]:
        store = RedisEventStore.from_url(store_url, f"aof{uuid.uuid4().hex[:8]}", waitaof=True)
        try:
            receipts = await store.submit_many([submitted(user=f"u{i}") for i in range(5)], [Admission()] * 5)
            assert [s.id for s in await store.read()] == [r.id for r in receipts]
            return receipts
        finally:
            await store.close()

    assert len(asyncio.run(main())) == 5
