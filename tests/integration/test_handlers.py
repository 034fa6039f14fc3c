"""The handler services through their real Flask app, on the Firestore and Pub/Sub emulators.

Push requests are built here exactly as a push subscription sends them; the
pipeline tests (test_pipeline.py) have the emulator push them for real.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers.auth import OidcVerifier
from handlers.hooks import PermanentError, RetryableError, TransformRun
from handlers.idempotency import event_key
from handlers.store import CONNECTIONS, SYNC_STATE
from shared.events import parse_event
from shared.settings import HandlerSettings
from tests.conftest import ingest_attributes, push_envelope, reported_crash
from tests.integration.conftest import PROJECT
from tests.integration.harness import Harness
from tests.oidc_issuer import LocalGoogleIssuer

pytestmark = pytest.mark.integration


def log_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line[:1] == "{"]


def events_named(lines: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("event") == name]


# --- alerts ----------------------------------------------------------------


def test_sync_failure_logs_one_sync_failed_line_even_when_delivered_twice(
    harness: Callable[[str], Harness], capsys: pytest.CaptureFixture[str]
) -> None:
    h = harness("alerts")
    payload = h.payload("sync.complete", result="ERROR", error_message="token expired")
    capsys.readouterr()
    assert h.push("alerts", payload, webhook_id="msg_fail_1").status_code == 204
    assert h.push("alerts", payload, webhook_id="msg_fail_1").status_code == 204
    lines = log_lines(capsys)
    [alert] = events_named(lines, "sync_failed")
    assert alert["severity"] == "ERROR"
    assert alert["customer_id"] == h.customer
    assert alert["connection_id"] == payload["connection_id"]
    assert alert["provider_name"] == "hubspot"
    assert alert["object"] == "contact"
    assert alert["error_message"] == "token expired"
    assert len(events_named(lines, "duplicate_ignored")) == 1


@pytest.mark.parametrize(
    ("reason", "event"),
    [
        ("Connection no longer authenticated: refresh token revoked", "reconnect_required"),
        ("Unauthorized: 401", "reconnect_required"),
        ("Manually paused by user", "sync_paused"),
        (None, "sync_paused"),
    ],
)
def test_sync_paused_is_a_warning_and_lost_auth_says_reconnect(
    harness: Callable[[str], Harness],
    capsys: pytest.CaptureFixture[str],
    reason: str | None,
    event: str,
) -> None:
    h = harness("alerts")
    capsys.readouterr()
    assert h.push("alerts", h.payload("sync.paused", pause_reason=reason)).status_code == 204
    [line] = events_named(log_lines(capsys), event)
    assert line["severity"] == "WARNING"
    assert line["customer_id"] == h.customer


def test_connection_created_with_error_is_a_warning(
    harness: Callable[[str], Harness], capsys: pytest.CaptureFixture[str]
) -> None:
    h = harness("alerts")
    capsys.readouterr()
    h.push("alerts", h.payload("connection.created", result="ERROR"))
    h.push("alerts", h.payload("connection.created"))
    h.push("alerts", h.payload("sync.complete"))
    lines = log_lines(capsys)
    [line] = events_named(lines, "connection_error")
    assert line["severity"] == "WARNING"
    assert events_named(lines, "sync_failed") == []


# --- the push contract -----------------------------------------------------


def test_not_mine_is_acknowledged_without_effect(
    harness: Callable[[str], Harness], capsys: pytest.CaptureFixture[str]
) -> None:
    """The emulator ignores subscription filters, so a handler sees others' events."""
    h = harness("connections")
    capsys.readouterr()
    response = h.push("connections", h.payload("sync.paused"), webhook_id="msg_not_mine")
    assert response.status_code == 204
    assert events_named(log_lines(capsys), "not_mine")
    assert h.runtime.ledger.state("connections", "msg_not_mine") is None


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"message": "x"}', b'{"message": {"data": "!!", "messageId": "1"}}'],
)
def test_bad_envelope_is_dead_lettered_and_acknowledged(
    harness: Callable[[str], Harness], body: bytes
) -> None:
    h = harness("connections")
    response = h.client.post("/push/connections", data=body)
    assert response.status_code == 204
    [dead] = h.dead_letters("connections")
    assert dead.data == body
    assert dead.attributes["reason"] == "bad_envelope"
    assert dead.attributes["dead_letter_handler"] == "connections"


