"""Read a whole Firestore database as text, to look for what must not be there (personal data, erased ids)."""
from __future__ import annotations

import json
from typing import Any

from google.cloud import firestore


def scan_firestore(db: firestore.Client) -> str:
    """Every document of every collection and subcollection, ids and fields (bytes as latin-1), as one text."""
    out: list[str] = []

    def walk(collections: Any) -> None:
        for collection in collections:
            for ref in collection.list_documents():
                fields = {k: v.decode("latin-1") if isinstance(v, bytes) else v
                          for k, v in (ref.get().to_dict() or {}).items()}
                out.append(f"{ref.path} {json.dumps(fields, default=str)}")
                walk(ref.collections())

    walk(db.collections())
    return "\n".join(out)
