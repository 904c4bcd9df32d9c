"""Where the plain actor classes become Ray actors: names, namespaces, restart and resource options."""

from __future__ import annotations

import contextlib
from typing import Any

import ray

from actors.config import Config
from actors.janitor.actor import Janitor
from actors.keypool.actor import KeyPool
from actors.queue.actor import Queue
from actors.worker.actor import Worker


def ray_namespace(config: Config) -> str:
    """The Ray namespace of a genqueue namespace: one set of singletons per deployment."""
    return f"genqueue-{config.redis.namespace}"


QUEUE_NAME = "queue"
KEYPOOL_NAME = "keypool"
JANITOR_NAME = "janitor"
# Long enough for a QueueActor to recover a large log from its snapshot; an actor that cannot
# reach the store waits for it, and a start would otherwise wait with it, saying nothing.
START_TIMEOUT_SECONDS = 300.0


def worker_name(index: int) -> str:
    """The name of worker actor `index`."""
    return f"worker-{index}"


def _singleton(cls: type, name: str, config: Config, **options: Any) -> Any:
    """Options of a named, detached actor: found by name if it runs, created if not, so two
    `genqueue up` against one cluster share one of each."""
    return ray.remote(cls).options(
        name=name,
        namespace=ray_namespace(config),
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        max_restarts=-1,
        **options,
    )


def start(config: Config, timeout: float = START_TIMEOUT_SECONDS) -> dict[str, Any]:
    """Find or create the KeyPoolActor, the workers and the QueueActor; returns their handles.
    TimeoutError, naming the actors, when any has not answered within `timeout` seconds."""
    on_head = _placement(config.queue.singleton_resources)
    keypool = _singleton(
        KeyPool, KEYPOOL_NAME, config, max_task_retries=-1, max_concurrency=10_000, **on_head
    ).remote(config)
    placement = _placement(config.queue.worker_resources)
    workers = [
        _singleton(
            Worker, worker_name(i), config, max_concurrency=max(100, 2 * config.queue.slots), **placement
        ).remote(config, i, keypool)
        for i in range(config.queue.workers)
    ]
    queue = _singleton(Queue, QUEUE_NAME, config, max_task_retries=-1, **on_head).remote(
        config, workers, keypool=keypool
    )
    janitor = _singleton(Janitor, JANITOR_NAME, config, **on_head).remote(config)
    answers = {
        "the QueueActor": queue.ping.remote(),
        "the KeyPoolActor": keypool.status.remote(),
        "the janitor": janitor.ping.remote(),
        **{f"worker {i}": w.ping.remote() for i, w in enumerate(workers)},
    }
    _, waiting = ray.wait(list(answers.values()), num_returns=len(answers), timeout=timeout)
    if waiting:
        silent = [name for name, ref in answers.items() if ref in waiting]
        raise TimeoutError(
            f"{', '.join(silent)} did not answer within {timeout:.0f} s: an actor starting waits for "
            "the event store ([redis] url), so check that every Ray node can reach it; the actors' "
            "own logs say more (ray logs)"
        )
    ray.get(list(answers.values()))  # an actor that failed to start raises here
    return {"queue": queue, "keypool": keypool, "janitor": janitor, "workers": workers}


def _placement(resources: dict[str, float]) -> dict[str, Any]:
    """Actor options that need these Ray resources (none: anywhere)."""
    return {"resources": dict(resources)} if resources else {}


def get(config: Config, name: str) -> Any:
    """A handle to a running genqueue actor by name."""
    return ray.get_actor(name, namespace=ray_namespace(config))


def stop(config: Config) -> None:
    """Kill every genqueue actor of this namespace (they are detached, so nothing else will)."""
    names = [QUEUE_NAME, KEYPOOL_NAME, JANITOR_NAME, *[worker_name(i) for i in range(config.queue.workers)]]
    for name in names:
        with contextlib.suppress(ValueError):
            ray.kill(get(config, name), no_restart=True)