def test_invalid_event_is_dead_lettered_with_its_original_attributes(
    harness: Callable[[str], Harness],
) -> None:
    h = harness("connections")
    data = json.dumps({"webhook_event_type": "connection.deleted", "customer_id": "c"}).encode()
    attributes = {
        "event_type": "connection.deleted",
        "webhook_id": "msg_invalid",
        "webhook_timestamp": "1790000000",
        "source": "supaglue",
    }
    assert h.push("connections", data, attributes=attributes).status_code == 204
    [dead] = h.dead_letters("connections")
    assert dead.data == data
    assert dead.attributes["reason"] == "invalid_event"
    assert {k: dead.attributes[k] for k in attributes} == attributes
    assert dead.attributes["original_message_id"]


def test_dead_letter_topic_unavailable_means_retry_not_ack(
    harness: Callable[[str], Harness],
) -> None:
    h = harness("connections")
    h.runtime.settings = h.runtime.settings.model_copy(update={"topic_prefix": "missing"})
    assert h.client.post("/push/connections", data=b"garbage").status_code == 503


# --- connections -----------------------------------------------------------


def test_connection_registry_follows_created_then_deleted(
    harness: Callable[[str], Harness],
) -> None:
    h = harness("connections")
    cleaned: list[tuple[str, str]] = []

    @h.hooks.cleanup()
    def record_cleanup(connection: Any) -> None:
        cleaned.append((connection.customer_id, connection.provider_name))

    now = int(time.time())
    assert (
        h.push("connections", h.payload("connection.created"), sent_at=now - 10).status_code == 204
    )
    state = h.doc(CONNECTIONS, h.customer, "salesforce")
    assert (state["status"], state["last_result"]) == ("active", "SUCCESS")

    deleted = h.payload("connection.deleted", customer_id=f"app-1:{h.customer}")
    assert h.push("connections", deleted, sent_at=now).status_code == 204
    state = h.doc(CONNECTIONS, h.customer, "salesforce")
    assert state["status"] == "deleted"
    assert state["connection_id"] == deleted["connection_id"]
    assert cleaned == [(h.customer, "salesforce")]


def test_an_older_event_does_not_undo_a_newer_one(harness: Callable[[str], Harness]) -> None:
    h = harness("connections")
    now = int(time.time())
    h.push("connections", h.payload("connection.deleted"), sent_at=now)
    h.push("connections", h.payload("connection.created"), sent_at=now - 60)
    assert h.doc(CONNECTIONS, h.customer, "salesforce")["status"] == "deleted"


# --- sync state and transforms ---------------------------------------------


def test_sync_state_counts_failures_and_resets_on_success(
    harness: Callable[[str], Harness],
) -> None:
    h = harness("transforms")
    now = int(time.time())
    for offset in (30, 20):
        payload = h.payload("sync.complete", result="ERROR", num_records_synced=0)
        assert h.push("sync-state", payload, sent_at=now - offset).status_code == 204
    state = h.doc(SYNC_STATE, h.customer, "hubspot", "contact")
    assert (state["consecutive_failures"], state["last_result"]) == (2, "ERROR")
    h.push("sync-state", h.payload("sync.complete", num_records_synced=7), sent_at=now)
    state = h.doc(SYNC_STATE, h.customer, "hubspot", "contact")
    assert state["consecutive_failures"] == 0
    assert state["last_records_synced"] == 7
    assert state["total_runs"] == 3


def test_transform_hooks_get_their_high_water_mark_and_store_the_new_one(
    harness: Callable[[str], Harness],
) -> None:
    h = harness("transforms")
    seen: list[str | None] = []

    @h.hooks.transform("contact")
    def advance(run: TransformRun) -> str | None:
        seen.append(run.high_water_mark)
        return f"mark-{len(seen)}"

    @h.hooks.transform("account")
    def never(run: TransformRun) -> str | None:
        raise AssertionError("registered for another object")

    h.push("sync-state", h.payload("sync.complete"))
    h.push("sync-state", h.payload("sync.complete"))
    assert seen == [None, "mark-1"]
    marks = h.doc(SYNC_STATE, h.customer, "hubspot", "contact")["high_water_marks"]
    assert list(marks.values()) == ["mark-2"]


