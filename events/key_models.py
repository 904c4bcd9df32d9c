"""Read models of the keys and tokens: the pool hashes (cooldown, parking, disabled keys, learned
rate) and the token lookup by digest with the token list, as `events.projection.project` writes
them beside their events."""

from __future__ import annotations

import json

from events.catalogue import (
    KeyCooledDown,
    KeyDisabled,
    KeyLimitLearned,
    KeyParked,
    TokenCreated,
    TokenRevoked,
)
from events.keys import Keys
from events.read_ops import Delete, HDel, HIncr, HSet, Op


def token_ops(event: TokenCreated | TokenRevoked, keys: Keys) -> list[Op]:
    """Token lookup by digest, and the token list without digests."""
    if isinstance(event, TokenRevoked):
        return [Delete(keys.token(event.digest)), HDel(keys.tokens, event.token_id)]
    about: dict[str, object] = {
        "user_id": event.user_id,
        "role": event.role,
        "created_at": event.at,
        "digest": event.digest,
    }
    if event.webhook_url:
        about["webhook_url"] = event.webhook_url
    if event.users:
        about["users"] = list(event.users)
    if event.lane:
        about["lane"] = event.lane
    return [
        HSet(
            keys.token(event.digest),
            {
                "token_id": event.token_id,
                "digest": event.digest,
                "user_id": event.user_id,
                "role": event.role,
                "webhook_url": event.webhook_url,
                # JSON: a list of user ids and prefixes; "[]" for every user.
                "users": json.dumps(list(event.users)),
                "lane": event.lane,  # "": the default lane
            },
        ),
        HSet(keys.tokens, {event.token_id: json.dumps(about, separators=(",", ":"))}),
    ]


def pool_ops(event: KeyCooledDown | KeyParked | KeyDisabled | KeyLimitLearned, keys: Keys) -> list[Op]:
    """The pool read model: what `/v1/queue`, `top` and a restarted KeyPoolActor read."""
    key = keys.pool(event.pool)
    match event:
        case KeyCooledDown():
            return [HSet(key, {"cooldown_until": event.until}), HIncr(key, "cooldowns", 1)]
        case KeyParked():
            return [HSet(key, {"parked_until": event.until, "parked_reason": event.reason})]
        case KeyDisabled():
            detail = {"hint": event.hint, "code": event.code, "reason": event.reason, "at": event.at}
            return [HSet(key, {f"disabled:{event.key_id}": json.dumps(detail)})]
        case KeyLimitLearned():
            return [
                HSet(key, {"learned_rpm": event.rpm, "learned_margin": event.margin, "learned_at": event.at})
            ]
