"""The example hook module (hooks.contacts.py), end to end on the emulators.

Rows that Supaglue would have written to the destination are seeded in
Firestore; successful syncs transform them into `crm_contacts` from the
stored high-water mark on; deleting the connection cleans the customer up.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from google.cloud import firestore

from handlers.app import create_app
from handlers.hooks import BackfillChunk, hooks, load_hook_modules
from handlers.runtime import Runtime
from handlers.services import handlers_for
from handlers.store import SYNC_STATE, doc_id
from hooks import contacts
from ops.cli import main as cli
from ops.local.emulators import Emulator
from shared.log import JsonLogger
from shared.samples import sample
from shared.settings import HandlerSettings
from tests.conftest import ingest_attributes, push_envelope
from tests.integration.conftest import PROJECT

pytestmark = pytest.mark.integration


def client_for(service: str) -> Any:
    load_hook_modules(["hooks.contacts"])
    settings = HandlerSettings(
        google_cloud_project=PROJECT,
        service=service,
        push_auth_disabled=True,
        hook_modules=("hooks.contacts",),
    )
    runtime = Runtime(settings, hooks=hooks, logger=JsonLogger(service, project_id=PROJECT))
    return create_app(handlers_for(service), runtime).test_client()


def push(client: Any, route: str, payload: dict[str, Any]) -> int:
    body = push_envelope(json.dumps(payload).encode(), ingest_attributes(payload))
    status: int = client.post(f"/push/{route}", data=body).status_code
    return status


def test_contacts_example_transforms_incrementally_and_cleans_up(
    firestore_client: firestore.Client,
) -> None:
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    rows = contacts.source_rows(customer, "hubspot", "contact")

    def seed(source_id: str, modified: str, deleted: bool = False, **fields: Any) -> None:
        rows.document(source_id).set(
            {
                "_supaglue_last_modified_at": modified,
                "_supaglue_is_deleted": deleted,
                "_supaglue_raw_data": {"FirstName": fields.get("first", source_id)},
                **fields,
            }
        )

    def crm() -> dict[str, dict[str, Any]]:
        query = firestore_client.collection(contacts.CONTACTS).where(
            filter=firestore.FieldFilter("customer_id", "==", customer)
        )
        return {d.get("source_id"): d.to_dict() or {} for d in query.stream()}

    seed("c1", "2026-11-01T10:00:00Z", email="one@example.com")
    seed("c2", "2026-11-01T11:00:00Z", email="two@example.com")
    seed("c3", "2026-11-01T12:00:00Z", email="three@example.com")
    transforms = client_for("transforms")
    synced = {**sample("sync.complete"), "customer_id": customer, "result": "SUCCESS"}

    assert push(transforms, "sync-state", synced) == 204
    assert set(crm()) == {"c1", "c2", "c3"}
    assert crm()["c1"]["first_name"] == "c1"
    state = firestore_client.collection(SYNC_STATE).document(doc_id(customer, "hubspot", "contact"))
    marks = (state.get().to_dict() or {})["high_water_marks"]
    assert marks == {"hooks.contacts.upsert_contacts": "2026-11-01T12:00:00Z"}

    # Rows older than the mark are not read again: a local edit to c1 survives.
    firestore_client.collection(contacts.CONTACTS).document(
        doc_id(customer, "hubspot", "c1")
    ).update({"email": "kept@example.com"})
    seed("c2", "2026-11-02T09:00:00Z", email="two-new@example.com")
    seed("c3", "2026-11-02T10:00:00Z", deleted=True)
    # The next sync run (the ledger keys a sync.complete on its run).
    assert push(transforms, "sync-state", {**synced, "run_id": "run-2"}) == 204
    after = crm()
    assert set(after) == {"c1", "c2"}
    assert after["c1"]["email"] == "kept@example.com"
    assert after["c2"]["email"] == "two-new@example.com"
    marks = (state.get().to_dict() or {})["high_water_marks"]
    assert list(marks.values()) == ["2026-11-02T10:00:00Z"]

    deleted = {
        **sample("connection.deleted"),
        "customer_id": f"app-1:{customer}",
        "provider_name": "hubspot",
    }
    assert push(client_for("connections"), "connections", deleted) == 204
    assert crm() == {}


def test_status_command_prints_what_the_handlers_stored(
    firestore_client: firestore.Client,
    firestore_emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    payload = {**sample("sync.complete"), "customer_id": customer, "result": "ERROR"}
    assert push(client_for("transforms"), "sync-state", payload) == 204
    args = ["status", "--project", PROJECT, "--firestore-host", firestore_emulator.host_port]
    assert cli.main([*args, "--limit", "500"]) == 0
    output = capsys.readouterr().out
    [row] = [line for line in output.splitlines() if customer in line]
    assert "ERROR" in row


def test_contacts_backfill_pages_through_the_source_chunk_by_chunk(
    firestore_client: firestore.Client,
) -> None:
    customer = f"cust-{uuid.uuid4().hex[:8]}"
    rows = contacts.source_rows(customer, "hubspot", "contact")
    for number in range(25):
        rows.document(f"r{number:03d}").set(
            {
                "_supaglue_last_modified_at": f"2026-11-01T00:00:{number:02d}Z",
                "email": f"{number}@x",
            }
        )
    cursor: str | None = None
    pages = []
    for chunk in range(10):
        result = contacts.backfill_contacts(
            BackfillChunk(
                backfill_id="bf-example",
                customer_id=customer,
                provider_name="hubspot",
                connection_id=None,
                object="contact",
                cursor=cursor,
                chunk=chunk,
                max_records=10,
                deadline=time.monotonic() + 60,
            )
        )
        pages.append(result.records)
        cursor = result.next_cursor
        if cursor is None:
            break
    assert pages == [10, 10, 5]
    stored = firestore_client.collection(contacts.CONTACTS).where(
        filter=firestore.FieldFilter("customer_id", "==", customer)
    )
    assert len(list(stored.stream())) == 25
