"""The reconciler on the emulators: runs and connections Supaglue's API knows but no webhook
brought are recovered, once, and a webhook arriving late changes nothing.

The whole stack runs (the reconciler under gunicorn, as its container runs it), reading the
stack's fake Supaglue API; its services use a Firestore database of their own, so a pass
sees only this module's registry and sync state.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from google.cloud import firestore

from handlers.reconcile.passes import RECOVERED
from handlers.reconcile.store import COLLECTION as STATE_COLLECTION
from handlers.reconcile.store import STATE_DOCUMENT
from handlers.reconcile.synthetic import run_webhook_id
from handlers.store import CONNECTIONS, SYNC_STATE, doc_id
from ops import pubsub_admin
from ops.local.stack import Emulators, Stack, StackSpec, running_stack
from ops.local.topology import Delivery
from ops.signing import signed_headers
from shared.contract import ORIGIN_RECONCILED, Attr
from shared.log import TraceContext
from shared.samples import sample
from tests.hooks.reconcile import CLEANUPS
from tests.integration.conftest import PROJECT, wait_for

pytestmark = pytest.mark.integration


@dataclass
class Reconciling:
    stack: Stack
    database: str
    db: firestore.Client = field(init=False)

    def __post_init__(self) -> None:
        self.db = firestore.Client(project=PROJECT, database=self.database)

    @property
    def fake(self) -> Any:
        return self.stack.supaglue

    def reconcile(self) -> tuple[int, dict[str, Any]]:
        url = self.stack.spec.service_url("reconciler") + "/reconcile"
        response = requests.post(url, timeout=120)
        return response.status_code, response.json()

    def doc(self, collection: str, *parts: str) -> dict[str, Any]:
        return self.db.collection(collection).document(doc_id(*parts)).get().to_dict() or {}

    def lines(self, service: str, **match: Any) -> list[dict[str, Any]]:
        lines = self.stack.services[service].log().splitlines()
        parsed = [json.loads(line) for line in lines if line.startswith("{")]
        return [p for p in parsed if all(p.get(k) == v for k, v in match.items())]

    def send(self, payload: dict[str, Any]) -> str:
        """The webhook, signed, to the stack's ingest function; its svix-id."""
        body = json.dumps(payload).encode()
        headers = signed_headers(body)
        url = self.stack.spec.ingest_url
        assert requests.post(url, data=body, headers=headers, timeout=20).status_code == 204
        return headers["svix-id"]


@pytest.fixture(scope="module")
def rec(
    emulators: Emulators,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Reconciling]:
    database = f"reconcile-{uuid.uuid4().hex[:8]}"
    spec = StackSpec.on_free_ports(
        PROJECT,
        tmp_path_factory.mktemp("reconcile"),
        hook_modules="tests.hooks.reconcile",
        with_ingest=True,
        watch_events=True,
        extra_env={"FIRESTORE_DATABASE": database},
        # Two runs a page, so a pass reads several; one retry, so that a 500 then a 429 end
        # the pass, which the next one must make up for.
        reconciler_env={
            "RECONCILE_PAGE_SIZE": "2",
            "RECONCILE_RETRIES": "1",
            "RECONCILE_BACKOFF_SECONDS": "0.1",
        },
        delivery=Delivery(minimum_backoff_seconds=1, maximum_backoff_seconds=2),
    )
    with running_stack(spec, emulators) as s:
        yield Reconciling(s, database)


def customer() -> str:
    return f"cust-{uuid.uuid4().hex[:10]}"


