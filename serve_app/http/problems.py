"""RFC 9457 problem responses: the one place errors become HTTP, each with its problem type.

ApiProblem                 500 internal-error: an unexpected error
├── BadRequest            400 bad-request: the body is not what the API takes
│   └── MalformedJson     400 malformed-json: the body is not JSON
├── Unauthorized          401 unauthorized: no bearer token, or one that is not valid
├── PaymentRequired       402 insufficient-credits: the balance does not cover the price
├── Forbidden             403 forbidden: the token's role may not do this
│   └── LinkRefused       403 invalid-result-link: a result link that is altered or expired
├── NotFound              404 not-found: no such task for this caller
├── RequestTimeout        408 request-timeout: the request body did not arrive in time
├── Conflict              409 conflict: the task is not in a state that allows this
│   └── DeadlineUnreachable 409 deadline-unreachable: the task's ETA already misses its deadline
├── Gone                  410 gone: it was here, and is deleted
├── TooLarge              413 content-too-large: the request body is over the size limit
├── Unprocessable         422 unprocessable-content: well-formed, but the content is unusable
│   └── InvalidRequest    422 invalid-request: a field breaks the schema
├── TooManyRequests       429 too-many-requests: a backlog bound or the submit rate; Retry-After
│   └── DailyCapReached   429 daily-cap: the user's daily spend cap; Retry-After the next UTC midnight
└── Unavailable           503 service-unavailable: a dependency is down; Retry-After

A problem's `type` is `/problems/<slug>`, relative to the server: `problem_docs` serves a page
there saying what it means (no token needed), and `contract` declares each class's body in the
OpenAPI schema.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from events.errors import StoreUnavailableError

PROBLEM = "application/problem+json"
TYPES = "/problems/"


class ApiProblem(Exception):
    """An unexpected error on the server; the base of every problem, each mapped to one response."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    slug: ClassVar[str] = "internal-error"
    type_uri: ClassVar[str] = TYPES + "internal-error"
    # Members the body carries besides RFC 9457's and `errors`: name -> (JSON Schema, always there).
    members: ClassVar[dict[str, tuple[dict[str, Any], bool]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.type_uri = TYPES + cls.slug
        if PROBLEMS.setdefault(cls.slug, cls) is not cls:
            raise TypeError(f"problem slug {cls.slug!r} is taken")

    def __init__(self, detail: str, *, errors: list[dict[str, str]] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.extra = extra
        self.headers: dict[str, str] = {}


# Every problem class by its slug (filled as they are defined).
PROBLEMS: dict[str, type[ApiProblem]] = {ApiProblem.slug: ApiProblem}

_INT: dict[str, Any] = {"type": "integer"}
_RETRY_AFTER = ({**_INT, "description": "Seconds to wait, as in the Retry-After header."}, True)


class BadRequest(ApiProblem):
    """The request body is not what the API takes (two idempotency keys that differ, say)."""

    status, title, slug = 400, "Bad request", "bad-request"


class MalformedJson(BadRequest):
    """The request body is not valid JSON."""

    title, slug = "Malformed JSON", "malformed-json"


class Unauthorized(ApiProblem):
    """No bearer token, or one that is not valid (unknown, revoked, malformed)."""

    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.headers = {"WWW-Authenticate": 'Bearer realm="genqueue"'}


class PaymentRequired(ApiProblem):
    """The user's balance does not cover the task's price; nothing was charged."""

    status, title, slug = 402, "Insufficient credits", "insufficient-credits"
    members: ClassVar[dict[str, tuple[dict[str, Any], bool]]] = {
        "balance": ({**_INT, "description": "The user's credits now."}, True),
        "price": ({**_INT, "description": "What the task costs."}, True),
    }


class Forbidden(ApiProblem):
    """The caller's token may not do this: its role, or the users it acts for."""

    status, title, slug = 403, "Forbidden", "forbidden"


class LinkRefused(Forbidden):
    """A result link whose signature does not match (altered or made up), or whose time is past:
    read the task again for a fresh link."""

    title, slug = "Invalid result link", "invalid-result-link"


class NotFound(ApiProblem):
    """No such resource for this caller (another user's task is not found either)."""

    status, title, slug = 404, "Not found", "not-found"


class RequestTimeout(ApiProblem):
    """The request body did not arrive within the deadline."""

    status, title, slug = 408, "Request timeout", "request-timeout"


class Conflict(ApiProblem):
    """The resource's state does not allow this request (or an idempotency key names another)."""

    status, title, slug = 409, "Conflict", "conflict"


_SECONDS: dict[str, Any] = {"type": "number"}


class DeadlineUnreachable(Conflict):
    """The task would most likely not start by its deadline: the p90 of its ETA at the place it
    would take is later than `deadline_seconds`. Nothing was charged and nothing was written.
    Submit again with a deadline (`deadline_seconds` or `Cancel-After`) of at least
    `min_deadline_seconds`, or later, or with `if_late: "accept"` to queue it anyway (it then
    ends `expired`, refunded, if its call has not started by the deadline). With fallback
    routes, `alternatives` lists the dearer routes that would meet the deadline: submit with
    that `max_price` to let the task take one."""

    title, slug = "Deadline unreachable", "deadline-unreachable"
    members: ClassVar[dict[str, tuple[dict[str, Any], bool]]] = {
        "eta_seconds": (
            {**_SECONDS, "description": "The p50 of the seconds until its call would start."},
            True,
        ),
        "eta_p90_seconds": (
            {**_SECONDS, "description": "The p90 of the same: later than the deadline."},
            True,
        ),
        "deadline_seconds": (
            {**_SECONDS, "description": "The deadline asked for, in seconds from the submit."},
            True,
        ),
        "min_deadline_seconds": (
            {
                **_INT,
                "description": "The shortest deadline the ETA would meet: its p90, rounded up to a second.",
            },
            True,
        ),
        "alternatives": (
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "route": {"type": "string", "description": "The route's name ([[routes]])."},
                        "max_price": {
                            **_INT,
                            "description": "The `max_price` that lets the task take it: its price.",
                        },
                        "eta_p90_seconds": {
                            **_SECONDS,
                            "description": "The p90 of the seconds until its call would start there.",
                        },
                    },
                    "required": ["route", "max_price", "eta_p90_seconds"],
                },
                "description": "With [[routes]]: the routes its price does not cover whose ETA's p90 "
                "meets the deadline, cheapest first (empty: none would). Absent without routes.",
            },
            False,
        ),
    }

    def __init__(
        self,
        detail: str,
        *,
        eta: float,
        eta_p90: float,
        deadline: float,
        alternatives: list[dict[str, Any]] | None = None,
    ) -> None:
        routes = {} if alternatives is None else {"alternatives": alternatives}
        super().__init__(
            detail,
            eta_seconds=eta,
            eta_p90_seconds=eta_p90,
            deadline_seconds=deadline,
            min_deadline_seconds=max(1, math.ceil(eta_p90)),
            **routes,
        )


