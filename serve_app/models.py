"""The request and response shapes of the HTTP API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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
    user_id: str = Field(default="anonymous", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@:-]+$")
    idempotency_key: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._:-]{1,200}$",
        description="A repeat with the same key and body returns the first task.",
    )


class Submitted(BaseModel):
    """The answer to a submit."""

    task_id: str
    status: str
    position: int | None
    eta_seconds: float | None


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
