"""The problem types in the open: each class's body and every operation's error statuses in the
OpenAPI schema, and a page per type at its `type` URI."""

from __future__ import annotations

import html
import http
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from serve_app.http.problems import (
    PROBLEM,
    PROBLEMS,
    TYPES,
    ApiProblem,
    Forbidden,
    InvalidRequest,
    MalformedJson,
    NotFound,
    TooLarge,
    Unauthorized,
    Unavailable,
)

REF = "#/components/schemas/"
FIELD_ERROR = "ProblemFieldError"
Operation = dict[str, Any]


def _takes_input(op: Operation) -> bool:
    return bool(op.get("parameters")) or "requestBody" in op


def _names_resource(op: Operation) -> bool:
    return any(p.get("in") == "path" for p in op.get("parameters", []))


# What an operation may answer besides the problems its route declares, by what it takes:
# (applies, problems). The handlers in `problems.install` and the middleware answer these.
COMMON: tuple[tuple[Callable[[Operation], bool], tuple[type[ApiProblem], ...]], ...] = (
    # any: an unexpected error; the store, or every replica, down
    (lambda op: True, (ApiProblem, Unavailable)),
    # a bearer token: none, or not valid; a role that may not
    (lambda op: bool(op.get("security")), (Unauthorized, Forbidden)),
    # parameters or a body: one that breaks the schema
    (_takes_input, (InvalidRequest,)),
    # a body: not JSON, or over its limit
    (lambda op: "requestBody" in op, (MalformedJson, TooLarge)),
    # a path parameter: nothing there for this caller
    (_names_resource, (NotFound,)),
)


def schema_name(cls: type[ApiProblem]) -> str:
    """The problem's schema in the components: `insufficient-credits` -> `InsufficientCreditsProblem`."""
    return "".join(part.capitalize() for part in cls.slug.split("-")) + "Problem"


def about(cls: type[ApiProblem]) -> str:
    """What the problem means, in one paragraph (its class docstring)."""
    return " ".join(inspect.cleandoc(cls.__doc__ or cls.title).split())


def schema_of(cls: type[ApiProblem]) -> dict[str, Any]:
    """The JSON Schema of the problem's body: RFC 9457's members, `errors`, and its own."""
    properties: dict[str, Any] = {
        "type": {"type": "string", "const": cls.type_uri, "description": "The problem type; its page."},
        "title": {"type": "string", "description": "A short summary of the problem type."},
        "status": {"type": "integer", "const": cls.status},
        "detail": {"type": "string", "description": "What went wrong with this request, in words."},
        "instance": {"type": "string", "description": "The request's path."},
        "errors": {
            "type": "array",
            "items": {"$ref": REF + FIELD_ERROR},
            "description": "The fields at fault, each with its message.",
        },
    }
    properties.update({name: spec for name, (spec, _) in cls.members.items()})
    required = ["type", "title", "status", "detail", *(n for n, (_, always) in cls.members.items() if always)]
    return {
        "title": schema_name(cls),
        "description": about(cls),
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": True,
    }


def components() -> dict[str, Any]:
    """Every problem's schema, by name, and the field error they share."""
    found: dict[str, Any] = {schema_name(cls): schema_of(cls) for cls in PROBLEMS.values()}
    found[FIELD_ERROR] = {
        "title": FIELD_ERROR,
        "type": "object",
        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
        "required": ["field", "message"],
    }
    return found


def _refs(schema: Mapping[str, Any]) -> list[str]:
    options = schema.get("oneOf", [schema])
    return [o["$ref"] for o in options if "$ref" in o]


