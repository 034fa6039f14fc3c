"""One root exception and the two kinds every caller must tell apart.

Whether a failure is worth retrying decides the status code, and that
decision is made from these types in one place per entry point.
"""

from __future__ import annotations

import traceback
from typing import Final

# Error Reporting reads a crash's stack from its log line; a deep one keeps its end, the frames
# nearest the raise, and the line stays far below Cloud Logging's entry limit.
STACK_MAX_CHARS: Final = 4000


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


def crash_report(exc: BaseException) -> tuple[str, str]:
    """What a crash line says of `exc`: a one-line summary, and its traceback as Python prints
    it (the last STACK_MAX_CHARS)."""
    stack = "".join(traceback.format_exception(exc))[-STACK_MAX_CHARS:]
    return f"{type(exc).__name__}: {exc}", stack
