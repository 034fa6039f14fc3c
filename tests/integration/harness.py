"""A handler service's real app on the emulators, driven with push requests built here."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask.testing import FlaskClient
from google.cloud import firestore

from handlers.app import create_app
from handlers.hooks import HookRegistry
from handlers.runtime import Runtime
from handlers.services import handlers_for
from handlers.store import doc_id
from ops import pubsub_admin
from ops.local.emulators import Emulator
from shared.contract import delivery_attributes, event_attributes
from shared.events import parse_event
from shared.log import JsonLogger, TraceContext
from shared.routing import load_table
from shared.samples import sample
from shared.settings import HandlerSettings
from tests.conftest import push_envelope
from tests.integration.conftest import PROJECT


@dataclass
class Harness:
    client: FlaskClient
    runtime: Runtime
    hooks: HookRegistry
    db: firestore.Client
    subscriber: Any
    prefix: str
    customer: str = field(default_factory=lambda: f"cust-{uuid.uuid4().hex[:8]}")

    def payload(self, event_type: str, **changes: Any) -> dict[str, Any]:
        """A sample for this harness's customer; a sync run of its own (the ledger keys a
        sync.complete on its run)."""
        payload = {**sample(event_type), "customer_id": self.customer, **changes}
        if "run_id" in payload and "run_id" not in changes:
            payload["run_id"] = f"run-{uuid.uuid4().hex}"
        return payload

    def push(
        self,
        route: str,
        payload: dict[str, Any] | bytes,
        *,
        webhook_id: str | None = None,
        sent_at: int | None = None,
        attributes: dict[str, str] | None = None,
    ) -> Any:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        if attributes is None:
            attributes = delivery_attributes(
                webhook_id=webhook_id or f"msg_{uuid.uuid4().hex}",
                webhook_timestamp=str(sent_at or int(time.time())),
                source="supaglue",
                trace=TraceContext.new(),
            )
            if isinstance(payload, dict):
                attributes |= event_attributes(parse_event(payload))
        return self.client.post(f"/push/{route}", data=push_envelope(data, attributes))

    def dead_letters(self, route: str, *, expect: int = 1) -> list[pubsub_admin.PulledMessage]:
        path = self.subscriber.subscription_path(PROJECT, f"{self.prefix}-{route}-watch")
        received: list[pubsub_admin.PulledMessage] = []
        deadline = time.monotonic() + 10
        while len(received) < expect and time.monotonic() < deadline:
            received += pubsub_admin.pull(self.subscriber, path)
        received += pubsub_admin.pull(self.subscriber, path)
        return received

    def doc(self, collection: str, *parts: str) -> dict[str, Any]:
        return self.db.collection(collection).document(doc_id(*parts)).get().to_dict() or {}


@pytest.fixture
def harness(
    firestore_client: firestore.Client, pubsub_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Harness]:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host_port)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    publisher = pubsub_admin.publisher_client(pubsub_emulator.host_port)
    subscriber = pubsub_admin.subscriber_client(pubsub_emulator.host_port)
    for route in load_table().routes:
        topic = f"{prefix}-{route}-dead-letter"
        pubsub_admin.ensure_topic(publisher, PROJECT, topic)
        pubsub_admin.ensure_pull_subscription(subscriber, PROJECT, topic, f"{prefix}-{route}-watch")

    def build(
        service: str,
        *,
        hook_events: tuple[str, ...] = (),
        hooks: HookRegistry | None = None,
        **settings_fields: Any,
    ) -> Harness:
        """The service's app; the hooks route receives `hook_events`; `settings_fields` are
        the service's other settings (claim_every_delivery=True...)."""
        settings = HandlerSettings(
            google_cloud_project=PROJECT,
            service=service,
            topic_prefix=prefix,
            push_auth_disabled=True,
            **settings_fields,
        )
        hooks = hooks or HookRegistry()
        runtime = Runtime(settings, hooks=hooks, logger=JsonLogger(service, project_id=PROJECT))
        table = load_table().with_hook_events(hook_events)
        client = create_app(handlers_for(service, table), runtime).test_client()
        return Harness(client, runtime, hooks, firestore_client, subscriber, prefix)

    return build
