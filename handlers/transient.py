"""Which unexpected exceptions are the storage being busy rather than a bug."""

from __future__ import annotations

from google.api_core import exceptions as api_exceptions

_TRANSIENT_RPC_ERRORS = (
    api_exceptions.Aborted,
    api_exceptions.DeadlineExceeded,
    api_exceptions.InternalServerError,
    api_exceptions.ResourceExhausted,
    api_exceptions.ServiceUnavailable,
    api_exceptions.RetryError,
)


def is_transient(exc: BaseException) -> bool:
    """True for Firestore or gRPC trouble that a later attempt can get past.

    The Firestore client gives up on a contended transaction with a bare
    ValueError("Failed to commit transaction in N attempts"); that is
    contention, not a bug, and deserves a quiet retry instead of an ERROR.
    """
    if isinstance(exc, _TRANSIENT_RPC_ERRORS):
        return True
    return isinstance(exc, ValueError) and str(exc).startswith("Failed to commit transaction")
