"""The reconciler's Flask app: Cloud Scheduler POSTs to /reconcile, one pass per request.

Authenticated as the push services are (handlers/auth.py): an OIDC token for the service's
URL from the scheduler's account. Each request writes one log line with the pass's counts,
and answers through handlers.errors.disposition, with the counts as a JSON body: 200 for a
pass (also one a budget cut short) or a pass skipped because another holds the lease, 503
when the API kept failing (the next pass goes on from the watermark), 500 when the API
refused the request itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Final

import flask

from handlers.app import add_health_check
from handlers.errors import (
    Crashed,
    Finished,
    HandlerError,
    StorageBusy,
    as_handler_error,
    disposition,
)
from handlers.reconcile.api import Budget, SupaglueApi
from handlers.reconcile.passes import Counts, Pass
from handlers.reconcile.store import Store
from handlers.reconcile.synthetic import Synthetic
from handlers.runtime import Runtime
from shared.log import TraceContext
from shared.settings import ReconcilerSettings

RECONCILE_PATH: Final = "/reconcile"
PASSED: Final = Finished("reconcile_pass")
SKIPPED: Final = Finished("reconcile_skipped", detail="another pass holds the lease")
# Beyond its time budget a pass still publishes what it found and writes its progress.
_LEASE_MARGIN_SECONDS: Final = 120


def create_reconciler_app(settings: ReconcilerSettings, runtime: Runtime) -> flask.Flask:
    reconciler = Reconciler(settings, runtime)
    app = flask.Flask(__name__)
    if runtime.verifier is None:
        runtime.logger.log(
            "WARNING", "push_auth_disabled", "reconcile authentication is DISABLED: local use only"
        )
    app.add_url_rule(RECONCILE_PATH, "reconcile", reconciler.view, methods=["POST"])
    add_health_check(app)
    return app


class Reconciler:
    def __init__(self, settings: ReconcilerSettings, runtime: Runtime) -> None:
        self._settings = settings
        self._runtime = runtime

    def view(self) -> flask.Response:
        request = flask.request
        started = time.perf_counter()
        headers = {key.lower(): value for key, value in request.headers.items()}
        counts = Counts()
        result: Finished | HandlerError
        try:
            if self._runtime.verifier is not None:
                self._runtime.verifier.verify(headers.get("authorization"))
            one = self.new_pass()
            counts = one.counts
            result = PASSED if one.run() else SKIPPED
        except Exception as exc:  # noqa: BLE001
            # Never acknowledged as done: the scheduler's next call starts from the watermark.
            result = as_handler_error(exc)
        answer = disposition(result)
        # A body says what the pass did; disposition's 204 becomes 200 to carry it.
        status = 200 if answer.status == 204 else answer.status
        self._runtime.logger.log(
            answer.severity if counts.events_reconciled == 0 else "WARNING",
            answer.event,
            f"reconciler: {answer.event}, {counts.events_reconciled} event(s) recovered",
            trace=TraceContext.from_headers(headers),
            status=status,
            error=None if isinstance(result, Finished) else str(result),
            detail=result.detail if isinstance(result, Finished) else None,
            stack=result.stack if isinstance(result, Crashed) else None,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            **counts.fields(),
        )
        body = {"outcome": answer.event, **counts.fields()}
        return flask.Response(json.dumps(body), status=status, mimetype="application/json")

    def new_pass(self) -> Pass:
        settings, runtime = self._settings, self._runtime
        budget = Budget(
            requests=settings.reconcile_max_requests,
            deadline=time.monotonic() + settings.reconcile_time_budget_seconds,
        )
        api = SupaglueApi(
            base_url=str(settings.supaglue_api_url),
            api_key=settings.supaglue_api_key.get_secret_value(),
            budget=budget,
            retries=settings.reconcile_retries,
            backoff_seconds=settings.reconcile_backoff_seconds,
            timeout_seconds=settings.reconcile_request_timeout_seconds,
        )
        lease = timedelta(seconds=settings.reconcile_time_budget_seconds + _LEASE_MARGIN_SECONDS)
        return Pass(
            settings=settings,
            db=runtime.firestore,
            ledger=runtime.ledger,
            store=Store(runtime.firestore, lease=lease),
            api=api,
            publish=self.publish,
            logger=runtime.logger,
        )

    def publish(self, messages: Sequence[Synthetic]) -> None:
        """Publish all, then wait for every confirmation; raise if any was not confirmed."""
        settings, publisher = self._settings, self._runtime.publisher
        topic = publisher.topic_path(settings.google_cloud_project, settings.names.events_topic)
        futures = [publisher.publish(topic, m.data, **m.attributes) for m in messages]
        try:
            for future in futures:
                future.result(timeout=settings.publish_timeout_seconds)
        except Exception as exc:
            # Progress is written only after this returns: the next pass publishes these again.
            raise StorageBusy(f"publishing to {topic} failed: {type(exc).__name__}: {exc}") from exc
