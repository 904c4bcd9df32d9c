"""genqueue_client's retries: the pure policy, and the request loop over httpx.MockTransport (a
fake network, not a fake store): what is retried, with which key, and when it gives up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest
from genqueue_client import AsyncClient, Client, Retries
from genqueue_client import errors as client_errors
from hypothesis import given, settings
from hypothesis import strategies as st

PNG = b"\x89PNG\r\n\x1a\nnot really"
ACCEPTED = {"task_id": "t1", "status": "queued", "position": 0, "eta_seconds": 1.0}
# Quick waits: the loop under test sleeps for real, a few milliseconds at most.
QUICK = Retries(attempts=5, total_seconds=5.0, base_seconds=0.001, cap_seconds=0.004)

Handler = Callable[[httpx.Request], httpx.Response]


def scripted(*answers: int | type[httpx.TransportError], seen: list[httpx.Request]) -> Handler:
    """A server that answers each request with the next status (202: the task) or raises the next
    httpx exception, and records what it was sent."""
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0)
        if isinstance(answer, type):
            raise answer("dropped", request=request)
        if answer == 202:
            return httpx.Response(202, json=ACCEPTED)
        problem = {"type": "/problems/x", "title": "T", "status": answer, "detail": "d", "retry_after": 0}
        return httpx.Response(answer, json=problem, headers={"Retry-After": "0"})

    return handle


def submit_sync(handler: Handler, retries: int | Retries = QUICK, key: str | None = None) -> str:
    with Client("http://genqueue.test", "tok", retries=retries, transport=httpx.MockTransport(handler)) as c:
        return c.submit("photography", {"person": PNG}, "p", idempotency_key=key).id


def submit_async(handler: Handler, retries: int | Retries = QUICK, key: str | None = None) -> str:
    async def main() -> str:
        transport = httpx.MockTransport(handler)
        async with AsyncClient("http://genqueue.test", "tok", retries=retries, transport=transport) as c:
            return (await c.submit("photography", {"person": PNG}, "p", idempotency_key=key)).id

    return asyncio.run(main())


SUBMITS = [submit_sync, submit_async]


@pytest.mark.parametrize("submit", SUBMITS, ids=["sync", "async"])
def test_a_submit_is_retried_with_one_key_through_drops_and_503s(submit: Callable[..., str]) -> None:
    """A dropped connection, a 503 and a 429 are retried; every try carries the same fresh key."""
    seen: list[httpx.Request] = []
    answers = (httpx.RemoteProtocolError, 503, httpx.ConnectError, 429, 202)
    assert submit(scripted(*answers, seen=seen)) == "t1"
    keys = {r.headers["Idempotency-Key"] for r in seen}
    assert len(seen) == 5 and len(keys) == 1
    (key,) = keys
    assert len(key) == 32 and int(key, 16) >= 0  # a uuid4, hex
    bodies = {r.content for r in seen}
    assert len(bodies) == 1  # the same request each time
    body = json.loads(bodies.pop())
    assert body["images"]["person"] == "iVBORw0KGgpub3QgcmVhbGx5"  # base64 of PNG
    assert all(r.headers["Authorization"] == "Bearer tok" for r in seen)


@pytest.mark.parametrize("submit", SUBMITS, ids=["sync", "async"])
def test_each_submit_gets_its_own_key_unless_one_is_given(submit: Callable[..., str]) -> None:
    """Two submits send two keys; a caller's key is sent as given."""
    seen: list[httpx.Request] = []
    handler = scripted(202, 202, 202, seen=seen)
    submit(handler)
    submit(handler)
    submit(handler, key="order-123")
    keys = [r.headers["Idempotency-Key"] for r in seen]
    assert keys[0] != keys[1] and keys[2] == "order-123"


@pytest.mark.parametrize("submit", SUBMITS, ids=["sync", "async"])
@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 409, 413, 422, 500])
def test_an_answer_that_is_not_transient_is_raised_at_once(submit: Callable[..., str], status: int) -> None:
    """A 4xx other than 429, and a 500, are tried once and raised as their error."""
    seen: list[httpx.Request] = []
    with pytest.raises(client_errors.GenqueueError) as raised:
        submit(scripted(status, 202, seen=seen))
    assert raised.value.status == status and len(seen) == 1


