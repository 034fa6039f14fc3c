"""The inspector without a browser: the view model from plain documents and messages, the HTTP
entry point through its ASGI interface, its settings, and that reading writes nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from google.api_core import exceptions as api_exceptions

from handlers.idempotency import event_key
from handlers.lease import EXPIRES, HOLDER
from ops.cli.errors import CliError
from ops.inspector import stored
from ops.inspector.app import create_app, parse_args
from ops.inspector.journey import Held, Page, Query, Stored, Webhook, build_page
from ops.inspector.settings import InspectorSettings, pipeline_variables
from shared.contract import ORIGIN_RECONCILED, Attr
from shared.events import parse_event
from shared.routing import load_table
from shared.samples import sample
from shared.settings import HandlerSettings
from tests.conftest import ingest_attributes

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TABLE = load_table()


def message(
    payload: dict[str, Any], webhook_id: str, *, source: str = "events", **extra: Any
) -> Held:
    """A message as the ingest function (and a handler, for a dead letter) stored it."""
    attributes = {
        **ingest_attributes(payload, webhook_id=webhook_id, webhook_timestamp="1"),
        **extra.pop("attributes", {}),
    }
    return Held(
        source=source,  # type: ignore[arg-type]
        message_id=extra.pop("message_id", "1"),
        attributes=attributes,
        data=json.dumps(payload).encode(),
        publish_time=extra.pop("publish_time", NOW - timedelta(minutes=5)),
        **extra,
    )


def entry(handler: str, key: str, state: str = "done", **fields: Any) -> dict[str, Any]:
    return {
        "handler": handler,
        "webhook_id": key,
        "state": state,
        "attempts": 1,
        "updated_at": NOW - timedelta(minutes=4),
        **fields,
    }


def page(stored_: Stored, query: Query | None = None, rows: int = 25) -> Page:
    return build_page(stored_, query or Query(), table=TABLE, now=NOW, rows=rows, source="test")


def only(built: Page) -> Webhook:
    [webhook] = built.webhooks
    return webhook


def stage_states(webhook: Webhook) -> dict[str, str]:
    return {stage.route: stage.state for stage in webhook.stages}


def test_a_sync_run_is_one_journey_keyed_on_its_run_with_its_handlers_and_sync_state() -> None:
    payload = {**sample("sync.complete"), "customer_id": "acme", "result": "ERROR"}
    key = event_key(parse_event(payload), "msg_1")
    state = {
        "customer_id": "acme",
        "provider_name": payload["provider_name"],
        "object": payload["object"],
        "connection_id": payload["connection_id"],
        "last_run_id": payload["run_id"],
        "last_result": "ERROR",
        "consecutive_failures": 1,
        "updated_at": NOW,
    }
    built = page(
        Stored(
            ledger=[entry("alerts", key), entry("sync-state", key)],
            sync_states=[state],
            messages=[message(payload, "msg_1")],
        )
    )
    webhook = only(built)
    assert (webhook.key, webhook.webhook_ids) == (key, ("msg_1",))
    assert (webhook.event_type, webhook.customer, webhook.door.outcome) == (
        "sync.complete",
        "acme",
        "published",
    )
    # Every route that receives sync.complete, in the table's order, each as the ledger says.
    assert stage_states(webhook) == {
        route.name: "done" for route in TABLE.routes_for("sync.complete")
    }
    [effect] = webhook.effects
    assert (effect.kind, effect.link) == ("sync state", "its last run is this one")
    assert {item.label: item.value for item in effect.items}["failures in a row"] == "1"


def test_a_ledger_entry_alone_learns_its_webhook_from_the_documents_that_name_it() -> None:
    """As on a deployment: no watch subscription on the events topic, only the ledger."""
    backfill = {
        "backfill_id": "bf-1",
        "trigger_webhook_id": "msg_2",
        "trigger_event_type": "object.field_mapping.created",
        "customer_id": "acme",
        "provider_name": "hubspot",
        "object": "contact",
        "connection_id": "conn-1",
        "state": "running",
        "chunks_done": 2,
        "records": 20,
        "cursor": "20",
        "updated_at": NOW,
    }
    webhook = only(
        page(Stored(ledger=[entry("backfill-scheduler", "msg_2")], backfills=[backfill]))
    )
    assert (webhook.event_type, webhook.customer, webhook.connections) == (
        "object.field_mapping.created",
        "acme",
        ("conn-1",),
    )
    assert webhook.door.detail == "a handler received it from the events topic"
    [effect] = webhook.effects
    assert effect.link == "started by this webhook"
    items = {item.label: item.value for item in effect.items}
    assert (items["state"], items["chunks done"], items["records"], items["cursor"]) == (
        "running",
        "2",
        "20",
        "20",
    )


def test_a_sync_run_known_only_from_the_ledger_names_the_webhook_that_brought_it() -> None:
    """As on a deployment: the entry keyed on the run keeps the delivered webhook's id."""
    key = "sync.complete:acme:hubspot:run-9"
    ledger = [
        entry(route, key, received_webhook_id="msg_svix_9") for route in ("alerts", "sync-state")
    ]
    webhook = only(page(Stored(ledger=ledger)))
    assert webhook.key == key and "msg_svix_9" in webhook.webhook_ids
    assert only(page(Stored(ledger=ledger), Query(webhook="msg_svix_9"))).key == key


