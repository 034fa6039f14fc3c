"""Pydantic models of Supaglue's notification webhooks.

Supaglue sends a flat JSON object whose `webhook_event_type` names the event.
The models are tolerant where the sender is loose (extra fields, id formats,
open enums such as `provider_name` or `category`) and strict where a handler
branches on the value (`result`, the `sync.complete` variant).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from shared.errors import InvalidEvent

# Ids are cuids, UUIDs or customer-chosen strings in practice: accept any
# non-empty text, and numbers too, rather than quarantine a real event.
Id = Annotated[str, StringConstraints(min_length=1)]
Result = Literal["SUCCESS", "ERROR"]

# Pause reasons that mean the customer must reconnect (EVENTS.md, sync.paused).
_RECONNECT_PREFIXES: Final = (
    "connection no longer authenticated",
    "unauthorized",
    "forbidden",
)


class WebhookEvent(BaseModel):
    """Any webhook this code accepts, known or not: a flat object that names its type."""

    model_config = ConfigDict(extra="allow", frozen=True, coerce_numbers_to_str=True)

    webhook_event_type: str


class SupaglueEvent(WebhookEvent):
    """Fields every known event has; the base of the known models below."""

    customer_id: Id
    provider_name: Id

    @property
    def connection_key(self) -> str | None:
        """The connection id, for events that carry one."""
        value = getattr(self, "connection_id", None)
        return value if isinstance(value, str) else None

    @property
    def object_name_or_none(self) -> str | None:
        """The synced or mapped object, under whichever field name the event uses."""
        for field in ("object", "object_name"):
            value = getattr(self, field, None)
            if isinstance(value, str):
                return value
        return None


class SyncCompleteRun(SupaglueEvent):
    """One finished sync run, of either variant below."""

    webhook_event_type: Literal["sync.complete"]
    run_id: Id
    connection_id: Id
    result: Result
    num_records_synced: int | None = None
    error_message: str | None = None

    @property
    def synced_object(self) -> str:
        """What the run synced: the object, or the entity's name."""
        raise NotImplementedError


class SyncCompleteObject(SyncCompleteRun):
    """A sync run of one object (the current variant)."""

    type: Literal["object"]
    object_type: str
    object: str

    @property
    def synced_object(self) -> str:
        return self.object


class SyncCompleteEntity(SyncCompleteRun):
    """A sync run of one entity (the deprecated entities feature)."""

    type: Literal["entity"]
    entity_id: Id
    entity_name: str

    @property
    def synced_object(self) -> str:
        return self.entity_name


SyncComplete = Annotated[SyncCompleteObject | SyncCompleteEntity, Field(discriminator="type")]


class SyncPaused(SupaglueEvent):
    """A sync was paused; it arrives before the failing run's `sync.complete`."""

    webhook_event_type: Literal["sync.paused"]
    connection_id: Id
    type: Literal["object"] = "object"
    object_type: str
    object: str
    run_id: Id | None = None
    pause_reason: str | None = None

    @property
    def requires_reconnect(self) -> bool:
        """True when the pause means authentication or authorisation was lost."""
        reason = (self.pause_reason or "").strip().lower()
        return reason.startswith(_RECONNECT_PREFIXES)


class ConnectionCreated(SupaglueEvent):
    """A connection was created, or re-authorised (then `result` is ERROR)."""

    webhook_event_type: Literal["connection.created"]
    provider_id: Id
    category: str
    result: Result
    application_id: Id | None = None
    instance_url: str | None = None


class ConnectionDeleted(SupaglueEvent):
    """A connection was deleted; `customer_id` may carry an application prefix."""

    webhook_event_type: Literal["connection.deleted"]
    connection_id: Id
    provider_id: Id
    category: str
    result: Result

    @property
    def external_customer_id(self) -> str:
        """The bare external customer id, as every other event carries it."""
        return normalise_customer_id(self.customer_id)


class EntityMappingChange(SupaglueEvent):
    """A customer changed an entity mapping (deprecated events, still sent)."""

    entity_id: Id
    application_id: Id
    connection_id: Id
    result: Result
    object_name: str | None = None
    object_type: str | None = None
    error_message: str | None = None


