"""genqueue's configuration: one TOML file plus GENQUEUE_* overrides, parsed once into frozen objects.

`sections` holds the frozen dataclasses and their defaults; `loading` reads, checks and
reports them. Import from here.
"""

from actors.config.loading import OTHER_ENVIRONMENT, load, parse, relaxed_security, setting_names
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
    "OTHER_ENVIRONMENT",
    "AlertsConfig",
    "AuthConfig",
    "Config",
    "ConfigError",
    "CreditsConfig",
    "KeyPoolConfig",
    "LimitsConfig",
    "PoolConfig",
    "ProviderConfig",
    "QueueConfig",
    "RedisConfig",
    "Secret",
    "ServerConfig",
    "StorageConfig",
    "WebhooksConfig",
    "load",
    "parse",
    "redact_url",
    "relaxed_security",
    "setting_names",
]