def test_retryable_hook_failure_is_redelivered_and_takes_effect_once(
    harness: Callable[[str], Harness],
) -> None:
    h = harness("transforms")
    attempts: list[str | None] = []

    @h.hooks.transform("contact")
    def flaky(run: TransformRun) -> str | None:
        attempts.append(run.high_water_mark)
        if len(attempts) < 3:
            raise RetryableError("destination unreachable")
        return "mark-after-success"

    payload = h.payload("sync.complete")
    statuses = [h.push("sync-state", payload, webhook_id="msg_flaky").status_code for _ in range(4)]
    assert statuses == [503, 503, 204, 204]
    assert len(attempts) == 3
    state = h.doc(SYNC_STATE, h.customer, "hubspot", "contact")
    assert state["total_runs"] == 1
    assert list(state["high_water_marks"].values()) == ["mark-after-success"]


def test_permanent_hook_failure_dead_letters_and_stores_nothing(
    harness: Callable[[str], Harness],
) -> None:
    h = harness("transforms")

    @h.hooks.transform("contact")
    def broken(run: TransformRun) -> str | None:
        raise PermanentError("mapping refers to a column that does not exist")

    assert (
        h.push("sync-state", h.payload("sync.complete"), webhook_id="msg_perm").status_code == 204
    )
    [dead] = h.dead_letters("sync-state")
    assert dead.attributes["reason"] == "handler_failed"
    assert "column" in dead.attributes["reason_detail"]
    assert dead.attributes["webhook_id"] == "msg_perm"
    assert h.doc(SYNC_STATE, h.customer, "hubspot", "contact") == {}


def test_unexpected_exception_is_retried_not_acknowledged(
    harness: Callable[[str], Harness], capsys: pytest.CaptureFixture[str]
) -> None:
    h = harness("transforms")

    @h.hooks.transform("contact")
    def buggy(run: TransformRun) -> str | None:
        raise KeyError("oops")

    capsys.readouterr()
    assert h.push("sync-state", h.payload("sync.complete")).status_code == 503
    [line] = events_named(log_lines(capsys), "handler_crashed")
    summary, stack = reported_crash(line, service="transforms")
    assert summary == "sync-state: handler_crashed"
    assert "in buggy" in stack and stack.rstrip().endswith("KeyError: 'oops'")


def test_expected_refusals_are_not_error_reports(
    authenticated: tuple[Harness, LocalGoogleIssuer], capsys: pytest.CaptureFixture[str]
) -> None:
    h, issuer = authenticated
    token = issuer.mint(AUDIENCE, PUSHER)
    payload = h.payload("connection.created")
    capsys.readouterr()
    statuses = [
        push_with(h, payload, "msg_refusals", token).status_code,
        push_with(h, payload, "msg_refusals", token).status_code,  # a duplicate
        push_with(h, h.payload("sync.paused"), "msg_other", token).status_code,  # not mine
        push_with(h, payload, "msg_refusals", None).status_code,  # no token
    ]
    assert statuses == [204, 204, 204, 401]
    lines = log_lines(capsys)
    events = [line["event"] for line in lines if "status" in line]
    assert events == ["event_handled", "duplicate_ignored", "not_mine", "unauthenticated"]
    assert [line for line in lines if "@type" in line] == []


def test_concurrent_duplicate_does_not_run_the_effect_twice(
    harness: Callable[[str], Harness],
) -> None:
    h = harness("transforms")
    entered, release = threading.Event(), threading.Event()
    runs: list[int] = []

    @h.hooks.transform("contact")
    def slow(run: TransformRun) -> str | None:
        runs.append(1)
        entered.set()
        release.wait(10)
        return None

    payload = h.payload("sync.complete")
    first: list[int] = []
    worker = threading.Thread(
        target=lambda: first.append(
            h.push("sync-state", payload, webhook_id="msg_slow").status_code
        )
    )
    worker.start()
    assert entered.wait(10)
    # The redelivery arrives while the first attempt is still running.
    assert h.push("sync-state", payload, webhook_id="msg_slow").status_code == 503
    release.set()
    worker.join(10)
    assert first == [204]
    assert h.push("sync-state", payload, webhook_id="msg_slow").status_code == 204
    assert runs == [1]
    assert h.doc(SYNC_STATE, h.customer, "hubspot", "contact")["total_runs"] == 1


