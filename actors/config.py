"""genqueue's configuration: one TOML file plus GENQUEUE_* overrides, parsed once into frozen objects."""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import limits

from events.errors import GenqueueError


class ConfigError(GenqueueError):
    """The configuration is invalid; the message names the key."""


class Secret:
    """A secret string whose repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself; call only where it is sent upstream."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))

    def hint(self) -> str:
        """Four characters that tell keys apart in events and logs, never most of the key.

        The last four characters of a key of 16 or more; four hex digits of a short key's
        SHA-256 otherwise.
        """
        if len(self._value) >= 16:
            return self._value[-4:]
        return hashlib.sha256(self._value.encode()).hexdigest()[:4]


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """Where the event stream lives; an empty url means the embedded Valkey."""

    url: str = ""
    namespace: str = "default"
    # "server": trust the server's fsync policy (the embedded Valkey fsyncs every write).
    # "waitaof": after each submit, WAITAOF until the server's own AOF has it on disk,
    # for a Redis >= 7.2 / Valkey running appendfsync everysec.
    durability: str = "server"

    def __repr__(self) -> str:
        # The URL may carry a password (redis://user:password@host): never print it.
        url = redact_url(self.url)
        return f"RedisConfig(url={url!r}, namespace={self.namespace!r}, durability={self.durability!r})"


def redact_url(url: str) -> str:
    """`url` with the password of its user-info part replaced by ***."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Slots, leases and retries."""

    slots: int = 40
    lease_seconds: float = 300.0
    max_attempts: int = 3
    workers: int = 2
    # The QueueActor snapshots its state after this many new events, or this many
    # seconds after the last snapshot if anything changed; a restart replays only
    # what follows the newest readable snapshot.
    snapshot_every: int = 5000
    snapshot_seconds: float = 60.0
    # Fairness: at most this many tasks of one user run at once (0: no cap); waiting users
    # take turns. A user may have at most `per_user_waiting` tasks waiting, and the queue
    # at most `max_waiting`; beyond either a submit is a 429 with Retry-After.
    per_user_running: int = 5
    per_user_waiting: int = 100
    max_waiting: int = 10_000
    # Ray resources each worker actor needs, e.g. {genqueue_worker = 1} so that workers
    # run only on nodes started with that resource.
    worker_resources: dict[str, float] = field(default_factory=dict)
    # Ray resources the singletons (QueueActor, KeyPoolActor, blob janitor) need, e.g.
    # {genqueue_head = 1} to keep them on the head node.
    singleton_resources: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """Which provider makes the images, and how."""

    name: str = "offline"
    model: str = "gemini-3.1-flash-image"
    base_url: str = ""
    timeout_seconds: float = 120.0
    latency_seconds: float = 2.0
    latency_jitter: float = 0.5
    image_size: str = "1K"
    # offline only: false answers every call with one stock PNG of `image_size` instead of
    # rendering with Pillow, so a benchmark on a small machine measures genqueue, not Pillow
    # (a real upstream renders on its own machines).
    render: bool = True


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """One quota pool: an upstream project, its limits and its keys.

    `rpm` requests and `ipm` images per window of `window_seconds` (scaled from a minute;
    0 = no separate images limit), `rpd` requests per day, reset at midnight Pacific
    (0 = no daily limit).
    """

    name: str
    rpm: int
    keys: tuple[Secret, ...]
    window_seconds: float = 60.0
    ipm: int = 0
    rpd: int = 0

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Names for the keys that are safe to log: pool name and position."""
        return tuple(f"{self.name}#{i + 1}" for i in range(len(self.keys)))

    @property
    def key_hints(self) -> dict[str, str]:
        """Key id -> the key's hint (see `Secret.hint`)."""
        return {kid: key.hint() for kid, key in zip(self.key_ids, self.keys, strict=True)}

    @property
    def rate(self) -> int:
        """Calls per minute this pool may make: the smaller of its request and image limits."""
        return min(self.rpm, self.ipm) if self.ipm else self.rpm


