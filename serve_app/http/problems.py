"""RFC 9457 problem responses: the one place errors become HTTP.

ApiProblem                 an HTTP error with a status, a title and a detail
├── BadRequest            400: the body is not what the API takes
├── Unauthorized          401: no bearer token, or one that is not valid
├── PaymentRequired       402: the balance does not cover the price
├── Forbidden             403: the token's role may not do this
├── NotFound              404: no such task for this caller
├── RequestTimeout        408: the request body did not arrive in time
├── Conflict              409: the task is not in a state that allows this
├── TooLarge              413: the request body is over the size limit
├── Unprocessable         422: well-formed, but the content is unusable
├── TooManyRequests       429: a backlog bound or the submit rate; comes with Retry-After
└── Unavailable           503: a dependency is down; comes with Retry-After
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from events.errors import StoreUnavailableError

PROBLEM = "application/problem+json"


class ApiProblem(Exception):
    """An error that maps to one problem response."""

    status = 500
    title = "Internal error"

    def __init__(self, detail: str, *, errors: list[dict[str, str]] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.extra = extra
        self.headers: dict[str, str] = {}


class BadRequest(ApiProblem):
    """The request body is not what the API takes."""

    status, title = 400, "Bad request"


class Unauthorized(ApiProblem):
    """No bearer token, or one that is not valid."""

    status, title = 401, "Unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.headers = {"WWW-Authenticate": 'Bearer realm="genqueue"'}


class PaymentRequired(ApiProblem):
    """The user's balance does not cover the task's price."""

    status, title = 402, "Insufficient credits"


class Forbidden(ApiProblem):
    """The caller's role may not do this."""

    status, title = 403, "Forbidden"


class TooLarge(ApiProblem):
    """The request body is over the size limit."""

    status, title = 413, "Content too large"


class TooManyRequests(ApiProblem):
    """A bound on the backlog or on the submit rate was reached; retry after `Retry-After`."""

    status, title = 429, "Too many requests"

    def __init__(self, detail: str, retry_after: int, **extra: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)
        self.headers = {"Retry-After": str(retry_after)}


class NotFound(ApiProblem):
    """No such resource for this caller."""

    status, title = 404, "Not found"


class RequestTimeout(ApiProblem):
    """The request body did not arrive within the deadline."""

    status, title = 408, "Request timeout"


class Conflict(ApiProblem):
    """The resource's state does not allow this request."""

    status, title = 409, "Conflict"


class Unprocessable(ApiProblem):
    """The request is well-formed but its content cannot be used."""

    status, title = 422, "Unprocessable content"


class Unavailable(ApiProblem):
    """A dependency (the event store) is unreachable; try again later."""

    status, title = 503, "Service unavailable"

    def __init__(self, detail: str, retry_after: int = 2) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after)}


def problem(
    status: int,
    title: str,
    detail: str,
    instance: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem+json response."""
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    """Register handlers so that every error leaves as problem+json and none as a traceback."""

    @app.exception_handler(ApiProblem)
    async def api_problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return problem(
            exc.status,
            exc.title,
            exc.detail,
            request.url.path,
            exc.headers,
            errors=exc.errors,
            **exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field(tuple(e.get("loc", ()))), "message": str(e.get("msg", ""))} for e in exc.errors()
        ]
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return problem(
                400,
                "Malformed JSON",
                "the request body is not valid JSON",
                request.url.path,
                errors=errors,
            )
        names = ", ".join(sorted({e["field"] for e in errors}))
        return problem(422, "Invalid request", f"invalid field(s): {names}", request.url.path, errors=errors)

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
        return problem(
            503,
            "Service unavailable",
            "the event store is unreachable; try again shortly",
            request.url.path,
            {"Retry-After": "2"},
        )

    for cls in (StoreUnavailableError, RedisConnectionError, RedisTimeoutError):
        app.add_exception_handler(cls, unavailable)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return problem(500, "Internal error", "an unexpected error occurred", request.url.path)
