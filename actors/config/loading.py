"""Reading the configuration: the TOML file and GENQUEUE_* overrides, checked once, and what is loosened."""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import limits

from actors.config.lanes import parse_lanes
from actors.config.pools import STANDARD, check_pools
from actors.config.routes import parse_routes
from actors.config.sections import (
    SECTIONS,
    Config,
    ConfigError,
    LimitsConfig,
    PoolConfig,
    Secret,
    ServerConfig,
    WebhooksConfig,
    default_pools,
)

# Secrets a section holds: a literal or env:VAR, never shown.
SECRETS = (("webhooks", "secret"), ("storage", "link_secret"))
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _boolean(where: str, value: Any) -> bool:
    """`value` as a boolean, refusing anything but the spellings of true and false: a typo must
    not turn a safety setting off."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower() if isinstance(value, str | int) else ""
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ConfigError(f"{where}: expected true or false (or 1/0, yes/no, on/off), got {value!r}")


def _hint(name: str, known: Iterable[str], quote: bool = True) -> str:
    """' (did you mean X?)' for the known name closest to `name`, or nothing."""
    close = difflib.get_close_matches(name, list(known), n=1)
    if not close:
        return ""
    return f" (did you mean {close[0]!r}?)" if quote else f" (did you mean {close[0]}?)"


def _refuse_unknown(where: str, names: Iterable[str], known: Iterable[str]) -> None:
    """A misspelt key would be silently ignored and its default used: refuse it instead."""
    allowed = set(known)
    unknown = sorted(set(names) - allowed)
    if unknown:
        named = ", ".join(f"{name!r}{_hint(name, allowed)}" for name in unknown)
        raise ConfigError(f"{where}: unknown key {named}; remove or rename it")


# GENQUEUE_* variables that are not settings: read by the CLI or by the tests.
OTHER_ENVIRONMENT = frozenset(
    {
        "GENQUEUE_TOKEN",  # the bearer token of `genqueue top` and `genqueue loadtest`
        "GENQUEUE_TEST_REDIS_URL",  # tests: the optional external Redis of the contract suite
        "GENQUEUE_CHROMIUM",  # tests: the browser that drives the pages
        "GENQUEUE_SCREENSHOTS",  # tests: where the pages' screenshots go
    }
)


def setting_names() -> frozenset[str]:
    """Every GENQUEUE_<SECTION>_<KEY> that overrides a setting (GENQUEUE_REDIS_URL among them)."""
    return frozenset(
        f"GENQUEUE_{section.upper()}_{f.name.upper()}"
        for section, cls in SECTIONS.items()
        for f in fields(cls)
    )


def _referenced(raw: Mapping[str, Any]) -> set[str]:
    """Variables the file names as `env:VAR` (pool keys, the secrets): known, whatever their name."""
    pools = raw.get("pools")
    values: list[Any] = [t.get(key) for name, key in SECRETS if isinstance(t := raw.get(name), dict)]
    for pool in pools if isinstance(pools, list) else []:
        if isinstance(pool, dict) and isinstance(pool.get("keys"), list):
            values.extend(pool["keys"])
    return {v[4:] for v in values if isinstance(v, str) and v.startswith("env:")}


def _refuse_unknown_environment(raw: Mapping[str, Any], env: Mapping[str, str]) -> None:
    """A misspelt GENQUEUE_* variable would be silently ignored: refuse it instead."""
    known = setting_names() | OTHER_ENVIRONMENT | _referenced(raw)
    unknown = sorted(name for name in env if name.startswith("GENQUEUE_") and name not in known)
    if unknown:
        named = ", ".join(f"{name}{_hint(name, known, quote=False)}" for name in unknown)
        raise ConfigError(f"unknown environment variable {named}; unset or rename it")


def _coerce(where: str, value: Any, target: Any) -> Any:
    kind = target if isinstance(target, type) else type(target)
    try:
        if kind is bool:
            return _boolean(where, value)
        if kind in (int, float) and isinstance(value, bool):
            raise ValueError("a boolean is not a number")
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError("not a whole number")
        if kind is tuple:
            items = value.split(",") if isinstance(value, str) else value
            return tuple(str(v).strip() for v in items if str(v).strip())
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}") from exc


def _section(name: str, cls: type[Any], raw: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    base = cls()
    known = {f.name for f in fields(cls)}
    _refuse_unknown(f"[{name}]", raw, known)
    values = {k: _coerce(f"{name}.{k}", v, getattr(base, k)) for k, v in raw.items()}
    for key in known:
        env_value = env.get(f"GENQUEUE_{name.upper()}_{key.upper()}")
        if env_value is not None:
            values[key] = _coerce(f"GENQUEUE_{name.upper()}_{key.upper()}", env_value, getattr(base, key))
    return replace(base, **values)


def _secret(where: str, raw: Any, env: Mapping[str, str]) -> Secret:
    if not isinstance(raw, str) or not raw:
        raise ConfigError(f"{where}: a key is a non-empty string or env:VAR")
    if raw.startswith("env:"):
        var = raw[4:]
        if var not in env:
            raise ConfigError(f"{where}: environment variable {var} is not set")
        return Secret(env[var])
    return Secret(raw)


def _pools(raw: Any, env: Mapping[str, str]) -> tuple[PoolConfig, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("[[pools]]: at least one pool is needed")
    pools = []
    for i, item in enumerate(raw):
        where = f"pools[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a table")
        _refuse_unknown(where, item, [f.name for f in fields(PoolConfig)])
        name = str(item.get("name") or f"pool-{i + 1}")
        rpm = _coerce(f"{where}.rpm", item.get("rpm"), int)
        ipm = _coerce(f"{where}.ipm", item.get("ipm", 0), int)
        rpd = _coerce(f"{where}.rpd", item.get("rpd", 0), int)
        window = _coerce(f"{where}.window_seconds", item.get("window_seconds", 60.0), float)
        keys = item.get("keys")
        if not isinstance(keys, list) or not keys:
            raise ConfigError(f"{where}.keys: at least one key is needed")
        if rpm < 1 or window <= 0 or ipm < 0 or rpd < 0:
            raise ConfigError(
                f"{where}: rpm must be >= 1, ipm and rpd >= 0 (0: no limit), window_seconds > 0"
            )
        secrets = tuple(_secret(f"{where}.keys[{j}]", k, env) for j, k in enumerate(keys))
        if len(set(secrets)) != len(secrets):
            raise ConfigError(f"{where}.keys: a key is listed twice")
        tier, against = str(item.get("service_tier", STANDARD)), str(item.get("counts_against", ""))
        price = _coerce(f"{where}.price_per_image", item.get("price_per_image", -1.0), float)
        if "price_per_image" in item and not 0 <= price < math.inf:
            raise ConfigError(
                f"{where}.price_per_image: a price in USD >= 0, got {item['price_per_image']!r}"
            )
        cap = _coerce(f"{where}.max_spend_per_day", item.get("max_spend_per_day", 0.0), float)
        pools.append(PoolConfig(name, rpm, secrets, window, ipm, rpd, tier, price, against, cap))
    check_pools(pools)
    return tuple(pools)


def parse(raw: Mapping[str, Any], env: Mapping[str, str]) -> Config:
    """A Config from a parsed TOML document and an environment."""
    unknown = sorted(set(raw) - set(SECTIONS) - {"pools", "routes", "lanes"})
    if unknown:
        named = ", ".join(
            f"[{name}]{_hint(name, [*SECTIONS, 'pools', 'routes', 'lanes'])}" for name in unknown
        )
        raise ConfigError(f"unknown section {named}; remove or rename it")
    _refuse_unknown_environment(raw, env)
    # The secrets are Secrets like a pool key: a literal or env:VAR ("": webhooks off, a kept key).
    tables = {name: dict(raw.get(name, {})) for name, _ in SECRETS}
    secrets = {(name, key): tables[name].pop(key, None) for name, key in SECRETS}
    sections = {
        name: _section(name, cls, tables.get(name, raw.get(name, {})), env) for name, cls in SECTIONS.items()
    }
    for (name, key), value in secrets.items():
        if value not in (None, "") and f"GENQUEUE_{name.upper()}_{key.upper()}" not in env:
            sections[name] = replace(sections[name], **{key: _secret(f"{name}.{key}", value, env)})
    env_url = env.get("GENQUEUE_REDIS_URL")
    if env_url is not None:
        sections["redis"] = replace(sections["redis"], url=env_url)
    pools = _pools(raw["pools"], env) if "pools" in raw else default_pools()
    routes, lanes = (
        parse_routes(raw.get("routes", []), _refuse_unknown),
        parse_lanes(raw.get("lanes", []), _refuse_unknown),
    )
    config = Config(pools=pools, routes=routes, lanes=lanes, **sections)
    _check(config)
    return config


def _check(config: Config) -> None:
    if config.redis.durability not in ("server", "waitaof"):
        raise ConfigError(
            f"redis.durability: expected 'server' or 'waitaof', got {config.redis.durability!r}"
        )
    for i, url in enumerate(config.alerts.webhooks):
        if not url.startswith(("http://", "https://")):
            # Not the URL itself: a chat webhook's path is its secret.
            raise ConfigError(f"alerts.webhooks[{i}] is not an http(s) URL")
    if config.alerts.webhooks and not config.webhooks.enabled:
        raise ConfigError("alerts.webhooks: alerts are signed like task webhooks; set [webhooks] secret")
    q, p = config.queue, config.provider
    s = config.storage
    if s.retention_seconds < 0 or s.sweep_seconds <= 0:
        raise ConfigError("[storage]: retention_seconds >= 0 (0: kept), sweep_seconds > 0")
    if not 1 <= s.link_seconds <= 7 * 86_400 or 0 < len(s.link_secret.reveal()) < 32:
        raise ConfigError("[storage]: link_seconds from 1 to 604800, link_secret empty or 32+ characters")
    r, a = config.retention, config.archive
    if r.live_seconds < 0 or r.task_seconds < 0 or r.every_seconds <= 0:
        raise ConfigError(
            "[retention]: live_seconds >= 0 (0: nothing archived), task_seconds >= 0 (0: kept), "
            "every_seconds > 0"
        )
    if not 1 <= a.segment_events <= 10_000_000:
        raise ConfigError("[archive]: segment_events from 1 to 10000000")
    if a.url and "://" not in a.url:
        raise ConfigError(
            "[archive]: url is an fsspec URL such as file:///srv/genqueue/archive or s3://bucket/path"
        )
    if config.server.submit_concurrency < 1:
        raise ConfigError("server.submit_concurrency must be >= 1")
    if config.server.replicas < 1:
        raise ConfigError("server.replicas must be >= 1")
    if not (config.server.replica_cpus == 0 or 0.0001 <= config.server.replica_cpus <= 1024):
        raise ConfigError("server.replica_cpus must be 0 (no reservation) or from 0.0001 to 1024")
    if q.slots < 1 or q.workers < 1 or q.max_attempts < 1 or q.lease_seconds <= 0:
        raise ConfigError("[queue]: slots, workers and max_attempts must be >= 1, lease_seconds > 0")
    if not 0 <= q.gather_ms <= 1000:
        raise ConfigError("[queue]: gather_ms from 0 (decide at once) to 1000")
    if p.name not in ("offline", "gemini"):
        raise ConfigError(f"provider.name: expected 'offline' or 'gemini', got {p.name!r}")
    if p.image_size not in ("512", "1K", "2K"):
        raise ConfigError(f"provider.image_size: expected 512, 1K or 2K, got {p.image_size!r}")
    k = config.keypool
    if (
        k.margin_seconds < 0
        or k.lead_seconds < 0
        or not 0 < k.decrease < 1
        or k.probe_after_windows <= 0
        or k.probe_step <= 0
    ):
        raise ConfigError(
            "[keypool]: margin_seconds and lead_seconds >= 0, 0 < decrease < 1, "
            "probe_after_windows and probe_step > 0"
        )
    if q.per_user_running < 0 or q.per_user_waiting < 1 or q.max_waiting < 1:
        raise ConfigError("[queue]: per_user_running >= 0 (0: no cap), per_user_waiting and max_waiting >= 1")
    c = config.credits
    if min(c.photography, c.fitting, c.default_grant) < 0:
        raise ConfigError("[credits]: prices and default_grant must be >= 0")
    if c.daily_cap < 0 or 0 < c.daily_cap < max(c.photography, c.fitting):
        # Under a price, that kind could never be submitted, though each refusal says "tomorrow".
        raise ConfigError("[credits] daily_cap: 0 (no cap) or at least the highest price")
    lim = config.limits
    for name in ("user_submit_rate", "service_submit_rate"):
        try:
            limits.parse(getattr(lim, name))
        except ValueError as exc:
            raise ConfigError(f"limits.{name}: {exc}") from exc
    sizes = (lim.max_body_bytes, lim.max_fields_bytes, lim.max_image_bytes, lim.max_batch_tasks)
    if min(*sizes, lim.max_image_pixels, lim.max_image_side) < 1:
        raise ConfigError("[limits]: sizes must be >= 1")
    if lim.max_batch_body_bytes < lim.max_body_bytes:
        raise ConfigError("[limits]: max_batch_body_bytes must be >= max_body_bytes")
    if lim.body_read_seconds <= 0 or min(lim.max_submits_per_token, lim.max_submits_per_service_token) < 1:
        raise ConfigError("[limits]: body_read_seconds must be > 0 and max_submits_per_* >= 1")
    if min(p.latency_seconds, p.latency_jitter, p.expected_call_seconds) < 0 or p.timeout_seconds <= 0:
        raise ConfigError("[provider]: latencies must be >= 0 and timeout_seconds > 0")
    _check_webhooks(config.webhooks)
    _check_image_urls(lim)
    _check_ports(config.server)


def _check_image_urls(lim: LimitsConfig) -> None:
    if min(lim.image_url_connect_seconds, lim.image_url_seconds) <= 0 or lim.image_url_fetches < 0:
        raise ConfigError(
            "[limits]: image_url_*seconds must be > 0, image_url_fetches >= 0 (0: URLs refused)"
        )
    for net in lim.image_url_allow_networks:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError as exc:
            raise ConfigError(f"limits.image_url_allow_networks: {net!r} is not a network (CIDR)") from exc


def _check_ports(server: ServerConfig) -> None:
    ports = {
        "server.port": server.port,
        "server.haproxy_stats_port": server.haproxy_stats_port,
        "server.haproxy_metrics_port": server.haproxy_metrics_port,
    }
    for name, port in ports.items():
        if not 0 <= port <= 65535:
            raise ConfigError(f"{name}: expected a port from 0 to 65535, got {port}")
    chosen = [p for p in ports.values() if p]
    if len(set(chosen)) != len(chosen):
        raise ConfigError(
            "[server]: port, haproxy_stats_port and haproxy_metrics_port must differ (0: any free)"
        )


def _loopback(url: str) -> bool:
    """Whether `url` stays on this machine (a loopback address or a Unix socket)."""
    parts = urlsplit(url)
    if parts.scheme.endswith("unix"):
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def relaxed_security(config: Config) -> list[tuple[str, str]]:
    """Each security-relevant setting that is off or loosened, as (setting, what it means):
    logged once at start so that a development setting is not carried into production unseen."""
    found: list[tuple[str, str]] = []
    if not config.auth.required:
        found.append(("auth.required", "false: a request without a token acts as an admin"))
    if not config.credits.enabled:
        found.append(("credits.enabled", "false: every task is free"))
    url = config.redis.url
    if url and not _loopback(url):
        if not url.startswith("rediss://"):
            found.append(
                ("redis.url", "no TLS to a non-loopback host: events and tokens cross the network in clear")
            )
        if urlsplit(url).password is None:
            found.append(("redis.url", "no password for a non-loopback host"))
    if config.webhooks.allow_networks:
        nets = ", ".join(config.webhooks.allow_networks)
        found.append(("webhooks.allow_networks", f"task webhooks may reach {nets}"))
    if config.limits.image_url_allow_networks:
        nets = ", ".join(config.limits.image_url_allow_networks)
        found.append(("limits.image_url_allow_networks", f"input image URLs may reach {nets}"))
    base = config.provider.base_url
    if config.provider.name == "gemini" and base.startswith("http://") and not _loopback(base):
        found.append(
            ("provider.base_url", "plain http to a non-loopback host: API keys cross the network in clear")
        )
    for i, hook in enumerate(config.alerts.webhooks):
        if hook.startswith("http://") and not _loopback(hook):
            # Not the URL itself: a chat webhook's path is its secret.
            found.append(
                (f"alerts.webhooks[{i}]", "plain http to a non-loopback host: alerts cross in clear")
            )
    return found


def _check_webhooks(w: WebhooksConfig) -> None:
    if min(w.max_seconds, w.backoff_base, w.timeout_seconds) <= 0 or w.backoff_cap < w.backoff_base:
        raise ConfigError(
            "[webhooks]: max_seconds, backoff_base and timeout_seconds > 0, backoff_cap >= backoff_base"
        )
    if w.concurrency < 1:
        raise ConfigError("webhooks.concurrency must be >= 1")
    for net in w.allow_networks:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError as exc:
            raise ConfigError(f"webhooks.allow_networks: {net!r} is not a network (CIDR)") from exc


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """The configuration from a TOML file (or defaults) and the environment."""
    environ = dict(os.environ) if env is None else dict(env)
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    return parse(raw, environ)
