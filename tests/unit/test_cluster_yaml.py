"""Checks that ray_cluster.yaml is a Ray cluster-launcher config Ray itself accepts."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "ray_cluster.yaml"
RAY_SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
REDIS_DEFAULT_PORT = 6379

# `--port=6380`, `--port 6380`, `--address=$RAY_HEAD_IP:6380`, `--address auto`.
_PORT_FLAG = re.compile(r"(?:^|\s)--(port|address)(?:=|\s+)(\S+)")


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The cluster config as yaml.safe_load parses it."""
    loaded = yaml.safe_load(CLUSTER_YAML.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """The cluster-config JSON schema shipped inside the installed Ray."""
    return json.loads(RAY_SCHEMA.read_text())


def _ray_start_commands(config: dict[str, Any]) -> list[str]:
    commands: list[str] = []
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        commands += [c for c in config.get(key, []) if "ray start" in c]
    return commands


def _port_of(flag: str, value: str) -> int | None:
    if flag == "port":
        return int(value)
    _, sep, port = value.rpartition(":")
    return int(port) if sep and port.isdigit() else None


def test_validates_against_ray_schema(config: dict[str, Any], schema: dict[str, Any]) -> None:
    """The raw YAML passes jsonschema validation against Ray's own ray-schema.json."""
    jsonschema.validate(config, schema)


def test_unknown_top_level_key_fails_validation(config: dict[str, Any], schema: dict[str, Any]) -> None:
    """Adding an unknown top-level key makes the same validation fail, so the check has teeth."""
    broken = copy.deepcopy(config)
    broken["not_a_ray_setting"] = True
    with pytest.raises(jsonschema.ValidationError, match="not_a_ray_setting"):
        jsonschema.validate(broken, schema)


def test_local_provider_does_not_define_node_types(config: dict[str, Any]) -> None:
    """The local provider config leaves available_node_types and head_node_type to Ray."""
    assert config["provider"]["type"] == "local"
    assert "available_node_types" not in config
    assert "head_node_type" not in config


def test_ray_prepare_and_validate_config_accept_it(config: dict[str, Any]) -> None:
    """Ray's own prepare_config and validate_config, as used by `ray up`, accept the config."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    node_types = prepared["available_node_types"]
    assert len(node_types) == 1
    (node_type,) = node_types.values()
    workers = len(config["provider"]["worker_ips"])
    assert node_type["min_workers"] == workers
    assert node_type["max_workers"] == workers


def test_every_ray_start_names_a_port_other_than_6379(config: dict[str, Any]) -> None:
    """Every `ray start` names --port or --address with an explicit port that is not 6379."""
    commands = _ray_start_commands(config)
    assert any("--head" in c for c in commands)
    assert any("--head" not in c for c in commands)
    for command in commands:
        ports = [_port_of(flag, value) for flag, value in _PORT_FLAG.findall(command)]
        ports = [p for p in ports if p is not None]
        assert ports, f"no explicit --port/--address port in: {command}"
        assert REDIS_DEFAULT_PORT not in ports, f"uses Redis's port 6379: {command}"


def test_workers_join_the_head_port(config: dict[str, Any]) -> None:
    """Workers connect to the same port the head's `ray start --head --port` opens."""
    head_ports: set[int | None] = set()
    worker_ports: set[int | None] = set()
    for command in _ray_start_commands(config):
        target = head_ports if "--head" in command else worker_ports
        target.update(_port_of(f, v) for f, v in _PORT_FLAG.findall(command))
    assert len(head_ports) == 1
    assert worker_ports == head_ports
