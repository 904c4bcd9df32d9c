"""The configuration's sections: frozen dataclasses with their defaults, and the secrets in them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actors.config.lanes import LaneConfig, check_lanes
from actors.config.log_sections import ArchiveConfig, RetentionConfig
from actors.config.pools import ConfigError as ConfigError
from actors.config.pools import PoolConfig as PoolConfig
from actors.config.pools import Secret as Secret
from actors.config.pools import check_pools
from actors.config.routes import RouteConfig, check_routes


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
    # When submits come to a queue with nothing waiting, the QueueActor waits this long for
    # more before it decides: what comes meanwhile joins the same round (one call to each
    # worker, one token ask). Such a dispatch may wait this much longer; 0 decides at once.
    gather_ms: float = 10.0
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
    # The call time the ETA assumes until one is measured (0: the provider's own: the offline
    # provider's latency_seconds, an upstream's 10 s).
    expected_call_seconds: float = 0.0
    image_size: str = "1K"
    # offline only: false answers every call with one stock PNG of `image_size` instead of
    # rendering with Pillow, so a benchmark on a small machine measures genqueue, not Pillow
    # (a real upstream renders on its own machines).
    render: bool = True


@dataclass(frozen=True, slots=True)
class KeyPoolConfig:
    """How the key pool spends and learns its quota (see `actors.keypool.decide.Tuning`).

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
    # true: the QueueActor takes each round's tokens in one call and dispatches only tasks that
    # hold one (a task waits for quota in its place, not in a slot; about twice the drain rate
    # at zero latency). false: each worker asks for its attempt's token. Off by default: in
    # burst-600 through the emulator it cost 1-3 upstream 429s a run where the default has 0-1.
    tokens_per_round: bool = False
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
    # CPUs Ray reserves for each replica (a share; 0: none). A replica waits on the store
    # most of the time: a small share leaves a 2-core machine's CPUs to the actors.
    replica_cpus: float = 0.1
    # Ray resources each ingress replica needs, e.g. {genqueue_ingress = 1} for the nodes
    # behind the load balancer.
    replica_resources: dict[str, float] = field(default_factory=dict)
    # Submits each replica handles at once; more wait their turn in arrival order (by lane, with
    # [[lanes]]: `serve_app.http.gate.Places`).
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
    `sweep_seconds`. A task's result link (`GET /v1/results/...`, no token) is signed with
    `link_secret` (empty: a key kept in `<data_dir>/result-links.key`) and lasts `link_seconds`.
    """

    url: str = ""
    retention_seconds: float = 0.0
    sweep_seconds: float = 60.0
    link_secret: Secret = field(default_factory=lambda: Secret(""))
    link_seconds: int = 3600


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """Alert thresholds and where to send alerts."""

    waiting_above: int = 50
    error_rate_above: float = 0.10
    error_window_seconds: float = 300.0
    error_min_calls: int = 10
    processing_above_seconds: float = 180.0
    # A priority pool's calls served at another tier (upstream's header says so), as a share of
    # its calls answered in the last `error_window_seconds` (at least `error_min_calls`).
    downgraded_above: float = 0.10
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
    # A batch submit (`POST /v1/tasks/batch`) holds at most this many tasks, in a body of at
    # most this many bytes (413 beyond either): more tasks of larger images go in more batches.
    max_batch_tasks: int = 500
    max_batch_body_bytes: int = 128 * 1024 * 1024
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
    # Input images given as {"url": "https://..."}: fetched within these seconds (connecting,
    # then in all), at most `image_url_fetches` at once per ingress replica (0: URLs refused),
    # only from public addresses or `image_url_allow_networks` (CIDRs, e.g. "127.0.0.0/8" for
    # tests), verified against the default CAs or the PEM bundle `image_url_ca_file`.
    image_url_connect_seconds: float = 5.0
    image_url_seconds: float = 10.0
    image_url_fetches: int = 32
    image_url_allow_networks: tuple[str, ...] = ()
    image_url_ca_file: str = ""


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Bearer tokens. With `required = false` (development only) a request without a token
    acts as an admin on behalf of the body's `user_id`."""

    required: bool = True


