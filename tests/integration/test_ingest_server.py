"""The ingest function served as Cloud Functions serves it: the functions-framework CLI,
gunicorn with a uvicorn worker (httptools and uvloop, as pinned in requirements.txt)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from ops.defaults import LOOPBACK
from ops.local.processes import Process, free_port
from ops.local.stack import serve_ingest
from ops.signing import signed_headers
from shared.samples import sample_bytes
from tests.integration.conftest import Topics, ingest_env

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Served:
    process: Process
    url: str


def serve(env: dict[str, str], tmp_path: Path) -> Served:
    port = free_port()
    return Served(serve_ingest(env, tmp_path / "ingest.log", port), f"http://{LOOPBACK}:{port}")


@pytest.fixture
def served(topics: Topics, tmp_path: Path) -> Iterator[Served]:
    served = serve(ingest_env(topics), tmp_path)
    yield served
    served.process.stop()


@pytest.fixture
def server(served: Served) -> str:
    return served.url + "/"


def test_signed_webhooks_over_one_keep_alive_connection(server: str, topics: Topics) -> None:
    body = sample_bytes("sync.complete")
    with requests.Session() as session:
        for _ in range(3):
            response = session.post(server, data=body, headers=signed_headers(body), timeout=10)
            assert response.status_code == 204
    received = topics.pull(topics.events, expect=3)
    assert [message.data for message in received] == [body] * 3


def test_the_server_is_the_asgi_stack_with_httptools(server: str) -> None:
    response = requests.get(server, timeout=10)
    assert response.status_code == 405
    assert response.headers["server"] == "uvicorn"
    assert response.headers["allow"] == "POST"


def _raw_request(url_port: int, head: bytes, body: bytes = b"") -> tuple[bytes, float]:
    """Send `head` and `body` as they are; the whole response (it declares its length)."""
    started = time.monotonic()
    with socket.create_connection((LOOPBACK, url_port), timeout=5) as sock:
        sock.sendall(head + body)
        received = b""
        while b"\r\n\r\n" not in received or len(received) < _response_length(received):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return received, time.monotonic() - started


def _response_length(received: bytes) -> int:
    head, _, _ = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(head) + 4


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


def test_a_normal_shutdown_loses_no_log_line(topics: Topics, tmp_path: Path) -> None:
    """Lines are written behind; SIGTERM (how Cloud Run stops an instance) writes them all.

    With an interval longer than the test, every line is still pending at the SIGTERM.
    """
    served = serve(ingest_env(topics, LOG_WRITE_BEHIND_SECONDS="60"), tmp_path)
    body = sample_bytes("sync.complete")
    sent = [signed_headers(body) for _ in range(20)]
    with requests.Session() as session:
        for headers in sent:
            response = session.post(served.url + "/", data=body, headers=headers, timeout=10)
            assert response.status_code == 204
        assert not [
            line for line in served.process.log().splitlines() if "webhook_published" in line
        ]
    served.process.stop()  # SIGTERM to the group, as the platform does, and a wait for the exit
    lines = [json.loads(line) for line in served.process.log().splitlines() if line.startswith("{")]
    logged = [line["webhook_id"] for line in lines if line.get("event") == "webhook_published"]
    assert sorted(logged) == sorted(headers["svix-id"] for headers in sent)
