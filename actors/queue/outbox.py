"""The QueueActor's hand-off to its workers: each round's attempts for a worker in one call to
the key pool (`hand_many`), which hands each on to that worker with its token as it is granted;
attempts that took their tokens before their dispatch (`tokens_per_round`) go to the worker in
one `run_many` call.

An attempt that cannot reach a worker (its arguments cannot be serialised, say) is kept as a
`task.attempt_failed` for the queue to append: it fails alone, not the queue's step, and
sending it again would fail the same way.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from actors.messages import AttemptSpec, Token
from actors.queue.state import QueueState
from events.catalogue import TaskAttemptFailed

log = structlog.get_logger("genqueue.queue")


class Outbox:
    """Attempts to send, per worker, with the tokens taken for them before their dispatch."""

    def __init__(self, workers: list[Any], keypool: Any) -> None:
        self._workers = workers
        self._keypool = keypool
        self._specs: dict[int, list[AttemptSpec]] = {}
        # Tokens taken for dispatches (tokens_per_round), by (task id, attempt), until sent.
        self.tokens: dict[tuple[str, int], Token] = {}
        # Attempts that could not be handed to a worker, to be failed by the next step.
        self.unsent: list[TaskAttemptFailed] = []

    def put(self, state: QueueState, task_id: str, attempt: int, worker: int, resent: bool = False) -> None:
        """Queue the attempt for its worker, built from the state (sent by `flush`)."""
        entry = state.tasks.get(task_id)
        if entry is None:
            return
        token = self.tokens.pop((task_id, attempt), Token())
        spec = AttemptSpec(
            task_id=task_id,
            attempt=attempt,
            kind=entry.kind,
            prompt=entry.prompt,
            inputs=entry.inputs,
            options=entry.options,
            resent=resent,
            submitted_at=entry.at,
            order=entry.order,
            dispatched_at=lease.since if (lease := state.running.get(task_id)) else 0.0,
            pool=token.pool,
            key_id=token.key_id,
            not_before=token.not_before,
            deadline=0.0 if entry.started else entry.deadline,
            user_id=entry.user_id,
            price=entry.price,
            lane=entry.lane,
        )
        self._specs.setdefault(worker % len(self._workers), []).append(spec)

    def flush(self) -> None:
        """One call per worker with all its attempts of this round (see the module)."""
        specs, self._specs = self._specs, {}
        for worker, batch in specs.items():
            try:
                self._send(worker, batch)
            except Exception:
                # One attempt cannot be sent: the others go one by one, and that one fails alone.
                for spec in batch:
                    self._send_alone(worker, spec)

    def _send(self, worker: int, batch: list[AttemptSpec]) -> None:
        if asking := [spec for spec in batch if not spec.pool]:
            self._keypool.hand_many.remote(worker, asking)
        if holding := [spec for spec in batch if spec.pool]:
            self._workers[worker].run_many.remote(holding)

    def _send_alone(self, worker: int, spec: AttemptSpec) -> None:
        try:
            self._send(worker, [spec])
        except Exception as exc:
            log.exception("could not hand an attempt to a worker", task_id=spec.task_id, attempt=spec.attempt)
            self.unsent.append(
                TaskAttemptFailed(
                    task_id=spec.task_id,
                    attempt=spec.attempt,
                    error=f"could not hand the attempt to a worker: {type(exc).__name__}",
                    retryable=False,
                    at=time.time(),
                )
            )
