"""The AWS cluster config, the Serve config and the KubeRay RayService pass Ray's own schemas."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parents[2]
RAY_SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def _load(path: str) -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / path).read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_the_aws_cluster_passes_rays_schema_and_places_genqueue() -> None:
    """deploy/aws/ray_cluster.yaml validates; only the head has genqueue_head, workers genqueue_worker."""
    config = _load("deploy/aws/ray_cluster.yaml")
    jsonschema.validate(config, RAY_SCHEMA)
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"]["genqueue_head"] == 1
    assert all(
        "genqueue_head" not in t["resources"] for n, t in types.items() if n != config["head_node_type"]
    )
    assert any(t["resources"].get("genqueue_worker", 0) >= 1 for t in types.values())
    starts = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert "--port=6380" in starts and ":6380" in starts and "genqueue up --address auto" in starts


def test_the_aws_cluster_check_has_teeth() -> None:
    """A misspelt node-type key fails the same validation."""
    config = _load("deploy/aws/ray_cluster.yaml")
    config["available_node_types"]["head"]["resourcez"] = {}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, RAY_SCHEMA)


def _serve_configs() -> dict[str, dict[str, Any]]:
    service = _load("deploy/kuberay/rayservice.yaml")
    return {
        "serve.yaml": _load("deploy/serve.yaml"),
        "rayservice": yaml.safe_load(service["spec"]["serveConfigV2"]),
    }


@pytest.mark.parametrize("name", ["serve.yaml", "rayservice"])
def test_serve_configs_pass_serves_schema_and_import_the_builder(name: str) -> None:
    """ServeDeploySchema accepts the config, and its import path names genqueue's app builder."""
    schema = ServeDeploySchema.model_validate(_serve_configs()[name])
    (application,) = schema.applications
    module, _, attr = application.import_path.partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    assert application.route_prefix == "/" and "config" in application.args


def test_serve_schema_check_has_teeth() -> None:
    """An application without an import path, or a proxy location Serve does not know, fails."""
    broken = _serve_configs()["serve.yaml"]
    del broken["applications"][0]["import_path"]
    with pytest.raises(ValueError):
        ServeDeploySchema.model_validate(broken)
    broken = _serve_configs()["serve.yaml"]
    broken["proxy_location"] = "Everywhere"
    with pytest.raises(ValueError):
        ServeDeploySchema.model_validate(broken)


def test_the_rayservice_places_singletons_on_the_head() -> None:
    """A ray.io/v1 RayService whose head starts with genqueue_head and workers with genqueue_worker."""
    service = _load("deploy/kuberay/rayservice.yaml")
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    cluster = service["spec"]["rayClusterConfig"]
    head = json.loads(yaml.safe_load(cluster["headGroupSpec"]["rayStartParams"]["resources"]))
    assert head == {"genqueue_head": 1}
    (workers,) = cluster["workerGroupSpecs"]
    assert json.loads(yaml.safe_load(workers["rayStartParams"]["resources"])) == {"genqueue_worker": 4}
    env = workers["template"]["spec"]["containers"][0]["env"]
    assert env[0]["valueFrom"]["secretKeyRef"]["name"] == "genqueue"
