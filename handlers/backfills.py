"""Backfills: scheduled by configuration changes, run chunk by chunk through Cloud Tasks.

A backfill is a Firestore record (`backfills/{id}`) plus one Cloud Task per
chunk. Task names derive from the trigger's webhook id and the chunk number,
so Cloud Tasks itself refuses duplicates (ALREADY_EXISTS), which counts as
success. The emulator does not enforce this; the record's chunk counter does.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

import grpc
from google.api_core import exceptions as api_exceptions
from google.cloud import firestore, tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports.grpc import CloudTasksGrpcTransport
from google.protobuf import duration_pb2

from handlers.context import HandlerContext
from handlers.store import BACKFILLS
from shared.errors import RetryableError
from shared.events import (
    AnyEvent,
    ConnectionCreated,
    ConnectionDeleted,
    EntityMappingCreated,
    EntityMappingDeleted,
    EntityMappingUpdated,
    ObjectFieldMappingCreated,
    ObjectFieldMappingUpdated,
    normalise_customer_id,
)
from shared.settings import HandlerSettings

WORKER_PATH: Final = "/backfill/run"
TRIGGERS: Final = (
    ObjectFieldMappingCreated,
    ObjectFieldMappingUpdated,
    EntityMappingCreated,
    EntityMappingUpdated,
    EntityMappingDeleted,
    ConnectionCreated,
)


class BackfillState(StrEnum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES: Final = frozenset({BackfillState.DONE, BackfillState.FAILED, BackfillState.CANCELLED})


def backfill_id(trigger_webhook_id: str, hook_name: str) -> str:
    """Deterministic: the same trigger and hook always name the same backfill."""
    digest = hashlib.sha256(f"{trigger_webhook_id}\n{hook_name}".encode()).hexdigest()
    return f"bf-{digest[:32]}"


def chunk_task_id(backfill: str, chunk: int) -> str:
    return f"{backfill}-chunk-{chunk}"


@dataclass(frozen=True)
class TaskRequest:
    backfill_id: str
    chunk: int

    def body(self) -> bytes:
        return json.dumps({"backfill_id": self.backfill_id, "chunk": self.chunk}).encode()


class BackfillQueue:
    """Creates the worker's tasks; a client per process, created on first use."""

    def __init__(self, settings: HandlerSettings) -> None:
        if not settings.backfills_configured:
            raise ValueError("TASKS_LOCATION, TASKS_QUEUE and BACKFILL_WORKER_URL are required")
        self._settings = settings
        self._client: tasks_v2.CloudTasksClient | None = None
        self._lock = threading.Lock()

    @property
    def queue_path(self) -> str:
        s = self._settings
        return str(
            tasks_v2.CloudTasksClient.queue_path(
                s.google_cloud_project, str(s.tasks_location), str(s.tasks_queue)
            )
        )

    def enqueue(self, request: TaskRequest) -> bool:
        """Create the chunk's task; False when a task of that name already exists."""
        task = self.task(request)
        try:
            self._get_client().create_task(parent=self.queue_path, task=task, timeout=10)
        except api_exceptions.AlreadyExists:
            return False
        except api_exceptions.GoogleAPICallError as exc:
            raise RetryableError(f"creating task failed: {exc}") from exc
        return True

    def task(self, request: TaskRequest) -> tasks_v2.Task:
        """The chunk's task: named by backfill and chunk, so Cloud Tasks refuses a duplicate."""
        s = self._settings
        url = str(s.backfill_worker_url).rstrip("/") + WORKER_PATH
        http = tasks_v2.HttpRequest(
            http_method=tasks_v2.HttpMethod.POST,
            url=url,
            headers={"Content-Type": "application/json"},
            body=request.body(),
        )
        if s.tasks_service_account:
            # Cloud Tasks signs an ID token as this account; the worker checks it.
            http.oidc_token = tasks_v2.OidcToken(
                service_account_email=s.tasks_service_account, audience=str(s.backfill_worker_url)
            )
        return tasks_v2.Task(
            name=f"{self.queue_path}/tasks/{chunk_task_id(request.backfill_id, request.chunk)}",
            http_request=http,
            # The chunk's budget plus margin for the hook's last page and the commit.
            dispatch_deadline=duration_pb2.Duration(seconds=int(s.backfill_chunk_seconds) + 60),
        )

    def _get_client(self) -> tasks_v2.CloudTasksClient:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    host = self._settings.cloud_tasks_emulator_host
                    self._client = (
                        tasks_v2.CloudTasksClient(
                            transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(host))
                        )
                        if host
                        else tasks_v2.CloudTasksClient()
                    )
        return self._client