@dataclass(frozen=True, slots=True)
class KeyPoolConfig:
    """How the key pool spends and learns its quota (see `actors.keypool_logic.Tuning`).

    `margin_seconds` is added to every window: a call reaches upstream a few milliseconds
    after it goes out, and the network's jitter must not let a window upstream hold one
    call too many.
    """

    margin_seconds: float = 0.02
    # Count a grant from when its call went out on the wire.
    redate_late_sends: bool = True
    # A place that frees within this many seconds is granted ahead, for a call that waits
    # until the place is free: the hand-off to the worker then costs no window any time.
    lead_seconds: float = 0.05
    decrease: float = 0.7
    probe_after_windows: float = 10.0
    probe_step: float = 0.05


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The HTTP listener and the data directory."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = ".genqueue"
    # Serve ingress replicas: each is one process taking submits and reads.
    replicas: int = 1
    # Ray resources each ingress replica needs, e.g. {genqueue_ingress = 1} for the nodes
    # behind the load balancer.
    replica_resources: dict[str, float] = field(default_factory=dict)
    # Submits each replica handles at once; more wait their turn in arrival order.
    submit_concurrency: int = 16
    # The bundled HAProxy's stats page (/stats) and Prometheus exporter (/metrics), both
    # on `host` like the API; 0 picks a free port at start, so instances can share a machine.
    haproxy_stats_port: int = 0
    haproxy_metrics_port: int = 0


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Where input images and results live, and how long they are kept.

    `url` is an fsspec URL (`file:///srv/genqueue/blobs`, `s3://bucket/genqueue`, `gs://...`);
    empty means `file://<data_dir>/blobs`. Every node reads and writes the same place, so
    on several machines a local path must be a shared mount. A task's blobs are deleted
    `retention_seconds` after the task ended (0: kept for ever), looked for every
    `sweep_seconds`.
    """

    url: str = ""
    retention_seconds: float = 0.0
    sweep_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """Alert thresholds and where to send alerts."""

    waiting_above: int = 50
    error_rate_above: float = 0.10
    error_window_seconds: float = 300.0
    error_min_calls: int = 10
    processing_above_seconds: float = 180.0
    resolve_ratio: float = 0.8
    webhooks: tuple[str, ...] = ()
    webhook_attempts: int = 5


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Bounds on what a request may carry and how fast a token may submit."""

    max_image_bytes: int = 10 * 1024 * 1024
    max_prompt_chars: int = 2000
    # A submit's fields other than its images (prompt, options, ids, webhook URL), as
    # compact JSON: over this many bytes it is refused (413).
    max_fields_bytes: int = 16 * 1024
    # A request body larger than this is refused (413) before it is read whole.
    max_body_bytes: int = 30 * 1024 * 1024
    # Decoded images: at most this many pixels (Pillow's decompression-bomb limit) and
    # this many pixels on a side.
    max_image_pixels: int = 40_000_000
    max_image_side: int = 8192
    # Submits per token, as a `limits` rate string ("N/second", "N/minute"); a service
    # token submits for many users and gets its own rate.
    user_submit_rate: str = "10/second"
    service_submit_rate: str = "1000/second"
    # A submit's body must arrive whole within this many seconds of its headers (408).
    body_read_seconds: float = 10.0
    # Submits one token may have in an ingress replica at once, reading, waiting or being
    # handled (429 beyond); a service token submits for many users and gets its own cap.
    max_submits_per_token: int = 8
    max_submits_per_service_token: int = 1000
    # Task streams (`GET /v1/tasks/{id}/watch`) one token may hold open at once, counted by
    # each ingress replica on its own; a service or admin token follows many users' tasks
    # and gets its own cap. 0: no cap.
    max_streams_per_token: int = 8
    max_streams_per_service_token: int = 1000


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Bearer tokens. With `required = false` (development only) a request without a token
    acts as an admin on behalf of the body's `user_id`."""

    required: bool = True


@dataclass(frozen=True, slots=True)
class CreditsConfig:
    """The credit ledger: a price per kind, charged at submit and refunded when a task does
    not succeed; `default_grant` credits for a user's first submit (0: none)."""

    enabled: bool = True
    photography: int = 1
    fitting: int = 2
    default_grant: int = 0

    def price(self, kind: str) -> int:
        """The credits a task of `kind` costs (0 when credits are off)."""
        if not self.enabled:
            return 0
        return {"photography": self.photography, "fitting": self.fitting}.get(kind, 0)


@dataclass(frozen=True, slots=True)
class WebhooksConfig:
    """Task-completion webhooks. Each token's signing secret derives from `secret` (empty:
    webhooks are off); a delivery is retried for `max_seconds` after its task ended. URLs
    that resolve to private, loopback or link-local addresses are refused unless they fall
    in one of `allow_networks` (CIDRs, e.g. "127.0.0.0/8" for tests)."""

    secret: Secret = field(default_factory=lambda: Secret(""))
    max_seconds: float = 3600.0
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    timeout_seconds: float = 10.0
    concurrency: int = 64
    allow_networks: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        """Whether tasks may carry webhooks (a server secret is configured)."""
        return bool(self.secret.reveal())


