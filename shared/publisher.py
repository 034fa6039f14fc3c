"""Publishing to Pub/Sub, confirmed and bounded in time.

One client per process, created on first use (after the server has forked
its worker, and never at import), shared by all request threads so that
concurrent requests fill the same batches. Used by the ingest function for
events and by the handlers for dead letters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry, if_exception_type
from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # untyped package
from google.cloud.pubsub_v1.publisher.exceptions import MessageTooLargeError
from google.cloud.pubsub_v1.types import (
    BatchSettings,
    LimitExceededBehavior,
    PublisherOptions,
    PublishFlowControl,
)

from shared.errors import PermanentError, RetryableError
from shared.settings import PUBSUB_MAX_REQUEST_BYTES

# Errors worth another attempt within the deadline; the rest fail at once.
_TRANSIENT = if_exception_type(
    api_exceptions.Aborted,
    api_exceptions.Cancelled,
    api_exceptions.DeadlineExceeded,
    api_exceptions.InternalServerError,
    api_exceptions.ResourceExhausted,
    api_exceptions.ServiceUnavailable,
    api_exceptions.Unknown,
)


class PublishFailed(RetryableError):
    """Pub/Sub did not confirm the publish in time: the message may not be stored."""


class MessageRejected(PermanentError):
    """Pub/Sub can never accept this message (too large)."""


@dataclass(frozen=True)
class PublisherConfig:
    project_id: str
    timeout_seconds: float
    batch_max_latency_seconds: float
    batch_max_messages: int
    max_outstanding: int


class ConfirmingPublisher:
    """Publishes one message and waits for Pub/Sub's confirmation, or raises."""

    def __init__(self, config: PublisherConfig) -> None:
        self._config = config
        self._client: pubsub_v1.PublisherClient | None = None
        self._lock = threading.Lock()

    def topic_path(self, topic_id: str) -> str:
        return str(pubsub_v1.PublisherClient.topic_path(self._config.project_id, topic_id))

    def publish(self, topic_path: str, data: bytes, attributes: Mapping[str, str]) -> str:
        """Return the message id once Pub/Sub has stored the message.

        Raises PublishFailed when Pub/Sub errs or does not confirm within the
        configured timeout, and MessageRejected when Pub/Sub can never take it.
        """
        deadline = time.monotonic() + self._config.timeout_seconds
        try:
            future = self._get_client().publish(topic_path, data, **attributes)
            message_id: str = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except MessageTooLargeError as exc:
            raise MessageRejected(str(exc)) from exc
        except Exception as exc:
            # Whatever stopped the confirmation (RPC error, retry deadline, flow
            # control, timeout), the message is not known to be stored: 503 makes
            # the sender retry, which is the only safe answer.
            raise PublishFailed(f"{type(exc).__name__}: {exc}") from exc
        return message_id

    def _get_client(self) -> pubsub_v1.PublisherClient:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._create_client()
        return self._client

    def _create_client(self) -> pubsub_v1.PublisherClient:
        config = self._config
        # Retries stop at our own deadline, so a publish we gave up on cannot
        # linger and pile up in memory while Pub/Sub is down.
        retry = Retry(
            predicate=_TRANSIENT,
            initial=0.05,
            maximum=1.0,
            multiplier=2.0,
            timeout=config.timeout_seconds,
        )
        return pubsub_v1.PublisherClient(
            batch_settings=BatchSettings(
                max_bytes=1_000_000,
                max_latency=config.batch_max_latency_seconds,
                max_messages=config.batch_max_messages,
            ),
            publisher_options=PublisherOptions(
                flow_control=PublishFlowControl(
                    message_limit=config.max_outstanding,
                    byte_limit=4 * PUBSUB_MAX_REQUEST_BYTES,
                    limit_exceeded_behavior=LimitExceededBehavior.ERROR,
                ),
                retry=retry,
                timeout=config.timeout_seconds,
            ),
        )
