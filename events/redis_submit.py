"""The Redis store's submit: one registered script call per submit, pipelined for a batch.

The script checks the token's submit rate, looks the idempotency key up, reads what admission
needs (the user's net spend of the submit's UTC day among it: `events.daily_spend`), runs
the rules of `events.admission` (translated into Lua by `events.lua`, so the script and the
in-memory store cannot decide differently), takes the task's number in its round (INCR),
runs the commands of `events.submit_plan` with its numbers filled in, and reads the
receipt: all in one atomic step, so no WATCH, no retry, no lock, and a balance never goes
below zero. It is sent by SHA (EVALSHA), its text only when the server lacks it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import NoScriptError

from events.admission import (
    FIRST_ROUND,
    NO_ROUND,
    Admission,
    Refusal,
    capped,
    grant_of,
    over,
    place_round,
    rate_wait,
    refusal_code,
    refusal_of,
    short,
    user_waiting,
)
from events.catalogue import ROUND_SPAN, TaskSubmitted
from events.daily_spend import SPENT, day_key
from events.keys import Keys
from events.lua import lua_expression
from events.ops_models import paused_refusal
from events.redis_commands import ROUND_COUNTER_SECONDS, STREAM_ID
from events.store import QueueCounts, SubmitReceipt
from events.submit_plan import GRANT_ONLY, ORDER, ROUND, SUBMITTED, Command, submit_commands


def lua_function(rule: Callable[..., int]) -> str:
    """`rule` as a local Lua function of the same name and parameters."""
    params = ", ".join(inspect.signature(rule).parameters)
    return f"local function {rule.__name__}({params}) return {lua_expression(rule)} end"


RULES = (rate_wait, place_round, user_waiting, grant_of, over, short, capped, refusal_code)

# KEYS: user hash, waiting set, stats hash, running set, intake switch (`events.ops_models`),
# the user's spend of the submit's UTC day (`events.daily_spend`).
# ARGV: now (ms), rate key ("" for none), rate limit, rate window (ms), rate cost (1: a hit;
# 0: only pass if the hit named by the member passed), rate member, idempotency key ("" for
# none), round counter prefix, ROUND_SPAN, counter TTL, price, default grant, per-user
# waiting bound, queue bound, task id, the commands as one flat JSON array of strings (so no
# number is rounded on the way, and reading it builds one table, not one per command): their
# number, then each as flags, blanks, name, arguments (`flat_rows`), and the daily cap (0: none).
# Replies: {"paused", Retry-After s} | {"rate", wait ms} | {kind, waiting, running, stats,
# ...}: "dup" with the first task's id and digest; "no" with the refusal code, balance,
# grant, waiting, user's waiting, spend of the day and now (ms); "ok" with the task's stream
# id, rank and balance.
SUBMIT_SCRIPT = "\n".join(
    [
        *(lua_function(rule) for rule in RULES),
        f"""
local now = tonumber(ARGV[1])
-- Intake paused: refused before anything is counted, charged or written.
local intake = redis.call('HMGET', KEYS[5], 'paused', 'retry_after')
if intake[1] == '1' then return {{'paused', intake[2] or '0'}} end
local function counts(kind, ...)
  return {{kind, redis.call('ZCARD', KEYS[2]), redis.call('SCARD', KEYS[4]),
          redis.call('HGETALL', KEYS[3]), ...}}
end
if ARGV[2] ~= '' then
  local key, limit, window, cost = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.0f', now - window))
  local used = redis.call('ZCARD', key)
  local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  local oldest = tonumber(head[2] or ARGV[1])
  local wait
  if cost > 0 then
    wait = rate_wait(used, cost, limit, oldest, window, now)
  elseif redis.call('ZSCORE', key, ARGV[6]) then
    wait = 0
  else
    wait = math.max(1, rate_wait(used, 1, limit, oldest, window, now))
  end
  if wait > 0 then return {{'rate', wait}} end
  if cost > 0 then
    redis.call('ZADD', key, ARGV[1], ARGV[6])
    redis.call('PEXPIRE', key, ARGV[4])
  end
end
if ARGV[7] ~= '' then
  local first = redis.call('HMGET', ARGV[7], 'task_id', 'digest')
  if first[1] then return counts('dup', first[1], first[2] or '') end
