"""What a client and an operator meet before genqueue serves: 503 with Retry-After (never Ray's 404
or 500), and start-up checks that fail in one line naming the setting."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serve_app.haproxy import (
    UNAVAILABLE_FILE,
    Standby,
    harden_haproxy_config,
    unavailable_instead_of_errors,
    unavailable_response,
)
from serve_app.runtime import StartupError, check_port, check_redis
from tests.conftest import free_port


def _ray_config(directory: Path) -> str:
    """The config the installed Ray writes for its HAProxy, from Ray's own template."""
    from ray.serve._private.haproxy import HAProxyApi, HAProxyConfig

    cfg = HAProxyConfig(
        socket_path=str(directory / "admin.sock"),
        server_state_base=str(directory),
        server_state_file=str(directory / "server-state"),
        metrics_socket_path=str(directory / "metrics.sock"),
        stats_port=18404,
        metrics_port=19101,
    )
    HAProxyApi(cfg=cfg, config_file_path=str(directory / "haproxy.cfg"))._generate_config_file_internal()
    return (directory / "haproxy.cfg").read_text()


def test_rays_404_and_500_become_a_503_with_retry_after(tmp_path: Path) -> None:
    """Ray's config answers a route no app serves with a 404 and no replica up with its 500 page;
    genqueue's answers both 503 with Retry-After and a problem body, and HAProxy accepts it."""
    errorfile = tmp_path / UNAVAILABLE_FILE
    errorfile.write_bytes(unavailable_response())
    ray_text = _ray_config(tmp_path)
    assert "http-request return status 404" in ray_text
    text = unavailable_instead_of_errors(
        harden_haproxy_config(ray_text, "127.0.0.1", 18404, 19101), str(errorfile)
    )
    assert "status 404" not in text
    assert "http-request return status 503 content-type application/problem+json" in text
    assert "hdr retry-after 2" in text
    assert f"errorfile 503 {errorfile}" in text and f"errorfile 502 {errorfile}" in text
    assert unavailable_instead_of_errors(text, str(errorfile)) == text
    binary = shutil.which("haproxy") or _bundled_haproxy()
    if binary:
        (tmp_path / "haproxy.cfg").write_text(text)
        checked = subprocess.run([binary, "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True)
        assert checked.returncode == 0, checked.stderr


def _bundled_haproxy() -> str | None:
    from serve_app.haproxy import _haproxy_binary

    return _haproxy_binary()


@pytest.fixture
def standby() -> Iterator[Standby]:
    """A standby listener on a free port of 127.0.0.1."""
    listener = Standby("127.0.0.1", free_port())
    listener.open()
    try:
        yield listener
    finally:
        listener.close()


def test_the_standby_answers_every_request_503_and_shares_its_port(standby: Standby) -> None:
    """Any method and path gets the 503 problem with Retry-After; a listener with SO_REUSEPORT (as
    HAProxy runs) binds the same port beside it; once closed, nothing answers."""
    url = f"http://127.0.0.1:{standby.port}"
    for answer in (
        httpx.get(f"{url}/v1/tasks/abc", timeout=5),
        httpx.post(f"{url}/v1/tasks", json={"kind": "photography"}, timeout=5),
        httpx.delete(f"{url}/", timeout=5),
    ):
        assert answer.status_code == 503 and answer.headers["retry-after"] == "2"
        assert answer.headers["content-type"] == "application/problem+json"
        assert json.loads(answer.content)["status"] == 503
    with socket.socket() as haproxy_like:
        haproxy_like.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        haproxy_like.bind(("127.0.0.1", standby.port))
    standby.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=5)


def test_a_port_in_use_is_named_with_the_flag_that_changes_it(standby: Standby) -> None:
    """Something listening on the port (the standby here) fails the check; a free port passes."""
    with pytest.raises(StartupError, match=r"^server\.port \d+: 127\.0\.0\.1:\d+ is in use .*--port"):
        check_port("127.0.0.1", standby.port, "server.port")
    with pytest.raises(StartupError, match=r"haproxy_stats_port .*\[server\] haproxy_stats_port"):
        check_port("127.0.0.1", standby.port, "server.haproxy_stats_port")
    check_port("127.0.0.1", free_port(), "server.port")
    with pytest.raises(StartupError, match=r"^server\.host '192\.0\.2\.1' is not an address of this machine"):
        check_port("192.0.2.1", free_port(), "server.port")


def test_a_bad_or_unreachable_redis_url_is_one_line_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A URL that is not Redis's and one where nothing listens each fail naming the setting; the
    password never shows."""
    monkeypatch.delenv("GENQUEUE_REDIS_URL", raising=False)
    with pytest.raises(StartupError, match=r"^redis\.url 'localhost:6379' is not a Redis URL"):
        check_redis("localhost:6379")
    monkeypatch.setenv("GENQUEUE_REDIS_URL", f"redis://:sekrit@127.0.0.1:{free_port()}/0")
    with pytest.raises(StartupError) as refused:
        check_redis(f"redis://:sekrit@127.0.0.1:{free_port()}/0")
    message = str(refused.value)
    assert message.startswith("redis.url: cannot reach redis://:***@127.0.0.1:")
    assert "sekrit" not in message and "\n" not in message and "start that Redis" in message
