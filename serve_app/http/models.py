"""The request and response shapes of the HTTP API."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SkipValidation, model_validator

USER_ID_PATTERN = r"^[A-Za-z0-9._@:-]+$"

# Control characters (C0, DEL, C1) other than tab, line feed and carriage return (multi-line
# prompts from some clients end their lines with CRLF), and UTF-16 surrogates: JSON's "\ud800"
# escape decodes to a lone surrogate, which no UTF-8 writer (the event store, a response) can
# encode.
_UNWANTED = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def plain_text(value: str) -> str:
    """`value` if it is valid Unicode without control characters other than tab, line feed and
    carriage return; a ValueError saying which character and where otherwise."""
    found = _UNWANTED.search(value)
    if found is None:
        return value
    char = found.group()
    what = "a lone surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
    raise ValueError(f"{what} (U+{ord(char):04X}) at character {found.start()}")


Text = Annotated[str, AfterValidator(plain_text)]
"""Text a request may carry: valid Unicode, no control characters but tab and line breaks."""

# The aspect ratios the Gemini image models accept (`ImageConfig.aspect_ratio`).
AspectRatio = Literal["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"]


class RequestBody(BaseModel):
    """A request body: unknown fields are refused, and so are field names that are not text."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _names_are_text(cls, data: Any) -> Any:
        # An unknown name is echoed in the 422 problem; one with a lone surrogate could not be.
        if isinstance(data, dict) and any(isinstance(k, str) and _UNWANTED.search(k) for k in data):
            raise ValueError("a field name holds a control character or a lone surrogate")
        return data


class ImageUrl(RequestBody):
    """An input image that genqueue fetches: an https URL of a PNG, JPEG or WebP."""

    url: str = Field(
        min_length=1,
        max_length=2048,
        # URL parsers drop tabs and line breaks, so the URL checked would not be the one fetched.
        # (The scheme is checked when it is fetched, so that the 422 can say what is wrong.)
        pattern=r"^\S+$",
        description="An https URL, fetched once at submit within `[limits] max_image_bytes` and "
        "`image_url_seconds`, from a public address, without following redirects; one that "
        "fails is a 422 naming the image.",
    )


class Images(RequestBody):
    """Input images, each base64 (standard or URL-safe) of a PNG, JPEG or WebP, or `{"url":
    "https://..."}` for genqueue to fetch. (A multipart submit sends them as file parts.)"""

    # Plain str, not Text: `serve_app.http.images.decode_image` admits only the base64 alphabet
    # (after whitespace), and its 422 names the field.

    person: str | ImageUrl = Field(description="The selfie (photography) or the person photo (fitting).")
    garment: str | ImageUrl | None = Field(
        default=None, description="The garment photo; required for fitting."
    )


class Options(RequestBody):
    """How to generate: each option may be left out, for the provider's default."""

    aspect_ratio: AspectRatio | None = Field(
        default=None, description="The generated image's width:height; 3:4 when left out."
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        le=2**31 - 1,
        strict=True,
        description="Asks the model for the same image on a repeat (best effort).",
    )


