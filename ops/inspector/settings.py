"""The inspector's settings: which deployment to read, and how much of it per page.

The deployment is named by the variables its handler services read (GOOGLE_CLOUD_PROJECT,
TOPIC_PREFIX, FIRESTORE_DATABASE, HOOK_EVENTS, and the emulators' hosts), so the local stack
points the inspector at itself by handing over its own values; the rest are INSPECTOR_*.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ops import defaults
from shared.names import DEFAULT_PREFIX, Names
from shared.routing import RoutingTable, load_table
from shared.settings import split_list


class InspectorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="INSPECTOR_",
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    project: str = Field(min_length=1, validation_alias="GOOGLE_CLOUD_PROJECT")
    database: str = Field("(default)", min_length=1, validation_alias="FIRESTORE_DATABASE")
    prefix: str = Field(DEFAULT_PREFIX, min_length=1, validation_alias="TOPIC_PREFIX")
    # The hooks route's event types: without them it has no dead-letter topic to read.
    hook_events: Annotated[tuple[str, ...], NoDecode, BeforeValidator(split_list)] = Field(
        (), validation_alias="HOOK_EVENTS"
    )
    firestore_emulator_host: str | None = Field(None, validation_alias="FIRESTORE_EMULATOR_HOST")
    pubsub_emulator_host: str | None = Field(None, validation_alias="PUBSUB_EMULATOR_HOST")
    port: int = Field(defaults.INSPECTOR_PORT, ge=1, le=65535)
    # How much one page reads: the newest ledger entries, the newest documents of each effect
    # collection, and at most this many messages of each watch subscription.
    ledger_window: int = Field(300, ge=1, le=5000)
    effects_window: int = Field(300, ge=1, le=5000)
    messages_window: int = Field(100, ge=1, le=1000)
    # Webhooks shown per page, newest first.
    rows: int = Field(25, ge=1, le=500)

    @property
    def names(self) -> Names:
        return Names(self.prefix)

    def routing(self) -> RoutingTable:
        return load_table().with_hook_events(self.hook_events)


def pipeline_variables() -> tuple[str, ...]:
    """The variables the inspector shares with the handler services, by their names there."""
    return tuple(
        field.validation_alias
        for field in InspectorSettings.model_fields.values()
        if isinstance(field.validation_alias, str)
    )
