"""The actors on a secured Redis: the ACL user over TLS, from the URL alone."""

from __future__ import annotations

from collections.abc import Callable

import redis

from tests.actors.conftest import Cluster
from tests.helpers import eventually
from tests.secure_valkey import ADMIN_PASSWORD, SecureValkey


def test_a_burst_ends_on_a_tls_acl_redis(
    make_cluster: Callable[..., Cluster], secure_store: SecureValkey
) -> None:
    """Queue, key pool and workers dispatch, grant, snapshot and finish 12 tasks as the ACL user over TLS."""
    cluster = make_cluster(redis_url=secure_store.tls_url, snapshot_every=5)
    ids = cluster.submit(12)
    eventually(lambda: cluster.succeeded() == 12, timeout=60, what="12 tasks succeeded")
    with redis.Redis(port=secure_store.port, password=ADMIN_PASSWORD, decode_responses=True) as admin:
        prefix = f"genqueue:{cluster.config.redis.namespace}:"
        assert admin.llen(prefix + "snapshots:queue") >= 1
        assert all(admin.hget(prefix + f"task:{t}", "status") == "succeeded" for t in ids)
