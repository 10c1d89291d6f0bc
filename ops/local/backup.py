"""Backup and restore on the local stack with the emulators' own tools (the `restore` drill, RUNBOOK "Restoring the
ledger").

Firestore emulator (cloud-firestore-emulator, gcloud 528): `POST /emulator/v1/projects/{p}:export` writes an export
in the production format (`firestore_export_*/…overall_export_metadata`), `POST …:import` reads one back, and
`DELETE /emulator/v1/projects/{p}/databases/(default)/documents` empties a project's database. Its import *merges*
like `gcloud firestore import`: documents written after the export stay (measured), so a restore empties the
database first (production: a new database). The emulator accepts an import into a named database without error but
nothing can be read there (measured), so the "copy" of the runbook is a scratch project here.

Pub/Sub emulator (0.8.20): snapshots (create, list, delete) and seek to a snapshot work, ordered subscriptions
included; seek to a time answers 501 Unimplemented on an ordered subscription (and redelivers nothing on an
unordered one), and a topic's message retention is refused (501). Production seeks by time (the topic keeps a week);
here the drill seeks to a snapshot taken just before the export.
"""
from __future__ import annotations

import os
from pathlib import Path

import httpx
from google.api_core import exceptions

DATABASE = "(default)"


class BackupError(RuntimeError):
    """The emulator refused an export, import or clear (its answer is in the message)."""


def _host(host: str | None) -> str:
    host = host or os.environ.get("FIRESTORE_EMULATOR_HOST", "")
    if not host:
        raise BackupError("no Firestore emulator: FIRESTORE_EMULATOR_HOST is not set")
    return host


def _call(method: str, url: str, body: dict[str, str] | None = None, timeout: float = 300.0) -> None:
    try:
        response = httpx.request(method, url, json=body, timeout=timeout)
    except httpx.HTTPError as exc:
        raise BackupError(f"{method} {url}: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        raise BackupError(f"{method} {url} answered {response.status_code}: {response.text[:300]}")


def export_firestore(project: str, directory: Path, host: str | None = None) -> Path:
    """Export the project's database into `directory`; the export's `.overall_export_metadata` file (what
    `import_firestore` takes, like `gcloud firestore import` takes the export's folder)."""
    directory.mkdir(parents=True, exist_ok=True)
    before = set(directory.glob("*/*.overall_export_metadata"))
    _call("POST", f"http://{_host(host)}/emulator/v1/projects/{project}:export",
          {"database": f"projects/{project}/databases/{DATABASE}", "export_directory": str(directory)})
    made = sorted(set(directory.glob("*/*.overall_export_metadata")) - before)
    if len(made) != 1:
        raise BackupError(f"the export into {directory} made {len(made)} exports, expected 1")
    return made[0]


def clear_firestore(project: str, host: str | None = None) -> None:
    """Delete every document of the project's database (production: delete the database, restore into a new one)."""
    _call("DELETE", f"http://{_host(host)}/emulator/v1/projects/{project}/databases/{DATABASE}/documents")


def import_firestore(project: str, export: Path, host: str | None = None) -> None:
    """Import an export (its `.overall_export_metadata`) into the project's database. It merges: clear first."""
    if not export.is_file():
        raise BackupError(f"{export} is not an export's overall_export_metadata file")
    _call("POST", f"http://{_host(host)}/emulator/v1/projects/{project}:import",
          {"database": f"projects/{project}/databases/{DATABASE}", "export_directory": str(export)})


def snapshot_name(subscription: str, snapshot_id: str) -> str:
    project = subscription.split("/")[1]
    return f"projects/{project}/snapshots/{snapshot_id}"


def create_snapshot(subscription: str, snapshot_id: str) -> str:
    """A Pub/Sub snapshot of the subscription's acknowledgment state now (`gcloud pubsub snapshots create`)."""
    from google.cloud import pubsub_v1

    name = snapshot_name(subscription, snapshot_id)
    client = pubsub_v1.SubscriberClient()
    try:
        client.create_snapshot(name=name, subscription=subscription)
    finally:
        client.close()
    return name


def seek_to_snapshot(subscription: str, snapshot: str) -> None:
    """Every message unacknowledged at the snapshot, or published since, is delivered again."""
    from google.cloud import pubsub_v1

    client = pubsub_v1.SubscriberClient()
    try:
        client.seek(request={"subscription": subscription, "snapshot": snapshot})
    finally:
        client.close()


def delete_snapshot(snapshot: str) -> None:
    from google.cloud import pubsub_v1

    client = pubsub_v1.SubscriberClient()
    try:
        client.delete_snapshot(snapshot=snapshot)
    except exceptions.NotFound:
        pass
    finally:
        client.close()
