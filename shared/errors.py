"""One root exception and the two kinds every caller must tell apart.

Whether a failure is worth retrying decides the status code, and that
decision is made from these types in one place per entry point.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Root of every error this project raises on purpose."""


class PermanentError(PipelineError):
    """Retrying the same input cannot succeed: refuse it, or set it aside."""


class RetryableError(PipelineError):
    """A later attempt with the same input may succeed: make the sender retry."""


class InvalidEvent(PermanentError):
    """A verified body that is not a valid event; `reason` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
