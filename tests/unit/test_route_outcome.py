"""A success names the route whose pool served it, and a route cheaper than the task's charge
gives the difference back in the same append."""

from __future__ import annotations

from actors.config import DEFAULT_ROUTE, Route, parse, route_of
from actors.messages import AttemptSpec
from actors.worker.decide import Generated, NoPool, outcome, settled
from events.catalogue import CreditsRefunded, TaskSucceeded, TaskUpstreamThrottled

SPEC = AttemptSpec(task_id="t1", attempt=1, kind="fitting", prompt="p", inputs={}, user_id="u1", price=5)
NOW = 110.0
DONE = Generated("b", "tasks/t1/result-1.png", "image/png", 100.0)


def test_a_success_on_a_cheaper_route_refunds_the_difference_in_the_same_events() -> None:
    """Charged 5, served on a route of price 2: the success names the route and 3 go back."""
    route = Route("cheap", ("b",), 2, "m")
    event = outcome(SPEC, DONE, NOW, route)
    assert isinstance(event, TaskSucceeded) and event.route == "cheap" and event.pool == "b"
    assert settled(SPEC, event, route) == [
        event,
        CreditsRefunded(user_id="u1", task_id="t1", amount=3, reason="route", at=NOW),
    ]


def test_a_success_at_the_charged_price_or_dearer_refunds_nothing() -> None:
    """A route priced at the charge (or above it) leaves the charge as it is."""
    for price in (5, 6):
        route = Route("r", ("b",), price, "m")
        event = outcome(SPEC, DONE, NOW, route)
        assert settled(SPEC, event, route) == [event]


def test_other_outcomes_and_unknown_routes_append_one_event() -> None:
    """Only a success is settled against its route; without a route, nothing is refunded."""
    route = Route("cheap", ("b",), 0, "m")
    throttled = outcome(SPEC, NoPool("all parked"), NOW, route)
    assert isinstance(throttled, TaskUpstreamThrottled)
    assert settled(SPEC, throttled, route) == [throttled]
    plain = outcome(SPEC, DONE, NOW)
    assert isinstance(plain, TaskSucceeded) and plain.route == ""
    assert settled(SPEC, plain, None) == [plain]


def test_without_routes_a_success_is_on_the_default_route_at_the_kinds_price() -> None:
    """No [[routes]]: the default route's price is the kind's, so a task charged that price
    gets nothing back, as before routes existed."""
    cfg = parse({}, {})
    route = route_of(cfg, "pool-a", "fitting")
    assert route is not None and route.name == DEFAULT_ROUTE
    spec = AttemptSpec(
        task_id="t2", attempt=1, kind="fitting", prompt="", inputs={}, user_id="u", price=cfg.credits.fitting
    )
    event = outcome(spec, DONE, NOW, route)
    assert isinstance(event, TaskSucceeded) and event.route == DEFAULT_ROUTE
    assert settled(spec, event, route) == [event]
