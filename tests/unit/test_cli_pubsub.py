"""Names and times the dead-letter and replay commands accept."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from ops.cli.pubsub import parse_since
from ops.cli.pubsub_target import PubSub
from ops.cli.status import table

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", datetime(2026, 11, 28, 11, 30, tzinfo=UTC)),
        ("2h", datetime(2026, 11, 28, 10, 0, tzinfo=UTC)),
        ("1d", datetime(2026, 11, 27, 12, 0, tzinfo=UTC)),
        ("2026-11-28T09:15:00Z", datetime(2026, 11, 28, 9, 15, tzinfo=UTC)),
        ("2026-11-28T09:15:00", datetime(2026, 11, 28, 9, 15, tzinfo=UTC)),
    ],
)
def test_since_accepts_durations_and_times(text: str, expected: datetime) -> None:
    assert parse_since(text, now=NOW) == expected


def test_since_refuses_anything_else() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_since("yesterday", now=NOW)


def test_route_names_map_to_the_topology_names() -> None:
    target = PubSub(project="p")
    assert (
        target.dead_letter_subscription("sync-state")
        == "projects/p/subscriptions/supaglue-sync-state-dead-letter-watch"
    )
    assert (
        PubSub(project="p", prefix="x").dead_letter_subscription("quarantine")
        == "projects/p/subscriptions/x-quarantine-watch"
    )
    assert target.dead_letter_subscription("projects/q/subscriptions/s") == (
        "projects/q/subscriptions/s"
    )
    assert target.push_subscription("alerts") == "projects/p/subscriptions/supaglue-alerts"
    # Anything else is a subscription id, looked up as it is.
    assert target.push_subscription("supaglue-alerts-dead-letter-watch") == (
        "projects/p/subscriptions/supaglue-alerts-dead-letter-watch"
    )
    assert target.topic_path("t") == "projects/p/topics/t"


def test_status_tables_are_aligned_and_show_missing_values_as_dashes() -> None:
    text = table(
        [{"customer_id": "c1", "state": "done"}, {"customer_id": "customer-22"}],
        ["customer_id", "state"],
    )
    assert text.splitlines() == [
        "customer_id  state",
        "-----------  -----",
        "c1           done",
        "customer-22  -",
    ]
