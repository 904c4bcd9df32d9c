"""The log audit's per-route figures: each route's succeeded tasks and their net credits (charged
less refunded), the refunds a cheaper route gives back, and the rules those refunds keep."""

from __future__ import annotations

from actors.audit import AuditReport, audit
from events.catalogue import (
    CreditsCharged,
    CreditsGranted,
    CreditsRefunded,
    Event,
    StoredEvent,
    TaskDispatched,
    TaskFailed,
    TaskSucceeded,
)
from serve_app.cli.ops import AuditResult
from tests.helpers import submitted

PRICE = 2


def stored(events: list[Event]) -> list[StoredEvent]:
    return [StoredEvent(f"{1000 + i}-0", e) for i, e in enumerate(events)]


def charged(task_id: str, price: int = PRICE) -> list[Event]:
    """A task of u1 accepted and charged `price`, and dispatched."""
    return [
        submitted(task_id),
        CreditsCharged(user_id="u1", task_id=task_id, amount=price, at=1.0),
        TaskDispatched(task_id=task_id, attempt=1, worker=0, lease_deadline=99, at=2.0),
    ]


def succeeded(task_id: str, route: str, back: int = 0) -> list[Event]:
    """The task's success on `route` ("": as an event written before routes) and, when `back`,
    its route refund, as the worker's one append writes them."""
    done: list[Event] = [
        TaskSucceeded(
            task_id=task_id, attempt=1, result="r", mime_type="image/png", elapsed=1, route=route, at=3.0
        )
    ]
    if back:
        done.append(CreditsRefunded(user_id="u1", task_id=task_id, amount=back, reason="route", at=3.0))
    return done


def failed(task_id: str, refund: int = PRICE) -> list[Event]:
    return [
        TaskFailed(task_id=task_id, attempt=1, error="upstream said no", at=3.0),
        CreditsRefunded(user_id="u1", task_id=task_id, amount=refund, reason="failed", at=3.0),
    ]


def violations(report: AuditReport) -> list[str]:
    """What `genqueue audit` prints for `report`."""
    return AuditResult(report, events=0).violations


def test_each_route_reports_its_tasks_net_credits_and_route_refunds() -> None:
    """Three on primary (price 2), two on fallback (price 1: 1 back each), one on a route of price
    0 (2 back), one from before routes (the default route), and one failed task refunded in full
    that counts on no route."""
    log: list[Event] = [CreditsGranted(user_id="u1", amount=100, at=0.5)]
    plan = [
        ("p1", "primary", 0),
        ("p2", "primary", 0),
        ("f1", "fallback", 1),
        ("p3", "primary", 0),
        ("f2", "fallback", 1),
        ("z1", "free", 2),
        ("d1", "", 0),
    ]
    for task_id, route, back in plan:
        log += [*charged(task_id), *succeeded(task_id, route, back)]
    log += [*charged("x1"), *failed("x1")]
    report = audit(stored(log))
    assert report.ok and violations(report) == []
    assert report.ended == {"succeeded": 7, "failed": 1}
    assert report.routes == {
        "default": {"tasks": 1, "net_credits": 2, "route_refunds": 0},
        "fallback": {"tasks": 2, "net_credits": 2, "route_refunds": 2},
        "free": {"tasks": 1, "net_credits": 0, "route_refunds": 2},
        "primary": {"tasks": 3, "net_credits": 6, "route_refunds": 0},
    }
    assert report.route_refunded == 4
    # The ledger's totals keep every refund: the failed task's 2 and the routes' 4, in 4 refunds.
    assert report.credits == {"granted": 100, "charged": 16, "refunded": 6} and report.refunds == 4
    # An explicit "default" is the same route as one an older event leaves blank.
    again = audit(stored([*charged("d2"), *succeeded("d2", "default"), *charged("d3"), *succeeded("d3", "")]))
    assert again.routes == {"default": {"tasks": 2, "net_credits": 4, "route_refunds": 0}}


def test_a_log_without_successes_reports_no_route() -> None:
    report = audit(stored([CreditsGranted(user_id="u1", amount=5, at=0.5), *charged("x1"), *failed("x1")]))
    assert report.ok and report.routes == {} and report.route_refunded == 0


def test_route_refunds_that_break_the_rules_are_violations() -> None:
    """A route refund on a task that did not succeed, a second one, one above the charge, and a
    refund with another reason on a succeeded task each fail the audit, naming the task."""
    grant: list[Event] = [CreditsGranted(user_id="u1", amount=100, at=0.5)]
    cases: dict[str, tuple[list[Event], str]] = {
        "on a failure": (
            [
                *charged("a"),
                *failed("a"),
                CreditsRefunded(user_id="u1", task_id="a", amount=1, reason="route", at=4.0),
            ],
            "a: route refund but failed",
        ),
        "twice": (
            [*charged("b"), *succeeded("b", "fallback", 1), *succeeded("b", "fallback", 1)[1:]],
            "b: route refund 2 times",
        ),
        "above the charge": (
            [*charged("c"), *succeeded("c", "fallback", PRICE + 1)],
            f"c: route refund of {PRICE + 1} on a charge of {PRICE}",
        ),
        "another reason": (
            [
                *charged("d"),
                *succeeded("d", "primary"),
                CreditsRefunded(user_id="u1", task_id="d", amount=1, reason="failed", at=4.0),
            ],
            "d: refunded but succeeded",
        ),
    }
    for case, (events, error) in cases.items():
        report = audit(stored(grant + events))
        assert not report.ok, case
        assert report.refund_errors == [error], case
        assert f"credits: {error}" in violations(report), case
    # The second route refund still counts in the route's figures: the net shows what was paid.
    twice = audit(stored(grant + cases["twice"][0]))
    assert twice.routes == {"fallback": {"tasks": 1, "net_credits": 0, "route_refunds": 2}}
