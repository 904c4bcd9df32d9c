"""Config: TOML plus GENQUEUE_* overrides into frozen objects, with errors that name the key."""

from __future__ import annotations

import tomllib
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from actors.config import ConfigError, Secret, load, parse

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
