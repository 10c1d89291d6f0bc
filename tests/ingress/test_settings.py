"""Settings from the environment: defaults, parsing, and errors that name the bad setting."""
from __future__ import annotations

import pytest

from ingress import ConfigError, Settings
from ingress.signature import WebhookSecret

REQUIRED = {"PAYNOW_WEBHOOK_SECRETS": "s1"}


def test_defaults_follow_the_contract() -> None:
    settings = Settings.from_env(REQUIRED)
    assert settings.region == "us-central1"
    assert settings.port == 8080
    assert settings.topic == "projects/paynow-local/topics/paynow-events"
    assert (settings.rate_limit_burst, settings.rate_limit_per_minute) == (100, 300)
    assert settings.publish_timeout == 5.0
    assert settings.event_schema_version == 4 and settings.event_schema_min_compatible == 2
    assert settings.multi_region_enabled and not settings.rollback_not_ready


def test_values_are_parsed_and_typed() -> None:
    settings = Settings.from_env({
        "PAYNOW_WEBHOOK_SECRETS": " new , old ", "REGION": "europe-west1", "GOOGLE_CLOUD_PROJECT": "my-project",
        "PUBSUB_TOPIC": "events", "MULTI_REGION_ENABLED": "false", "PORT": "9000", "LOG_LEVEL": "debug",
        "FORWARDED_HOPS": "2", "BODY_TIMEOUT": "2.5", "PUBLISH_TIMEOUT": "2.5", "ADMIN_TOKEN": "t", "HOST": "0.0.0.0",
        "MAX_BODY_BYTES": "65536"})
    assert settings.webhook_secrets == (WebhookSecret(b"new"), WebhookSecret(b"old"))
    assert settings.topic == "projects/my-project/topics/events"
    assert settings.host == "0.0.0.0" and settings.max_body_bytes == 65536
    assert settings.port == 9000 and settings.log_level == "DEBUG" and settings.publish_timeout == 2.5
    assert settings.forwarded_hops == 2 and settings.body_timeout == 2.5
    assert settings.rollback_not_ready  # secondary region with multi-region off: the rollback switch


def test_the_body_limit_defaults_to_1_mib() -> None:
    assert Settings.from_env(REQUIRED).max_body_bytes == 1_048_576


def test_full_topic_path_is_kept() -> None:
    settings = Settings.from_env({**REQUIRED, "PUBSUB_TOPIC": "projects/other-proj/topics/t-1"})
    assert settings.topic == "projects/other-proj/topics/t-1"


def test_secrets_never_appear_in_repr() -> None:
    settings = Settings.from_env({"PAYNOW_WEBHOOK_SECRETS": "super-secret-value", "ADMIN_TOKEN": "admin-secret"})
    assert "super-secret-value" not in repr(settings) and "admin-secret" not in repr(settings)


