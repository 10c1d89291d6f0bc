"""Typed ingress settings read once from the environment (pydantic-settings); a bad value fails at start naming it."""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated, Any

from annotated_types import Ge, Le
from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict

from ingress.bodylimit import BODY_TIMEOUT_SECONDS, MAX_BODY_BYTES
from ingress.signature import WebhookSecret
from schemas import CURRENT_VERSION, ORDERING_KEYS
from schemas.deliveries import event_type_enum

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


# Each check raises ValueError with the problem; Settings.from_env prefixes the setting's name. Numbers are parsed
# by Python's int() and float() (pydantic's lax int would also take "1.0"), and bounded by pydantic (Field ge/le).

def _integer(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise ValueError(f"must be an integer, got {str(value)[:32]!r}") from None


def _number(value: object) -> float:
    try:
        return float(str(value))
    except ValueError:
        raise ValueError(f"must be a number, got {str(value)[:32]!r}") from None


def _flag(value: object) -> bool:
    # PayNow's old spellings only: pydantic's bool would also take t/y/f/n
    text = str(value).lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"must be true or false, got {text[:32]!r}")


def _region(value: str) -> str:
    if not _REGION.match(value):
        raise ValueError(f"{value[:64]!r} is not a region name like us-central1")
    return value


def _log_level(value: str) -> str:
    if value.upper() not in _LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}")
    return value.upper()


def _schema_version(value: int) -> int:
    if value != CURRENT_VERSION:
        raise ValueError(f"this ingress writes version {CURRENT_VERSION} only")
    return value


def _project(value: str) -> str:
    if not _PROJECT.match(value):
        raise ValueError(f"{value[:64]!r} is not a project id")
    return value


def _topic(value: str) -> str:
    if match := _TOPIC_PATH.match(value):
        if not _PROJECT.match(match["project"]) or not _TOPIC_ID.match(match["topic"]):
            raise ValueError(f"{value[:120]!r} is not projects/<project>/topics/<topic>")
    elif not _TOPIC_ID.match(value):
        raise ValueError(f"{value[:120]!r} is neither a topic id nor projects/<p>/topics/<t>")
    return value


SECRETS_SETTING = "PAYNOW_WEBHOOK_SECRETS"
SECRETS_PREFIX = SECRETS_SETTING + "_"  # PAYNOW_WEBHOOK_SECRETS_<EVENT_TYPE>: that type's secrets (its subscription)


def parse_secrets(value: str, *, bound_to: str | None = None) -> tuple[WebhookSecret, ...]:
    """Comma-separated entries `EVENT_TYPE:secret` (verifies only deliveries of that PayNow event type) or a bare
    `secret` (any type). A bare secret cannot hold ':'. With `bound_to` (a PAYNOW_WEBHOOK_SECRETS_<TYPE> variable)
    every entry is bound to that type, and an entry naming another type is refused."""
    out = []
    for n, entry in enumerate(value.split(","), start=1):
        entry = entry.strip()
        event_type, colon, secret = entry.rpartition(":") if ":" in entry else ("", "", entry)
        event_type, secret = event_type.strip(), secret.strip()
        if colon and ":" in event_type:
            raise ValueError(f"entry {n} has more than one ':' (EVENT_TYPE:secret; a secret cannot hold ':')")
        if not secret:
            raise ValueError(f"entry {n} holds an empty secret (check for a stray comma or a missing secret)")
        if colon:
            if event_type not in _EVENT_TYPES:
                # named only when it looks like a type: the text before ':' may be part of a bare secret
                shown = repr(event_type[:48]) if _TYPE_NAME.match(event_type) else "the text before ':' (not shown)"
                raise ValueError(f"entry {n}: {shown} is not a PayNow event type (EVENT_TYPE:secret, e.g. "
                                 f"ON_ORDER_COMPLETED:whsec_...; PayNow's WebhookEventType; a bare secret cannot "
                                 f"hold ':')")
            if bound_to is not None and event_type != bound_to:
                raise ValueError(f"entry {n} is bound to {event_type}, not to {bound_to}")
        out.append(WebhookSecret(secret.encode(), event_type if colon else bound_to))
    return tuple(out)


_EVENT_TYPES = frozenset(event_type_enum())
_TYPE_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _secrets(value: object) -> tuple[WebhookSecret, ...]:
    if isinstance(value, tuple) and all(isinstance(s, WebhookSecret) for s in value):
        return value  # gathered by Settings.from_env
    return parse_secrets(str(value))


