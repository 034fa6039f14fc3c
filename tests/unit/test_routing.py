"""The routing table: every known event goes somewhere, and filters stay valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.events import KNOWN_EVENT_TYPES
from shared.routing import MAX_FILTER_BYTES, Route, load_routes, load_table, routes_for


def test_every_known_event_type_has_a_route() -> None:
    for event_type in KNOWN_EVENT_TYPES:
        assert routes_for(event_type), event_type


def test_every_route_pattern_matches_a_known_type() -> None:
    for route in load_routes().values():
        for pattern in route.event_types:
            assert any(Route("t", "s", (pattern,)).accepts(t) for t in KNOWN_EVENT_TYPES), pattern


@pytest.mark.parametrize(
    ("event_type", "expected"),
    [
        ("sync.complete", {"alerts", "sync-state"}),
        ("sync.paused", {"alerts", "sync-state"}),
        ("connection.created", {"alerts", "connections", "backfill-scheduler"}),
        ("connection.deleted", {"connections", "backfill-scheduler"}),
        ("entity.entity_mapping.deleted", {"backfill-scheduler"}),
        ("object.field_mapping.updated", {"backfill-scheduler"}),
        ("sync.started", set()),
    ],
)
def test_routes_for(event_type: str, expected: set[str]) -> None:
    assert {route.name for route in routes_for(event_type)} == expected


def test_filters_fit_pubsub_limit_and_use_attributes_only() -> None:
    for route in load_table().active_routes():
        expression = route.subscription_filter()
        assert len(expression.encode()) <= MAX_FILTER_BYTES
        assert "attributes.event_type" in expression


def test_prefix_patterns_become_has_prefix() -> None:
    route = Route("r", "s", ("entity.entity_mapping.*", "sync.complete"))
    assert route.subscription_filter() == (
        'hasPrefix(attributes.event_type, "entity.entity_mapping.") '
        'OR attributes.event_type = "sync.complete"'
    )
    assert route.accepts("entity.entity_mapping.anything")
    assert not route.accepts("entity.entity")


def test_malformed_tables_are_refused(tmp_path: Path) -> None:
    services = {"s": {"local_port": 9001}, "w": {"local_port": 9002, "called_by": "tasks"}}
    routes = [
        {"r": {"service": "s", "handler": "m", "event_types": []}},
        {"r": {"service": "s", "handler": "m", "event_types": ["a*b"]}},
        {
            "r": {
                "service": "s",
                "handler": "m",
                "event_types": [f"type.{i}.long.name" for i in range(9)],
            }
        },
        {"r": {"service": "nowhere", "handler": "m", "event_types": ["a"]}},
        {"r": {"service": "s", "event_types": ["a"]}},
    ]
    cases = [{"services": services, "routes": r} for r in routes]
    for number, table in enumerate(cases):
        path = tmp_path / f"routing-{number}.json"
        path.write_text(json.dumps(table))
        with pytest.raises(ValueError, match="route 'r'"):
            load_routes(path)


def test_malformed_services_are_refused(tmp_path: Path) -> None:
    route = {"r": {"service": "s", "handler": "m", "event_types": ["a"]}}
    cases = [
        # A pushed service without a route, a worker with one, two workers, no worker.
        ({"s": {"local_port": 9001}, "t": {"local_port": 9003}}, "service 't'"),
        ({"s": {"local_port": 9001, "called_by": "tasks"}}, "service 's'"),
        ({"s": {"local_port": 9001}, "w": {"local_port": 80, "called_by": "tasks"}}, "'w'"),
        ({"s": {"local_port": 9001}, "w": {"local_port": 9001, "called_by": "tasks"}}, "share"),
        ({"s": {"local_port": 9001}, "w": {"local_port": 9002, "called_by": "cron"}}, "'w'"),
        ({"s": {"local_port": 9001}}, "exactly one"),
    ]
    for number, (services, match) in enumerate(cases):
        path = tmp_path / f"services-{number}.json"
        path.write_text(json.dumps({"services": services, "routes": route}))
        with pytest.raises(ValueError, match=match):
            load_table(path)
