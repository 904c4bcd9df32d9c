"""A completion webhook being retried when the QueueActor crashes is resumed by its restart."""

from __future__ import annotations

import time
from dataclasses import replace

import ray

from actors import factory
from actors.audit import audit
from actors.blobs import task_blob
from actors.config import Secret, WebhooksConfig
from actors.providers.images import sample_selfie
from actors.webhooks.rules import signing_secret, webhook_id
from events.catalogue import TaskSubmitted
from serve_app.runtime import resolve
from tests.actors.conftest import Cluster
from tests.helpers import append_to, eventually, make_config
from tests.webhook_receiver import Receiver

SECRET = Secret("restart test secret")


def test_a_pending_webhook_survives_a_queue_actor_restart(
    ray_session: None, store_url: str, data_dir: str
) -> None:
    """The receiver is down; after two failed attempts the QueueActor snapshots and crashes. The
    restarted actor finds the pending webhook in its snapshot, goes on retrying it with the same
    webhook id and, once the receiver is back, records it delivered exactly once."""
    hooks = WebhooksConfig(
        secret=SECRET, backoff_base=0.2, backoff_cap=0.4, max_seconds=120.0, allow_networks=("127.0.0.0/8",)
    )
    config = resolve(replace(make_config(store_url, data_dir), webhooks=hooks))
    with Receiver(down={"/hook"}) as receiver:
        receiver.secrets.append(signing_secret(SECRET, "tok-restart"))
        cluster = Cluster(config, factory.start(config))
        try:
            cluster.blobs.put(task_blob("x", "person.png"), sample_selfie(1))
            task = TaskSubmitted(
                task_id="b" * 32,
                user_id="u",
                kind="photography",
                prompt="p",
                inputs={"person": task_blob("x", "person.png")},
                webhook_url=receiver.url("/hook"),
                token_id="tok-restart",
                at=time.time(),
            )
            append_to(config, [task])

            def attempts() -> list[int]:
                return [s.event.attempt for s in cluster.log() if s.event.type == "webhook.attempted"]

            eventually(lambda: len(attempts()) >= 2, timeout=60, what="two failed attempts")
            queue = cluster.handles["queue"]
            ray.get(queue.take_snapshot.remote(), timeout=60)
            cluster.crash(queue)
            assert ray.get(queue.status.remote(), timeout=30)["recovery"]["snapshot"] != "0-0"
            before = len(attempts())
            eventually(lambda: len(attempts()) > before, timeout=60, what="an attempt by the restarted actor")
            receiver.down.clear()
            eventually(
                lambda: any(s.event.type == "webhook.delivered" for s in cluster.log()),
                timeout=60,
                what="webhook.delivered",
            )
            eventually(
                lambda: ray.get(queue.status.remote())["webhooks_pending"] == 0, what="nothing pending"
            )
        finally:
            factory.stop(config)
    report = audit(cluster.log())
    assert report.ok and report.webhooks == {"delivered": 1}
    numbers = attempts()
    assert numbers == sorted(numbers) and numbers[0] == 1
    hits = receiver.snapshot()
    assert {h.webhook_id for h in hits} == {webhook_id(task.task_id)}
    assert all(h.verified for h in hits) and hits[-1].answered == 200
    assert [h.answered for h in hits].count(200) == 1
