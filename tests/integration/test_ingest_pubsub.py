"""The ingest function publishing to the real Pub/Sub emulator."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable

import pytest

from ops.local.emulators import start_pubsub
from ops.signing import signed_headers
from shared.samples import sample, sample_bytes, sample_types
from tests.conftest import IngestClient
from tests.integration.conftest import PROJECT, Topics, make_topics

pytestmark = pytest.mark.integration

Build = Callable[..., IngestClient]


def test_known_events_arrive_byte_exact_with_their_attributes(
    topics: Topics, ingest_app: Build
) -> None:
    client = ingest_app(topics)
    sent = {}
    for event_type in sample_types():
        # Odd spacing and key order on purpose: re-serialising would change the bytes.
        body = json.dumps(sample(event_type), indent=3, sort_keys=True).encode() + b"\n"
        headers = signed_headers(body, webhook_id=f"msg_{event_type}")
        response = client.post("/", data=body, headers=headers)
        assert response.status_code == 204, response.data
        sent[f"msg_{event_type}"] = (body, headers["svix-timestamp"], event_type)

    received = topics.pull(topics.events, expect=len(sent))
    assert len(received) == len(sent)
    for message in received:
        body, timestamp, event_type = sent[message.attributes["webhook_id"]]
        assert message.data == body
        payload = sample(event_type)
        assert message.attributes["event_type"] == event_type
        assert message.attributes["webhook_timestamp"] == timestamp
        assert message.attributes["source"] == "supaglue"
        assert message.attributes["customer_id"] == payload["customer_id"]
        assert message.attributes["provider_name"] == payload["provider_name"]
        assert message.attributes.get("connection_id") == payload.get("connection_id")
        assert message.attributes.get("object") == payload.get("object", payload.get("object_name"))
        assert "reason" not in message.attributes
    assert topics.pull(topics.quarantine, expect=0, timeout=0.5) == []


def test_response_comes_after_the_message_is_stored(topics: Topics, ingest_app: Build) -> None:
    client = ingest_app(topics)
    body = sample_bytes("sync.complete")
    response = client.post("/", data=body, headers=signed_headers(body))
    assert response.status_code == 204
    message_id = response.headers["X-Pubsub-Message-Id"]
    # No waiting: once the function answered, the message is already in Pub/Sub.
    [message] = topics.pull(topics.events, expect=1, timeout=0)
    assert message.message_id == message_id


def test_unverifiable_requests_publish_nothing(topics: Topics, ingest_app: Build) -> None:
    client = ingest_app(topics)
    body = sample_bytes("sync.complete")
    headers = signed_headers(body)
    headers["svix-signature"] = "v1,bm90IGEgc2lnbmF0dXJl"
    assert client.post("/", data=body, headers=headers).status_code == 401
    assert topics.pull(topics.events, expect=0, timeout=0.5) == []
    assert topics.pull(topics.quarantine, expect=0, timeout=0.5) == []


def test_unknown_event_type_goes_to_events_with_its_type(topics: Topics, ingest_app: Build) -> None:
    client = ingest_app(topics)
    body = json.dumps({"webhook_event_type": "sync.started", "customer_id": "c-7"}).encode()
    assert client.post("/", data=body, headers=signed_headers(body)).status_code == 204
    [message] = topics.pull(topics.events, expect=1)
    assert message.data == body
    assert message.attributes["event_type"] == "sync.started"
    assert message.attributes["customer_id"] == "c-7"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\x00 not json", "not_json"),
        (b"[1, 2]", "not_an_object"),
        (b'{"customer_id": "c"}', "missing_event_type"),
        (b'{"webhook_event_type": "connection.deleted"}', "invalid_event"),
    ],
)
def test_verified_non_events_are_quarantined_not_lost(
    topics: Topics, ingest_app: Build, body: bytes, reason: str
) -> None:
    client = ingest_app(topics)
    headers = signed_headers(body, webhook_id="msg_quarantine")
    response = client.post("/", data=body, headers=headers)
    assert response.status_code == 204
    [message] = topics.pull(topics.quarantine, expect=1)
    assert message.data == body
    assert message.attributes["reason"] == reason
    assert message.attributes["webhook_id"] == "msg_quarantine"
    assert message.attributes["webhook_timestamp"] == headers["svix-timestamp"]
    assert topics.pull(topics.events, expect=0, timeout=0.3) == []


def test_503_when_the_emulator_is_stopped(
    ingest_app: Build, tmp_path_factory: pytest.TempPathFactory
) -> None:
    emulator = start_pubsub(PROJECT, log_dir=tmp_path_factory.mktemp("stopped"))
    try:
        topics = make_topics(emulator)
        client = ingest_app(topics, PUBLISH_TIMEOUT_SECONDS="2")
        body = sample_bytes("sync.complete")
        assert client.post("/", data=body, headers=signed_headers(body)).status_code == 204
        emulator.stop()

        started = time.monotonic()
        response = client.post("/", data=body, headers=signed_headers(body))
        elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert 1.5 < elapsed < 4, f"answer took {elapsed:.1f}s; the bound is 2s"
    finally:
        emulator.stop()


def test_503_when_pubsub_does_not_confirm_in_time(
    ingest_app: Build, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A frozen emulator accepts connections but never answers: the timeout must hold."""
    emulator = start_pubsub(PROJECT, log_dir=tmp_path_factory.mktemp("frozen"))
    try:
        topics = make_topics(emulator)
        client = ingest_app(topics, PUBLISH_TIMEOUT_SECONDS="1.5")
        body = sample_bytes("sync.complete")
        assert client.post("/", data=body, headers=signed_headers(body)).status_code == 204

        os.killpg(emulator.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            response = client.post("/", data=body, headers=signed_headers(body))
            elapsed = time.monotonic() - started
        finally:
            os.killpg(emulator.process.pid, signal.SIGCONT)
        assert response.status_code == 503
        assert 1.0 < elapsed < 3.5, f"answer took {elapsed:.1f}s; the bound is 1.5s"
    finally:
        emulator.stop()


def test_publishes_of_concurrent_webhooks_share_requests_and_each_gets_its_own_id(
    topics: Topics, ingest_app: Build
) -> None:
    """Many webhooks at once on one event loop, as under load: every one stored once."""
    client = ingest_app(topics)
    body = sample_bytes("sync.complete")
    sent = [signed_headers(body) for _ in range(40)]

    async def send_all() -> list[object]:
        return list(await asyncio.gather(*(client._request("POST", "/", body, h) for h in sent)))

    responses = client.run(send_all())
    assert [r.status_code for r in responses] == [204] * len(sent)
    ids = {r.headers["X-Pubsub-Message-Id"] for r in responses}
    assert len(ids) == len(sent)
    received = topics.pull(topics.events, expect=len(sent))
    assert sorted(m.attributes["webhook_id"] for m in received) == sorted(
        h["svix-id"] for h in sent
    )
    assert {m.message_id for m in received} == ids


def test_503_beyond_the_outstanding_bound_while_pubsub_is_frozen(
    ingest_app: Build, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Nothing queues without bound: past PUBLISH_MAX_OUTSTANDING, 503 at once."""
    emulator = start_pubsub(PROJECT, log_dir=tmp_path_factory.mktemp("bounded"))
    try:
        topics = make_topics(emulator)
        client = ingest_app(topics, PUBLISH_TIMEOUT_SECONDS="2", PUBLISH_MAX_OUTSTANDING="3")
        body = sample_bytes("sync.complete")
        assert client.post("/", data=body, headers=signed_headers(body)).status_code == 204

        os.killpg(emulator.process.pid, signal.SIGSTOP)
        try:

            async def burst() -> list[tuple[int, float]]:
                started = time.monotonic()

                async def one() -> tuple[int, float]:
                    response = await client._request("POST", "/", body, signed_headers(body))
                    return response.status_code, time.monotonic() - started

                return list(await asyncio.gather(*(one() for _ in range(5))))

            answers = client.run(burst())
        finally:
            os.killpg(emulator.process.pid, signal.SIGCONT)
        assert [status for status, _ in answers] == [503] * 5
        waited = sorted(elapsed for _, elapsed in answers)
        # Three waited out the publish timeout; the two beyond the bound were refused at once.
        assert waited[1] < 1.0 < 1.9 < waited[2] < 3.5, waited
    finally:
        emulator.stop()
