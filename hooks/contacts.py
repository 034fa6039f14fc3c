"""Example hooks: keep a `crm_contacts` collection in step with Supaglue's synced contacts.

Supaglue writes synced rows to your destination with `_supaglue_*` columns.
Here the destination is modelled in Firestore as
`supaglue_destination/{customer}:{provider}/{object}/{_supaglue_id}`, so the
example runs on the emulator; with Postgres you would run the same query
with SQL. Enable it with HOOK_MODULES=hooks.contacts.
"""

from __future__ import annotations

from typing import Any, Final

from google.cloud import firestore
from google.cloud.firestore_v1.field_path import FieldPath

from handlers.hooks import (
    BackfillChunk,
    ChunkResult,
    DeletedConnection,
    RetryableError,
    TransformRun,
    hooks,
)
from handlers.store import doc_id

DESTINATION: Final = "supaglue_destination"
CONTACTS: Final = "crm_contacts"
PAGE: Final = 500

_client: firestore.Client | None = None


def _db() -> firestore.Client:
    # Lazy, like every client here: nothing connects at import.
    global _client  # noqa: PLW0603
    if _client is None:
        _client = firestore.Client()
    return _client


def source_rows(customer_id: str, provider_name: str, object_name: str) -> Any:
    return (
        _db()
        .collection(DESTINATION)
        .document(doc_id(customer_id, provider_name))
        .collection(object_name)
    )


@hooks.transform("contact")
def upsert_contacts(run: TransformRun) -> str | None:
    """Upsert contacts modified after the high-water mark; delete the deleted ones.

    Returns the newest `_supaglue_last_modified_at` seen, which the sync-state
    handler stores and hands back next time. Idempotent: running it twice
    with the same mark writes the same documents.
    """
    query = source_rows(run.customer_id, run.provider_name, "contact").order_by(
        "_supaglue_last_modified_at"
    )
    if run.high_water_mark is not None:
        query = query.where(
            filter=firestore.FieldFilter("_supaglue_last_modified_at", ">", run.high_water_mark)
        )
    newest = run.high_water_mark
    try:
        for row in query.limit(PAGE).stream():
            newest = _apply(run.customer_id, run.provider_name, row)["_supaglue_last_modified_at"]
    except Exception as exc:
        # The destination being unreachable is worth a retry; the mark is not advanced.
        raise RetryableError(f"reading contacts failed: {exc}") from exc
    return newest


@hooks.cleanup()
def delete_contacts(connection: DeletedConnection) -> None:
    """Forget every contact of the customer's deleted connection."""
    query = (
        _db()
        .collection(CONTACTS)
        .where(filter=firestore.FieldFilter("customer_id", "==", connection.customer_id))
        .where(filter=firestore.FieldFilter("provider_name", "==", connection.provider_name))
    )
    for document in query.stream():
        document.reference.delete()


def _apply(customer_id: str, provider_name: str, row: Any) -> dict[str, Any]:
    """Upsert one destination row into crm_contacts, or delete it; returns the row."""
    record: dict[str, Any] = row.to_dict() or {}
    target = _db().collection(CONTACTS).document(doc_id(customer_id, provider_name, row.id))
    if record.get("_supaglue_is_deleted"):
        target.delete()
    else:
        target.set(_contact(customer_id, provider_name, row.id, record))
    return record


def _contact(
    customer_id: str, provider_name: str, source_id: str, record: dict[str, Any]
) -> dict[str, Any]:
    raw = record.get("_supaglue_raw_data") or {}
    return {
        "customer_id": customer_id,
        "provider_name": provider_name,
        "source_id": source_id,
        "first_name": record.get("first_name", raw.get("FirstName")),
        "last_name": record.get("last_name", raw.get("LastName")),
        "email": record.get("email", raw.get("Email")),
        "last_modified_at": record["_supaglue_last_modified_at"],
    }


@hooks.backfill("contact")
def backfill_contacts(chunk: BackfillChunk) -> ChunkResult:
    """Load every contact again, in document-id order, one bounded page per chunk.

    The cursor is the last document id done; a chunk that is retried starts
    again after the last committed one, and re-upserting a page is harmless.
    """
    rows = source_rows(chunk.customer_id, chunk.provider_name, "contact")
    query = rows.order_by(FieldPath.document_id())
    if chunk.cursor is not None:
        query = query.where(
            filter=firestore.FieldFilter(FieldPath.document_id(), ">", rows.document(chunk.cursor))
        )
    page = list(query.limit(chunk.max_records).stream())
    for row in page:
        _apply(chunk.customer_id, chunk.provider_name, row)
    finished = len(page) < chunk.max_records
    return ChunkResult(records=len(page), next_cursor=None if finished else page[-1].id)
