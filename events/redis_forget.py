"""Forgetting finished tasks: their read models leave Redis once the archive answers for them.

A task's view hash, its audit list and its entries in the task lists (`events.ops_models`)
are deleted only when all of these hold:

- it ended (succeeded, failed or cancelled) at or before `Forgetting.ended_before`;
- every event of it so far is archived: the last stream id of its audit list is at or before
  the log's `archived_to` (a list written before it held ids: it ended before the archived
  point's millisecond);
- with blob retention on, its blobs expired (`blobs_expired_at` in the view) and none is
  left in the blob store (`keep`: a sweep cut short finishes first).

Candidates come from the terminal status lists, which are scored by when a task took its
status: ZRANGEBYSCORE up to the earliest time a task can qualify, a batch at a time, each
batch read in one pipeline and deleted in one MULTI/EXEC. The store's append script leaves a
forgotten task forgotten (`events.projection.view_guarded`).

Nothing else in Redis grows with every task: the waiting, running and in-flight sets lose a
task when it ends, idempotency keys expire after a day, round counters a day after their
round, a token's submit-rate window after its window, a pool's grants after its window, and
the ledgers, the failure list and the snapshot lists keep a fixed number of entries. What
stays grows with users and with days (a pool's calls-per-day counter), not with tasks: a
user's ledger loses, with the user's forgotten tasks, its entries older than `ended_before`
(the archive holds every credit event), so a user keeps little more than the balance hash.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from events.catalogue import TERMINAL, stream_id_key, stream_id_ms
from events.keys import Keys

BATCH = 500

# A user's ledger (newest first) without its entries older than ARGV[1]; deleted when none is left.
_TRIM_LEDGER = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local keep = #items
while keep > 0 do
  local ok, entry = pcall(cjson.decode, items[keep])
  local at = ok and type(entry) == 'table' and tonumber(entry['at'])
  if at and at < tonumber(ARGV[1]) then
    keep = keep - 1
  else
    break
  end
end
if keep == 0 then
  redis.call('DEL', KEYS[1])
elseif keep < #items then
  redis.call('LTRIM', KEYS[1], 0, keep - 1)
end
return #items - keep
"""
# The view's fields the rule reads.
_FIELDS = ("status", "finished_at", "blobs_expired_at", "user_id", "token_id")


@dataclass(frozen=True, slots=True)
class Forgetting:
    """Which finished tasks may be forgotten: ended at or before `ended_before` (epoch s), every
    event archived up to `archived_to` (a stream id), and, with `blobs_expire`, blobs expired
    and not among `keep` (tasks whose blobs are still stored)."""

    ended_before: float
    archived_to: str
    blobs_expire: bool
    keep: Collection[str] = frozenset()

    @property
    def bound(self) -> float:
        """The latest end time a task can have and qualify: the status lists' score bound."""
        return min(self.ended_before, stream_id_ms(self.archived_to) / 1000)

    def allows(self, task_id: str, view: Sequence[str | None], last: str | None) -> bool:
        """Whether the task with these view fields (`_FIELDS`) and last audit entry qualifies."""
        status, finished, expired = view[0], view[1], view[2]
        if status not in TERMINAL or not finished or float(finished) > self.ended_before:
            return False
        if last is None or last.startswith("{"):  # no ids to go by: its end time must be archived
            archived = float(finished) * 1000 < stream_id_ms(self.archived_to)
        else:
            archived = stream_id_key(last) <= stream_id_key(self.archived_to)
        if not archived:
            return False
        return not self.blobs_expire or (bool(expired) and task_id not in self.keep)


async def forget_ended(r: Any, keys: Keys, rule: Forgetting, batch: int = BATCH) -> int:
    """Delete the read models of every task `rule` allows; returns how many tasks were forgotten."""
    if rule.archived_to in ("", "0-0"):
        return 0
    forgotten = 0
    for status in sorted(TERMINAL):
        kept = 0  # candidates left in place: the next page starts after them
        while True:
            ids: list[str] = await r.zrangebyscore(
                keys.status_tasks(status), "-inf", repr(rule.bound), start=kept, num=batch
            )
            if not ids:
                break
            gone = await _forget_batch(r, keys, rule, status, ids)
            forgotten += gone
            kept += len(ids) - gone
            if len(ids) < batch:
                break
    return forgotten


async def trim_ledgers(r: Any, keys: Keys, users: Collection[str], before: float) -> int:
    """Drop the entries older than `before` from each named user's ledger; returns how many went."""
    script = r.register_script(_TRIM_LEDGER)  # EVALSHA, loading the script once
    dropped = 0
    ordered = sorted(users)
    for start in range(0, len(ordered), BATCH):
        async with r.pipeline(transaction=False) as pipe:
            for user_id in ordered[start : start + BATCH]:
                await script(keys=[keys.ledger(user_id)], args=[repr(before)], client=pipe)
            dropped += sum(int(n) for n in await pipe.execute())
    return dropped


async def _forget_batch(r: Any, keys: Keys, rule: Forgetting, status: str, ids: list[str]) -> int:
    """Read the candidates' views and audit-list tails in one round trip; delete those allowed
    in one MULTI/EXEC. Returns how many went (an index entry without a view goes too)."""
    async with r.pipeline(transaction=False) as pipe:
        for task_id in ids:
            pipe.hmget(keys.task(task_id), *_FIELDS)
            pipe.lindex(keys.task_log(task_id), -1)
        replies: list[Any] = await pipe.execute()
    chosen: list[tuple[str, list[str | None]]] = []
    orphans: list[str] = []
    for task_id, view, last in zip(ids, replies[::2], replies[1::2], strict=True):
        if view[0] is None:
            orphans.append(task_id)  # no view to list it with: its index entry alone is left
        elif view[0] == status and rule.allows(task_id, view, last):
            chosen.append((task_id, view))
    if not chosen and not orphans:
        return 0
    every_token: list[str] = []
    if any(not view[4] for _, view in chosen):
        # Views written before they named their token: take them out of every live token's list.
        every_token = list(await r.hkeys(keys.tokens))
    # One command per key, each with all of its members: a MULTI's replies are parsed one by one.
    lists: dict[str, list[str]] = defaultdict(list)
    lists[keys.status_tasks(status)] += orphans
    for task_id, view in chosen:
        lists[keys.tasks].append(task_id)
        lists[keys.status_tasks(status)].append(task_id)
        if view[3]:
            lists[keys.user_tasks(view[3])].append(task_id)
        for token_id in [view[4]] if view[4] else every_token:
            lists[keys.token_tasks(token_id)].append(task_id)
    users = {view[3] for _, view in chosen if view[3]}
    async with r.pipeline(transaction=True) as pipe:
        if chosen:
            pipe.delete(
                *(key for task_id, _ in chosen for key in (keys.task(task_id), keys.task_log(task_id)))
            )
        for key, members in lists.items():
            if members:
                pipe.zrem(key, *members)
        await pipe.execute()
    if users:
        await trim_ledgers(r, keys, users, rule.ended_before)
    return len(chosen) + len(orphans)
