"""The push contract: each route's handler function as a Flask route for Pub/Sub push.

Each route runs the same steps, in this order: authenticate, parse the
envelope, check the event is this route's (the emulator ignores subscription
filters), parse the event, run the handler, mark it done in the ledger (with
its Firestore effects, or claimed first where it has others: handlers/context.py).
`_respond` turns the outcome or the error into the answer through
handlers.errors.disposition, the one mapping the worker uses too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import flask

from handlers.context import HandlerContext
from handlers.envelope import MAX_ENVELOPE_BYTES, BadEnvelope, PushMessage, parse_push
from handlers.errors import (
    AlreadyDone,
    Crashed,
    Finished,
    HandlerError,
    StorageBusy,
    as_handler_error,
    disposition,
)
from handlers.idempotency import ledger_key
from handlers.runtime import Runtime
from shared.contract import Attr, linked_fields, truncate_utf8
from shared.errors import InvalidEvent, PermanentError
from shared.events import REASON_NOT_JSON, AnyEvent, WebhookEvent, parse_event
from shared.log import TraceContext
from shared.routing import Route

# What every route's handler is: a function of the parsed event (handlers dispatch on its model).
HandlerFn = Callable[[WebhookEvent, HandlerContext], None]
HEALTH_PATH: Final = "/healthz"

DONE: Final = Finished("event_handled")
DUPLICATE: Final = Finished("duplicate_ignored")
NOT_MINE: Final = Finished("not_mine")
DEAD_LETTERED: Final = "dead_lettered"


@dataclass(frozen=True)
class Handler:
    route: Route
    fn: HandlerFn


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
            handler.route.push_path,
            endpoint=handler.route.name,
            view_func=_view(handler, runtime),
            methods=["POST"],
        )
    add_health_check(app)
    return app


def add_health_check(app: flask.Flask) -> None:
    """GET /healthz answers once the app has loaded: Cloud Run's startup probe, and the stack's."""
    app.add_url_rule(HEALTH_PATH, "healthz", lambda: ("ok", 200), methods=["GET"])


def _view(handler: Handler, runtime: Runtime) -> Callable[[], flask.Response]:
    def view() -> flask.Response:
        return _deliver(handler, runtime, flask.request)

    return view


@dataclass
class _Delivery:
    """What is known about one push request, for its single log line."""

    handler: Handler
    runtime: Runtime
    trace: TraceContext | None
    message: PushMessage | None = None


def _deliver(handler: Handler, runtime: Runtime, request: flask.Request) -> flask.Response:
    started = time.perf_counter()
    headers = {key.lower(): value for key, value in request.headers.items()}
    delivery = _Delivery(handler, runtime, TraceContext.from_headers(headers))
    result: Finished | HandlerError
    try:
        if runtime.verifier is not None:
            runtime.verifier.verify(headers.get("authorization"))
        body = request.get_data(cache=False)
        try:
            delivery.message = parse_push(body)
        except BadEnvelope as exc:
            result = _dead_letter(delivery, body, {}, BadEnvelope.reason, str(exc))
        else:
            delivery.trace = continued_trace(delivery.message.attributes, delivery.trace)
            result = _process(delivery)
    except Exception as exc:  # noqa: BLE001
        # Anything unexpected is retried (never acknowledged as if done), and logged with its stack.
        result = as_handler_error(exc)
    return _respond(result, delivery, started)


def continued_trace(
    attributes: dict[str, str], request_trace: TraceContext | None
) -> TraceContext | None:
    """The webhook's trace, from its message, with a span of this delivery's own; the push
    request's trace (Pub/Sub's, not the webhook's) only for a message without one."""
    parent = TraceContext.from_traceparent(attributes.get(Attr.TRACEPARENT))
    return TraceContext.next_hop(parent) or request_trace


def _process(delivery: _Delivery) -> Finished:
    message = delivery.message
    assert message is not None
    handler, runtime = delivery.handler, delivery.runtime
    route = handler.route
    if message.event_type is not None and not route.accepts(message.event_type):
        return NOT_MINE
    try:
        event = _parse(message.data)
    except InvalidEvent as exc:
        return _dead_letter(delivery, message.data, message.attributes, exc.reason, exc.detail)
    if not route.accepts(event.webhook_event_type):
        return NOT_MINE

    context = HandlerContext(
        handler=route.name,
        message=message,
        firestore=runtime.firestore,
        hooks=runtime.hooks,
        logger=runtime.logger,
        trace=delivery.trace,
        _ledger=runtime.ledger,
        _key=ledger_key(route, message, event),
        backfill_store=runtime.backfill_store,
        settings=runtime.settings,
        backfills=runtime.backfills,
    )
    try:
        if runtime.settings.claim_every_delivery:
            context.claim()
        handler.fn(event, context)
        context.finish()
    except AlreadyDone:
        return DUPLICATE
    except PermanentError as exc:
        context.release(str(exc))
        reason = getattr(exc, "reason", "handler_failed")
        return _dead_letter(delivery, message.data, message.attributes, reason, str(exc))
    except BaseException as exc:
        context.release(f"{type(exc).__name__}: {exc}")
        raise
    return DONE


def _parse(data: bytes) -> AnyEvent:
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        raise InvalidEvent(REASON_NOT_JSON, "message data is not JSON") from None
    return parse_event(payload)


def _dead_letter(
    delivery: _Delivery, data: bytes, attributes: dict[str, str], reason: str, detail: str
) -> Finished:
    """Set a message aside with its original attributes and why; raises if not stored."""
    route, runtime, message = delivery.handler.route.name, delivery.runtime, delivery.message
    dead = {
        **attributes,
        Attr.REASON.value: reason,
        Attr.REASON_DETAIL.value: truncate_utf8(detail),
        Attr.HANDLER.value: route,
    }
    if message is not None:
        dead[Attr.ORIGINAL_MESSAGE_ID.value] = message.message_id
    settings = runtime.settings
    publisher = runtime.publisher
    topic = publisher.topic_path(settings.google_cloud_project, settings.dead_letter_topic(route))
    try:
        publisher.publish(topic, data, **dead).result(timeout=settings.publish_timeout_seconds)
    except Exception as exc:
        # Not set aside, so not acknowledged: Pub/Sub keeps the message and delivers it again.
        raise StorageBusy(f"dead-lettering to {topic} failed: {type(exc).__name__}: {exc}") from exc
    return Finished(DEAD_LETTERED, "WARNING", detail)


def _respond(
    result: Finished | HandlerError, delivery: _Delivery, started: float
) -> flask.Response:
    answer = disposition(result)
    message = delivery.message
    finished = isinstance(result, Finished)
    delivery.runtime.logger.log(
        answer.severity,
        answer.event,
        f"{delivery.handler.route.name}: {answer.event}",
        trace=delivery.trace,
        handler=delivery.handler.route.name,
        outcome=answer.event if finished else type(result).__name__,
        error=None if finished else str(result),
        detail=result.detail if isinstance(result, Finished) else None,
        stack=result.stack if isinstance(result, Crashed) else None,
        status=answer.status,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
        webhook_id=message.attributes.get(Attr.WEBHOOK_ID) if message else None,
        event_type=message.event_type if message else None,
        message_id=message.message_id if message else None,
        delivery_attempt=message.delivery_attempt if message else None,
        subscription=message.subscription if message else None,
        **(linked_fields(message.attributes) if message else {}),
    )
    return flask.Response(status=answer.status)
