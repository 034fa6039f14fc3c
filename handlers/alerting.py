"""Alerts: every alert decision the pipeline makes, as one typed object.

An alert is written as a log line whose `event` is its kind (the log-based
metrics and alert policies in terraform/monitoring.tf count those lines), and
handed to every `@hooks.alert` function that wants its kind: post it to Slack,
open a ticket. Each alert hook runs once per alert, with the ledger's
guarantees; while hooks are registered the line itself is written once too, so
an alert hook that asks for a retry does not repeat the line.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Protocol

from shared.log import Severity


class AlertKind(StrEnum):
    SYNC_FAILED = "sync_failed"
    # The Nth failed sync in a row of one (customer, provider, object), and every one after.
    SYNC_FAILED_REPEATEDLY = "sync_failed_repeatedly"
    SYNC_PAUSED = "sync_paused"
    RECONNECT_REQUIRED = "reconnect_required"
    CONNECTION_ERROR = "connection_error"
    BACKFILL_FAILED = "backfill_failed"


SEVERITIES: Final[dict[AlertKind, Severity]] = {
    AlertKind.SYNC_FAILED: "ERROR",
    AlertKind.SYNC_FAILED_REPEATEDLY: "CRITICAL",
    AlertKind.SYNC_PAUSED: "WARNING",
    AlertKind.RECONNECT_REQUIRED: "WARNING",
    # Supaglue also sends a failed connection.created on a re-authorisation that then succeeds.
    AlertKind.CONNECTION_ERROR: "WARNING",
    AlertKind.BACKFILL_FAILED: "ERROR",
}


@dataclass(frozen=True)
class Alert:
    """What went wrong, for whom, and the webhook to trace it by."""

    kind: AlertKind
    message: str
    customer_id: str
    provider_name: str
    connection_id: str | None
    object: str | None
    # Supaglue's error message or pause reason, or the hook's error for a failed backfill.
    reason: str | None
    webhook_id: str
    run_id: str | None = None
    consecutive_failures: int | None = None
    backfill_id: str | None = None
    provider_id: str | None = None

    @property
    def severity(self) -> Severity:
        return SEVERITIES[self.kind]

    @property
    def reason_field(self) -> str:
        """The name the log line gives `reason`, as Supaglue names it."""
        if self.kind in (AlertKind.SYNC_PAUSED, AlertKind.RECONNECT_REQUIRED):
            return "pause_reason"
        return "error_message"

    def log_fields(self) -> dict[str, Any]:
        """The line's fields beside its event and severity (the writer adds `webhook_id`)."""
        return {
            "customer_id": self.customer_id,
            "provider_name": self.provider_name,
            "connection_id": self.connection_id,
            "object": self.object,
            self.reason_field: self.reason,
            "run_id": self.run_id,
            "consecutive_failures": self.consecutive_failures,
            "backfill_id": self.backfill_id,
            "provider_id": self.provider_id,
        }


class LogLine(Protocol):
    def __call__(self, severity: Severity, event: str, message: str, **fields: Any) -> None: ...


class AlertHook(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def fn(self) -> Callable[..., Any]: ...


# Runs a step at most once for the delivery or task at hand (HandlerContext.once, Ledger.once).
Once = Callable[[str, Callable[[], object]], bool]


def raise_alert(alert: Alert, *, log: LogLine, hooks: Sequence[AlertHook], once: Once) -> None:
    """Write the alert's line, then hand it to each alert hook that wants it, once each."""

    def write() -> None:
        log(alert.severity, alert.kind.value, alert.message, **alert.log_fields())

    if not hooks:
        write()
        return
    once(f"alert:{alert.kind.value}", write)
    for hook in hooks:
        once(f"alert:{alert.kind.value}:{hook.name}", functools.partial(hook.fn, alert))
