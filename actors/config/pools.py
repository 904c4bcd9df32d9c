"""Quota pools: one upstream project's limits and keys, the service tier its calls ask for,
the price of its images and the most it may spend a day, and the pool whose limit its calls
also count against."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from events.errors import GenqueueError


class ConfigError(GenqueueError):
    """The configuration is invalid; the message names the key."""


class Secret:
    """A secret string whose repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself; call only where it is sent upstream."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))

    def hint(self) -> str:
        """Four characters that tell keys apart in events and logs, never most of the key.

        The last four characters of a key of 16 or more; four hex digits of a short key's
        SHA-256 otherwise.
        """
        if len(self._value) >= 16:
            return self._value[-4:]
        return hashlib.sha256(self._value.encode()).hexdigest()[:4]


# Gemini's service tiers, as the API and the `x-gemini-service-tier` header name them.
STANDARD, FLEX, PRIORITY = "standard", "flex", "priority"
SERVICE_TIERS = (STANDARD, FLEX, PRIORITY)
# The list price of one output image at the standard tier, USD: gemini-3.1-flash-image at 1K.
# `genqueue cost` and `genqueue plan` price images at this unless told otherwise.
STANDARD_PRICE_PER_IMAGE = 0.067
# Each tier's price against the standard one: flex about half, priority about 75-100 % dearer.
TIER_PRICE_FACTORS: Mapping[str, float] = {STANDARD: 1.0, FLEX: 0.5, PRIORITY: 1.8}


def downgraded(asked: str, served: str) -> bool:
    """Whether a call that asked for priority was served at another tier, as upstream said
    (a request over a project's priority limit is served at standard, without an error)."""
    return asked == PRIORITY and served not in ("", PRIORITY)


def tier_price(tier: str) -> float:
    """The default price of one image at `tier`, USD."""
    return round(STANDARD_PRICE_PER_IMAGE * TIER_PRICE_FACTORS[tier], 6)


def spend_cap_calls(max_spend_per_day: float, price_per_image: float) -> int:
    """The calls a day that `max_spend_per_day` USD pays for at `price_per_image` (0: no cap,
    with no cap or free images). Whole calls, rounded down; a quotient a rounding error under
    a whole number (0.3 / 0.1) counts as that number."""
    if max_spend_per_day <= 0 or price_per_image <= 0:
        return 0
    return math.floor(max_spend_per_day / price_per_image + 1e-9)


def usd(amount: float) -> str:
    """An amount of USD for a message: cents, or the tenths of a cent a price may have."""
    cents = f"{amount:,.2f}"
    return cents if abs(amount - round(amount, 2)) < 1e-9 else f"{amount:,.4f}".rstrip("0")


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """One quota pool: an upstream project, its limits and its keys.

    `rpm` requests and `ipm` images per window of `window_seconds` (scaled from a minute;
    0 = no separate images limit), `rpd` requests per day, reset at midnight Pacific
    (0 = no daily limit). Its calls ask upstream for `service_tier` and cost
    `price_per_image` USD an image (negative: the tier's list price, `tier_price`). With
    `counts_against`, each of its calls also takes a place in that pool's window: a
    priority pool's calls count against its project's standard limit. `max_spend_per_day`
    (USD, 0 = no cap) caps its calls per Pacific day at what it pays for (`day_cap_calls`),
    with `rpd` if that is lower.
    """

    name: str
    rpm: int
    keys: tuple[Secret, ...]
    window_seconds: float = 60.0
    ipm: int = 0
    rpd: int = 0
    service_tier: str = STANDARD
    price_per_image: float = -1.0
    counts_against: str = ""
    max_spend_per_day: float = 0.0

    def __post_init__(self) -> None:
        if self.service_tier not in SERVICE_TIERS:
            raise ConfigError(
                f"pool {self.name!r}: service_tier {self.service_tier!r} is not one of "
                f"{', '.join(SERVICE_TIERS)}; use one of them"
            )
        if self.price_per_image < 0:
            object.__setattr__(self, "price_per_image", tier_price(self.service_tier))
        if self.counts_against == self.name:
            raise ConfigError(
                f"pool {self.name!r}: counts_against names the pool itself; name another pool or remove it"
            )
        self._check_spend()

    def _check_spend(self) -> None:
        cap, price = self.max_spend_per_day, self.price_per_image
        if not 0 <= cap < math.inf:
            raise ConfigError(
                f"pool {self.name!r}: max_spend_per_day must be a USD amount >= 0 (0: no cap), got {cap!r}"
            )
        if cap > 0 and price > 0 and spend_cap_calls(cap, price) < 1:
            raise ConfigError(
                f"pool {self.name!r}: max_spend_per_day ${usd(cap)} is below the price of one image "
                f"(${usd(price)}); set it to at least {price:g}, or 0 for no cap"
            )

    @property
    def day_cap_calls(self) -> int:
        """The calls a Pacific day that `max_spend_per_day` pays for (0: no spend cap)."""
        return spend_cap_calls(self.max_spend_per_day, self.price_per_image)

    @property
    def day_limit(self) -> int:
        """The calls it may make a Pacific day: `rpd` or `day_cap_calls`, the lower (0: no limit)."""
        return min((n for n in (self.rpd, self.day_cap_calls) if n), default=0)

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Names for the keys that are safe to log: pool name and position."""
        return tuple(f"{self.name}#{i + 1}" for i in range(len(self.keys)))

    @property
    def key_hints(self) -> dict[str, str]:
        """Key id -> the key's hint (see `Secret.hint`)."""
        return {kid: key.hint() for kid, key in zip(self.key_ids, self.keys, strict=True)}

    @property
    def rate(self) -> int:
        """Calls per minute this pool may make: the smaller of its request and image limits."""
        return min(self.rpm, self.ipm) if self.ipm else self.rpm


def counted_against(pools: Sequence[PoolConfig], name: str) -> tuple[str, ...]:
    """The pools whose windows a call of pool `name` also takes a place in, nearest first
    (its `counts_against`, that pool's, and so on); the pools are checked (`check_pools`)."""
    by_name = {p.name: p for p in pools}
    chain: list[str] = []
    at = by_name[name].counts_against
    while at and at in by_name and at not in chain and at != name:
        chain.append(at)
        at = by_name[at].counts_against
    return tuple(chain)


def check_pools(pools: Sequence[PoolConfig]) -> None:
    """Raise ConfigError unless pool names are unique and every `counts_against` names
    another pool with no cycle."""
    by_name = {p.name: p for p in pools}
    if len(by_name) != len(pools):
        raise ConfigError("[[pools]]: pool names must be unique")
    for pool in pools:
        if pool.counts_against and pool.counts_against not in by_name:
            known = ", ".join(sorted(by_name))
            raise ConfigError(
                f"pool {pool.name!r}: counts_against {pool.counts_against!r} names no pool "
                f"(pools: {known}); name one of them or remove it"
            )
        seen = [pool.name]
        at = pool.counts_against
        while at:
            if at in seen:
                cycle = " -> ".join([*seen, at])
                raise ConfigError(
                    f"[[pools]]: counts_against makes a cycle ({cycle}); a pool counts against "
                    "a pool that counts against none of them"
                )
            seen.append(at)
            at = by_name[at].counts_against