end
local u = redis.call('HMGET', KEYS[1], 'balance', 'welcomed', 'last_round')
local span = tonumber(ARGV[9])
local head = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local waiting = redis.call('ZCARD', KEYS[2])
local current_round
if head[2] then
  current_round = math.floor(tonumber(head[2]) / span)
else
  current_round = tonumber(redis.call('HGET', KEYS[3], 'dispatched_round') or '{FIRST_ROUND}')
end
local last_round = tonumber(u[3] or '{NO_ROUND}')
local balance = tonumber(u[1] or '0')
local grant = grant_of(tonumber(ARGV[12]), tonumber(u[2] or '0'))
local queued = user_waiting(current_round, last_round)
local spent = tonumber(redis.call('HGET', KEYS[6], '{SPENT}') or '0')
local code = refusal_code(over(waiting, tonumber(ARGV[14])), over(queued, tonumber(ARGV[13])),
                          short(balance + grant, tonumber(ARGV[11])),
                          capped(spent, tonumber(ARGV[11]), tonumber(ARGV[17])))
if code > 0 then return counts('no', code, balance, grant, waiting, queued, spent, ARGV[1]) end
local round = place_round(current_round, last_round)
local counter = ARGV[8] .. round
local n = redis.call('INCR', counter)
redis.call('EXPIRE', counter, ARGV[10])
-- events.catalogue.fair_order
local numbers = {{{ORDER} = string.format('%.0f', round * span + n % span),
                 {ROUND} = string.format('%.0f', round)}}
local id = ''
local last = ''
local A = cjson.decode(ARGV[16])
local i = 2
for _ = 1, tonumber(A[1]) do
  local flags, blanks = A[i], tonumber(A[i + 1])
  local b = i + 2
  local s = b + 3 * blanks
  local first, e = s + 1, s + tonumber(A[s])
  i = e + 1
  if grant > 0 or not string.find(flags, '{GRANT_ONLY}', 1, true) then
    local reply
    if blanks == 0 and not (A[first] == 'RPUSH' and A[first + 2] == '{STREAM_ID}') then
      reply = redis.call(unpack(A, first, e))
    else
      local command = {{unpack(A, first, e)}}
      for k = b, s - 1, 3 do
        local at, pos = tonumber(A[k]) + 2, tonumber(A[k + 2])
        local text = command[at]
        command[at] = string.sub(text, 1, pos) .. numbers[A[k + 1]] .. string.sub(text, pos + 1)
      end
      if command[1] == 'RPUSH' and command[3] == '{STREAM_ID}' then command[3] = last end
      reply = redis.call(unpack(command))
    end
    if A[first] == 'XADD' then last = reply end
    if string.find(flags, '{SUBMITTED}', 1, true) then id = reply end
  end
end
local rank = redis.call('ZRANK', KEYS[2], ARGV[15]) or -1
return counts('ok', id, rank, tonumber(redis.call('HGET', KEYS[1], 'balance') or '0'))
""",
    ]
)


def flat_rows(commands: Sequence[Command]) -> list[str]:
    """The submit's commands as the script reads them: their number, then each one's flags, its
    number of blanks, each blank (argument, kind, position), its length n and n strings (the
    name, then the arguments)."""
    items = [str(len(commands))]
    for command in commands:
        items += (command.flags, str(len(command.blanks)))
        for blank in command.blanks:
            items += map(str, blank.spec())
        items += (str(len(command.args) + 1), command.name, *command.args)
    return items


@dataclass(frozen=True, slots=True)
class Call:
    """One submit's script call: its keys and arguments."""

    keys: list[str]
    args: list[str]