def _add(responses: dict[str, Any], problems: Iterable[type[ApiProblem]], why: Mapping[int, str]) -> None:
    """Declare `problems` among an operation's `responses`, one entry per status, one schema per type."""
    for cls in problems:
        entry = responses.setdefault(str(cls.status), {})
        if not entry.get("description"):
            entry["description"] = why.get(cls.status) or cls.title
        content = entry.setdefault("content", {})
        if "HTTPValidationError" in str(content.get("application/json", "")):
            del content["application/json"]  # FastAPI's own 422: the handlers answer problems
        body = content.setdefault(PROBLEM, {})
        refs = _refs(body.get("schema", {}))
        if REF + schema_name(cls) not in refs:
            refs.append(REF + schema_name(cls))
        body["schema"] = {"$ref": refs[0]} if len(refs) == 1 else {"oneOf": [{"$ref": r} for r in refs]}


def responses(*problems: type[ApiProblem], why: Mapping[int, str] | None = None) -> dict[int | str, Any]:
    """A route's `responses=`: the problems it answers besides those of `COMMON`, with a
    description per status where the titles would not say enough."""
    declared: dict[str, Any] = {}
    _add(declared, problems, why or {})
    return {int(status): entry for status, entry in declared.items()}


def contract(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI schema with every operation's `COMMON` problems and each problem's body."""
    for path in schema.get("paths", {}).values():
        for op in path.values():
            for applies, problems in COMMON:
                if applies(op):
                    _add(op.setdefault("responses", {}), problems, {})
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(components())
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)  # every 422 is an InvalidRequestProblem now
    return schema


def install(app: FastAPI) -> None:
    """Serve the problem pages and add the problems to the app's OpenAPI schema."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = contract(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get(TYPES + "{slug}", include_in_schema=False)
    async def problem_page(slug: str) -> HTMLResponse:
        if not known(slug):
            raise NotFound(f"no problem type {slug!r}; {TYPES.rstrip('/')} lists them")
        return HTMLResponse(page(slug))

    @app.get(TYPES.rstrip("/"), include_in_schema=False)
    async def problem_index() -> HTMLResponse:
        return HTMLResponse(index())


def known(slug: str) -> bool:
    """Whether `slug` names a problem type: a class's, or `http-<status>` of a real status."""
    if slug in PROBLEMS:
        return True
    number = slug.removeprefix("http-")
    return slug.startswith("http-") and number.isdigit() and int(number) in set(http.HTTPStatus)


def _html(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>genqueue: {html.escape(title)}</title>\n</head>\n<body>\n{body}\n"
        '<p><a href="/problems">Every problem type</a> · <a href="/docs">The API</a></p>\n</body>\n</html>\n'
    )


def page(slug: str) -> str:
    """The page at `/problems/<slug>` (a known slug): what the problem means and what its body carries."""
    cls = PROBLEMS.get(slug)
    if cls is None:
        status = int(slug.removeprefix("http-"))
        known_status = http.HTTPStatus(status)
        return _html(
            known_status.phrase,
            f"<h1>{known_status.phrase}</h1>\n<p>HTTP {status}: {known_status.description}.</p>",
        )
    members = "".join(
        f"<li><code>{name}</code> ({spec.get('type', 'any')}{', always' if always else ''}): "
        f"{html.escape(spec.get('description', ''))}</li>\n"
        for name, (spec, always) in cls.members.items()
    )
    return _html(
        cls.title,
        f"<h1>{html.escape(cls.title)}</h1>\n<p>HTTP {cls.status} · <code>{cls.type_uri}</code></p>\n"
        f"<p>{html.escape(about(cls))}</p>\n"
        "<p>The body (<code>application/problem+json</code>) has <code>type</code>, <code>title</code>, "
        "<code>status</code>, <code>detail</code> and <code>instance</code>; <code>errors</code> names "
        "the fields at fault, when there are any.</p>\n"
        + (f"<h2>Its own members</h2>\n<ul>\n{members}</ul>" if members else ""),
    )


def index() -> str:
    """The page at `/problems`: every problem type, linked."""
    items = "".join(
        f'<li><a href="{cls.type_uri}">{html.escape(cls.title)}</a> (HTTP {cls.status})</li>\n'
        for cls in sorted(PROBLEMS.values(), key=lambda c: (c.status, c.slug))
    )
    return _html("problem types", f"<h1>Problem types</h1>\n<ul>\n{items}</ul>")