class SubmitTask(RequestBody):
    """A generation request."""

    kind: Literal["photography", "fitting"]
    prompt: Text = Field(default="", description="Style or try-on instructions.")
    images: Images
    options: Options = Field(default_factory=Options)
    user_id: Text | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=USER_ID_PATTERN,
        description="Whose task it is: a service or admin token submits on behalf of this user; "
        "a user token may leave it out (or give its own).",
    )
    idempotency_key: Text | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._:-]{1,200}$",
        description="A repeat with the same key and body returns the first task.",
    )
    webhook_url: Text | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        # URL parsers drop tabs and line breaks, so the URL checked would not be the one kept.
        pattern=r"^\S+$",
        description="http(s) URL that gets the task view (POST, signed as Standard Webhooks) when "
        "the task ends; a service token's default when left out. Service and admin tokens only.",
    )
    deadline_seconds: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        strict=True,
        allow_inf_nan=False,
        description="Seconds from now by which the task's upstream call must start (at most a day); "
        "not started by then, it ends `expired` and is refunded. Also a `Cancel-After` header "
        "(`15s`, `5m`, `1h30m`). A deadline that the ETA's p90 already misses is a 409 "
        "`deadline-unreachable`, nothing charged, unless `if_late` is `accept`.",
    )
    if_late: Literal["refuse", "accept"] = Field(
        default="refuse",
        description="When the ETA's p90 already misses the deadline: `refuse` (a 409, nothing "
        "charged) or `accept` (queue it anyway; it expires, refunded, if it does not start in time).",
    )
    max_price: int | None = Field(
        default=None,
        ge=0,
        le=2**31 - 1,
        strict=True,
        description="The most credits the task may cost: it is charged the dearest of its kind's "
        "fallback routes within this (never less than the first route's price, the price without "
        "it), may be served by any route up to that price, and gets back the difference when a "
        "cheaper route serves it. Below the first route's price it is a 422.",
    )

    lane: Text | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9-]{1,32}$",
        description="The priority lane the task rides, one of the configured `[[lanes]]`: service "
        "and admin tokens choose it per task; a user token's tasks ride its token's lane (naming "
        "another is a 403). Left out: the token's lane, else the default lane.",
    )

    def fields_bytes(self) -> int:
        """UTF-8 bytes of the request as JSON without its images: what the task's event carries
        besides the images' references."""
        return len(_json(self._fields()))

    def largest_field(self) -> str:
        """The field of `fields_bytes` that takes the most bytes."""
        sizes = {name: len(_json(value)) for name, value in self._fields().items()}
        return max(sizes, key=sizes.__getitem__, default="body")

    def _fields(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"images"}, exclude_none=True)


def _json(value: Any) -> bytes:
    """Compact JSON as UTF-8 (orjson; the standard encoder for an integer over 64 bits)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class Submitted(BaseModel):
    """The answer to a submit."""

    task_id: str
    status: str
    position: int | None
    eta_seconds: float | None = Field(
        description="The p50 of the seconds until the task's upstream call starts (null: no pool will serve)."
    )
    eta_p90_seconds: float | None = Field(
        default=None, description="The p90 of the same: the call starts by then nine times in ten."
    )
    balance: int | None = Field(default=None, description="The user's credits after the charge.")


class BatchSubmit(RequestBody):
    """Tasks submitted together on behalf of their users (a service or admin token)."""

    # Each item is checked on its own, as `POST /v1/tasks` checks its body: one that is not a
    # valid task gets its own 422 among the results, and the others go on.
    tasks: list[SkipValidation[SubmitTask]] = Field(
        min_length=1,
        description="The tasks, in order; each as the body of `POST /v1/tasks`, with `user_id`, and "
        "at most `[limits] max_batch_tasks` (500) of them.",
    )


class BatchAccepted(BaseModel):
    """An item that is queued: what `POST /v1/tasks` answers with its 202."""

    status: Literal[202] = 202
    task_id: str
    task_status: str = Field(description="The task's status: queued, or later for a replayed one.")
    position: int | None
    eta_seconds: float | None
    eta_p90_seconds: float | None = None
    balance: int | None = Field(default=None, description="The user's credits after the charge.")
    replayed: bool = Field(default=False, description="The first task of the item's idempotency key.")


class BatchProblem(BaseModel):
    """An item that is not queued: the RFC 9457 problem `POST /v1/tasks` would answer for it."""

    model_config = ConfigDict(extra="allow")

    status: int
    type: str = Field(description="The problem type, `/problems/<slug>`: a page that says what it means.")
    title: str
    detail: str
    errors: list[dict[str, str]] | None = None


class BatchSubmitted(BaseModel):
    """Each item's result, in request order, and how many were queued and refused."""

    accepted: int
    refused: int
    results: list[BatchAccepted | BatchProblem]


class Grant(RequestBody):
    """Credits to add to a user's balance."""

    user_id: Text = Field(min_length=1, max_length=128, pattern=USER_ID_PATTERN)
    amount: int = Field(ge=1, le=1_000_000_000)
    reason: Text = Field(default="", max_length=200)


