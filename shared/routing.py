"""The routing table: which services run, and which handler receives which event types.

The table is `routing.json` beside this file, read by this module and by
Terraform alike (terraform/routing.tf), so the subscription filters in the
cloud, the handlers' own checks, the services the local stack starts and the
Cloud Run services Terraform creates cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, Final, Literal, cast

ROUTING_FILE: Final = Path(__file__).with_name("routing.json")
# Pub/Sub's limit on a subscription filter's length.
MAX_FILTER_BYTES: Final = 256
# Where a route's service receives its push requests (terraform/pubsub.tf builds the same URL).
PUSH_PATH: Final = "/push/{route}"
# A route whose event_types is this string takes the deployment's hook events: Terraform's
# hook_events variable, HOOK_EVENTS in the services (see RoutingTable.with_hook_events).
HOOK_EVENTS: Final = "hook_events"

Caller = Literal["pubsub", "tasks", "scheduler"]
_CALLERS: Final[frozenset[str]] = frozenset({"pubsub", "tasks", "scheduler"})


@dataclass(frozen=True)
class Service:
    """One Cloud Run service of the handler image (SERVICE selects it)."""

    name: str
    local_port: int
    # Pub/Sub push delivers its routes' events; Cloud Tasks calls the backfill worker; Cloud
    # Scheduler calls the reconciler.
    called_by: Caller = "pubsub"
    # Creates backfill chunk tasks, so it needs the queue's settings and grants.
    enqueues_backfills: bool = False


@dataclass(frozen=True)
class Route:
    name: str
    service: str
    event_types: tuple[str, ...]
    # The module whose `handle` function receives the route's events.
    handler: str = ""
    # Its event types are the deployment's hook events, not the table's.
    from_hook_events: bool = False

    def accepts(self, event_type: str) -> bool:
        return any(pattern_matches(pattern, event_type) for pattern in self.event_types)

    @property
    def push_path(self) -> str:
        return PUSH_PATH.format(route=self.name)

    def subscription_filter(self) -> str:
        """The Pub/Sub filter expression Terraform builds for this route."""
        return " OR ".join(_filter_term(pattern) for pattern in self.event_types)


@dataclass(frozen=True)
class RoutingTable:
    services: Mapping[str, Service]
    routes: Mapping[str, Route]

    def routes_of(self, service: str) -> list[Route]:
        return [route for route in self.routes.values() if route.service == service]

    def routes_for(self, event_type: str) -> list[Route]:
        """Every route that receives this event type."""
        return [route for route in self.routes.values() if route.accepts(event_type)]

    def with_hook_events(self, event_types: tuple[str, ...]) -> RoutingTable:
        """The table with the hook events' route receiving `event_types`."""
        for pattern in event_types:
            _check_pattern("hook events", pattern)
        routes = {
            name: replace(route, event_types=event_types) if route.from_hook_events else route
            for name, route in self.routes.items()
        }
        return RoutingTable(self.services, routes)

    def active_routes(self) -> list[Route]:
        """The routes that receive something: a subscription with no event types would
        receive every event, so a hook-events route without any has none (as in Terraform)."""
        return [route for route in self.routes.values() if route.event_types]

    @property
    def worker(self) -> Service:
        """The service Cloud Tasks calls: the backfill worker."""
        [worker] = [s for s in self.services.values() if s.called_by == "tasks"]
        return worker

    @property
    def reconciler(self) -> Service | None:
        """The service Cloud Scheduler calls: the reconciler, if the table has one."""
        return next((s for s in self.services.values() if s.called_by == "scheduler"), None)


def pattern_matches(pattern: str, event_type: str) -> bool:
    """An event type against a table pattern (a trailing `*` matches a prefix)."""
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return event_type == pattern


def pattern_covers(pattern: str, wanted: str) -> bool:
    """Whether every event type `wanted` (a type or a prefix pattern) matches `pattern`."""
    if wanted.endswith("*"):
        return pattern.endswith("*") and wanted[:-1].startswith(pattern[:-1])
    return pattern_matches(pattern, wanted)


def _filter_term(pattern: str) -> str:
    if pattern.endswith("*"):
        return f'hasPrefix(attributes.event_type, "{pattern[:-1]}")'
    return f'attributes.event_type = "{pattern}"'


@cache
def load_table(path: Path = ROUTING_FILE) -> RoutingTable:
    """The table, validated; raises ValueError naming the route or service that is wrong."""
    table = json.loads(path.read_text())
    services = {name: _service(name, entry) for name, entry in table["services"].items()}
    routes = {name: _route(name, entry, services) for name, entry in table["routes"].items()}
    for service in services.values():
        routed = any(route.service == service.name for route in routes.values())
        if routed != (service.called_by == "pubsub"):
            raise ValueError(
                f"service {service.name!r}: a service called by Pub/Sub needs a route, "
                "and one called by Cloud Tasks or Cloud Scheduler must have none"
            )
    if sum(s.called_by == "tasks" for s in services.values()) != 1:
        raise ValueError("exactly one service must be called by Cloud Tasks (the worker)")
    if sum(s.called_by == "scheduler" for s in services.values()) > 1:
        raise ValueError("at most one service may be called by Cloud Scheduler (the reconciler)")
    ports = [service.local_port for service in services.values()]
    if len(set(ports)) != len(ports):
        raise ValueError(f"services share a local_port: {sorted(ports)}")
    return RoutingTable(services, routes)


def _service(name: str, entry: Mapping[str, Any]) -> Service:
    port, caller = entry.get("local_port"), entry.get("called_by", "pubsub")
    if not isinstance(port, int) or not 1024 <= port <= 65535:
        raise ValueError(f"service {name!r}: local_port must be a port number over 1023")
    if caller not in _CALLERS:
        raise ValueError(f"service {name!r}: called_by must be one of {sorted(_CALLERS)}")
    return Service(name, port, cast(Caller, caller), bool(entry.get("enqueues_backfills")))


def _check_pattern(where: str, pattern: object) -> None:
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"{where}: event types must be non-empty strings")
    if "*" in pattern[:-1]:
        raise ValueError(f"{where}: '*' is only allowed at the end of a pattern ({pattern!r})")


def _route(name: str, entry: Mapping[str, Any], services: Mapping[str, Service]) -> Route:
    dynamic = entry.get("event_types") == HOOK_EVENTS
    if not dynamic and isinstance(entry.get("event_types"), str):
        raise ValueError(f"route {name!r}: event_types must be a list, or {HOOK_EVENTS!r}")
    types = () if dynamic else tuple(entry["event_types"])
    if not dynamic and not types:
        raise ValueError(f"route {name!r}: event_types must be non-empty strings")
    for pattern in types:
        _check_pattern(f"route {name!r}", pattern)
    if entry.get("service") not in services:
        raise ValueError(f"route {name!r}: service {entry.get('service')!r} is not in services")
    route = Route(
        name, str(entry["service"]), types, str(entry.get("handler", "")), from_hook_events=dynamic
    )
    if not route.handler:
        raise ValueError(f"route {name!r}: handler must name a module")
    if len(route.subscription_filter().encode()) > MAX_FILTER_BYTES:
        raise ValueError(f"route {name!r}: filter exceeds {MAX_FILTER_BYTES} bytes")
    return route


def load_routes(path: Path = ROUTING_FILE) -> dict[str, Route]:
    """Routes by name (see load_table)."""
    return dict(load_table(path).routes)


def routes_for(event_type: str) -> list[Route]:
    """Every route that receives this event type."""
    return load_table().routes_for(event_type)
