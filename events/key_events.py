"""The key pool's events: grants, the wire times of their calls, and what upstream taught a pool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyTokenGranted:
    """A quota pool handed one rate-limit token (one upstream call) to an attempt."""

    type: ClassVar[str] = "key.token_granted"
    version: ClassVar[int] = 1
    pool: str
    key_id: str
    task_id: str
    attempt: int
    capacity: int
    window: float
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyGrantsRedated:
    """Grants whose calls went out on the wire count in their pools' windows from then on.

    `calls` maps "<task id>:<attempt>" to the time its call went out (a grant is only ever
    re-dated later). Workers' reports are written with the next grants, ahead of them in one
    transaction. `recovered`: written at a start, with the start's time, for the grants of
    the window whose sending the log did not hold.
    """

    type: ClassVar[str] = "key.grants_redated"
    version: ClassVar[int] = 1
    calls: dict[str, float]
    recovered: bool = False
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyCooledDown:
    """A pool got a per-minute 429: it grants nothing until `until`."""

    type: ClassVar[str] = "key.cooled_down"
    version: ClassVar[int] = 1
    pool: str
    key_id: str
    until: float
    retry_after: float
    quota_id: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyParked:
    """A pool's daily quota ran out: it grants nothing until `until` (midnight Pacific)."""

    type: ClassVar[str] = "key.parked"
    version: ClassVar[int] = 1
    pool: str
    key_id: str
    until: float
    quota_id: str
    reason: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyDisabled:
    """Upstream rejected a key (invalid, unauthorised or forbidden): the pool stops using it.

    `hint` is the key's last four characters, so a replaced key is not held disabled.
    """

    type: ClassVar[str] = "key.disabled"
    version: ClassVar[int] = 1
    pool: str
    key_id: str
    hint: str
    code: int
    reason: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyLimitLearned:
    """A pool's effective rate or margin changed: lowered after 429s it had room for, or probed back up.

    `margin` is the seconds the pool keeps between a grant and the one that reuses its
    place a window later.
    """

    type: ClassVar[str] = "key.limit_learned"
    version: ClassVar[int] = 1
    pool: str
    rpm: int
    previous: int
    configured: int
    margin: float = 0.0
    reason: str
    at: float
