"""Bearer tokens and roles: who is calling, and on whose behalf.

A token is 32 random bytes, shown once when made; the store keeps only its SHA-256 digest,
so a token is looked up by its digest and compared in constant time. Roles: a `user` acts
as itself and sees only its own tasks; a `service` (an app's backend) submits on behalf of
the `user_id` in the body, within its scope of user ids when it has one; an `admin` may do
everything, the ops endpoints included; a `metrics` token reaches `GET /metrics` and nothing
else, so that a scraper holds no credential that can do more.

Each replica remembers the tokens it looked up (`TokenCache`): a request then costs no store
read, and a revoked token is refused on the next request once the `token.revoked` event
reaches the replica, and AUTH_CACHE_SECONDS after its revocation at the latest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
import weakref
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from events.catalogue import ROLES, TokenCreated
from events.store import EventStore
from serve_app.http.models import USER_ID_PATTERN
from serve_app.http.problems import Forbidden, Unauthorized

TOKEN_PREFIX = "gq_"  # noqa: S105 -- a prefix that marks genqueue tokens, not a secret
USER, SERVICE, ADMIN, METRICS = ROLES
# Who may call the API (every route but the scrape), and who may scrape `GET /metrics`.
API_ROLES = (USER, SERVICE, ADMIN)
SCRAPE_ROLES = (METRICS, ADMIN)
# A token looked up is believed this long at most: the bound on a revocation that the
# replica's stream tailer did not see. An unknown one is believed unknown for less, and only
# so many are kept, so that a flood of bad tokens neither reaches the store nor fills memory.
AUTH_CACHE_SECONDS = 5.0
AUTH_CACHE_SIZE = 10_000
UNKNOWN_CACHE_SECONDS = 1.0
UNKNOWN_CACHE_SIZE = 1_000


def in_scope(user_id: str, users: Iterable[str]) -> bool:
    """Whether `user_id` is one of `users`: exact ids, or prefixes ending in "*"."""
    return any(user_id.startswith(u[:-1]) if u.endswith("*") else user_id == u for u in users)


def parse_scope(values: Iterable[str]) -> list[str]:
    """A service token's scope from `--users` values (each one or several, comma-separated):
    user ids and prefixes ending in "*"; a ValueError naming the first that is neither."""
    scope: list[str] = []
    for value in values:
        for item in (part.strip() for part in value.split(",")):
            stem = item.removesuffix("*")
            if not re.fullmatch(USER_ID_PATTERN, stem) or len(stem) > 128:
                raise ValueError(
                    f"{item!r} is neither a user id nor a prefix ending in * "
                    "(1-128 characters of letters, digits and . _ @ : -)"
                )
            if item not in scope:
                scope.append(item)
    return scope


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller: its user id, role and token id ("" without a token), a
    service token's default completion webhook ("" for none), and a service token's scope
    (user ids and prefixes ending in "*"; empty for every user)."""

    user_id: str
    role: str
    token_id: str = ""
    webhook_url: str = ""
    users: tuple[str, ...] = ()
    lane: str = ""  # the priority lane its token names ("": the default lane)

    def acts_for(self, body_user: str | None) -> str:
        """The user a submit is for: a user always itself; a service or admin the body's user,
        a 403 when it is outside the token's scope."""
        if self.role == USER:
            if body_user and body_user != self.user_id:
                raise Forbidden(f"a user token submits only for itself, not for {body_user!r}")
            return self.user_id
        who = body_user or self.user_id or "anonymous"
        self._within_scope(who)
        return who

    def may_see(self, owner: str) -> bool:
        """Whether this caller may see a task of `owner` (a user sees only its own); a 403 for
        a scoped service token and an owner outside its scope."""
        if self.role == USER:
            return owner == self.user_id
        self._within_scope(owner)
        return True

    def require(self, role: str) -> None:
        """A 403 unless the caller holds `role` (admin holds every role)."""
        if self.role != role and self.role != ADMIN:
            raise Forbidden(f"this needs a {role} token")

    def _within_scope(self, user_id: str) -> None:
        if self.users and not in_scope(user_id, self.users):
            raise Forbidden(f"this token acts only for users {', '.join(self.users)}, not for {user_id!r}")


def digest(token: str) -> str:
    """The SHA-256 hex digest the store keeps instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(
    user_id: str, role: str, webhook_url: str = "", users: Iterable[str] = (), lane: str = ""
) -> tuple[str, TokenCreated]:
    """A new token and the event that records its digest (never the token); `users` scopes
    a service token to those user ids and prefixes ending in "*"; its submits ride `lane`."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    scope = list(users)
    if scope and role != SERVICE:
        raise ValueError(f"only a service token is scoped to users, not a {role} token")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    d = digest(token)
    event = TokenCreated(
        token_id=d[:12],
        digest=d,
        user_id=user_id,
        role=role,
        webhook_url=webhook_url,
        users=scope,
        lane=lane,
        at=time.time(),
    )
    return token, event


