"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import functions_framework
import httpx
import pytest

from handlers.envelope import encode_push
from ops.signing import DEV_SECRET
from shared.contract import SOURCE_SUPAGLUE, delivery_attributes, event_attributes
from shared.events import parse_event
from shared.log import REPORTED_ERROR_TYPE, TraceContext

# Fixtures that live in their own modules.
pytest_plugins = ["tests.oidc_issuer", "tests.integration.harness"]

REPO = Path(__file__).resolve().parent.parent
INGEST_SOURCE = str(REPO / "ingest_fn" / "main.py")


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    """Tests set settings through the environment; none may leak into the next."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@dataclass(frozen=True)
class IngestResponse:
    status_code: int
    headers: httpx.Headers
    data: bytes

    def json(self) -> Any:
        return json.loads(self.data)


class IngestClient:
    """Requests through the function's real ASGI app, over httpx's ASGI transport.

    Every request of one client runs on the same event loop, as in the server's
    worker: the publisher's gRPC channel belongs to the loop it was opened in. A
    body given as an async iterable is streamed chunk by chunk (chunked, unless
    the headers declare a Content-Length), so a test sees how much of it is read.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._loop = asyncio.new_event_loop()
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ingest.test"
        )
        _OPEN_CLIENTS.append(self)

    def open(
        self,
        path: str = "/",
        *,
        method: str = "GET",
        data: bytes | AsyncIterable[bytes] = b"",
        headers: Mapping[str, str] | None = None,
    ) -> IngestResponse:
        response: IngestResponse = self.run(self._request(method, path, data, headers))
        return response

    def post(
        self,
        path: str = "/",
        *,
        data: bytes | AsyncIterable[bytes] = b"",
        headers: Mapping[str, str] | None = None,
    ) -> IngestResponse:
        return self.open(path, method="POST", data=data, headers=headers)

    def get(self, path: str = "/", *, headers: Mapping[str, str] | None = None) -> IngestResponse:
        return self.open(path, method="GET", headers=headers)

    def run(self, coroutine: Any) -> Any:
        """Run `coroutine` on this client's event loop, as the server's worker would."""
        return self._loop.run_until_complete(coroutine)

    async def _request(
        self,
        method: str,
        path: str,
        data: bytes | AsyncIterable[bytes],
        headers: Mapping[str, str] | None,
    ) -> IngestResponse:
        # As bytes: a sender may put any octets in a header value, not only ASCII.
        raw = {name.encode(): value.encode() for name, value in (headers or {}).items()}
        response = await self._client.request(method, path, content=data, headers=raw)
        return IngestResponse(response.status_code, response.headers, response.content)

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._client.aclose())
            self._loop.close()


_OPEN_CLIENTS: list[IngestClient] = []


@pytest.fixture(autouse=True, scope="session")
def _close_ingest_clients() -> Iterator[None]:
    yield
    for client in _OPEN_CLIENTS:
        client.close()


def ingest_client() -> IngestClient:
    """A client of the real function app, loaded as Cloud Functions loads it."""
    app = functions_framework.create_app("ingest", INGEST_SOURCE)  # type: ignore[no-untyped-call]
    return IngestClient(app)


def configured_ingest_client(**overrides: str) -> IngestClient:
    """The real function app with a complete configuration in the environment, as Cloud
    Functions gives it; `overrides` replace or add variables (_restore_environ undoes them)."""
    os.environ.update(
        {
            "WEBHOOK_SECRETS": DEV_SECRET,
            "GOOGLE_CLOUD_PROJECT": "unit-test",
            "EVENTS_TOPIC": "supaglue-events",
            "QUARANTINE_TOPIC": "supaglue-quarantine",
            # Nothing listens here: a publish that is not stubbed or expected fails loudly.
            "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",
            **overrides,
        }
    )
    return ingest_client()


def ingest_attributes(
    payload: Mapping[str, Any],
    *,
    webhook_id: str | None = None,
    webhook_timestamp: str | None = None,
) -> dict[str, str]:
    """The attributes the ingest function gives `payload`'s message, under a new trace."""
    return delivery_attributes(
        webhook_id=webhook_id or f"msg_{uuid.uuid4().hex}",
        webhook_timestamp=webhook_timestamp or str(int(time.time())),
        source=SOURCE_SUPAGLUE,
        trace=TraceContext.new(),
    ) | event_attributes(parse_event(payload))


def reported_crash(line: Mapping[str, Any], *, service: str) -> tuple[str, str]:
    """The summary and traceback of a crash's line, once it is checked to be in the shape
    Error Reporting groups (its @type and serviceContext, the stack after the summary)."""
    assert line["severity"] == "ERROR"
    assert line["@type"] == REPORTED_ERROR_TYPE
    assert line["serviceContext"] == {"service": service}
    summary, stack = str(line["message"]).split("\n", 1)
    assert stack.startswith("Traceback (most recent call last):")
    return summary, stack


def push_envelope(
    data: bytes,
    attributes: dict[str, str],
    *,
    message_id: str | None = None,
    delivery_attempt: int | None = None,
    subscription: str = "projects/test/subscriptions/test",
) -> bytes:
    """A Pub/Sub push request body, as a push subscription sends it."""
    return encode_push(
        data,
        attributes,
        message_id=message_id or uuid.uuid4().hex,
        subscription=subscription,
        delivery_attempt=delivery_attempt,
    )


def examples(default: int) -> int:
    """Hypothesis examples per fuzz test; `make reliability` raises it (FUZZ_EXAMPLES)."""
    return int(os.environ.get("FUZZ_EXAMPLES", default))
