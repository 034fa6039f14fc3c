"""Cloud Function entry point `ingest`: Supaglue (Svix) webhooks into Pub/Sub.

An `@functions_framework.aio.http` function: the Functions Framework serves it
as an ASGI (Starlette) app on uvicorn. A thin layer over ingest_fn.service: it
hands over the request's parts, turns the outcome or the typed error into a
response, and writes one log line.
"""

from __future__ import annotations

import gc
import json
import time
from typing import Final

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from ingest_fn.classify import Destination
from ingest_fn.errors import (
    BodyIncomplete,
    Crashed,
    IngestError,
    MethodNotAllowed,
    PublishFailed,
    RequestRejected,
)
from ingest_fn.service import Ingestor, Stored
from shared.log import JsonLogger, Severity, TraceContext, write_at_once_on_shutdown
from shared.settings import IngestSettings, load_or_exit

# Validated at load so a misconfigured deployment fails to start instead of
# answering every webhook with an error; no network client is created here (the
# publisher opens its channel on the first publish, in the worker's event loop).
_SETTINGS = load_or_exit(IngestSettings, "ingest")
_INGESTOR = Ingestor(_SETTINGS)
# Log lines are written together, once per interval, by the event loop when the write
# cannot block and by a thread when it could (see shared/log.py).
_LOG = JsonLogger(
    "ingest",
    project_id=_SETTINGS.google_cloud_project,
    write_behind_seconds=_SETTINGS.log_write_behind_seconds,
)

# Everything loaded so far lives as long as the process: taken out of the cyclic
# collector's full passes, which otherwise stop the event loop for tens of ms under
# load (measured by `make bench-ingest`: the p99 latency). The server forks its
# worker after this, and the worker inherits it.
gc.freeze()

OUTCOME_HEADER: Final = "X-Webhook-Outcome"
MESSAGE_ID_HEADER: Final = "X-Pubsub-Message-Id"

# The only headers the function reads: signature (both brandings), trace, size, agent.
_HEADERS: Final = {
    name.encode(): name
    for name in (
        "svix-id",
        "svix-timestamp",
        "svix-signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "traceparent",
        "x-cloud-trace-context",
        "content-length",
        "user-agent",
    )
}


_serving = False


@functions_framework.aio.http
async def ingest(request: Request) -> Response:
    started = time.perf_counter()
    if not _serving:
        _start_serving()
    scope = request.scope
    method: str = scope["method"]
    headers = read_headers(scope["headers"])
    # Cloud Run gives every request a trace; one sent without (locally) gets its own, so
    # every webhook's hops share one.
    trace = TraceContext.from_headers(headers) or TraceContext.new()
    try:
        stored = await _INGESTOR.ingest(
            method=method,
            headers=headers,
            content_length=declared_length(headers.get("content-length")),
            body=BodyChunks(request.receive),
            now=time.time(),
            trace=trace,
        )
    except Exception as exc:  # noqa: BLE001 -- turned into the answer it earns, below
        # Anything else is a bug, not the sender's doing: a 500 Svix retries.
        error = exc if isinstance(exc, RequestRejected | PublishFailed) else Crashed(exc)
        _LOG.log(
            error.severity,
            error.event,
            f"webhook refused: {error}",
            trace=trace,
            stack=error.stack if isinstance(error, Crashed) else None,
            httpRequest=_http_request(method, headers, error.status, started),
        )
        return error_response(error)
    status = 204
    _log_stored(stored, method, headers, trace, status=status, started=started)
    outcome = "quarantined" if stored.message.destination is Destination.QUARANTINE else "published"
    # No body: Svix wants any 2xx. The outcome travels in headers.
    return Response(
        status_code=status,
        headers={OUTCOME_HEADER: outcome, MESSAGE_ID_HEADER: stored.message_id},
    )


def _start_serving() -> None:
    """Once, in the worker, with its server's signal handlers installed: uvicorn's
    worker ends a graceful shutdown by re-raising SIGTERM with the default action,
    so the exit flush of the written-behind lines would never run."""
    global _serving  # noqa: PLW0603 -- once per process
    _serving = True
    write_at_once_on_shutdown()


def read_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The headers the function reads, by lower-case name; the first of repeated ones."""
    headers: dict[str, str] = {}
    for key, value in raw:
        name = _HEADERS.get(key.lower())
        if name is not None and name not in headers:
            headers[name] = value.decode("latin-1")
    return headers


def declared_length(value: str | None) -> int | None:
    # The server has already refused a malformed Content-Length; anything else is
    # treated as undeclared, and the read enforces the limit.
    return int(value) if value is not None and value.isdigit() else None


class BodyChunks:
    """The request body as the server hands it over, chunk by chunk, nothing buffered.

    An iterator object rather than an async generator: one abandoned halfway (a
    refused body) needs no finalising on the event loop.
    """

    __slots__ = ("_done", "_receive")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._done = False

    def __aiter__(self) -> BodyChunks:
        return self

    async def __anext__(self) -> bytes:
        while not self._done:
            message = await self._receive()
            if message["type"] != "http.request":
                raise BodyIncomplete("the sender disconnected before the body was complete")
            self._done = not message.get("more_body", False)
            chunk: bytes = message.get("body", b"")
            if chunk:
                return chunk
        raise StopAsyncIteration


def error_response(error: IngestError) -> Response:
    # Refusals tell the sender what to fix; a storage failure reveals nothing internal.
    detail = str(error) if isinstance(error, RequestRejected) else "not stored; retry later"
    payload = json.dumps({"error": error.event, "detail": detail})
    headers = {"Allow": "POST"} if isinstance(error, MethodNotAllowed) else None
    return Response(
        payload, status_code=error.status, media_type="application/json", headers=headers
    )


def _log_stored(
    stored: Stored,
    method: str,
    headers: dict[str, str],
    trace: TraceContext | None,
    *,
    status: int,
    started: float,
) -> None:
    message = stored.message
    severity: Severity
    if message.destination is Destination.QUARANTINE:
        severity, event = "WARNING", "webhook_quarantined"
    elif not message.known_type:
        severity, event = "NOTICE", "webhook_unknown_type"
    else:
        severity, event = "INFO", "webhook_published"
    _LOG.log(
        severity,
        event,
        f"{message.event_type or 'webhook'} stored in {stored.topic}",
        trace=trace,
        message_id=stored.message_id,
        topic=stored.topic,
        body_bytes=len(message.data),
        httpRequest=_http_request(method, headers, status, started),
        **message.attributes,
    )


def _http_request(
    method: str, headers: dict[str, str], status: int, started: float
) -> dict[str, object]:
    """Cloud Logging's httpRequest shape, so the entry shows as a request."""
    return {
        "requestMethod": method,
        "status": status,
        "latency": f"{time.perf_counter() - started:.6f}s",
        "userAgent": headers.get("user-agent") or None,
    }
