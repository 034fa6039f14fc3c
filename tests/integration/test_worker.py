"""The backfill worker's chunk contract, through its real app, on the Firestore emulator.

Tasks the worker enqueues go to a loopback gRPC server that answers like
Cloud Tasks (tests/integration/conftest.py), so each test sees exactly which
next chunk was requested.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from google.cloud import firestore

from handlers.auth import OidcVerifier
from handlers.hooks import (
    Alert,
    AlertKind,
    BackfillChunk,
    ChunkResult,
    HookRegistry,
    PermanentError,
    RetryableError,
)
from handlers.runtime import Runtime
from handlers.store import BACKFILLS, DELETED_CONNECTIONS, doc_id
from handlers.worker import create_worker_app
from shared.log import JsonLogger
from shared.settings import HandlerSettings
from tests.conftest import reported_crash
from tests.integration.conftest import PROJECT, FakeCloudTasks
from tests.oidc_issuer import LocalGoogleIssuer

pytestmark = pytest.mark.integration
HOOK = "tests.integration.test_worker.pages"


@dataclass
class WorkerHarness:
    client: FlaskClient
    db: firestore.Client
    tasks: FakeCloudTasks
    hooks: HookRegistry
    backfill: str
    runtime: Runtime

    def run(
        self, chunk: int, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> int:
        payload = body or json.dumps({"backfill_id": self.backfill, "chunk": chunk}).encode()
        status: int = self.client.post("/backfill/run", data=payload, headers=headers).status_code
        return status

    def record(self) -> dict[str, Any]:
        return self.db.collection(BACKFILLS).document(self.backfill).get().to_dict() or {}

    def enqueued(self) -> list[int]:
        return [json.loads(r.task.http_request.body)["chunk"] for r in self.tasks.requests]


@pytest.fixture
def worker(
    firestore_client: firestore.Client, cloud_tasks: FakeCloudTasks
) -> Callable[..., WorkerHarness]:
    def build(hook: Callable[[BackfillChunk], ChunkResult], **record: Any) -> WorkerHarness:
        settings = HandlerSettings(
            google_cloud_project=PROJECT,
            service="backfill-worker",
            push_auth_disabled=True,
            tasks_location="local",
            tasks_queue="backfills",
            backfill_worker_url="http://127.0.0.1:9",
            cloud_tasks_emulator_host=cloud_tasks.host,
            backfill_chunk_max_records=10,
        )
        hooks = HookRegistry()
        hook.__qualname__ = "pages"
        hook.__module__ = "tests.integration.test_worker"
        hooks.backfill("contact")(hook)
        runtime = Runtime(settings, hooks=hooks, logger=JsonLogger("worker", project_id=PROJECT))
        backfill = f"bf-{uuid.uuid4().hex[:12]}"
        firestore_client.collection(BACKFILLS).document(backfill).set(
            {
                "hook": HOOK,
                "customer_id": "c1",
                "provider_name": "salesforce",
                "connection_id": "conn-1",
                "object": "contact",
                "state": "scheduled",
                "cursor": None,
                "chunks_done": 0,
                "records": 0,
                **record,
            }
        )
        client = create_worker_app(runtime).test_client()
        return WorkerHarness(client, firestore_client, cloud_tasks, hooks, backfill, runtime)

    return build


def pages(total: int) -> Callable[[BackfillChunk], ChunkResult]:
    def hook(chunk: BackfillChunk) -> ChunkResult:
        start = int(chunk.cursor or 0)
        end = min(start + chunk.max_records, total)
        return ChunkResult(end - start, str(end) if end < total else None)

    return hook


def test_chunks_commit_their_cursor_and_enqueue_the_next(
    worker: Callable[..., WorkerHarness],
) -> None:
    h = worker(pages(25))
    assert [h.run(0), h.run(1), h.run(2)] == [204, 204, 204]
    record = h.record()
    assert (record["state"], record["chunks_done"], record["records"]) == ("done", 3, 25)
    assert record["cursor"] is None
    assert h.enqueued() == [1, 2]
    assert record["started_at"] <= record["finished_at"]


def test_a_committed_chunk_delivered_again_only_re_requests_its_successor(
    worker: Callable[..., WorkerHarness],
) -> None:
    calls: list[str | None] = []
    inner = pages(100)

    def hook(chunk: BackfillChunk) -> ChunkResult:
        calls.append(chunk.cursor)
        return inner(chunk)

    h = worker(hook)
    h.run(0)
    assert h.run(0) == 204
    assert calls == [None]
    assert h.record()["chunks_done"] == 1
    # The successor is requested again in case creating it failed the first time.
    assert h.enqueued() == [1, 1]


def test_a_chunk_from_the_future_is_ignored(worker: Callable[..., WorkerHarness]) -> None:
    h = worker(pages(100))
    assert h.run(4) == 204
    assert h.record()["chunks_done"] == 0
    assert h.enqueued() == []


def test_a_retryable_failure_resumes_from_the_last_committed_cursor(
    worker: Callable[..., WorkerHarness],
) -> None:
    cursors: list[str | None] = []
    inner = pages(30)

    def hook(chunk: BackfillChunk) -> ChunkResult:
        cursors.append(chunk.cursor)
        if chunk.chunk == 1 and cursors.count("10") == 1:
            raise RetryableError("source timed out")
        return inner(chunk)

    h = worker(hook)
    assert [h.run(0), h.run(1), h.run(1), h.run(2)] == [204, 503, 204, 204]
    assert cursors == [None, "10", "10", "20"]
    record = h.record()
    assert (record["state"], record["records"], record["chunks_done"]) == ("done", 30, 3)
    assert "source timed out" in record["last_error"]


def test_a_permanent_failure_fails_the_backfill_and_is_not_retried(
    worker: Callable[..., WorkerHarness], capsys: pytest.CaptureFixture[str]
) -> None:
    def hook(chunk: BackfillChunk) -> ChunkResult:
        raise PermanentError("the source rejects our credentials")

    h = worker(hook)
    capsys.readouterr()
    assert h.run(0) == 204
    assert h.record()["state"] == "failed"
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    [failed] = [line for line in lines if line["event"] == "backfill_failed"]
    assert failed["severity"] == "ERROR"
    assert failed["backfill_id"] == h.backfill


def test_a_failed_backfill_is_an_alert_its_hooks_get_once(
    worker: Callable[..., WorkerHarness],
) -> None:
    def hook(chunk: BackfillChunk) -> ChunkResult:
        raise PermanentError("the source rejects our credentials")

    h = worker(hook, trigger_webhook_id="msg_trigger_1")
    alerts: list[Alert] = []

    @h.hooks.alert
    def record(alert: Alert) -> None:
        alerts.append(alert)

    assert h.run(0) == 204
    assert h.run(0) == 204  # Cloud Tasks may deliver it again: the backfill ended
    [alert] = alerts
    assert (alert.kind, alert.backfill_id, alert.webhook_id) == (
        AlertKind.BACKFILL_FAILED,
        h.backfill,
        "msg_trigger_1",
    )
    assert (alert.customer_id, alert.provider_name, alert.object) == ("c1", "salesforce", "contact")
    assert alert.reason == "the source rejects our credentials"


def test_an_alert_hook_that_asks_for_a_retry_runs_again_on_the_redelivery(
    worker: Callable[..., WorkerHarness], capsys: pytest.CaptureFixture[str]
) -> None:
    """The backfill ended failed before its alert hooks ran: the redelivery of the chunk that
    failed runs the hook that asked for a retry, and nothing that already ran."""

    def hook(chunk: BackfillChunk) -> ChunkResult:
        raise PermanentError("the source rejects our credentials")

    h = worker(hook, trigger_webhook_id="msg_trigger_2")
    calls: list[str] = []
    alerts: list[Alert] = []

    @h.hooks.alert
    def steady(alert: Alert) -> None:
        calls.append("steady")

    @h.hooks.alert
    def flaky(alert: Alert) -> None:
        calls.append("flaky")
        if calls.count("flaky") == 1:
            raise RetryableError("the ticket system is down")
        alerts.append(alert)

    capsys.readouterr()
    assert h.run(0) == 503
    assert h.record()["state"] == "failed"
    assert h.run(0) == 204
    assert h.run(0) == 204  # and once it ran, a delivery again runs nothing
    assert calls == ["steady", "flaky", "flaky"]
    [alert] = alerts
    assert (alert.kind, alert.backfill_id) == (AlertKind.BACKFILL_FAILED, h.backfill)
    assert alert.reason == "the source rejects our credentials"
    lines = [json.loads(out) for out in capsys.readouterr().out.splitlines()]
    assert [line["event"] for line in lines].count("backfill_failed") == 1


def test_a_live_lease_makes_a_concurrent_delivery_retry(
    worker: Callable[..., WorkerHarness],
) -> None:
    lease = datetime.now(UTC) + timedelta(minutes=5)
    h = worker(pages(100), state="running", lease_token="other", lease_expires_at=lease)
    assert h.run(0) == 503
    assert h.record()["chunks_done"] == 0


def test_an_expired_lease_is_taken_over(worker: Callable[..., WorkerHarness]) -> None:
    lease = datetime.now(UTC) - timedelta(minutes=5)
    h = worker(pages(100), state="running", lease_token="crashed", lease_expires_at=lease)
    assert h.run(0) == 204
    assert h.record()["chunks_done"] == 1


@pytest.mark.parametrize("state", ["cancelled", "done", "failed"])
def test_an_ended_backfill_runs_no_more_chunks(
    worker: Callable[..., WorkerHarness], state: str
) -> None:
    def hook(chunk: BackfillChunk) -> ChunkResult:
        raise AssertionError("must not run")

    h = worker(hook, state=state)
    assert h.run(0) == 204
    assert h.enqueued() == []


def test_cancelled_while_the_chunk_ran_does_not_commit(
    worker: Callable[..., WorkerHarness], firestore_client: firestore.Client
) -> None:
    def hook(chunk: BackfillChunk) -> ChunkResult:
        firestore_client.collection(BACKFILLS).document(chunk.backfill_id).update(
            {"state": "cancelled"}
        )
        return pages(100)(chunk)

    h = worker(hook)
    assert h.run(0) == 204
    record = h.record()
    assert (record["state"], record["chunks_done"], record["records"]) == ("cancelled", 0, 0)
    assert h.enqueued() == []


def test_missing_record_is_retried_and_a_malformed_task_is_dropped(
    worker: Callable[..., WorkerHarness],
) -> None:
    h = worker(pages(10))
    assert h.run(0, json.dumps({"backfill_id": "bf-none", "chunk": 0}).encode()) == 503
    assert h.run(0, b"not json") == 204
    assert h.run(0, json.dumps({"backfill_id": 7, "chunk": -1}).encode()) == 204


def test_tasks_must_carry_the_tasks_token_and_come_from_the_queue(
    worker: Callable[..., WorkerHarness], google_issuer: LocalGoogleIssuer
) -> None:
    audience, tasks_account = "http://127.0.0.1:9", "tasks@proj.iam.gserviceaccount.com"
    h = worker(pages(100))
    h.runtime.verifier = OidcVerifier(
        audience=audience, allowed_emails=[tasks_account], certs_url=google_issuer.certs_url
    )
    token = {"Authorization": f"Bearer {google_issuer.mint(audience, tasks_account)}"}
    pusher = google_issuer.mint(audience, "pubsub-push@proj.iam.gserviceaccount.com")
    assert h.run(0, headers={}) == 401
    assert h.run(0, headers={"Authorization": f"Bearer {pusher}"}) == 403
    # Cloud Tasks sets the queue header and strips it from requests that do not come from it.
    assert h.run(0, headers=token) == 403
    assert h.run(0, headers={**token, "X-CloudTasks-QueueName": "other"}) == 403
    assert h.record()["chunks_done"] == 0
    assert h.run(0, headers={**token, "X-CloudTasks-QueueName": "backfills"}) == 204
    assert h.record()["chunks_done"] == 1


def test_a_backfill_of_a_connection_deleted_after_its_trigger_stops_cancelled(
    worker: Callable[..., WorkerHarness],
) -> None:
    """The scheduler's cancellation can run before a racing trigger recorded its backfill."""
    ran: list[int] = []

    def hook(chunk: BackfillChunk) -> ChunkResult:
        ran.append(chunk.chunk)
        return ChunkResult(1, None)

    customer = f"c-{uuid.uuid4().hex[:8]}"
    h = worker(hook, customer_id=customer, trigger_sent_at=1_800_000_000)
    h.db.collection(DELETED_CONNECTIONS).document(doc_id(customer, "salesforce")).set(
        {"deleted_at": 1_800_000_100, "connection_id": "conn-1"}
    )
    assert h.run(0) == 204
    assert ran == []
    assert h.record()["state"] == "cancelled"


