"""`python -m ops` send (against a real local HTTP server, checked with `svix` itself),
watch output, status tables, and the local stack's layout and banner.

The receiver below records each request as it arrived on the wire, so the
tests see exactly the bytes and headers an ingest function would see.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from svix.webhooks import Webhook, WebhookVerificationError

from ops.cli.main import main
from ops.cli.send import SECRET_ENV, SIMULATED_ERROR
from ops.cli.status import MAX_CELL, TABLES, cell, format_status
from ops.cli.watch import format_message, watch_subscriptions
from ops.pubsub_admin import PulledMessage
from ops.signing import DEV_SECRET
from shared.routing import load_routes
from shared.samples import sample, sample_bytes, sample_types
from tests.conftest import REPO

OTHER_SECRET = "whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode()


@dataclass(frozen=True)
class Received:
    method: str
    headers: dict[str, str]
    body: bytes

    def verify(self, secret: str = DEV_SECRET) -> None:
        Webhook(secret).verify(self.body, self.headers)

    def json(self) -> dict[str, object]:
        payload: dict[str, object] = json.loads(self.body)
        return payload


@dataclass
class Receiver:
    """A webhook endpoint on loopback that answers `status` and records every request."""

    url: str = ""
    status: int = 200
    reply: bytes = b'{"status":"published","message_id":"1"}'
    extra_headers: dict[str, str] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            state.requests.append(Received("POST", dict(self.headers.items()), body))
            self.send_response(state.status)
            for name, value in state.extra_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(state.reply)))
            self.end_headers()
            self.wfile.write(state.reply)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_secret_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own WEBHOOK_SECRET must not change which secret the tests expect.
    monkeypatch.delenv(SECRET_ENV, raising=False)


def send(receiver: Receiver, *args: str) -> int:
    return main(["send", *args, "--url", receiver.url])


# --- signing ---------------------------------------------------------------


@pytest.mark.parametrize("event_type", sample_types())
def test_every_sample_is_sent_byte_for_byte_and_verifies(
    receiver: Receiver, event_type: str
) -> None:
    assert send(receiver, event_type) == 0
    [request] = receiver.requests
    assert request.body == sample_bytes(event_type)
    assert request.headers["Content-Type"] == "application/json"
    request.verify()


def test_prints_the_status_and_the_answer(
    receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    assert send(receiver, "sync.complete") == 0
    out = capsys.readouterr().out
    assert "sync.complete" in out
    assert '<- 200 {"status":"published","message_id":"1"}' in out


def test_secret_defaults_to_the_environment_variable(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, OTHER_SECRET)
    assert send(receiver, "sync.paused") == 0
    [request] = receiver.requests
    request.verify(OTHER_SECRET)
    with pytest.raises(WebhookVerificationError):
        request.verify(DEV_SECRET)


def test_secret_flag_wins_over_the_environment(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, DEV_SECRET)
    assert send(receiver, "sync.paused", "--secret", OTHER_SECRET) == 0
    receiver.requests[0].verify(OTHER_SECRET)


def test_unbranded_uses_the_standard_webhooks_headers(receiver: Receiver) -> None:
    assert send(receiver, "connection.created", "--unbranded") == 0
    [request] = receiver.requests
    names = {name.lower() for name in request.headers}
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= names
    assert not any(name.startswith("svix-") for name in names)
    request.verify()


def test_a_file_is_sent_exactly_as_it_is(receiver: Receiver, tmp_path: Path) -> None:
    path = tmp_path / "odd.bin"
    path.write_bytes(b"not json at all \xc3\xa9")
    assert send(receiver, str(path)) == 0
    [request] = receiver.requests
    assert request.body == path.read_bytes()
    request.verify()


# --- overrides -------------------------------------------------------------


def test_result_error_on_sync_complete_looks_like_a_failed_run(receiver: Receiver) -> None:
    assert send(receiver, "sync.complete", "--result", "ERROR") == 0
    [request] = receiver.requests
    request.verify()  # the modified bytes are the signed bytes
    expected = {
        **sample("sync.complete"),
        "result": "ERROR",
        "num_records_synced": 0,
        "error_message": SIMULATED_ERROR,
    }
    assert request.json() == expected


def test_result_success_carries_no_error_message(receiver: Receiver) -> None:
    assert send(receiver, "object.field_mapping.created", "--result", "success") == 0
    payload = receiver.requests[0].json()
    assert payload["result"] == "SUCCESS"
    assert "error_message" not in payload


def test_set_values_are_json_when_they_parse_and_apply_after_result(receiver: Receiver) -> None:
    args = [
        "sync.complete",
        "--result",
        "ERROR",
        "--set",
        "num_records_synced=3",
        "--set",
        "customer_id=cust_9",
        "--set",
        'run_id="42"',
        "--set",
        "error_message=null",
    ]
    assert send(receiver, *args) == 0
    [request] = receiver.requests
    request.verify()
    payload = request.json()
    assert payload["num_records_synced"] == 3
    assert payload["customer_id"] == "cust_9"
    assert payload["run_id"] == "42"
    assert payload["error_message"] is None
    assert payload["result"] == "ERROR"


def test_result_on_an_event_without_one_is_refused_before_sending(
    receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    assert send(receiver, "sync.paused", "--result", "ERROR") == 2
    assert "no result" in capsys.readouterr().err
    assert receiver.requests == []


def test_malformed_set_is_a_usage_error(receiver: Receiver) -> None:
    with pytest.raises(SystemExit) as exit_info:
        send(receiver, "sync.complete", "--set", "no-equals-sign")
    assert exit_info.value.code == 2
    assert receiver.requests == []


# --- retries and failures --------------------------------------------------


def test_repeat_resends_the_same_delivery(receiver: Receiver) -> None:
    assert send(receiver, "sync.complete", "--repeat", "3", "--webhook-id", "msg_retry") == 0
    assert len(receiver.requests) == 3
    assert {r.headers["Svix-Id"] for r in receiver.requests} == {"msg_retry"}
    assert {r.body for r in receiver.requests} == {sample_bytes("sync.complete")}
    for request in receiver.requests:
        request.verify()


def test_repeat_without_an_id_still_keeps_one_id(receiver: Receiver) -> None:
    assert send(receiver, "sync.paused", "--repeat", "2") == 0
    first, second = receiver.requests
    assert first.headers["Svix-Id"] == second.headers["Svix-Id"]
    assert first.headers["Svix-Id"].startswith("msg_")


@pytest.mark.parametrize("status", [400, 401, 503])
def test_a_non_2xx_answer_fails_the_command(
    receiver: Receiver, capsys: pytest.CaptureFixture[str], status: int
) -> None:
    receiver.status = status
    receiver.reply = b'{"error":"nope"}'
    assert send(receiver, "sync.complete") == 1
    out, err = capsys.readouterr()
    assert f'<- {status} {{"error":"nope"}}' in out
    hints = {
        400: "",
        401: ": the signature was refused; is --secret (or $WEBHOOK_SECRET) one of the "
        "function's WEBHOOK_SECRETS?",
        503: ": the function could not store it in Pub/Sub (its log says why); Svix would retry",
    }
    assert err == f"error: {receiver.url} answered {status}, not 2xx{hints[status]}\n"


def test_a_redirect_is_reported_not_followed(receiver: Receiver) -> None:
    receiver.status = 307
    receiver.extra_headers = {"Location": receiver.url + "elsewhere"}
    assert send(receiver, "sync.complete") == 1
    assert len(receiver.requests) == 1


def test_one_failed_attempt_fails_a_repeat(
    receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    receiver.status = 404
    assert send(receiver, "sync.complete", "--repeat", "2") == 1
    assert len(receiver.requests) == 2  # every attempt is still made, as Svix would
    assert capsys.readouterr().err == (
        f"error: {receiver.url} answered 404, not 2xx (2 of 2 deliveries): "
        "is --url the ingest function's URL?\n"
    )


def test_no_server_is_a_clear_failure(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Bound but not listening: connections to it are refused.
    assert main(["send", "sync.complete", "--url", f"http://127.0.0.1:{port}/"]) == 1
    assert "no answer from" in capsys.readouterr().err


def test_an_unknown_event_type_lists_the_samples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "sync.exploded"]) == 2
    err = capsys.readouterr().err
    assert "sync.exploded" in err
    assert "sync.complete" in err


# --- listing ---------------------------------------------------------------


def test_list_names_every_sample_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "--list"]) == 0
    listed = capsys.readouterr().out.split()
    assert listed == sample_types()
    assert len(listed) == 9


# --- watch output -----------------------------


def test_a_watched_message_shows_attributes_and_pretty_json() -> None:
    message = PulledMessage(
        data=sample_bytes("sync.paused"),
        attributes={"event_type": "sync.paused", "webhook_id": "msg_1"},
        message_id="7",
        ack_id="ack",
    )
    text = format_message("supaglue-events-watch", message)
    assert text.splitlines()[:3] == [
        "=== supaglue-events-watch  message 7",
        "  event_type: sync.paused",
        "  webhook_id: msg_1",
    ]
    assert json.loads("\n".join(text.splitlines()[3:])) == sample("sync.paused")


def test_a_watched_body_that_is_not_json_is_shown_as_text() -> None:
    message = PulledMessage(data=b"<xml/>", attributes={}, message_id="8", ack_id="ack")
    assert format_message("q", message).splitlines()[1:] == ["(6 bytes, not JSON)", "<xml/>"]


def test_watch_reads_events_quarantine_and_every_dead_letter_topic() -> None:
    assert set(watch_subscriptions()) == {
        "supaglue-events-watch",
        "supaglue-quarantine-watch",
        *(f"supaglue-{route}-dead-letter-watch" for route in load_routes()),
    }


# --- status ------------------------------------------------------------------

NOW = datetime(2026, 11, 28, 20, 3, 29, 123456, tzinfo=UTC)


def status_rows() -> dict[str, list[dict[str, object]]]:
    return {
        "connections": [
            {
                "customer_id": "cust-1",
                "provider_name": "salesforce",
                "status": "deleted",
                "last_event_type": "connection.deleted",
                "last_result": "SUCCESS",
                "updated_at": NOW,
                "provider_id": "not shown",
            }
        ],
        "sync_state": [
            {
                "customer_id": "cust-1",
                "provider_name": "hubspot",
                "object": "contact",
                "last_result": "ERROR",
                "consecutive_failures": 2,
                "last_records_synced": 0,
                "total_runs": 3,
                # Firestore hands back aware datetimes; another zone is shown in UTC.
                "updated_at": NOW.astimezone(timezone(timedelta(hours=2))),
                "last_error_message": "line one\nline two " + "x" * 100,
            },
            {"customer_id": "cust-2", "object": "deal", "total_runs": 1},
        ],
        "backfills": [],
    }


def test_status_prints_a_titled_table_per_collection_with_readable_headers() -> None:
    text = format_status(status_rows(), source="Firestore emulator 127.0.0.1:8086")
    lines = text.splitlines()
    assert lines[0] == "Firestore emulator 127.0.0.1:8086"
    assert "connections (1, newest first)" in lines
    assert "sync state (2, newest first)" in lines
    assert "backfills (none)" in lines
    header = lines[lines.index("connections (1, newest first)") + 1]
    assert header.split() == [
        "customer",
        "provider",
        "status",
        "last",
        "event",
        "result",
        "updated",
        "(UTC)",
    ]
    assert "not shown" not in text


def test_status_rows_keep_their_order_and_show_times_in_utc_and_missing_values_as_dashes() -> None:
    text = format_status(status_rows(), source="s")
    lines = text.splitlines()
    start = lines.index("sync state (2, newest first)")
    first, second = lines[start + 3], lines[start + 4]
    assert first.startswith("cust-1  ")
    assert "2026-11-28 20:03:29" in first
    assert second.split() == ["cust-2", "-", "deal", "-", "-", "-", "1", "-", "-"]


def test_a_long_error_message_stays_on_one_line_and_is_cut() -> None:
    assert cell("line one\nline two " + "x" * 100).startswith("line one line two xx")
    assert len(cell("x" * 500)) == MAX_CELL
    assert cell("x" * 500).endswith("...")
    assert cell(None) == "-"
    assert cell(0) == "0"


def test_status_says_when_the_limit_may_hide_rows() -> None:
    rows = {"backfills": [{"backfill_id": f"bf-{n}"} for n in range(3)]}
    text = format_status(rows, source="s", limit=3)
    assert "backfills (the newest 3; there may be more (--limit))" in text.splitlines()


def test_status_columns_are_fields_the_handlers_write() -> None:
    written = {
        "connections": "handlers/connections.py",
        "sync_state": "handlers/sync_state.py",
        "backfills": "handlers/scheduler.py handlers/backfill_store.py",
    }
    for spec in TABLES:
        source = " ".join((REPO / path).read_text() for path in written[spec.collection].split())
        for column in spec.columns:
            assert f'"{column.field}"' in source, (spec.collection, column.field)


def test_status_without_an_emulator_answering_fails_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert main(["status", "--firestore-host", f"127.0.0.1:{port}"]) == 1
    assert capsys.readouterr().err == (
        f"error: nothing answers at 127.0.0.1:{port} (Connection refused): "
        "is `make run` up, and is --firestore-host right?\n"
    )
