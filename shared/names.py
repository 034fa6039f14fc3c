"""Every resource name of a deployment, derived from its one prefix.

Terraform names the same resources in terraform/routing.tf, and a test
evaluates that file and compares it with this module; the handlers, the
operator CLI and the local stack all look names up here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

DEFAULT_PREFIX: Final = "supaglue"


@dataclass(frozen=True)
class Names:
    prefix: str = DEFAULT_PREFIX

    @property
    def events_topic(self) -> str:
        return f"{self.prefix}-events"

    @property
    def quarantine_topic(self) -> str:
        return f"{self.prefix}-quarantine"

    def dead_letter_topic(self, route: str) -> str:
        return f"{self.prefix}-{route}-dead-letter"

    def subscription(self, route: str) -> str:
        """The route's push subscription on the events topic."""
        return f"{self.prefix}-{route}"

    def watch_subscription(self, topic: str) -> str:
        """The pull subscription people read a topic through (`ops watch`, `ops dlq`)."""
        return f"{topic}-watch"

    def service(self, service: str) -> str:
        """The Cloud Run service, and its service account's id, of a routing-table service."""
        return f"{self.prefix}-{service}"

    @property
    def ingest_function(self) -> str:
        return f"{self.prefix}-ingest"

    @property
    def tasks_queue(self) -> str:
        return f"{self.prefix}-backfills"

    @property
    def webhook_secret(self) -> str:
        return f"{self.prefix}-webhook-secrets"

    @property
    def supaglue_api_key_secret(self) -> str:
        """The Secret Manager secret holding Supaglue's management API key (the reconciler's)."""
        return f"{self.prefix}-supaglue-api-key"

    @property
    def scheduler_account(self) -> str:
        """The service account Cloud Scheduler calls the reconciler as."""
        return f"{self.prefix}-scheduler"

    @property
    def reconcile_job(self) -> str:
        """The Cloud Scheduler job that starts a reconciliation pass."""
        return f"{self.prefix}-reconcile"

    @property
    def archive_subscription(self) -> str:
        """The Cloud Storage subscription that archives every event past Pub/Sub's retention."""
        return f"{self.events_topic}-archive"

    def archive_bucket(self, project: str) -> str:
        """Bucket names are global: the project's id keeps them apart."""
        return f"{project}-{self.prefix}-archive"
