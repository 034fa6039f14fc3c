"""The ingest function served as Cloud Functions serves it: functions-framework on gunicorn."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ops.defaults import LOOPBACK
from ops.local.processes import free_port
from ops.local.stack import serve_ingest
from ops.signing import signed_headers
from shared.samples import sample_bytes
from tests.integration.conftest import Topics, ingest_env

pytestmark = pytest.mark.integration


@pytest.fixture
def server(topics: Topics, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    served = serve_ingest(ingest_env(topics), tmp_path / "ingest.log", port)
    yield f"http://{LOOPBACK}:{port}/"
    served.stop()


def test_signed_webhooks_over_one_keep_alive_connection(server: str, topics: Topics) -> None:
    body = sample_bytes("sync.complete")
    with requests.Session() as session:
        for _ in range(3):
            response = session.post(server, data=body, headers=signed_headers(body), timeout=10)
            assert response.status_code == 204
    received = topics.pull(topics.events, expect=3)
    assert [message.data for message in received] == [body] * 3


def _raw_request(url_port: int, head: bytes, body: bytes = b"") -> tuple[bytes, float]:
    started = time.monotonic()
    with socket.create_connection((LOOPBACK, url_port), timeout=5) as sock:
        sock.sendall(head + body)
        received = b""
        # Refusals are streamed (chunked): the empty last chunk ends the response.
        while not received.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return received, time.monotonic() - started


def test_oversized_declared_body_is_refused_without_waiting_for_it(server: str) -> None:
    """413 comes back although not one byte of the declared 50 MB was sent."""
    port = int(server.rsplit(":", 1)[1].rstrip("/"))
    head = (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 50000000\r\n\r\n"
    )
    response, elapsed = _raw_request(port, head)
    assert b" 413 " in response.partition(b"\r\n")[0]
    assert b"payload_too_large" in response
    assert elapsed < 2


def test_oversized_chunked_body_is_cut_off_while_reading(server: str, topics: Topics) -> None:
    port = int(server.rsplit(":", 1)[1].rstrip("/"))
    chunk = b"x" * 1_000_000
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    head = (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    # Eleven chunks of 1 MB cross the 10 MB limit; the answer must not wait for the end.
    response, _ = _raw_request(port, head, frame * 11)
    assert b" 413 " in response.partition(b"\r\n")[0]
    assert topics.pull(topics.events, expect=0, timeout=0.3) == []
