"""A service's clients, created on first use and shared by its request threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar, cast

from google.cloud import firestore, pubsub_v1  # type: ignore[attr-defined]  # untyped package

from handlers.auth import OidcVerifier
from handlers.backfill_store import BackfillStore
from handlers.hooks import HookRegistry
from handlers.ledger import Ledger
from handlers.tasks_queue import BackfillQueue
from shared.log import JsonLogger
from shared.settings import HandlerSettings

T = TypeVar("T")


class Runtime:
    """No network at construction: each client is created by the first request that needs it."""

    def __init__(self, settings: HandlerSettings, *, hooks: HookRegistry, logger: JsonLogger):
        self.settings = settings
        self.hooks = hooks
        self.logger = logger
        self.verifier = (
            None
            if settings.push_auth_disabled
            else OidcVerifier(
                audience=str(settings.push_audience),
                allowed_emails=[str(settings.push_service_account)],
            )
        )
        self.backfills = BackfillQueue(settings) if settings.backfills_configured else None
        # Re-entrant: creating the ledger creates the Firestore client it is built on.
        self._lock = threading.RLock()
        self._clients: dict[str, Any] = {}

    def _once(self, name: str, create: Callable[[], T]) -> T:
        client = self._clients.get(name)
        if client is None:
            with self._lock:
                client = self._clients.get(name)
                if client is None:
                    client = self._clients[name] = create()
        return cast(T, client)

    @property
    def firestore(self) -> firestore.Client:
        return self._once(
            "firestore",
            lambda: firestore.Client(
                project=self.settings.google_cloud_project,
                database=self.settings.firestore_database,
            ),
        )

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.ledger_lease_seconds)

    @property
    def ledger(self) -> Ledger:
        return self._once(
            "ledger",
            lambda: Ledger(
                self.firestore,
                lease_seconds=self.settings.ledger_lease_seconds,
                retention=timedelta(days=self.settings.ledger_retention_days),
            ),
        )

    @property
    def backfill_store(self) -> BackfillStore:
        return self._once("backfill_store", lambda: BackfillStore(self.firestore, lease=self.lease))

    @property
    def publisher(self) -> pubsub_v1.PublisherClient:
        """For dead letters only, which are rare: the maintained client, sending each at once."""
        return self._once(
            "publisher",
            lambda: pubsub_v1.PublisherClient(
                batch_settings=pubsub_v1.types.BatchSettings(max_messages=1)
            ),
        )
