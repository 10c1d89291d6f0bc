"""Type aliases for the Avro-native dicts the codec reads and writes."""
from __future__ import annotations

from typing import Any

Envelope = dict[str, Any]
"""A v3 PaymentEventEnvelope as a dict (see avro/envelope_v3.avsc); `timestamp` is epoch milliseconds."""

DeadLetter = dict[str, Any]
"""A DeadLetterRecord as a dict (see avro/dlq_record.avsc); `failedAt` is epoch milliseconds."""
