"""The client's error tree: every failure it reports, each carrying the problem genqueue answered.

GenqueueError            any failure; `status` 0 when no answer came
├── ConnectionFailed     no answer: the connection failed, broke or timed out (after any retries)
├── BadRequest           400: the body is not what the API takes
├── Unauthorized         401: no token, or one that is not valid
├── PaymentRequired      402: the balance does not cover the price (`balance`, `price`)
├── Forbidden            403: the token's role may not do this
├── NotFound             404: no such task for this caller
├── RequestTimeout       408: the request body did not arrive in time
├── Conflict             409: the task's state does not allow it, or the idempotency key names another
│   └── DeadlineUnreachable 409: the ETA already misses the deadline (`min_deadline_seconds`)
├── Gone                 410: it was here, and is deleted
├── TooLarge             413: the body, or an image in it, is over a size limit
├── Invalid              422: a field breaks the schema or an image is unusable (`errors` names each)
├── RateLimited          429: a backlog bound or the submit rate (`retry_after`)
├── Unavailable          503 (and 502, 504): a dependency is down or intake is paused (`retry_after`)
└── ServerError          any other 5xx

Problems are RFC 9457 bodies (`type`, `title`, `status`, `detail`) with genqueue's extensions;
`raw` holds the whole body, so a member this client does not name is still there.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

import httpx


class GenqueueError(Exception):
    """A request to genqueue failed; the fields are those of the problem it answered."""

    def __init__(
        self,
        detail: str,
        *,
        status: int = 0,
        type: str = "about:blank",  # RFC 9457 names the member so
        title: str = "",
        balance: int | None = None,
        price: int | None = None,
        retry_after: float | None = None,
        errors: list[dict[str, str]] | None = None,
        raw: Mapping[str, Any] | None = None,
        eta_seconds: float | None = None,
        eta_p90_seconds: float | None = None,
        deadline_seconds: float | None = None,
        min_deadline_seconds: int | None = None,
        alternatives: list[dict[str, Any]] | None = None,
    ) -> None:
        head = " ".join(str(part) for part in (status or "", title) if part)
        super().__init__(f"{head}: {detail}" if head else detail)
        self.status, self.type, self.title, self.detail = status, type, title, detail
        self.balance, self.price, self.retry_after = balance, price, retry_after
        # A deadline the ETA misses (409 deadline-unreachable): the ETA's p50 and p90, the
        # deadline asked for and the shortest one that would be met, in seconds.
        self.eta_seconds, self.eta_p90_seconds = eta_seconds, eta_p90_seconds
        self.deadline_seconds, self.min_deadline_seconds = deadline_seconds, min_deadline_seconds
        # With fallback routes: those whose ETA p90 would meet it, each {route, max_price,
        # eta_p90_seconds} (a submit with that max_price may take it).
        self.alternatives = alternatives
        self.errors = errors or []
        self.raw: dict[str, Any] = dict(raw or {})

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword fields: the default pickling would call the class with `args` alone.
        return (_rebuild, (type(self), self.detail, self._fields()))

    def _fields(self) -> dict[str, Any]:
        names: tuple[str, ...] = ("status", "type", "title", "balance", "price", "retry_after", "errors")
        names += ("raw", *DEADLINE_FIELDS)
        return {name: getattr(self, name) for name in names}


def _rebuild(cls: type[GenqueueError], detail: str, fields: dict[str, Any]) -> GenqueueError:
    return cls(detail, **fields)


class ConnectionFailed(GenqueueError):
    """No answer came: the connection could not be made, broke or timed out (after any retries)."""


class BadRequest(GenqueueError):
    """400: the request body is not what the API takes (malformed JSON, two keys that differ)."""


class Unauthorized(GenqueueError):
    """401: no bearer token, or one that is unknown, revoked or malformed."""


class PaymentRequired(GenqueueError):
    """402: the user's balance (`balance`) does not cover the task's price (`price`); nothing charged."""


class Forbidden(GenqueueError):
    """403: the token's role, or the users it acts for, do not allow this."""


