"""Every Redis key genqueue uses, in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names of one namespace."""

    namespace: str

    @property
    def prefix(self) -> str:
        """The prefix shared by every key of the namespace."""
        return f"genqueue:{self.namespace}"

    @property
    def events(self) -> str:
        """The event stream: the source of truth."""
        return f"{self.prefix}:events"

    def task(self, task_id: str) -> str:
        """Hash: the task view read model."""
        return f"{self.prefix}:task:{task_id}"

    def task_log(self, task_id: str) -> str:
        """List: the task's events in stream order (its audit trail)."""
        return f"{self.prefix}:task:{task_id}:log"

    def idempotency(self, user_id: str, key: str) -> str:
        """Hash: the task a user's idempotency key names, and the digest of its request.

        Both parts come from the caller and may hold ':', so the user id goes in with its
        length before it: no other (user, key) pair spells the same name.
        """
        return f"{self.prefix}:idempotency:{len(user_id)}:{user_id}:{key}"

    def snapshots(self, actor: str) -> str:
        """List: an actor's newest snapshots, newest first."""
        return f"{self.prefix}:snapshots:{actor}"

    @property
    def waiting(self) -> str:
        """Sorted set: waiting tasks by queue order, for positions."""
        return f"{self.prefix}:waiting"

    def lane_waiting(self, lane: str) -> str:
        """Sorted set: one lane's waiting tasks by queue order, for positions among lanes."""
        return f"{self.prefix}:waiting:lane:{lane}"

    @property
    def running(self) -> str:
        """Set: tasks holding a slot."""
        return f"{self.prefix}:running"

    @property
    def calls(self) -> str:
        """Set: tasks whose current attempt's upstream call is in flight (started, no outcome)."""
        return f"{self.prefix}:calls"

    def histogram(self, name: str) -> str:
        """Hash: a histogram's bucket counts, sum and count."""
        return f"{self.prefix}:hist:{name}"

    @property
    def alerts(self) -> str:
        """Hash: active alerts by name (JSON)."""
        return f"{self.prefix}:alerts"

    @property
    def stats(self) -> str:
        """Hash: counters for the queue overview."""
        return f"{self.prefix}:stats"

    def grants(self, pool: str) -> str:
        """Sorted set: a pool's token grants of its current window, scored by time."""
        return f"{self.prefix}:grants:{pool}"

    def pool(self, name: str) -> str:
        """Hash: a pool's state from its key events (cooldown, parking, disabled keys, learned rate)."""
        return f"{self.prefix}:pool:{name}"

    def user(self, user_id: str) -> str:
        """Hash: a user's balance and ledger totals, and the round of its newest task."""
        return f"{self.prefix}:user:{user_id}"

    def ledger(self, user_id: str) -> str:
        """List: a user's newest ledger entries (JSON), newest first."""
        return f"{self.prefix}:ledger:{user_id}"

    def token(self, digest: str) -> str:
        """Hash: the user and role of the token with this SHA-256 digest."""
        return f"{self.prefix}:token:{digest}"

    @property
    def tokens(self) -> str:
        """Hash: token id -> JSON of its user, role, creation time and digest."""
        return f"{self.prefix}:tokens"

    @property
    def round_counters(self) -> str:
        """Prefix of the per-round counters: `<prefix><round>` is a string counted up by INCR,
        how many tasks were given a place in that round."""
        return f"{self.prefix}:round:"

    def rate(self, token_id: str) -> str:
        """Prefix for a token's submit-rate window."""
        return f"{self.prefix}:rate:{token_id}"

    @property
    def failures(self) -> str:
        """List: the newest failed tasks (JSON: task id, kind, error, time), newest first."""
        return f"{self.prefix}:failures"

    @property
    def tasks(self) -> str:
        """Sorted set: every task id, scored by its submit time (the task list)."""
        return f"{self.prefix}:tasks"

    def user_tasks(self, user_id: str) -> str:
        """Sorted set: a user's task ids, scored by submit time."""
        return f"{self.prefix}:tasks:user:{user_id}"

    def token_tasks(self, token_id: str) -> str:
        """Sorted set: the ids of the tasks a token submitted, scored by submit time."""
        return f"{self.prefix}:tasks:token:{token_id}"

    def status_tasks(self, status: str) -> str:
        """Sorted set: the ids of the tasks whose view holds `status`, scored by when it took it."""
        return f"{self.prefix}:tasks:status:{status}"

    @property
    def intake(self) -> str:
        """Hash: the intake switch (paused, since, reason, by, retry_after)."""
        return f"{self.prefix}:intake"

    @property
    def log(self) -> str:
        """Hash: the log's life: `archived_to` (the last archived stream id), `digest` and `segment`
        of the newest archived segment, `segments` and `archived` (events) so far, and
        `snapshot:<actor>`, the stream id each actor's newest snapshot covers."""
        return f"{self.prefix}:log"
