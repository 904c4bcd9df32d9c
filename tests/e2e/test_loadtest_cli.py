"""`genqueue loadtest` over HTTP against genqueue with tokens required: a service token submits for
each simulated user, every user follows its task to the end, and refusals are counted by reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serve_app.cli.main import app
from serve_app.http.auth import new_token
from serve_app.runtime import Running, running
from tests.conftest import free_port
from tests.helpers import append_to, make_config

runner = CliRunner()
USERS = 12


@pytest.fixture(scope="module")
def live(ray_session: None, store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """Tokens required, offline provider, 4 slots, 10 calls a second."""
    config = make_config(
        store_url,
        str(tmp_path_factory.mktemp("loadtest")),
        slots=4,
        latency=0.2,
        pools=(("p1", 600, 1.0),),
        port=free_port(),
        auth=True,
    )
    with running(config, dashboard=False) as r:
        yield r


def test_bad_input_is_a_clear_error_without_a_traceback() -> None:
    """A malformed URL, no users, an unknown kind and an unreachable instance each say what is wrong."""
    bad = runner.invoke(app, ["loadtest", "not-a-url", "--users", "0", "--kind", "portrait"])
    assert bad.exit_code == 2
    for words in ("URL must be http(s)://HOST[:PORT]", "--users must be >= 1", "--kind must be one of"):
        assert words in bad.output
    gone = runner.invoke(app, ["loadtest", f"http://127.0.0.1:{free_port()}", "--users", "2"])
    assert gone.exit_code == 1 and "cannot read" in gone.output
    for result in (bad, gone):
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "Traceback" not in result.output


def test_a_service_token_submits_for_every_user_and_each_follows_its_task(
    live: Running, tmp_path: Path
) -> None:
    """Every user is accepted and gets an image; the token never shows; the JSON has the figures.
    A service token may not read /v1/queue, so there is no bound to compare with."""
    secret, created = new_token("shop-backend", "service")
    append_to(live.config, [created])
    out = tmp_path / "figures.json"
    args = ["loadtest", live.api_url, "--users", str(USERS), "--ramp", "0.5", "--json", str(out)]
    result = runner.invoke(app, [*args, "--token", secret], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert secret not in result.output and secret not in out.read_text()
    figures = json.loads(out.read_text())
    assert (figures["users"], figures["accepted"], figures["succeeded"]) == (USERS, USERS, USERS)
    assert figures["rejected"] == {} and figures["failures"] == {}
    assert sum(figures["followed"].values()) == USERS
    assert 0 < figures["wait_p50_s"] <= figures["wait_p90_s"] <= figures["wait_p99_s"] < figures["makespan_s"]
    # Each user's time to image holds its task's wait and its slot's hold, so every quantile does.
    for q in ("p50", "p90", "p99"):
        assert figures[f"time_to_image_{q}_s"] >= figures[f"wait_{q}_s"]
    assert figures["time_to_image_p50_s"] >= figures["hold_p50_s"] > 0 and figures["call_mean_s"] > 0
    assert figures["bound"] is None and "n/a: /v1/queue was not readable" in result.output


def test_refused_submits_are_counted_by_status_and_title(live: Running) -> None:
    """Without a token every submit is a 401, reported as such; nothing is followed."""
    result = runner.invoke(app, ["loadtest", live.api_url, "--users", "5"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "accepted" in result.output and "0 of 5" in result.output
    assert "5: 401 Unauthorized" in result.output
