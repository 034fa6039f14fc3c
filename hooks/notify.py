"""Example hooks: tell a Slack channel about paused syncs and about every alert.

Slack's incoming webhooks take a JSON `{"text": ...}` POST at a URL that is
itself the secret. Enable it with HOOK_MODULES=hooks.contacts,hooks.notify and:

    NOTIFY_SLACK_WEBHOOK_URL   the incoming webhook's URL (a secret: Secret Manager when
                               deployed, through hook_secrets; .env.local for make run)
    NOTIFY_CHANNEL             where to post (optional, default #crm-sync)

Locally, `python -m ops receive` stands in for Slack and prints what it gets.
"""

from __future__ import annotations

from typing import Final

import requests
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from handlers.hooks import (
    Alert,
    HookContext,
    HookSettings,
    PermanentError,
    RetryableError,
    hooks,
)
from shared.events import SyncPaused

_TIMEOUT_SECONDS: Final = 10


@hooks.settings
class NotifySettings(HookSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFY_")

    slack_webhook_url: SecretStr
    channel: str = "#crm-sync"


@hooks.on("sync.paused")
def post_pause(event: SyncPaused, context: HookContext) -> None:
    """Every paused sync, with Supaglue's reason."""
    post(
        f"Sync of {event.object} for customer {event.customer_id} on {event.provider_name} "
        f"paused: {event.pause_reason or 'no reason given'} (webhook {context.webhook_id})"
    )


@hooks.alert
def post_alert(alert: Alert) -> None:
    """Every alert the pipeline raises: failed and repeatedly failing syncs, lost
    authorisations, failed connections and backfills."""
    post(f"[{alert.severity}] {alert.kind}: {alert.message} (webhook {alert.webhook_id})")


def post(text: str) -> None:
    """POST one message; Slack being down is worth a retry, a refusal is not."""
    settings = hooks.get(NotifySettings)
    try:
        response = requests.post(
            settings.slack_webhook_url.get_secret_value(),
            json={"text": text, "channel": settings.channel},
            timeout=_TIMEOUT_SECONDS,
        )
    except requests.RequestException as exc:
        # The URL is the secret: say what failed, never where.
        raise RetryableError(f"Slack did not answer: {type(exc).__name__}") from None
    if response.status_code == 429 or response.status_code >= 500:
        raise RetryableError(f"Slack answered {response.status_code}; retrying later")
    if response.status_code >= 400:
        raise PermanentError(f"Slack refused the message: {response.status_code}")
