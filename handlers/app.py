"""The push contract: typed handler functions as Flask routes for Pub/Sub push.

Each route runs the same steps, in this order: authenticate, parse the
envelope, check the event is this handler's (the emulator ignores
subscription filters), parse the event, claim it in the ledger, run the
handler, mark it done. `_respond` is the one place where an outcome or an
error becomes a status code:

    done, duplicate, not mine, dead-lettered  -> 204 (Pub/Sub acks)
    retryable error, busy, crash              -> 503 (Pub/Sub redelivers with backoff)
    authentication failure                    -> 401 / 403, before any work
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, Final

import flask
from google.cloud import firestore, pubsub_v1  # type: ignore[attr-defined]  # untyped package

from handlers.auth import AuthError, CertificatesUnavailable, OidcVerifier
from handlers.backfills import BackfillQueue
from handlers.context import HandlerContext
from handlers.envelope import MAX_ENVELOPE_BYTES, BadEnvelope, PushMessage, parse_push
from handlers.hooks import HookRegistry
from handlers.ledger import ClaimState, LeaseLost, Ledger
from handlers.transient import is_transient
from shared.contract import Attr, truncate_utf8
from shared.errors import InvalidEvent, PermanentError, RetryableError
from shared.events import REASON_NOT_JSON, AnyEvent, parse_event
from shared.log import JsonLogger, Severity, TraceContext
from shared.routing import Route
from shared.settings import HandlerSettings

HandlerFn = Callable[[Any, HandlerContext], None]
PUSH_PATH: Final = "/push/{route}"


class Outcome(StrEnum):
    DONE = "done"
    DUPLICATE = "duplicate"
    NOT_MINE = "not_mine"
    DEAD_LETTERED = "dead_lettered"


class Busy(RetryableError):
    """Another attempt holds a live claim on this event; try again later."""


class StorageBusy(RetryableError):
    """Firestore or Pub/Sub is contended or unavailable for now."""


class Crashed(RetryableError):
    """The handler raised something unexpected; treated as retryable, and logged loudly."""


@dataclass(frozen=True)
class Handler:
    route: Route
    fn: HandlerFn


class Runtime:
    """The service's clients, created on first use and shared by request threads."""

    def __init__(self, settings: HandlerSettings, *, hooks: HookRegistry, logger: JsonLogger):
        self.settings = settings
        self.hooks = hooks
        self.logger = logger
        self.verifier = (
            None
            if settings.push_auth_disabled
            else OidcVerifier(
                audience=str(settings.push_audience),
                allowed_emails=[str(settings.push_service_account)],
            )
        )
        # No network here: the queue creates its client on first use.
        self.backfills = BackfillQueue(settings) if settings.backfills_configured else None
        self._lock = threading.Lock()
        self._firestore: firestore.Client | None = None
        self._ledger: Ledger | None = None
        self._publisher: pubsub_v1.PublisherClient | None = None

    @property
    def firestore(self) -> firestore.Client:
        if self._firestore is None:
            with self._lock:
                if self._firestore is None:
                    self._firestore = firestore.Client(
                        project=self.settings.google_cloud_project,
                        database=self.settings.firestore_database,
                    )
        return self._firestore

    @property
    def publisher(self) -> pubsub_v1.PublisherClient:
        """For dead letters only, which are rare: the maintained client, sending each at once."""
        if self._publisher is None:
            with self._lock:
                if self._publisher is None:
                    self._publisher = pubsub_v1.PublisherClient(
                        batch_settings=pubsub_v1.types.BatchSettings(max_messages=1)
                    )
        return self._publisher

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger(
                self.firestore,
                lease_seconds=self.settings.ledger_lease_seconds,
                retention=timedelta(days=self.settings.ledger_retention_days),
            )
        return self._ledger


