"""Run as a script: a two-node local Ray cluster whose worker node is removed mid-burst.

The workers need the `genqueue_worker` resource, which only the second node has. Once a
third of the tasks have succeeded, that node is removed (its workers die mid-call) and a
replacement node with the resource joins, as an autoscaler would bring one. Prints one
JSON line: the audit of the event log.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    """The scenario; exit code 0 when every task ended exactly once."""
    import ray
    from ray.cluster_utils import Cluster

    from actors import factory
    from actors.audit import audit
    from serve_app.runtime import ray_environment, resolve
    from serve_app.valkey import embedded_valkey
    from tests.actors.conftest import Cluster as Genqueue
    from tests.helpers import eventually, make_config

    ray_environment()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker_node = cluster.add_node(num_cpus=1, resources={"genqueue_worker": 4})
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        with embedded_valkey(Path(tempfile.mkdtemp(prefix="genqueue-2node-"))) as url:
            base = make_config(
                url,
                tempfile.mkdtemp(prefix="genqueue-2node-data-"),
                slots=4,
                latency=0.5,
                lease_seconds=4.0,
                pools=(("p1", 60000, 1.0),),
            )
            config = resolve(
                replace(base, queue=replace(base.queue, worker_resources={"genqueue_worker": 1}))
            )
            genqueue = Genqueue(config, factory.start(config))
            nodes = {ray.get(w.node.remote()) for w in genqueue.handles["workers"]}
            ids = genqueue.submit(24)
            eventually(lambda: genqueue.succeeded() >= 8, timeout=60, what="8 succeeded")
            started = time.monotonic()
            cluster.remove_node(worker_node)
            cluster.add_node(num_cpus=1, resources={"genqueue_worker": 4})
            eventually(lambda: genqueue.ended(ids), timeout=180, what="all tasks ended")
            report = audit(genqueue.log())
            factory.stop(config)
    finally:
        ray.shutdown()
        cluster.shutdown()
    head = cluster.head_node.unique_id if cluster.head_node else ""
    print(
        json.dumps(
            {
                "workers_on_head": head in nodes,
                "submitted": report.submitted,
                "ended": report.ended,
                "never_ended": len(report.never_ended),
                "ended_twice": len(report.ended_twice),
                "overlapping": len(report.overlapping),
                "recovered_in_s": round(time.monotonic() - started, 1),
            }
        )
    )
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
