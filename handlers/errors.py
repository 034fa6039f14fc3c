"""What can end a delivery, and the status code, severity and log event each earns.

The push app and the backfill worker both answer through `disposition`: one
place where an outcome or an error becomes what Pub/Sub or Cloud Tasks hears.

    finished (done, duplicate, not mine, dead-lettered, chunk done)  -> 204, acknowledged
    retryable: busy, storage contended, crash, hook asked to retry   -> 503, delivered again
    lease lost after the work ran                                    -> 204, logged as ERROR
    not a task this worker can run                                   -> 204, logged as ERROR
    authentication failure                                           -> 401 / 403, before any work
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from handlers.transient import is_transient
from shared.errors import PermanentError, PipelineError, RetryableError, crash_report
from shared.log import Severity


class AlreadyDone(Exception):
    """The event already took effect on this route: acknowledged as a duplicate."""


class HandlerError(PipelineError):
    """A failure whose answer is decided by its type."""

    status: ClassVar[int] = 503
    severity: ClassVar[Severity] = "WARNING"
    event: ClassVar[str] = "handler_retry"


class Retry(HandlerError, RetryableError):
    """Try again later: Pub/Sub or Cloud Tasks delivers the same request again."""


class Busy(Retry):
    """Another attempt holds a live claim on this event or chunk."""

    event = "retry_later"


class StorageBusy(Retry):
    """Firestore or Pub/Sub is contended or unavailable for now."""

    event = "retry_later"


class CertificatesUnavailable(Retry):
    """Google's certificates could not be fetched: not the caller's fault."""

    event = "retry_later"


class Crashed(Retry):
    """Something unexpected was raised: retried, never acknowledged as if done, logged loudly."""

    severity = "ERROR"
    event = "handler_crashed"

    def __init__(self, message: str, *, stack: str | None = None) -> None:
        super().__init__(message)
        self.stack = stack


class NotSetAside(HandlerError, PermanentError):
    """A permanent failure that could not even be dead-lettered: keep it in Pub/Sub."""

    severity = "ERROR"
    event = "handler_failed"


class Unauthenticated(HandlerError, PermanentError):
    """No valid token: missing, malformed, forged, expired, or meant for someone else."""

    status = 401
    event = "unauthenticated"


class Forbidden(Unauthenticated):
    """A valid token, but not from the identity allowed to call this service."""

    status = 403


class LeaseLost(HandlerError):
    """Our lease expired and another attempt took over: our work may have run twice.

    Acknowledged (the other attempt finishes the job), but logged as an ERROR.
    """

    status = 204
    severity = "ERROR"
    event = "lease_lost"


class BadTask(HandlerError, PermanentError):
    """The request is not a task this worker can run; retrying the same bytes cannot help."""

    status = 204
    severity = "ERROR"
    event = "bad_task"


@dataclass(frozen=True)
class Finished:
    """A delivery that needs no retry; `event` names it in the log."""

    event: str
    severity: Severity = "INFO"
    detail: str | None = None


@dataclass(frozen=True)
class Disposition:
    status: int
    severity: Severity
    event: str


def as_handler_error(exc: Exception) -> HandlerError:
    """An exception the code did not raise on purpose, as the error it is treated as."""
    if isinstance(exc, HandlerError):
        return exc
    if isinstance(exc, RetryableError):
        # A hook asked for another attempt.
        return Retry(str(exc))
    if isinstance(exc, PermanentError):
        return NotSetAside(str(exc))
    if is_transient(exc):
        return StorageBusy(f"{type(exc).__name__}: {exc}")
    summary, stack = crash_report(exc)
    return Crashed(summary, stack=stack)


def disposition(result: Finished | HandlerError) -> Disposition:
    """The one place where an outcome or an error becomes a status code and a log event."""
    if isinstance(result, Finished):
        return Disposition(204, result.severity, result.event)
    return Disposition(result.status, result.severity, result.event)