def test_a_crashed_attempt_is_taken_over_after_its_lease(
    harness: Callable[[str], Harness],
) -> None:
    h = harness("transforms")
    payload = h.payload("sync.complete")
    # The ledger keys a sync run on the run (handlers/idempotency.py).
    key = event_key(parse_event(payload), "msg_crashed")
    h.runtime.ledger.claim("sync-state", key, now=datetime.now(UTC) - timedelta(hours=1))
    assert h.push("sync-state", payload, webhook_id="msg_crashed").status_code == 204
    assert h.doc(SYNC_STATE, h.customer, "hubspot", "contact")["total_runs"] == 1
    assert h.runtime.ledger.state("sync-state", key)["attempts"] == 2  # type: ignore[index]


# --- authentication --------------------------------------------------------

AUDIENCE = "https://connections-123.europe-west1.run.app"
PUSHER = "pubsub-push@proj.iam.gserviceaccount.com"


@pytest.fixture
def authenticated(
    harness: Callable[[str], Harness], google_issuer: LocalGoogleIssuer
) -> tuple[Harness, LocalGoogleIssuer]:
    h = harness("connections")
    h.runtime.verifier = OidcVerifier(
        audience=AUDIENCE, allowed_emails=[PUSHER], certs_url=google_issuer.certs_url
    )
    return h, google_issuer


def push_with(h: Harness, payload: dict[str, Any], webhook_id: str, token: str | None) -> Any:
    attributes = ingest_attributes(payload, webhook_id=webhook_id)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = push_envelope(json.dumps(payload).encode(), attributes)
    return h.client.post("/push/connections", data=body, headers=headers)


@pytest.mark.parametrize(
    ("audience", "email", "expires_in", "status"),
    [
        (AUDIENCE, PUSHER, 300, 204),
        (AUDIENCE, PUSHER, -120, 401),
        ("https://elsewhere.run.app", PUSHER, 300, 401),
        (AUDIENCE, "someone@else.iam.gserviceaccount.com", 300, 403),
        (None, None, 0, 401),
    ],
    ids=["valid", "expired", "wrong-audience", "wrong-account", "missing"],
)
def test_push_requests_are_authenticated_before_any_work(
    authenticated: tuple[Harness, LocalGoogleIssuer],
    audience: str | None,
    email: str | None,
    expires_in: int,
    status: int,
) -> None:
    h, issuer = authenticated
    token = issuer.mint(audience, email, expires_in=expires_in) if audience and email else None
    webhook_id = f"msg_auth_{uuid.uuid4().hex}"
    response = push_with(h, h.payload("connection.created"), webhook_id, token)
    assert response.status_code == status
    claimed = h.runtime.ledger.state("connections", webhook_id) is not None
    assert claimed is (status == 204)


def test_service_refuses_to_start_without_auth_settings() -> None:
    with pytest.raises(ValueError, match="PUSH_AUTH_DISABLED"):
        HandlerSettings(google_cloud_project=PROJECT, service="alerts")


def test_disabled_auth_says_so_at_start_up(
    harness: Callable[[str], Harness], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    harness("alerts")
    [line] = events_named(log_lines(capsys), "push_auth_disabled")
    assert line["severity"] == "WARNING"


def test_firestore_contention_is_a_quiet_retry_not_a_crash(
    harness: Callable[[str], Harness], capsys: pytest.CaptureFixture[str]
) -> None:
    h = harness("transforms")

    @h.hooks.transform("contact")
    def contended(run: TransformRun) -> str | None:
        raise ValueError("Failed to commit transaction in 5 attempts.")

    capsys.readouterr()
    assert h.push("sync-state", h.payload("sync.complete")).status_code == 503
    lines = log_lines(capsys)
    assert events_named(lines, "handler_crashed") == []
    [line] = events_named(lines, "retry_later")
    assert line["severity"] == "WARNING"
