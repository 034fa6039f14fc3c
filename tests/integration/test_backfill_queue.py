"""What the scheduler sends to Cloud Tasks, and how it takes ALREADY_EXISTS.

The Tasks emulator accepts duplicate task names, so the duplicate path is
driven here by a gRPC server on loopback that answers CreateTask as the real
service does for a name in use: status ALREADY_EXISTS. The real client
library turns that into the exception the code must treat as success.
"""

from __future__ import annotations

import grpc
import pytest

from handlers.backfill_store import backfill_id
from handlers.tasks_queue import BackfillQueue, TaskRequest, chunk_task_id
from shared.errors import RetryableError
from shared.settings import HandlerSettings
from tests.integration.conftest import FakeCloudTasks

pytestmark = pytest.mark.integration


def queue_for(fake: FakeCloudTasks, **overrides: str) -> BackfillQueue:
    settings = HandlerSettings(
        google_cloud_project="proj",
        service="backfills",
        push_auth_disabled=True,
        tasks_location="europe-west1",
        tasks_queue="backfills",
        backfill_worker_url="https://backfill-worker-123.europe-west1.run.app",
        cloud_tasks_emulator_host=fake.host,
        **overrides,  # type: ignore[arg-type]
    )
    return BackfillQueue(settings)


def test_a_duplicate_task_name_is_already_exists_and_counts_as_success(
    cloud_tasks: FakeCloudTasks,
) -> None:
    queue = queue_for(cloud_tasks)
    request = TaskRequest(backfill_id("msg_trigger", "hooks.load"), 0)
    assert queue.enqueue(request) is True
    assert queue.enqueue(request) is False
    assert len(cloud_tasks.requests) == 2


def test_task_name_is_derived_from_the_trigger_and_carries_an_oidc_token(
    cloud_tasks: FakeCloudTasks,
) -> None:
    queue = queue_for(cloud_tasks, tasks_service_account="tasks@proj.iam.gserviceaccount.com")
    backfill = backfill_id("msg_trigger", "hooks.load")
    assert backfill == backfill_id("msg_trigger", "hooks.load")
    assert backfill != backfill_id("msg_other", "hooks.load")
    queue.enqueue(TaskRequest(backfill, 3))
    [sent] = cloud_tasks.requests
    assert sent.parent == "projects/proj/locations/europe-west1/queues/backfills"
    assert sent.task.name == f"{sent.parent}/tasks/{chunk_task_id(backfill, 3)}"
    http = sent.task.http_request
    assert http.url == "https://backfill-worker-123.europe-west1.run.app/backfill/run"
    assert http.oidc_token.service_account_email == "tasks@proj.iam.gserviceaccount.com"
    assert http.oidc_token.audience == "https://backfill-worker-123.europe-west1.run.app"
    assert sent.task.dispatch_deadline.seconds > 60


def test_other_errors_are_retryable(cloud_tasks: FakeCloudTasks) -> None:
    cloud_tasks.fail_with = grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(RetryableError):
        queue_for(cloud_tasks).enqueue(TaskRequest("bf-x", 0))
