"""The backfill worker: one bounded chunk per Cloud Task, then the next task.

A chunk's progress (cursor, chunk count, records) commits in one Firestore
transaction that also checks the chunk is still the next one and the
backfill was not cancelled meanwhile. So a chunk delivered twice commits
once, a failed chunk resumes from the last committed cursor, and a chunk
that finds the backfill cancelled stops it.

Status codes (Cloud Tasks retries anything but 2xx, with the queue's backoff):
    chunk committed, duplicate, stale, cancelled, failed for good -> 204
    retryable hook error, busy, crash, next task not created       -> 503
    authentication failure                                         -> 401 / 403
"""

from __future__ import annotations

import json
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import flask
from google.cloud import firestore

from handlers.app import Runtime
from handlers.auth import AuthError, CertificatesUnavailable, Forbidden
from handlers.backfills import (
    FINAL_STATES,
    WORKER_PATH,
    BackfillQueue,
    BackfillState,
    TaskRequest,
)
from handlers.hooks import BackfillChunk, ChunkResult
from handlers.store import BACKFILLS
from handlers.transient import is_transient
from shared.errors import PermanentError, RetryableError
from shared.log import Severity, TraceContext

QUEUE_HEADER: Final = "x-cloudtasks-queuename"


class BadTask(PermanentError):
    """The request is not a task this worker can run."""


class ChunkBusy(RetryableError):
    """Another attempt is running this chunk."""


@dataclass(frozen=True)
class Finished:
    """Why this delivery needs no retry; `event` names it in the log."""

    event: str
    severity: Severity = "INFO"
    detail: str | None = None


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
    app.add_url_rule("/healthz", "healthz", lambda: ("ok", 200), methods=["GET"])
    return app


