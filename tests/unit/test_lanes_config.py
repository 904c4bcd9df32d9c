"""`[[lanes]]`: names, weights, reserved shares and the default lane; every mistake refused in
one line that says what to do."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from actors.config import ConfigError, LaneConfig, default_lane, lane_weights, parse, reserved_slots

EXAMPLE = Path(__file__).resolve().parents[2] / "genqueue.example.toml"


def lanes(*tables: dict[str, Any], slots: int = 10) -> Any:
    return parse({"lanes": list(tables), "queue": {"slots": slots}}, {})


def test_lanes_are_read_with_weights_reserves_and_a_default() -> None:
    cfg = lanes(
        {"name": "paid", "weight": 9, "reserved": 0.2}, {"name": "free"}, {"name": "batch", "weight": 0.5}
    )
    assert cfg.lanes == (LaneConfig("paid", 9.0, 0.2), LaneConfig("free"), LaneConfig("batch", 0.5))
    assert lane_weights(cfg) == {"paid": 9.0, "free": 1.0, "batch": 0.5}
    assert default_lane(cfg) == "batch"  # none marked: the last listed
    assert reserved_slots(cfg) == {"paid": 2}
    marked = lanes({"name": "paid", "weight": 9}, {"name": "free", "default": True}, {"name": "batch"})
    assert default_lane(marked) == "free"


def test_no_lanes_is_the_one_unnamed_lane() -> None:
    cfg = parse({}, {})
    assert cfg.lanes == () and default_lane(cfg) == "" and lane_weights(cfg) == {}


def test_the_example_files_lanes_parse() -> None:
    """The commented [[lanes]] of genqueue.example.toml, uncommented, make a valid config."""
    text = EXAMPLE.read_text()
    block = text[text.index("# [[lanes]]") :].split("\n\n")[0]
    uncommented = re.sub(r"^# ?", "", block, flags=re.M)
    cfg = parse(tomllib.loads(uncommented), {})
    assert [lane.name for lane in cfg.lanes] == ["paid", "free"] and default_lane(cfg) == "free"


@pytest.mark.parametrize(
    ("tables", "says"),
    [
        ([{"name": "a"}, {"name": "a"}], "used twice"),
        ([{"name": "a", "weight": 0}], "weight must be > 0"),
        ([{"name": "a", "weight": "9"}], "expected a number"),
        ([{"name": "a", "reserved": 1.0}], "reserved is a fraction"),
        ([{"name": "a", "reserved": 0.6}, {"name": "b", "reserved": 0.5}], "add up to 1 or more"),
        ([{"name": "a", "default": True}, {"name": "b", "default": True}], "more than one lane"),
        ([{"name": "a b"}], "letters, digits or '-'"),
        ([{"name": ""}], "letters, digits or '-'"),
        ([{"name": "a", "wieght": 2}], "weight"),
        ([{"name": f"l{i}"} for i in range(9)], "at most 8 lanes"),
    ],
)
def test_a_bad_lane_is_refused_in_one_line(tables: list[dict[str, Any]], says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        lanes(*tables)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_reserved_shares_need_the_per_worker_token_path() -> None:
    """The round-batched token path grants in dispatch order, past a window's reserve: a config
    with both is refused in one line."""
    with pytest.raises(ConfigError, match="tokens_per_round = false"):
        parse({"lanes": [{"name": "paid", "reserved": 0.2}], "keypool": {"tokens_per_round": True}}, {})
    assert parse({"lanes": [{"name": "paid"}], "keypool": {"tokens_per_round": True}}, {}).lanes
