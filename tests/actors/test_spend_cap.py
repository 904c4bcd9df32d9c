"""A pool's daily spend cap on the running actors: the capped pool serves exactly the calls its
cap pays for, is parked for the rest of the Pacific day with the cap's reason and alert, and the
other pool serves every other task."""

from __future__ import annotations

from collections.abc import Callable

from actors.config import PoolConfig, Secret
from events.catalogue import AlertRaised, AlertResolved, KeyParked, KeyTokenGranted, TaskSucceeded
from events.days import next_pacific_midnight
from tests.actors.conftest import Cluster
from tests.helpers import eventually

TASKS = 12


def test_a_capped_pool_serves_its_calls_then_parks_and_the_other_pool_serves_the_rest(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Pool a: $0.10 an image, at most $0.30 a day: 3 calls. 12 tasks: every one succeeds, 3 on
    a and 9 on b; one key.parked for a until Pacific midnight, 'spend cap: $0.30 of $0.30 today',
    right after a's third grant; spend_cap:a raised once, pool_parked:a never."""
    capped = PoolConfig(
        name="a",
        rpm=600,
        keys=(Secret("offline-a"),),
        window_seconds=1.0,
        price_per_image=0.1,
        max_spend_per_day=0.3,
    )
    # b's window holds 2 calls: a (3 left today, 10 a window) has the most budget left until its
    # cap, whatever the timing, so its 3 calls come first and b serves the other 9.
    other = PoolConfig(name="b", rpm=120, keys=(Secret("offline-b"),), window_seconds=1.0)
    cluster = make_cluster(slots=4, pool_configs=(capped, other))
    cluster.submit(TASKS)
    eventually(lambda: cluster.succeeded() >= TASKS, timeout=30, interval=0.1, what="every task succeeded")
    eventually(
        lambda: any(isinstance(s.event, AlertRaised) for s in cluster.log()), timeout=10, what="the alert"
    )
    log = cluster.log()
    by_pool = [s.event.pool for s in log if isinstance(s.event, TaskSucceeded)]
    assert (by_pool.count("a"), by_pool.count("b")) == (3, TASKS - 3)
    grants = [i for i, s in enumerate(log) if isinstance(s.event, KeyTokenGranted) and s.event.pool == "a"]
    parks = [(i, s.event) for i, s in enumerate(log) if isinstance(s.event, KeyParked)]
    assert len(grants) == 3 and len(parks) == 1
    at, park = parks[0]
    assert at == grants[-1] + 1
    assert (park.pool, park.quota_id, park.reason) == ("a", "spend_cap", "spend cap: $0.30 of $0.30 today")
    assert park.until == next_pacific_midnight(park.at)
    alerts = [s.event.name for s in log if isinstance(s.event, AlertRaised | AlertResolved)]
    assert alerts == ["spend_cap:a"]