def handle(event: AnyEvent, context: HandlerContext) -> None:
    """The scheduler: start backfills on configuration changes, cancel them on deletion."""
    if isinstance(event, ConnectionDeleted):
        cancel_for_connection(context, event.connection_id)
        return
    if not isinstance(event, TRIGGERS):
        return
    if isinstance(event, ConnectionCreated) and event.result != "SUCCESS":
        return
    queue = context.backfills
    if queue is None:
        raise RetryableError("backfills are not configured (TASKS_* settings)")
    object_name = event.object_name_or_none
    customer = normalise_customer_id(event.customer_id)
    hooks = context.hooks.backfills_for(provider=event.provider_name, object_name=object_name)
    if not hooks:
        context.log("INFO", "backfill_not_needed", "no backfill hook matches", object=object_name)
    for hook in hooks:
        backfill = backfill_id(context.webhook_id, hook.name)
        record = {
            "backfill_id": backfill,
            "hook": hook.name,
            "customer_id": customer,
            "provider_name": event.provider_name,
            "connection_id": event.connection_key,
            "object": object_name,
            "trigger_event_type": event.webhook_event_type,
            "trigger_webhook_id": context.webhook_id,
        }
        created = _create_record(context.firestore, backfill, record)
        # Enqueue even when the record existed: an earlier attempt may have failed in between.
        enqueued = queue.enqueue(TaskRequest(backfill, 0))
        context.log(
            "INFO",
            "backfill_scheduled" if created else "backfill_already_scheduled",
            f"backfill {backfill} of {object_name or 'every object'} for customer {customer}",
            backfill_id=backfill,
            hook=hook.name,
            customer_id=customer,
            provider_name=event.provider_name,
            task_created=enqueued,
        )


def _create_record(db: firestore.Client, backfill: str, record: dict[str, Any]) -> bool:
    ref = db.collection(BACKFILLS).document(backfill)
    now = datetime.now(UTC)
    try:
        ref.create(
            {
                **record,
                "state": BackfillState.SCHEDULED.value,
                "cursor": None,
                "chunks_done": 0,
                "records": 0,
                "created_at": now,
                "updated_at": now,
            }
        )
    except api_exceptions.AlreadyExists:
        return False
    return True


def cancel_for_connection(context: HandlerContext, connection_id: str) -> None:
    """Mark every unfinished backfill of the connection cancelled; the next chunk stops."""
    query = (
        context.firestore.collection(BACKFILLS)
        .where(filter=firestore.FieldFilter("connection_id", "==", connection_id))
        .where(
            filter=firestore.FieldFilter(
                "state", "in", [BackfillState.SCHEDULED.value, BackfillState.RUNNING.value]
            )
        )
    )
    for snapshot in query.stream():
        cancel(context.firestore, snapshot.id)
        context.log(
            "INFO",
            "backfill_cancelled",
            f"backfill {snapshot.id} cancelled: connection {connection_id} was deleted",
            backfill_id=snapshot.id,
            connection_id=connection_id,
        )


def cancel(db: firestore.Client, backfill: str) -> None:
    ref = db.collection(BACKFILLS).document(backfill)

    @firestore.transactional
    def run(transaction: firestore.Transaction) -> None:
        current = ref.get(transaction=transaction).to_dict() or {}
        if current and current.get("state") not in FINAL_STATES:
            now = datetime.now(UTC)
            transaction.update(
                ref, {"state": BackfillState.CANCELLED.value, "finished_at": now, "updated_at": now}
            )

    run(db.transaction())