def test_a_ledger_entry_is_done_held_expired_or_failed_as_stored_and_its_lease_tells_which() -> (
    None
):
    live = {HOLDER: "token", EXPIRES: NOW + timedelta(seconds=30)}
    gone = {HOLDER: "token", EXPIRES: NOW - timedelta(seconds=30)}
    ledger = [
        entry("alerts", "msg_held", "running", **live),
        entry("alerts", "msg_expired", "running", **gone),
        entry("alerts", "msg_failed", "failed", attempts=3, last_error="RetryableError: later"),
    ]
    built = {w.key: w for w in page(Stored(ledger=ledger)).webhooks}
    [held] = built["msg_held"].stages
    assert (held.state, held.meaning) == (
        "held",
        "an attempt is working on it; its lease lasts until 2026-12-01 12:00:30",
    )
    [expired] = built["msg_expired"].stages
    assert expired.state == "expired"
    assert "the next delivery takes over" in expired.meaning
    [failed] = built["msg_failed"].stages
    assert (failed.state, failed.attempts, failed.error) == ("failed", "3", "RetryableError: later")


def test_a_route_that_has_not_handled_it_yet_says_so_and_steps_sit_under_their_route() -> None:
    payload = sample("connection.created")
    built = page(
        Stored(
            ledger=[entry("alerts", "msg_3"), entry("alerts:hooks.notify.page", "msg_3")],
            messages=[message(payload, "msg_3")],
        )
    )
    webhook = only(built)
    assert stage_states(webhook) == {
        "alerts": "done",
        "connections": "no entry",
        "backfill-scheduler": "no entry",
    }
    [step] = webhook.stages[0].steps
    assert (step.name, step.state) == ("hooks.notify.page", "done")


def test_a_dead_letter_is_shown_on_its_route_with_its_reason() -> None:
    payload = {**sample("sync.complete"), "object": "poison"}
    key = event_key(parse_event(payload), "msg_4")
    letter = message(
        payload,
        "msg_4",
        source="dead letter",
        route="sync-state",
        reason="handler_failed",
        message_id="99",
        attributes={Attr.REASON.value: "handler_failed", Attr.REASON_DETAIL.value: "never"},
    )
    ledger = [entry("alerts", key), entry("sync-state", key, "failed", last_error="never")]
    webhook = only(page(Stored(ledger=ledger, messages=[message(payload, "msg_4"), letter])))
    stage = {stage.route: stage for stage in webhook.stages}["sync-state"]
    assert stage.state == "failed"
    assert "ops dlq replay" in stage.meaning
    [dead] = stage.dead_letters
    assert (dead.reason, dead.detail, dead.message_id) == ("handler_failed", "never", "99")
    # Dead-lettered before any entry (an invalid event): the stage says that instead.
    webhook = only(page(Stored(messages=[letter])))
    assert stage_states(webhook)["sync-state"] == "dead-lettered"


def test_a_quarantined_webhook_never_reached_a_handler_and_says_why() -> None:
    held = Held(
        source="quarantine",
        message_id="7",
        attributes={
            Attr.WEBHOOK_ID.value: "msg_5",
            Attr.REASON.value: "invalid_event",
            Attr.REASON_DETAIL.value: "run_id: Field required",
        },
        data=b'{"webhook_event_type": "sync.complete"}',
        publish_time=NOW,
        reason="invalid_event",
    )
    webhook = only(page(Stored(messages=[held])))
    assert (webhook.door.outcome, webhook.door.detail) == (
        "quarantined",
        "invalid_event: run_id: Field required",
    )
    assert webhook.stages == ()