class Granted(BaseModel):
    """A grant's result."""

    user_id: str
    amount: int
    balance: int


class Me(BaseModel):
    """A user's balance and newest ledger entries; with a `[credits] daily_cap`, its spend today."""

    user_id: str
    role: str
    balance: int
    granted: int
    charged: int
    refunded: int
    ledger: list[dict[str, Any]]
    spent_today: int | None = Field(
        default=None,
        description="Credits charged today (the UTC calendar day), net of today's refunds; only with a "
        "daily cap.",
    )
    daily_cap: int | None = Field(
        default=None, description="Credits the user may be charged per UTC day (`[credits] daily_cap`)."
    )


class Cancelled(BaseModel):
    """A cancellation's result."""

    task_id: str
    status: str
    refunded: int


class TaskViewOut(BaseModel):
    """Everything a caller may know about a task."""

    task_id: str
    user_id: str
    kind: str
    status: str = Field(
        description="queued, running (only while its upstream call is in flight), succeeded, failed, "
        "cancelled or expired (its deadline passed before its call started; refunded)."
    )
    stage: str | None = Field(
        default=None,
        description="While queued: waiting (for its turn), waiting_for_quota (its turn came; the pools' "
        "windows are spent until quota_until), starting (its call is about to start) or blocked (no "
        "pool can serve its kind: blocked_reason, blocked_until). Null otherwise.",
    )
    quota_until: float | None = Field(
        default=None, description="waiting_for_quota: when the pools' windows next free a place (epoch s)."
    )
    blocked_reason: str | None = Field(default=None, description="blocked: why no pool can serve it.")
    blocked_until: float | None = Field(
        default=None, description="blocked: when a pool is expected back (epoch s); null when unknown."
    )
    lane: str | None = Field(
        default=None,
        description="The priority lane it rides (one of `[[lanes]]`); null with no lanes.",
    )
    position: int | None = Field(
        default=None,
        description="While waiting for its turn: how many waiting tasks start before it (with "
        "`[[lanes]]`, counted across the lanes by their weights).",
    )
    eta_seconds: float | None = None
    eta_p90_seconds: float | None = None
    attempts: int = 0
    submitted_at: float | None = None
    dispatched_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    submitted_at_iso: str | None = None
    dispatched_at_iso: str | None = None
    started_at_iso: str | None = None
    finished_at_iso: str | None = None
    deadline: float | None = Field(
        default=None,
        description="When its upstream call must have started (epoch s): not started by then, the task "
        "ends expired, refunded. Null: no deadline.",
    )
    deadline_iso: str | None = None
    error: str | None = None
    result_url: str | None = Field(
        default=None,
        description="Once succeeded, while the image is stored: GET /v1/tasks/{id} gives a signed link "
        "that needs no token (for an <img>), until result_url_expires_at; lists, streams and webhooks "
        "give /v1/tasks/{id}/result, which takes the bearer token.",
    )
    result_url_expires_at: int | None = Field(
        default=None, description="When the signed result_url stops working (epoch s)."
    )
    result_url_expires_at_iso: str | None = None
    pool: str | None = None
    price: int | None = Field(default=None, description="Credits charged at submit.")
    refunded: int | None = Field(default=None, description="Credits given back: the task did not succeed.")


class TaskPage(BaseModel):
    """A page of the task list, newest first."""

    tasks: list[TaskViewOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page. A page filtered by "
        "both status and user (or a service token's own list by status) may hold fewer tasks than "
        "`limit` and still have a next page."
    )


class PauseIntake(RequestBody):
    """Why intake pauses, and the wait a refused submit is told."""

    reason: Text = Field(default="", max_length=200, description="Shown to operators.")
    retry_after_seconds: int = Field(
        default=60, ge=1, le=3600, strict=True, description="The Retry-After of a refused submit."
    )


class Retried(Submitted):
    """A failed task submitted again as a new task."""

    retry_of: str = Field(description="The failed task; its refund stands, the new task is charged.")
