"""The whole pipeline on the emulators: signed webhook in, effects out.

ingest function -> Pub/Sub emulator -> push subscriptions (built from the
routing table) -> handler services under gunicorn -> Firestore; and for
backfills -> Cloud Tasks emulator -> backfill worker -> Firestore.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from google.cloud import firestore

from handlers.backfill_store import backfill_id
from handlers.idempotency import event_key
from handlers.ledger import Ledger
from handlers.store import BACKFILLS, CONNECTIONS, SYNC_STATE, doc_id
from handlers.tasks_queue import BackfillQueue, TaskRequest
from ops import pubsub_admin
from ops.local.stack import Emulators, Stack, StackSpec, running_stack
from ops.local.topology import Delivery
from ops.signing import signed_headers
from shared.events import parse_event
from shared.names import Names
from shared.samples import sample
from shared.settings import HandlerSettings
from tests.conftest import ingest_client
from tests.hooks import backfill as backfill_hooks
from tests.hooks import pipeline as pipeline_hooks
from tests.integration.conftest import PROJECT, wait_for

pytestmark = pytest.mark.integration


@dataclass
class Pipeline:
    stack: Stack
    db: firestore.Client = field(default_factory=lambda: firestore.Client(project=PROJECT))

    @property
    def names(self) -> Names:
        return self.stack.names

    @property
    def worker(self) -> str:
        return self.stack.spec.routing.worker.name

    @property
    def pubsub_host(self) -> str:
        return self.stack.emulators.pubsub.host_port

    def restart_worker(self, **extra_env: str) -> None:
        self.stack.restart(self.worker, **extra_env)

    def kill_worker(self) -> None:
        self.stack.services[self.worker].kill()

    def state(self, route: str, webhook_id: str) -> dict[str, Any] | None:
        """The route's ledger entry for the webhook."""
        return Ledger(self.db, lease_seconds=1, retention=timedelta(days=1)).state(
            route, webhook_id
        )

    def doc(self, collection: str, document: str) -> dict[str, Any]:
        return self.db.collection(collection).document(document).get().to_dict() or {}

    def log_lines(self, service: str) -> list[dict[str, Any]]:
        lines = self.stack.services[service].log().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.fixture(scope="module")
