"""The page's view model, built by plain functions from what the pipeline stored.

Nothing here reads or writes anything: `build_page` takes the documents and messages that
ops/inspector/stored.py read and returns what the template shows, so every rule of the page
is testable on plain dicts.

One webhook is one ledger key (handlers/idempotency.py decides it): usually the webhook id,
but a sync run's, so that its webhook and a copy the reconciler recovered are one journey.
Its journey is every route that receives its event type (the routing table), each with its
ledger entry, the steps it ran once (`<route>:<step>` entries), and its dead letters; its
effects are the documents the handlers keep about the same customer, connection and object,
marked where the document itself names this webhook (or its run) as the one that wrote it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from handlers.idempotency import event_key
from handlers.lease import EXPIRES, Leases
from handlers.ledger import RECEIVED_FIELD
from shared.contract import ORIGIN_RECONCILED, Attr
from shared.errors import InvalidEvent
from shared.events import SyncCompleteRun, normalise_customer_id, parse_event
from shared.routing import RoutingTable

Source = Literal["events", "quarantine", "dead letter"]
# Longer searches are cut: nothing stored is searched by more.
MAX_SEARCH: Final = 200
_NONE: Final = ""
_NEVER: Final = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Held:
    """A message a watch subscription holds, as read without consuming it."""

    source: Source
    message_id: str
    attributes: Mapping[str, str]
    data: bytes
    publish_time: datetime | None
    # Why it was set aside (quarantine and dead letters), as `ops dlq list` says it.
    reason: str = _NONE
    # The route whose dead-letter topic it is on.
    route: str = _NONE


@dataclass(frozen=True)
class Stored:
    """What one page is built from: documents as dicts, newest first, and held messages."""

    ledger: Sequence[Mapping[str, Any]] = ()
    connections: Sequence[Mapping[str, Any]] = ()
    sync_states: Sequence[Mapping[str, Any]] = ()
    backfills: Sequence[Mapping[str, Any]] = ()
    messages: Sequence[Held] = ()
    # What could not be read, and why; said on the page.
    notes: Sequence[str] = ()


@dataclass(frozen=True)
class Query:
    """The search form: each given field must be part of what the webhook names (any case)."""

    webhook: str = _NONE
    customer: str = _NONE
    connection: str = _NONE

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> Query:
        def value(name: str) -> str:
            return " ".join(params.get(name, "").split())[:MAX_SEARCH]

        return cls(value("webhook"), value("customer"), value("connection"))

    @property
    def given(self) -> bool:
        return bool(self.webhook or self.customer or self.connection)

    def matches(self, webhook: Webhook) -> bool:
        def has(wanted: str, *values: str) -> bool:
            return not wanted or any(wanted.lower() in value.lower() for value in values)

        return (
            has(self.webhook, webhook.key, *webhook.webhook_ids)
            and has(normalise_customer_id(self.customer), webhook.customer)
            and has(self.connection, *webhook.connections)
        )


@dataclass(frozen=True)
class Item:
    label: str
    value: str


@dataclass(frozen=True)
class Step:
    """A part of a route's work that runs at most once (an alert hook, an `on` hook)."""

    name: str
    state: str
    attempts: str
    updated: str
    error: str


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    detail: str
    published: str
    message_id: str


@dataclass(frozen=True)
class Stage:
    """One route's part of the journey: its ledger entry as stored, and its dead letters."""

    route: str
    service: str
    state: str
    meaning: str
    attempts: str
    first_claimed: str
    completed: str
    updated: str
    error: str
    steps: tuple[Step, ...] = ()
    dead_letters: tuple[DeadLetter, ...] = ()


@dataclass(frozen=True)
class Effect:
    kind: str
    name: str
    # How the document names this webhook (or its run), if it does: what it last recorded,
    # or what started it. Otherwise it is only about the same connection or object.
    link: str
    items: tuple[Item, ...]


@dataclass(frozen=True)
class Door:
    """What the pipeline stored of the webhook's arrival."""

    outcome: str
    detail: str


@dataclass(frozen=True)
class Webhook:
    key: str
    webhook_ids: tuple[str, ...]
    event_type: str
    customer: str
    provider: str
    object: str
    connections: tuple[str, ...]
    door: Door
    seen: str
    stages: tuple[Stage, ...]
    effects: tuple[Effect, ...]
    anchor: str


@dataclass(frozen=True)
class Page:
    query: Query
    webhooks: tuple[Webhook, ...]
    matched: int
    notes: tuple[str, ...]
    source: str
    read_at: str


# --- building ------------------------------------------------------------------------------


