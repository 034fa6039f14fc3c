"""The example hook package (hooks/), end to end on the emulators, as `make run` runs it.

Signed webhooks go in at the real ingest function; Pub/Sub pushes them to the services,
which load `hooks.contacts` and `hooks.notify` with notify's settings (its one secret, the
Slack webhook URL, points at `ops receive`'s server here, standing in for Slack). Each
webhook is delivered twice, as Svix retries do; every effect must happen once.
"""

from __future__ import annotations

import functools
import io
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from google.cloud import firestore

from handlers.store import doc_id
from hooks import contacts
from ops.cli.receive import receiver
from ops.local.stack import Emulators, Stack, StackSpec, running_stack
from ops.local.topology import Delivery
from ops.signing import signed_headers
from shared.samples import sample
from tests.integration.conftest import PROJECT, wait_for

pytestmark = pytest.mark.integration


class Slack:
    """What `ops receive` printed: one block per POST."""

    def __init__(self) -> None:
        self.out = io.StringIO()
        self.server = receiver(0, self.out)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slack"

    def texts(self) -> list[str]:
        blocks = re.split(r"^<- POST /slack\n", self.out.getvalue(), flags=re.MULTILINE)
        return [json.loads(block)["text"] for block in blocks if block.strip()]


@pytest.fixture(scope="module")
def slack() -> Iterator[Slack]:
    fake = Slack()
    threading.Thread(target=fake.server.serve_forever, daemon=True).start()
    yield fake
    fake.server.shutdown()


@pytest.fixture(scope="module")
def stack(
    emulators: Emulators,
    slack: Slack,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    spec = StackSpec.on_free_ports(
        PROJECT,
        tmp_path_factory.mktemp("example-package"),
        hook_modules="hooks.contacts,hooks.notify",
        with_ingest=True,
        # As .env.local gives them to make run, and hook_settings / hook_secrets when deployed.
        extra_env={"NOTIFY_SLACK_WEBHOOK_URL": slack.url, "NOTIFY_CHANNEL": "#tests"},
        delivery=Delivery(minimum_backoff_seconds=1, maximum_backoff_seconds=2),
    )
    with running_stack(spec, emulators) as s:
        yield s


def send_twice(stack: Stack, event_type: str, **changes: Any) -> str:
    """Deliver a signed webhook twice with one svix-id; its id. A sync run of its own (the
    ledger keys a sync.complete on its run)."""
    payload = {**sample(event_type), **changes}
    if "run_id" in payload and "run_id" not in changes:
        payload["run_id"] = f"run-{uuid.uuid4().hex}"
    body = json.dumps(payload).encode()
    webhook_id = f"msg_{uuid.uuid4().hex}"
    for _ in range(2):
        headers = signed_headers(body, webhook_id=webhook_id)
        response = requests.post(stack.spec.ingest_url, data=body, headers=headers, timeout=15)
        assert response.status_code == 204, response.text
    return webhook_id


def settle(condition: Callable[[], Any], what: str) -> Any:
    return wait_for(condition, timeout=45, what=what)


def handled_twice(stack: Stack, service: str, webhook_id: str) -> bool:
    """The service answered both copies: once by acting, once as a duplicate."""
    lines = [
        json.loads(line) for line in stack.services[service].log().splitlines() if line[:1] == "{"
    ]
    events = [line.get("event") for line in lines if line.get("webhook_id") == webhook_id]
    return "event_handled" in events and "duplicate_ignored" in events


def test_the_example_package_runs_every_kind_of_hook_once(
    stack: Stack, slack: Slack, firestore_client: firestore.Client
) -> None:
    assert set(stack.spec.routing.routes["hooks"].event_types) == {"sync.paused"}
    who = f"cust-{uuid.uuid4().hex[:8]}"
    db = firestore_client

    # An `on` hook: a paused sync is posted to the channel.
    paused = send_twice(stack, "sync.paused", customer_id=who, pause_reason="Manually paused")
    settle(lambda: any(paused in text for text in slack.texts()), "the pause to reach Slack")

    # An alert hook: a failed sync is an alert, posted with its kind.
    failed = send_twice(stack, "sync.complete", customer_id=who, result="ERROR")
    settle(lambda: any(failed in text for text in slack.texts()), "the alert to reach Slack")

    # A transform: the destination's rows become crm_contacts.
    rows = contacts.source_rows(who, "hubspot", "contact")
    rows.document("row-1").set(
        {"_supaglue_last_modified_at": "2026-11-01T12:00:00Z", "email": "ada@example.com"}
    )
    send_twice(stack, "sync.complete", customer_id=who, result="SUCCESS")
    target = db.collection(contacts.CONTACTS).document(doc_id(who, "hubspot", "row-1"))
    settle(lambda: target.get().exists, "the transform to upsert the contact")
    assert (target.get().to_dict() or {})["email"] == "ada@example.com"

    # A cleanup: deleting the connection forgets the customer.
    send_twice(stack, "connection.deleted", customer_id=f"app:{who}", provider_name="hubspot")
    settle(lambda: not target.get().exists, "the cleanup to delete the contact")

    # Every webhook came twice; once both copies were handled, every hook had acted once.
    for service, webhook_id in (("hooks", paused), ("alerts", failed)):
        settle(
            functools.partial(handled_twice, stack, service, webhook_id),
            f"{service} to handle both copies",
        )
    texts = slack.texts()
    # The pause reached both hooks, the `on` hook and the alert hook (a pause is an alert).
    [on_hook, pause_alert] = sorted(t for t in texts if paused in t)
    assert on_hook.startswith("Sync of contact for customer")
    assert pause_alert.startswith("[WARNING] sync_paused: sync of contact paused for customer")
    [alert] = [t for t in texts if failed in t]
    assert alert.startswith("[ERROR] sync_failed: sync of contact failed for customer")


def test_the_hooks_service_loaded_notify_with_its_secret(stack: Stack, slack: Slack) -> None:
    log = stack.services["hooks"].log()
    assert "settings_invalid" not in log
    # The secret is a URL: it reaches the hook, and never a log line.
    assert slack.url not in log
    assert all(slack.url not in process.log() for process in stack.processes())