def run_state(rec: Reconciling, run: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    return lambda: rec.doc(SYNC_STATE, run["customer_id"], run["provider_name"], run["object"])


def recovered(rec: Reconciling, webhook_id: str) -> list[dict[str, Any]]:
    return rec.lines("reconciler", event=RECOVERED, webhook_id=webhook_id)


def test_a_run_whose_webhook_never_came_is_recovered_and_takes_effect_once(
    rec: Reconciling,
) -> None:
    run = rec.fake.add_run(customer_id=customer(), status="FAILURE", error_message="boom")
    status, counts = rec.reconcile()
    assert (status, counts["outcome"]) == (200, "reconcile_pass"), counts
    assert counts["events_reconciled"] >= 1 and counts["stopped_by"] is None
    state = wait_for(run_state(rec, run), what="the recovered run's sync state")
    assert (state["last_run_id"], state["last_result"], state["total_runs"]) == (
        run["id"],
        "ERROR",
        1,
    )
    webhook_id = run_webhook_id(run["id"])
    assert len(recovered(rec, webhook_id)) == 1
    wait_for(lambda: rec.lines("alerts", event="sync_failed", webhook_id=webhook_id), what="alert")

    # The message is the webhook's, with origin=reconciled.
    subscriber = pubsub_admin.subscriber_client(rec.stack.emulators.pubsub.host_port)
    watch = subscriber.subscription_path(
        PROJECT, rec.stack.names.watch_subscription(rec.stack.names.events_topic)
    )
    [message] = wait_for(
        lambda: [
            m
            for m in pubsub_admin.pull(subscriber, watch)
            if m.attributes.get(Attr.WEBHOOK_ID) == webhook_id
        ],
        what="the synthetic message",
    )
    assert message.attributes[Attr.ORIGIN] == ORIGIN_RECONCILED
    assert message.attributes[Attr.EVENT_TYPE] == "sync.complete"
    # A trace of its own, which the handlers continue, each line naming what it stands for.
    trace = TraceContext.from_traceparent(message.attributes[Attr.TRACEPARENT])
    assert trace is not None
    assert message.attributes[Attr.LINKED_WEBHOOK_ID] == webhook_id
    [handled] = wait_for(
        lambda: rec.lines("transforms", event="event_handled", webhook_id=webhook_id),
        what="the sync-state route's line",
    )
    assert handled["logging.googleapis.com/trace"] == f"projects/{PROJECT}/traces/{trace.trace_id}"
    assert handled["logging.googleapis.com/spanId"] not in (None, trace.span_id)
    assert (handled["origin"], handled["linked_webhook_id"]) == (ORIGIN_RECONCILED, webhook_id)
    assert message.attributes[Attr.CUSTOMER_ID] == run["customer_id"]
    body = json.loads(message.data)
    assert body.keys() == sample("sync.complete").keys()
    assert (body["run_id"], body["result"], body["num_records_synced"]) == (run["id"], "ERROR", 0)

    # Later passes find it recorded: nothing more is published, so nothing changes.
    status, counts = rec.reconcile()
    assert (status, counts["events_reconciled"]) == (200, 0) and counts["runs_recorded"] >= 1
    assert run_state(rec, run)()["total_runs"] == 1
    assert len(rec.lines("alerts", event="sync_failed", webhook_id=webhook_id)) == 1


def test_its_webhook_arriving_late_changes_nothing(rec: Reconciling) -> None:
    run = rec.fake.add_run(customer_id=customer(), status="FAILURE")
    assert rec.reconcile()[0] == 200
    wait_for(run_state(rec, run), what="the recovered run")
    late = rec.send(
        {
            **sample("sync.complete"),
            "run_id": run["id"],
            "customer_id": run["customer_id"],
            "connection_id": run["connection_id"],
            "result": "ERROR",
            "num_records_synced": 0,
        }
    )
    for service in ("transforms", "alerts"):
        wait_for(
            lambda s=service: rec.lines(s, event="duplicate_ignored", webhook_id=late),  # type: ignore[misc]
            what=f"{service} to ignore the late webhook",
        )
    assert run_state(rec, run)()["total_runs"] == 1
    assert rec.lines("alerts", event="sync_failed", webhook_id=late) == []


def test_a_run_whose_webhook_came_is_not_published_again(rec: Reconciling) -> None:
    run = rec.fake.add_run(customer_id=customer())
    rec.send({**sample("sync.complete"), "run_id": run["id"], "customer_id": run["customer_id"]})
    wait_for(run_state(rec, run), what="the webhook's effect")
    assert rec.reconcile()[0] == 200
    assert recovered(rec, run_webhook_id(run["id"])) == []
    assert run_state(rec, run)()["total_runs"] == 1


def test_the_api_answering_500_then_429_loses_nothing_and_doubles_nothing(
    rec: Reconciling,
) -> None:
    who = customer()
    runs = [rec.fake.add_run(customer_id=who, object=f"object-{n}") for n in range(3)]
    # The first pass stops at once; the second reads a page, then stops again.
    rec.fake.fail_next(500, 429, retry_after=0)
    status, counts = rec.reconcile()
    assert (status, counts["outcome"], counts["stopped_by"]) == (
        503,
        "reconcile_api_unavailable",
        "api_unavailable",
    )
    assert counts["events_reconciled"] == 0
    rec.fake.fail_next(500, 429, retry_after=0, after=1)
    assert rec.reconcile()[0] == 503
    for _ in range(3):
        status, counts = rec.reconcile()
        if status == 200:
            break
    assert status == 200, counts
    for run in runs:
        state = wait_for(run_state(rec, run), what=f"run {run['id']}")
        assert state["total_runs"] == 1
        assert len(recovered(rec, run_webhook_id(run["id"]))) == 1


def test_two_passes_at_once_double_nothing(rec: Reconciling) -> None:
    runs = [rec.fake.add_run(customer_id=customer()) for _ in range(4)]
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda _: rec.reconcile(), range(2)))
    assert {status for status, _ in outcomes} == {200}
    published: int = sum(counts["events_reconciled"] for _, counts in outcomes)
    # Once before the other pass began, or the lease kept the other from starting: at least
    # once each, and every copy that was published reaches the transforms service.
    assert published >= 4
    ids = {run_webhook_id(run["id"]) for run in runs}

    def delivered() -> bool:
        lines = rec.lines("transforms")
        done = ("event_handled", "duplicate_ignored")
        handled = [x for x in lines if x.get("webhook_id") in ids and x.get("event") in done]
        return len(handled) == published

    wait_for(delivered, what="every published copy to be handled")
    for run in runs:
        assert run_state(rec, run)()["total_runs"] == 1


