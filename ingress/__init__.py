"""PayNow webhook ingress: verify, map to an Avro v3 envelope, publish to Pub/Sub, answer once confirmed."""
from __future__ import annotations

from ingress.app import create_app
from ingress.settings import ConfigError, Settings

__all__ = ["ConfigError", "Settings", "create_app"]
