"""Two genqueues started against one Ray cluster share one set of singleton actors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray

from actors import factory
from serve_app.runtime import resolve
from tests.conftest import free_port
from tests.helpers import make_config

ROOT = Path(__file__).resolve().parents[2]

# A second driver process: joins the running cluster and starts genqueue's actors by name.
SECOND_START = """
import json, sys
from dataclasses import replace
import ray
from actors import factory
from serve_app.runtime import resolve
from tests.helpers import make_config
args = json.loads(sys.argv[1])
base = make_config(args["url"], args["data_dir"], workers=2)
config = resolve(replace(base, redis=replace(base.redis, namespace=args["namespace"])))
ray.init(address=args["address"], logging_level="ERROR", log_to_driver=False)
handles = factory.start(config)
print(json.dumps({"queue": handles["queue"]._actor_id.hex(), "keypool": handles["keypool"]._actor_id.hex()}))
"""


def test_a_second_start_on_the_cluster_finds_the_running_singletons(
    ray_session: None, store_url: str, data_dir: str
) -> None:
    """Another driver's factory.start gets the same QueueActor and KeyPoolActor, and no second one exists."""
    config = resolve(make_config(store_url, data_dir, workers=2))
    first = factory.start(config)
    try:
        args = {
            "url": store_url,
            "data_dir": data_dir,
            "namespace": config.redis.namespace,
            "address": ray.get_runtime_context().gcs_address,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        done = subprocess.run(
            [sys.executable, "-c", SECOND_START, json.dumps(args)],
            capture_output=True, text=True, timeout=120, cwd=ROOT, env=env, check=False,
        )  # fmt: skip
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        assert done.returncode == 0 and lines, done.stderr[-3000:]
        second = json.loads(lines[-1])
        assert second == {
            "queue": first["queue"]._actor_id.hex(),
            "keypool": first["keypool"]._actor_id.hex(),
        }
        named = ray.util.list_named_actors(all_namespaces=True)
        mine = [a["name"] for a in named if a["namespace"] == factory.ray_namespace(config)]
        assert sorted(mine) == sorted(["queue", "keypool", "janitor", "worker-0", "worker-1"])
    finally:
        factory.stop(config)


def test_a_start_against_a_store_nobody_answers_says_which_actors_wait(
    ray_session: None, data_dir: str
) -> None:
    """Actors that cannot reach the store wait for it; the start gives up after its timeout with
    a TimeoutError naming them and the setting to check, and shows no password."""
    closed = free_port()  # nothing listens here
    config = resolve(make_config(f"redis://:s3cret-pass@127.0.0.1:{closed}/0", data_dir, workers=1))
    try:
        with pytest.raises(TimeoutError) as raised:
            factory.start(config, timeout=3)
    finally:
        factory.stop(config)
    message = str(raised.value)
    assert "the QueueActor" in message and "[redis] url" in message and "within 3 s" in message
    assert "s3cret" not in message
