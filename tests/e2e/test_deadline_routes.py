"""The 409 `deadline-unreachable` under fallback routes, over HTTP on a real Valkey: the primary
route's pool grants one call a minute, the dearer "premium" route's ten a second. A task whose
deadline the primary misses is refused with the premium route and the `max_price` that opens
it; submitted again with that `max_price`, it is accepted.

The app runs with no actors (nothing is dispatched, so the queue only grows).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import replace

import pytest
from genqueue_client import Client, DeadlineUnreachable

from actors.config import CreditsConfig, PoolConfig, RouteConfig, Secret
from tests.e2e.deadlines_helpers import PNG, Served, served_as_admin, task
from tests.helpers import make_config

PRIMARY, PREMIUM = 1, 3  # the routes' prices


@pytest.fixture(scope="module")
def app(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    pools = (
        PoolConfig(name="slow", rpm=1, keys=(Secret("key-slow-0123456789abcdef"),), window_seconds=60.0),
        PoolConfig(name="fast", rpm=600, keys=(Secret("key-fast-0123456789abcdef"),), window_seconds=1.0),
    )
    base = make_config(
        store_url,
        str(tmp_path_factory.mktemp("deadline-routes")),
        auth=True,
        credits=CreditsConfig(photography=PRIMARY, default_grant=0),
        slots=8,
        latency=1.0,
        pool_configs=pools,
    )
    routes = (
        RouteConfig("primary", ("slow",), price=PRIMARY),
        RouteConfig("premium", ("fast",), price=PREMIUM),
    )
    config = replace(base, routes=routes)
    with served_as_admin(config) as app:
        yield app


def test_a_deadline_the_primary_misses_names_the_route_that_would_meet_it(app: Served) -> None:
    """Three tasks ahead on one call a minute: a 10 s deadline is refused, charging nothing,
    with `alternatives` naming the premium route at max_price 3 and its p90 within the
    deadline, and the detail saying so. With that max_price the same task is accepted and
    charged 3."""
    app.crowd(3)
    (user,) = app.users(1, credits=PREMIUM)
    log = app.log_length()
    problem = app.unreachable(app.client.post("/v1/tasks", json=task(user, deadline_seconds=10)))
    assert problem["eta_p90_seconds"] > 10 and problem["min_deadline_seconds"] > 10
    (premium,) = problem["alternatives"]
    assert premium["route"] == "premium" and premium["max_price"] == PREMIUM
    assert 0 < premium["eta_p90_seconds"] <= 10
    assert (
        f"or allow max_price {PREMIUM} for route premium, about {premium['eta_p90_seconds']:g} s"
        in (problem["detail"])
    )
    assert app.log_length() == log and app.balance(user) == PREMIUM
    token = app.client.headers["Authorization"].removeprefix("Bearer ")
    with Client(str(app.client.base_url), token) as client, pytest.raises(DeadlineUnreachable) as refused:
        client.submit("photography", {"person": base64.b64decode(PNG)}, user_id=user, deadline_seconds=10)
    assert refused.value.alternatives is not None
    assert [a["route"] for a in refused.value.alternatives] == ["premium"]
    answer = app.client.post("/v1/tasks", json=task(user, deadline_seconds=10, max_price=PREMIUM))
    assert answer.status_code == 202, answer.text
    assert answer.json()["balance"] == 0


def test_a_deadline_no_route_meets_has_an_empty_list(app: Served) -> None:
    """A deadline shorter than any call could start in: refused with `alternatives` empty and
    no route named; from a batch under a Cancel-After header, the same refusal as its item."""
    app.crowd(2)
    (user,) = app.users(1, credits=PREMIUM)
    problem = app.unreachable(app.client.post("/v1/tasks", json=task(user, deadline_seconds=0.1)))
    assert problem["alternatives"] == [] and "max_price" not in problem["detail"]
    answer = app.client.post("/v1/tasks/batch", json={"tasks": [task(user)]}, headers={"Cancel-After": "10s"})
    assert answer.status_code == 200, answer.text
    (item,) = answer.json()["results"]
    assert item["status"] == 409 and [a["route"] for a in item["alternatives"]] == ["premium"]
    assert app.balance(user) == PREMIUM
