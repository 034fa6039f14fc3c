"""Every log-based metric in terraform/monitoring.tf counts a line the code really writes.

Each case runs the code path that should be counted (real apps, real emulators), captures the
JSON lines it writes to stdout, and evaluates the metric's filter against them the way Cloud
Logging reads such a line: `severity`, `httpRequest` and the `logging.googleapis.com/*` fields
become the entry's own (`labels.*` is `logging.googleapis.com/labels`), `jsonPayload.*` is the
rest. Filters and label extractors are Terraform's own values (terraform/metrics.tf, evaluated
by `terraform console`), and each case says the labels of every line that must be counted. A
renamed `event` or field on either side fails here.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from handlers.hooks import BackfillChunk, ChunkResult, HookRegistry, PermanentError
from handlers.main import create_service_app
from ops import pubsub_admin
from ops.local.emulators import Emulator
from ops.local.fake_supaglue import DEV_API_KEY, FakeSupaglue
from ops.signing import signed_headers
from shared.log import LABELS_KEY
from shared.names import Names
from shared.samples import sample_bytes
from shared.settings import IngestSettings, ReconcilerSettings, load_or_exit
from tests.conftest import configured_ingest_client
from tests.integration.conftest import PROJECT, FakeCloudTasks, ingest_env, make_topics
from tests.integration.harness import Harness
from tests.integration.test_worker import WorkerHarness, worker  # noqa: F401  (fixture)
from tests.terraform.module import computed

pytestmark = pytest.mark.integration

Line = dict[str, Any]
# The labels of the lines a case's metric must count, in the order they are written.
Counted = list[dict[str, str]]
SEVERITIES = ["DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT"]
_CLAUSE = re.compile(r'^([A-Za-z_][\w.]*)\s*(>=|=)\s*("(?:[^"\\]|\\.)*"|[A-Z]+)$')
_PRESENT = re.compile(r"^([A-Za-z_][\w.]*):\*$")
_EXTRACT = re.compile(r"^EXTRACT\(([A-Za-z_][\w.]*)\)$")
# The fields of a JSON line Cloud Logging makes the entry's own; the rest is jsonPayload.
ENTRY_FIELDS = {"severity", "httpRequest", "time"}
ENTRY_PREFIX = "logging.googleapis.com/"


def metric_filters() -> dict[str, str]:
    return {name: metric["filter"] for name, metric in computed("local.log_metrics").items()}


def label_extractors() -> dict[str, dict[str, str]]:
    extractors: dict[str, dict[str, str]] = computed("local.log_metric_label_extractors")
    return extractors


def field(line: Line, path: str) -> Any:
    scope, _, rest = path.partition(".")
    if path == "severity":
        return line.get("severity")
    if scope == "jsonPayload":
        value: Any = {
            k: v
            for k, v in line.items()
            if k not in ENTRY_FIELDS and not k.startswith(ENTRY_PREFIX)
        }
    elif scope == "labels":
        value = line.get(LABELS_KEY, {})
    elif scope == "httpRequest":
        value = line.get("httpRequest", {})
    else:
        pytest.fail(
            f"the filter test cannot evaluate {path!r}: keep filters to the subset it reads"
        )
    for key in rest.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def extracted(extractors: dict[str, str], line: Line) -> dict[str, str]:
    """The metric's labels of a line, as its label extractors read them (missing: empty)."""
    labels = {}
    for label, extractor in extractors.items():
        found = _EXTRACT.match(extractor)
        assert found, f"unsupported extractor {extractor!r}"
        value = field(line, found[1])
        labels[label] = "" if value is None else str(value)
    return labels


def matches(log_filter: str, line: Line) -> bool:
    """Cloud Logging's filter, for ANDed `field=value`, `severity>=LEVEL` and `field:*` (the
    field is present) comparisons."""
    for clause in log_filter.split(" AND "):
        present = _PRESENT.match(clause.strip())
        if present:
            if field(line, present[1]) is None:
                return False
            continue
        found = _CLAUSE.match(clause.strip())
        assert found, f"unsupported clause {clause!r} in {log_filter!r}"
        path, op, raw = found.groups()
        wanted = json.loads(raw) if raw.startswith('"') else raw
        actual = field(line, path)
        if op == ">=":
            assert path == "severity"
            if actual not in SEVERITIES or SEVERITIES.index(actual) < SEVERITIES.index(wanted):
                return False
        elif actual != wanted:
            return False
    return True


def lines(capsys: pytest.CaptureFixture[str]) -> list[Line]:
    return [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]


# --- the code paths, one per metric ---------------------------------------------------------
# Each runs what the metric should count (and things it should not) and returns the labels of
# the lines it must count, in order.


def sync_failed(harness: Callable[[str], Harness], **_: Any) -> Counted:
    h = harness("alerts")
    failed = h.payload("sync.complete", result="ERROR", error_message="token expired")
    h.push("alerts", failed)
    # Not counted: a successful sync, a plain pause.
    h.push("alerts", h.payload("sync.complete"))
    h.push("alerts", h.payload("sync.paused", pause_reason="Manually paused by user"))
    return [{"provider_name": failed["provider_name"]}]


