"""What the Redis store sends besides events: the submit's script, and each read-model write as commands."""

from __future__ import annotations

from typing import Any

from events.admission import FIRST_ROUND, NO_ROUND, place_round
from events.lua import lua_expression
from events.read_ops import Delete, Expire, HDel, HIncr, HSet, LPush, Op, SAdd, SRem, ZAdd, ZRem, ZTrim

# A round's counter lives a day after its last use: by then the queue has moved past it.
ROUND_COUNTER_SECONDS = 24 * 3600

# KEYS: user hash, waiting set, stats hash. ARGV: round counter prefix, ROUND_SPAN, TTL.
# The round rule itself is `events.admission.place_round`, translated into Lua here, so the
# script and the in-memory store cannot place a task differently.
SEEN_SCRIPT = f"""
local u = redis.call('HMGET', KEYS[1], 'balance', 'welcomed', 'last_round')
local head = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local waiting = redis.call('ZCARD', KEYS[2])
local span = tonumber(ARGV[2])
local current_round
if head[2] then
  current_round = math.floor(tonumber(head[2]) / span)
else
  current_round = tonumber(redis.call('HGET', KEYS[3], 'dispatched_round') or '{FIRST_ROUND}')
end
local last_round = tonumber(u[3] or '{NO_ROUND}')
local round = {lua_expression(place_round)}
local counter = ARGV[1] .. round
local n = redis.call('INCR', counter)
redis.call('EXPIRE', counter, tonumber(ARGV[3]))
return {{tonumber(u[1] or '0'), tonumber(u[2] or '0'), last_round, current_round, round, n, waiting}}
"""


def queue_op(pipe: Any, op: Op) -> None:
    """Queue `op` on a redis-py pipeline as the commands that carry it out."""
    match op:
        case HSet():
            pipe.hset(op.key, mapping=op.mapping)
        case HIncr():
            if isinstance(op.amount, int):
                pipe.hincrby(op.key, op.field, op.amount)
            else:
                pipe.hincrbyfloat(op.key, op.field, op.amount)
        case ZAdd():
            pipe.zadd(op.key, {op.member: op.score})
        case ZRem():
            pipe.zrem(op.key, op.member)
        case SAdd():
            pipe.sadd(op.key, op.member)
        case SRem():
            pipe.srem(op.key, op.member)
        case ZTrim():
            pipe.zremrangebyscore(op.key, "-inf", op.max_score)
        case Expire():
            pipe.expire(op.key, op.seconds)
        case HDel():
            pipe.hdel(op.key, op.field)
        case LPush():
            pipe.lpush(op.key, op.value)
            pipe.ltrim(op.key, 0, op.keep - 1)
        case Delete():
            pipe.delete(op.key)
