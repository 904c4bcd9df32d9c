"""Which pools serve now under fallback routes, for the forecast (the ETA, the throughput bound).

The key pool gives a task its token from the first route of its kind's chain that serves (a
pool neither parked for the day nor out of working keys, `actors.keypool.routes`); the routes
after it serve none of the kind's tasks meanwhile. So the forecast counts, for each kind, the
pools of that first serving route, among the routes a task charged the kind's price may use
(a dearer fallback only serves the tasks that allowed it). No route of a kind serving, every
pool of its routes counts, each from when it may serve again: the first to come back serves.

One table covers every kind: when the kinds' first serving routes differ, their pools are
counted together (the union), as if any task could take any of their places. Without
`[[routes]]` every pool counts, as before.
"""

from __future__ import annotations

from collections.abc import Mapping

from actors.config import Config, chain, charged_price
from actors.keypool.routes import Serving, route_groups, serving_groups
from events.catalogue import KINDS


def usable_routes(config: Config, kind: str, max_price: int | None = None) -> tuple[tuple[str, ...], ...]:
    """The pool groups of `kind`'s chain, in order, that a task charged the kind's price (or
    up to `max_price`) may use (credits off: every route), as the key pool gives them to its
    attempts."""
    routes = [(route.pools, route.price) for route in chain(config, kind)]
    if not config.credits.enabled:
        return tuple(pools for pools, _ in routes)
    return route_groups(routes, charged_price(config, kind, max_price))


def serving_pools(
    config: Config, pools: Mapping[str, Serving] | None = None, now: float = 0.0
) -> frozenset[str] | None:
    """The names of the pools that serve tasks at `now` (None: every pool, no routes being
    configured): for each kind, the pools of the first usable route that has a pool serving
    (`pools`: each pool's state; None: every pool serves), or, none serving, every usable
    route's pools; the union over the kinds."""
    if not config.routes:
        return None
    names: set[str] = set()
    for kind in KINDS:
        groups = usable_routes(config, kind)
        if pools is None:
            names.update(groups[0])
            continue
        states = [[pools[name] for name in group if name in pools] for group in groups]
        serving = serving_groups(states, now)
        names.update(p.name for group in (serving[:1] or states) for p in group)
    return frozenset(names)
