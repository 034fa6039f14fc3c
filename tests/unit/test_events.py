"""The event models against the sender's documented shapes and quirks."""

from __future__ import annotations

import pytest

from shared import events
from shared.errors import InvalidEvent
from shared.samples import sample, sample_types

EXPECTED_MODELS = {
    "connection.created": events.ConnectionCreated,
    "connection.deleted": events.ConnectionDeleted,
    "entity.entity_mapping.created": events.EntityMappingCreated,
    "entity.entity_mapping.deleted": events.EntityMappingDeleted,
    "entity.entity_mapping.updated": events.EntityMappingUpdated,
    "object.field_mapping.created": events.ObjectFieldMappingCreated,
    "object.field_mapping.updated": events.ObjectFieldMappingUpdated,
    "sync.complete": events.SyncCompleteObject,
    "sync.paused": events.SyncPaused,
}


def test_every_known_type_has_a_sample_and_a_model() -> None:
    assert set(sample_types()) == set(EXPECTED_MODELS) == events.KNOWN_EVENT_TYPES


@pytest.mark.parametrize("event_type", sample_types())
def test_samples_parse_to_their_model(event_type: str) -> None:
    event = events.parse_event(sample(event_type))
    assert type(event) is EXPECTED_MODELS[event_type]
    assert event.webhook_event_type == event_type


def test_sync_complete_entity_variant() -> None:
    payload = {**sample("sync.complete"), "type": "entity", "entity_id": "e1", "entity_name": "x"}
    for key in ("object", "object_type"):
        payload.pop(key)
    event = events.parse_event(payload)
    assert isinstance(event, events.SyncCompleteEntity)
    assert event.entity_name == "x"


def test_sync_complete_unknown_variant_is_invalid() -> None:
    with pytest.raises(InvalidEvent) as raised:
        events.parse_event({**sample("sync.complete"), "type": "table"})
    assert raised.value.reason == events.REASON_INVALID


def test_extra_fields_are_kept_and_ids_of_any_format_accepted() -> None:
    payload = {
        **sample("sync.complete"),
        "run_id": "clx9z0abc0000qwerty",
        "customer_id": 12345,
        "brand_new_field": {"nested": True},
    }
    event = events.parse_event(payload)
    assert isinstance(event, events.SyncCompleteObject)
    assert event.customer_id == "12345"
    assert event.run_id == "clx9z0abc0000qwerty"
    assert event.model_extra == {"brand_new_field": {"nested": True}}


def test_error_run_without_records_or_with_message() -> None:
    payload = {**sample("sync.complete"), "result": "ERROR", "num_records_synced": 0}
    event = events.parse_event(payload)
    assert isinstance(event, events.SyncCompleteObject)
    assert (event.result, event.num_records_synced) == ("ERROR", 0)
    payload.pop("num_records_synced")
    payload.pop("error_message")
    assert events.parse_event(payload).num_records_synced is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("Connection no longer authenticated: token revoked", True),
        ("Unauthorized: 401 from provider", True),
        ("Forbidden: missing scope", True),
        ("Manually paused by user", False),
        ("Payment Required: plan expired", False),
        ("The requested resource does not exist.", False),
        (None, False),
    ],
)
def test_pause_reasons_that_require_reconnect(reason: str | None, expected: bool) -> None:
    event = events.parse_event({**sample("sync.paused"), "pause_reason": reason})
    assert isinstance(event, events.SyncPaused)
    assert event.requires_reconnect is expected


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [("app-1:cust-9", "cust-9"), ("cust-9", "cust-9"), ("app-1:", "app-1:"), (":x", "x")],
)
def test_connection_deleted_customer_id_is_normalised(raw: str, normalised: str) -> None:
    event = events.parse_event({**sample("connection.deleted"), "customer_id": raw})
    assert isinstance(event, events.ConnectionDeleted)
    assert event.external_customer_id == normalised


def test_connection_created_has_no_connection_id() -> None:
    event = events.parse_event(sample("connection.created"))
    assert event.connection_key is None  # type: ignore[union-attr]


def test_unknown_type_is_kept_not_rejected() -> None:
    event = events.parse_event({"webhook_event_type": "sync.started", "anything": 1})
    assert isinstance(event, events.UnknownEvent)
    assert event.webhook_event_type == "sync.started"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([], events.REASON_NOT_OBJECT),
        (None, events.REASON_NOT_OBJECT),
        ({}, events.REASON_NO_TYPE),
        ({"webhook_event_type": ""}, events.REASON_NO_TYPE),
        ({"webhook_event_type": ["sync.complete"]}, events.REASON_NO_TYPE),
        ({"webhook_event_type": "sync.paused"}, events.REASON_INVALID),
        ({**sample("connection.deleted"), "result": "success"}, events.REASON_INVALID),
        ({**sample("connection.deleted"), "customer_id": ""}, events.REASON_INVALID),
    ],
)
def test_invalid_payloads_raise_with_a_stable_reason(payload: object, reason: str) -> None:
    with pytest.raises(InvalidEvent) as raised:
        events.parse_event(payload)
    assert raised.value.reason == reason


def test_validation_detail_names_fields_not_values() -> None:
    with pytest.raises(InvalidEvent) as raised:
        events.parse_event({**sample("sync.paused"), "customer_id": {"secret": "s3cr3t"}})
    assert "customer_id" in raised.value.detail
    assert "s3cr3t" not in raised.value.detail