def test_a_run_recovered_by_the_reconciler_and_its_late_webhook_are_one_journey() -> None:
    payload = sample("sync.complete")
    recovered = message(
        payload, "reconciled:run:r1", attributes={Attr.ORIGIN.value: ORIGIN_RECONCILED}
    )
    late = message(payload, "msg_late", publish_time=NOW)
    webhook = only(page(Stored(messages=[recovered, late])))
    assert webhook.webhook_ids == ("reconciled:run:r1", "msg_late")
    assert webhook.door.detail.startswith("recovered by the reconciler")


def test_the_registry_entry_of_the_connection_is_shown_and_marked_when_this_webhook_wrote_it() -> (
    None
):
    created = {**sample("connection.created"), "customer_id": "acme"}
    registry = {
        "customer_id": "acme",
        "provider_name": created["provider_name"],
        "status": "active",
        "last_webhook_id": "msg_new",
        "last_event_at": 1_764_590_400,
        "updated_at": NOW,
    }
    built = page(
        Stored(
            connections=[registry],
            messages=[
                message(created, "msg_old", publish_time=NOW - timedelta(hours=1)),
                message(created, "msg_new"),
            ],
        )
    )
    links = {w.key: [(e.kind, e.link) for e in w.effects] for w in built.webhooks}
    assert links == {
        "msg_new": [("connection registry", "last written by this webhook")],
        "msg_old": [("connection registry", "")],
    }
    # Unix seconds (when Svix sent it) as a time, as every other time.
    items = {i.label: i.value for i in built.webhooks[0].effects[0].items}
    assert items["sent by Svix"] == "2025-12-01 12:00:00"


def webhooks(customers: dict[str, str]) -> Stored:
    """A sync.complete per webhook id -> customer, each on a connection of its own."""
    return Stored(
        messages=[
            message(
                {
                    **sample("sync.complete"),
                    "customer_id": customer,
                    "connection_id": f"c-{customer}",
                    "run_id": f"run-{webhook_id}",
                },
                webhook_id,
            )
            for webhook_id, customer in customers.items()
        ]
    )


def test_a_search_keeps_what_matches_every_field_given_in_any_case() -> None:
    data = webhooks({"msg_a1": "acme", "msg_a2": "acme", "msg_b1": "beta"})

    def ids(query: Query) -> list[str]:
        return sorted(w.webhook_ids[0] for w in page(data, query).webhooks)

    assert ids(Query()) == ["msg_a1", "msg_a2", "msg_b1"]
    assert ids(Query(customer="ACME")) == ["msg_a1", "msg_a2"]
    # A customer id as connection.deleted carries it (`<application>:<customer>`).
    assert ids(Query(customer="app-1:acme")) == ["msg_a1", "msg_a2"]
    assert ids(Query(webhook="_b1")) == ["msg_b1"]
    assert ids(Query(connection="c-beta")) == ["msg_b1"]
    assert ids(Query(customer="acme", webhook="b1")) == []
    built = page(data, Query(customer="acme"), rows=1)
    assert (built.matched, len(built.webhooks)) == (2, 1)


def test_search_parameters_are_trimmed_and_cut() -> None:
    query = Query.from_params({"webhook": "  msg_1 ", "customer": "x" * 1000})
    assert query.webhook == "msg_1"
    assert len(query.customer) == 200
    assert Query.from_params({}).given is False


# --- the HTTP entry point ----------------------------------------------------------------


def fake_inspect(stored_: Stored, seen: list[Query]) -> Any:
    def inspect(query: Query) -> Page:
        seen.append(query)
        return page(stored_, query)

    return inspect


class Client:
    """The app through its ASGI interface, one request at a time."""

    def __init__(self, inspect: Any) -> None:
        self._app = create_app(inspect)

    def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self._app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1:8088"
            ) as http:
                return await http.request(method, path, **options)

        return asyncio.run(send())

    def get(self, path: str, **options: Any) -> httpx.Response:
        return self.request("GET", path, **options)

    def post(self, path: str, **options: Any) -> httpx.Response:
        return self.request("POST", path, **options)


def client(inspect: Any) -> Client:
    return Client(inspect)


