"""The backfill worker: one bounded chunk per Cloud Task, then the next task.

A chunk takes the backfill record's lease, runs the hook from the last
committed cursor, and commits its progress once (handlers/backfill_store.py).
So a chunk delivered twice commits once, a failed chunk resumes from the last
committed cursor, and a chunk that finds the backfill cancelled stops it.
Answers come from handlers.errors.disposition, as the push app's do; Cloud
Tasks retries anything but 2xx with the queue's backoff.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Any, Final

import flask

from handlers import deletions
from handlers.alerting import Alert, AlertKind, raise_alert
from handlers.app import add_health_check
from handlers.backfill_store import FINAL_STATES, BackfillState
from handlers.errors import (
    BadTask,
    Crashed,
    Finished,
    Forbidden,
    HandlerError,
    Retry,
    as_handler_error,
    disposition,
)
from handlers.hooks import BackfillChunk, ChunkResult
from handlers.runtime import Runtime
from handlers.tasks_queue import WORKER_PATH, BackfillQueue, TaskRequest
from shared.errors import PermanentError
from shared.log import TraceContext

QUEUE_HEADER: Final = "x-cloudtasks-queuename"


def create_worker_app(runtime: Runtime) -> flask.Flask:
    if runtime.backfills is None:
        raise ValueError("the worker needs TASKS_LOCATION, TASKS_QUEUE and BACKFILL_WORKER_URL")
    worker = Worker(runtime, runtime.backfills)
    app = flask.Flask(__name__)
    if runtime.verifier is None:
        runtime.logger.log(
            "WARNING", "push_auth_disabled", "task authentication is DISABLED: local use only"
        )
    app.add_url_rule(WORKER_PATH, "run_chunk", worker.view, methods=["POST"])
    add_health_check(app)
    return app


class Worker:
    def __init__(self, runtime: Runtime, queue: BackfillQueue) -> None:
        self._runtime = runtime
        self._queue = queue

    def view(self) -> flask.Response:
        request = flask.request
        started = time.perf_counter()
        headers = {key.lower(): value for key, value in request.headers.items()}
        # The task's trace (the webhook's, from the scheduler), with a span of this chunk's own.
        trace = TraceContext.next_hop(TraceContext.from_headers(headers))
        task: TaskRequest | None = None
        result: Finished | HandlerError
        try:
            self._authenticate(headers)
            task = _parse_task(request.get_data(cache=False), trace=trace)
            result = self.run_chunk(task)
        except Exception as exc:  # noqa: BLE001
            # Anything unexpected is retried by the queue, and logged with its stack.
            result = as_handler_error(exc)
        answer = disposition(result)
        self._runtime.logger.log(
            answer.severity,
            answer.event,
            f"backfill worker: {answer.event}",
            trace=trace,
            status=answer.status,
            detail=result.detail if isinstance(result, Finished) else str(result),
            stack=result.stack if isinstance(result, Crashed) else None,
            backfill_id=task.backfill_id if task else None,
            chunk=task.chunk if task else None,
            task_name=headers.get("x-cloudtasks-taskname"),
            retry_count=headers.get("x-cloudtasks-taskretrycount"),
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return flask.Response(status=answer.status)

    def _authenticate(self, headers: dict[str, str]) -> None:
        verifier = self._runtime.verifier
        if verifier is None:
            return
        verifier.verify(headers.get("authorization"))
        expected = self._runtime.settings.tasks_queue
        if headers.get(QUEUE_HEADER) != expected:
            # Cloud Tasks sets this header and strips it from outside requests.
            raise Forbidden(f"{QUEUE_HEADER} is not {expected!r}")

    def run_chunk(self, task: TaskRequest) -> Finished:
        store = self._runtime.backfill_store
        settings = self._runtime.settings
        snapshot = store.read(task.backfill_id)
        record = snapshot.to_dict()
        if record is None:
            # The scheduler creates the record before the first task; retry until it shows.
            raise Retry(f"backfill {task.backfill_id} has no record yet")
        finished = self._already_settled(record, task)
        if finished is not None:
            return finished

        if deletions.deleted_after(
            self._runtime.firestore,
            customer_id=record["customer_id"],
            provider_name=record["provider_name"],
            sent_at=int(record.get("trigger_sent_at", 0)),
        ):
            # Its connection was deleted after the trigger (the scheduler's cancel may have run
            # before this backfill was recorded): stop here, as a cancelled one stops.
            store.cancel(task.backfill_id)
            return Finished("backfill_cancelled_skipped", detail="the connection was deleted")
        lease = store.claim_chunk(snapshot, task.chunk)
        hook = self._runtime.hooks.backfill_hook(record["hook"])
        chunk = BackfillChunk(
            backfill_id=task.backfill_id,
            customer_id=record["customer_id"],
            provider_name=record["provider_name"],
            connection_id=record.get("connection_id"),
            object=record.get("object"),
            cursor=record.get("cursor"),
            chunk=task.chunk,
            max_records=settings.backfill_chunk_max_records,
            deadline=time.monotonic() + settings.backfill_chunk_seconds,
        )
        try:
            result: ChunkResult = hook.fn(chunk)
        except PermanentError as exc:
            store.fail(lease, str(exc))
            self._alert_failed(task, record, str(exc))
            return Finished("backfill_stopped", "WARNING", str(exc))
        except BaseException as exc:
            store.release_chunk(lease, f"{type(exc).__name__}: {exc}")
            raise
        committed = store.commit_chunk(
            lease, task.chunk, records=result.records, next_cursor=result.next_cursor
        )
        if not committed:
            return Finished("backfill_cancelled_skipped")
        if result.next_cursor is None:
            return Finished("backfill_completed")
        self._queue.enqueue(task.next(task.chunk + 1))
        return Finished("backfill_chunk_done")

    def _alert_failed(self, task: TaskRequest, record: dict[str, Any], error: str) -> None:
        trigger = str(record.get("trigger_webhook_id") or task.backfill_id)
        alert = Alert(
            kind=AlertKind.BACKFILL_FAILED,
            message=f"backfill {task.backfill_id} of {record.get('object') or 'every object'} "
            f"for customer {record['customer_id']} failed at chunk {task.chunk}: {error}",
            customer_id=record["customer_id"],
            provider_name=record["provider_name"],
            connection_id=record.get("connection_id"),
            object=record.get("object"),
            reason=error,
            webhook_id=trigger,
            backfill_id=task.backfill_id,
        )
        runtime = self._runtime

        def once(step: str, work: Callable[[], object]) -> bool:
            return runtime.ledger.once(f"backfill-worker:{step}", task.backfill_id, work)

        raise_alert(
            alert,
            log=functools.partial(
                runtime.logger.log,
                webhook_id=trigger,
                trace=task.trace,
            ),
            hooks=runtime.hooks.alerts_for(alert.kind),
            once=once,
        )

    def _already_settled(self, record: dict[str, Any], task: TaskRequest) -> Finished | None:
        state = record.get("state")
        if state in FINAL_STATES:
            if (
                state == BackfillState.FAILED
                and task.chunk == int(record.get("chunks_done", 0))
                and self._runtime.hooks.alerts_for(AlertKind.BACKFILL_FAILED)
            ):
                # The chunk that failed, again: an alert hook asked for a retry, or the attempt
                # died after the record ended and before its hooks ran. Each hook and the line
                # run once (their ledger entries), so only what did not finish runs now.
                self._alert_failed(task, record, str(record.get("last_error") or ""))
            return Finished(f"backfill_{state}_skipped")
        done = int(record.get("chunks_done", 0))
        if task.chunk < done:
            # Committed before: make sure its successor exists (creating it may have failed).
            self._queue.enqueue(task.next(done))
            return Finished("duplicate_chunk_ignored")
        if task.chunk > done:
            return Finished("stale_chunk_ignored", "WARNING", f"next chunk is {done}")
        return None


def _parse_task(body: bytes, *, trace: TraceContext | None) -> TaskRequest:
    try:
        payload = json.loads(body)
        backfill, chunk = payload["backfill_id"], payload["chunk"]
    except (ValueError, TypeError, KeyError):
        raise BadTask("body is not {backfill_id, chunk}") from None
    if not isinstance(backfill, str) or not isinstance(chunk, int) or chunk < 0:
        raise BadTask("backfill_id must be a string and chunk a non-negative integer")
    return TaskRequest(backfill, chunk, trace)
