"""Deliveries whose effects are all Firestore's: one transaction each, and still exactly once.

A delivery starts unclaimed (handlers/context.py): its Firestore effects and the ledger's done
entry commit together, and a duplicate's commit fails on that entry. Only effects outside
Firestore (hooks, tasks, alert lines) claim first. Counted at the client (ops/firestore_ops.py).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud.firestore_v1.transaction import Transaction

from handlers.store import ALERT_STATE, CONNECTIONS, SYNC_STATE
from ops.firestore_ops import Operations, count
from shared.routing import load_table
from tests.integration.harness import Harness

pytestmark = pytest.mark.integration


def log_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line[:1] == "{"]


def delivery_cost(h: Harness, route: str, payload: dict[str, Any], webhook_id: str) -> Operations:
    counter = count(h.runtime.firestore)
    before = counter.total
    assert h.push(route, payload, webhook_id=webhook_id).status_code == 204
    return counter.total - before


def test_a_sync_complete_costs_a_third_less_than_claiming_every_delivery(
    harness: Callable[..., Harness],
) -> None:
    routes = load_table().with_hook_events(()).routes_for("sync.complete")
    assert {route.name for route in routes} == {"alerts", "sync-state"}
    totals: dict[bool, Operations] = {}
    for claim_first in (True, False):
        totals[claim_first] = Operations()
        for route in routes:
            h = harness(route.service, claim_every_delivery=claim_first)
            webhook_id = f"msg_{uuid.uuid4().hex}"
            cost = delivery_cost(h, route.name, h.payload("sync.complete"), webhook_id)
            totals[claim_first] += cost
            if not claim_first:
                # The ledger entry is created with the effects: one transaction, or none where
                # the done mark is the only write.
                assert cost.transactions <= 1, (route.name, cost)
    assert totals[False].billed * 3 <= totals[True].billed * 2, totals
    assert totals[False].transactions < totals[True].transactions, totals


def test_what_each_route_costs_on_the_one_transaction_path(
    harness: Callable[..., Harness],
) -> None:
    """The figures the README's cost model is built on, for a first delivery and a duplicate."""
    h = harness("transforms")
    payload, webhook_id = h.payload("sync.complete"), f"msg_{uuid.uuid4().hex}"
    # The entry's create fails the commit of a second copy: no read of it on a first delivery.
    assert delivery_cost(h, "sync-state", payload, webhook_id) == Operations(
        reads=1, writes=2, transactions=1, rpcs=3
    )
    duplicate = delivery_cost(h, "sync-state", payload, webhook_id)
    assert duplicate.writes == 0
    a = harness("alerts")
    payload, webhook_id = a.payload("sync.complete"), f"msg_{uuid.uuid4().hex}"
    # No streak to end: one read of the alert state, and the done entry alone.
    assert delivery_cost(a, "alerts", payload, webhook_id) == Operations(
        reads=1, writes=1, transactions=0, rpcs=2
    )
    assert delivery_cost(a, "alerts", payload, webhook_id).writes == 0


def test_eight_concurrent_duplicates_take_effect_once_and_quietly(
    harness: Callable[..., Harness], capsys: pytest.CaptureFixture[str]
) -> None:
    """The sync state's run counter: a read-modify-write, so a second effect would show.
    (On the emulator, contended transactions wait seconds for its locks; Firestore resolves
    them in milliseconds.)"""
    service, route, event_type = "transforms", "sync-state", "sync.complete"
    h = harness(service)
    payload, webhook_id = h.payload(event_type), f"msg_{uuid.uuid4().hex}"
    start = threading.Barrier(8)
    statuses: list[int] = []

    def deliver() -> None:
        start.wait()
        statuses.append(h.push(route, payload, webhook_id=webhook_id).status_code)

    capsys.readouterr()
    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(statuses) == 8
    assert set(statuses) <= {204, 503}
    # Pub/Sub delivers again what was answered 503, until every copy is acknowledged.
    for _ in range(statuses.count(503)):
        deadline = time.monotonic() + 30
        while h.push(route, payload, webhook_id=webhook_id).status_code != 204:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    lines = log_lines(capsys)
    answers = [line for line in lines if line.get("handler") == route and "status" in line]
    assert [line["event"] for line in answers].count("event_handled") == 1
    # Contention is a quiet retry: never an error line.
    assert not [line for line in lines if line["severity"] in ("ERROR", "CRITICAL", "ALERT")]
    assert {line["event"] for line in answers} <= {
        "event_handled",
        "duplicate_ignored",
        "retry_later",
    }
    assert h.doc(SYNC_STATE, h.customer, "hubspot", "contact")["total_runs"] == 1


