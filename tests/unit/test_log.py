"""Structured log lines in the shape Cloud Logging parses."""

from __future__ import annotations

import io
import json

import pytest

from shared.log import JsonLogger, TraceContext


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
            TraceContext("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", True),
        ),
        (
            {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"},
            TraceContext("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", False),
        ),
        (
            {"x-cloud-trace-context": "105445aa7843bc8bf206b12000100000/1;o=1"},
            TraceContext("105445aa7843bc8bf206b12000100000", "0000000000000001", True),
        ),
        (
            {"x-cloud-trace-context": "105445aa7843bc8bf206b12000100000"},
            TraceContext("105445aa7843bc8bf206b12000100000", None, False),
        ),
        ({"traceparent": "00-" + "0" * 32 + "-b7ad6b7169203331-01"}, None),
        ({"traceparent": "garbage", "x-cloud-trace-context": "nope"}, None),
        ({}, None),
    ],
)
def test_trace_context_from_headers(headers: dict[str, str], expected: TraceContext | None) -> None:
    assert TraceContext.from_headers(headers) == expected


def test_traceparent_wins_over_cloud_header() -> None:
    context = TraceContext.from_headers(
        {
            "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
            "x-cloud-trace-context": "c" * 32 + "/1;o=1",
        }
    )
    assert context is not None
    assert context.trace_id == "a" * 32


def test_one_line_with_severity_event_labels_and_trace() -> None:
    stream = io.StringIO()
    logger = JsonLogger("alerts", project_id="proj", labels={"service": "x"}, stream=stream)
    logger.log(
        "ERROR",
        "sync_failed",
        "sync failed",
        trace=TraceContext("a" * 32, "b" * 16, True),
        customer_id="c1",
        skipped=None,
    )
    [line] = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["severity"] == "ERROR"
    assert record["event"] == "sync_failed"
    assert record["message"] == "sync failed"
    assert record["customer_id"] == "c1"
    assert "skipped" not in record
    assert record["logging.googleapis.com/labels"] == {"component": "alerts", "service": "x"}
    assert record["logging.googleapis.com/trace"] == f"projects/proj/traces/{'a' * 32}"
    assert record["logging.googleapis.com/spanId"] == "b" * 16
    assert record["time"].endswith("Z")
