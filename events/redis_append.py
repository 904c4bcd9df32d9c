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
as text per call; its arguments are one JSON array of strings, so no number is rounded on the
way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from events.catalogue import Event
from events.keys import Keys
from events.projection import view_guarded
from events.redis_commands import STREAM_ID, entry_commands
from events.store import Expect

# KEYS: every key the batch touches. ARGV[1]: JSON
#   [[[[key index, status, attempt], ...], [[command, key index, arg, ...], ...]], ...]
# where a command that writes a task's read models is ["?", view key index, command, ...].
# Returns per group the XADD ids in order, or an empty array for a group whose guard failed.
APPEND_SCRIPT = (
    f"local STREAM_ID = '{STREAM_ID}'"
    + """
local groups = cjson.decode(ARGV[1])
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
-- A command {'?', view, name, key, ...} runs only while KEYS[view], a task view, exists
-- (`events.projection.view_guarded`); a view seen once stays (nothing here deletes one).
local alive = {}
local function guarded(c)
  if c[1] ~= '?' then return c end
  if not alive[c[2]] then alive[c[2]] = redis.call('EXISTS', KEYS[c[2]]) == 1 end
  if alive[c[2]] then return {unpack(c, 3)} end
  return nil
end
local out = {}
local last = ''
for i, group in ipairs(groups) do
  local ok = true
  for _, g in ipairs(group[1]) do
    flush(g[1])
    local cur = redis.call('HMGET', KEYS[g[1]], 'status', 'attempts')
    if cur[1] ~= g[2] or tonumber(cur[2] or '-1') ~= tonumber(g[3]) then
      ok = false
      break
    end
  end
  local ids = {}
  if ok then
    for _, row in ipairs(group[2]) do
      local c = guarded(row)
      local name, key = c and c[1], c and c[2]
      if name == 'HINCRBY' or name == 'HINCRBYFLOAT' then
        local fields = pending[key] or {}
        pending[key] = fields
        local sum = fields[c[3]] or {0, false}
        fields[c[3]] = {sum[1] + tonumber(c[4]), sum[2] or name == 'HINCRBYFLOAT'}
      elseif name then
        flush(key)
        if name == 'XADD' then
          last = redis.call('XADD', KEYS[key], unpack(c, 3))
          ids[#ids + 1] = last
        elseif name == 'RPUSH' and c[3] == STREAM_ID then
          redis.call('RPUSH', KEYS[key], last)
        else
          redis.call(name, KEYS[key], unpack(c, 3))
        end
      end
    end
  end
  out[i] = ids
end
for key, _ in pairs(pending) do flush(key) end
return out
"""
)


@dataclass(slots=True)
class Batch:
    """The KEYS and the JSON argument of one call of APPEND_SCRIPT."""

    keys: list[str] = field(default_factory=list)
    groups: list[list[list[list[str | int]]]] = field(default_factory=list)
    _index: dict[str, int] = field(default_factory=dict)

    def key(self, name: str) -> int:
        """The 1-based KEYS index of `name`, added on first use."""
        index = self._index.get(name)
        if index is None:
            self.keys.append(name)
            index = self._index[name] = len(self.keys)
        return index

    def add(self, keys: Keys, events: Sequence[Event], expect: Mapping[str, Expect] | None) -> None:
        """One group: the guards of `expect`, then each event's XADD, audit-list push and read models."""
        guards: list[list[str | int]] = [
            [self.key(keys.task(task_id)), want.status, str(want.attempt)]
            for task_id, want in (expect or {}).items()
        ]
        commands: list[list[str | int]] = []
        for event in events:
            guard = view_guarded(event, keys)
            for name, key, args in entry_commands(event, keys):
                command: list[str | int] = [name, self.key(key), *args]
                if guard is not None and key in guard[1]:
                    command = ["?", self.key(guard[0]), *command]
                commands.append(command)
        self.groups.append([guards, commands])

    def argument(self) -> str:
        """The script's ARGV[1] (text as UTF-8, which the script's JSON reader takes as it is)."""
        return orjson.dumps(self.groups).decode()