class TokenCache:
    """A replica's memory of token digests and their read models (None: no such token).

    A token is believed for `ttl` seconds after it was read, an unknown digest for `unknown_ttl`;
    at most `size` and `unknown_size` of them are kept, the oldest dropped first. `revoke`
    forgets a token at once (the replica's stream tailer calls it on `token.revoked`); a read
    that a revocation overtook is not kept.
    """

    def __init__(
        self,
        ttl: float = AUTH_CACHE_SECONDS,
        unknown_ttl: float = UNKNOWN_CACHE_SECONDS,
        size: int = AUTH_CACHE_SIZE,
        unknown_size: int = UNKNOWN_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl, self._unknown_ttl = ttl, unknown_ttl
        self._size, self._unknown_size = size, unknown_size
        self._clock = clock
        self._known: dict[str, tuple[float, dict[str, str]]] = {}
        self._unknown: dict[str, float] = {}
        self._digests: dict[str, set[str]] = {}  # token id -> digests kept
        self.revocations = 0
        # Whether a stream tailer calls `revoke` (set by whoever hooks it up).
        self.hooked = False

    @property
    def sizes(self) -> tuple[int, int]:
        """(tokens remembered, unknown digests remembered)."""
        return len(self._known), len(self._unknown)

    def get(self, digest: str) -> tuple[bool, dict[str, str] | None]:
        """(whether the digest is remembered, its read model or None for no such token)."""
        now = self._clock()
        known = self._known.get(digest)
        if known is not None:
            if known[0] > now:
                return True, known[1]
            self._forget(digest)
        until = self._unknown.get(digest)
        if until is not None:
            if until > now:
                return True, None
            del self._unknown[digest]
        return False, None

    def keep(self, digest: str, found: dict[str, str] | None, revocations: int) -> None:
        """Remember what a read that began when `revocations` were counted found."""
        if found is None:
            if len(self._unknown) >= self._unknown_size:
                del self._unknown[next(iter(self._unknown))]
            self._unknown[digest] = self._clock() + self._unknown_ttl
            return
        if revocations != self.revocations:
            return  # a token was revoked while this read was in flight: maybe this one
        self._forget(digest)
        if len(self._known) >= self._size:
            self._forget(next(iter(self._known)))
        self._known[digest] = (self._clock() + self._ttl, found)
        self._digests.setdefault(found.get("token_id", ""), set()).add(digest)

    def revoke(self, token_id: str) -> None:
        """Forget the token `token_id` at once."""
        self.revocations += 1
        for digest in self._digests.pop(token_id, set()):
            self._known.pop(digest, None)

    def _forget(self, digest: str) -> None:
        known = self._known.pop(digest, None)
        if known is None:
            return
        token_id = known[1].get("token_id", "")
        digests = self._digests.get(token_id)
        if digests is not None:
            digests.discard(digest)
            if not digests:
                del self._digests[token_id]


# One cache per store client, that is per replica, for callers that pass none.
_caches: weakref.WeakKeyDictionary[EventStore, TokenCache] = weakref.WeakKeyDictionary()


def token_cache(store: EventStore) -> TokenCache:
    """The token cache of the replica whose store client is `store`."""
    cache = _caches.get(store)
    if cache is None:
        cache = _caches[store] = TokenCache()
    return cache


async def _token(store: EventStore, digest: str, cache: TokenCache) -> dict[str, str] | None:
    remembered, found = cache.get(digest)
    if remembered:
        return found
    revocations = cache.revocations
    found = await store.token(digest)
    cache.keep(digest, found, revocations)
    return found


async def authenticate(
    store: EventStore,
    header: str | None,
    required: bool,
    roles: Collection[str] = API_ROLES,
    cache: TokenCache | None = None,
) -> Caller:
    """The caller named by an `Authorization` header, or a 401; a 403 when its token's role is
    not one of `roles`. The token is looked up in `cache` (by default the store's, see
    `token_cache`) before the store.

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
    found = await _token(store, wanted, token_cache(store) if cache is None else cache)
    if found is None or not hmac.compare_digest(found.get("digest", ""), wanted):
        raise Unauthorized("the token is not valid")
    if found["role"] not in roles:
        raise Forbidden(f"a {found['role']} token may not do this; it needs a {' or '.join(roles)} token")
    users = tuple(json.loads(found.get("users") or "[]"))
    hook, lane = found.get("webhook_url", ""), found.get("lane", "")
    return Caller(found["user_id"], found["role"], found["token_id"], hook, users, lane)
