"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import functions_framework
import pytest
from flask.testing import FlaskClient

from ops.signing import DEV_SECRET

# Fixtures that live in their own modules.
pytest_plugins = ["tests.oidc_issuer", "tests.integration.harness"]

REPO = Path(__file__).resolve().parent.parent
INGEST_SOURCE = str(REPO / "ingest_fn" / "main.py")


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    """Tests set settings through the environment; none may leak into the next."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def ingest_client() -> FlaskClient:
    """A test client of the real function app, loaded as Cloud Functions loads it."""
    app = functions_framework.create_app("ingest", INGEST_SOURCE)  # type: ignore[no-untyped-call]
    client: FlaskClient = app.test_client()
    return client


def configured_ingest_client(**overrides: str) -> FlaskClient:
    """The real function app with a complete configuration in the environment, as Cloud
    Functions gives it; `overrides` replace or add variables (_restore_environ undoes them)."""
    os.environ.update(
        {
            "WEBHOOK_SECRETS": DEV_SECRET,
            "GOOGLE_CLOUD_PROJECT": "unit-test",
            "EVENTS_TOPIC": "supaglue-events",
            "QUARANTINE_TOPIC": "supaglue-quarantine",
            # Nothing listens here: a publish that is not stubbed or expected fails loudly.
            "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",
            **overrides,
        }
    )
    return ingest_client()


def push_envelope(
    data: bytes,
    attributes: dict[str, str],
    *,
    message_id: str | None = None,
    delivery_attempt: int | None = None,
    subscription: str = "projects/test/subscriptions/test",
) -> bytes:
    """A Pub/Sub push request body, as a push subscription sends it."""
    envelope: dict[str, object] = {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attributes,
            "messageId": message_id or uuid.uuid4().hex,
            "publishTime": "2026-11-28T12:00:00.000Z",
        },
        "subscription": subscription,
    }
    if delivery_attempt is not None:
        envelope["deliveryAttempt"] = delivery_attempt
    return json.dumps(envelope).encode()


def examples(default: int) -> int:
    """Hypothesis examples per fuzz test; `make reliability` raises it (FUZZ_EXAMPLES)."""
    return int(os.environ.get("FUZZ_EXAMPLES", default))
