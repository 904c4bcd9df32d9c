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
        """Hash: the task a user's idempotency key names, and the digest of its request."""
        return f"{self.prefix}:idem:{user_id}:{key}"

    def snapshots(self, actor: str) -> str:
        """List: an actor's newest snapshots, newest first."""
        return f"{self.prefix}:snapshots:{actor}"

    @property
    def waiting(self) -> str:
        """Sorted set: waiting tasks by queue order, for positions."""
        return f"{self.prefix}:waiting"

    @property
    def running(self) -> str:
        """Set: tasks holding a slot."""
        return f"{self.prefix}:running"

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
