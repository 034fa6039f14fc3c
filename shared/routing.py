"""The routing table: which handler receives which event types.

The table is `routing.json` beside this file, read by this module and by
Terraform alike, so the subscription filters in the cloud and the checks in
the handlers cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

ROUTING_FILE: Final = Path(__file__).with_name("routing.json")
# Pub/Sub's limit on a subscription filter's length.
MAX_FILTER_BYTES: Final = 256


@dataclass(frozen=True)
class Route:
    name: str
    service: str
    event_types: tuple[str, ...]

    def accepts(self, event_type: str) -> bool:
        return any(_matches(pattern, event_type) for pattern in self.event_types)

    def subscription_filter(self) -> str:
        """The Pub/Sub filter expression Terraform builds for this route."""
        return " OR ".join(_filter_term(pattern) for pattern in self.event_types)


def _matches(pattern: str, event_type: str) -> bool:
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return event_type == pattern


def _filter_term(pattern: str) -> str:
    if pattern.endswith("*"):
        return f'hasPrefix(attributes.event_type, "{pattern[:-1]}")'
    return f'attributes.event_type = "{pattern}"'


@cache
def load_routes(path: Path = ROUTING_FILE) -> dict[str, Route]:
    """Routes by name, validated; raises ValueError for a malformed table."""
    table = json.loads(path.read_text())
    routes = {}
    for name, entry in table["routes"].items():
        types = tuple(entry["event_types"])
        if not types or not all(isinstance(t, str) and t for t in types):
            raise ValueError(f"route {name!r}: event_types must be non-empty strings")
        if any("*" in t[:-1] for t in types):
            raise ValueError(f"route {name!r}: '*' is only allowed at the end of a pattern")
        route = Route(name=name, service=str(entry["service"]), event_types=types)
        if len(route.subscription_filter().encode()) > MAX_FILTER_BYTES:
            raise ValueError(f"route {name!r}: filter exceeds {MAX_FILTER_BYTES} bytes")
        routes[name] = route
    return routes


def routes_for(event_type: str) -> list[Route]:
    """Every route that receives this event type."""
    return [route for route in load_routes().values() if route.accepts(event_type)]
