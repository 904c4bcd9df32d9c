"""The application builder that `serve deploy` and RayService manifests name: `serve_app.deployment:app`."""

from __future__ import annotations

from typing import Any

from serve_app.runtime import deployed


def app(args: dict[str, str]) -> Any:
    """The application builder for `serve deploy` (see deploy/serve.yaml): reads the config
    file named by `args["config"]` (and GENQUEUE_* variables), finds or starts the actors,
    and returns the ingress."""
    return deployed(args.get("config") or None)
