"""Why a webhook request was not stored, and the status code each reason earns.

`status` and `event` live on the error types so that the entry point maps
every failure to a response in one place, without a chain of special cases.
"""

from __future__ import annotations

from typing import ClassVar

from shared.errors import PermanentError, RetryableError, crash_report
from shared.log import Severity


class RequestRejected(PermanentError):
    """The request itself is wrong; the same request will be refused again."""

    status: ClassVar[int] = 400
    event: ClassVar[str] = "request_rejected"
    severity: ClassVar[Severity] = "WARNING"


class MethodNotAllowed(RequestRejected):
    status = 405
    event = "method_not_allowed"


class PayloadTooLarge(RequestRejected):
    status = 413
    event = "payload_too_large"


class BodyIncomplete(RequestRejected):
    """The sender went away before the whole body arrived; nobody hears the answer."""

    status = 400
    event = "body_incomplete"


class SignatureRejected(RequestRejected):
    """Missing or malformed signature headers, stale timestamp, or no matching signature."""

    status = 401
    event = "signature_rejected"


class PublishFailed(RetryableError):
    """Pub/Sub did not confirm the publish in time: nothing may be promised."""

    status: ClassVar[int] = 503
    event: ClassVar[str] = "publish_failed"
    severity: ClassVar[Severity] = "ERROR"


class Crashed(RetryableError):
    """Something the code did not expect (a bug): 500, so Svix retries, and the stack in the
    line, for Error Reporting."""

    status: ClassVar[int] = 500
    event: ClassVar[str] = "ingest_crashed"
    severity: ClassVar[Severity] = "ERROR"

    def __init__(self, cause: Exception) -> None:
        summary, self.stack = crash_report(cause)
        super().__init__(summary)


IngestError = RequestRejected | PublishFailed | Crashed
