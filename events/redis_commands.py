"""What the Redis store sends beside events: each event's entry and read-model writes as commands."""

from __future__ import annotations

from typing import Any

from events.catalogue import Event
from events.codec import encode
from events.keys import Keys
from events.projection import project
from events.read_ops import Delete, Expire, HDel, HIncr, HSet, LPush, Op, SAdd, SRem, ZAdd, ZRem, ZTrim

# A round's counter lives a day after its last use: by then the queue has moved past it.
ROUND_COUNTER_SECONDS = 24 * 3600


def op_commands(op: Op) -> list[tuple[str, str, list[str]]]:
    """The Redis commands that carry out `op`, as (command, key, arguments), every argument a string
    as redis-py would send it."""
    match op:
        case HSet():
            args = []
            for name, value in op.mapping.items():
                args += [name, str(value)]
            return [("HSET", op.key, args)]
        case HIncr():
            command = "HINCRBY" if isinstance(op.amount, int) else "HINCRBYFLOAT"
            return [(command, op.key, [op.field, str(op.amount)])]
        case ZAdd():
            return [("ZADD", op.key, [str(op.score), op.member])]
        case ZRem():
            return [("ZREM", op.key, [op.member])]
        case SAdd():
            return [("SADD", op.key, [op.member])]
        case SRem():
            return [("SREM", op.key, [op.member])]
        case ZTrim():
            return [("ZREMRANGEBYSCORE", op.key, ["-inf", str(op.max_score)])]
        case Expire():
            return [("EXPIRE", op.key, [str(op.seconds)])]
        case HDel():
            return [("HDEL", op.key, [op.field])]
        case LPush():
            return [("LPUSH", op.key, [op.value]), ("LTRIM", op.key, ["0", str(op.keep - 1)])]
        case Delete():
            return [("DEL", op.key, [])]


def queue_op(pipe: Any, op: Op) -> None:
    """Queue `op` on a redis-py pipeline as the commands that carry it out."""
    for name, key, args in op_commands(op):
        pipe.execute_command(name, key, *args)


# The argument of a task's audit-list push, which the append and submit scripts replace with
# the id of the XADD before it (plain ASCII, so it passes JSON and Lua unchanged).
STREAM_ID = "<stream id>"


def entry_commands(event: Event, keys: Keys) -> list[tuple[str, str, list[str]]]:
    """An event's XADD, its task's audit-list push and its read-model writes, as `op_commands` gives them.

    The audit list holds the stream ids of the task's events, not copies of them: the push's
    argument is `STREAM_ID`, which the scripts replace with the id the XADD before it returned.
    """
    fields = encode(event)
    xadd = ["*"]
    for name, value in fields.items():
        xadd += [name, value]
    commands = [("XADD", keys.events, xadd)]
    if fields["task"]:
        commands.append(("RPUSH", keys.task_log(fields["task"]), [STREAM_ID]))
    for op in project(event, keys):
        commands += op_commands(op)
    return commands
