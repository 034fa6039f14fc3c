"""The Cloud Tasks queue of backfill chunks: one named task per chunk, for the worker.

Task names derive from the backfill and the chunk number, so Cloud Tasks
itself refuses a duplicate (ALREADY_EXISTS), which counts as success. The
emulator does not enforce this; the backfill record's chunk counter does.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Final

import grpc
from google.api_core import exceptions as api_exceptions
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports.grpc import CloudTasksGrpcTransport
from google.protobuf import duration_pb2

from handlers.errors import StorageBusy
from shared.log import TraceContext
from shared.settings import HandlerSettings

WORKER_PATH: Final = "/backfill/run"
# Margin over a chunk's budget for the hook's last page and the commit.
_DISPATCH_MARGIN_SECONDS: Final = 60


def chunk_task_id(backfill: str, chunk: int) -> str:
    return f"{backfill}-chunk-{chunk}"


@dataclass(frozen=True)
class TaskRequest:
    backfill_id: str
    chunk: int
    # The trace the chunk continues (the trigger webhook's), sent as the task's header.
    trace: TraceContext | None = field(default=None, compare=False)

    def body(self) -> bytes:
        return json.dumps({"backfill_id": self.backfill_id, "chunk": self.chunk}).encode()

    def next(self, chunk: int) -> TaskRequest:
        """Another chunk of the same backfill, in the same trace."""
        return TaskRequest(self.backfill_id, chunk, self.trace)


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
            raise StorageBusy(f"creating task failed: {exc}") from exc
        return True

    def task(self, request: TaskRequest) -> tasks_v2.Task:
        """The chunk's task: named by backfill and chunk, so Cloud Tasks refuses a duplicate."""
        s = self._settings
        url = str(s.backfill_worker_url).rstrip("/") + WORKER_PATH
        http = tasks_v2.HttpRequest(
            http_method=tasks_v2.HttpMethod.POST,
            url=url,
            headers={
                "Content-Type": "application/json",
                **({"traceparent": request.trace.traceparent} if request.trace else {}),
            },
            body=request.body(),
        )
        if s.tasks_service_account:
            # Cloud Tasks signs an ID token as this account; the worker checks it.
            http.oidc_token = tasks_v2.OidcToken(
                service_account_email=s.tasks_service_account, audience=str(s.backfill_worker_url)
            )
        deadline = int(s.backfill_chunk_seconds) + _DISPATCH_MARGIN_SECONDS
        return tasks_v2.Task(
            name=f"{self.queue_path}/tasks/{chunk_task_id(request.backfill_id, request.chunk)}",
            http_request=http,
            dispatch_deadline=duration_pb2.Duration(seconds=deadline),
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
