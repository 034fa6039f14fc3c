"""The idempotency ledger on the real Firestore emulator."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import firestore

from handlers.errors import LeaseLost
from handlers.ledger import ClaimState, Ledger

pytestmark = pytest.mark.integration


@pytest.fixture
def ledger(firestore_client: firestore.Client) -> Ledger:
    return Ledger(
        firestore_client,
        lease_seconds=60,
        retention=timedelta(days=30),
        collection=f"ledger-{uuid.uuid4().hex[:8]}",
    )


def test_first_claim_acquires_and_done_event_is_a_duplicate(ledger: Ledger) -> None:
    claim = ledger.claim("alerts", "msg_1")
    assert claim.state is ClaimState.ACQUIRED
    assert claim.attempt == 1
    ledger.complete(claim)
    assert ledger.claim("alerts", "msg_1").state is ClaimState.DONE
    # Another handler has its own entry for the same webhook.
    assert ledger.claim("connections", "msg_1").state is ClaimState.ACQUIRED


def test_live_lease_makes_a_concurrent_claim_busy(ledger: Ledger) -> None:
    assert ledger.claim("alerts", "msg_2").state is ClaimState.ACQUIRED
    assert ledger.claim("alerts", "msg_2").state is ClaimState.BUSY


def test_expired_lease_is_taken_over_and_the_old_holder_cannot_complete(ledger: Ledger) -> None:
    crashed = ledger.claim("alerts", "msg_3", now=datetime.now(UTC) - timedelta(minutes=5))
    assert crashed.state is ClaimState.ACQUIRED
    takeover = ledger.claim("alerts", "msg_3")
    assert takeover.state is ClaimState.ACQUIRED
    assert takeover.attempt == 2
    with pytest.raises(LeaseLost):
        ledger.complete(crashed)
    ledger.complete(takeover)
    assert ledger.claim("alerts", "msg_3").state is ClaimState.DONE


def test_released_claim_can_be_taken_at_once(ledger: Ledger) -> None:
    claim = ledger.claim("alerts", "msg_4")
    ledger.release(claim, error="RetryableError: downstream timed out")
    state = ledger.state("alerts", "msg_4")
    assert state is not None
    assert state["state"] == "failed"
    assert "downstream" in state["last_error"]
    again = ledger.claim("alerts", "msg_4")
    assert (again.state, again.attempt) == (ClaimState.ACQUIRED, 2)


def test_entries_carry_expires_at_for_the_ttl_policy(ledger: Ledger) -> None:
    before = datetime.now(UTC)
    ledger.claim("alerts", "msg_5/with:odd chars")
    state = ledger.state("alerts", "msg_5/with:odd chars")
    assert state is not None
    assert state["webhook_id"] == "msg_5/with:odd chars"
    expires_at = state["expires_at"]
    assert isinstance(expires_at, datetime)
    assert timedelta(days=29) < expires_at - before < timedelta(days=31)


def test_concurrent_claims_acquire_exactly_once(ledger: Ledger) -> None:
    results: list[ClaimState] = []
    barrier = threading.Barrier(8)

    def contend() -> None:
        barrier.wait()
        results.append(ledger.claim("sync-state", "msg_race").state)

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(ClaimState.ACQUIRED) == 1
    assert results.count(ClaimState.BUSY) == 7


def test_concurrent_takeovers_of_a_failed_attempt_acquire_exactly_once(ledger: Ledger) -> None:
    failed = ledger.claim("sync-state", "msg_retry_race")
    ledger.release(failed, error="RetryableError: try again")
    results: list[ClaimState] = []
    errors: list[Exception] = []
    barrier = threading.Barrier(8)

    def contend() -> None:
        barrier.wait()
        try:
            results.append(ledger.claim("sync-state", "msg_retry_race").state)
        except Exception as exc:  # noqa: BLE001  (collected: a thread's exception goes unseen)
            errors.append(exc)

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results.count(ClaimState.ACQUIRED) == 1
    assert results.count(ClaimState.BUSY) == 7
