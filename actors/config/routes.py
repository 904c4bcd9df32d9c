"""Fallback routes: ordered groups of pools, each with its own price and model.

A task of a kind is served by the routes of that kind's chain, in order: the first that can
serve takes it; a later one (dearer or cheaper) only as its fallback. With no `[[routes]]`,
one implicit route named "default" holds every pool at the kind's price and the provider's
model, so a configuration without routes behaves as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actors.config.pools import ConfigError, PoolConfig
from events.catalogue import KINDS

if TYPE_CHECKING:
    from actors.config.sections import Config

DEFAULT_ROUTE = "default"
ROUTE_KEYS = ("name", "pools", "price", "model", "kinds")


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """One `[[routes]]` table: the pools it calls, in order.

    `price`: the credits a task served on it costs (None: the kind's price from [credits]).
    `model`: the provider model its calls ask for ("": [provider] model). `kinds`: the kinds
    it serves (empty: all).
    """

    name: str
    pools: tuple[str, ...]
    price: int | None = None
    model: str = ""
    kinds: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError('[[routes]]: a route needs a name; add name = "..."')
        if not self.pools:
            raise ConfigError(f"route {self.name!r}: pools is empty; list at least one pool")
        if self.price is not None and self.price < 0:
            raise ConfigError(f"route {self.name!r}: price must be credits >= 0, got {self.price}")
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise ConfigError(
                f"route {self.name!r}: kinds {', '.join(unknown)} unknown; use {', '.join(KINDS)}"
            )


@dataclass(frozen=True, slots=True)
class Route:
    """A route resolved for one kind: its price in credits and the model its calls use."""

    name: str
    pools: tuple[str, ...]
    price: int
    model: str


def check_routes(routes: Sequence[RouteConfig], pools: Sequence[PoolConfig]) -> None:
    """Raise ConfigError unless route names are unique, every pool named exists and is in at
    most one route, and (when routes are configured) every kind has a route and every pool is
    in one."""
    if not routes:
        return
    names = [r.name for r in routes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"[[routes]]: route name {', '.join(twice)} is used twice; name each route once")
    known = {p.name for p in pools}
    held: dict[str, str] = {}
    for route in routes:
        for pool in route.pools:
            if pool not in known:
                raise ConfigError(
                    f"route {route.name!r}: pool {pool!r} is not configured "
                    f"(pools: {', '.join(sorted(known))}); name one of them"
                )
            if pool in held:
                raise ConfigError(
                    f"route {route.name!r}: pool {pool!r} is already in route {held[pool]!r}; "
                    "put each pool in one route"
                )
            held[pool] = route.name
    for kind in KINDS:
        if not any(not r.kinds or kind in r.kinds for r in routes):
            raise ConfigError(f"[[routes]]: no route serves {kind} tasks; add it to a route's kinds")
    unrouted = [p.name for p in pools if p.name not in held]
    if unrouted:
        raise ConfigError(
            f"[[routes]]: pool {', '.join(unrouted)} is in no route; add it to a route or remove the pool"
        )


def parse_routes(
    raw: Any, refuse_unknown: Callable[[str, Iterable[str], Iterable[str]], None]
) -> tuple[RouteConfig, ...]:
    """The `[[routes]]` tables of a TOML document as RouteConfigs (`refuse_unknown` refuses a
    misspelt key); checked against the pools by `Config`."""
    if not isinstance(raw, list):
        raise ConfigError("[[routes]]: expected an array of tables ([[routes]])")
    routes = []
    for i, item in enumerate(raw):
        where = f"routes[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a table")
        refuse_unknown(where, item, ROUTE_KEYS)
        name, model = item.get("name", ""), item.get("model", "")
        pools, kinds = item.get("pools", []), item.get("kinds", [])
        price = item.get("price")
        if not isinstance(name, str) or not isinstance(model, str):
            raise ConfigError(f"{where}: name and model are strings")
        if not isinstance(pools, list) or not all(isinstance(p, str) for p in pools):
            raise ConfigError(f"{where}.pools: expected a list of pool names")
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
            raise ConfigError(f"{where}.kinds: expected a list of kinds ({', '.join(KINDS)})")
        if price is not None and (isinstance(price, bool) or not isinstance(price, int)):
            raise ConfigError(f"{where}.price: expected whole credits >= 0, got {price!r}")
        routes.append(RouteConfig(name or f"route-{i + 1}", tuple(pools), price, model, tuple(kinds)))
    return tuple(routes)


def _resolved(config: Config, route: RouteConfig, kind: str) -> Route:
    credits = config.credits
    price = route.price if route.price is not None and credits.enabled else credits.price(kind)
    return Route(route.name, route.pools, price, route.model or config.provider.model)


def _default(config: Config, kind: str) -> Route:
    pools = tuple(p.name for p in config.pools)
    return Route(DEFAULT_ROUTE, pools, config.credits.price(kind), config.provider.model)


def chain(config: Config, kind: str) -> tuple[Route, ...]:
    """The routes serving `kind`, in order of preference; with no routes configured, the one
    implicit "default" route (every pool, the kind's price, the provider's model)."""
    if not config.routes:
        return (_default(config, kind),)
    return tuple(_resolved(config, r, kind) for r in config.routes if not r.kinds or kind in r.kinds)


def route_of(config: Config, pool: str, kind: str = "") -> Route | None:
    """The route that holds `pool` (None: no route does), its price resolved for `kind`
    (left out: the first kind the route serves)."""
    if not config.routes:
        return _default(config, kind or KINDS[0]) if any(p.name == pool for p in config.pools) else None
    for route in config.routes:
        if pool in route.pools:
            return _resolved(config, route, kind or (route.kinds or KINDS)[0])
    return None


def charged_price(config: Config, kind: str, max_price: int | None) -> int:
    """The credits a task of `kind` is charged at submit: the first route's price without
    `max_price`; else the dearest route's price within `max_price`, never below the first
    route's (a `max_price` under it is refused before this, see `lowest_price`)."""
    routes = chain(config, kind)
    first = routes[0].price
    if max_price is None:
        return first
    return max([first, *(r.price for r in routes if r.price <= max_price)])


def lowest_price(config: Config, kind: str) -> int:
    """The least `max_price` a task of `kind` may give: its first route's price."""
    return chain(config, kind)[0].price
