"""Where users plug in their business logic: a small decorator API.

    from handlers.hooks import HookContext, HookSettings, hooks

    @hooks.settings
    class CrmSettings(HookSettings):
        model_config = SettingsConfigDict(env_prefix="CRM_")
        api_key: SecretStr                  # CRM_API_KEY, from Secret Manager when deployed

    @hooks.on("sync.paused", provider="salesforce")
    def pause_campaigns(event: SyncPaused, context: HookContext) -> None:
        crm = Crm(hooks.get(CrmSettings).api_key.get_secret_value())
        ...

    @hooks.alert
    def page(alert: Alert) -> None:         # every alert the pipeline raises
        ...

    @hooks.transform("contact")             # after each successful sync of contacts
    def upsert_contacts(run: TransformRun) -> str | None: ...

    @hooks.cleanup()                        # a customer's connection was deleted
    def forget_customer(connection: DeletedConnection) -> None: ...

    @hooks.backfill("contact")              # a configuration change: load everything again
    def load_contacts(chunk: BackfillChunk) -> ChunkResult: ...

Each hook runs once per event (per alert, per chunk), with the ledger's
guarantees. A hook raises `RetryableError` to have the event redelivered, or
`PermanentError` to send it to the dead-letter topic. Hook modules are imported
at start-up from the HOOK_MODULES setting, and their settings classes are
validated then: a missing value stops the service, naming the variable.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from handlers.alerting import Alert, AlertKind, LogLine
from shared.errors import PermanentError, RetryableError
from shared.events import ConnectionDeleted, SyncCompleteRun
from shared.routing import pattern_matches
from shared.settings import validation_problems

__all__ = [
    "Alert",
    "AlertKind",
    "BackfillChunk",
    "ChunkResult",
    "DeletedConnection",
    "HookContext",
    "HookRegistry",
    "HookSettings",
    "PermanentError",
    "RawEvent",
    "RetryableError",
    "TransformRun",
    "hooks",
    "load_hook_modules",
]

ANY = "*"


@dataclass(frozen=True)
class TransformRun:
    """One successful sync of one object, and where the last transform stopped."""

    customer_id: str
    provider_name: str
    object: str
    connection_id: str
    run_id: str
    num_records_synced: int | None
    # The value the hook returned last time for this (customer, provider, object), or None.
    high_water_mark: str | None
    event: SyncCompleteRun


@dataclass(frozen=True)
class DeletedConnection:
    customer_id: str  # normalised: the bare external id
    provider_name: str
    connection_id: str
    event: ConnectionDeleted


@dataclass(frozen=True)
class BackfillChunk:
    """One bounded piece of a backfill: resume at `cursor`, stop by the budget."""

    backfill_id: str
    customer_id: str
    provider_name: str
    connection_id: str | None
    # The object the trigger named; None when it named none (a new connection).
    object: str | None
    # None on the first chunk; afterwards what the previous chunk returned.
    cursor: str | None
    chunk: int
    max_records: int
    deadline: float  # time.monotonic() value by which the hook should return

    def time_left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


@dataclass(frozen=True)
class ChunkResult:
    records: int
    # Where the next chunk starts; None when the backfill is complete.
    next_cursor: str | None


@dataclass(frozen=True)
class RawEvent:
    """An event of a type this code has no model for: what arrived, untouched."""

    event_type: str
    attributes: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class HookContext:
    """What an `on` hook receives beside its event."""

    webhook_id: str
    # When Svix sent the webhook (Unix seconds): orders events that arrive out of order.
    webhook_timestamp: int
    attributes: Mapping[str, str]
    # A log line correlated with this delivery (trace, handler, webhook id).
    log: LogLine


class HookSettings(BaseSettings):
    """Base of a hook module's settings; give each class its own `env_prefix`."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)


F = TypeVar("F", bound=Callable[..., Any])
H = TypeVar("H", bound=HookSettings)


@dataclass(frozen=True)
class Registered:
    name: str
    fn: Callable[..., Any]
    object: str = ANY
    provider: str = ANY
    # For `on` hooks: the event type, or a prefix pattern ending in `*`.
    event_type: str = ANY
    # For alert hooks: the kinds wanted; empty for every kind.
    kinds: frozenset[str] = frozenset()

    @property
    def module(self) -> str:
        return self.fn.__module__

    def matches(self, *, provider: str, object_name: str | None = ANY) -> bool:
        # Supaglue names the same object "contact" in syncs and "Contact" in mapping events.
        wanted = (object_name or "").lower()
        return self.provider in (ANY, provider) and self.object.lower() in (ANY, wanted)


class SettingsInvalid(Exception):
    """A hook module's settings did not validate; the message names the variables."""


