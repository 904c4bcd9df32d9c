"""genqueue's configuration: one TOML file plus GENQUEUE_* overrides, parsed once into frozen objects.

`sections` holds the frozen dataclasses and their defaults; `loading` reads, checks and
reports them. Import from here.
"""

from actors.config.lanes import LaneConfig, default_lane, lane_weights, next_lane, reserved_slots
from actors.config.loading import OTHER_ENVIRONMENT, load, parse, relaxed_security, setting_names
from actors.config.log_sections import ArchiveConfig, RetentionConfig
from actors.config.pools import (
    FLEX,
    PRIORITY,
    SERVICE_TIERS,
    STANDARD,
    STANDARD_PRICE_PER_IMAGE,
    counted_against,
    downgraded,
    tier_price,
)
from actors.config.routes import (
    DEFAULT_ROUTE,
    Route,
    RouteConfig,
    chain,
    charged_price,
    lowest_price,
    route_of,
)
from actors.config.sections import (
    AlertsConfig,
    AuthConfig,
    Config,
    ConfigError,
    CreditsConfig,
    KeyPoolConfig,
    LimitsConfig,
    PoolConfig,
    ProviderConfig,
    QueueConfig,
    RedisConfig,
    Secret,
    ServerConfig,
    StorageConfig,
    WebhooksConfig,
    redact_url,
)

__all__ = [
    "DEFAULT_ROUTE",
    "FLEX",
    "OTHER_ENVIRONMENT",
    "PRIORITY",
    "SERVICE_TIERS",
    "STANDARD",
    "STANDARD_PRICE_PER_IMAGE",
    "AlertsConfig",
    "ArchiveConfig",
    "AuthConfig",
    "Config",
    "ConfigError",
    "CreditsConfig",
    "KeyPoolConfig",
    "LaneConfig",
    "LimitsConfig",
    "PoolConfig",
    "ProviderConfig",
    "QueueConfig",
    "RedisConfig",
    "RetentionConfig",
    "Route",
    "RouteConfig",
    "Secret",
    "ServerConfig",
    "StorageConfig",
    "WebhooksConfig",
    "chain",
    "charged_price",
    "counted_against",
    "default_lane",
    "downgraded",
    "lane_weights",
    "load",
    "lowest_price",
    "next_lane",
    "parse",
    "redact_url",
    "relaxed_security",
    "reserved_slots",
    "route_of",
    "setting_names",
    "tier_price",
]