class Gone(ApiProblem):
    """It existed and is deleted for good: a result past the blob retention."""

    status, title, slug = 410, "Gone", "gone"


class TooLarge(ApiProblem):
    """The request body, or a field or image in it, is over its size limit."""

    status, title, slug = 413, "Content too large", "content-too-large"


class Unprocessable(ApiProblem):
    """The request is well-formed but its content cannot be used (an image that does not decode)."""

    status, title, slug = 422, "Unprocessable content", "unprocessable-content"


class InvalidRequest(Unprocessable):
    """A field, query parameter or path segment breaks the schema; `errors` names each."""

    title, slug = "Invalid request", "invalid-request"


class TooManyRequests(ApiProblem):
    """A bound on the backlog or on the submit rate was reached; retry after `Retry-After`."""

    status, title, slug = 429, "Too many requests", "too-many-requests"
    members: ClassVar[dict[str, tuple[dict[str, Any], bool]]] = {
        "retry_after": _RETRY_AFTER,
        "waiting": ({**_INT, "description": "Tasks waiting: the user's, or the queue's."}, False),
        "streams": ({**_INT, "description": "The task streams a token may hold open."}, False),
    }

    def __init__(self, detail: str, retry_after: int, **extra: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)
        self.headers = {"Retry-After": str(retry_after)}


