"""The reconciler's client of Supaglue's management API, the events it builds, and the local
fake, each held to the published spec (handlers/reconcile/mgmt-openapi.json)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pydantic import BaseModel

from handlers.idempotency import event_key
from handlers.reconcile import api, synthetic
from handlers.reconcile.api import ApiRefused, ApiUnavailable, Budget, BudgetSpent, SupaglueApi
from ingest_fn.classify import classify
from ingest_fn.verify import SignedHeaders
from ops.local.fake_supaglue import DEV_API_KEY, FakeSupaglue
from shared.contract import ORIGIN_RECONCILED, SOURCE_SUPAGLUE, Attr
from shared.events import SyncCompleteObject, SyncPaused, parse_event
from shared.log import TraceContext

SPEC = json.loads((Path(api.__file__).with_name("mgmt-openapi.json")).read_text())
SCHEMAS = SPEC["components"]["schemas"]


def object_variant(name: str) -> dict[str, Any]:
    """The non-deprecated, object variant of a schema (`oneOf`), or the schema itself."""
    schema = SCHEMAS[name]
    for variant in schema.get("oneOf", [schema]):
        if not variant.get("deprecated") and "entity_id" not in variant["properties"]:
            return dict(variant)
    raise AssertionError(name)


MODELS: list[tuple[type[BaseModel], str]] = [
    (api.SyncRun, "sync_run"),
    (api.Sync, "sync_with_provider_and_customer"),
    (api.Connection, "connection"),
]


@pytest.fixture
def fake() -> Iterator[FakeSupaglue]:
    server = FakeSupaglue().start()
    yield server
    server.stop()


def client(fake: FakeSupaglue, *, requests: int = 100, seconds: float = 30, **options: Any) -> Any:
    sleeps: list[float] = []
    budget = Budget(requests=requests, deadline=time.monotonic() + seconds)
    return (
        SupaglueApi(fake.url, DEV_API_KEY, budget, sleep=sleeps.append, **options),
        sleeps,
    )


@pytest.mark.parametrize(("model", "schema"), MODELS)
def test_the_models_read_only_what_the_spec_defines(model: type[BaseModel], schema: str) -> None:
    variants = SCHEMAS[schema].get("oneOf", [SCHEMAS[schema]])
    defined = {name for variant in variants for name in variant["properties"]}
    assert set(model.model_fields) <= defined
    required = {name for name, field in model.model_fields.items() if field.is_required()}
    # What the model cannot do without, every variant the API answers with carries.
    assert all(required <= set(variant["required"]) for variant in variants)


def test_the_endpoints_and_the_key_header_are_the_specs() -> None:
    assert {api.SYNC_RUNS_PATH, api.SYNCS_PATH, api.CONNECTIONS_PATH} == {
        "/mgmt/v2" + path for path in SPEC["paths"]
    }
    assert SPEC["components"]["securitySchemes"]["x-api-key"]["name"] == api.API_KEY_HEADER
    parameters = {p["name"] for p in SPEC["paths"]["/sync-runs"]["get"]["parameters"]}
    assert {"cursor", "page_size", "end_timestamp"} <= parameters
    statuses = set(SCHEMAS["sync_run"]["oneOf"][0]["properties"]["status"]["enum"])
    assert statuses == {"SUCCESS", "FAILURE", "IN_PROGRESS"}
    assert set(synthetic.RESULTS) == statuses - {"IN_PROGRESS"}


def _check(value: Any, schema: dict[str, Any], where: str) -> None:
    """The subset of JSON Schema these shapes use: type, nullable, enum, required."""
    if "$ref" in schema:
        schema = SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
    if value is None:
        assert schema.get("nullable"), f"{where} is null"
        return
    kind = schema.get("type")
    types: dict[str, type | tuple[type, ...]] = {
        "string": str,
        "number": (int, float),
        "boolean": bool,
        "object": dict,
    }
    if kind in types:
        assert isinstance(value, types[kind]), f"{where}: {value!r} is not {kind}"
    if kind == "object":
        for name in schema.get("required", []):
            assert name in value, f"{where}.{name} is missing"
        for name, item in value.items():
            if name in schema.get("properties", {}):
                _check(item, schema["properties"][name], f"{where}.{name}")


def test_the_fake_answers_in_the_specs_shapes(fake: FakeSupaglue) -> None:
    fake.add_run(customer_id="c")
    fake.add_run(customer_id="c", status="FAILURE")
    fake.add_connection(customer_id="c")
    fake.set_sync(customer_id="c", paused=True)
    session = requests.Session()
    headers = {api.API_KEY_HEADER: DEV_API_KEY}
    for path, schema in (("/sync-runs", "sync_run"), ("/syncs", "sync_with_provider_and_customer")):
        page = session.get(fake.url + "/mgmt/v2" + path, headers=headers, timeout=5).json()
        _check(page, SCHEMAS["pagination"], path)
        assert page["results"]
        for item in page["results"]:
            _check(item, object_variant(schema), path)
    listed = session.get(fake.url + "/mgmt/v2/customers/c/connections", headers=headers, timeout=5)
    for item in listed.json():
        _check(item, SCHEMAS["connection"], "connection")
    refused = session.get(fake.url + "/mgmt/v2/syncs", timeout=5)
    assert refused.status_code == 401
    _check(refused.json()["errors"][0], SCHEMAS["errors"]["items"], "errors")


def test_pages_are_followed_by_their_cursor_and_the_key_is_sent(fake: FakeSupaglue) -> None:
    made = [fake.add_run(customer_id=f"c{n}")["id"] for n in range(5)]
    source, _ = client(fake)
    pages = list(source.sync_runs(ended_after="2000-01-01T00:00:00Z", page_size=2))
    assert [len(runs) for runs, _ in pages] == [2, 2, 1]
    assert [run.id for runs, _ in pages for run in runs] == made
    assert pages[-1][1] is None and pages[0][1] is not None
    # A pass that stopped goes on from the cursor it kept.
    rest = list(
        source.sync_runs(ended_after="2000-01-01T00:00:00Z", page_size=2, cursor=pages[0][1])
    )
    assert [run.id for runs, _ in rest for run in runs] == made[2:]
    assert list(source.sync_runs(ended_after="2999-01-01T00:00:00Z", page_size=2)) == [([], None)]


def test_500_and_429_are_retried_with_a_back_off_that_honours_retry_after(
    fake: FakeSupaglue,
) -> None:
    fake.add_run()
    fake.fail_next(500)
    fake.fail_next(429, retry_after=3)
    source, sleeps = client(fake, retries=2, backoff_seconds=0.5)
    [(runs, _)] = list(source.sync_runs(ended_after="2000-01-01T00:00:00Z", page_size=10))
    assert len(runs) == 1
    assert sleeps == [0.5, 3.0]
    assert (source.retried, source.budget.used) == (2, 3)


def test_what_keeps_failing_is_api_unavailable_and_never_waits_past_the_budget(
    fake: FakeSupaglue,
) -> None:
    fake.fail_next(503, 503, 503)
    source, sleeps = client(fake, retries=2, backoff_seconds=0.5)
    with pytest.raises(ApiUnavailable, match="answered 503 \\(3 attempts\\)"):
        list(source.syncs(page_size=10))
    assert sleeps == [0.5, 1.0]
    fake.faults.clear()
    fake.fail_next(429, retry_after=30)
    source, sleeps = client(fake, retries=5, seconds=10)
    with pytest.raises(ApiUnavailable):
        source.connections("c")
    assert sleeps == []  # a 30 s wait would outlast the pass: the next pass goes on instead


def test_a_refused_key_is_not_retried(fake: FakeSupaglue) -> None:
    source, sleeps = client(fake)
    source.api_key = "wrong"
    with pytest.raises(ApiRefused, match="answered 401"):
        source.connections("c")
    assert (sleeps, source.budget.used) == ([], 1)


def test_the_request_budget_stops_the_pass(fake: FakeSupaglue) -> None:
    for n in range(3):
        fake.add_run(customer_id=f"c{n}")
    source, _ = client(fake, requests=2)
    with pytest.raises(BudgetSpent) as spent:
        list(source.sync_runs(ended_after="2000-01-01T00:00:00Z", page_size=1))
    assert spent.value.what == "requests"
    source, _ = client(fake, seconds=-1)
    with pytest.raises(BudgetSpent, match="time"):
        source.connections("c")


def run(**fields: Any) -> api.SyncRun:
    listed = {
        "id": "run_1",
        "sync_id": "sync_1",
        "object_type": "standard",
        "object": "contact",
        "error_message": "token expired",
        "start_timestamp": "2026-11-30T10:00:00.000000Z",
        "end_timestamp": "2026-11-30T10:05:00.000000Z",
        "application_id": "app",
        "customer_id": "c1",
        "provider_name": "hubspot",
        "category": "crm",
        "connection_id": "conn_1",
        "status": "FAILURE",
        "num_records_synced": None,
        **fields,
    }
    return api.SyncRun.model_validate(listed)


@pytest.mark.parametrize(("status", "result"), [("SUCCESS", "SUCCESS"), ("FAILURE", "ERROR")])
def test_a_recovered_run_is_the_webhook_the_ingest_function_would_have_published(
    status: str, result: str
) -> None:
    message = synthetic.sync_complete(run(status=status, num_records_synced=7))
    event = parse_event(json.loads(message.data))
    assert isinstance(event, SyncCompleteObject)
    assert (event.run_id, event.result, event.object, event.connection_id) == (
        "run_1",
        result,
        "contact",
        "conn_1",
    )
    # Supaglue reports no records for a failed run, and why it failed.
    assert event.num_records_synced == (7 if result == "SUCCESS" else 0)
    assert (event.error_message is not None) == (result == "ERROR")
    # The attributes the ingest function gives the same body, sent when the run ended.
    sent_at = str(synthetic.epoch("2026-11-30T10:05:00Z"))
    # Its trace is its own, new (no webhook came to start one), and it names what it stands for.
    trace = TraceContext.from_traceparent(message.attributes[Attr.TRACEPARENT])
    assert trace is not None
    ingested = classify(
        message.data,
        SignedHeaders(message.webhook_id, sent_at),
        source=SOURCE_SUPAGLUE,
        trace=trace,
    )
    assert message.attributes == {
        **ingested.attributes,
        Attr.ORIGIN.value: ORIGIN_RECONCILED,
        Attr.LINKED_WEBHOOK_ID.value: message.webhook_id,
    }
    again = synthetic.sync_complete(run(status=status, num_records_synced=7))
    assert again.attributes[Attr.TRACEPARENT] != message.attributes[Attr.TRACEPARENT]
    assert message.webhook_id == "reconciled:run:run_1"
    # Its effect is keyed on the run, as the webhook's is, whatever its webhook id.
    webhook = parse_event({**json.loads(message.data)})
    assert message.ledger_key == event_key(webhook, "msg_the_real_svix_id")


def test_a_recovered_pause_and_connection_changes_are_their_webhooks() -> None:
    sync = api.Sync.model_validate(
        {
            "id": "sync_1",
            "type": "object",
            "object_type": "standard",
            "object": "deal",
            "connection_id": "conn_1",
            "sync_config_id": "cfg",
            "paused": True,
            "provider_name": "hubspot",
            "customer_id": "c1",
        }
    )
    paused = synthetic.sync_paused(sync, last_run_id="run_9", sent_at=1)
    assert isinstance(parse_event(json.loads(paused.data)), SyncPaused)
    assert paused.webhook_id == "reconciled:sync.paused:sync_1:after:run_9"
    connection = api.Connection.model_validate(
        {
            "id": "conn_1",
            "application_id": "app",
            "customer_id": "c1",
            "provider_id": "prov",
            "provider_name": "hubspot",
            "category": "crm",
            "instance_url": "https://x",
        }
    )
    created = synthetic.connection_created(connection, sent_at=1)
    assert created.webhook_id == "reconciled:connection.created:conn_1"
    assert json.loads(created.data)["result"] == "SUCCESS"
    deleted = synthetic.connection_deleted(
        customer_id="c1",
        provider_name="hubspot",
        provider_id="prov",
        category="crm",
        connection_id="conn_1",
        sent_at=1,
    )
    assert parse_event(json.loads(deleted.data)).webhook_event_type == "connection.deleted"
    for message in (paused, created, deleted):
        assert message.attributes[Attr.ORIGIN] == ORIGIN_RECONCILED
