"""A user's balance, its totals and its ledger, as read-model writes of the credits events."""

from __future__ import annotations

import json

from events.catalogue import CreditsCharged, CreditsGranted, CreditsRefunded
from events.keys import Keys
from events.read_ops import HIncr, LPush, Op

# How many ledger entries a user keeps, newest first (what `GET /v1/me` can show).
LEDGER_KEEP = 100

_TOTALS = {"credits.granted": "granted", "credits.charged": "charged", "credits.refunded": "refunded"}


def ledger_ops(
    event: CreditsGranted | CreditsCharged | CreditsRefunded, keys: Keys, delta: int, detail: dict[str, str]
) -> list[Op]:
    """The user's balance, its totals and a ledger entry."""
    entry = {"type": event.type, "amount": delta, "at": event.at, **detail}
    user = keys.user(event.user_id)
    return [
        HIncr(user, "balance", delta),
        HIncr(user, _TOTALS[event.type], abs(delta)),
        LPush(keys.ledger(event.user_id), json.dumps(entry, separators=(",", ":")), LEDGER_KEEP),
    ]
