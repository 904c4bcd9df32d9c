"""Events of a task's completion webhook: each POST, and how it ended."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookAttempted:
    """One POST of a task's completion webhook. `code` is the HTTP status, 0 when none came
    (`error` says why); `next_at` is when the next attempt is due, 0 when none follows."""

    type: ClassVar[str] = "webhook.attempted"
    version: ClassVar[int] = 1
    task_id: str
    webhook_id: str
    attempt: int
    code: int
    error: str = ""
    next_at: float = 0.0
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookDelivered:
    """A task's completion webhook was answered with a 2xx; at most once per task."""

    type: ClassVar[str] = "webhook.delivered"
    version: ClassVar[int] = 1
    task_id: str
    webhook_id: str
    attempts: int
    code: int
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookFailed:
    """A task's completion webhook got no 2xx within its time bound; nothing more is tried."""

    type: ClassVar[str] = "webhook.failed"
    version: ClassVar[int] = 1
    task_id: str
    webhook_id: str
    attempts: int
    error: str
    at: float
