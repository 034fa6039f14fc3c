"""The layout's promises: no import cycle, dependencies one way, one routing table for all.

`pytest tests/unit/test_layout.py` is the command that shows them; each test reads the code
itself (imports as `ast` sees them) or the routing table, so a change that breaks a promise
fails here rather than in review.
"""

from __future__ import annotations

import ast
import importlib
import json
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from handlers.services import handler_function, handlers_for
from ops.local.run import Ports
from ops.local.stack import StackSpec
from shared.events import KnownEvent
from shared.routing import load_table
from tests.conftest import REPO
from tests.terraform.module import computed

PACKAGES = ("shared", "ingest_fn", "handlers", "ops")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement except those under `if TYPE_CHECKING:`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports (a `from m import x` of a submodule counts x)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        edges: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                    ).strip(".")
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                    for alias in node.names
                ]
            edges |= {t for t in targets if t in known and t != name}
        graph[name] = edges
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 40  # the walk found the code
    assert cycle(graph) is None, " -> ".join(cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, pending = set(), [start]
    while pending:
        for target in graph[pending.pop()]:
            if target not in seen:
                seen.add(target)
                pending.append(target)
    return seen


def test_dependencies_run_one_way() -> None:
    graph = import_graph()

    def under(prefix: str) -> set[str]:
        return {name for name in graph if name == prefix or name.startswith(prefix + ".")}

    # Nothing imports a benchmark; the CLI and the inspector (both for real projects too) never
    # reach the local stack; the deployables never reach ops/.
    for name in set(graph) - under("ops.bench"):
        assert not graph[name] & under("ops.bench"), name
    assert under("ops.inspector")  # the walk found it
    for name in under("ops.cli") | under("ops.inspector"):
        assert not reachable(graph, name) & (under("ops.local") | under("ops.reliability")), name
    for name in under("shared") | under("ingest_fn") | under("handlers"):
        assert not reachable(graph, name) & under("ops"), name
    for name in under("shared"):
        assert not reachable(graph, name) & (under("handlers") | under("ingest_fn")), name


# --- the routing table is the one list of routes and services ----------------------------------


def concrete_models() -> list[type]:
    return list(typing.get_args(KnownEvent))


def event_type_of(model: type) -> str:
    [literal] = typing.get_args(model.model_fields["webhook_event_type"].annotation)  # type: ignore[attr-defined]
    return str(literal)


@pytest.mark.parametrize(
    "route", sorted(name for name, r in load_table().routes.items() if not r.from_hook_events)
)
def test_each_route_handles_exactly_the_event_types_it_receives(route: str) -> None:
    table = load_table()
    handle = handler_function(table.routes[route])
    fallback = handle.dispatch(object)  # type: ignore[attr-defined]
    for model in concrete_models():
        handled = handle.dispatch(model) is not fallback  # type: ignore[attr-defined]
        assert handled == table.routes[route].accepts(event_type_of(model)), (route, model)


def test_a_new_route_and_service_reach_every_stack_and_terraform(tmp_path: Path) -> None:
    """One entry in the routing table and one handler module: nothing else to edit."""
    table = json.loads((REPO / "shared" / "routing.json").read_text())
    table["services"]["audit"] = {"local_port": 8097}
    table["routes"]["audit-trail"] = {
        "service": "audit",
        "handler": "handlers.alerts",
        "event_types": ["sync.paused"],
    }
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(table))
    extended = load_table(path)

    # The service and its handler.
    [handler] = handlers_for("audit", extended)
    assert handler.route.name == "audit-trail"
    assert handler.fn is importlib.import_module("handlers.alerts").handle
    # make run serves it at its port, and the test stack on a free one.
    assert Ports().services(extended)["audit"] == 8097
    spec = StackSpec.on_free_ports("p", tmp_path, hook_modules="", routing=extended)
    assert "audit" in spec.service_ports
    # Terraform creates its Cloud Run service, its subscription with the route's filter.
    services = computed("local.handler_services", routing_table=path)
    assert "audit" in services
    assert computed("local.route_filters", routing_table=path)["audit-trail"] == (
        extended.routes["audit-trail"].subscription_filter()
    )
    assert "audit-trail" in computed("local.subscriptions", routing_table=path)