class EntityMappingCreated(EntityMappingChange):
    webhook_event_type: Literal["entity.entity_mapping.created"]


class EntityMappingUpdated(EntityMappingChange):
    webhook_event_type: Literal["entity.entity_mapping.updated"]


class EntityMappingDeleted(EntityMappingChange):
    webhook_event_type: Literal["entity.entity_mapping.deleted"]


class FieldMappingChange(SupaglueEvent):
    """A customer changed an object's field mapping (deprecated events, still sent)."""

    connection_id: Id
    application_id: Id
    object_name: str
    object_type: str
    schema_id: Id
    result: Result
    error_message: str | None = None


class ObjectFieldMappingCreated(FieldMappingChange):
    webhook_event_type: Literal["object.field_mapping.created"]


class ObjectFieldMappingUpdated(FieldMappingChange):
    webhook_event_type: Literal["object.field_mapping.updated"]


class UnknownEvent(WebhookEvent):
    """An event type this code does not know yet; kept, never rejected."""

    webhook_event_type: Annotated[str, StringConstraints(min_length=1)]


KnownEvent = (
    SyncCompleteObject
    | SyncCompleteEntity
    | SyncPaused
    | ConnectionCreated
    | ConnectionDeleted
    | EntityMappingCreated
    | EntityMappingUpdated
    | EntityMappingDeleted
    | ObjectFieldMappingCreated
    | ObjectFieldMappingUpdated
)
AnyEvent = KnownEvent | UnknownEvent

_ADAPTERS: Final[dict[str, TypeAdapter[Any]]] = {
    "sync.complete": TypeAdapter(SyncComplete),
    "sync.paused": TypeAdapter(SyncPaused),
    "connection.created": TypeAdapter(ConnectionCreated),
    "connection.deleted": TypeAdapter(ConnectionDeleted),
    "entity.entity_mapping.created": TypeAdapter(EntityMappingCreated),
    "entity.entity_mapping.updated": TypeAdapter(EntityMappingUpdated),
    "entity.entity_mapping.deleted": TypeAdapter(EntityMappingDeleted),
    "object.field_mapping.created": TypeAdapter(ObjectFieldMappingCreated),
    "object.field_mapping.updated": TypeAdapter(ObjectFieldMappingUpdated),
}

KNOWN_EVENT_TYPES: Final[frozenset[str]] = frozenset(_ADAPTERS)

# Reasons a verified body is not an event; stable codes for the `reason` attribute.
REASON_NOT_JSON: Final = "not_json"
REASON_NOT_OBJECT: Final = "not_an_object"
REASON_NO_TYPE: Final = "missing_event_type"
REASON_INVALID: Final = "invalid_event"


def normalise_customer_id(customer_id: str) -> str:
    """Strip the `<application_id>:` prefix `connection.deleted` may carry."""
    _, sep, external = customer_id.partition(":")
    return external if sep and external else customer_id


def parse_event(payload: object) -> AnyEvent:
    """Validate a decoded JSON value as a Supaglue event.

    Raises InvalidEvent with a stable reason when the value is not an object,
    has no usable `webhook_event_type`, or does not match its declared type.
    An object of an unknown type is returned as UnknownEvent.
    """
    if not isinstance(payload, dict):
        raise InvalidEvent(REASON_NOT_OBJECT, f"body is a JSON {type(payload).__name__}")
    event_type = payload.get("webhook_event_type")
    if not isinstance(event_type, str) or not event_type:
        raise InvalidEvent(REASON_NO_TYPE, "webhook_event_type is missing or not a string")
    adapter = _ADAPTERS.get(event_type)
    try:
        if adapter is None:
            return UnknownEvent.model_validate(payload)
        event: KnownEvent = adapter.validate_python(payload)
    except ValidationError as exc:
        raise InvalidEvent(REASON_INVALID, _summarise(exc)) from exc
    return event


def _summarise(exc: ValidationError) -> str:
    """A short, value-free description of what failed (values may be personal data)."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(item) for item in error["loc"]) or "<root>"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)