def _default_pools() -> tuple[PoolConfig, ...]:
    return tuple(
        PoolConfig(name=n, rpm=15, keys=(Secret(f"offline-{n}"),)) for n in ("pool-a", "pool-b", "pool-c")
    )


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration."""

    redis: RedisConfig = field(default_factory=RedisConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    provider: ProviderConfig = field(default_factory=ProviderConfig)
    pools: tuple[PoolConfig, ...] = field(default_factory=_default_pools)
    server: ServerConfig = field(default_factory=ServerConfig)
    keypool: KeyPoolConfig = field(default_factory=KeyPoolConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    credits: CreditsConfig = field(default_factory=CreditsConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)

    def key_secret(self, key_id: str) -> Secret:
        """The secret behind a key id."""
        for pool in self.pools:
            for kid, secret in zip(pool.key_ids, pool.keys, strict=True):
                if kid == key_id:
                    return secret
        raise ConfigError(f"unknown key id {key_id!r}")


_SECTIONS: dict[str, type[Any]] = {
    "redis": RedisConfig,
    "queue": QueueConfig,
    "provider": ProviderConfig,
    "server": ServerConfig,
    "keypool": KeyPoolConfig,
    "limits": LimitsConfig,
    "alerts": AlertsConfig,
    "auth": AuthConfig,
    "storage": StorageConfig,
    "credits": CreditsConfig,
    "webhooks": WebhooksConfig,
}


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
        for section, cls in _SECTIONS.items()
        for f in fields(cls)
    )


def _referenced(raw: Mapping[str, Any]) -> set[str]:
    """Variables the file names as `env:VAR` (pool keys, the webhook secret): known, whatever their name."""
    hooks, pools = raw.get("webhooks"), raw.get("pools")
    values: list[Any] = [hooks.get("secret")] if isinstance(hooks, dict) else []
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
        _refuse_unknown(where, item, ("name", "rpm", "ipm", "rpd", "keys", "window_seconds"))
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
        pools.append(PoolConfig(name=name, rpm=rpm, keys=secrets, window_seconds=window, ipm=ipm, rpd=rpd))
    if len({p.name for p in pools}) != len(pools):
        raise ConfigError("[[pools]]: pool names must be unique")
    return tuple(pools)


def parse(raw: Mapping[str, Any], env: Mapping[str, str]) -> Config:
    """A Config from a parsed TOML document and an environment."""
    unknown = sorted(set(raw) - set(_SECTIONS) - {"pools"})
    if unknown:
        named = ", ".join(f"[{name}]{_hint(name, [*_SECTIONS, 'pools'])}" for name in unknown)
        raise ConfigError(f"unknown section {named}; remove or rename it")
    _refuse_unknown_environment(raw, env)
    # The webhook secret is a Secret like a pool key: a literal or env:VAR ("": webhooks off).
    raw_hooks = dict(raw.get("webhooks", {}))
    hook_secret = raw_hooks.pop("secret", None)
    sections = {
        name: _section(name, cls, raw_hooks if name == "webhooks" else raw.get(name, {}), env)
        for name, cls in _SECTIONS.items()
    }
    if hook_secret not in (None, "") and "GENQUEUE_WEBHOOKS_SECRET" not in env:
        secret = _secret("webhooks.secret", hook_secret, env)
        sections["webhooks"] = replace(sections["webhooks"], secret=secret)
    env_url = env.get("GENQUEUE_REDIS_URL")
    if env_url is not None:
        sections["redis"] = replace(sections["redis"], url=env_url)
    pools = _pools(raw["pools"], env) if "pools" in raw else _default_pools()
    config = Config(pools=pools, **sections)
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
    if config.server.submit_concurrency < 1:
        raise ConfigError("server.submit_concurrency must be >= 1")
    if config.server.replicas < 1:
        raise ConfigError("server.replicas must be >= 1")
    if q.slots < 1 or q.workers < 1 or q.max_attempts < 1 or q.lease_seconds <= 0:
        raise ConfigError("[queue]: slots, workers and max_attempts must be >= 1, lease_seconds > 0")
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
    lim = config.limits
    for name in ("user_submit_rate", "service_submit_rate"):
        try:
            limits.parse(getattr(lim, name))
        except ValueError as exc:
            raise ConfigError(f"limits.{name}: {exc}") from exc
    sizes = (lim.max_body_bytes, lim.max_fields_bytes, lim.max_image_bytes)
    if min(*sizes, lim.max_image_pixels, lim.max_image_side) < 1:
        raise ConfigError("[limits]: sizes must be >= 1")
    if lim.body_read_seconds <= 0 or min(lim.max_submits_per_token, lim.max_submits_per_service_token) < 1:
        raise ConfigError("[limits]: body_read_seconds must be > 0 and max_submits_per_* >= 1")
    if p.latency_seconds < 0 or p.latency_jitter < 0 or p.timeout_seconds <= 0:
        raise ConfigError("[provider]: latencies must be >= 0 and timeout_seconds > 0")
    _check_webhooks(config.webhooks)
    _check_ports(config.server)


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