def submit_call(
    keys: Keys, event: TaskSubmitted, admission: Admission, rate_cost: int = 1, rate_member: str = ""
) -> Call:
    """The script call that submits `event` under `admission`.

    The rate's hit is named by `rate_member` (the task's id by default); with `rate_cost` 0
    the call takes no hit of its own and passes exactly when the hit so named did.
    """
    rate = admission.rate
    idem = keys.idempotency(event.user_id, event.idempotency_key) if event.idempotency_key else ""
    args = [
        str(int(event.at * 1000)),
        keys.rate(rate.token) if rate else "",
        str(rate.limit if rate else 0),
        str(rate.window_ms if rate else 0),
        str(rate_cost),
        rate_member or event.task_id,
        idem,
        keys.round_counters,
        str(ROUND_SPAN),
        str(ROUND_COUNTER_SECONDS),
        str(admission.price),
        str(admission.default_grant),
        str(admission.per_user_waiting),
        str(admission.max_waiting),
        event.task_id,
        # Compact, text as UTF-8 rather than escapes, which the script passes on as it is.
        orjson.dumps(flat_rows(submit_commands(event, admission, keys))).decode(),
        str(admission.daily_cap),
    ]
    spend = day_key(keys, event.user_id, event.at)
    return Call([keys.user(event.user_id), keys.waiting, keys.stats, keys.running, keys.intake, spend], args)


def calls(keys: Keys, events: Sequence[TaskSubmitted], admissions: Sequence[Admission]) -> list[Call]:
    """The script calls of a batch: the first submit of each rate takes its hit; the others of
    that rate pass exactly when it did (a batch is one request against its token's rate)."""
    first: dict[str, str] = {}
    out = []
    for event, admission in zip(events, admissions, strict=True):
        token = admission.rate.token if admission.rate else ""
        named = first.setdefault(token, event.task_id)
        cost = 1 if named == event.task_id else 0
        out.append(submit_call(keys, event, admission, cost, named))
    return out


def receipt(reply: list[Any], admission: Admission) -> SubmitReceipt:
    """The receipt a script reply stands for."""
    kind = reply[0]
    if kind == "paused":
        paused = paused_refusal(int(reply[1]), admission.price)
        return SubmitReceipt("", None, QueueCounts(0, 0, {}), refused=paused)
    if kind == "rate":
        limited = Refusal("rate", 0, admission.price, 0, wait_ms=int(reply[1]), rate=admission.rate)
        return SubmitReceipt("", None, QueueCounts(0, 0, {}), refused=limited)
    flat = reply[3]
    stats = {str(flat[i]): float(flat[i + 1]) for i in range(0, len(flat), 2)}
    counts = QueueCounts(int(reply[1]), int(reply[2]), stats)
    rest = reply[4:]
    if kind == "dup":
        return SubmitReceipt("", None, counts, str(rest[0]), str(rest[1]))
    if kind == "no":
        code, balance, grant, waiting, queued, spent, now_ms = (int(x) for x in rest)
        refusal = refusal_of(
            code, balance, grant, admission.price, waiting, queued, spent, admission.daily_cap, now_ms / 1000
        )
        return SubmitReceipt("", None, counts, refused=refusal)
    rank = int(rest[1])
    return SubmitReceipt(str(rest[0]), rank if rank >= 0 else None, counts, balance=int(rest[2]))


async def run_calls(conn: Any, script: Any, batch: Sequence[Call]) -> list[list[Any]]:
    """The replies of `batch`, pipelined in one round trip on `conn` (the script's text is sent
    only when the server lacks it; the calls it refused are then made again, in order)."""
    if len(batch) == 1:
        return [await script(keys=batch[0].keys, args=batch[0].args, client=conn)]
    replies: list[Any] = [None] * len(batch)
    todo = list(range(len(batch)))
    for _ in range(2):
        async with conn.pipeline(transaction=False) as pipe:
            for i in todo:
                pipe.evalsha(script.sha, len(batch[i].keys), *batch[i].keys, *batch[i].args)
            answers = await pipe.execute(raise_on_error=False)
        for i, answer in zip(todo, answers, strict=True):
            replies[i] = answer
        missing = [i for i in todo if isinstance(replies[i], NoScriptError)]
        if not missing:
            break
        await conn.script_load(script.script)
        # A call that peeked at a hit its first call could not take (NOSCRIPT) was refused
        # for the rate: it wrote nothing and goes again after it.
        todo = [i for i in todo if i in missing or (missing[0] < i and _refused_for_rate(replies[i]))]
    for answer in replies:
        if isinstance(answer, Exception):
            raise answer
    return replies


def _refused_for_rate(reply: Any) -> bool:
    return isinstance(reply, list) and bool(reply) and reply[0] == "rate"
