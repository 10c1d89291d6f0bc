"""deploy/firestore.rules evaluated by the real Firestore emulator: clients read only their own wallet/ledger."""
from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from google.cloud import firestore

from pipeline.commit_plan import Pending, commit_writes
from pipeline.ledger import Product, decide
from pipeline.model import Event
from schemas.attributes import REPLAYED_AT
from tests.pipeline import factories as f

RULES = Path(__file__).resolve().parents[2] / "deploy" / "firestore.rules"
ALLOW_ALL = "rules_version = '2';\nservice cloud.firestore {\n match /databases/{db}/documents {\n" \
            "  match /{document=**} { allow read, write: if true; }\n }\n}\n"


def pipeline_writes() -> list[str]:
    """Every document path the pipeline's commit plan writes, for one event of each kind (purchase, subscription
    cycle, refund, an operator's replay) of user `alice`: derived from the code, so a new collection shows up here."""
    products = {pid: Product(points) for pid, points in f.POINTS.items()}
    deliveries = [f.order("e1", "o1", [(f.P20, 1)], uid="alice"), f.cycle("e2", "sub1", f.BASIC_MONTHLY, 1,
                                                                          uid="alice"), f.refund("e3", "o2")]
    events = [Event(f.message(d), f.envelope(d), "alice") for d in deliveries]
    replayed = events[0].message
    events.append(Event(dataclasses.replace(replayed, attributes={**replayed.attributes, REPLAYED_AT: "1"}),
                        f.envelope(deliveries[0]), "alice"))
    pending = [Pending(i, e, decide(e.envelope, products, e.uid, None)) for i, e in enumerate(events)]
    writes = commit_writes(pending, worker_region="r", now=dt.datetime.now(dt.UTC), event_ttl_days=1)
    return sorted({w.path for w in writes})


WRITTEN = pipeline_writes()
OWN = [p for p in WRITTEN if p.startswith("users/alice/")]
"""What a signed-in user may read (their own wallet and ledger), and nobody may write."""
PIPELINE_ONLY = [p for p in WRITTEN if not p.startswith("users/")] + [
    "products/459935272365195264", "paynowCustomers/cus-1"]  # written by `paynow seed`, read by the pipeline