class NotFound(GenqueueError):
    """404: no such task for this caller (another user's task is not found either)."""


class RequestTimeout(GenqueueError):
    """408: the request body did not arrive within the server's deadline."""


class Conflict(GenqueueError):
    """409: the task's state does not allow it (a cancel once it holds a slot), or the idempotency
    key was used for a different request."""


class DeadlineUnreachable(Conflict):
    """409 `deadline-unreachable`: the task's ETA (`eta_seconds`, `eta_p90_seconds`) already
    misses its `deadline_seconds`; nothing was charged. `min_deadline_seconds` would be met, or
    (with fallback routes) one of the `alternatives` at its `max_price`, or submit with
    `if_late="accept"`."""


# The problem type that picks a subclass of its status's error.
BY_TYPE: dict[str, type[GenqueueError]] = {"deadline-unreachable": DeadlineUnreachable}
# The members of a deadline-unreachable problem, as the errors carry them.
DEADLINE_FIELDS = (
    "eta_seconds",
    "eta_p90_seconds",
    "deadline_seconds",
    "min_deadline_seconds",
    "alternatives",
)


class Gone(GenqueueError):
    """410: it existed and is deleted for good (a result past the blob retention)."""


class TooLarge(GenqueueError):
    """413: the request body, or a field or image in it, is over its size limit."""


class Invalid(GenqueueError):
    """422: a field breaks the schema or an image cannot be used; `errors` names each field."""


class RateLimited(GenqueueError):
    """429: a backlog bound or the token's submit rate was reached; retry after `retry_after` s."""


class Unavailable(GenqueueError):
    """503 (or a gateway's 502/504): a dependency is down, or intake is paused; retry after
    `retry_after` s when given."""


class ServerError(GenqueueError):
    """Any other 5xx: an unexpected error on the server."""


BY_STATUS: dict[int, type[GenqueueError]] = {
    400: BadRequest,
    401: Unauthorized,
    402: PaymentRequired,
    403: Forbidden,
    404: NotFound,
    408: RequestTimeout,
    409: Conflict,
    410: Gone,
    413: TooLarge,
    422: Invalid,
    429: RateLimited,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def retry_after(response: httpx.Response, now: float | None = None) -> float | None:
    """The seconds a `Retry-After` header asks to wait (delay-seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def error_for(response: httpx.Response) -> GenqueueError:
    """The error for a response that is not a success, from its problem body (or its status line
    when the body is not a problem: a proxy's page, say)."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    problem: dict[str, Any] = body if isinstance(body, dict) else {}
    cls = BY_STATUS.get(status) or (ServerError if status >= 500 else GenqueueError)
    slug = str(problem.get("type") or "").rsplit("/", 1)[-1]
    if slug in BY_TYPE and issubclass(BY_TYPE[slug], cls):
        cls = BY_TYPE[slug]
    header_wait = retry_after(response)
    body_wait = problem.get("retry_after")
    wait = float(body_wait) if isinstance(body_wait, int | float) else header_wait
    errors = problem.get("errors")
    return cls(
        str(problem.get("detail") or response.reason_phrase or f"HTTP {status}"),
        status=status,
        type=str(problem.get("type") or "about:blank"),
        title=str(problem.get("title") or response.reason_phrase or ""),
        balance=_int(problem.get("balance")),
        price=_int(problem.get("price")),
        retry_after=wait,
        errors=[dict(e) for e in errors if isinstance(e, dict)] if isinstance(errors, list) else None,
        raw=problem,
        eta_seconds=_number(problem.get("eta_seconds")),
        eta_p90_seconds=_number(problem.get("eta_p90_seconds")),
        deadline_seconds=_number(problem.get("deadline_seconds")),
        min_deadline_seconds=_int(problem.get("min_deadline_seconds")),
        alternatives=[dict(a) for a in alts if isinstance(a, dict)]
        if isinstance(alts := problem.get("alternatives"), list)
        else None,
    )


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