@dataclass(frozen=True, slots=True)
class CreditsConfig:
    """The credit ledger: a price per kind, charged at submit and refunded when a task does
    not succeed; `default_grant` credits for a user's first submit (0: none); `daily_cap`
    credits a user may be charged per UTC calendar day, net of that day's refunds (0: no cap;
    over it a submit is a 429 until the next UTC midnight)."""

    enabled: bool = True
    photography: int = 1
    fitting: int = 2
    default_grant: int = 0
    daily_cap: int = 0

    def price(self, kind: str) -> int:
        """The credits a task of `kind` costs (0 when credits are off)."""
        if not self.enabled:
            return 0
        return {"photography": self.photography, "fitting": self.fitting}.get(kind, 0)


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    """What a submit meets when no pool can serve its kind (every key rejected, every pool
    parked for the day): "refuse" answers 503 with Retry-After and charges nothing; "accept"
    queues the task to wait until a pool serves again."""

    when_blocked: str = "refuse"

    def __post_init__(self) -> None:
        if self.when_blocked not in ("refuse", "accept"):
            raise ConfigError(
                f"admission.when_blocked: expected 'refuse' or 'accept', got {self.when_blocked!r}"
            )


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


def default_pools() -> tuple[PoolConfig, ...]:
    return tuple(
        PoolConfig(name=n, rpm=15, keys=(Secret(f"offline-{n}"),)) for n in ("pool-a", "pool-b", "pool-c")
    )


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration."""

    redis: RedisConfig = field(default_factory=RedisConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    provider: ProviderConfig = field(default_factory=ProviderConfig)
    pools: tuple[PoolConfig, ...] = field(default_factory=default_pools)
    server: ServerConfig = field(default_factory=ServerConfig)
    keypool: KeyPoolConfig = field(default_factory=KeyPoolConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    credits: CreditsConfig = field(default_factory=CreditsConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    # Fallback routes in order of preference (`actors.config.routes`); none: one implicit route.
    routes: tuple[RouteConfig, ...] = ()
    # Priority lanes sharing slots and calls by weight (`actors.config.lanes`); none: one lane.
    lanes: tuple[LaneConfig, ...] = ()

    def __post_init__(self) -> None:
        check_pools(self.pools)
        check_routes(self.routes, self.pools)
        check_lanes(self.lanes)
        if any(lane.reserved for lane in self.lanes) and self.keypool.tokens_per_round:
            # The round's tokens are granted in dispatch order, past any window's reserve.
            raise ConfigError(
                "[[lanes]] reserved shares need [keypool] tokens_per_round = false; set it, or drop reserved"
            )
        if self.routes and self.keypool.tokens_per_round:
            # The round's tokens cover a prefix of its dispatches, which routes would break.
            raise ConfigError(
                "[[routes]] need [keypool] tokens_per_round = false; set it, or drop the routes"
            )

    def pool(self, name: str) -> PoolConfig:
        """The configured pool named `name`."""
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise ConfigError(f"unknown pool {name!r}")

    def secrets_by_key(self) -> dict[str, Secret]:
        """Every key's secret by its id (`key_secret` finds one)."""
        return {kid: key for pool in self.pools for kid, key in zip(pool.key_ids, pool.keys, strict=True)}

    def key_secret(self, key_id: str) -> Secret:
        """The secret behind a key id (a ConfigError for an unknown one)."""
        secret = self.secrets_by_key().get(key_id)
        if secret is None:
            raise ConfigError(f"unknown key id {key_id!r}")
        return secret


SECTIONS: dict[str, type[Any]] = {
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
    "admission": AdmissionConfig,
    "retention": RetentionConfig,
    "archive": ArchiveConfig,
}