def _b64(doc: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


def id_token(project: str, uid: str) -> str:
    """An unsigned Firebase ID token, which the emulator accepts as the signed-in user `uid`."""
    now = int(time.time())
    claims = {"sub": uid, "user_id": uid, "aud": project, "iss": f"https://securetoken.google.com/{project}",
              "iat": now, "exp": now + 3600, "auth_time": now,
              "firebase": {"sign_in_provider": "password", "identities": {}}}
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


class Client:
    """A Firestore REST client as a web/mobile app would be: subject to the project's security rules."""

    opened: ClassVar[list[httpx.Client]] = []  # closed after each test (close_clients)

    def __init__(self, host: str, project: str, uid: str | None) -> None:
        self.base = f"http://{host}/v1/projects/{project}/databases/(default)/documents"
        headers = {"Authorization": f"Bearer {id_token(project, uid)}"} if uid else {}
        self.http = httpx.Client(headers=headers, timeout=60)
        Client.opened.append(self.http)


    def get(self, path: str) -> int:
        return self.http.get(f"{self.base}/{path}").status_code

    def write(self, path: str) -> int:
        body = {"fields": {"paidBalance": {"integerValue": "1000000"}}}
        return self.http.patch(f"{self.base}/{path}", json=body).status_code

    def create(self, collection: str) -> int:
        body = {"fields": {"amount": {"integerValue": "1"}}}
        return self.http.post(f"{self.base}/{collection}", json=body).status_code

    def delete(self, path: str) -> int:
        return self.http.delete(f"{self.base}/{path}").status_code


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    while Client.opened:
        Client.opened.pop().close()


def load_rules(host: str, project: str, source: str) -> None:
    response = httpx.put(f"http://{host}/emulator/v1/projects/{project}:securityRules", timeout=60,
                         json={"rules": {"files": [{"name": "firestore.rules", "content": source}]}})
    assert response.status_code == 200, response.text


def seeded_project(host: str, rules: str) -> str:
    project = f"rules-{uuid.uuid4().hex[:12]}"
    load_rules(host, project, rules)
    admin = firestore.Client(project=project)  # the emulator treats the server client as the admin (no rules)
    for uid in ("alice", "bob"):
        admin.document(f"users/{uid}/wallet/points").set({"paidBalance": 50, "promoBalance": 0})
        admin.document(f"users/{uid}/ledger/purchase:o-{uid}:0").set({"amount": 50, "kind": "purchase"})
    for path in PIPELINE_ONLY + OWN:
        admin.document(path).set({"points": 20, "uid": "alice"})
    admin.close()
    return project


@pytest.fixture(scope="module")
def rules_project(emulator_hosts: tuple[str, str]) -> Iterator[tuple[str, str]]:
    host = emulator_hosts[1]
    yield host, seeded_project(host, RULES.read_text())


def test_user_reads_own_wallet_and_ledger(rules_project: tuple[str, str]) -> None:
    alice = Client(*rules_project, "alice")
    assert alice.get("users/alice/wallet/points") == 200
    assert alice.get("users/alice/ledger/purchase:o-alice:0") == 200
    assert alice.get("users/alice/ledger") == 200  # list


def test_user_cannot_read_someone_elses_wallet_or_ledger(rules_project: tuple[str, str]) -> None:
    alice = Client(*rules_project, "alice")
    assert alice.get("users/bob/wallet/points") == 403
    assert alice.get("users/bob/ledger/purchase:o-bob:0") == 403
    assert alice.get("users/bob/ledger") == 403


def test_signed_out_client_reads_nothing(rules_project: tuple[str, str]) -> None:
    anonymous = Client(*rules_project, None)
    for path in ["users/alice/wallet/points", "users/alice/ledger", *PIPELINE_ONLY]:
        assert anonymous.get(path) == 403, path


def test_the_derived_paths_cover_every_kind_of_write() -> None:
    """Control: the derivation sees the writes the ledger is made of (more may come; none may go unseen)."""
    assert {p.split("/")[0] for p in PIPELINE_ONLY} >= {"webhookEvents", "orders", "ledgerKeys", "products",
                                                        "paynowCustomers"}
    assert {p.split("/")[2] for p in OWN} == {"ledger", "wallet"}


@pytest.mark.parametrize("collection", sorted({p.split("/")[0] for p in PIPELINE_ONLY}))
def test_every_pipeline_collection_has_its_own_deny_rule(collection: str) -> None:
    """Not only the catch-all: each collection is named in the rules, so adding one means deciding its access."""
    deny = r"/\{\w+\} \{\s*allow read, write: if false;\s*\}"
    rule = re.search("match /" + re.escape(collection) + deny, RULES.read_text())
    assert rule, f"deploy/firestore.rules has no `match /{collection}/{{id}}` denying clients"


def test_a_user_reads_each_own_document_the_pipeline_writes(rules_project: tuple[str, str]) -> None:
    alice = Client(*rules_project, "alice")
    for path in OWN:
        assert alice.get(path) == 200, path
    assert all(Client(*rules_project, "bob").get(path) == 403 for path in OWN)


@pytest.mark.parametrize("path", ["users/alice/wallet/points", "users/alice/ledger/purchase:o-alice:0",
                                  *OWN, *PIPELINE_ONLY])
def test_no_client_write_even_to_own_documents(rules_project: tuple[str, str], path: str) -> None:
    alice = Client(*rules_project, "alice")
    assert alice.write(path) == 403
    assert alice.delete(path) == 403


def test_no_client_creates_ledger_entries_or_events(rules_project: tuple[str, str]) -> None:
    alice = Client(*rules_project, "alice")
    for collection in ("users/alice/ledger", "users/alice/wallet", *{p.split("/")[0] for p in PIPELINE_ONLY}):
        assert alice.create(collection) == 403, collection


@pytest.mark.parametrize("path", PIPELINE_ONLY)
def test_pipeline_collections_are_invisible_to_clients(rules_project: tuple[str, str], path: str) -> None:
    assert Client(*rules_project, "alice").get(path) == 403


def test_the_denials_come_from_the_rules(emulator_hosts: tuple[str, str]) -> None:
    """Control: the same tokens and requests succeed under allow-all rules, so a 403 above is our rules."""
    host = emulator_hosts[1]
    project = seeded_project(host, ALLOW_ALL)
    alice = Client(host, project, "alice")
    assert alice.get("users/bob/wallet/points") == 200
    assert alice.write("users/alice/wallet/points") == 200