def test_a_deleted_connection_missing_from_the_registry_is_recorded_and_cleaned_up_once(
    rec: Reconciling,
) -> None:
    who = customer()
    connection = rec.fake.add_connection(customer_id=who, provider_name="salesforce")
    rec.send(
        {
            **sample("connection.created"),
            "customer_id": who,
            "provider_id": connection["provider_id"],
        }
    )
    wait_for(lambda: rec.doc(CONNECTIONS, who, "salesforce"), what="the registry entry")
    # Listed and recorded: nothing to do, but the reconciler learns the connection's id.
    assert rec.reconcile()[0] == 200
    rec.fake.delete_connection(who, "salesforce")  # no connection.deleted webhook is sent
    assert rec.reconcile()[0] == 200
    entry = wait_for(
        lambda: (e := rec.doc(CONNECTIONS, who, "salesforce")) and e["status"] == "deleted" and e,
        what="the deletion to be recorded",
    )
    assert entry["connection_id"] == connection["id"]
    cleanups = wait_for(lambda: rec.doc(CLEANUPS, who, "salesforce"), what="the cleanup hook")
    assert cleanups == {"runs": 1, "connection_id": connection["id"]}
    status, counts = rec.reconcile()
    assert (status, counts["events_reconciled"]) == (200, 0)
    assert rec.doc(CLEANUPS, who, "salesforce")["runs"] == 1


def test_a_connection_listed_but_never_recorded_is_recorded(rec: Reconciling) -> None:
    who = customer()
    rec.fake.add_run(customer_id=who)  # a run makes the customer known
    assert rec.reconcile()[0] == 200
    wait_for(lambda: rec.doc(SYNC_STATE, who, "hubspot", "contact"), what="the run")
    connection = rec.fake.add_connection(customer_id=who)
    assert rec.reconcile()[0] == 200
    entry = wait_for(lambda: rec.doc(CONNECTIONS, who, "hubspot"), what="the registry entry")
    assert (entry["status"], entry["provider_id"]) == ("active", connection["provider_id"])


def test_a_paused_sync_the_sync_state_does_not_know_is_recovered_once(rec: Reconciling) -> None:
    who = customer()
    sync = rec.fake.set_sync(customer_id=who, object="deal", paused=True)
    assert rec.reconcile()[0] == 200
    state = wait_for(lambda: rec.doc(SYNC_STATE, who, "hubspot", "deal"), what="the pause")
    assert state["paused"] is True
    webhook_id = f"reconciled:sync.paused:{sync['id']}:after:none"
    [line] = wait_for(
        lambda: rec.lines("alerts", event="sync_paused", webhook_id=webhook_id), what="the alert"
    )
    assert line["customer_id"] == who
    status, counts = rec.reconcile()
    assert (status, counts["events_reconciled"]) == (200, 0)
    assert len(rec.lines("alerts", event="sync_paused", webhook_id=webhook_id)) == 1


def test_a_pause_whose_webhook_came_is_not_published_again(rec: Reconciling) -> None:
    who = customer()
    sync = rec.fake.set_sync(customer_id=who, object="lead", paused=True)
    rec.send(
        {**sample("sync.paused"), "customer_id": who, "provider_name": "hubspot", "object": "lead"}
    )
    wait_for(lambda: rec.doc(SYNC_STATE, who, "hubspot", "lead").get("paused"), what="the webhook")
    assert rec.reconcile()[0] == 200
    assert recovered(rec, f"reconciled:sync.paused:{sync['id']}:after:none") == []


def test_a_cursor_the_api_refuses_is_dropped_and_the_window_read_again(rec: Reconciling) -> None:
    run = rec.fake.add_run(customer_id=customer())
    state = rec.db.collection(STATE_COLLECTION).document(STATE_DOCUMENT)
    state.update({"cursor": "not-a-cursor", "window_until": datetime.now(UTC)})
    status, counts = rec.reconcile()
    assert (status, counts["outcome"]) == (500, "reconcile_failed")
    assert (state.get().to_dict() or {})["cursor"] is None
    assert rec.reconcile()[0] == 200
    assert wait_for(run_state(rec, run), what="the run")["total_runs"] == 1
