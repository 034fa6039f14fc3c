"""The reliability suite, small enough for CI; `make reliability` runs the full one.

Load with duplicate deliveries, Pub/Sub frozen mid-burst, a handler killed
mid-burst, the backfill worker killed mid-chunk, webhooks dropped before ingest and recovered
by reconciliation: every event's effect exactly
once, and ingest never answers 2xx for what it did not store.
"""

from __future__ import annotations

import pytest

from ops.reliability import suite

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
def test_small_reliability_suite_passes(capsys: pytest.CaptureFixture[str]) -> None:
    code = suite.main(
        ["--events", "300", "--fault-events", "150", "--dropped-events", "40", "--senders", "16"]
    )
    output = capsys.readouterr().out
    print(output)
    assert code == 0, output
    assert "all reliability checks passed" in output
