"""Typed ingress settings read once from the environment; a bad value fails at start naming the setting."""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ingress.bodylimit import MAX_BODY_BYTES
from schemas import CURRENT_VERSION

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_REGION = re.compile(r"^[a-z]+(-[a-z]+)+[0-9]+$")
_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_TOPIC_ID = re.compile(r"^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$")
_TOPIC_PATH = re.compile(r"^projects/(?P<project>[^/]+)/topics/(?P<topic>[^/]+)$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_BODY_BYTES_CEILING = 32 * 1024 * 1024  # Cloud Run refuses larger HTTP/1 requests itself
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class ConfigError(ValueError):
    """An invalid or missing setting; the message starts with the setting's name."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


def _show(value: float) -> str:
    """A bound as a person writes it: 33554432, not 3.35544e+07."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class _Reader:
    """Typed getters over an environment mapping; each raises ConfigError naming its variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def text(self, name: str, default: str | None = None) -> str:
        value = self.environ.get(name, "").strip()
        if value:
            return value
        if default is None:
            raise ConfigError(name, "is required")
        return default

    def flag(self, name: str, default: bool) -> bool:
        value = self.environ.get(name, "").strip().lower()
        if not value:
            return default
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ConfigError(name, f"must be true or false, got {value[:32]!r}")

    def number(self, name: str, default: float, *, low: float, high: float, integer: bool = False) -> float:
        raw = self.environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            raise ConfigError(name, f"must be {'an integer' if integer else 'a number'}, got {raw[:32]!r}") from None
        if not low <= value <= high:
            raise ConfigError(name, f"must be between {_show(low)} and {_show(high)}, got {_show(value)}")
        return value

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        return int(self.number(name, default, low=low, high=high, integer=True))


def _region(reader: _Reader, name: str, default: str) -> str:
    value = reader.text(name, default)
    if not _REGION.match(value):
        raise ConfigError(name, f"{value[:64]!r} is not a region name like us-central1")
    return value


def _topic(reader: _Reader, project: str) -> str:
    value = reader.text("PUBSUB_TOPIC", "paynow-events")
    if match := _TOPIC_PATH.match(value):
        if not _PROJECT.match(match["project"]) or not _TOPIC_ID.match(match["topic"]):
            raise ConfigError("PUBSUB_TOPIC", f"{value[:120]!r} is not projects/<project>/topics/<topic>")
        return value
    if not _TOPIC_ID.match(value):
        raise ConfigError("PUBSUB_TOPIC", f"{value[:120]!r} is neither a topic id nor projects/<p>/topics/<t>")
    return f"projects/{project}/topics/{value}"


def _secrets(reader: _Reader) -> tuple[bytes, ...]:
    raw = reader.text("PAYNOW_WEBHOOK_SECRETS")
    secrets = tuple(s.strip().encode() for s in raw.split(","))
    if any(not s for s in secrets):
        raise ConfigError("PAYNOW_WEBHOOK_SECRETS", "holds an empty secret (check for a stray comma)")
    return secrets


def _networks(reader: _Reader) -> tuple[IPNetwork, ...]:
    raw = reader.text("TRUSTED_PROXIES", "")
    try:
        return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in raw.split(",") if p.strip())
    except ValueError as exc:
        raise ConfigError("TRUSTED_PROXIES", f"must be comma-separated IP addresses or CIDRs ({exc})") from None


def _host(reader: _Reader) -> str:
    """Loopback unless told otherwise (Cloud Run needs HOST=0.0.0.0)."""
    raw = reader.text("HOST", "127.0.0.1")
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise ConfigError("HOST", f"{raw[:64]!r} is not an IP address to listen on") from None


@dataclass(frozen=True)
class Settings:
    """Everything the ingress reads from its environment (DESIGN §5 flags plus its own tuning)."""

    webhook_secrets: tuple[bytes, ...] = field(repr=False)
    region: str = "us-central1"
    service_name: str = "paynow-ingress"
    log_level: str = "INFO"
    multi_region_enabled: bool = True
    primary_region: str = "us-central1"
    secondary_region: str = "europe-west1"
    failover_enabled: bool = True
    event_schema_version: int = CURRENT_VERSION
    event_schema_min_compatible: int = 2
    project: str = "paynow-local"
    topic: str = "projects/paynow-local/topics/paynow-events"
    admin_token: str = field(default="", repr=False)
    host: str = "127.0.0.1"
    port: int = 8080
    rate_limit_burst: int = 100
    rate_limit_per_minute: int = 300
    trusted_proxies: tuple[IPNetwork, ...] = ()
    max_body_bytes: int = MAX_BODY_BYTES
    publish_timeout: float = 5.0
    publish_batch_max: int = 100
    pubsub_ordering: bool = True
    publish_linger_ms: float = 1.0
    dedupe_ttl_seconds: float = 600.0
    drain_seconds: float = 5.0
    pubsub_emulator_host: str = ""

    @property
    def rollback_not_ready(self) -> bool:
        """The rollback switch: with multi-region off, only the primary region takes traffic."""
        return not self.multi_region_enabled and self.region != self.primary_region

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read and validate every setting; raise ConfigError naming the first bad one."""
        env = _Reader(environ)
        primary = _region(env, "PRIMARY_REGION", "us-central1")
        secondary = _region(env, "SECONDARY_REGION", "europe-west1")
        if primary == secondary:
            raise ConfigError("SECONDARY_REGION", f"must differ from PRIMARY_REGION ({primary})")
        region = _region(env, "REGION", primary)
        if region not in (primary, secondary):
            raise ConfigError("REGION", f"{region} is neither PRIMARY_REGION ({primary}) nor SECONDARY_REGION "
                                        f"({secondary})")
        log_level = env.text("LOG_LEVEL", "INFO").upper()
        if log_level not in _LOG_LEVELS:
            raise ConfigError("LOG_LEVEL", f"must be one of {', '.join(_LOG_LEVELS)}")
        version = env.integer("EVENT_SCHEMA_VERSION", CURRENT_VERSION, low=1, high=99)
        if version != CURRENT_VERSION:
            raise ConfigError("EVENT_SCHEMA_VERSION", f"this ingress writes version {CURRENT_VERSION} only")
        project = env.text("GOOGLE_CLOUD_PROJECT", "paynow-local")
        if not _PROJECT.match(project):
            raise ConfigError("GOOGLE_CLOUD_PROJECT", f"{project[:64]!r} is not a project id")
        return cls(
            webhook_secrets=_secrets(env),
            region=region,
            service_name=env.text("SERVICE_NAME", "paynow-ingress"),
            log_level=log_level,
            multi_region_enabled=env.flag("MULTI_REGION_ENABLED", True),
            primary_region=primary,
            secondary_region=secondary,
            failover_enabled=env.flag("FAILOVER_ENABLED", True),
            event_schema_version=version,
            event_schema_min_compatible=env.integer("EVENT_SCHEMA_MIN_COMPATIBLE", 2, low=1, high=version),
            project=project,
            topic=_topic(env, project),
            admin_token=env.text("ADMIN_TOKEN", ""),
            host=_host(env),
            port=env.integer("PORT", 8080, low=1, high=65535),
            rate_limit_burst=env.integer("RATE_LIMIT_BURST", 100, low=1, high=1_000_000),
            rate_limit_per_minute=env.integer("RATE_LIMIT_PER_MINUTE", 300, low=0, high=100_000_000),
            trusted_proxies=_networks(env),
            max_body_bytes=env.integer("MAX_BODY_BYTES", MAX_BODY_BYTES, low=1024, high=MAX_BODY_BYTES_CEILING),
            publish_timeout=env.number("PUBLISH_TIMEOUT", 5.0, low=0.05, high=60),
            publish_batch_max=env.integer("PUBLISH_BATCH_MAX", 100, low=1, high=1000),
            pubsub_ordering=env.flag("PUBSUB_ORDERING", True),
            publish_linger_ms=env.number("PUBLISH_LINGER_MS", 1.0, low=0, high=100),
            dedupe_ttl_seconds=env.number("DEDUPE_TTL_SECONDS", 600.0, low=0, high=86_400),
            drain_seconds=env.number("DRAIN_SECONDS", 5.0, low=0, high=300),
            pubsub_emulator_host=env.text("PUBSUB_EMULATOR_HOST", ""),
        )