class DailyCapReached(TooManyRequests):
    """The task's price would take the credits charged to the user today (the UTC calendar day,
    net of the day's refunds) over `[credits] daily_cap`; nothing was charged. Submits pass
    again from the next UTC midnight (`until`, `Retry-After`)."""

    title, slug = "Daily spend cap reached", "daily-cap"
    members: ClassVar[dict[str, tuple[dict[str, Any], bool]]] = {
        "retry_after": ({**_INT, "description": "Seconds until the next UTC midnight."}, True),
        "spent_today": ({**_INT, "description": "Credits charged today (UTC), net of refunds."}, True),
        "daily_cap": ({**_INT, "description": "Credits a user may be charged per UTC day."}, True),
        "price": ({**_INT, "description": "What the task costs."}, True),
        "until": ({"type": "number", "description": "The next UTC midnight (epoch s)."}, True),
        "until_iso": (
            {"type": "string", "format": "date-time", "description": "The same, ISO 8601 in UTC."},
            True,
        ),
    }


class Unavailable(ApiProblem):
    """A dependency (the event store, the queue, every quota pool) is unavailable, or intake is
    paused; try again after `Retry-After`."""

    status, title, slug = 503, "Service unavailable", "service-unavailable"
    members: ClassVar[dict[str, tuple[dict[str, Any], bool]]] = {
        "retry_after": (_RETRY_AFTER[0], False),
        "intake": ({"type": "string", "description": "`paused`: an operator paused submits."}, False),
        "kind": ({"type": "string", "description": "The task kind no pool can serve now."}, False),
        "blocked_reason": ({"type": "string", "description": "Why no pool can serve it."}, False),
        "blocked_until": ({"type": "number", "description": "When a pool is back (epoch s)."}, False),
    }

    def __init__(self, detail: str, retry_after: int = 2) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after)}


def by_status(status: int) -> type[ApiProblem] | None:
    """The most general problem class with this status (the base of its subtree), if any."""
    found = [cls for cls in PROBLEMS.values() if cls.status == status]
    return min(found, key=lambda cls: len(cls.__mro__), default=None)


def type_for(status: int) -> str:
    """The problem type of a status no class was named for: its class's, or `/problems/http-<status>`."""
    cls = by_status(status)
    return cls.type_uri if cls is not None else f"{TYPES}http-{status}"


def problem(
    status: int,
    title: str,
    detail: str,
    instance: str,
    headers: dict[str, str] | None = None,
    *,
    type_uri: str | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem+json response; its `type` is the status's unless given."""
    body = {
        "type": type_uri or type_for(status),
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def respond(exc: ApiProblem, instance: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The response for `exc`, with its own headers and any given."""
    return problem(
        exc.status,
        exc.title,
        exc.detail,
        instance,
        {**exc.headers, **(headers or {})},
        type_uri=exc.type_uri,
        errors=exc.errors,
        **exc.extra,
    )


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    """Register handlers so that every error leaves as problem+json and none as a traceback, and
    declare the problems in the app's OpenAPI schema and serve their pages."""
    from serve_app.http import problem_docs  # it builds on this module's classes

    @app.exception_handler(ApiProblem)
    async def api_problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return respond(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field(tuple(e.get("loc", ()))), "message": str(e.get("msg", ""))} for e in exc.errors()
        ]
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            malformed = MalformedJson("the request body is not valid JSON", errors=errors)
            return respond(malformed, request.url.path)
        names = ", ".join(sorted({e["field"] for e in errors}))
        return respond(InvalidRequest(f"invalid field(s): {names}", errors=errors), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(
            exc.status_code,
            str(exc.detail),
            str(exc.detail),
            request.url.path,
            dict(exc.headers or {}),
        )

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        down = Unavailable("the event store is unreachable; try again shortly")
        down.extra["retry_after"] = 2
        return respond(down, request.url.path)

    for cls in (StoreUnavailableError, RedisConnectionError, RedisTimeoutError):
        app.add_exception_handler(cls, unavailable)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return respond(ApiProblem("an unexpected error occurred"), request.url.path)

    problem_docs.install(app)
