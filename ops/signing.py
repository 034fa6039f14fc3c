"""Sign webhook bodies exactly as Svix does, with the `svix` package itself."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from svix.webhooks import Webhook

# A fixed secret for local runs and tests only; never deploy it.
DEV_SECRET = "whsec_ZGV2ZWxvcG1lbnQtb25seS1zaWduaW5nLWtleQ=="  # noqa: S105 (public on purpose)


def new_webhook_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def signed_headers(
    body: bytes,
    secret: str = DEV_SECRET,
    *,
    webhook_id: str | None = None,
    timestamp: int | None = None,
    branded: bool = True,
) -> dict[str, str]:
    """Headers of a Svix delivery of `body` (the `webhook-*` names if not branded)."""
    webhook_id = webhook_id or new_webhook_id()
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = Webhook(secret).sign(
        webhook_id, datetime.fromtimestamp(timestamp, tz=UTC), body.decode()
    )
    prefix = "svix" if branded else "webhook"
    return {
        "Content-Type": "application/json",
        f"{prefix}-id": webhook_id,
        f"{prefix}-timestamp": str(timestamp),
        f"{prefix}-signature": signature,
    }
