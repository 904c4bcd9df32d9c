"""Config: TOML plus GENQUEUE_* overrides into frozen objects, with errors that name the key."""

from __future__ import annotations

import re
import tomllib
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
from typer.testing import CliRunner

from actors.config import (
    OTHER_ENVIRONMENT,
    ConfigError,
    Secret,
    load,
    parse,
    relaxed_security,
    setting_names,
)
from serve_app.cli import main as cli

EXAMPLE = Path(__file__).resolve().parents[2] / "genqueue.example.toml"


def test_defaults_are_the_embedded_offline_setup() -> None:
    """With no file, genqueue runs offline on the embedded store with three 15-RPM pools."""
    config = parse({}, {})
    assert config.redis.url == "" and config.provider.name == "offline"
    assert [p.rpm for p in config.pools] == [15, 15, 15] and config.queue.slots == 40


def test_the_example_file_documents_a_valid_config() -> None:
    """genqueue.example.toml parses, and names every section."""
    raw = tomllib.loads(EXAMPLE.read_text())
    config = parse(raw, {"GEMINI_KEY_A1": "x", "GEMINI_KEY_A2": "y", "GEMINI_KEY_B1": "z"})
    assert {"redis", "queue", "provider", "pools", "server", "limits"} <= set(raw)
    assert config.pools[0].window_seconds == 60.0


def test_environment_overrides_the_file() -> None:
    """GENQUEUE_<SECTION>_<KEY> and GENQUEUE_REDIS_URL win over the file."""
    config = parse(
        {"queue": {"slots": 5}},
        {
            "GENQUEUE_QUEUE_SLOTS": "7",
            "GENQUEUE_REDIS_URL": "redis://h:1/0",
            "GENQUEUE_PROVIDER_LATENCY_SECONDS": "0.5",
        },
    )
    assert config.queue.slots == 7 and config.redis.url == "redis://h:1/0"
    assert config.provider.latency_seconds == 0.5


def test_keys_come_from_literals_or_the_environment_and_never_show() -> None:
    """`env:VAR` reads the variable; a Secret's repr hides it; key ids name pool and position."""
    config = parse({"pools": [{"name": "a", "rpm": 10, "keys": ["env:K", "literal"]}]}, {"K": "s3cret"})
    pool = config.pools[0]
    assert pool.key_ids == ("a#1", "a#2")
    assert config.key_secret("a#1").reveal() == "s3cret"
    assert "s3cret" not in repr(config) and "literal" not in repr(config)
    assert Secret("x") == Secret("x")


def test_config_objects_are_frozen() -> None:
    """Parsed config cannot be changed after the fact."""
    config = parse({}, {})
    with pytest.raises(FrozenInstanceError):
        config.queue.slots = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "env", "message"),
    [
        ({"queue": {"slots": "many"}}, {}, "queue.slots"),
        ({"queue": {"bogus": 1}}, {}, "bogus"),
        ({"nonsense": {}}, {}, "nonsense"),
        ({"queue": {"slots": 0}}, {}, "slots"),
        ({"provider": {"name": "dalle"}}, {}, "provider.name"),
        ({"pools": []}, {}, "at least one pool"),
        ({"pools": [{"name": "a", "rpm": 10, "keys": ["env:MISSING"]}]}, {}, "MISSING"),
        ({"pools": [{"name": "a", "rpm": 10, "keys": []}]}, {}, "pools[0].keys"),
        (
            {
                "pools": [
                    {"name": "a", "rpm": 10, "keys": ["k"]},
                    {"name": "a", "rpm": 5, "keys": ["k"]},
                ]
            },
            {},
            "unique",
        ),
        ({}, {"GENQUEUE_QUEUE_SLOTS": "x"}, "GENQUEUE_QUEUE_SLOTS"),
        ({"queue": {"gather_ms": -1}}, {}, "[queue]: gather_ms"),
        ({}, {"GENQUEUE_QUEUE_GATHER_MS": "5000"}, "[queue]: gather_ms"),
    ],
)
def test_bad_config_is_refused_with_the_key_named(
    raw: dict[str, object], env: dict[str, str], message: str
) -> None:
    """Every mistake raises ConfigError whose message names the offending key."""
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse(raw, env)


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    """A missing file or broken TOML is a ConfigError, not a traceback."""
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "nope.toml", {})
    bad = tmp_path / "bad.toml"
    bad.write_text("[queue\nslots=")
    with pytest.raises(ConfigError):
        load(bad, {})


def test_booleans_take_only_the_spellings_of_true_and_false() -> None:
    """true/false, 1/0, yes/no and on/off in any case set a boolean; anything else is a ConfigError
    that names the variable and the allowed spellings, never a silent false."""
    allowed = {"true": True, "False": False, "1": True, "0": False, "YES": True, "no": False, " on ": True}
    for spelling, value in {**allowed, "Off": False}.items():
        assert parse({}, {"GENQUEUE_AUTH_REQUIRED": spelling}).auth.required is value
        assert parse({"credits": {"enabled": spelling}}, {}).credits.enabled is value
    for spelling in ("ture", "Flase", "2", "", "enabled"):
        for name in ("GENQUEUE_AUTH_REQUIRED", "GENQUEUE_CREDITS_ENABLED"):
            expected = rf"^{name}: expected true or false \(or 1/0, yes/no, on/off\), got '{spelling}'"
            with pytest.raises(ConfigError, match=expected):
                parse({}, {name: spelling})
        with pytest.raises(ConfigError, match=r"^auth\.required: expected true or false"):
            parse({"auth": {"required": spelling}}, {})
    with pytest.raises(ConfigError, match=r"queue\.slots"):
        parse({"queue": {"slots": True}}, {})


