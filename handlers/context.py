"""What a handler function receives besides its event."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.cloud.firestore import Client, Transaction, transactional

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
    _claim: Claim
    backfill_store: BackfillStore
    settings: HandlerSettings
    # Set on services that schedule backfills (TASKS_* settings).
    backfills: BackfillQueue | None = None
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

    def once(self, step: str, work: Callable[[], object]) -> bool:
        """Run one step of this delivery at most once, however often the delivery is retried.

        For effects outside Firestore that a later failure of the same delivery must not
        repeat: each alert hook, each `on` hook. False when it had already taken effect.
        """
        return self._ledger.once(f"{self.handler}:{step}", self.webhook_id, work)

    def commit(self, work: Callable[[Transaction], T]) -> T:
        """Run Firestore reads and writes and mark the event done, atomically.

        `work` may run more than once (Firestore retries contended
        transactions), so it must only read and write through the transaction.
        If the commit fails nothing of it is stored and the event is not done.
        """

        @transactional
        def run(transaction: Transaction) -> T:
            # Firestore wants every read before the first write: check the lease first.
            self._ledger.check_lease(self._claim, transaction)
            result = work(transaction)
            self._ledger.mark_done(self._claim, transaction)
            return result

        result: T = run(self.firestore.transaction())
        self.completed = True
        return result
