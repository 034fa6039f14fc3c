"""One JSON line per event on stdout, in the shape Cloud Logging parses.

Cloud Run and Cloud Functions turn each stdout line that is a JSON object
into a structured log entry: `severity` sets the level, `message` the text,
`logging.googleapis.com/trace` / `spanId` / `trace_sampled` correlate it with
the request's trace, and `logging.googleapis.com/labels` become entry labels.
A stable `event` field is what the log-based metrics filter on.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, TextIO

Severity = Literal["DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL"]

TRACE_KEY: Final = "logging.googleapis.com/trace"
SPAN_KEY: Final = "logging.googleapis.com/spanId"
SAMPLED_KEY: Final = "logging.googleapis.com/trace_sampled"
LABELS_KEY: Final = "logging.googleapis.com/labels"

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/(\d{1,20}))?(?:;o=([01]))?$")


@dataclass(frozen=True)
class TraceContext:
    """The trace a request belongs to, from its `traceparent` or Google's header."""

    trace_id: str
    span_id: str | None = None
    sampled: bool = False

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> TraceContext | None:
        """Parse W3C `traceparent` first, then `X-Cloud-Trace-Context`; None if neither.

        `headers` has lower-case keys, as the entry points pass them.
        """
        traceparent = (headers.get("traceparent") or "").strip().lower()
        match = _TRACEPARENT.match(traceparent)
        if match and set(match.group(1)) != {"0"}:
            flags = int(match.group(3), 16)
            return cls(match.group(1), match.group(2), bool(flags & 1))
        cloud = (headers.get("x-cloud-trace-context") or "").strip()
        match = _CLOUD_TRACE.match(cloud)
        if match:
            span = match.group(2)
            # Google's header carries the span id in decimal; the log field wants 16 hex digits.
            span_hex = f"{int(span):016x}" if span and int(span) < 2**64 else None
            return cls(match.group(1).lower(), span_hex, match.group(3) == "1")
        return None

    def log_fields(self, project_id: str | None) -> dict[str, object]:
        fields: dict[str, object] = {SAMPLED_KEY: self.sampled}
        trace = self.trace_id
        fields[TRACE_KEY] = f"projects/{project_id}/traces/{trace}" if project_id else trace
        if self.span_id:
            fields[SPAN_KEY] = self.span_id
        return fields


class JsonLogger:
    """Writes one JSON object per call; safe to share between threads."""

    def __init__(
        self,
        component: str,
        *,
        project_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self._project_id = project_id
        self._labels = {"component": component, **(labels or {})}
        self._stream = stream
        self._lock = threading.Lock()

    def log(
        self,
        severity: Severity,
        event: str,
        message: str,
        *,
        trace: TraceContext | None = None,
        **fields: object,
    ) -> None:
        record: dict[str, object] = {
            "severity": severity,
            "message": message,
            "event": event,
            "time": _rfc3339_now(),
            LABELS_KEY: self._labels,
        }
        if trace is not None:
            record.update(trace.log_fields(self._project_id))
        record.update({k: v for k, v in fields.items() if v is not None})
        line = json.dumps(record, default=str, separators=(",", ":"), ensure_ascii=False)
        stream = self._stream or sys.stdout
        with self._lock:
            stream.write(line + "\n")
            stream.flush()


def _rfc3339_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
