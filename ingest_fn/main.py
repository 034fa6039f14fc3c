"""Cloud Function entry point `ingest`: Supaglue (Svix) webhooks into Pub/Sub.

A thin HTTP layer over ingest_fn.service: it hands over the request's parts,
turns the outcome or the typed error into a response, and writes one log line.
"""

from __future__ import annotations

import json
import time

import flask
import functions_framework

from ingest_fn.classify import Destination
from ingest_fn.errors import MethodNotAllowed, PublishFailed, RequestRejected
from ingest_fn.service import Ingestor, Stored
from shared.log import JsonLogger, Severity, TraceContext
from shared.settings import IngestSettings, load_or_exit

# Validated at load so a misconfigured deployment fails to start instead of
# answering every webhook with an error; no network client is created here.
_SETTINGS = load_or_exit(IngestSettings, "ingest")
_INGESTOR = Ingestor(_SETTINGS)
# Log lines are written behind, together every few ms, not one system call per
# request (see shared/log.py; measured by `make bench-ingest`).
_LOG_WRITE_BEHIND_SECONDS = 0.01
_LOG = JsonLogger(
    "ingest",
    project_id=_SETTINGS.google_cloud_project,
    write_behind_seconds=_LOG_WRITE_BEHIND_SECONDS,
)


OUTCOME_HEADER = "X-Webhook-Outcome"
MESSAGE_ID_HEADER = "X-Pubsub-Message-Id"

# The only headers the function reads: signature (both brandings) and trace.
_HEADERS = (
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "traceparent",
    "x-cloud-trace-context",
)
# Read straight from the WSGI environ, where the server has already put them:
# werkzeug's header view costs more per lookup than the rest of the verification.
_ENVIRON_KEYS = tuple((name, "HTTP_" + name.upper().replace("-", "_")) for name in _HEADERS)


@functions_framework.http
def ingest(request: flask.Request) -> flask.Response:
    started = time.perf_counter()
    environ = request.environ
    headers = {name: value for name, key in _ENVIRON_KEYS if (value := environ.get(key))}
    trace = TraceContext.from_headers(headers)
    try:
        stored = _INGESTOR.ingest(
            method=request.method,
            headers=headers,
            content_length=request.content_length,
            body=request.stream,
            now=time.time(),
        )
    except (RequestRejected, PublishFailed) as error:
        response = _error_response(error)
        _LOG.log(
            error.severity,
            error.event,
            f"webhook refused: {error}",
            trace=trace,
            httpRequest=_http_request(request, error.status, started),
        )
        return response
    _log_stored(stored, request, trace, started)
    outcome = "quarantined" if stored.message.destination is Destination.QUARANTINE else "published"
    # No body: Svix wants any 2xx, and a body costs the server a second send per
    # request (measured by `make bench-ingest`). The outcome travels in headers.
    return flask.Response(
        status=204, headers={OUTCOME_HEADER: outcome, MESSAGE_ID_HEADER: stored.message_id}
    )


def _error_response(error: RequestRejected | PublishFailed) -> flask.Response:
    # Refusals tell the sender what to fix; a storage failure reveals nothing internal.
    detail = str(error) if isinstance(error, RequestRejected) else "not stored; retry later"
    payload = json.dumps({"error": error.event, "detail": detail})
    if not error.body_unread:
        return flask.Response(payload, status=error.status, mimetype="application/json")
    # The Functions Framework reads the whole request body into memory after
    # every non-streamed response; a streamed one leaves it unread (gunicorn
    # discards it chunk by chunk if the client keeps sending).
    response = flask.Response(iter([payload]), status=error.status, mimetype="application/json")
    if isinstance(error, MethodNotAllowed):
        response.headers["Allow"] = "POST"
    return response


def _log_stored(
    stored: Stored, request: flask.Request, trace: TraceContext | None, started: float
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
        httpRequest=_http_request(request, 200, started),
        **message.attributes,
    )


def _http_request(request: flask.Request, status: int, started: float) -> dict[str, object]:
    """Cloud Logging's httpRequest shape, so the entry shows as a request."""
    return {
        "requestMethod": request.method,
        "status": status,
        "latency": f"{time.perf_counter() - started:.6f}s",
        "userAgent": request.environ.get("HTTP_USER_AGENT") or None,
    }