@pytest.mark.parametrize(
    ("raw", "env", "message"),
    [
        (
            {},
            {"GENQUEUE_AUTH_REQUIRD": "true"},
            "GENQUEUE_AUTH_REQUIRD (did you mean GENQUEUE_AUTH_REQUIRED?)",
        ),
        ({}, {"GENQUEUE_REDIS_ULR": "redis://h"}, "(did you mean GENQUEUE_REDIS_URL?)"),
        ({"auht": {}}, {}, "unknown section [auht] (did you mean 'auth'?)"),
        ({"credits": {"enable": False}}, {}, "[credits]: unknown key 'enable' (did you mean 'enabled'?)"),
        (
            {"pools": [{"name": "a", "rpm": 1, "key": ["k"]}]},
            {},
            "pools[0]: unknown key 'key' (did you mean 'keys'?)",
        ),
    ],
)
def test_unknown_names_are_refused_with_the_closest_known_one(
    raw: dict[str, object], env: dict[str, str], message: str
) -> None:
    """A misspelt variable, section or key is an error that names the setting it was probably meant for."""
    with pytest.raises(ConfigError) as caught:
        parse(raw, env)
    assert message in str(caught.value) and "rename" in str(caught.value)


def test_every_genqueue_variable_the_project_sets_is_known() -> None:
    """Variables that genqueue's code, tests, benchmarks, deployment files and CI set are all accepted."""
    root = Path(__file__).resolve().parents[2]
    places = [root / p for p in ("tests", "bench", "serve_app", "actors", "deploy", ".ci", "Makefile")]
    files = [f for p in places for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    found = {
        name
        for f in files
        if f != Path(__file__).resolve() and f.suffix != ".pyc"
        for name in re.findall(r"GENQUEUE_[A-Z0-9_]*[A-Z0-9]", f.read_text(errors="ignore"))
    }
    assert {"GENQUEUE_REDIS_URL", "GENQUEUE_TEST_REDIS_URL", "GENQUEUE_TOKEN"} <= found
    assert found - setting_names() - OTHER_ENVIRONMENT == set()


def test_a_variable_the_file_names_as_a_key_is_known() -> None:
    """`env:GENQUEUE_…` in the file makes that variable known (it holds a key); others stay unknown."""
    raw = {
        "pools": [{"name": "a", "rpm": 1, "keys": ["env:GENQUEUE_KEY_A"]}],
        "webhooks": {"secret": "env:GENQUEUE_HOOKS"},
    }
    config = parse(raw, {"GENQUEUE_KEY_A": "k", "GENQUEUE_HOOKS": "s"})
    assert config.pools[0].keys[0].reveal() == "k" and config.webhooks.secret.reveal() == "s"
    with pytest.raises(ConfigError, match="unknown environment variable GENQUEUE_KEY_B"):
        parse(raw, {"GENQUEUE_KEY_A": "k", "GENQUEUE_HOOKS": "s", "GENQUEUE_KEY_B": "k"})


def test_haproxy_ports_default_to_any_free_one_and_must_differ() -> None:
    """Stats and exporter ports are 0 (any free) by default; set ones must be ports and differ."""
    server = parse({}, {}).server
    assert (server.haproxy_stats_port, server.haproxy_metrics_port) == (0, 0)
    assert parse({}, {"GENQUEUE_SERVER_HAPROXY_STATS_PORT": "9404"}).server.haproxy_stats_port == 9404
    with pytest.raises(ConfigError, match="must differ"):
        parse({"server": {"haproxy_stats_port": 9000, "haproxy_metrics_port": 9000}}, {})
    with pytest.raises(ConfigError, match=r"server\.haproxy_metrics_port"):
        parse({"server": {"haproxy_metrics_port": 70000}}, {})


def test_relaxed_security_settings_are_named() -> None:
    """The defaults relax nothing; each loosened safety setting is named with what it means."""
    assert relaxed_security(parse({}, {})) == []
    raw = {
        "auth": {"required": False},
        "credits": {"enabled": False},
        "redis": {"url": "redis://redis.internal:6379/0"},
        "provider": {"name": "gemini", "base_url": "http://gemini.internal"},
        "alerts": {"webhooks": ["http://hooks.internal/s3cret-path"]},
        "webhooks": {"secret": "whsec", "allow_networks": ["10.0.0.0/8"]},
    }
    named = relaxed_security(parse(raw, {}))
    settings = [setting for setting, _ in named]
    assert settings == [
        "auth.required",
        "credits.enabled",
        "redis.url",
        "redis.url",
        "webhooks.allow_networks",
        "provider.base_url",
        "alerts.webhooks[0]",
    ]
    assert "s3cret" not in str(named)
    local = {"redis": {"url": "redis://127.0.0.1:6379/0"}, "provider": {"base_url": "http://127.0.0.1:9000"}}
    assert relaxed_security(parse(local, {})) == []
    assert relaxed_security(parse({"redis": {"url": "rediss://:pw@redis.internal:6380/0"}}, {})) == []


def test_the_cli_names_a_bad_setting_in_one_line() -> None:
    """`genqueue up` with a misspelt boolean exits 2 before starting, in one line that says what to do."""
    result = CliRunner().invoke(cli.app, ["up"], env={"GENQUEUE_AUTH_REQUIRED": "ture"})
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "GENQUEUE_AUTH_REQUIRED" in lines[0] and "expected true or false" in lines[0]