@dataclass
class _Draft:
    """A webhook while its parts are gathered from wherever they are stored."""

    key: str
    webhook_ids: list[str] = field(default_factory=list)
    event_type: str = _NONE
    subject: dict[str, str] = field(default_factory=dict)
    connections: list[str] = field(default_factory=list)
    entries: list[Mapping[str, Any]] = field(default_factory=list)
    messages: list[Held] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)
    seen: datetime | None = None

    def saw(self, when: datetime | None) -> None:
        if when is not None and (self.seen is None or when > self.seen):
            self.seen = when

    def name(self, webhook_id: str) -> None:
        if webhook_id and webhook_id not in self.webhook_ids:
            self.webhook_ids.append(webhook_id)

    def learn(self, *, event_type: str = _NONE, **subject: str | None) -> None:
        """What the first source to say it said: a message's attributes before documents."""
        self.event_type = self.event_type or event_type
        for name, value in subject.items():
            if value and name == "connection":
                if value not in self.connections:
                    self.connections.append(value)
            elif value:
                self.subject.setdefault(name, value)


class _Drafts(dict[str, _Draft]):
    def of(self, key: str) -> _Draft:
        if key not in self:
            self[key] = _Draft(key)
        return self[key]

    def named(self, webhook_id: object) -> _Draft | None:
        """The draft whose key or webhook ids include `webhook_id`."""
        if not isinstance(webhook_id, str) or not webhook_id:
            return None
        if webhook_id in self:
            return self[webhook_id]
        return next((draft for draft in self.values() if webhook_id in draft.webhook_ids), None)


def build_page(
    stored: Stored,
    query: Query,
    *,
    table: RoutingTable,
    now: datetime,
    rows: int,
    source: str,
) -> Page:
    """The page for `query`: the matching webhooks, newest first, at most `rows` of them."""
    drafts = _Drafts()
    for entry in stored.ledger:
        key = entry.get("webhook_id")
        if isinstance(key, str) and key:
            draft = drafts.of(key)
            # A deployment keeps no events watch subscription: the entry names the webhook.
            received = entry.get(RECEIVED_FIELD)
            if isinstance(received, str):
                draft.name(received)
            draft.entries.append(entry)
            draft.saw(_datetime(entry.get("updated_at")))
    for message in stored.messages:
        _add_message(drafts, message)
    _link_effects(drafts, stored)
    newest_first = sorted(
        drafts.values(), key=lambda draft: (draft.seen or _NEVER, draft.key), reverse=True
    )
    webhooks = [_webhook(draft, table, now) for draft in newest_first]
    matching = [webhook for webhook in webhooks if query.matches(webhook)]
    return Page(
        query=query,
        webhooks=tuple(matching[:rows]),
        matched=len(matching),
        notes=tuple(stored.notes),
        source=source,
        read_at=show(now),
    )


def _add_message(drafts: _Drafts, message: Held) -> None:
    attributes = message.attributes
    webhook_id = attributes.get(Attr.WEBHOOK_ID.value) or message.message_id
    key = webhook_id
    if message.source != "quarantine":
        # What the handlers key it on, if it parses as they parse it.
        with contextlib.suppress(ValueError, RecursionError, InvalidEvent):
            key = event_key(parse_event(json.loads(message.data)), webhook_id)
    draft = drafts.of(key)
    draft.name(webhook_id)
    draft.messages.append(message)
    draft.saw(message.publish_time)
    customer = attributes.get(Attr.CUSTOMER_ID.value)
    draft.learn(
        event_type=attributes.get(Attr.EVENT_TYPE.value, _NONE),
        customer=normalise_customer_id(customer) if customer else None,
        provider=attributes.get(Attr.PROVIDER_NAME.value),
        object=attributes.get(Attr.OBJECT.value),
        connection=attributes.get(Attr.CONNECTION_ID.value),
    )


def _last_run_key(state: Mapping[str, Any]) -> str | None:
    """The ledger key of the run a sync state last recorded, from the one function that
    decides keys, given the run as the state recorded it."""
    run_id = state.get("last_run_id")
    if not run_id:
        return None
    run = SyncCompleteRun.model_construct(
        webhook_event_type="sync.complete",
        customer_id=str(state.get("customer_id", "")),
        provider_name=str(state.get("provider_name", "")),
        run_id=str(run_id),
        connection_id=str(state.get("connection_id", "")),
        result="ERROR" if state.get("last_result") == "ERROR" else "SUCCESS",
    )
    return event_key(run, _NONE)


# The subject's parts, as the handlers' documents name their fields.
_FIELDS: Final = {"customer": "customer_id", "provider": "provider_name", "object": "object"}


def _same(draft: _Draft, document: Mapping[str, Any], *names: str) -> bool:
    """Whether the document is about the draft's customer (and provider, object...)."""
    for name in names:
        wanted = draft.subject.get(name)
        value = document.get(_FIELDS[name])
        if name == "customer" and isinstance(value, str):
            value = normalise_customer_id(value)
        if not wanted or value != wanted:
            return False
    return True