def test_the_page_escapes_what_webhooks_carry_and_passes_the_search_on() -> None:
    seen: list[Query] = []
    hostile = "<script>alert(1)</script>"
    app = client(fake_inspect(webhooks({"msg_x": hostile}), seen))
    response = app.get("/", params={"customer": hostile, "connection": "c-"})
    assert response.status_code == 200
    assert seen == [Query(customer=hostile, connection="c-")]
    assert hostile not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    assert "script-src" not in response.headers["content-security-policy"]
    assert "default-src 'none'" in response.headers["content-security-policy"]


def test_only_get_on_loopback_names_is_answered() -> None:
    app = client(fake_inspect(Stored(), []))
    assert app.get("/healthz").text == "ok"
    assert app.post("/").status_code == 405
    # A page that another site's name resolves to (DNS rebinding) gets nothing.
    assert app.get("/", headers={"host": "attacker.example:8088"}).status_code == 400
    assert app.get("/", headers={"host": "localhost:8088"}).status_code == 200


def test_a_deployment_that_cannot_be_read_is_one_line_on_the_page() -> None:
    def refuse(_query: Query) -> Page:
        raise CliError("Firestore in project p refused access (denied): is --project right?")

    response = client(refuse).get("/")
    assert response.status_code == 503
    assert "refused access (denied)" in response.text


# --- settings ----------------------------------------------------------------------------


def test_the_deployment_is_named_by_the_variables_the_handler_services_read() -> None:
    handler_variables = {name.upper() for name in HandlerSettings.model_fields}
    emulators = {"FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST"}
    shared = set(pipeline_variables()) - emulators
    assert shared == {"GOOGLE_CLOUD_PROJECT", "FIRESTORE_DATABASE", "TOPIC_PREFIX", "HOOK_EVENTS"}
    assert shared <= handler_variables


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "from-env")
    monkeypatch.setenv("HOOK_EVENTS", "sync.paused,entity.*")
    settings = parse_args(["--project", "from-flag", "--port", "9000", "--prefix", "acme"])
    assert (settings.project, settings.port, settings.names.events_topic) == (
        "from-flag",
        9000,
        "acme-events",
    )
    assert settings.routing().routes["hooks"].event_types == ("sync.paused", "entity.*")
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT")
    with pytest.raises(SystemExit) as exited:
        parse_args([])
    assert exited.value.code == 2


# --- reading writes nothing --------------------------------------------------------------


@dataclass
class Recorder:
    """A client that records every call made on it, and answers reads with nothing."""

    calls: list[str] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)
    forbidden: set[str] = field(default_factory=set)

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if name == "stream":
                return iter(())
            if name == "pull":
                subscription = kwargs.get("subscription", "").rsplit("/", 1)[-1]
                if subscription in self.missing:
                    raise api_exceptions.NotFound("no such subscription")  # type: ignore[no-untyped-call]
                if subscription in self.forbidden:
                    raise api_exceptions.PermissionDenied("denied")  # type: ignore[no-untyped-call]
                return Recorder()
            if name == "subscription_path":
                return f"projects/{args[0]}/subscriptions/{args[1]}"
            return self

        return call

    @property
    def received_messages(self) -> list[Any]:
        return []


def test_a_page_only_reads_firestore_and_consumes_no_message() -> None:
    settings = InspectorSettings(project="p", prefix="acme")
    db = Recorder()
    subscriber = Recorder(
        missing={"acme-events-watch"}, forbidden={"acme-sync-state-dead-letter-watch"}
    )
    got = stored.read(
        stored.Clients(db, subscriber),  # type: ignore[arg-type]
        settings,
        Query(webhook="msg_1"),
    )
    assert set(db.calls) == {"collection", "order_by", "limit", "where", "stream"}
    assert set(subscriber.calls) == {"subscription_path", "pull"}
    # What it cannot read it says, and shows the rest.
    missing, forbidden = got.notes
    assert missing.startswith("no subscription acme-events-watch: the events topic has no watch")
    assert forbidden.startswith("acme-sync-state-dead-letter-watch could not be read (denied)")
    assert forbidden.endswith("takes roles/pubsub.subscriber on it")


@pytest.fixture
def no_emulators(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    yield


def test_the_page_names_the_deployment_it_reads(no_emulators: None) -> None:
    local = InspectorSettings(project="p", firestore_emulator_host="127.0.0.1:1")
    assert stored.where(local).startswith("project p: the Firestore emulator at 127.0.0.1:1")
    deployed = InspectorSettings(project="p", prefix="acme")
    assert stored.where(deployed) == (
        "project p: Firestore, database (default); Pub/Sub, names prefixed acme-"
    )
