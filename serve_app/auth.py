"""Bearer tokens and roles: who is calling, and on whose behalf.

A token is 32 random bytes, shown once when made; the store keeps only its SHA-256 digest,
so a token is looked up by its digest and compared in constant time. Roles: a `user` acts
as itself and sees only its own tasks; a `service` (an app's backend) submits on behalf of
the `user_id` in the body; an `admin` may do everything, the ops endpoints included.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from events.catalogue import ROLES, TokenCreated
from events.store import EventStore
from serve_app.problems import Forbidden, Unauthorized

TOKEN_PREFIX = "gq_"  # noqa: S105 -- a prefix that marks genqueue tokens, not a secret
USER, SERVICE, ADMIN = ROLES


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller: its user id, role and token id ("" without a token), and a
    service token's default completion webhook ("" for none)."""

    user_id: str
    role: str
    token_id: str = ""
    webhook_url: str = ""

    def acts_for(self, body_user: str | None) -> str:
        """The user a submit is for: a user always itself; a service or admin the body's user."""
        if self.role == USER:
            if body_user and body_user != self.user_id:
                raise Forbidden(f"a user token submits only for itself, not for {body_user!r}")
            return self.user_id
        if body_user:
            return body_user
        return self.user_id or "anonymous"

    def may_see(self, owner: str) -> bool:
        """Whether this caller may see a task of `owner` (a user sees only its own)."""
        return self.role != USER or owner == self.user_id

    def require(self, role: str) -> None:
        """A 403 unless the caller holds `role` (admin holds every role)."""
        if self.role != role and self.role != ADMIN:
            raise Forbidden(f"this needs a {role} token")


def digest(token: str) -> str:
    """The SHA-256 hex digest the store keeps instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(user_id: str, role: str, webhook_url: str = "") -> tuple[str, TokenCreated]:
    """A new token and the event that records its digest (never the token)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    d = digest(token)
    event = TokenCreated(
        token_id=d[:12], digest=d, user_id=user_id, role=role, webhook_url=webhook_url, at=time.time()
    )
    return token, event


async def authenticate(store: EventStore, header: str | None, required: bool) -> Caller:
    """The caller named by an `Authorization` header, or a 401.

    Without a header and with tokens not required (development), the caller is an admin
    acting for the body's user.
    """
    if not header:
        if not required:
            return Caller("", ADMIN)
        raise Unauthorized("send Authorization: Bearer <token>")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("the Authorization header must be: Bearer <token>")
    wanted = digest(token)
    found = await store.token(wanted)
    if found is None or not hmac.compare_digest(found.get("digest", ""), wanted):
        raise Unauthorized("the token is not valid")
    return Caller(found["user_id"], found["role"], found["token_id"], found.get("webhook_url", ""))
