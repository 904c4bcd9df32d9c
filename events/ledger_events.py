"""The ledger's events: credits granted, charged and refunded, and API tokens made and revoked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditsGranted:
    """Credits were added to a user's balance (an admin grant, or the default for a new user)."""

    type: ClassVar[str] = "credits.granted"
    version: ClassVar[int] = 1
    user_id: str
    amount: int
    reason: str = ""
    by: str = ""
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditsCharged:
    """A task's price was taken from its user's balance when it was accepted."""

    type: ClassVar[str] = "credits.charged"
    version: ClassVar[int] = 1
    user_id: str
    task_id: str
    amount: int
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditsRefunded:
    """A task that did not succeed gave its charge back; once per task."""

    type: ClassVar[str] = "credits.refunded"
    version: ClassVar[int] = 1
    user_id: str
    task_id: str
    amount: int
    reason: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenCreated:
    """An API token was issued; only its SHA-256 `digest` is kept, never the token."""

    type: ClassVar[str] = "token.created"
    version: ClassVar[int] = 1
    token_id: str
    digest: str
    user_id: str
    role: str
    # A service token's default completion webhook, for tasks that name none.
    webhook_url: str = ""
    # A service token's scope: the user ids it may act for, each exact or a prefix ending
    # in "*" ("app1:*"); empty (as in older events): every user.
    users: list[str] = field(default_factory=list)
    # The priority lane its submits ride ("": the configured default lane).
    lane: str = ""
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRevoked:
    """An API token stopped working."""

    type: ClassVar[str] = "token.revoked"
    version: ClassVar[int] = 1
    token_id: str
    digest: str
    at: float
