"""Where users plug in their business logic: a small decorator API.

    from handlers.hooks import hooks

    @hooks.transform("contact")
    def upsert_contacts(run: TransformRun) -> str | None:
        ...  # read rows newer than run.high_water_mark, upsert them
        return newest_last_modified_at

    @hooks.cleanup()
    def forget_customer(connection: DeletedConnection) -> None:
        ...

    @hooks.backfill("contact")
    def load_contacts(chunk: BackfillChunk) -> ChunkResult:
        page = source.read(after=chunk.cursor, limit=chunk.max_records)
        ...  # upsert the page
        return ChunkResult(records=len(page), next_cursor=page.next_cursor)  # None: finished

A hook raises `RetryableError` to have the message redelivered, or
`PermanentError` to send it to the dead-letter topic. Hook modules are
imported at start-up from the HOOK_MODULES setting.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from shared.errors import PermanentError, RetryableError
from shared.events import ConnectionDeleted, SyncCompleteRun

__all__ = [
    "BackfillChunk",
    "ChunkResult",
    "DeletedConnection",
    "HookRegistry",
    "PermanentError",
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


TransformHook = Callable[[TransformRun], str | None]
CleanupHook = Callable[[DeletedConnection], None]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Registered:
    name: str
    fn: Callable[..., Any]
    object: str
    provider: str

    def matches(self, *, provider: str, object_name: str = ANY) -> bool:
        # Supaglue names the same object "contact" in syncs and "Contact" in mapping events.
        wanted = object_name.lower()
        return self.provider in (ANY, provider) and self.object.lower() in (ANY, wanted)


@dataclass
class HookRegistry:
    _transforms: list[Registered] = field(default_factory=list)
    _cleanups: list[Registered] = field(default_factory=list)
    _backfills: list[Registered] = field(default_factory=list)

    def transform(self, object_name: str = ANY, *, provider: str = ANY) -> Callable[[F], F]:
        """Register a hook run after each successful sync of `object_name`."""
        return self._register(self._transforms, object_name, provider)

    def cleanup(self, *, provider: str = ANY) -> Callable[[F], F]:
        """Register a hook run when a customer's connection is deleted."""
        return self._register(self._cleanups, ANY, provider)

    def backfill(self, object_name: str = ANY, *, provider: str = ANY) -> Callable[[F], F]:
        """Register a hook that loads `object_name` in chunks after a configuration change."""
        return self._register(self._backfills, object_name, provider)

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

    def _register(
        self, into: list[Registered], object_name: str, provider: str
    ) -> Callable[[F], F]:
        def decorator(fn: F) -> F:
            name = f"{fn.__module__}.{fn.__qualname__}"
            if any(existing.name == name for existing in into):
                raise ValueError(f"hook {name} is registered twice")
            into.append(Registered(name, fn, object_name, provider))
            return fn

        return decorator


# The registry the services read; hook modules register into it at import.
hooks = HookRegistry()


def load_hook_modules(names: Iterable[str]) -> None:
    """Import each module so its decorators run; a typo fails start-up, not a delivery."""
    for name in names:
        importlib.import_module(name)