def stack(
    emulators: Emulators,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    spec = StackSpec.on_free_ports(
        PROJECT,
        tmp_path_factory.mktemp("pipeline"),
        hook_modules="tests.hooks.pipeline,tests.hooks.backfill",
        extra_env={
            "BACKFILL_CHUNK_MAX_RECORDS": "10",
            # Short leases, so an attempt killed mid-work is taken over within the test.
            "LEDGER_LEASE_SECONDS": "4",
        },
        # Retries within seconds, and dead letters after five attempts, so tests see both.
        delivery=Delivery(
            max_delivery_attempts=5, minimum_backoff_seconds=1, maximum_backoff_seconds=2
        ),
    )
    with running_stack(spec, emulators) as running:
        yield Pipeline(running)


@pytest.fixture
def send(
    stack: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[str, dict[str, Any]]]:
    """Sign and send an event to the real ingest function; returns (webhook id, payload)."""
    for key, value in stack.stack.ingest_env.items():
        monkeypatch.setenv(key, value)
    client = ingest_client()

    def send_event(
        event_type: str,
        *,
        times: int = 1,
        webhook_id: str | None = None,
        sent_at: int | None = None,
        traceparent: str | None = None,
        **changes: Any,
    ) -> tuple[str, dict[str, Any]]:
        """`sent_at`: when Svix signed it (within the function's five minutes), to send one
        event after another that is newer."""
        payload = {**sample(event_type), **changes}
        if "run_id" in payload and "run_id" not in changes:
            # A run of its own: the ledger keys a sync.complete on its run.
            payload["run_id"] = f"run-{uuid.uuid4().hex}"
        body = json.dumps(payload).encode()
        webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
        for _ in range(times):
            headers = signed_headers(body, webhook_id=webhook_id, timestamp=sent_at)
            if traceparent:
                headers["traceparent"] = traceparent
            response = client.post("/", data=body, headers=headers)
            assert response.status_code == 204, response.data
        return webhook_id, payload

    return send_event


def customer() -> str:
    return f"cust-{uuid.uuid4().hex[:10]}"


def test_signed_webhook_reaches_its_handler_and_takes_effect(
    stack: Pipeline, send: Callable[..., tuple[str, dict[str, Any]]]
) -> None:
    who = customer()
    webhook_id, payload = send("sync.complete", customer_id=who, num_records_synced=12)
    state = wait_for(
        lambda: stack.doc(SYNC_STATE, doc_id(who, "hubspot", "contact")), what="sync state"
    )
    assert (state["last_result"], state["last_records_synced"], state["total_runs"]) == (
        "SUCCESS",
        12,
        1,
    )
    # Keyed on its run, the ledger entry still names the webhook that brought it.
    entry = stack.state("sync-state", event_key(parse_event(payload), webhook_id))
    assert entry is not None
    assert (entry["state"], entry["received_webhook_id"]) == ("done", webhook_id)


def test_the_same_webhook_delivered_three_times_takes_effect_once(
    stack: Pipeline, send: Callable[..., tuple[str, dict[str, Any]]]
) -> None:
    who = customer()
    webhook_id, _ = send(
        "sync.complete", times=3, customer_id=who, object="counted", result="ERROR"
    )
    key = doc_id(who, "hubspot", "counted")
    wait_for(lambda: stack.doc(SYNC_STATE, key), what="sync state")
    # All three copies are delivered to every push subscription; give the last ones time.
    time.sleep(3)
    assert stack.doc(SYNC_STATE, key)["total_runs"] == 1
    assert stack.doc(SYNC_STATE, key)["consecutive_failures"] == 1
    failed = [
        line
        for line in stack.log_lines("alerts")
        if line.get("event") == "sync_failed" and line.get("webhook_id") == webhook_id
    ]
    assert len(failed) == 1


def test_a_handler_failing_twice_then_succeeding_takes_effect_once(
    stack: Pipeline, send: Callable[..., tuple[str, dict[str, Any]]]
) -> None:
    who = customer()
    _, payload = send("sync.complete", customer_id=who, object="flaky")
    key = doc_id(who, "hubspot", "flaky")
    state = wait_for(lambda: stack.doc(SYNC_STATE, key), timeout=45, what="retried effect")
    assert state["total_runs"] == 1
    assert list(state["high_water_marks"].values()) == [f"after-{payload['run_id']}"]
    attempts = stack.doc(pipeline_hooks.ATTEMPTS, doc_id(who, payload["run_id"]))
    assert attempts["attempts"] == 3


def test_a_permanent_failure_lands_on_the_dead_letter_topic(
    stack: Pipeline, send: Callable[..., tuple[str, dict[str, Any]]]
) -> None:
    who = customer()
    webhook_id, _ = send("sync.complete", customer_id=who, object="poison")
    subscriber = pubsub_admin.subscriber_client(stack.pubsub_host)
    dead_letter = stack.names.dead_letter_topic("sync-state")
    path = subscriber.subscription_path(PROJECT, stack.names.watch_subscription(dead_letter))

    def dead_letters() -> list[pubsub_admin.PulledMessage]:
        return [
            m
            for m in pubsub_admin.pull(subscriber, path)
            if m.attributes.get("webhook_id") == webhook_id
        ]

    [dead] = wait_for(dead_letters, what="the dead letter")
    assert dead.attributes["reason"] == "handler_failed"
    assert dead.attributes["customer_id"] == who
    assert json.loads(dead.data)["customer_id"] == who
    assert stack.doc(SYNC_STATE, doc_id(who, "hubspot", "poison")) == {}


def test_an_event_for_another_handler_is_acknowledged_without_effect(
    stack: Pipeline, send: Callable[..., tuple[str, dict[str, Any]]]
) -> None:
    """The emulator ignores subscription filters: every handler sees every event."""
    who = customer()
    webhook_id, _ = send("sync.paused", customer_id=who)

    def not_mine() -> bool:
        return any(
            line.get("event") == "not_mine" and line.get("webhook_id") == webhook_id
            for line in stack.log_lines("connections")
        )

    wait_for(not_mine, what="connections acknowledging another handler's event")
    assert stack.doc(CONNECTIONS, doc_id(who, "salesforce")) == {}


def test_a_mapping_webhook_runs_a_backfill_of_several_chunks_to_completion(
    stack: Pipeline, send: Callable[..., tuple[str, dict[str, Any]]]
) -> None:
    who = customer()
    # Svix retries the trigger: three deliveries of one webhook must make one backfill.
    webhook_id, _ = send(
        "object.field_mapping.updated",
        times=3,
        customer_id=who,
        object_name="contact",
        result="SUCCESS",
    )
    backfill = backfill_id(webhook_id, "tests.hooks.backfill.load_contacts")
    record = wait_for(
        lambda: (r := stack.doc(BACKFILLS, backfill)) and r["state"] == "done" and r,
        timeout=60,
        what="the backfill to finish",
    )
    assert record["records"] == backfill_hooks.RECORDS
    assert record["chunks_done"] == 5
    assert record["customer_id"] == who
    for chunk in range(5):
        runs = stack.doc(backfill_hooks.RUNS, f"{backfill}:{chunk}")
        assert runs["runs"] == 1
        assert runs["cursor"] == (None if chunk == 0 else str(chunk * 10))
    scheduled = [
        line
        for line in stack.log_lines("backfills")
        if line.get("event") == "backfill_scheduled" and line.get("backfill_id") == backfill
    ]
    assert len(scheduled) == 1


def test_a_chunk_task_delivered_twice_does_its_work_once(
    stack: Pipeline, send: Callable[..., tuple[str, dict[str, Any]]]
) -> None:
    """The emulator accepts duplicate task names; the worker must not redo a committed chunk."""
    who = customer()
    webhook_id, _ = send("entity.entity_mapping.updated", customer_id=who, object_name="contact")
    backfill = backfill_id(webhook_id, "tests.hooks.backfill.load_contacts")
    wait_for(
        lambda: (r := stack.doc(BACKFILLS, backfill)) and r["state"] == "done" and r,
        timeout=60,
        what="the backfill to finish",
    )
    env = stack.stack.handler_env
    settings = HandlerSettings(
        google_cloud_project=env["GOOGLE_CLOUD_PROJECT"],
        service="backfills",
        push_auth_disabled=True,
        tasks_location=env["TASKS_LOCATION"],
        tasks_queue=env["TASKS_QUEUE"],
        backfill_worker_url=env["BACKFILL_WORKER_URL"],
        cloud_tasks_emulator_host=env["CLOUD_TASKS_EMULATOR_HOST"],
    )
    for chunk in (0, 3):
        assert BackfillQueue(settings).enqueue(TaskRequest(backfill, chunk)) is True

    def ignored() -> int:
        return sum(
            1
            for line in stack.log_lines("backfill-worker")
            if line.get("event") == "backfill_done_skipped" and line.get("backfill_id") == backfill
        )

    wait_for(lambda: ignored() == 2, what="both duplicates to be refused")
    runs = [stack.doc(backfill_hooks.RUNS, f"{backfill}:{c}")["runs"] for c in range(5)]
    assert runs == [1] * 5
    assert stack.doc(BACKFILLS, backfill)["records"] == backfill_hooks.RECORDS


def test_a_killed_worker_resumes_from_its_cursor(
    stack: Pipeline, send: Callable[..., tuple[str, dict[str, Any]]]
) -> None:
    stack.restart_worker(BACKFILL_TEST_SLOW_CHUNK="2", BACKFILL_TEST_SLOW_SECONDS="60")
    who = customer()
    webhook_id, _ = send("connection.created", customer_id=who, provider_name=f"p-{who}")
    backfill = backfill_id(webhook_id, "tests.hooks.backfill.load_contacts")
    wait_for(
        lambda: stack.doc(backfill_hooks.RUNS, f"{backfill}:2"),
        timeout=60,
        what="chunk 2 to start",
    )
    stack.kill_worker()
    stack.restart_worker()
    record = wait_for(
        lambda: (r := stack.doc(BACKFILLS, backfill)) and r["state"] == "done" and r,
        timeout=60,
        what="the backfill to finish after the restart",
    )
    assert record["records"] == backfill_hooks.RECORDS
    assert record["chunks_done"] == 5
    runs = [stack.doc(backfill_hooks.RUNS, f"{backfill}:{c}")["runs"] for c in range(5)]
    # Only the chunk the kill interrupted ran again; committed chunks never did.
    assert runs == [1, 1, 2, 1, 1]
    assert stack.doc(backfill_hooks.RUNS, f"{backfill}:2")["cursor"] == "20"


@pytest.mark.parametrize(
    "trigger",
    [
        {"event_type": "entity.entity_mapping.created", "object_name": "contact"},
        # A new connection's first full load: its event names no connection id.
        {"event_type": "connection.created", "result": "SUCCESS"},
    ],
    ids=["mapping-change", "new-connection"],
)
def test_deleting_the_connection_cancels_its_running_backfill(
    stack: Pipeline, send: Callable[..., tuple[str, dict[str, Any]]], trigger: dict[str, Any]
) -> None:
    stack.restart_worker(BACKFILL_TEST_SLOW_CHUNK="1", BACKFILL_TEST_SLOW_SECONDS="3")
    try:
        who = customer()
        connection = f"conn-{who}"
        changes = {k: v for k, v in trigger.items() if k != "event_type"}
        webhook_id, _ = send(
            trigger["event_type"], customer_id=who, connection_id=connection, **changes
        )
        backfill = backfill_id(webhook_id, "tests.hooks.backfill.load_contacts")
        wait_for(lambda: stack.doc(backfill_hooks.RUNS, f"{backfill}:1"), what="chunk 1 to start")
        send("connection.deleted", customer_id=f"app:{who}", connection_id=connection)
        record = wait_for(
            lambda: (r := stack.doc(BACKFILLS, backfill)) and r["state"] == "cancelled" and r,
            what="the cancellation",
        )
        # Chunk 1 was running when the deletion came: it must not commit, nor start chunk 2.
        time.sleep(5)
        record = stack.doc(BACKFILLS, backfill)
        assert record["state"] == "cancelled"
        assert record["chunks_done"] == 1
        assert stack.doc(backfill_hooks.RUNS, f"{backfill}:2") == {}
    finally:
        stack.restart_worker()


def test_an_older_event_arriving_after_the_deletion_acts_for_no_deleted_connection(
    stack: Pipeline, send: Callable[..., tuple[str, dict[str, Any]]]
) -> None:
    """connection.deleted first, then an older connection.created and an older successful sync:
    no backfill is scheduled and no transform runs for the deleted connection."""
    who = customer()
    now = int(time.time())
    send("connection.deleted", customer_id=f"app:{who}", provider_name="hubspot", sent_at=now)
    wait_for(
        lambda: stack.doc(CONNECTIONS, doc_id(who, "hubspot")).get("status") == "deleted",
        what="the deletion to be recorded",
    )
    created, _ = send(
        "connection.created", customer_id=who, provider_name="hubspot", sent_at=now - 60
    )
    synced, payload = send("sync.complete", customer_id=who, object="counted", sent_at=now - 30)
    # Both were handled (their ledger entries are done), and neither acted.

    def handled(route: str, key: str) -> bool:
        return (stack.state(route, key) or {}).get("state") == "done"

    # The ledger keys a sync.complete on its run (handlers/idempotency.py).
    run = event_key(parse_event(payload), synced)
    for route, key in (("backfill-scheduler", created), ("sync-state", run)):
        wait_for(functools.partial(handled, route, key), what=f"{route} to handle it")
    assert stack.doc(BACKFILLS, backfill_id(created, "tests.hooks.backfill.load_contacts")) == {}
    assert stack.doc(pipeline_hooks.ATTEMPTS, doc_id(who, payload["run_id"])) == {}
    # The registry kept the newer deletion, and the sync state still records the run.
    assert stack.doc(CONNECTIONS, doc_id(who, "hubspot"))["status"] == "deleted"
    assert stack.doc(SYNC_STATE, doc_id(who, "hubspot", "counted"))["total_runs"] == 1


def test_one_webhook_is_one_trace_through_every_hop(
    stack: Pipeline, send: Callable[..., tuple[str, dict[str, Any]]]
) -> None:
    """ingest -> Pub/Sub -> each route's delivery -> Cloud Tasks -> every chunk of the worker:
    every line under the webhook's trace, each hop with a span of its own."""
    trace_id, ingest_span = uuid.uuid4().hex, "cd" * 8
    traceparent = f"00-{trace_id}-{ingest_span}-01"
    who = customer()
    webhook_id, _ = send(
        "entity.entity_mapping.updated",
        customer_id=who,
        object_name="contact",
        traceparent=traceparent,
    )
    synced, _ = send("sync.complete", customer_id=who, traceparent=traceparent)
    backfill = backfill_id(webhook_id, "tests.hooks.backfill.load_contacts")
    wait_for(
        lambda: (r := stack.doc(BACKFILLS, backfill)) and r["state"] == "done" and r,
        timeout=60,
        what="the backfill to finish",
    )
    trace = f"projects/{PROJECT}/traces/{trace_id}"

    def traced(service: str, event: str, webhook: str | None = None) -> list[dict[str, Any]]:
        return [
            line
            for line in stack.log_lines(service)
            if line.get("event") == event
            and line.get("logging.googleapis.com/trace") == trace
            and (webhook is None or line.get("webhook_id") == webhook)
        ]

    # Each route's delivery of each webhook.
    deliveries: list[dict[str, Any]] = []
    for service, webhook in (("backfills", webhook_id), ("alerts", synced), ("transforms", synced)):
        probe = functools.partial(traced, service, "event_handled", webhook)
        deliveries.append(wait_for(probe, what=f"{service}'s line under the trace")[0])
    [scheduled] = traced("backfills", "backfill_scheduled")
    assert (
        scheduled["logging.googleapis.com/spanId"] == deliveries[0]["logging.googleapis.com/spanId"]
    )

    # The task carried the trace to the worker, and each chunk to the next.
    def four_chunks() -> list[dict[str, Any]] | None:
        found = traced("backfill-worker", "backfill_chunk_done")
        return found if len(found) == 4 else None

    chunks = wait_for(four_chunks, what="four chunks under the trace")
    [completed] = wait_for(lambda: traced("backfill-worker", "backfill_completed"), what="done")
    assert sorted(line["chunk"] for line in [*chunks, completed]) == [0, 1, 2, 3, 4]
    spans = [line["logging.googleapis.com/spanId"] for line in [*deliveries, *chunks, completed]]
    assert all(len(span) == 16 and int(span, 16) for span in spans)
    assert len(set(spans)) == len(spans) and ingest_span not in spans
    assert all(
        line["logging.googleapis.com/trace_sampled"] is True for line in [*chunks, completed]
    )