def sync_failed_repeatedly(harness: Callable[[str], Harness], **_: Any) -> Counted:
    h = harness("alerts")
    threshold = h.runtime.settings.repeated_failure_threshold
    # Not counted: the failures before the threshold's; counted: the one that reaches it.
    for offset in range(threshold):
        # Each its own run (a payload's run id keys its effect).
        payload = h.payload("sync.complete", result="ERROR")
        h.push("alerts", payload, sent_at=1_800_000_000 + offset)
    return [{"provider_name": payload["provider_name"]}]


def reconnect_required(harness: Callable[[str], Harness], **_: Any) -> Counted:
    h = harness("alerts")
    lost = h.payload("sync.paused", pause_reason="Unauthorized: 401")
    h.push("alerts", lost)
    h.push("alerts", h.payload("sync.paused", pause_reason="Manually paused by user"))
    return [{"provider_name": lost["provider_name"]}]


def signature_rejected(**_: Any) -> Counted:
    client = configured_ingest_client()
    body = sample_bytes("sync.complete")
    headers = signed_headers(body, timestamp=int(time.time()))
    headers = {k: (v[:-4] + "AAA=" if k.endswith("signature") else v) for k, v in headers.items()}
    assert client.post("/", data=body, headers=headers).status_code == 401
    return [{}]


def publish_failed(**_: Any) -> Counted:
    # Nothing listens on the discard port: Pub/Sub never confirms, the function answers 503.
    client = configured_ingest_client(PUBLISH_TIMEOUT_SECONDS="1")
    body = sample_bytes("sync.complete")
    response = client.post("/", data=body, headers=signed_headers(body, timestamp=int(time.time())))
    assert response.status_code == 503
    return [{}]


def backfill_failed(worker: Callable[..., WorkerHarness], **_: Any) -> Counted:  # noqa: F811
    def hook(chunk: BackfillChunk) -> ChunkResult:
        raise PermanentError("the source rejects our credentials")

    assert worker(hook).run(0) == 204
    return [{}]


def events_reconciled(pubsub_emulator: Emulator, firestore_emulator: Emulator, **_: Any) -> Counted:
    """A pass that recovers one run (and finds one recorded): one line for the recovery."""
    fake = FakeSupaglue().start()
    try:
        names = Names(f"r{uuid.uuid4().hex[:8]}")
        publisher = pubsub_admin.publisher_client(pubsub_emulator.host_port)
        pubsub_admin.ensure_topic(publisher, PROJECT, names.events_topic)
        run = fake.add_run(customer_id=f"cust-{uuid.uuid4().hex[:8]}")
        settings = ReconcilerSettings(
            google_cloud_project=PROJECT,
            service="reconciler",
            topic_prefix=names.prefix,
            push_auth_disabled=True,
            firestore_database=f"metrics-{uuid.uuid4().hex[:8]}",
            supaglue_api_url=fake.url,
            supaglue_api_key=DEV_API_KEY,
            reconcile_settle_seconds=0,
        )
        client = create_service_app(settings).test_client()
        assert client.post("/reconcile").status_code == 200
    finally:
        fake.stop()
    return [{"provider_name": run["provider_name"]}]


def ingest_requests(
    pubsub_emulator: Emulator, monkeypatch: pytest.MonkeyPatch, **_: Any
) -> Counted:
    """Every answer the function gives, once each; not its start-up failure."""
    topics = make_topics(pubsub_emulator)
    client = configured_ingest_client(**ingest_env(topics, MAX_BODY_BYTES="2000"))

    def post(body: bytes, status: int, **headers: str) -> None:
        signed = {**signed_headers(body, timestamp=int(time.time())), **headers}
        assert client.post("/", data=body, headers=signed).status_code == status

    post(sample_bytes("sync.complete"), 204)
    post(json.dumps({"webhook_event_type": "sync.started", "customer_id": "c-7"}).encode(), 204)
    post(b"not json", 204)
    post(sample_bytes("sync.complete"), 401, **{"svix-signature": "v1,bm90IGEgc2lnbmF0dXJl"})
    post(b"x" * 2001, 413)
    assert client.get("/").status_code == 405
    unconfirmed = configured_ingest_client(PUBLISH_TIMEOUT_SECONDS="1")
    body = sample_bytes("sync.complete")
    answer = unconfirmed.post(
        "/", data=body, headers=signed_headers(body, timestamp=int(time.time()))
    )
    assert answer.status_code == 503
    # Not counted: the line a function that cannot start writes.
    monkeypatch.delenv("WEBHOOK_SECRETS")
    with pytest.raises(SystemExit):
        load_or_exit(IngestSettings, "ingest")
    events = [
        "webhook_published",
        "webhook_unknown_type",
        "webhook_quarantined",
        "signature_rejected",
        "payload_too_large",
        "method_not_allowed",
        "publish_failed",
    ]
    return [{"event": event} for event in events]


