"""Where the plain actor classes become Ray actors: names, namespaces, restart and resource options."""

from __future__ import annotations

import contextlib
from typing import Any

import ray

from actors.config import Config
from actors.keypool import KeyPool
from actors.queue import Queue
from actors.worker import Worker


def ray_namespace(config: Config) -> str:
    """The Ray namespace of a genqueue namespace: one set of singletons per deployment."""
    return f"genqueue-{config.redis.namespace}"


QUEUE_NAME = "queue"
KEYPOOL_NAME = "keypool"


def worker_name(index: int) -> str:
    """The name of worker actor `index`."""
    return f"worker-{index}"


def _singleton(cls: type, name: str, config: Config, **options: Any) -> Any:
    return ray.remote(cls).options(
        name=name,
        namespace=ray_namespace(config),
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        max_restarts=-1,
        **options,
    )


def start(config: Config) -> dict[str, Any]:
    """Find or create the KeyPoolActor, the workers and the QueueActor; returns their handles."""
    keypool = _singleton(KeyPool, KEYPOOL_NAME, config, max_task_retries=-1, max_concurrency=10_000).remote(
        config
    )
    placement = {"resources": dict(config.queue.worker_resources)} if config.queue.worker_resources else {}
    workers = [
        _singleton(
            Worker, worker_name(i), config, max_concurrency=max(100, 2 * config.queue.slots), **placement
        ).remote(config, i, keypool)
        for i in range(config.queue.workers)
    ]
    queue = _singleton(Queue, QUEUE_NAME, config, max_task_retries=-1).remote(config, workers)
    ray.get([queue.ping.remote(), keypool.status.remote(), *[w.ping.remote() for w in workers]])
    return {"queue": queue, "keypool": keypool, "workers": workers}


def get(config: Config, name: str) -> Any:
    """A handle to a running genqueue actor by name."""
    return ray.get_actor(name, namespace=ray_namespace(config))


def stop(config: Config) -> None:
    """Kill every genqueue actor of this namespace (they are detached, so nothing else will)."""
    names = [QUEUE_NAME, KEYPOOL_NAME, *[worker_name(i) for i in range(config.queue.workers)]]
    for name in names:
        with contextlib.suppress(ValueError):
            ray.kill(get(config, name), no_restart=True)