def fail_commits(monkeypatch: pytest.MonkeyPatch, times: int) -> None:
    """Firestore refuses the next `times` transaction commits, as when it is unavailable."""
    commit = Transaction._commit
    left = [times]

    def failing(self: Transaction) -> Any:
        if left[0] > 0:
            left[0] -= 1
            raise api_exceptions.ServiceUnavailable("the commit did not reach Firestore")  # type: ignore[no-untyped-call]
        return commit(self)

    monkeypatch.setattr(Transaction, "_commit", failing)


def test_a_failed_commit_stores_nothing_and_the_redelivery_takes_effect_once(
    harness: Callable[..., Harness],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    h = harness("transforms")
    payload, webhook_id = h.payload("sync.complete"), f"msg_{uuid.uuid4().hex}"
    fail_commits(monkeypatch, 1)
    capsys.readouterr()
    assert h.push("sync-state", payload, webhook_id=webhook_id).status_code == 503
    assert h.doc(SYNC_STATE, h.customer, "hubspot", "contact") == {}
    [retry] = [line for line in log_lines(capsys) if line.get("status") == 503]
    assert (retry["severity"], retry["event"]) == ("WARNING", "retry_later")
    # The redelivery takes effect; a copy after it (an answer lost) is a duplicate.
    assert h.push("sync-state", payload, webhook_id=webhook_id).status_code == 204
    assert h.push("sync-state", payload, webhook_id=webhook_id).status_code == 204
    assert h.doc(SYNC_STATE, h.customer, "hubspot", "contact")["total_runs"] == 1


def test_a_delivery_waits_for_an_attempt_that_holds_the_event(
    harness: Callable[..., Harness],
) -> None:
    """A claim-first attempt (hooks, or CLAIM_EVERY_DELIVERY) still running: 503, not a second
    effect; once it is done, a duplicate."""
    h = harness("connections")
    payload, webhook_id = h.payload("connection.created"), f"msg_{uuid.uuid4().hex}"
    registry = (CONNECTIONS, h.customer, payload["provider_name"])
    claim = h.runtime.ledger.claim("connections", webhook_id)
    assert h.push("connections", payload, webhook_id=webhook_id).status_code == 503
    assert h.doc(*registry) == {}
    h.runtime.ledger.complete(claim)
    assert h.push("connections", payload, webhook_id=webhook_id).status_code == 204
    assert h.doc(*registry) == {}
    # The same event under another webhook id is not held: it takes effect.
    assert h.push("connections", payload).status_code == 204
    assert h.doc(*registry)["status"] == "active"


def test_an_alert_line_is_written_again_after_a_crash_never_lost(
    harness: Callable[..., Harness],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """At least once in the crash window: the line comes before the commit that marks the
    event done; the streak it counts is committed once."""
    h = harness("alerts")
    payload, webhook_id = h.payload("sync.complete", result="ERROR"), f"msg_{uuid.uuid4().hex}"
    fail_commits(monkeypatch, 1)
    capsys.readouterr()
    assert h.push("alerts", payload, webhook_id=webhook_id).status_code == 503
    assert h.push("alerts", payload, webhook_id=webhook_id).status_code == 204
    assert h.push("alerts", payload, webhook_id=webhook_id).status_code == 204
    lines = log_lines(capsys)
    assert len([line for line in lines if line.get("event") == "sync_failed"]) == 2
    state = h.doc(ALERT_STATE, h.customer, "hubspot", "contact")
    assert state["consecutive_failures"] == 1
