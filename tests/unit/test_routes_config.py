"""Fallback routes in the configuration: `[[routes]]` read and checked, each kind's chain, the
route of a pool, and the price a submit is charged."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from actors.config import (
    DEFAULT_ROUTE,
    ConfigError,
    Route,
    RouteConfig,
    chain,
    charged_price,
    lowest_price,
    parse,
    route_of,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "genqueue.example.toml"
POOLS = [{"name": n, "rpm": 10, "keys": [f"key-{n}"]} for n in ("a", "b", "c")]
MODEL = "gemini-3.1-flash-image"


def config(routes: list[dict[str, Any]], **sections: Any) -> Any:
    """A config of pools a, b and c with `routes`."""
    return parse({"pools": POOLS, "routes": routes, **sections}, {})


THREE = [
    {"name": "cheap", "pools": ["a"], "price": 1},
    {"name": "mid", "pools": ["b"], "price": 2, "model": "gemini-3-pro-image-preview"},
    {"name": "dear", "pools": ["c"], "price": 5},
]


def test_no_routes_is_one_default_route_at_todays_prices() -> None:
    """Without [[routes]], each kind's chain is one "default" route of every pool at the
    [credits] price and the provider's model: charges are as before routes existed."""
    cfg = parse({"pools": POOLS, "credits": {"photography": 3, "fitting": 4}}, {})
    assert cfg.routes == ()
    assert chain(cfg, "photography") == (Route(DEFAULT_ROUTE, ("a", "b", "c"), 3, MODEL),)
    assert chain(cfg, "fitting")[0].price == 4
    assert route_of(cfg, "b", "fitting") == Route(DEFAULT_ROUTE, ("a", "b", "c"), 4, MODEL)
    assert route_of(cfg, "nowhere") is None
    for kind, price in (("photography", 3), ("fitting", 4)):
        assert charged_price(cfg, kind, None) == price == lowest_price(cfg, kind)
        assert charged_price(cfg, kind, 100) == price


def test_routes_are_read_in_order_with_prices_models_and_kinds() -> None:
    """[[routes]] tables become RouteConfigs in file order; a route without a price takes the
    kind's, without a model the provider's, without kinds serves all."""
    cfg = config(
        [
            {"name": "r1", "pools": ["a", "b"]},
            {"name": "r2", "pools": ["c"], "price": 7, "model": "m2", "kinds": ["fitting"]},
        ]
    )
    assert cfg.routes == (
        RouteConfig("r1", ("a", "b")),
        RouteConfig("r2", ("c",), 7, "m2", ("fitting",)),
    )
    assert chain(cfg, "photography") == (Route("r1", ("a", "b"), 1, MODEL),)
    assert chain(cfg, "fitting") == (Route("r1", ("a", "b"), 2, MODEL), Route("r2", ("c",), 7, "m2"))
    assert route_of(cfg, "b", "photography") == Route("r1", ("a", "b"), 1, MODEL)
    assert route_of(cfg, "c", "fitting") == Route("r2", ("c",), 7, "m2")


def test_the_charge_is_the_dearest_route_within_max_price_never_below_the_first() -> None:
    """No max_price: the first route's price; with one, the dearest route's price within it."""
    cfg = config(THREE)
    assert charged_price(cfg, "photography", None) == 1
    assert [charged_price(cfg, "photography", m) for m in (1, 2, 3, 4, 5, 9)] == [1, 2, 2, 2, 5, 5]
    assert lowest_price(cfg, "photography") == 1
    dear_first = config([THREE[2], THREE[0], THREE[1]])  # the first route is the dearest
    assert lowest_price(dear_first, "fitting") == 5
    assert charged_price(dear_first, "fitting", 5) == charged_price(dear_first, "fitting", None) == 5


def test_credits_off_makes_every_route_free() -> None:
    """With [credits] enabled = false nothing is charged, whatever the routes' prices."""
    cfg = config(THREE, credits={"enabled": False})
    assert [r.price for r in chain(cfg, "fitting")] == [0, 0, 0]
    assert charged_price(cfg, "fitting", 5) == 0


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ([{"name": "x", "pools": ["a", "b"]}, {"name": "x", "pools": ["c"]}], "used twice"),
        ([{"name": "x", "pools": ["a", "b", "c", "z"]}], "pool 'z' is not configured"),
        ([{"name": "x", "pools": ["a", "b"]}, {"name": "y", "pools": ["b", "c"]}], "already in route 'x'"),
        ([{"name": "x", "pools": ["a", "b", "c"], "kinds": ["fitting"]}], "no route serves photography"),
        ([{"name": "x", "pools": ["a", "b"]}], "pool c is in no route"),
        ([{"name": "x", "pools": ["a", "b", "c"], "price": -1}], "price must be credits >= 0"),
        ([{"name": "x", "pools": ["a", "b", "c"], "price": 1.5}], "routes[0].price: expected whole"),
        ([{"name": "x", "pools": []}], "pools is empty"),
        ([{"name": "x", "pools": ["a", "b", "c"], "kinds": ["video"]}], "kinds video unknown"),
        ([{"name": "x", "pools": ["a", "b", "c"], "cost": 1}], "unknown key 'cost'"),
        ({"name": "x"}, "expected an array of tables"),
    ],
)
def test_a_bad_route_is_refused_in_one_line(routes: Any, message: str) -> None:
    """Each rule of [[routes]] is a one-line ConfigError saying what is wrong."""
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        config(routes)
    assert "\n" not in str(caught.value)


def test_the_example_routes_parse_once_uncommented() -> None:
    """The commented [[routes]] of genqueue.example.toml is a valid configuration."""
    text = EXAMPLE.read_text()
    block = re.search(r"^# \[\[routes\]\]\n(?:# .*\n)+", text, re.MULTILINE)
    assert block is not None
    uncommented = "\n".join(line[2:].split("  #")[0] for line in block.group().splitlines())
    raw = tomllib.loads(text.replace(block.group(), uncommented + "\n", 1))
    cfg = parse(raw, {"GEMINI_KEY_A1": "x", "GEMINI_KEY_A2": "y", "GEMINI_KEY_B1": "z"})
    assert [r.name for r in chain(cfg, "photography")] == ["standard", "premium"]
    assert charged_price(cfg, "fitting", 3) == 3 and charged_price(cfg, "fitting", None) == 1