def deliveries(
    harness: Callable[[str], Harness],
    worker: Callable[..., WorkerHarness],  # noqa: F811
    **_: Any,
) -> Counted:
    """One line per push delivery, whatever became of it; not the lines handlers write on the
    way (sync_failed here), nor the worker's request line."""
    h = harness("alerts")
    failed = h.payload("sync.complete", result="ERROR")
    h.push("alerts", failed, webhook_id="msg_twice")
    h.push("alerts", failed, webhook_id="msg_twice")
    h.push("alerts", h.payload("connection.deleted"))
    h.push("alerts", b"{}", attributes={"event_type": "sync.complete", "webhook_id": "msg_empty"})
    assert worker(lambda chunk: ChunkResult(records=0, next_cursor=None)).run(0) == 204
    outcomes = ["event_handled", "duplicate_ignored", "not_mine", "dead_lettered"]
    return [{"route": "alerts", "event": outcome} for outcome in outcomes]


def backfill_scheduled(
    harness: Callable[..., Harness], cloud_tasks: FakeCloudTasks, **_: Any
) -> Counted:
    hooks = HookRegistry()
    hooks.backfill("contact")(lambda chunk: ChunkResult(records=0, next_cursor=None))
    h = harness(
        "backfills",
        hooks=hooks,
        tasks_location="local",
        tasks_queue="backfills",
        backfill_worker_url="http://127.0.0.1:9",
        cloud_tasks_emulator_host=cloud_tasks.host,
    )
    change = h.payload("object.field_mapping.updated", object_name="contact")
    # Counted once: Svix delivering the same webhook twice schedules one backfill.
    for _delivery in range(2):
        assert h.push("backfill-scheduler", change, webhook_id="msg_mapping").status_code == 204
    # Not counted: a change no backfill hook loads.
    h.push("backfill-scheduler", h.payload("object.field_mapping.updated", object_name="deal"))
    return [{}]


def backfill_completed(worker: Callable[..., WorkerHarness], **_: Any) -> Counted:  # noqa: F811
    pages = iter(
        [ChunkResult(records=10, next_cursor="10"), ChunkResult(records=3, next_cursor=None)]
    )
    run = worker(lambda chunk: next(pages))
    # Not counted: a chunk that leaves more to load; counted: the last.
    assert run.run(0) == 204
    assert run.run(1) == 204
    return [{}]


PATHS: dict[str, Callable[..., Counted]] = {
    "sync_failed": sync_failed,
    "sync_failed_repeatedly": sync_failed_repeatedly,
    "reconnect_required": reconnect_required,
    "signature_rejected": signature_rejected,
    "publish_failed": publish_failed,
    "backfill_failed": backfill_failed,
    "events_reconciled": events_reconciled,
    "ingest_requests": ingest_requests,
    "deliveries": deliveries,
    "backfill_scheduled": backfill_scheduled,
    "backfill_completed": backfill_completed,
}


def test_every_metric_has_a_code_path_here() -> None:
    assert set(metric_filters()) == set(PATHS)


@pytest.mark.parametrize("metric", sorted(PATHS))
def test_the_metric_counts_exactly_the_lines_its_code_path_writes(
    metric: str,
    harness: Callable[[str], Harness],
    worker: Callable[..., WorkerHarness],  # noqa: F811
    cloud_tasks: FakeCloudTasks,
    pubsub_emulator: Emulator,
    firestore_emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log_filter = metric_filters()[metric]
    extractors = label_extractors()[metric]
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host_port)
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator.host_port)
    capsys.readouterr()
    expected = PATHS[metric](
        harness=harness,
        worker=worker,
        cloud_tasks=cloud_tasks,
        pubsub_emulator=pubsub_emulator,
        firestore_emulator=firestore_emulator,
        monkeypatch=monkeypatch,
    )
    written = lines(capsys)
    assert written, "the code path wrote no JSON line"
    counted = [line for line in written if matches(log_filter, line)]
    assert [extracted(extractors, line) for line in counted] == expected, (
        log_filter,
        [line.get("event") for line in written],
    )
    assert all(expected_labels.keys() == extractors.keys() for expected_labels in expected)
    if "event" not in extractors:
        # A metric without an event label counts the event it is named after.
        assert {line["event"] for line in counted} == {metric}


def test_the_evaluator_tells_lines_apart() -> None:
    line = {
        "event": "sync_failed",
        "severity": "ERROR",
        LABELS_KEY: {"component": "alerts"},
        "httpRequest": {"status": 401},
    }
    assert matches('jsonPayload.event="sync_failed" AND severity=ERROR', line)
    assert not matches('jsonPayload.event="sync_failed" AND severity=WARNING', line)
    assert matches("severity>=WARNING", line)
    assert not matches('labels.component="ingest"', line)
    assert matches("httpRequest.status:* AND jsonPayload.event:*", line)
    # The entry's own fields are not in its payload.
    assert not matches("jsonPayload.httpRequest:*", line)
    assert not matches("jsonPayload.outcome:*", line)
    extractors = {"status": "EXTRACT(httpRequest.status)", "route": "EXTRACT(jsonPayload.handler)"}
    assert extracted(extractors, line) == {"status": "401", "route": ""}
