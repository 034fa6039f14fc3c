"""The reconciler as a service of the handler image: its settings, and its place in the
routing table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handlers.main import WORKER_BOOT_ERROR, create_service_app
from handlers.services import is_reconciler
from shared.routing import load_table
from tests.conftest import REPO


def test_the_reconciler_is_the_one_service_cloud_scheduler_calls() -> None:
    table = load_table()
    assert table.reconciler is not None
    assert table.reconciler.called_by == "scheduler"
    assert table.routes_of(table.reconciler.name) == []
    assert is_reconciler(table.reconciler.name) and not is_reconciler(table.worker.name)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"audit": {"local_port": 8097, "called_by": "scheduler"}}, "at most one service"),
        ({"reconciler": {"local_port": 8098, "called_by": "cron"}}, "called_by must be one of"),
    ],
)
def test_the_routing_table_refuses_a_second_or_unknown_caller(
    tmp_path: Path, change: dict[str, object], problem: str
) -> None:
    table = json.loads((REPO / "shared" / "routing.json").read_text())
    table["services"].update(change)
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(table))
    with pytest.raises(ValueError, match=problem):
        load_table(path)


def test_a_scheduled_service_with_a_route_is_refused(tmp_path: Path) -> None:
    table = json.loads((REPO / "shared" / "routing.json").read_text())
    table["routes"]["alerts"]["service"] = "reconciler"
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(table))
    with pytest.raises(ValueError, match="called by Cloud Tasks or Cloud Scheduler must have none"):
        load_table(path)


def test_start_up_without_the_api_key_names_the_variable_and_no_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {
        "SERVICE": "reconciler",
        "GOOGLE_CLOUD_PROJECT": "p",
        "PUSH_AUTH_DISABLED": "true",
        "SUPAGLUE_API_URL": "http://127.0.0.1:1",
        "RECONCILE_PAGE_SIZE": "0",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SUPAGLUE_API_KEY", raising=False)
    with pytest.raises(SystemExit) as stopped:
        create_service_app()
    # gunicorn's boot-error code (handlers/main.py), and the reason on stderr.
    assert stopped.value.code == WORKER_BOOT_ERROR
    said = capsys.readouterr().err
    assert "SUPAGLUE_API_KEY" in said
    assert "RECONCILE_PAGE_SIZE" in said
    monkeypatch.setenv("SUPAGLUE_API_KEY", "sk-secret-value")
    with pytest.raises(SystemExit) as stopped:
        create_service_app()
    captured = capsys.readouterr()
    assert "RECONCILE_PAGE_SIZE" in captured.err
    assert "sk-secret-value" not in captured.out + captured.err