@pytest.mark.parametrize(("env", "setting"), [
    ({}, "PAYNOW_WEBHOOK_SECRETS"),
    ({"PAYNOW_WEBHOOK_SECRETS": "a,,b"}, "PAYNOW_WEBHOOK_SECRETS"),
    ({**REQUIRED, "REGION": "Mars"}, "REGION"),
    ({**REQUIRED, "REGION": "asia-east1"}, "REGION"),
    ({**REQUIRED, "PRIMARY_REGION": "europe-west1"}, "SECONDARY_REGION"),
    ({**REQUIRED, "MULTI_REGION_ENABLED": "maybe"}, "MULTI_REGION_ENABLED"),
    ({**REQUIRED, "FAILOVER_ENABLED": "2"}, "FAILOVER_ENABLED"),
    ({**REQUIRED, "LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ({**REQUIRED, "EVENT_SCHEMA_VERSION": "2"}, "EVENT_SCHEMA_VERSION"),
    ({**REQUIRED, "EVENT_SCHEMA_VERSION": "three"}, "EVENT_SCHEMA_VERSION"),
    ({**REQUIRED, "EVENT_SCHEMA_MIN_COMPATIBLE": "5"}, "EVENT_SCHEMA_MIN_COMPATIBLE"),
    ({**REQUIRED, "GOOGLE_CLOUD_PROJECT": "Bad_Project"}, "GOOGLE_CLOUD_PROJECT"),
    ({**REQUIRED, "PUBSUB_TOPIC": "projects/p/topics"}, "PUBSUB_TOPIC"),
    ({**REQUIRED, "PUBSUB_TOPIC": "9starts-with-digit"}, "PUBSUB_TOPIC"),
    ({**REQUIRED, "HOST": "localhost"}, "HOST"),
    ({**REQUIRED, "PORT": "0"}, "PORT"),
    ({**REQUIRED, "PORT": "http"}, "PORT"),
    ({**REQUIRED, "RATE_LIMIT_BURST": "0"}, "RATE_LIMIT_BURST"),
    ({**REQUIRED, "RATE_LIMIT_PER_MINUTE": "-1"}, "RATE_LIMIT_PER_MINUTE"),
    ({**REQUIRED, "TRUSTED_PROXIES": "10.0.0.0/8"}, "TRUSTED_PROXIES"),  # replaced by FORWARDED_HOPS
    ({**REQUIRED, "FORWARDED_HOPS": "-1"}, "FORWARDED_HOPS"),
    ({**REQUIRED, "FORWARDED_HOPS": "two"}, "FORWARDED_HOPS"),
    ({**REQUIRED, "BODY_TIMEOUT": "0"}, "BODY_TIMEOUT"),
    ({**REQUIRED, "BODY_TIMEOUT": "10s"}, "BODY_TIMEOUT"),
    ({**REQUIRED, "PUBLISH_TIMEOUT": "0"}, "PUBLISH_TIMEOUT"),
    ({**REQUIRED, "PUBLISH_BATCH_MAX": "1001"}, "PUBLISH_BATCH_MAX"),
    ({**REQUIRED, "PUBSUB_ORDERING_KEYS": "0"}, "PUBSUB_ORDERING_KEYS"),
    ({**REQUIRED, "PUBSUB_ORDERING_KEYS": "1025"}, "PUBSUB_ORDERING_KEYS"),
    ({**REQUIRED, "DRAIN_SECONDS": "-5"}, "DRAIN_SECONDS"),
    ({**REQUIRED, "MAX_BODY_BYTES": "1MiB"}, "MAX_BODY_BYTES"),
    ({**REQUIRED, "MAX_BODY_BYTES": "1023"}, "MAX_BODY_BYTES"),
    ({**REQUIRED, "MAX_BODY_BYTES": "33554433"}, "MAX_BODY_BYTES"),
])
def test_invalid_setting_fails_naming_it(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.setting == setting
    assert str(caught.value).startswith(f"{setting}: ")


def test_a_bound_is_written_as_a_person_writes_it() -> None:
    with pytest.raises(ConfigError, match=r"^MAX_BODY_BYTES: must be between 1024 and 33554432, got 33554433$"):
        Settings.from_env({**REQUIRED, "MAX_BODY_BYTES": "33554433"})


@pytest.mark.parametrize(("setting", "value", "problem"), [
    ("PORT", "8080.0", "must be an integer, got '8080.0'"),  # pydantic alone would take it as 8080
    ("PUBSUB_ORDERING", "T", "must be true or false, got 't'"),  # and this as true
    ("PUBLISH_TIMEOUT", "soon", "must be a number, got 'soon'"),
    ("PAYNOW_WEBHOOK_SECRETS", " ", "is required"),  # blank is unset
])
def test_the_wording_of_a_refusal_is_kept(setting: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**REQUIRED, setting: value})
    assert str(caught.value) == f"{setting}: {problem}"


def test_with_several_bad_settings_the_regions_are_named_first() -> None:
    with pytest.raises(ConfigError, match=r"^REGION: asia-east1 is neither"):
        Settings.from_env({"REGION": "asia-east1", "PORT": "x"})


def test_blank_values_take_the_default_and_values_are_trimmed() -> None:
    settings = Settings.from_env({**REQUIRED, "PORT": "  ", "REGION": " europe-west1 ", "PUBSUB_ORDERING": " off "})
    assert (settings.port, settings.region, settings.pubsub_ordering) == (8080, "europe-west1", False)
