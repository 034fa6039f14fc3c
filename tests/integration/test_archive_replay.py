"""`replay --from-archive`: files in the format a Cloud Storage subscription writes, read back
and republished to the emulator with their attributes, within the time window, once each."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import pytest

from ops import pubsub_admin
from ops.cli.main import main
from ops.local.emulators import Emulator
from shared.log import TraceContext
from shared.names import Names
from shared.samples import sample_bytes
from tests.integration.conftest import PROJECT

pytestmark = pytest.mark.integration

# Pub/Sub's documentation, Cloud Storage subscriptions, Avro format with write_metadata: typed
# here from the documentation, not imported, so the reader is checked against it.
DOCUMENTED_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "PubsubMessage",
    "fields": [
        {"name": "subscription_name", "type": "string"},
        {"name": "message_id", "type": "string"},
        {"name": "publish_time", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "attributes", "type": {"type": "map", "values": "string"}},
        {"name": "data", "type": "bytes"},
    ],
}
NOW = datetime.now(UTC).replace(microsecond=0)


def record(message_id: str, hours_ago: float, event_type: str, **attributes: str) -> dict[str, Any]:
    return {
        "subscription_name": f"projects/{PROJECT}/subscriptions/supaglue-events-archive",
        "message_id": message_id,
        "publish_time": NOW - timedelta(hours=hours_ago),
        "attributes": {"event_type": event_type, "webhook_id": f"msg_{message_id}", **attributes},
        "data": sample_bytes(event_type),
    }


def write(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        fastavro.writer(out, fastavro.parse_schema(DOCUMENTED_SCHEMA), records)


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    # As the subscription names them: <prefix><datetime>_<uuid><suffix>.
    root = tmp_path / "archive"
    write(
        root / "events/2026-01-01T00:00:00+00:00_a.avro",
        [
            record("1", 900, "sync.complete", customer_id="c1"),  # long past Pub/Sub's 31 days
            record("2", 48, "connection.created"),
            record("3", 2, "sync.complete"),
        ],
    )
    # A subscription may write a message twice; and one published outside the window.
    write(
        root / "events/2026-01-01T00:05:00+00:00_b.avro",
        [record("3", 2, "sync.complete"), record("4", 2000, "sync.paused")],
    )
    return root


def events_topic(pubsub_emulator: Emulator) -> tuple[Names, Any, str]:
    names = Names(f"a{uuid.uuid4().hex[:8]}")
    publisher = pubsub_admin.publisher_client(pubsub_emulator.host_port)
    subscriber = pubsub_admin.subscriber_client(pubsub_emulator.host_port)
    pubsub_admin.ensure_topic(publisher, PROJECT, names.events_topic)
    watch = pubsub_admin.ensure_pull_subscription(
        subscriber, PROJECT, names.events_topic, names.watch_subscription(names.events_topic)
    )
    return names, subscriber, watch


def replay(pubsub_emulator: Emulator, names: Names, archive: Path, *args: str) -> int:
    common = ["--project", PROJECT, "--emulator-host", pubsub_emulator.host_port]
    return main(
        [
            "replay",
            "--from-archive",
            "--archive",
            str(archive),
            "--prefix",
            names.prefix,
            *common,
            *args,
        ]
    )


def received(subscriber: Any, watch: str) -> dict[str, pubsub_admin.PulledMessage]:
    messages: list[pubsub_admin.PulledMessage] = []
    for _ in range(20):
        batch = pubsub_admin.pull(subscriber, watch)
        if not batch and messages:
            break
        messages += batch
    return {m.attributes["webhook_id"]: m for m in messages}


def test_archived_events_are_republished_with_their_attributes_once(
    pubsub_emulator: Emulator, archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names, subscriber, watch = events_topic(pubsub_emulator)
    assert replay(pubsub_emulator, names, archive, "--since", "1000h", "--until", "1h") == 0
    got = received(subscriber, watch)
    assert sorted(got) == ["msg_1", "msg_2", "msg_3"]
    attributes = dict(got["msg_1"].attributes)
    # A trace of its own, linked to the webhook it repeats (the record carried no trace).
    assert TraceContext.from_traceparent(attributes.pop("traceparent")) is not None
    assert attributes == {
        "event_type": "sync.complete",
        "webhook_id": "msg_1",
        "customer_id": "c1",
        "linked_webhook_id": "msg_1",
    }
    assert got["msg_1"].data == sample_bytes("sync.complete")
    assert json.loads(got["msg_2"].data)["webhook_event_type"] == "connection.created"
    assert "replayed 3, failed 0" in capsys.readouterr().out


def test_since_until_route_and_dry_run_choose_what_is_republished(
    pubsub_emulator: Emulator, archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names, subscriber, watch = events_topic(pubsub_emulator)
    assert replay(pubsub_emulator, names, archive, "--since", "100h", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "would replay 2, failed 0" in out
    assert pubsub_admin.pull(subscriber, watch) == []
    assert replay(pubsub_emulator, names, archive, "--since", "100h", "--route", "sync-state") == 0
    assert sorted(received(subscriber, watch)) == ["msg_3"]
    assert "replayed 1, skipped 1 (not --route sync-state)" in capsys.readouterr().out


def test_replay_wants_a_seek_or_the_archive_and_a_real_route(
    pubsub_emulator: Emulator, archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names, _, _ = events_topic(pubsub_emulator)
    assert replay(pubsub_emulator, names, archive, "--since", "1h", "--route", "nope") == 2
    assert "--route nope is not a route" in capsys.readouterr().err
    assert main(["replay", "--since", "1h", "--until", "1m", "--subscription", "alerts"]) == 2
    assert "--until go with --from-archive only" in capsys.readouterr().err
    assert main(["replay", "--since", "1h"]) == 2
    assert "needs --subscription (a seek) or --from-archive" in capsys.readouterr().err
