"""Guarded appends in one round trip: a registered script that checks each group's task views and
writes the groups that pass (their events and read models), in order.

Writes to a task's read models other than its submit's run only while its view exists
(`events.projection.view_guarded`): an event for a task whose read models were forgotten
leaves them forgotten.

A group is the events of one decision and the task views it expects unchanged (`Expect`). The
script checks a group's expectations against the writes of the groups before it in the same
call, so a batch behaves exactly as the same appends made one after another, each in its own
MULTI/EXEC, would: the guard of the second sees the first. Counter increments of the groups
that pass are summed per field and written once per field (flushed before any other write to
the same key, so no read sees a partial sum).

The script is sent by SHA (`EVALSHA`, loaded again on NOSCRIPT by redis-py's `Script`), never
as text per call. Its argument is one flat JSON array of strings, each group's guards and
commands counted ahead of them: no number is rounded on the way, and reading it builds one
table, not one per command (Valkey's Lua spends about 0.4 us on each table it decodes, most of
what reading a nested array cost).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from events.catalogue import Event
from events.keys import Keys
from events.ops_models import STATUSES
from events.projection import view_guarded
from events.redis_commands import STREAM_ID, entry_commands
from events.store import Expect

# KEYS: every key the batch touches. ARGV[1]: one JSON array of strings, flat: the number of
#   groups, then per group the number of guards, each as key index, status, attempt, then the
#   number of commands, each as its length n and n strings: command, key index, arguments; a
#   command that writes a task's read models is "?", view key index, command, key index, ....
# Returns per group the XADD ids in order, or an empty array for a group whose guard failed.
APPEND_SCRIPT = (
    f"local STREAM_ID = '{STREAM_ID}'"
    + """
local A = cjson.decode(ARGV[1])
local pending = {}
local function flush(key)
  local fields = pending[key]
  if fields == nil then return end
  pending[key] = nil
  for f, v in pairs(fields) do
    if v[2] then
      redis.call('HINCRBYFLOAT', KEYS[key], f, string.format('%.17g', v[1]))
    else
      redis.call('HINCRBY', KEYS[key], f, string.format('%d', v[1]))
    end
  end
end
-- A command "?", view, ... runs only while KEYS[view], a task view, exists
-- (`events.projection.view_guarded`); a view seen once stays (nothing here deletes one).
local alive = {}
local out = {}
local last = ''
local i = 2
for g = 1, tonumber(A[1]) do
  local ok = true
  for _ = 1, tonumber(A[i]) do
    if ok then
      local key = tonumber(A[i + 1])
      flush(key)
      local cur = redis.call('HMGET', KEYS[key], 'status', 'attempts')
      ok = cur[1] == A[i + 2] and tonumber(cur[2] or '-1') == tonumber(A[i + 3])
    end
    i = i + 3
  end
  i = i + 1
  local ids = {}
  for _ = 1, tonumber(A[i]) do
    local s, e = i + 2, i + 1 + tonumber(A[i + 1])
    i = e
    if ok and A[s] == '?' then
      local view = tonumber(A[s + 1])
      if alive[view] == nil then alive[view] = redis.call('EXISTS', KEYS[view]) == 1 end
      s = alive[view] and s + 2 or nil
    end
    if ok and s then
      local name, key = A[s], tonumber(A[s + 1])
      if name == 'HINCRBY' or name == 'HINCRBYFLOAT' then
        local fields = pending[key] or {}
        pending[key] = fields
        local sum = fields[A[s + 2]] or {0, false}
        fields[A[s + 2]] = {sum[1] + tonumber(A[s + 3]), sum[2] or name == 'HINCRBYFLOAT'}
      else
        flush(key)
        if name == 'XADD' then
          last = redis.call('XADD', KEYS[key], unpack(A, s + 2, e))
          ids[#ids + 1] = last
        elseif name == 'RPUSH' and A[s + 2] == STREAM_ID then
          redis.call('RPUSH', KEYS[key], last)
        else
          redis.call(name, KEYS[key], unpack(A, s + 2, e))
        end
      end
    end
  end
  i = i + 1
  out[g] = ids
end
for key, _ in pairs(pending) do flush(key) end
return out
"""
)


_STATUS_MOVES = frozenset(("ZREM", "ZADD"))


@functools.cache
def _status_lists(keys: Keys) -> frozenset[str]:
    """The keys of the lists of tasks by status."""
    return frozenset(keys.status_tasks(status) for status in STATUSES)


@dataclass(slots=True)
class Batch:
    """The KEYS and the argument of one call of APPEND_SCRIPT."""

    keys: list[str] = field(default_factory=list)
    groups: int = 0
    items: list[str] = field(default_factory=lambda: ["0"])  # the first: the groups, when written
    _index: dict[str, str] = field(default_factory=dict)

    def key(self, name: str) -> str:
        """The 1-based KEYS index of `name`, added on first use, as the script reads it."""
        index = self._index.get(name)
        if index is None:
            self.keys.append(name)
            index = self._index[name] = str(len(self.keys))
        return index

    def add(self, keys: Keys, events: Sequence[Event], expect: Mapping[str, Expect] | None) -> None:
        """One group: the guards of `expect`, then each event's XADD, audit-list push and read models."""
        items = self.items
        self.groups += 1
        items.append(str(len(expect or ())))
        for task_id, want in (expect or {}).items():
            items += (self.key(keys.task(task_id)), want.status, str(want.attempt))
        count = len(items)
        items.append("0")
        commands = 0
        # A task the group's guard holds to a status is in that status's list and no other: its
        # status change leaves that list only, not each of the others (`index_ops`), and the
        # group's next change of it leaves the list the one before put it in.
        held = {task_id: keys.status_tasks(want.status) for task_id, want in (expect or {}).items()}
        for event in events:
            guard = view_guarded(event, keys)
            now_in = held.get(getattr(event, "task_id", ""))
            for name, key, values in entry_commands(event, keys):
                if now_in is not None and name in _STATUS_MOVES and key in _status_lists(keys):
                    if name == "ZADD":
                        held[values[1]] = key
                    elif key != now_in:
                        continue
                if guard is not None and key in guard[1]:
                    items += (str(len(values) + 4), "?", self.key(guard[0]), name, self.key(key))
                else:
                    items += (str(len(values) + 2), name, self.key(key))
                items += values
                commands += 1
        items[count] = str(commands)

    def argument(self) -> str:
        """The script's ARGV[1] (text as UTF-8, which the script's JSON reader takes as it is)."""
        self.items[0] = str(self.groups)
        return orjson.dumps(self.items).decode()