def create_app(handlers: Sequence[Handler], runtime: Runtime) -> flask.Flask:
    app = flask.Flask(__name__)
    # Pub/Sub's largest message, base64-encoded, plus the envelope; Flask answers 413 above it.
    app.config["MAX_CONTENT_LENGTH"] = MAX_ENVELOPE_BYTES
    if runtime.verifier is None:
        runtime.logger.log(
            "WARNING",
            "push_auth_disabled",
            "push authentication is DISABLED (PUSH_AUTH_DISABLED=true): local use only",
        )
    for handler in handlers:
        app.add_url_rule(
            PUSH_PATH.format(route=handler.route.name),
            endpoint=handler.route.name,
            view_func=_view(handler, runtime),
            methods=["POST"],
        )
    app.add_url_rule("/healthz", "healthz", lambda: ("ok", 200), methods=["GET"])
    return app


def _view(handler: Handler, runtime: Runtime) -> Callable[[], flask.Response]:
    def view() -> flask.Response:
        return _deliver(handler, runtime, flask.request)

    return view


@dataclass
class _Delivery:
    """What is known about one push request, for its single log line."""

    handler: str
    trace: TraceContext | None
    message: PushMessage | None = None
    detail: str | None = None


def _deliver(handler: Handler, runtime: Runtime, request: flask.Request) -> flask.Response:
    started = time.perf_counter()
    headers = {key.lower(): value for key, value in request.headers.items()}
    delivery = _Delivery(handler.route.name, TraceContext.from_headers(headers))
    result: Outcome | Exception
    try:
        if runtime.verifier is not None:
            runtime.verifier.verify(headers.get("authorization"))
        body = request.get_data(cache=False)
        try:
            delivery.message = parse_push(body)
        except BadEnvelope as exc:
            _dead_letter(
                runtime,
                handler,
                data=body,
                attributes={},
                reason=BadEnvelope.reason,
                detail=str(exc),
                message=None,
            )
            delivery.detail = str(exc)
            result = Outcome.DEAD_LETTERED
        else:
            result = _process(handler, runtime, delivery)
    except (PermanentError, RetryableError) as exc:
        result = exc
    except Exception as exc:  # noqa: BLE001
        if is_transient(exc):
            result = StorageBusy(f"{type(exc).__name__}: {exc}")
        else:
            # Anything unexpected is retried (never acked as if done), and logged with its stack.
            delivery.detail = "".join(traceback.format_exception(exc))[-4000:]
            result = Crashed(f"{type(exc).__name__}: {exc}")
    return _respond(result, delivery, runtime.logger, started)


def _process(handler: Handler, runtime: Runtime, delivery: _Delivery) -> Outcome:
    message = delivery.message
    assert message is not None
    route = handler.route
    if message.event_type is not None and not route.accepts(message.event_type):
        return Outcome.NOT_MINE
    try:
        event = _parse(message.data)
    except InvalidEvent as exc:
        _dead_letter(
            runtime,
            handler,
            data=message.data,
            attributes=message.attributes,
            reason=exc.reason,
            detail=exc.detail,
            message=message,
        )
        delivery.detail = str(exc)
        return Outcome.DEAD_LETTERED
    if not route.accepts(event.webhook_event_type):
        return Outcome.NOT_MINE

    ledger = runtime.ledger
    claim = ledger.claim(route.name, message.webhook_id)
    if claim.state is ClaimState.DONE:
        return Outcome.DUPLICATE
    if claim.state is ClaimState.BUSY:
        raise Busy(f"another attempt holds {route.name}/{message.webhook_id}")

    context = HandlerContext(
        handler=route.name,
        message=message,
        firestore=runtime.firestore,
        hooks=runtime.hooks,
        logger=runtime.logger,
        trace=delivery.trace,
        _ledger=ledger,
        _claim=claim,
        backfills=runtime.backfills,
    )
    try:
        handler.fn(event, context)
        if not context.completed:
            ledger.complete(claim)
    except LeaseLost:
        # Our effect ran, but so may another attempt's: say so loudly, ack anyway.
        runtime.logger.log(
            "ERROR",
            "lease_lost",
            f"{route.name} finished after its lease expired; the effect may have run twice",
            trace=delivery.trace,
            handler=route.name,
            webhook_id=message.webhook_id,
        )
        return Outcome.DONE
    except PermanentError as exc:
        ledger.release(claim, error=str(exc))
        reason = getattr(exc, "reason", "handler_failed")
        _dead_letter(
            runtime,
            handler,
            data=message.data,
            attributes=message.attributes,
            reason=reason,
            detail=str(exc),
            message=message,
        )
        delivery.detail = str(exc)
        return Outcome.DEAD_LETTERED
    except BaseException as exc:
        ledger.release(claim, error=f"{type(exc).__name__}: {exc}")
        raise
    return Outcome.DONE


