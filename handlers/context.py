"""What a handler function receives besides its event.

A delivery starts unclaimed. A handler whose effects are all Firestore writes
commits them with `commit`: one transaction that also creates the ledger's
done entry. Before an effect outside Firestore (a hook, a Cloud Tasks
enqueue, an alert line), a handler calls `claim`, so that a concurrent
duplicate waits instead of repeating it; `once` claims by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.cloud.firestore import Client, Transaction

from handlers.backfill_store import BackfillStore
from handlers.envelope import PushMessage
from handlers.hooks import HookRegistry
from handlers.ledger import Claim, Ledger
from handlers.tasks_queue import BackfillQueue
from shared.contract import Attr
from shared.log import JsonLogger, Severity, TraceContext
from shared.settings import HandlerSettings

T = TypeVar("T")


@dataclass
class HandlerContext:
    handler: str
    message: PushMessage
    firestore: Client
    hooks: HookRegistry
    logger: JsonLogger
    trace: TraceContext | None
    _ledger: Ledger
    # What the ledger keys this event's effect on (the webhook id).
    _key: str
    backfill_store: BackfillStore
    settings: HandlerSettings
    # Set on services that schedule backfills (TASKS_* settings).
    backfills: BackfillQueue | None = None
    _claim: Claim | None = field(default=None, init=False)
    completed: bool = field(default=False, init=False)

    @property
    def webhook_id(self) -> str:
        return self.message.webhook_id

    @property
    def webhook_timestamp(self) -> int:
        """When Svix sent the webhook (Unix seconds); orders events that arrive out of order."""
        try:
            return int(self.message.attributes.get(Attr.WEBHOOK_TIMESTAMP, "0"))
        except ValueError:
            return 0

    def log(self, severity: Severity, event: str, message: str, **fields: Any) -> None:
        """A log line correlated with this delivery (trace, handler, webhook id)."""
        self.logger.log(
            severity,
            event,
            message,
            trace=self.trace,
            handler=self.handler,
            webhook_id=self.webhook_id,
            **fields,
        )

    def claim(self) -> None:
        """Hold this event before an effect outside Firestore: a concurrent duplicate is then
        Busy (retried later) instead of repeating the effect. AlreadyDone if it took effect."""
        if self._claim is not None:
            return
        self._claim = self._ledger.acquire(self.handler, self._key, received=self.webhook_id)

    def once(self, step: str, work: Callable[[], object]) -> bool:
        """Run one step of this delivery at most once, however often the delivery is retried.

        For effects outside Firestore that a later failure of the same delivery must not
        repeat: each alert hook, each `on` hook. False when it had already taken effect.
        """
        self.claim()
        return self._ledger.once(
            f"{self.handler}:{step}", self._key, work, received=self.webhook_id
        )

    def commit(self, work: Callable[[Transaction], T]) -> T:
        """Run Firestore reads and writes and mark the event done, atomically.

        `work` may run more than once (Firestore retries contended
        transactions), so it must only read and write through the transaction.
        If the commit fails nothing of it is stored and the event is not done.
        """
        if self._claim is not None:
            result = self._ledger.commit_claimed(self._claim, work)
        else:
            result = self._ledger.commit(self.handler, self._key, work, received=self.webhook_id)
        self.completed = True
        return result

    def finish(self) -> None:
        """Mark the event done if the handler did not commit."""
        if self.completed:
            return
        if self._claim is not None:
            self._ledger.complete(self._claim)
        else:
            self._ledger.record_done(self.handler, self._key, received=self.webhook_id)
        self.completed = True

    def release(self, error: str) -> None:
        """After a failed attempt: give the claim back, so a redelivery can run at once."""
        if self._claim is not None:
            self._ledger.release(self._claim, error=error)
