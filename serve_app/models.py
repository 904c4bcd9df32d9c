"""The request and response shapes of the HTTP API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

USER_ID_PATTERN = r"^[A-Za-z0-9._@:-]+$"


class Images(BaseModel):
    """Input images, base64 (standard or URL-safe) of PNG, JPEG or WebP."""

    model_config = ConfigDict(extra="forbid")
    person: str = Field(description="The selfie (photography) or the person photo (fitting).")
    garment: str | None = Field(default=None, description="The garment photo; required for fitting.")


class SubmitTask(BaseModel):
    """A generation request."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["photography", "fitting"]
    prompt: str = Field(default="", description="Style or try-on instructions.")
    images: Images
    options: dict[str, Any] = Field(default_factory=dict)
    user_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=USER_ID_PATTERN,
        description="Whose task it is: a service or admin token submits on behalf of this user; "
        "a user token may leave it out (or give its own).",
    )
    idempotency_key: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._:-]{1,200}$",
        description="A repeat with the same key and body returns the first task.",
    )
    webhook_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="http(s) URL that gets the task view (POST, signed as Standard Webhooks) when "
        "the task ends; a service token's default when left out. Service and admin tokens only.",
    )


class Submitted(BaseModel):
    """The answer to a submit."""

    task_id: str
    status: str
    position: int | None
    eta_seconds: float | None
    balance: int | None = Field(default=None, description="The user's credits after the charge.")


class Grant(BaseModel):
    """Credits to add to a user's balance."""

    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=128, pattern=USER_ID_PATTERN)
    amount: int = Field(ge=1, le=1_000_000_000)
    reason: str = Field(default="", max_length=200)


class Granted(BaseModel):
    """A grant's result."""

    user_id: str
    amount: int
    balance: int


class Me(BaseModel):
    """A user's balance and newest ledger entries."""

    user_id: str
    role: str
    balance: int
    granted: int
    charged: int
    refunded: int
    ledger: list[dict[str, Any]]


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
    status: str
    position: int | None = None
    eta_seconds: float | None = None
    attempts: int = 0
    submitted_at: float | None = None
    dispatched_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    result_url: str | None = None
    pool: str | None = None
    price: int | None = Field(default=None, description="Credits charged at submit.")
    refunded: int | None = Field(default=None, description="Credits given back: the task did not succeed.")
