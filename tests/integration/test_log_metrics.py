"""Every log-based metric in terraform/monitoring.tf counts a line the code really writes.

Each case runs the code path that should be counted (real apps, real emulators), captures the
JSON lines it writes to stdout, and evaluates the metric's filter against them the way Cloud
Logging reads such a line: `jsonPayload.*` is the line's own fields, `labels.*` its
`logging.googleapis.com/labels`, `severity` its severity. A renamed `event` on either side
fails here.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from handlers.hooks import BackfillChunk, ChunkResult, PermanentError
from handlers.main import create_service_app
from ops import pubsub_admin
from ops.local.emulators import Emulator
from ops.local.fake_supaglue import DEV_API_KEY, FakeSupaglue
from ops.signing import signed_headers
from shared.log import LABELS_KEY
from shared.names import Names
from shared.samples import sample_bytes
from shared.settings import ReconcilerSettings
from tests.conftest import configured_ingest_client
from tests.integration.conftest import PROJECT
from tests.integration.harness import Harness
from tests.integration.test_worker import WorkerHarness, worker  # noqa: F401  (fixture)
from tests.terraform.module import literal, load

pytestmark = pytest.mark.integration

Line = dict[str, Any]
SEVERITIES = ["DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT"]
_CLAUSE = re.compile(r'^([A-Za-z_][\w.]*)\s*(>=|=)\s*("(?:[^"\\]|\\.)*"|[A-Z]+)$')


def metric_filters() -> dict[str, str]:
    return {name: literal(m["filter"]) for name, m in load().locals["log_metrics"].items()}


def field(line: Line, path: str) -> Any:
    scope, _, rest = path.partition(".")
    if path == "severity":
        return line.get("severity")
    if scope == "jsonPayload":
        value: Any = line
    elif scope == "labels":
        value = line.get(LABELS_KEY, {})
    else:
        pytest.fail(
            f"the filter test cannot evaluate {path!r}: keep filters to the subset it reads"
        )
    for key in rest.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def matches(log_filter: str, line: Line) -> bool:
    """Cloud Logging's filter, for ANDed `field=value` and `severity>=LEVEL` comparisons."""
    for clause in log_filter.split(" AND "):
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


def sync_failed(harness: Callable[[str], Harness], **_: Any) -> None:
    h = harness("alerts")
    h.push("alerts", h.payload("sync.complete", result="ERROR", error_message="token expired"))
    # Not counted: a successful sync, a plain pause.
    h.push("alerts", h.payload("sync.complete"))
    h.push("alerts", h.payload("sync.paused", pause_reason="Manually paused by user"))


def sync_failed_repeatedly(harness: Callable[[str], Harness], **_: Any) -> None:
    h = harness("alerts")
    threshold = h.runtime.settings.repeated_failure_threshold
    # Not counted: the failures before the threshold's; counted: the one that reaches it.
    for offset in range(threshold):
        # Each its own run (a payload's run id keys its effect).
        payload = h.payload("sync.complete", result="ERROR")
        h.push("alerts", payload, sent_at=1_800_000_000 + offset)


def reconnect_required(harness: Callable[[str], Harness], **_: Any) -> None:
    h = harness("alerts")
    h.push("alerts", h.payload("sync.paused", pause_reason="Unauthorized: 401"))
    h.push("alerts", h.payload("sync.paused", pause_reason="Manually paused by user"))


def signature_rejected(**_: Any) -> None:
    client = configured_ingest_client()
    body = sample_bytes("sync.complete")
    headers = signed_headers(body, timestamp=int(time.time()))
    headers = {k: (v[:-4] + "AAA=" if k.endswith("signature") else v) for k, v in headers.items()}
    assert client.post("/", data=body, headers=headers).status_code == 401


def publish_failed(**_: Any) -> None:
    # Nothing listens on the discard port: Pub/Sub never confirms, the function answers 503.
    client = configured_ingest_client(PUBLISH_TIMEOUT_SECONDS="1")
    body = sample_bytes("sync.complete")
    response = client.post("/", data=body, headers=signed_headers(body, timestamp=int(time.time())))
    assert response.status_code == 503


def backfill_failed(worker: Callable[..., WorkerHarness], **_: Any) -> None:  # noqa: F811
    def hook(chunk: BackfillChunk) -> ChunkResult:
        raise PermanentError("the source rejects our credentials")

    assert worker(hook).run(0) == 204


def events_reconciled(pubsub_emulator: Emulator, firestore_emulator: Emulator, **_: Any) -> None:
    """A pass that recovers one run (and finds one recorded): one line for the recovery."""
    fake = FakeSupaglue().start()
    try:
        names = Names(f"r{uuid.uuid4().hex[:8]}")
        publisher = pubsub_admin.publisher_client(pubsub_emulator.host_port)
        pubsub_admin.ensure_topic(publisher, PROJECT, names.events_topic)
        fake.add_run(customer_id=f"cust-{uuid.uuid4().hex[:8]}")
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


PATHS: dict[str, Callable[..., None]] = {
    "sync_failed": sync_failed,
    "sync_failed_repeatedly": sync_failed_repeatedly,
    "reconnect_required": reconnect_required,
    "signature_rejected": signature_rejected,
    "publish_failed": publish_failed,
    "backfill_failed": backfill_failed,
    "events_reconciled": events_reconciled,
}


def test_every_metric_has_a_code_path_here() -> None:
    assert set(metric_filters()) == set(PATHS)


@pytest.mark.parametrize("metric", sorted(PATHS))
def test_the_metric_counts_exactly_the_line_its_code_path_writes(
    metric: str,
    harness: Callable[[str], Harness],
    worker: Callable[..., WorkerHarness],  # noqa: F811
    pubsub_emulator: Emulator,
    firestore_emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log_filter = metric_filters()[metric]
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host_port)
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator.host_port)
    capsys.readouterr()
    PATHS[metric](
        harness=harness,
        worker=worker,
        pubsub_emulator=pubsub_emulator,
        firestore_emulator=firestore_emulator,
    )
    written = lines(capsys)
    assert written, "the code path wrote no JSON line"
    counted = [line for line in written if matches(log_filter, line)]
    assert len(counted) == 1, (log_filter, [line.get("event") for line in written])
    assert counted[0]["event"] == metric


def test_the_evaluator_tells_lines_apart() -> None:
    line = {"event": "sync_failed", "severity": "ERROR", LABELS_KEY: {"component": "alerts"}}
    assert matches('jsonPayload.event="sync_failed" AND severity=ERROR', line)
    assert not matches('jsonPayload.event="sync_failed" AND severity=WARNING', line)
    assert matches("severity>=WARNING", line)
    assert not matches('labels.component="ingest"', line)