@pytest.mark.parametrize("submit", SUBMITS, ids=["sync", "async"])
def test_attempts_run_out(submit: Callable[..., str]) -> None:
    """With 3 attempts, three 503s raise the last as Unavailable; retries=0 tries once."""
    seen: list[httpx.Request] = []
    three = Retries(attempts=3, base_seconds=0.001, cap_seconds=0.001)
    with pytest.raises(client_errors.Unavailable):
        submit(scripted(503, 503, 503, 202, seen=seen), retries=three)
    assert len(seen) == 3
    seen.clear()
    with pytest.raises(client_errors.ConnectionFailed) as raised:
        submit(scripted(httpx.ConnectError, 202, seen=seen), retries=0)
    assert len(seen) == 1 and isinstance(raised.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize("submit", SUBMITS, ids=["sync", "async"])
def test_a_retry_after_past_the_time_budget_is_raised_with_it(submit: Callable[..., str]) -> None:
    """A 429 asking for longer than the budget left is raised at once, carrying its Retry-After."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"title": "Too many requests", "status": 429, "detail": "full", "retry_after": 120}
        return httpx.Response(429, json=body, headers={"Retry-After": "120"})

    with pytest.raises(client_errors.RateLimited) as raised:
        submit(handler, retries=Retries(attempts=5, total_seconds=60))
    assert raised.value.retry_after == 120 and len(seen) == 1


class TestPolicy:
    """The pure rule: which errors, how long, until when."""

    policy = Retries(attempts=4, total_seconds=30, base_seconds=0.5, cap_seconds=4, jitter=0.1)
    dropped = client_errors.ConnectionFailed("no answer")

    def test_only_transient_errors_are_retried(self) -> None:
        """No answer, 429 and 503 are retried; other answers are not."""
        e = client_errors
        transient: list[e.GenqueueError] = [self.dropped, e.RateLimited("x"), e.Unavailable("x")]
        answers: list[e.GenqueueError] = [e.PaymentRequired("x"), e.Conflict("x"), e.ServerError("x")]
        assert all(self.policy.wait(error, 1, 0.0, 0.5) is not None for error in transient)
        assert all(self.policy.wait(error, 1, 0.0, 0.5) is None for error in answers)

    def test_backoff_doubles_to_its_cap_with_full_jitter(self) -> None:
        """The ceiling is base * 2**(n-1), at most the cap; the random unit scales it."""
        ceilings = [self.policy.wait(self.dropped, n, 0.0, 0.999999) for n in (1, 2, 3)]
        assert ceilings == pytest.approx([0.5, 1.0, 2.0], rel=1e-5)
        assert self.policy.wait(self.dropped, 3, 0.0, 0.0) == 0.0
        assert Retries(attempts=10, cap_seconds=4, base_seconds=0.5).wait(self.dropped, 9, 0, 0.999999) == (
            pytest.approx(4.0, rel=1e-5)
        )

    def test_retry_after_is_waited_whole_plus_a_little(self) -> None:
        """A Retry-After of 3 s is waited 3 to 3.3 s."""
        limited = client_errors.RateLimited("x", status=429, retry_after=3)
        assert self.policy.wait(limited, 1, 0.0, 0.0) == 3.0
        assert self.policy.wait(limited, 1, 0.0, 0.999999) == pytest.approx(3.3, rel=1e-5)

    def test_gives_up_after_attempts_or_past_the_budget(self) -> None:
        """The 4th failure of 4 attempts ends it, and so does a wait that would end past 30 s."""
        assert self.policy.wait(self.dropped, 4, 0.0, 0.5) is None
        assert self.policy.wait(client_errors.Unavailable("x", retry_after=10), 1, 25.0, 0.0) is None
        assert self.policy.wait(client_errors.Unavailable("x", retry_after=10), 1, 20.0, 0.0) == 10.0

    def test_counts_and_bad_policies(self) -> None:
        """`retries=N` is N+1 attempts; negative counts and times are refused."""
        assert Retries.of(0).attempts == 1 and Retries.of(3).attempts == 4
        assert Retries.of(self.policy) is self.policy
        with pytest.raises(ValueError, match="retries"):
            Retries.of(-1)
        with pytest.raises(ValueError, match="attempts"):
            Retries(attempts=0)

    @settings(deadline=None)  # a loaded machine can take over 200 ms for one example
    @given(
        tried=st.integers(min_value=1, max_value=20),
        elapsed=st.floats(min_value=0, max_value=100),
        unit=st.floats(min_value=0, max_value=1, exclude_max=True),
        retry_after=st.one_of(st.none(), st.floats(min_value=0, max_value=100)),
    )
    def test_a_wait_never_passes_the_budget_or_the_cap(
        self, tried: int, elapsed: float, unit: float, retry_after: float | None
    ) -> None:
        """Any wait given ends within the budget; without Retry-After it is at most the cap."""
        wait = self.policy.wait(client_errors.Unavailable("x", retry_after=retry_after), tried, elapsed, unit)
        if wait is not None:
            assert elapsed + wait <= self.policy.total_seconds and tried < self.policy.attempts
            assert wait <= (self.policy.cap_seconds if retry_after is None else retry_after * 1.1)
