"""One reconciliation pass: compare Supaglue's API with what the pipeline recorded, publish
the difference.

Sync runs: the runs that ended since the watermark (less the overlap), page by page; a
finished run that no handler's ledger knows (keyed on the run, handlers/idempotency.py) was
never delivered, and its `sync.complete` is published. A run still in progress waits for a
later pass, as does one that ended within the settle time (its webhook may be in Svix's
first retries). Connections: for every customer the pipeline knows (the connection
registry and the sync state), the API's connections against the registry; one listed but
never recorded gets its `connection.created`, one recorded as active but no longer listed
its `connection.deleted`. Paused syncs: an object sync the API lists as paused whose sync state
is not paused gets its `sync.paused`, once a pass has seen it paused for the settle time.

A pass spends at most its budgets (requests, time), writes its progress after each page and
each customer, and the next pass continues from there. Two passes at once cannot double an
effect: they publish the same messages (deterministic webhook ids), the ledger lets each take
effect once, and the state's lease keeps the second from even starting.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from google.cloud import firestore

from handlers.lease import Lease
from handlers.ledger import Ledger
from handlers.reconcile import synthetic
from handlers.reconcile.api import (
    ApiRefused,
    ApiUnavailable,
    BudgetSpent,
    Connection,
    SupaglueApi,
    Sync,
    SyncRun,
)
from handlers.reconcile.store import Progress, Store
from handlers.reconcile.synthetic import Synthetic
from handlers.store import CONNECTIONS, SYNC_STATE, doc_id
from shared.log import JsonLogger
from shared.routing import routes_for
from shared.settings import ReconcilerSettings

# One line per recovered event; the log-based metric of the same name counts them.
RECOVERED: Final = "events_reconciled"
Publish = Callable[[Sequence[Synthetic]], None]
Stop = Literal["requests", "time", "api_unavailable"]


@dataclass
class Counts:
    """What one pass saw and did: the fields of its log line."""

    pages: int = 0
    runs_seen: int = 0
    runs_in_progress: int = 0
    runs_recent: int = 0
    runs_recorded: int = 0
    runs_unsupported: int = 0
    syncs_paused: int = 0
    customers_checked: int = 0
    connections_listed: int = 0
    deletions_unidentified: int = 0
    events_reconciled: int = 0
    requests: int = 0
    retries: int = 0
    # Why the pass stopped before covering everything; None when it covered everything.
    stopped_by: Stop | None = None
    watermark: str | None = None

    def fields(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Pass:
    settings: ReconcilerSettings
    db: firestore.Client
    ledger: Ledger
    store: Store
    api: SupaglueApi
    publish: Publish
    logger: JsonLogger
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    counts: Counts = field(default_factory=Counts)

    def run(self) -> bool:
        """One pass; False when another pass holds the lease (this one did nothing)."""
        begun = self.store.begin(self.now)
        if begun is None:
            return False
        lease, progress = begun
        try:
            self._runs(lease, progress)
            self._paused_syncs()
            self._connections(lease, progress)
        except BudgetSpent as spent:
            self.counts.stopped_by = spent.what
        except ApiUnavailable:
            self.counts.stopped_by = "api_unavailable"
            raise
        finally:
            self.counts.requests, self.counts.retries = self.api.budget.used, self.api.retried
            self.store.release(lease)
        return True

    # --- sync runs -------------------------------------------------------------

    def _runs(self, lease: Lease, progress: Progress) -> None:
        settings = self.settings
        overlap = timedelta(seconds=settings.reconcile_overlap_seconds)
        # The first pass starts now, less the overlap: history from before the pipeline ran
        # is not the pipeline's to recover.
        start = (progress.watermark or self.now) - overlap
        until = progress.window_until or self.now - timedelta(
            seconds=settings.reconcile_settle_seconds
        )
        if progress.window_until is None:
            self.store.save(lease, {"window_until": until, "cursor": None})
        pages = self.api.sync_runs(
            ended_after=synthetic.iso(start),
            page_size=settings.reconcile_page_size,
            cursor=progress.cursor,
        )
        try:
            for runs, following in pages:
                self.counts.pages += 1
                self._publish_missing(self._finished_runs(runs, until))
                self.store.save(lease, {"cursor": following})
        except ApiRefused:
            if progress.cursor is not None:
                # A kept cursor the API no longer takes would stop every pass: the next one
                # reads the window again from its start (the ledger skips what it recovered).
                self.store.save(lease, {"cursor": None})
            raise
        watermark = max(until, progress.watermark) if progress.watermark else until
        self.store.save(lease, {"watermark": watermark, "window_until": None, "cursor": None})
        self.counts.watermark = watermark.isoformat()

    def _finished_runs(self, runs: Iterable[SyncRun], until: datetime) -> list[Synthetic]:
        found = []
        for run in runs:
            self.counts.runs_seen += 1
            if run.status == "IN_PROGRESS" or run.end_timestamp is None:
                self.counts.runs_in_progress += 1
            elif synthetic.parse_time(run.end_timestamp) > until:
                self.counts.runs_recent += 1
            elif run.object is None:
                # An entity run (deprecated): its webhook's entity_name is not in the API.
                self.counts.runs_unsupported += 1
            else:
                found.append(synthetic.sync_complete(run))
        return found

    # --- paused syncs -------------------------------------------------------------

    def _paused_syncs(self) -> None:
        """Object syncs the API lists as paused that the sync state does not record paused."""
        settled = self.now - timedelta(seconds=self.settings.reconcile_settle_seconds)
        for syncs, _ in self.api.syncs(page_size=self.settings.reconcile_page_size):
            self.counts.pages += 1
            objects = [s for s in syncs if s.object is not None]
            self.counts.syncs_paused += sum(s.paused for s in objects)
            states = self._sync_states(objects)
            seen = self.store.paused_since(s.id for s in objects)
            gaps = []
            for sync in objects:
                state = states.get(sync.id, {})
                if not sync.paused or state.get("paused"):
                    if sync.id in seen:
                        self.store.forget_pause(sync.id)
                    continue
                if sync.id not in seen:
                    self.store.saw_paused(sync.id, self.now)
                if seen.get(sync.id, self.now) <= settled:
                    gaps.append(
                        synthetic.sync_paused(
                            sync, last_run_id=state.get("last_run_id"), sent_at=self._sent_at
                        )
                    )
            self._publish_missing(gaps)

    def _sync_states(self, syncs: Sequence[Sync]) -> dict[str, dict[str, Any]]:
        """Sync id -> its sync state document (empty when there is none)."""
        refs = {
            self.db.collection(SYNC_STATE)
            .document(doc_id(s.customer_id, s.provider_name, str(s.object)))
            .path: s.id
            for s in syncs
        }
        found: dict[str, dict[str, Any]] = {}
        for snapshot in self.db.get_all([self.db.document(path) for path in refs]):
            if snapshot.exists:
                found[refs[snapshot.reference.path]] = snapshot.to_dict() or {}
        return found

    # --- connections -------------------------------------------------------------

    def _connections(self, lease: Lease, progress: Progress) -> None:
        registry = self._registry()
        customers = sorted(registry.keys() | self._synced_customers())
        # Round the customers from where the last pass stopped, so a budget smaller than the
        # list still reaches every customer in turn.
        after = progress.customer_cursor
        ordered = [c for c in customers if after is None or c > after]
        ordered += [c for c in customers if after is not None and c <= after]
        settled = self.now - timedelta(seconds=self.settings.reconcile_settle_seconds)
        for customer in ordered:
            listed = {c.provider_name: c for c in self.api.connections(customer)}
            self.counts.customers_checked += 1
            self.counts.connections_listed += len(listed)
            recorded = registry.get(customer, {})
            seen = self.store.seen_connections(customer, listed.keys() | recorded.keys())
            gaps = []
            for provider, connection in sorted(listed.items()):
                if seen.get(provider) != connection.id:
                    self.store.remember_connection(customer, provider, connection.id)
                if _never_recorded(recorded.get(provider), connection):
                    gaps.append(synthetic.connection_created(connection, sent_at=self._sent_at))
            for provider, entry in sorted(recorded.items()):
                if provider in listed or entry.get("status") != "active":
                    continue
                if int(entry.get("last_event_at", 0)) > settled.timestamp():
                    continue  # recorded moments ago: the API may not list it yet
                connection_id = seen.get(provider) or entry.get("connection_id")
                if not connection_id:
                    self.counts.deletions_unidentified += 1
                    continue
                gaps.append(
                    synthetic.connection_deleted(
                        customer_id=customer,
                        provider_name=provider,
                        provider_id=str(entry.get("provider_id", "")),
                        category=str(entry.get("category", "no_category")),
                        connection_id=str(connection_id),
                        sent_at=self._sent_at,
                    )
                )
            self._publish_missing(gaps)
            self.store.save(lease, {"customer_cursor": customer})
        self.store.save(lease, {"customer_cursor": None})

    @property
    def _sent_at(self) -> int:
        return int(self.now.timestamp())

    def _registry(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Customer -> provider -> registry entry."""
        found: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        for snapshot in self.db.collection(CONNECTIONS).stream():
            entry = snapshot.to_dict() or {}
            if entry.get("customer_id") and entry.get("provider_name"):
                found[str(entry["customer_id"])][str(entry["provider_name"])] = entry
        return found

    def _synced_customers(self) -> set[str]:
        query = self.db.collection(SYNC_STATE).select(["customer_id"])
        return {
            str(customer)
            for snapshot in query.stream()
            if (customer := (snapshot.to_dict() or {}).get("customer_id"))
        }

    # --- publishing -----------------------------------------------------------------

    def _publish_missing(self, candidates: Sequence[Synthetic]) -> None:
        """Publish the candidates no handler's ledger knows; log each one."""
        missing = self._unrecorded(candidates)
        if not missing:
            return
        self.publish(missing)
        self.counts.events_reconciled += len(missing)
        for message in missing:
            self.logger.log(
                "WARNING",
                RECOVERED,
                f"recovered {message.event_type} {message.webhook_id}: its webhook never arrived",
                webhook_id=message.webhook_id,
                event_type=message.event_type,
                customer_id=message.attributes.get("customer_id"),
                provider_name=message.attributes.get("provider_name"),
                connection_id=message.attributes.get("connection_id"),
            )

    def _unrecorded(self, candidates: Sequence[Synthetic]) -> list[Synthetic]:
        keyed = [
            (m, [self.ledger.ref(r.name, m.ledger_key) for r in routes_for(m.event_type)])
            for m in candidates
        ]
        known = {
            snapshot.reference.path
            for snapshot in self.db.get_all([ref for _, refs in keyed for ref in refs])
            if snapshot.exists
        }
        missing = []
        for message, refs in keyed:
            if any(ref.path in known for ref in refs):
                if message.event_type == "sync.complete":
                    self.counts.runs_recorded += 1
            else:
                missing.append(message)
        return missing


def _never_recorded(entry: dict[str, Any] | None, connection: Connection) -> bool:
    """A listed connection the registry never had, or had only as an earlier, deleted one."""
    if entry is None:
        return True
    return entry.get("status") == "deleted" and entry.get("connection_id") != connection.id
