"""HAProxy as genqueue runs it: Ray's own config, its stats page and exporter on one host, its socket 0600."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.haproxy import harden_haproxy_config


def _ray_config(directory: Path, stats_port: int, metrics_port: int) -> str:
    """The config the installed Ray writes for its HAProxy, from Ray's own template."""
    from ray.serve._private.haproxy import HAProxyApi, HAProxyConfig

    cfg = HAProxyConfig(
        socket_path=str(directory / "admin.sock"),
        server_state_base=str(directory),
        server_state_file=str(directory / "server-state"),
        metrics_socket_path=str(directory / "metrics.sock"),
        stats_port=stats_port,
        metrics_port=metrics_port,
    )
    api = HAProxyApi(cfg=cfg, config_file_path=str(directory / "haproxy.cfg"))
    api._generate_config_file_internal()
    return (directory / "haproxy.cfg").read_text()


def _binds(text: str) -> set[str]:
    return {line.split()[1] for line in text.splitlines() if line.split()[:1] == ["bind"]}


def test_rays_config_binds_every_interface_and_genqueue_binds_its_host(tmp_path: Path) -> None:
    """Ray's config listens on every interface with a 0666 admin socket; hardened, on the host and 0600."""
    ray_text = _ray_config(tmp_path, 18404, 19101)
    assert {"*:18404", ":19101"} <= _binds(ray_text) and " mode 666 " in ray_text
    hardened = harden_haproxy_config(ray_text, "127.0.0.1", 18404, 19101)
    binds = _binds(hardened)
    assert {"127.0.0.1:18404", "127.0.0.1:19101"} <= binds and not {"*:18404", ":19101"} & binds
    assert " mode 600 " in hardened and " mode 666 " not in hardened
    assert harden_haproxy_config(hardened, "127.0.0.1", 18404, 19101) == hardened
    assert len(hardened.splitlines()) == len(ray_text.splitlines())


def test_a_changed_template_stops_haproxy_rather_than_exposing_it() -> None:
    """If the listeners or the socket are not where genqueue expects them, hardening refuses."""
    with pytest.raises(ValueError, match="could not bind HAProxy"):
        harden_haproxy_config("listen stats\n  bind 0.0.0.0:18404\n", "127.0.0.1", 18404, 19101)
    socketless = "frontend prometheus\n  bind :19101\nlisten stats\n  bind *:18404\n"
    with pytest.raises(ValueError, match="admin socket"):
        harden_haproxy_config(socketless, "127.0.0.1", 18404, 19101)
