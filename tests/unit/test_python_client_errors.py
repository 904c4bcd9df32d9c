"""genqueue_client maps every problem genqueue answers, rendered by the server's own code, to the
error of its status with the problem's fields; a body that is not a problem still maps."""

from __future__ import annotations

import email.utils
import pickle

import httpx
import pytest
from genqueue_client import errors as client_errors
from hypothesis import given, settings
from hypothesis import strategies as st

from serve_app.http import problems as server


def answered(problem: server.ApiProblem, path: str = "/v1/tasks") -> httpx.Response:
    """The response genqueue sends for `problem`, as httpx receives it."""
    rendered = server.respond(problem, path)
    return httpx.Response(
        rendered.status_code,
        headers=list(rendered.headers.items()),
        content=bytes(rendered.body),
        request=httpx.Request("POST", f"http://genqueue.test{path}"),
    )


CASES: list[tuple[server.ApiProblem, type[client_errors.GenqueueError]]] = [
    (server.BadRequest("two keys differ"), client_errors.BadRequest),
    (server.MalformedJson("not JSON"), client_errors.BadRequest),
    (server.Unauthorized("no bearer token"), client_errors.Unauthorized),
    (server.PaymentRequired("balance 1, price 2", balance=1, price=2), client_errors.PaymentRequired),
    (server.Forbidden("a user token"), client_errors.Forbidden),
    (server.NotFound("no task x"), client_errors.NotFound),
    (server.RequestTimeout("too slow"), client_errors.RequestTimeout),
    (server.Conflict("task x is running"), client_errors.Conflict),
    (server.Gone("deleted"), client_errors.Gone),
    (server.TooLarge("over 30 MB"), client_errors.TooLarge),
    (
        server.InvalidRequest("invalid field(s): kind", errors=[{"field": "kind", "message": "bad"}]),
        client_errors.Invalid,
    ),
    (server.TooManyRequests("backlog full", retry_after=7, waiting=100), client_errors.RateLimited),
    (server.Unavailable("intake paused", retry_after=30), client_errors.Unavailable),
    (server.ApiProblem("an unexpected error occurred"), client_errors.ServerError),
]


@pytest.mark.parametrize(("problem", "expected"), CASES, ids=[type(p).__name__ for p, _ in CASES])
def test_each_problem_maps_to_its_error_with_its_fields(
    problem: server.ApiProblem, expected: type[client_errors.GenqueueError]
) -> None:
    """The error's class follows the status, and it carries type, title, detail, errors and raw."""
    error = client_errors.error_for(answered(problem))
    assert type(error) is expected
    assert (error.status, error.title, error.detail) == (problem.status, problem.title, problem.detail)
    assert error.type == problem.type_uri and error.type != "about:blank"
    assert error.errors == (problem.errors or [])
    assert error.raw["instance"] == "/v1/tasks"
    assert str(problem.status) in str(error) and problem.detail in str(error)


def test_payment_required_carries_balance_and_price() -> None:
    """A 402 says what the user has and what the task costs."""
    error = client_errors.error_for(answered(server.PaymentRequired("short", balance=3, price=5)))
    assert isinstance(error, client_errors.PaymentRequired)
    assert (error.balance, error.price) == (3, 5)


def test_retry_after_comes_from_the_body_or_the_header() -> None:
    """A 429 carries `retry_after` in its body; a 503 may carry it only as the Retry-After header."""
    limited = client_errors.error_for(answered(server.TooManyRequests("rate", retry_after=7)))
    down = client_errors.error_for(answered(server.Unavailable("store down", retry_after=4)))
    assert (limited.retry_after, down.retry_after) == (7.0, 4.0)
    assert "retry_after" not in down.raw  # the header alone said it


def test_retry_after_as_an_http_date() -> None:
    """Retry-After may be a date: its distance from now, never negative."""
    now = 1_800_000_000.0
    later = email.utils.formatdate(now + 90, usegmt=True)
    earlier = email.utils.formatdate(now - 90, usegmt=True)
    request = httpx.Request("GET", "http://genqueue.test/")
    assert (
        client_errors.retry_after(httpx.Response(503, headers={"Retry-After": later}, request=request), now)
        == 90
    )
    assert (
        client_errors.retry_after(httpx.Response(503, headers={"Retry-After": earlier}, request=request), now)
        == 0
    )
    assert (
        client_errors.retry_after(httpx.Response(503, headers={"Retry-After": "soon"}, request=request))
        is None
    )


def test_a_body_that_is_not_a_problem_still_maps_by_status() -> None:
    """A proxy's HTML 502 is Unavailable titled by its reason phrase; an unknown 4xx is the base error."""
    request = httpx.Request("GET", "http://genqueue.test/v1/me")
    gateway = client_errors.error_for(httpx.Response(502, text="<html>bad gateway</html>", request=request))
    assert type(gateway) is client_errors.Unavailable
    assert (gateway.status, gateway.title, gateway.raw) == (502, "Bad Gateway", {})
    teapot = client_errors.error_for(httpx.Response(418, json={"title": "Teapot"}, request=request))
    assert type(teapot) is client_errors.GenqueueError and teapot.title == "Teapot"


def test_errors_pickle_whole() -> None:
    """An error crosses processes with every field."""
    error = client_errors.error_for(answered(server.PaymentRequired("short", balance=1, price=2)))
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is client_errors.PaymentRequired
    assert copy._fields() == error._fields() and str(copy) == str(error)


@settings(deadline=None)  # a loaded machine can take over 200 ms for one example
@given(
    status=st.integers(min_value=400, max_value=599),
    body=st.one_of(
        st.none(),
        st.dictionaries(
            st.sampled_from(["type", "title", "detail", "balance", "price", "retry_after", "errors"]),
            st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2)),
        ),
    ),
)
def test_any_error_answer_maps_without_raising_anything_else(
    status: int, body: dict[str, object] | None
) -> None:
    """Whatever an error answer holds, mapping it gives a GenqueueError of its status."""
    request = httpx.Request("GET", "http://genqueue.test/v1/me")
    response = httpx.Response(status, json=body, request=request)
    error = client_errors.error_for(response)
    assert isinstance(error, client_errors.GenqueueError) and error.status == status
    assert error.balance is None or isinstance(error.balance, int)