def _link_effects(drafts: _Drafts, stored: Stored) -> None:
    """Documents that name a webhook first (they also tell what a ledger-only webhook was
    about), then those about the same customer's connection and object."""
    linked: set[tuple[str, int]] = set()

    def attach(draft: _Draft, kind: str, document: Mapping[str, Any], *, by_this: bool) -> None:
        if (draft.key, id(document)) in linked:
            return
        linked.add((draft.key, id(document)))
        draft.effects.append(_effect(kind, document, by_this=by_this))

    for backfill in stored.backfills:
        draft = drafts.named(backfill.get("trigger_webhook_id"))
        if draft is not None:
            draft.learn(
                event_type=str(backfill.get("trigger_event_type") or _NONE),
                customer=backfill.get("customer_id"),
                provider=backfill.get("provider_name"),
                object=backfill.get("object"),
                connection=backfill.get("connection_id"),
            )
            attach(draft, BACKFILL, backfill, by_this=True)
    for connection in stored.connections:
        draft = drafts.named(connection.get("last_webhook_id"))
        if draft is not None:
            draft.learn(
                event_type=str(connection.get("last_event_type") or _NONE),
                customer=connection.get("customer_id"),
                provider=connection.get("provider_name"),
                connection=connection.get("connection_id"),
            )
            attach(draft, CONNECTION, connection, by_this=True)
    for state in stored.sync_states:
        key = _last_run_key(state)
        draft = drafts.get(key) if key else None
        if draft is not None:
            customer = state.get("customer_id")
            draft.learn(
                customer=normalise_customer_id(customer) if isinstance(customer, str) else None,
                provider=state.get("provider_name"),
                object=state.get("object"),
                connection=state.get("connection_id"),
            )
            attach(draft, SYNC_STATE, state, by_this=True)
    for draft in drafts.values():
        for connection in stored.connections:
            if _same(draft, connection, "customer", "provider"):
                attach(draft, CONNECTION, connection, by_this=False)
        for state in stored.sync_states:
            if _same(draft, state, "customer", "provider", "object"):
                attach(draft, SYNC_STATE, state, by_this=False)


CONNECTION: Final = "connection registry"
SYNC_STATE: Final = "sync state"
BACKFILL: Final = "backfill"
# What each effect shows, in order: (label, field). Times are UTC.
_EFFECT_ITEMS: Final[Mapping[str, tuple[tuple[str, str], ...]]] = {
    CONNECTION: (
        ("status", "status"),
        ("last event", "last_event_type"),
        ("result", "last_result"),
        ("by webhook", "last_webhook_id"),
        ("sent by Svix", "last_event_at"),
        ("created", "created_at"),
        ("deleted", "deleted_at"),
        ("updated", "updated_at"),
    ),
    SYNC_STATE: (
        ("last result", "last_result"),
        ("failures in a row", "consecutive_failures"),
        ("records", "last_records_synced"),
        ("runs", "total_runs"),
        ("last run", "last_run_id"),
        ("last error", "last_error_message"),
        ("paused", "paused"),
        ("paused at", "paused_at"),
        ("pause reason", "pause_reason"),
        ("updated", "updated_at"),
    ),
    BACKFILL: (
        ("state", "state"),
        ("hook", "hook"),
        ("object", "object"),
        ("chunks done", "chunks_done"),
        ("records", "records"),
        ("cursor", "cursor"),
        ("started", "started_at"),
        ("finished", "finished_at"),
        ("last error", "last_error"),
        ("updated", "updated_at"),
    ),
}
_LINKS: Final = {
    CONNECTION: "last written by this webhook",
    SYNC_STATE: "its last run is this one",
    BACKFILL: "started by this webhook",
}
# Fields the handlers keep as Unix seconds (when Svix sent the event), not as timestamps.
_UNIX_SECONDS: Final = frozenset({"last_event_at", "paused_at"})


def _effect(kind: str, document: Mapping[str, Any], *, by_this: bool) -> Effect:
    if kind == BACKFILL:
        name = str(document.get("backfill_id", "?"))
    else:
        parts = ("customer_id", "provider_name", *(("object",) if kind == SYNC_STATE else ()))
        name = " / ".join(str(document.get(part, "?")) for part in parts)
    items = tuple(
        Item(label, show(_unix(document[name_]) if name_ in _UNIX_SECONDS else document[name_]))
        for label, name_ in _EFFECT_ITEMS[kind]
        if document.get(name_) is not None
    )
    return Effect(kind, name, _LINKS[kind] if by_this else _NONE, items)


