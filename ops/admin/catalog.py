"""The PayNow product catalog (ledger spec "Catalog") and the idempotent seeding of `products/{productId}`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from google.cloud import firestore

KNOWN_PRODUCTS: dict[str, dict[str, Any]] = {
    "459935272365195264": {"points": 20, "kind": "one_time", "active": True, "name": "20 points"},
    "458255405240287232": {"points": 50, "kind": "one_time", "active": True, "name": "50 points"},
    "458255787102310400": {"points": 150, "kind": "one_time", "active": True, "name": "150 points"},
    "458256188073574400": {"points": 500, "kind": "one_time", "active": True, "name": "500 points"},
    "321641745958305792": {"points": 50, "kind": "one_time", "active": False, "name": "50 points (legacy)"},
    "458253675014389760": {"points": 50, "kind": "subscription", "active": True, "name": "basic monthly"},
    "458254106331451392": {"points": 150, "kind": "subscription", "active": True, "name": "pro monthly"},
    "458254569336479744": {"points": 600, "kind": "subscription", "active": True, "name": "basic annual"},
    "458255036057649152": {"points": 1800, "kind": "subscription", "active": True, "name": "pro annual"},
}

"""The known PayNow products; the legacy one is retired (active=false) and still credited when bought."""


def points(catalog: dict[str, dict[str, Any]]) -> dict[str, int]:
    """product id -> points: the catalog as the ledger prices it (and as the independent model takes it)."""
    return {product_id: int(product["points"]) for product_id, product in catalog.items()}


class CatalogError(ValueError):
    """A catalog file that cannot be seeded; the message names the product and field."""


def load_catalog(path: Path) -> dict[str, dict[str, Any]]:
    """Read and validate a catalog file: {"productId": {"points": int >= 0, "kind": ..., "active": bool}}."""
    try:
        catalog = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CatalogError(f"{path}: {exc}") from None
    if not isinstance(catalog, dict) or not catalog:
        raise CatalogError(f"{path}: must be a non-empty JSON object keyed by product id")
    for product_id, product in catalog.items():
        if not isinstance(product, dict):
            raise CatalogError(f"{path}: product {product_id}: must be an object")
        points = product.get("points")
        if isinstance(points, bool) or not isinstance(points, int) or points < 0:
            raise CatalogError(f"{path}: product {product_id}: points must be a non-negative integer")
        if product.get("kind") not in ("one_time", "subscription"):
            raise CatalogError(f"{path}: product {product_id}: kind must be one_time or subscription")
        product.setdefault("active", True)
    return catalog


def seed_products(client: firestore.Client, catalog: dict[str, dict[str, Any]] | None = None) -> int:
    """Write every product (merge, so re-seeding is safe); returns how many were written."""
    catalog = KNOWN_PRODUCTS if catalog is None else catalog
    batch = client.batch()
    for product_id, product in catalog.items():
        batch.set(client.collection("products").document(product_id), product, merge=True)
    batch.commit()
    return len(catalog)


def map_customer(client: firestore.Client, customer_id: str, uid: str) -> None:
    """Record which user a PayNow customer is (`paynowCustomers/{customerId}.uid`)."""
    client.collection("paynowCustomers").document(customer_id).set({"uid": uid}, merge=True)
