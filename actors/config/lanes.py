"""Priority lanes: each task rides one lane, and the lanes share slots and upstream calls by weight.

A lane with tasks waiting gets at least its weight's share of the slots and of each pool's
window; a lane with nothing waiting lends its share to the others and takes it back as the
lent slots and places come free. `reserved` (a fraction of the slots) is never lent: those
slots stay free for the lane's next task. Fairness by user holds inside each lane. With no
`[[lanes]]`, every task rides the one unnamed lane and nothing changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actors.config.pools import ConfigError

if TYPE_CHECKING:
    from actors.config.sections import Config

LANE_KEYS = ("name", "weight", "reserved", "default")
MAX_LANES = 8
MAX_LANE_NAME = 32


@dataclass(frozen=True, slots=True)
class LaneConfig:
    """One `[[lanes]]` table: its name, its weight (a share of slots and calls while it has
    tasks waiting), the fraction of the slots kept for it alone, and whether tokens that name
    no lane ride it."""

    name: str
    weight: float = 1.0
    reserved: float = 0.0
    default: bool = False

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > MAX_LANE_NAME or not self.name.replace("-", "").isalnum():
            raise ConfigError(
                f"[[lanes]]: name {self.name!r} must be 1-{MAX_LANE_NAME} letters, digits or '-'"
            )
        if not (0 < self.weight < math.inf):
            raise ConfigError(f"lane {self.name!r}: weight must be > 0, got {self.weight}")
        if not 0 <= self.reserved < 1:
            raise ConfigError(f"lane {self.name!r}: reserved is a fraction of the slots in [0, 1)")


def check_lanes(lanes: Sequence[LaneConfig]) -> None:
    """Raise ConfigError unless lane names are unique, at most one is the default, there are at
    most MAX_LANES, and the reserved fractions leave room for the rest."""
    if not lanes:
        return
    names = [lane.name for lane in lanes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"[[lanes]]: lane name {', '.join(twice)} is used twice; name each lane once")
    if len(lanes) > MAX_LANES:
        raise ConfigError(f"[[lanes]]: at most {MAX_LANES} lanes, got {len(lanes)}")
    if sum(lane.default for lane in lanes) > 1:
        raise ConfigError("[[lanes]]: more than one lane has default = true; mark one")
    if sum(lane.reserved for lane in lanes) >= 1:
        raise ConfigError("[[lanes]]: the reserved fractions add up to 1 or more; lower them")


def parse_lanes(
    raw: Any, refuse_unknown: Callable[[str, Iterable[str], Iterable[str]], None]
) -> tuple[LaneConfig, ...]:
    """The `[[lanes]]` tables of a TOML document as LaneConfigs (`refuse_unknown` refuses a
    misspelt key)."""
    if not isinstance(raw, list):
        raise ConfigError("[[lanes]]: expected an array of tables ([[lanes]])")
    lanes = []
    for i, item in enumerate(raw):
        where = f"lanes[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a table")
        refuse_unknown(where, item, LANE_KEYS)
        name, weight = item.get("name", ""), item.get("weight", 1.0)
        reserved, default = item.get("reserved", 0.0), item.get("default", False)
        if not isinstance(name, str):
            raise ConfigError(f"{where}.name: expected a string")
        for key, value in (("weight", weight), ("reserved", reserved)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{where}.{key}: expected a number, got {value!r}")
        if not isinstance(default, bool):
            raise ConfigError(f"{where}.default: expected true or false")
        lanes.append(LaneConfig(name, float(weight), float(reserved), default))
    return tuple(lanes)


def default_lane(config: Config) -> str:
    """The lane of a task whose token names none: the lane marked default, else the last one
    listed ("" with no lanes)."""
    if not config.lanes:
        return ""
    return next((lane.name for lane in config.lanes if lane.default), config.lanes[-1].name)


def lane_weights(config: Config) -> dict[str, float]:
    """Each lane's weight by name (empty with no lanes)."""
    return {lane.name: lane.weight for lane in config.lanes}


def reserved_slots(config: Config) -> dict[str, int]:
    """The slots kept for each lane alone: its reserved fraction of the slots, rounded down."""
    return {lane.name: int(lane.reserved * config.queue.slots) for lane in config.lanes if lane.reserved}


def next_lane(weights: Mapping[str, float], used: Mapping[str, float], candidates: Iterable[str]) -> str:
    """Of the `candidates` (lanes with a task to serve), the one furthest below its share: the
    least `used` per unit of weight, ties to the heavier lane, then by name. A lane unknown to
    `weights` (an older task's, or "") weighs 1."""
    return min(
        candidates,
        key=lambda lane: (used.get(lane, 0) / weights.get(lane, 1.0), -weights.get(lane, 1.0), lane),
    )