@dataclass
class HookRegistry:
    _transforms: list[Registered] = field(default_factory=list)
    _cleanups: list[Registered] = field(default_factory=list)
    _backfills: list[Registered] = field(default_factory=list)
    _on: list[Registered] = field(default_factory=list)
    _alerts: list[Registered] = field(default_factory=list)
    _settings_classes: list[type[HookSettings]] = field(default_factory=list)
    _settings: dict[type[HookSettings], HookSettings] = field(default_factory=dict)

    # --- registering ----------------------------------------------------------------

    def on(self, event_type: str, *, provider: str = ANY, object: str = ANY) -> Callable[[F], F]:
        """Register `fn(event, context)` for an event type (a trailing `*` matches a prefix).

        `event` is the typed model, or a RawEvent for a type this code has no model for.
        """
        if not event_type or "*" in event_type[:-1]:
            raise ValueError(f"{event_type!r}: an event type, or a prefix ending in '*'")
        return self._register(self._on, event_type=event_type, provider=provider, object=object)

    @overload
    def alert(self, fn: F) -> F: ...

    @overload
    def alert(self, *, kinds: Iterable[str]) -> Callable[[F], F]: ...

    def alert(self, fn: F | None = None, *, kinds: Iterable[str] = ()) -> F | Callable[[F], F]:
        """Register `fn(alert)` for every alert (`@hooks.alert`) or some kinds only."""
        wanted = frozenset(AlertKind(kind).value for kind in kinds)
        decorator = self._register(self._alerts, kinds=wanted)
        return decorator(fn) if fn is not None else decorator

    def transform(self, object_name: str = ANY, *, provider: str = ANY) -> Callable[[F], F]:
        """Register a hook run after each successful sync of `object_name`."""
        return self._register(self._transforms, object=object_name, provider=provider)

    def cleanup(self, *, provider: str = ANY) -> Callable[[F], F]:
        """Register a hook run when a customer's connection is deleted."""
        return self._register(self._cleanups, provider=provider)

    def backfill(self, object_name: str = ANY, *, provider: str = ANY) -> Callable[[F], F]:
        """Register a hook that loads `object_name` in chunks after a configuration change."""
        return self._register(self._backfills, object=object_name, provider=provider)

    def settings(self, settings_class: type[H]) -> type[H]:
        """Register a settings class, validated at start-up; read it with `get`."""
        if settings_class not in self._settings_classes:
            self._settings_classes.append(settings_class)
        return settings_class

    def _register(self, into: list[Registered], **spec: Any) -> Callable[[F], F]:
        def decorator(fn: F) -> F:
            name = f"{fn.__module__}.{fn.__qualname__}"
            if any(existing.name == name for existing in into):
                raise ValueError(f"hook {name} is registered twice")
            into.append(Registered(name, fn, **spec))
            return fn

        return decorator

    # --- settings -------------------------------------------------------------------

    def load_settings(self, modules: Collection[str] | None = None) -> None:
        """Validate the settings classes of `modules` (default: all), as `on_event_types`
        picks their hooks: those defined in one of them or below it. SettingsInvalid names
        what is wrong."""
        problems = []
        for settings_class in self._settings_classes:
            if modules is not None and not _defined_in(settings_class.__module__, modules):
                continue
            try:
                self._settings[settings_class] = settings_class()
            except ValidationError as exc:
                problems += validation_problems(settings_class, exc)
        if problems:
            raise SettingsInvalid("; ".join(problems))

    def get(self, settings_class: type[H]) -> H:
        """The validated settings of a class registered with `@hooks.settings`."""
        found = self._settings.get(settings_class)
        if found is None:
            found = self._settings[settings_class] = settings_class()
        assert isinstance(found, settings_class)
        return found

    # --- looking up -----------------------------------------------------------------

    def on_hooks_for(
        self, event_type: str, *, provider: str, object_name: str | None
    ) -> list[Registered]:
        return [
            h
            for h in self._on
            if pattern_matches(h.event_type, event_type)
            and h.matches(provider=provider, object_name=object_name)
        ]

    def on_event_types(self, modules: Collection[str] | None = None) -> tuple[str, ...]:
        """The event types (and patterns) the `on` hooks of `modules` (default: all) want:
        those defined in one of them or below it, as `load_settings` picks settings."""
        found = [
            h.event_type for h in self._on if modules is None or _defined_in(h.module, modules)
        ]
        return tuple(dict.fromkeys(found))

    def alerts_for(self, kind: AlertKind) -> list[Registered]:
        return [h for h in self._alerts if not h.kinds or kind.value in h.kinds]

    def backfills_for(self, *, provider: str, object_name: str | None) -> list[Registered]:
        """Hooks for a backfill; with no object named (a new connection), every hook."""
        if object_name is None:
            return [h for h in self._backfills if h.provider in (ANY, provider)]
        return [h for h in self._backfills if h.matches(provider=provider, object_name=object_name)]

    def backfill_hook(self, name: str) -> Registered:
        for hook in self._backfills:
            if hook.name == name:
                return hook
        raise KeyError(name)

    def transforms_for(self, *, provider: str, object_name: str) -> list[Registered]:
        return [
            h for h in self._transforms if h.matches(provider=provider, object_name=object_name)
        ]

    def cleanups_for(self, *, provider: str) -> list[Registered]:
        return [h for h in self._cleanups if h.matches(provider=provider)]


def _defined_in(module: str, modules: Collection[str]) -> bool:
    """`module` is one of `modules`, or inside one of them."""
    return any(module == m or module.startswith(f"{m}.") for m in modules)


# The registry the services read; hook modules register into it at import.
hooks = HookRegistry()


def load_hook_modules(names: Iterable[str]) -> None:
    """Import each module so its decorators run; a typo fails start-up, not a delivery."""
    for name in names:
        importlib.import_module(name)