def _webhook(draft: _Draft, table: RoutingTable, now: datetime) -> Webhook:
    return Webhook(
        key=draft.key,
        webhook_ids=tuple(draft.webhook_ids),
        event_type=draft.event_type,
        customer=draft.subject.get("customer", _NONE),
        provider=draft.subject.get("provider", _NONE),
        object=draft.subject.get("object", _NONE),
        connections=tuple(draft.connections),
        door=_door(draft),
        seen=show(draft.seen),
        stages=_stages(draft, table, now),
        effects=tuple(
            sorted(draft.effects, key=lambda effect: list(_EFFECT_ITEMS).index(effect.kind))
        ),
        anchor="w-" + hashlib.sha256(draft.key.encode()).hexdigest()[:12],
    )


def _door(draft: _Draft) -> Door:
    quarantined = [m for m in draft.messages if m.source == "quarantine"]
    if quarantined:
        held = quarantined[0]
        detail = held.attributes.get(Attr.REASON_DETAIL.value, _NONE)
        return Door("quarantined", f"{held.reason}: {detail}" if detail else held.reason)
    if any(m.attributes.get(Attr.ORIGIN.value) == ORIGIN_RECONCILED for m in draft.messages):
        return Door("published", "recovered by the reconciler: its webhook never arrived")
    if any(m.source == "events" for m in draft.messages):
        return Door("published", "stored in Pub/Sub, on the events topic")
    return Door("published", "a handler received it from the events topic")


def _stages(draft: _Draft, table: RoutingTable, now: datetime) -> tuple[Stage, ...]:
    """Every route that receives the event type, then any other the webhook reached."""
    if draft.messages and all(m.source == "quarantine" for m in draft.messages):
        return ()
    by_handler = {str(entry.get("handler", "")): entry for entry in draft.entries}
    letters: dict[str, list[Held]] = {}
    for message in draft.messages:
        if message.source == "dead letter":
            letters.setdefault(message.route, []).append(message)
    reached = {handler.partition(":")[0] for handler in by_handler} | set(letters)
    routes = [
        route
        for route in table.routes.values()
        if (draft.event_type and route.accepts(draft.event_type)) or route.name in reached
    ]
    known = {route.name for route in routes}
    # A route the table no longer has (or never had) is shown as stored, after the table's.
    named = [(route.name, route.service) for route in routes]
    named += [(name, _NONE) for name in sorted(reached - known)]
    stages = [
        _stage(
            name,
            service,
            by_handler.get(name),
            steps=[e for h, e in by_handler.items() if h.startswith(f"{name}:")],
            letters=letters.get(name, []),
            now=now,
        )
        for name, service in named
    ]
    return tuple(stages)


def _state(entry: Mapping[str, Any] | None, now: datetime) -> tuple[str, str]:
    """The entry's state in the ledger's own terms, and what it means for the next delivery."""
    if entry is None:
        return "no entry", "not handled yet, or its entry has expired (Firestore's TTL)"
    state = entry.get("state")
    if state == "done":
        return "done", "took effect; a redelivery is acknowledged without effect"
    if state == "running" and Leases.is_held(entry, now):
        until = show(entry.get(EXPIRES))
        return "held", f"an attempt is working on it; its lease lasts until {until}"
    if state == "running":
        until = show(entry.get(EXPIRES))
        return "expired", f"an attempt stopped at {until} or before: the next delivery takes over"
    if state == "failed":
        return "failed", "the last attempt failed and let go: the next delivery runs it again"
    return str(state), _NONE


def _stage(
    route: str,
    service: str,
    entry: Mapping[str, Any] | None,
    *,
    steps: Iterable[Mapping[str, Any]],
    letters: Sequence[Held],
    now: datetime,
) -> Stage:
    state, meaning = _state(entry, now)
    if letters and state != "done":
        meaning = "set aside on the dead-letter topic (below): nothing delivers it again until `ops dlq replay`"
        if entry is None:
            state = "dead-lettered"
    stored = entry or {}
    return Stage(
        route=route,
        service=service,
        state=state,
        meaning=meaning,
        attempts=show(stored.get("attempts")),
        first_claimed=show(stored.get("first_claimed_at")),
        completed=show(stored.get("completed_at")),
        updated=show(stored.get("updated_at")),
        error=show(stored.get("last_error")),
        steps=tuple(
            Step(
                name=str(step.get("handler", "")).partition(":")[2],
                state=_state(step, now)[0],
                attempts=show(step.get("attempts")),
                updated=show(step.get("updated_at")),
                error=show(step.get("last_error")),
            )
            for step in steps
        ),
        dead_letters=tuple(
            DeadLetter(
                reason=letter.reason,
                detail=letter.attributes.get(Attr.REASON_DETAIL.value, _NONE),
                published=show(letter.publish_time),
                message_id=letter.message_id,
            )
            for letter in letters
        ),
    )


def _datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def _unix(value: object) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return value


def show(value: object) -> str:
    """A stored value as the page shows it: times in UTC to the second, `yes`/`no`, and
    nothing for none."""
    if value is None:
        return _NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    when = _datetime(value)
    if when is not None:
        return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)