def _parse(data: bytes) -> AnyEvent:
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        raise InvalidEvent(REASON_NOT_JSON, "message data is not JSON") from None
    return parse_event(payload)


def _dead_letter(
    runtime: Runtime,
    handler: Handler,
    *,
    data: bytes,
    attributes: dict[str, str],
    reason: str,
    detail: str,
    message: PushMessage | None,
) -> None:
    """Set a message aside with its original attributes and why; raises if not stored."""
    dead = {
        **attributes,
        Attr.REASON.value: reason,
        Attr.REASON_DETAIL.value: truncate_utf8(detail),
        Attr.HANDLER.value: handler.route.name,
    }
    if message is not None:
        dead[Attr.ORIGINAL_MESSAGE_ID.value] = message.message_id
    publisher = runtime.publisher
    topic = publisher.topic_path(
        runtime.settings.google_cloud_project,
        runtime.settings.dead_letter_topic(handler.route.name),
    )
    try:
        publisher.publish(topic, data, **dead).result(
            timeout=runtime.settings.publish_timeout_seconds
        )
    except Exception as exc:
        # Not set aside, so not acknowledged: Pub/Sub keeps the message and delivers it again.
        raise StorageBusy(f"dead-lettering to {topic} failed: {type(exc).__name__}: {exc}") from exc


_OUTCOMES: Final[dict[Outcome, tuple[Severity, str]]] = {
    Outcome.DONE: ("INFO", "event_handled"),
    Outcome.DUPLICATE: ("INFO", "duplicate_ignored"),
    Outcome.NOT_MINE: ("INFO", "not_mine"),
    Outcome.DEAD_LETTERED: ("WARNING", "dead_lettered"),
}


def _respond(
    result: Outcome | Exception, delivery: _Delivery, logger: JsonLogger, started: float
) -> flask.Response:
    """The one place where an outcome or an error becomes a status code and a log line."""
    status: int
    severity: Severity
    if isinstance(result, Outcome):
        status = 204
        severity, event = _OUTCOMES[result]
    elif isinstance(result, AuthError):
        status, severity, event = result.status, "WARNING", "push_unauthenticated"
    elif isinstance(result, CertificatesUnavailable | Busy | StorageBusy):
        status, severity, event = 503, "WARNING", "retry_later"
    elif isinstance(result, Crashed):
        status, severity, event = 503, "ERROR", "handler_crashed"
    elif isinstance(result, RetryableError):
        status, severity, event = 503, "WARNING", "handler_retry"
    else:
        # A permanent error that could not even be dead-lettered: keep it in Pub/Sub.
        status, severity, event = 503, "ERROR", "handler_failed"
    message = delivery.message
    logger.log(
        severity,
        event,
        f"{delivery.handler}: {event}",
        trace=delivery.trace,
        handler=delivery.handler,
        outcome=result.value if isinstance(result, Outcome) else type(result).__name__,
        error=None if isinstance(result, Outcome) else str(result),
        detail=delivery.detail,
        status=status,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
        webhook_id=message.attributes.get(Attr.WEBHOOK_ID) if message else None,
        event_type=message.event_type if message else None,
        message_id=message.message_id if message else None,
        delivery_attempt=message.delivery_attempt if message else None,
        subscription=message.subscription if message else None,
    )
    return flask.Response(status=status)
