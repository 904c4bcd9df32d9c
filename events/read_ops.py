"""The read-model writes a projection returns, as data that every store executes its own way."""

from __future__ import annotations

from dataclasses import dataclass

Scalar = str | int | float


@dataclass(frozen=True, slots=True)
class HSet:
    """Set fields of a hash."""

    key: str
    mapping: dict[str, Scalar]


@dataclass(frozen=True, slots=True)
class HIncr:
    """Add to a numeric field of a hash."""

    key: str
    field: str
    amount: int | float


@dataclass(frozen=True, slots=True)
class ZAdd:
    """Put a member in a sorted set with a score."""

    key: str
    member: str
    score: float


@dataclass(frozen=True, slots=True)
class ZRem:
    """Take a member out of a sorted set."""

    key: str
    member: str


@dataclass(frozen=True, slots=True)
class SAdd:
    """Put a member in a set."""

    key: str
    member: str


@dataclass(frozen=True, slots=True)
class SRem:
    """Take a member out of a set."""

    key: str
    member: str


@dataclass(frozen=True, slots=True)
class ZTrim:
    """Drop the members of a sorted set scored at or below `max_score`."""

    key: str
    max_score: float


@dataclass(frozen=True, slots=True)
class Expire:
    """Let a key expire after `seconds`."""

    key: str
    seconds: int


@dataclass(frozen=True, slots=True)
class HDel:
    """Remove a field from a hash."""

    key: str
    field: str


@dataclass(frozen=True, slots=True)
class LPush:
    """Push a value at the head of a list and keep only its newest `keep` values."""

    key: str
    value: str
    keep: int


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove a key."""

    key: str


Op = HSet | HIncr | ZAdd | ZRem | SAdd | SRem | ZTrim | Expire | HDel | LPush | Delete