def test_a_chunk_continues_the_tasks_trace_and_hands_it_to_the_next(
    worker: Callable[..., WorkerHarness], capsys: pytest.CaptureFixture[str]
) -> None:
    h = worker(pages(25))
    trace_id, scheduler_span = "ab" * 16, "cd" * 8
    capsys.readouterr()
    assert h.run(0, headers={"traceparent": f"00-{trace_id}-{scheduler_span}-01"}) == 204
    [line] = [json.loads(out) for out in capsys.readouterr().out.splitlines()]
    assert line["event"] == "backfill_chunk_done"
    assert line["logging.googleapis.com/trace"] == f"projects/{PROJECT}/traces/{trace_id}"
    span = line["logging.googleapis.com/spanId"]
    assert span != scheduler_span
    [request] = h.tasks.requests
    # The next chunk's parent is this chunk's span, in the same trace.
    assert request.task.http_request.headers["traceparent"] == f"00-{trace_id}-{span}-01"


def test_a_crash_in_a_chunk_is_retried_and_reported_to_error_reporting(
    worker: Callable[..., WorkerHarness], capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(chunk: BackfillChunk) -> ChunkResult:
        raise RuntimeError("the source moved")

    h = worker(broken)
    capsys.readouterr()
    assert h.run(0) == 503
    [line] = [json.loads(out) for out in capsys.readouterr().out.splitlines()]
    assert line["event"] == "handler_crashed"
    summary, stack = reported_crash(line, service="worker")
    assert summary == "backfill worker: handler_crashed"
    assert stack.rstrip().endswith("RuntimeError: the source moved")
