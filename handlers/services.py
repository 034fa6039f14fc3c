"""Which function handles each route, and what each service runs, from the routing table.

The routing table (shared/routing.json) names every service and, per route, the
handler module whose `handle` receives its events; one image runs every service,
chosen by the SERVICE setting. Nothing here lists a service or a route again.
"""

from __future__ import annotations

import importlib

from handlers.app import Handler, HandlerFn
from shared.routing import Route, RoutingTable, load_table


def handler_function(route: Route) -> HandlerFn:
    """The route's `handle`, imported from its module; a missing one fails start-up."""
    module = importlib.import_module(route.handler)
    function = getattr(module, "handle", None)
    if not callable(function):
        raise ValueError(f"route {route.name!r}: {route.handler} has no handle(event, context)")
    handle: HandlerFn = function
    return handle


def handlers_for(service: str, table: RoutingTable | None = None) -> list[Handler]:
    """The handlers of one push service; an unknown service fails start-up."""
    table = table or load_table()
    routes = table.routes_of(service)
    if not routes:
        known = ", ".join(sorted(table.services))
        raise ValueError(f"service {service!r} has no route in the routing table (known: {known})")
    return [Handler(route, handler_function(route)) for route in routes]


def is_worker(service: str, table: RoutingTable | None = None) -> bool:
    """True for the service Cloud Tasks calls (the backfill worker)."""
    return service == (table or load_table()).worker.name


def is_reconciler(service: str, table: RoutingTable | None = None) -> bool:
    """True for the service Cloud Scheduler calls (the reconciler)."""
    reconciler = (table or load_table()).reconciler
    return reconciler is not None and service == reconciler.name