def _gather_secrets(env: dict[str, str]) -> None:
    """PAYNOW_WEBHOOK_SECRETS and every PAYNOW_WEBHOOK_SECRETS_<EVENT_TYPE> (Cloud Run: one Secret Manager secret
    per PayNow subscription, each in its own variable) become one tuple under PAYNOW_WEBHOOK_SECRETS."""
    gathered: list[WebhookSecret] = []
    for name in sorted(k for k in env if k.startswith(SECRETS_PREFIX)):
        event_type = name.removeprefix(SECRETS_PREFIX)
        if event_type not in _EVENT_TYPES:
            raise ConfigError(name, f"{event_type[:48]!r} is not a PayNow event type (the variable is "
                                    f"{SECRETS_PREFIX}<EVENT_TYPE>, e.g. {SECRETS_PREFIX}ON_ORDER_COMPLETED)")
        try:
            gathered.extend(parse_secrets(env.pop(name), bound_to=event_type))
        except ValueError as exc:
            raise ConfigError(name, str(exc)) from None
    if SECRETS_SETTING in env:
        try:
            gathered.extend(parse_secrets(env[SECRETS_SETTING]))
        except ValueError as exc:
            raise ConfigError(SECRETS_SETTING, str(exc)) from None
    if gathered:
        env[SECRETS_SETTING] = tuple(gathered)  # type: ignore[assignment]


