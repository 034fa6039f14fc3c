"""Which handler function serves which route, and which routes each service runs.

The routing table (shared/routing.json) groups routes into services; this
module binds each route to its function. One image runs every service, chosen
by the SERVICE setting.
"""

from __future__ import annotations

from typing import Final

from handlers import alerts, backfills, connections, sync_state
from handlers.app import Handler, HandlerFn
from shared.routing import load_routes

FUNCTIONS: Final[dict[str, HandlerFn]] = {
    "alerts": alerts.handle,
    "connections": connections.handle,
    "sync-state": sync_state.handle,
    "backfill-scheduler": backfills.handle,
}


# The backfill worker is called by Cloud Tasks, not by a push subscription.
WORKER_SERVICE: Final = "backfill-worker"


def services() -> set[str]:
    """Every service the image can run."""
    return {route.service for route in load_routes().values()} | {WORKER_SERVICE}


def handlers_for(service: str) -> list[Handler]:
    """The handlers of one service; an unknown service or an unbound route fails start-up."""
    routes = [route for route in load_routes().values() if route.service == service]
    if not routes:
        raise ValueError(f"no route in the routing table has service {service!r}")
    unbound = [route.name for route in routes if route.name not in FUNCTIONS]
    if unbound:
        raise ValueError(f"routes without a handler function: {', '.join(unbound)}")
    return [Handler(route, FUNCTIONS[route.name]) for route in routes]
