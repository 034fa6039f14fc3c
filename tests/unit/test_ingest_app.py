"""The ingest function through the real Functions Framework ASGI app, one test per behaviour.

Signatures come from `svix` itself. Pub/Sub is replaced here by a recorder
(so each test can also assert that nothing was published); the integration
tests publish to the real emulator.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from ingest_fn import publisher
from ingest_fn.classify import Destination, OutgoingMessage
from ingest_fn.publisher import AsyncPublisher
from ingest_fn.service import Ingestor
from ops.signing import DEV_SECRET, signed_headers
from shared.log import TraceContext
from shared.samples import sample, sample_bytes, sample_types
from tests.conftest import IngestClient, configured_ingest_client, reported_crash

OTHER_SECRET = "whsec_" + base64.b64encode(b"a-second-secret-for-rotation-32b").decode()


@dataclass
class Recorder:
    """Stands in for Pub/Sub: records what would be published, or fails on demand."""

    messages: list[OutgoingMessage] = field(default_factory=list)
    fail_with: Exception | None = None

    def publish(self, message: OutgoingMessage) -> str:
        if self.fail_with is not None:
            raise self.fail_with
        self.messages.append(message)
        return str(len(self.messages))


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()

    async def publish(_self: object, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        destination = Destination.QUARANTINE if "quarantine" in topic else Destination.EVENTS
        return recorder.publish(OutgoingMessage(destination, data, dict(attributes)))

    monkeypatch.setattr(AsyncPublisher, "publish", publish)
    return recorder


Configure = Callable[..., IngestClient]


@pytest.fixture
def configure() -> Configure:
    """Build the real app with settings from the environment, as Cloud Functions does."""
    return configured_ingest_client


@pytest.fixture
def client(configure: Configure) -> IngestClient:
    return configure()


def post(client: IngestClient, body: bytes, headers: dict[str, str]) -> Any:
    return client.post("/", data=body, headers=headers)


# --- the happy paths -------------------------------------------------------


@pytest.mark.parametrize("event_type", sample_types())
def test_every_sample_event_is_published_with_its_attributes(
    client: IngestClient, published: Recorder, event_type: str
) -> None:
    body = sample_bytes(event_type)
    headers = signed_headers(body, webhook_id=f"msg_{event_type}", timestamp=int(time.time()))
    traceparent = f"00-{'ab' * 16}-{'cd' * 8}-01"
    response = post(client, body, {**headers, "traceparent": traceparent})
    assert response.status_code == 204, response.data
    assert response.headers["X-Webhook-Outcome"] == "published"
    [message] = published.messages
    assert message.destination is Destination.EVENTS
    assert message.data == body
    payload = sample(event_type)
    expected = {
        "event_type": event_type,
        "webhook_id": f"msg_{event_type}",
        "webhook_timestamp": headers["svix-timestamp"],
        "source": "supaglue",
        # The request's own trace and span: the parent of every handler's span.
        "traceparent": traceparent,
        "customer_id": payload["customer_id"],
        "provider_name": payload["provider_name"],
    }
    if "connection_id" in payload:
        expected["connection_id"] = payload["connection_id"]
    if "object" in payload or "object_name" in payload:
        expected["object"] = payload.get("object", payload.get("object_name"))
    assert message.attributes == expected


def test_unbranded_webhook_headers_are_accepted(client: IngestClient, published: Recorder) -> None:
    body = sample_bytes("sync.paused")
    response = post(client, body, signed_headers(body, webhook_id="msg_unbranded", branded=False))
    assert response.status_code == 204
    assert published.messages[0].attributes["webhook_id"] == "msg_unbranded"


def test_header_names_in_any_letter_case(client: IngestClient, published: Recorder) -> None:
    body = sample_bytes("sync.complete")
    headers = {key.upper(): value for key, value in signed_headers(body).items()}
    headers = {
        ("SvIx" + key[4:] if key.startswith("SVIX") else key): v for key, v in headers.items()
    }
    assert post(client, body, headers).status_code == 204
    assert len(published.messages) == 1


def test_one_valid_signature_among_several_passes(
    client: IngestClient, published: Recorder
) -> None:
    body = sample_bytes("sync.complete")
    headers = signed_headers(body)
    wrong = signed_headers(body, OTHER_SECRET, webhook_id=headers["svix-id"])["svix-signature"]
    headers["svix-signature"] = (
        f"v1,{base64.b64encode(b'x' * 32).decode()} {wrong} " + (headers["svix-signature"])
    )
    assert post(client, body, headers).status_code == 204


@pytest.mark.parametrize("separator", [" ", ",", ", ", "\n"])
def test_any_configured_secret_verifies_during_rotation(
    configure: Configure, published: Recorder, separator: str
) -> None:
    client = configure(WEBHOOK_SECRETS=f"{DEV_SECRET}{separator}{OTHER_SECRET}")
    body = sample_bytes("connection.created")
    assert post(client, body, signed_headers(body, OTHER_SECRET)).status_code == 204
    assert post(client, body, signed_headers(body, DEV_SECRET)).status_code == 204
    assert len(published.messages) == 2


def test_unknown_event_type_is_published_to_events(
    client: IngestClient, published: Recorder
) -> None:
    body = json.dumps(
        {"webhook_event_type": "sync.started", "customer_id": 42, "connection_id": "c1", "x": [1]}
    ).encode()
    response = post(client, body, signed_headers(body))
    assert response.status_code == 204
    [message] = published.messages
    assert message.destination is Destination.EVENTS
    assert message.attributes["event_type"] == "sync.started"
    assert message.attributes["customer_id"] == "42"
    assert message.attributes["connection_id"] == "c1"
    assert "reason" not in message.attributes


# --- verified but not an event: quarantine, never lost ---------------------


@pytest.mark.parametrize(
    ("body", "reason", "event_type"),
    [
        (b"not json at all", "not_json", None),
        (b"", "not_json", None),
        (b"[" * 100_000 + b"]" * 100_000, "not_json", None),
        (b'["a", "list"]', "not_an_object", None),
        (b'"a string"', "not_an_object", None),
        (b'{"customer_id": "c"}', "missing_event_type", None),
        (b'{"webhook_event_type": 7}', "missing_event_type", None),
        (
            b'{"webhook_event_type": "sync.complete", "customer_id": "c"}',
            "invalid_event",
            "sync.complete",
        ),
    ],
    ids=[
        "garbage",
        "empty",
        "too-deep",
        "array",
        "string",
        "no-type",
        "non-string-type",
        "invalid",
    ],
)
def test_verified_non_events_are_quarantined_with_a_reason(
    client: IngestClient, published: Recorder, body: bytes, reason: str, event_type: str | None
) -> None:
    response = post(client, body, signed_headers(body))
    assert response.status_code == 204
    assert response.headers["X-Webhook-Outcome"] == "quarantined"
    [message] = published.messages
    assert message.destination is Destination.QUARANTINE
    assert message.data == body
    assert message.attributes["reason"] == reason
    assert message.attributes.get("event_type") == event_type
    assert message.attributes["webhook_id"].startswith("msg_")


def test_invalid_result_value_is_quarantined_with_the_field_named(
    client: IngestClient, published: Recorder
) -> None:
    payload = {**sample("sync.complete"), "result": "MAYBE"}
    body = json.dumps(payload).encode()
    assert post(client, body, signed_headers(body)).status_code == 204
    [message] = published.messages
    assert message.attributes["reason"] == "invalid_event"
    assert "result" in message.attributes["reason_detail"]
    assert "MAYBE" not in message.attributes["reason_detail"]


def test_an_id_too_long_for_an_attribute_is_quarantined(
    client: IngestClient, published: Recorder
) -> None:
    body = json.dumps({**sample("sync.paused"), "customer_id": "c" * 1025}).encode()
    assert post(client, body, signed_headers(body)).status_code == 204
    assert published.messages[0].attributes["reason"] == "attribute_too_long"


# --- 401: every signature problem ------------------------------------------


def _without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {key: value for key, value in headers.items() if key != name}


@pytest.mark.parametrize("missing", ["svix-id", "svix-timestamp", "svix-signature"])
def test_missing_signature_header_is_401(
    client: IngestClient, published: Recorder, missing: str
) -> None:
    body = sample_bytes("sync.complete")
    response = post(client, body, _without(signed_headers(body), missing))
    assert response.status_code == 401
    assert published.messages == []


def test_signature_by_an_unknown_secret_is_401(client: IngestClient, published: Recorder) -> None:
    body = sample_bytes("sync.complete")
    assert post(client, body, signed_headers(body, OTHER_SECRET)).status_code == 401
    assert published.messages == []


def test_tampered_body_is_401(client: IngestClient, published: Recorder) -> None:
    body = sample_bytes("sync.complete")
    headers = signed_headers(body)
    assert post(client, body.replace(b"SUCCESS", b"ERROR"), headers).status_code == 401
    assert published.messages == []


def test_signature_for_another_webhook_id_is_401(client: IngestClient, published: Recorder) -> None:
    body = sample_bytes("sync.complete")
    headers = signed_headers(body, webhook_id="msg_original")
    headers["svix-id"] = "msg_replayed"
    assert post(client, body, headers).status_code == 401


@pytest.mark.parametrize("offset", [-301, -3600, 301, 86_400])
def test_timestamp_outside_tolerance_is_401(
    client: IngestClient, published: Recorder, offset: int
) -> None:
    body = sample_bytes("sync.complete")
    headers = signed_headers(body, timestamp=int(time.time()) + offset)
    assert post(client, body, headers).status_code == 401
    assert published.messages == []


def test_tolerance_is_configurable(configure: Configure, published: Recorder) -> None:
    client = configure(WEBHOOK_TOLERANCE_SECONDS="60")
    body = sample_bytes("sync.complete")
    now = int(time.time())
    assert post(client, body, signed_headers(body, timestamp=now - 120)).status_code == 401
    assert post(client, body, signed_headers(body, timestamp=now + 120)).status_code == 401
    assert post(client, body, signed_headers(body, timestamp=now - 30)).status_code == 204


@pytest.mark.parametrize("timestamp", ["abc", "1.5e9", "17000000000000", "-5", " ", "NaN", "0x10"])
def test_non_numeric_timestamp_is_401(
    client: IngestClient, published: Recorder, timestamp: str
) -> None:
    body = sample_bytes("sync.complete")
    headers = signed_headers(body)
    headers["svix-timestamp"] = timestamp
    assert post(client, body, headers).status_code == 401
    assert published.messages == []


@pytest.mark.parametrize(
    "signature",
    ["v1", "v1,", "v1,a,b", "v1,!!!not-base64!!!", "v1,YWJj=", "garbage", "v2,abc", ",", "v1 v1"],
)
def test_malformed_signature_header_is_401(
    client: IngestClient, published: Recorder, signature: str
) -> None:
    body = sample_bytes("sync.complete")
    headers = signed_headers(body)
    headers["svix-signature"] = signature
    assert post(client, body, headers).status_code == 401
    assert published.messages == []


def test_non_utf8_body_is_401_not_500(client: IngestClient, published: Recorder) -> None:
    """The svix verifier decodes the body as UTF-8 and raises UnicodeDecodeError otherwise."""
    body = b'{"webhook_event_type": "sync.complete", "x": "\xff\xfe"}'
    webhook_id, timestamp = "msg_binary", str(int(time.time()))
    key = base64.b64decode(DEV_SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    headers = {
        "svix-id": webhook_id,
        "svix-timestamp": timestamp,
        "svix-signature": "v1," + base64.b64encode(digest).decode(),
    }
    assert post(client, body, headers).status_code == 401
    assert published.messages == []


# --- 405 and 413 -----------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_anything_but_post_is_405(client: IngestClient, published: Recorder, method: str) -> None:
    body = sample_bytes("sync.complete")
    response = client.open("/", method=method, data=body, headers=signed_headers(body))
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert published.messages == []


async def _exploding_body() -> AsyncIterator[bytes]:
    """A body that fails the test if anything reads it."""
    raise AssertionError("the body was read although Content-Length was over the limit")
    yield b""  # pragma: no cover -- makes this an async generator


def test_declared_length_over_limit_is_413_before_reading(
    configure: Configure, published: Recorder
) -> None:
    client = configure(MAX_BODY_BYTES="1000")
    response = client.post(
        "/",
        data=_exploding_body(),
        headers={**signed_headers(b"{}"), "Content-Length": "1001"},
    )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert published.messages == []


def test_body_over_limit_without_declared_length_is_413_while_reading(
    configure: Configure, published: Recorder
) -> None:
    client = configure(MAX_BODY_BYTES="1000")
    body = json.dumps({**sample("sync.complete"), "pad": "x" * 2000}).encode()
    chunk = 100
    served = {"bytes": 0}

    async def streamed() -> AsyncIterator[bytes]:
        for start in range(0, len(body), chunk):
            served["bytes"] += len(body[start : start + chunk])
            yield body[start : start + chunk]

    # No Content-Length: httpx sends it chunked, as a sender that does not declare it.
    response = client.post("/", data=streamed(), headers=signed_headers(body))
    assert response.status_code == 413
    # Refused with the chunk that crossed the limit; nothing after it was taken.
    assert served["bytes"] == 1000 + chunk
    assert published.messages == []


def test_a_sender_gone_before_the_body_ends_is_refused_without_a_5xx(
    client: IngestClient, published: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    body = sample_bytes("sync.complete")
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": body[:100], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(k.lower().encode(), v.encode()) for k, v in signed_headers(body).items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    capsys.readouterr()
    client.run(client.app(scope, receive, send))
    assert sent[0]["status"] == 400
    [line] = _log_lines(capsys.readouterr().out)
    assert (line["severity"], line["event"]) == ("WARNING", "body_incomplete")
    assert published.messages == []


def test_body_at_the_limit_is_accepted(configure: Configure, published: Recorder) -> None:
    base = json.dumps({**sample("sync.complete"), "pad": ""}).encode()
    body = base.replace(b'"pad": ""', b'"pad": "' + b"x" * (1000 - len(base)) + b'"')
    assert len(body) == 1000
    client = configure(MAX_BODY_BYTES="1000")
    assert post(client, body, signed_headers(body)).status_code == 204


# --- 503: not stored, so never 2xx -----------------------------------------


def test_publish_failure_is_503_and_says_nothing_internal(
    client: IngestClient, published: Recorder
) -> None:
    published.fail_with = publisher.PublishFailed("DEADLINE_EXCEEDED: 10.1.2.3:443 timed out")
    body = sample_bytes("sync.complete")
    response = post(client, body, signed_headers(body))
    assert response.status_code == 503
    assert response.json() == {"error": "publish_failed", "detail": "not stored; retry later"}
    assert b"10.1.2.3" not in response.data


def test_a_message_pubsub_refuses_as_too_large_is_413(
    client: IngestClient, published: Recorder
) -> None:
    published.fail_with = publisher.MessageRejected("Pub/Sub refused the message")
    body = sample_bytes("sync.complete")
    assert post(client, body, signed_headers(body)).status_code == 413


# --- logging ---------------------------------------------------------------


def _log_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_one_json_log_line_per_request_without_secret_or_body(
    client: IngestClient, published: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    body = json.dumps({**sample("sync.complete"), "error_message": "PRIVATE-MARKER"}).encode()
    capsys.readouterr()
    post(client, body, {**signed_headers(body), "traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"})
    post(client, body, {**signed_headers(body, OTHER_SECRET)})
    output = capsys.readouterr().out
    published_line, rejected_line = _log_lines(output)
    assert published_line["severity"] == "INFO"
    assert published_line["event"] == "webhook_published"
    assert published_line["webhook_id"].startswith("msg_")
    assert (
        published_line["logging.googleapis.com/trace"] == f"projects/unit-test/traces/{'ab' * 16}"
    )
    assert published_line["logging.googleapis.com/spanId"] == "cd" * 8
    assert published_line["logging.googleapis.com/trace_sampled"] is True
    assert published_line["logging.googleapis.com/labels"]["component"] == "ingest"
    # The status actually sent: 204 for a stored webhook.
    assert published_line["httpRequest"]["status"] == 204
    assert published_line["httpRequest"]["requestMethod"] == "POST"
    assert rejected_line["severity"] == "WARNING"
    assert rejected_line["event"] == "signature_rejected"
    assert rejected_line["httpRequest"]["status"] == 401
    assert "PRIVATE-MARKER" not in output
    for secret in (DEV_SECRET, OTHER_SECRET):
        assert secret.removeprefix("whsec_") not in output


def test_cloud_trace_header_correlates_the_log_line(
    client: IngestClient, published: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    body = sample_bytes("sync.paused")
    capsys.readouterr()
    post(client, body, {**signed_headers(body), "X-Cloud-Trace-Context": f"{'1f' * 16}/255;o=1"})
    [line] = _log_lines(capsys.readouterr().out)
    assert line["logging.googleapis.com/trace"] == f"projects/unit-test/traces/{'1f' * 16}"
    assert line["logging.googleapis.com/spanId"] == "00000000000000ff"


def test_the_message_carries_the_requests_trace_in_w3c_form(
    client: IngestClient, published: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    body = sample_bytes("sync.paused")
    post(client, body, {**signed_headers(body), "X-Cloud-Trace-Context": f"{'1f' * 16}/255;o=1"})
    # Google's header, in the form the next hops read; its span is the request's.
    assert published.messages[-1].attributes["traceparent"] == f"00-{'1f' * 16}-{'0' * 14}ff-01"
    quarantined = b"[1, 2]"
    post(
        client,
        quarantined,
        {**signed_headers(quarantined), "traceparent": f"00-{'2e' * 16}-{'3d' * 8}-00"},
    )
    assert published.messages[-1].destination is Destination.QUARANTINE
    assert published.messages[-1].attributes["traceparent"] == f"00-{'2e' * 16}-{'3d' * 8}-00"


def test_a_request_without_a_trace_starts_one_that_its_message_and_line_share(
    client: IngestClient, published: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    traces = set()
    for _ in range(2):
        body = sample_bytes("sync.complete")
        post(client, body, signed_headers(body))
        [line] = _log_lines(capsys.readouterr().out)
        trace = TraceContext.from_traceparent(published.messages[-1].attributes["traceparent"])
        assert trace is not None
        assert line["logging.googleapis.com/trace"] == f"projects/unit-test/traces/{trace.trace_id}"
        assert line["logging.googleapis.com/spanId"] == trace.span_id
        traces.add(trace.trace_id)
    assert len(traces) == 2


def test_a_crash_answers_500_with_a_line_error_reporting_groups(
    client: IngestClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(Ingestor, "ingest", broken)
    capsys.readouterr()
    body = sample_bytes("sync.complete")
    response = post(client, body, signed_headers(body))
    assert response.status_code == 500
    assert response.json() == {"error": "ingest_crashed", "detail": "not stored; retry later"}
    [line] = _log_lines(capsys.readouterr().out)
    assert line["event"] == "ingest_crashed"
    summary, stack = reported_crash(line, service="ingest")
    assert summary == "webhook refused: ZeroDivisionError: a bug"
    assert stack.rstrip().endswith("ZeroDivisionError: a bug")


def test_refusals_are_not_error_reports(
    configure: Configure, published: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    client = configure(MAX_BODY_BYTES="1000")
    body = sample_bytes("sync.complete")
    capsys.readouterr()
    post(client, body, signed_headers(body, OTHER_SECRET))  # 401
    client.get("/")  # 405
    post(client, b"x" * 2_000, signed_headers(b"x"))  # 413
    lines = _log_lines(capsys.readouterr().out)
    assert [line["httpRequest"]["status"] for line in lines] == [401, 405, 413]
    assert not [line for line in lines if "@type" in line]


@pytest.mark.parametrize(
    ("event_type", "mutate", "severity", "event"),
    [
        ("sync.complete", {}, "INFO", "webhook_published"),
        ("sync.complete", {"webhook_event_type": "brand.new"}, "NOTICE", "webhook_unknown_type"),
        ("sync.complete", {"run_id": None}, "WARNING", "webhook_quarantined"),
    ],
)
def test_log_severity_by_outcome(
    client: IngestClient,
    published: Recorder,
    capsys: pytest.CaptureFixture[str],
    event_type: str,
    mutate: dict[str, object],
    severity: str,
    event: str,
) -> None:
    body = json.dumps({**sample(event_type), **mutate}).encode()
    capsys.readouterr()
    post(client, body, signed_headers(body))
    [line] = _log_lines(capsys.readouterr().out)
    assert (line["severity"], line["event"]) == (severity, event)


# --- settings --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEBHOOK_SECRETS", ""),
        ("WEBHOOK_SECRETS", "whsec_changeme"),
        ("WEBHOOK_SECRETS", "not-a-svix-secret"),
        ("EVENTS_TOPIC", "projects/p/topics/t"),
        ("WEBHOOK_TOLERANCE_SECONDS", "3600"),
        ("MAX_BODY_BYTES", "20000000"),
    ],
)
def test_bad_settings_stop_the_function_at_load_without_echoing_secrets(
    configure: Configure,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
) -> None:
    with pytest.raises(SystemExit) as stopped:
        configure(**{name: value})
    assert name in str(stopped.value)
    output = capsys.readouterr().out
    assert name in output
    if name == "WEBHOOK_SECRETS" and value:
        assert value not in output
        assert value not in str(stopped.value)


def test_loading_the_function_creates_no_pubsub_client(
    monkeypatch: pytest.MonkeyPatch, configure: Configure
) -> None:
    opened: list[object] = []

    async def open_channel() -> object:
        opened.append(asyncio.get_running_loop())
        raise OSError("no channel in this test")

    monkeypatch.setattr(publisher, "_open_channel", open_channel)
    client = configure()
    assert opened == []
    # The first publish opens it, inside the event loop that serves the request.
    body = sample_bytes("sync.complete")
    assert post(client, body, signed_headers(body)).status_code == 503
    assert len(opened) == 1
    assert opened[0] is client._loop