class Worker:
    def __init__(self, runtime: Runtime, queue: BackfillQueue) -> None:
        self._runtime = runtime
        self._queue = queue

    def view(self) -> flask.Response:
        request = flask.request
        started = time.perf_counter()
        headers = {key.lower(): value for key, value in request.headers.items()}
        trace = TraceContext.from_headers(headers)
        task: TaskRequest | None = None
        result: Finished | Exception
        try:
            self._authenticate(headers)
            task = _parse_task(request.get_data(cache=False))
            result = self.run_chunk(task)
        except (PermanentError, RetryableError) as exc:
            result = exc
        except Exception as exc:  # noqa: BLE001
            # Unexpected: let the queue retry; keep the stack unless it is mere contention.
            text = f"{type(exc).__name__}: {exc}"
            if not is_transient(exc):
                text = "".join(traceback.format_exception(exc))[-4000:]
            result = RetryableError(text)
        return self._respond(result, task, headers, trace, started)

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
        db = self._runtime.firestore
        settings = self._runtime.settings
        ref = db.collection(BACKFILLS).document(task.backfill_id)
        record = ref.get().to_dict()
        if record is None:
            # The scheduler creates the record before the first task; retry until it shows.
            raise RetryableError(f"backfill {task.backfill_id} has no record yet")
        finished = self._already_settled(record, task)
        if finished is not None:
            return finished

        token = _claim_chunk(db, ref, task, timedelta(seconds=settings.ledger_lease_seconds))
        if token is None:
            return Finished("backfill_cancelled_skipped")
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
            _finish(db, ref, token, BackfillState.FAILED, error=str(exc))
            return Finished("backfill_failed", "ERROR", str(exc))
        except BaseException as exc:
            _release_chunk(db, ref, token, f"{type(exc).__name__}: {exc}")
            raise
        outcome = _commit_chunk(db, ref, token, task, result)
        if outcome is not None:
            return outcome
        if result.next_cursor is None:
            return Finished("backfill_completed")
        self._queue.enqueue(TaskRequest(task.backfill_id, task.chunk + 1))
        return Finished("backfill_chunk_done")

    def _already_settled(self, record: dict[str, Any], task: TaskRequest) -> Finished | None:
        state = record.get("state")
        if state in FINAL_STATES:
            return Finished(f"backfill_{state}_skipped")
        done = int(record.get("chunks_done", 0))
        if task.chunk < done:
            # Committed before: make sure its successor exists (creating it may have failed).
            self._queue.enqueue(TaskRequest(task.backfill_id, done))
            return Finished("duplicate_chunk_ignored")
        if task.chunk > done:
            return Finished("stale_chunk_ignored", "WARNING", f"next chunk is {done}")
        return None

    def _respond(
        self,
        result: Finished | Exception,
        task: TaskRequest | None,
        headers: dict[str, str],
        trace: TraceContext | None,
        started: float,
    ) -> flask.Response:
        """The one place where a chunk's outcome becomes a status code and a log line."""
        status: int
        severity: Severity
        if isinstance(result, Finished):
            status, severity, event, detail = 204, result.severity, result.event, result.detail
        elif isinstance(result, AuthError):
            status, severity, event, detail = result.status, "WARNING", "task_unauthenticated", None
        elif isinstance(result, CertificatesUnavailable | ChunkBusy):
            status, severity, event, detail = 503, "WARNING", "retry_later", str(result)
        elif isinstance(result, RetryableError):
            status, severity, event, detail = 503, "WARNING", "backfill_chunk_retry", str(result)
        else:
            status, severity, event, detail = 204, "ERROR", "bad_task", str(result)
        self._runtime.logger.log(
            severity,
            event,
            f"backfill worker: {event}",
            trace=trace,
            status=status,
            detail=detail,
            backfill_id=task.backfill_id if task else None,
            chunk=task.chunk if task else None,
            task_name=headers.get("x-cloudtasks-taskname"),
            retry_count=headers.get("x-cloudtasks-taskretrycount"),
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return flask.Response(status=status)


def _parse_task(body: bytes) -> TaskRequest:
    try:
        payload = json.loads(body)
        backfill, chunk = payload["backfill_id"], payload["chunk"]
    except (ValueError, TypeError, KeyError):
        raise BadTask("body is not {backfill_id, chunk}") from None
    if not isinstance(backfill, str) or not isinstance(chunk, int) or chunk < 0:
        raise BadTask("backfill_id must be a string and chunk a non-negative integer")
    return TaskRequest(backfill, chunk)


def _claim_chunk(
    db: firestore.Client, ref: firestore.DocumentReference, task: TaskRequest, lease: timedelta
) -> str | None:
    """Take the chunk's lease; None if the backfill ended (was cancelled) meanwhile."""
    token = uuid.uuid4().hex

    @firestore.transactional
    def run(transaction: firestore.Transaction) -> bool:
        current = ref.get(transaction=transaction).to_dict() or {}
        if current.get("state") in FINAL_STATES:
            return False
        now = datetime.now(UTC)
        expires = current.get("lease_expires_at")
        if current.get("lease_token") and expires is not None and expires > now:
            raise ChunkBusy(f"chunk {task.chunk} of {task.backfill_id} is running elsewhere")
        update: dict[str, Any] = {
            "state": BackfillState.RUNNING.value,
            "lease_token": token,
            "lease_expires_at": now + lease,
            "updated_at": now,
        }
        if "started_at" not in current:
            update["started_at"] = now
        transaction.update(ref, update)
        return True

    claimed: bool = run(db.transaction())
    return token if claimed else None


def _release_chunk(
    db: firestore.Client, ref: firestore.DocumentReference, token: str, error: str
) -> None:
    @firestore.transactional
    def run(transaction: firestore.Transaction) -> None:
        current = ref.get(transaction=transaction).to_dict() or {}
        if current.get("lease_token") == token:
            transaction.update(
                ref,
                {
                    "lease_token": None,
                    "lease_expires_at": None,
                    "last_error": error[:1500],
                    "updated_at": datetime.now(UTC),
                },
            )

    run(db.transaction())


def _commit_chunk(
    db: firestore.Client,
    ref: firestore.DocumentReference,
    token: str,
    task: TaskRequest,
    result: ChunkResult,
) -> Finished | None:
    """Store the chunk's progress once; None when committed, else why not."""

    @firestore.transactional
    def run(transaction: firestore.Transaction) -> Finished | None:
        current = ref.get(transaction=transaction).to_dict() or {}
        if current.get("state") == BackfillState.CANCELLED.value:
            return Finished("backfill_cancelled_skipped")
        if current.get("lease_token") != token or int(current.get("chunks_done", 0)) != task.chunk:
            return Finished("chunk_lease_lost", "ERROR", "another attempt committed this chunk")
        now = datetime.now(UTC)
        done = result.next_cursor is None
        transaction.update(
            ref,
            {
                "cursor": result.next_cursor,
                "chunks_done": task.chunk + 1,
                "records": int(current.get("records", 0)) + result.records,
                "state": (BackfillState.DONE if done else BackfillState.RUNNING).value,
                "lease_token": None,
                "lease_expires_at": None,
                "updated_at": now,
                **({"finished_at": now} if done else {}),
            },
        )
        return None

    outcome: Finished | None = run(db.transaction())
    return outcome


def _finish(
    db: firestore.Client,
    ref: firestore.DocumentReference,
    token: str,
    state: BackfillState,
    *,
    error: str,
) -> None:
    @firestore.transactional
    def run(transaction: firestore.Transaction) -> None:
        current = ref.get(transaction=transaction).to_dict() or {}
        if current.get("lease_token") == token:
            now = datetime.now(UTC)
            transaction.update(
                ref,
                {
                    "state": state.value,
                    "last_error": error[:1500],
                    "lease_token": None,
                    "lease_expires_at": None,
                    "finished_at": now,
                    "updated_at": now,
                },
            )

    run(db.transaction())
