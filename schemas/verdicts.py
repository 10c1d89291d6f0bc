"""The DLQ verdicts (DESIGN §3): the `Verdict` enum of avro/dlq_record.avsc, as a StrEnum the code can name."""
from __future__ import annotations

from enum import StrEnum


class Verdict(StrEnum):
    """Why a message was dead-lettered; the members equal the Avro enum's symbols, in order (tests check it)."""

    DROP_INCOMPATIBLE = "drop_incompatible"
    DROP_MALFORMED = "drop_malformed"
    UNKNOWN_SCHEMA = "unknown_schema"
    UNMAPPED_CUSTOMER = "unmapped_customer"
    UNMAPPED_PRODUCT = "unmapped_product"
    WRITE_FAILED = "write_failed"
    WEDGED_KEY = "wedged_key"
    """A commit whose precondition can never hold: a key claimed or entry written outside the commit plan."""


VERDICTS: tuple[str, ...] = tuple(Verdict)
"""Every verdict's name, in the schema's order (for `choices=` and membership checks)."""