def _host(value: str) -> str:
    """Loopback unless told otherwise (Cloud Run needs HOST=0.0.0.0)."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value[:64]!r} is not an IP address to listen on") from None


Flag = Annotated[bool, BeforeValidator(_flag)]
Integer = Annotated[int, BeforeValidator(_integer)]
Number = Annotated[float, BeforeValidator(_number)]
Region = Annotated[str, AfterValidator(_region)]


def _env(name: str, default: Any = ..., *, ge: float | None = None, le: float | None = None,
         secret: bool = False) -> Any:
    """A setting read from the environment variable `name`, within [ge, le] if given; secrets stay out of repr."""
    return Field(default, validation_alias=name, ge=ge, le=le, repr=not secret)


class Settings(BaseSettings):
    """Everything the ingress reads from its environment (DESIGN §5 flags plus its own tuning)."""

    model_config = SettingsConfigDict(case_sensitive=True, frozen=True, validate_default=False)

    primary_region: Region = _env("PRIMARY_REGION", "us-central1")
    secondary_region: Region = _env("SECONDARY_REGION", "europe-west1")
    region: Region = _env("REGION", "us-central1")  # PRIMARY_REGION's value when unset (see _region_default)
    log_level: Annotated[str, AfterValidator(_log_level)] = _env("LOG_LEVEL", "INFO")
    event_schema_version: Annotated[Integer, AfterValidator(_schema_version)] = _env(
        "EVENT_SCHEMA_VERSION", CURRENT_VERSION, ge=1, le=99)
    project: Annotated[str, AfterValidator(_project)] = _env("GOOGLE_CLOUD_PROJECT", "paynow-local")
    webhook_secrets: Annotated[tuple[WebhookSecret, ...], NoDecode, BeforeValidator(_secrets)] = _env(
        SECRETS_SETTING, secret=True)
    service_name: str = _env("SERVICE_NAME", "paynow-ingress")
    multi_region_enabled: Flag = _env("MULTI_REGION_ENABLED", True)
    failover_enabled: Flag = _env("FAILOVER_ENABLED", True)
    event_schema_min_compatible: Integer = _env("EVENT_SCHEMA_MIN_COMPATIBLE", 2, ge=1, le=CURRENT_VERSION)
    pubsub_topic: Annotated[str, AfterValidator(_topic)] = _env("PUBSUB_TOPIC", "paynow-events")
    admin_token: str = _env("ADMIN_TOKEN", "", secret=True)
    host: Annotated[str, AfterValidator(_host)] = _env("HOST", "127.0.0.1")
    port: Integer = _env("PORT", 8080, ge=1, le=65535)
    rate_limit_burst: Integer = _env("RATE_LIMIT_BURST", 100, ge=1, le=1_000_000)
    rate_limit_per_minute: Integer = _env("RATE_LIMIT_PER_MINUTE", 300, ge=0, le=100_000_000)
    # X-Forwarded-For entries the deployment's proxies append (Google's LB: "<client>, <LB address>" = 2; the
    # local HAProxy: 1; 0 = no proxy, the TCP peer is the client). The client is the entry that many from the right.
    forwarded_hops: Integer = _env("FORWARDED_HOPS", 0, ge=0, le=8)
    max_body_bytes: Integer = _env("MAX_BODY_BYTES", MAX_BODY_BYTES, ge=1024, le=MAX_BODY_BYTES_CEILING)
    body_timeout: Number = _env("BODY_TIMEOUT", BODY_TIMEOUT_SECONDS, ge=0.1, le=300)
    publish_timeout: Number = _env("PUBLISH_TIMEOUT", 5.0, ge=0.05, le=60)
    publish_batch_max: Integer = _env("PUBLISH_BATCH_MAX", 100, ge=1, le=1000)
    pubsub_ordering: Flag = _env("PUBSUB_ORDERING", True)
    pubsub_ordering_keys: Integer = _env("PUBSUB_ORDERING_KEYS", ORDERING_KEYS, ge=1, le=1024)
    publish_linger_ms: Number = _env("PUBLISH_LINGER_MS", 1.0, ge=0, le=100)
    dedupe_ttl_seconds: Number = _env("DEDUPE_TTL_SECONDS", 600.0, ge=0, le=86_400)
    drain_seconds: Number = _env("DRAIN_SECONDS", 5.0, ge=0, le=300)
    pubsub_emulator_host: str = _env("PUBSUB_EMULATOR_HOST", "")

    @model_validator(mode="before")
    @classmethod
    def _regions(cls, data: Any) -> Any:
        """REGION defaults to PRIMARY_REGION; the regions are checked together before any other setting, as the
        first thing an operator gets wrong (each name's own form is checked by its field)."""
        if not isinstance(data, dict):
            return data
        primary = str(data.get("PRIMARY_REGION", "us-central1"))
        secondary = str(data.get("SECONDARY_REGION", "europe-west1"))
        region = str(data.get("REGION", primary))
        if _REGION.match(primary) and _REGION.match(secondary):
            if primary == secondary:
                raise ConfigError("SECONDARY_REGION", f"must differ from PRIMARY_REGION ({primary})")
            if _REGION.match(region) and region not in (primary, secondary):
                raise ConfigError("REGION", f"{region} is neither PRIMARY_REGION ({primary}) nor SECONDARY_REGION "
                                            f"({secondary})")
        return {**data, "REGION": region}

    @property
    def unbound_secrets(self) -> int:
        """How many secrets verify deliveries of any event type (logged as a warning at start)."""
        return sum(1 for s in self.webhook_secrets if s.event_type is None)

    @property
    def topic(self) -> str:
        """The full topic path: PUBSUB_TOPIC as given, or the topic id in GOOGLE_CLOUD_PROJECT."""
        if _TOPIC_PATH.match(self.pubsub_topic):
            return self.pubsub_topic
        return f"projects/{self.project}/topics/{self.pubsub_topic}"

    @property
    def rollback_not_ready(self) -> bool:
        """The rollback switch: with multi-region off, only the primary region takes traffic."""
        return not self.multi_region_enabled and self.region != self.primary_region

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read and validate every setting; raise ConfigError naming the first bad one."""
        source = EnvSettingsSource(cls)
        env = {k: v.strip() for k, v in environ.items() if v.strip()}  # blank means unset
        if "TRUSTED_PROXIES" in env:
            raise ConfigError("TRUSTED_PROXIES", "is no longer read: set FORWARDED_HOPS to the number of "
                                                 "X-Forwarded-For entries your proxies append (Google's load "
                                                 "balancer: 2, the local HAProxy: 1)")
        _gather_secrets(env)
        source.env_vars = env
        try:
            return cls.model_validate(source())
        except ValidationError as exc:
            raise _config_error(exc.errors()[0]) from None


def _config_error(error: ErrorDetails) -> ConfigError:
    """pydantic's first error as the ConfigError this module has always raised (tests pin the wording)."""
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, ConfigError):
        return cause
    name = str(error["loc"][0])
    raw = error["input"]
    kind = error["type"]
    if kind == "missing":
        return ConfigError(name, "is required")
    if kind in ("greater_than_equal", "less_than_equal"):
        field = next(f for f in Settings.model_fields.values() if f.validation_alias == name)
        low = next(m.ge for m in field.metadata if isinstance(m, Ge) and isinstance(m.ge, int | float))
        high = next(m.le for m in field.metadata if isinstance(m, Le) and isinstance(m.le, int | float))
        return ConfigError(name, f"must be between {_show(low)} and {_show(high)}, got {_show(raw)}")
    return ConfigError(name, str(cause) if cause is not None else error["msg"])
