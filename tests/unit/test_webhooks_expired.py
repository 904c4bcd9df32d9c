"""An expired task gets its completion webhook like any other ending: the Deliverer starts it on
`task.expired`, and the body is the expired task's view."""

from __future__ import annotations

import random
from dataclasses import replace

from actors.config import parse
from actors.queue.state import PendingWebhook, QueueState, replay
from actors.webhooks.rules import task_body
from actors.webhooks.sender import Deliverer
from events.catalogue import (
    CreditsCharged,
    CreditsRefunded,
    Event,
    StoredEvent,
    TaskExpired,
    TaskSubmitted,
)
from events.projection import fold_task_view
from serve_app.http.models import TaskViewOut
from tests.helpers import submitted

URL = "https://hooks.example.com/done"


class Recording(Deliverer):
    """A Deliverer that notes the webhooks it is asked to start instead of sending them."""

    def __init__(self) -> None:
        super().__init__(parse({}, {}), random.Random(0))
        self.started: list[PendingWebhook] = []

    def start(self, pending: PendingWebhook) -> None:
        self.started.append(pending)


def with_webhook(task_id: str) -> TaskSubmitted:
    return replace(submitted(task_id), webhook_url=URL, token_id="tok1", deadline=5.0)


def expiry(task_id: str) -> list[Event]:
    return [
        TaskExpired(task_id=task_id, attempt=0, deadline=5.0, at=6.0),
        CreditsRefunded(user_id="u1", task_id=task_id, amount=2, reason="expired", at=6.0),
    ]


def test_an_expiry_starts_the_tasks_webhook() -> None:
    """Folded, `task.expired` leaves the webhook pending and `follow` starts it at once."""
    deliverer = Recording()
    try:
        state: QueueState = replay([StoredEvent("1-1", with_webhook("a"))])
        ended = expiry("a")
        state = replay([StoredEvent(f"2-{i}", e) for i, e in enumerate(ended)], state)
        for event in ended:
            deliverer.follow(state, event)
        assert deliverer.started == [PendingWebhook("a", URL, "tok1", 6.0, 0, 6.0)]
    finally:
        deliverer.stop()


def test_the_body_of_an_expired_task_is_its_view_with_the_refund() -> None:
    """Status `expired`, no result, the error in words and the whole price refunded."""
    charged = CreditsCharged(user_id="u1", task_id="a", amount=2, at=1.0)
    view = fold_task_view([with_webhook("a"), charged, *expiry("a")])
    body = task_body("a", view)
    out = TaskViewOut.model_validate(body)
    assert out.status == "expired" and out.result_url is None and out.finished_at == 6.0
    assert out.price == out.refunded == 2 and out.error
