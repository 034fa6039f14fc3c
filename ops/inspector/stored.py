"""Reading what the pipeline stores, for one page: Firestore's documents and the messages its
watch subscriptions hold. Nothing is written, and no message is consumed.

Firestore is only read (queries, `roles/datastore.viewer` is enough). Pub/Sub has no way to
look at a message without pulling it, so the messages are read as `ops dlq list` reads dead
letters (ops/cli/dead_letters.py): pulled, then given back at once with a zero ack deadline.
That takes `roles/pubsub.subscriber` on those subscriptions; where it is missing, or a
subscription does not exist, the page says so and shows the rest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import google.auth.exceptions
from google.api_core import exceptions as api_exceptions
from google.cloud import firestore, pubsub_v1  # type: ignore[attr-defined]  # untyped package

from handlers.ledger import COLLECTION as LEDGER
from handlers.store import BACKFILLS, CONNECTIONS, SYNC_STATE
from ops.cli.dead_letters import list_dead_letters
from ops.cli.errors import ensure_listening, firestore_failures, firestore_place, one_line
from ops.cli.pubsub_target import PubSub
from ops.inspector.journey import Held, Query, Source, Stored
from ops.inspector.settings import InspectorSettings

_TIMEOUT_SECONDS: Final = 30.0
# Each document's id, beside its fields: one read twice (newest, and looked up) counts once.
_ID: Final = "__id__"


@dataclass(frozen=True)
class Clients:
    firestore: firestore.Client
    subscriber: pubsub_v1.SubscriberClient


def connect(settings: InspectorSettings) -> Clients:
    """The clients for `settings` (a CliError if they cannot be made); the Firestore client
    finds its emulator in the environment, which `python -m ops.inspector` sets."""
    if settings.firestore_emulator_host:
        ensure_listening(settings.firestore_emulator_host, flag="--firestore-host")
    with firestore_failures_of(settings):
        db = firestore.Client(project=settings.project, database=settings.database)
    pubsub = PubSub(settings.project, settings.pubsub_emulator_host, settings.prefix)
    with pubsub.failures():
        subscriber = pubsub.subscriber()
    return Clients(db, subscriber)


def where(settings: InspectorSettings) -> str:
    """The deployment the page shows, in one line."""
    database = f"database {settings.database}"
    if settings.firestore_emulator_host:
        firestore_at = f"the Firestore emulator at {settings.firestore_emulator_host}, {database}"
    else:
        firestore_at = f"Firestore, {database}"
    pubsub_at = (
        f"the Pub/Sub emulator at {settings.pubsub_emulator_host}"
        if settings.pubsub_emulator_host
        else "Pub/Sub"
    )
    return (
        f"project {settings.project}: {firestore_at}; {pubsub_at}, names prefixed "
        f"{settings.prefix}-"
    )


def firestore_failures_of(settings: InspectorSettings) -> contextlib.AbstractContextManager[None]:
    """A Firestore or credentials failure as one CliError, said as `ops status` says it."""
    where = firestore_place(settings.firestore_emulator_host, settings.project, settings.database)
    return firestore_failures(where)


def read(clients: Clients, settings: InspectorSettings, query: Query) -> Stored:
    """Everything one page is built from (a CliError if Firestore cannot be read)."""
    db = clients.firestore
    with firestore_failures_of(settings):
        ledger = _newest(db, LEDGER, settings.ledger_window)
        if query.webhook:
            # However old: a webhook id or ledger key given exactly is looked up directly.
            ledger += _where(db, LEDGER, "webhook_id", query.webhook, settings.ledger_window)
        connections = _newest(db, CONNECTIONS, settings.effects_window)
        sync_states = _newest(db, SYNC_STATE, settings.effects_window)
        backfills = _newest(db, BACKFILLS, settings.effects_window)
    messages, notes = _held(clients.subscriber, settings)
    return Stored(
        ledger=_unique(ledger),
        connections=connections,
        sync_states=sync_states,
        backfills=backfills,
        messages=messages,
        notes=notes,
    )


def _newest(db: firestore.Client, collection: str, limit: int) -> list[dict[str, Any]]:
    query = (
        db.collection(collection)
        .order_by("updated_at", direction=firestore.Query.DESCENDING)
        .limit(limit)
    )
    return [_document(snapshot) for snapshot in query.stream(timeout=_TIMEOUT_SECONDS)]


def _where(
    db: firestore.Client, collection: str, name: str, value: str, limit: int
) -> list[dict[str, Any]]:
    query = (
        db.collection(collection)
        .where(filter=firestore.FieldFilter(name, "==", value))
        .limit(limit)
    )
    return [_document(snapshot) for snapshot in query.stream(timeout=_TIMEOUT_SECONDS)]


def _document(snapshot: firestore.DocumentSnapshot[Any]) -> dict[str, Any]:
    return {**(snapshot.to_dict() or {}), _ID: snapshot.id}


def _unique(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for document in documents:
        seen.setdefault(str(document[_ID]), document)
    return list(seen.values())


def _subscriptions(settings: InspectorSettings) -> list[tuple[Source, str, str]]:
    """(what it holds, its route, subscription id) for every watch subscription the
    deployment may have: Terraform creates the quarantine's and the dead-letter topics'
    (`make run` the events topic's too)."""
    names = settings.names
    held: list[tuple[Source, str, str]] = [
        ("events", "", names.watch_subscription(names.events_topic)),
        ("quarantine", "", names.watch_subscription(names.quarantine_topic)),
    ]
    held += [
        ("dead letter", route.name, names.watch_subscription(names.dead_letter_topic(route.name)))
        for route in settings.routing().active_routes()
    ]
    return held


def _held(
    subscriber: pubsub_v1.SubscriberClient, settings: InspectorSettings
) -> tuple[list[Held], list[str]]:
    messages: list[Held] = []
    notes: list[str] = []
    for source, route, subscription in _subscriptions(settings):
        path = subscriber.subscription_path(settings.project, subscription)
        try:
            letters = list_dead_letters(subscriber, path, limit=settings.messages_window)
        except api_exceptions.NotFound:
            notes.append(_missing(source, subscription))
            continue
        except (api_exceptions.PermissionDenied, api_exceptions.Unauthenticated) as exc:
            notes.append(
                f"{subscription} could not be read ({exc.message}): reading its messages "
                "without consuming them takes roles/pubsub.subscriber on it"
            )
            continue
        except (api_exceptions.GoogleAPIError, google.auth.exceptions.GoogleAuthError) as exc:
            notes.append(f"{subscription} could not be read: {one_line(str(exc))}")
            continue
        messages += [
            Held(
                source=source,
                message_id=letter.message_id,
                attributes=letter.attributes,
                data=letter.data,
                publish_time=letter.publish_time,
                reason=letter.reason if source != "events" else "",
                route=route,
            )
            for letter in letters
        ]
        if len(letters) >= settings.messages_window:
            notes.append(
                f"{subscription} holds {settings.messages_window} messages or more: only "
                f"those {settings.messages_window} are shown (INSPECTOR_MESSAGES_WINDOW)"
            )
    return messages, notes


_MISSING: Final[Mapping[Source, str]] = {
    "events": "the events topic has no watch subscription here (Terraform creates none; "
    "`make run` does): webhooks are listed from the ledger, and what reached no handler "
    "is not shown",
    "quarantine": "quarantined webhooks cannot be shown",
    "dead letter": "this route's dead letters cannot be shown",
}


def _missing(source: Source, subscription: str) -> str:
    return f"no subscription {subscription}: {_MISSING[source]}"
