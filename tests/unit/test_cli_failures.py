"""How `python -m ops` fails, without an emulator: one `error: ` line on stderr, the exit code,
and what `replay --since` says it redelivers.

Refusals come from a gRPC server on loopback that answers every call with one
status, so the real Pub/Sub and Firestore clients raise what they raise against
the real service; nothing listening is a free port.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta
from pathlib import Path

import google.auth.exceptions
import grpc
import pytest
from google.api_core import exceptions as api_exceptions

from ops.cli.dead_letters import Rewind, duration, rewind
from ops.cli.errors import CliError, google_failures, one_line
from ops.cli.main import main
from ops.defaults import LOOPBACK
from ops.local.processes import free_port

SUBSCRIPTION = "projects/p/subscriptions/supaglue-sync-state"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
NONE = timedelta(0)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The CLI in-process: exit code, stdout, and stderr, which must be a single line."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert err.count("\n") == 1, err
    return code, out, err.rstrip("\n")


# --- translation of client failures ---------------------------------------------


@pytest.mark.parametrize(
    ("kind", "text", "message", "code"),
    [
        (
            google.auth.exceptions.DefaultCredentialsError,
            "none found",
            "no Google Cloud credentials for X (none found): run "
            "`gcloud auth application-default login`, or give --flag for the local emulator",
            1,
        ),
        (
            google.auth.exceptions.RefreshError,
            "token expired",
            "the credentials for X do not work (token expired): run "
            "`gcloud auth application-default login` again",
            1,
        ),
        (
            api_exceptions.PermissionDenied,
            "nope",
            "X refused access (nope): is --project right, and may these credentials use it?",
            1,
        ),
        (
            api_exceptions.Unauthenticated,
            "who",
            "X refused access (who): is --project right, and may these credentials use it?",
            1,
        ),
        (api_exceptions.ServiceUnavailable, "down", "X did not answer (down): is it up?", 1),
        (api_exceptions.DeadlineExceeded, "slow", "X did not answer (slow): is it up?", 1),
        (api_exceptions.RetryError, "gave up", "X did not answer (gave up): is it up?", 1),
        (api_exceptions.InvalidArgument, "bad", "X refused a name as invalid (bad)", 2),
        (api_exceptions.NotFound, "gone", "X failed: 404 gone", 1),
    ],
)
def test_client_failures_become_one_cli_error(
    kind: Callable[..., Exception], text: str, message: str, code: int
) -> None:
    # RetryError also takes the last attempt's exception.
    args = (text, None) if kind is api_exceptions.RetryError else (text,)
    raised = kind(*args)
    with pytest.raises(CliError) as caught, google_failures("X", local="--flag"):
        raise raised
    assert (str(caught.value), caught.value.code) == (message, code)


def test_an_error_is_printed_on_one_line() -> None:
    assert one_line("first\n  second\tthird ") == "first second third"


# --- nothing listening ---------------------------------------------------------


@pytest.fixture
def nothing_listens() -> str:
    return f"{LOOPBACK}:{free_port()}"


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["watch", "--once", "--emulator-host"], "--emulator-host"),
        (["dlq", "list", "sync-state", "--emulator-host"], "--emulator-host"),
        (["dlq", "replay", "sync-state", "--emulator-host"], "--emulator-host"),
        (
            ["replay", "--since", "5m", "--subscription", "sync-state", "--emulator-host"],
            "--emulator-host",
        ),
        (["status", "--firestore-host"], "--firestore-host"),
    ],
)
def test_an_unreachable_emulator_is_one_line(
    capsys: pytest.CaptureFixture[str], nothing_listens: str, argv: list[str], flag: str
) -> None:
    code, _, err = run(capsys, *argv, nothing_listens)
    assert code == 1
    assert err == (
        f"error: nothing answers at {nothing_listens} (Connection refused): "
        f"is `make run` up, and is {flag} right?"
    )


def test_send_to_nothing_is_one_line(
    capsys: pytest.CaptureFixture[str], nothing_listens: str
) -> None:
    url = f"http://{nothing_listens}/"
    code, out, err = run(capsys, "send", "sync.complete", "--url", url)
    assert code == 1
    assert out.startswith(f"-> POST {url} sync.complete")
    assert err == (
        f"error: no answer from {url} ([Errno 111] Connection refused): "
        "is `make run` up, and is --url right?"
    )


def test_an_emulator_address_without_a_port_is_bad_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(capsys, "dlq", "list", "alerts", "--emulator-host", "localhost") == (
        2,
        "",
        "error: --emulator-host 'localhost' is not host:port",
    )


# --- refused -------------------------------------------------------------------


class _Refuse:
    """A gRPC generic handler: every method of every service answers `code`."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details

    def service(self, _details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        def refuse(_request: bytes, context: grpc.ServicerContext) -> bytes:
            context.abort(self.code, self.details)
            raise AssertionError("abort raises")

        return grpc.unary_unary_rpc_method_handler(refuse)


@pytest.fixture
def refusing() -> Iterator[str]:
    """Pub/Sub or Firestore as a caller without permission sees it."""
    host = f"{LOOPBACK}:{free_port()}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        (_Refuse(grpc.StatusCode.PERMISSION_DENIED, "User not authorized to perform this action."),)
    )
    server.add_insecure_port(host)
    server.start()
    yield host
    server.stop(grace=None)


@pytest.mark.parametrize(
    "argv",
    [
        ["watch", "--once"],
        ["dlq", "list", "sync-state"],
        ["dlq", "replay", "sync-state"],
        ["replay", "--since", "5m", "--subscription", "sync-state"],
    ],
)
def test_pubsub_refusing_access_is_one_line(
    capsys: pytest.CaptureFixture[str], refusing: str, argv: list[str]
) -> None:
    code, out, err = run(capsys, *argv, "--emulator-host", refusing, "--project", "p")
    assert (code, out) == (1, "")
    assert err == (
        f"error: project p on the Pub/Sub emulator at {refusing} refused access "
        "(User not authorized to perform this action.): is --project right, "
        "and may these credentials use it?"
    )


def test_firestore_refusing_access_is_one_line(
    capsys: pytest.CaptureFixture[str], refusing: str
) -> None:
    code, out, err = run(capsys, "status", "--firestore-host", refusing, "--project", "p")
    assert (code, out) == (1, "")
    assert err == (
        f"error: project p on the Firestore emulator at {refusing}, database (default) "
        "refused access (User not authorized to perform this action.): is --project right, "
        "and may these credentials use it?"
    )


# --- the real service without credentials --------------------------------------


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Application default credentials that point at a file that is not there."""
    for name in ("PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    missing = tmp_path / "no-such-key.json"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(missing))
    return missing


@pytest.mark.parametrize(
    "argv",
    [
        ["dlq", "list", "sync-state"],
        ["dlq", "replay", "sync-state"],
        ["replay", "--since", "5m", "--subscription", "sync-state"],
    ],
)
def test_pubsub_without_credentials_is_one_line(
    capsys: pytest.CaptureFixture[str], no_credentials: Path, argv: list[str]
) -> None:
    code, out, err = run(capsys, *argv, "--project", "p")
    assert (code, out) == (1, "")
    assert err == (
        f"error: no Google Cloud credentials for Pub/Sub in project p (File {no_credentials} "
        "was not found.): run `gcloud auth application-default login`, or give "
        "--emulator-host (or $PUBSUB_EMULATOR_HOST) for the local emulator"
    )


def test_status_without_credentials_is_one_line(
    capsys: pytest.CaptureFixture[str], no_credentials: Path
) -> None:
    code, out, err = run(capsys, "status", "--project", "p")
    assert (code, out) == (1, "")
    assert err == (
        "error: no Google Cloud credentials for Firestore in project p, database (default) "
        f"(File {no_credentials} was not found.): run `gcloud auth application-default login`,"
        " or give --firestore-host (or $FIRESTORE_EMULATOR_HOST) for the local emulator"
    )


def test_replay_since_a_future_time_is_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    # Refused before any client is built: no emulator, no credentials needed.
    code, out, err = run(
        capsys, "replay", "--since", "2999-01-01T00:00:00Z", "--subscription", "sync-state"
    )
    assert (code, out) == (2, "")
    assert err == "error: --since 2999-01-01T00:00:00+00:00 is in the future"


# --- what a rewind redelivers ---------------------------------------------------


def lines_of(outcome: Rewind) -> list[str]:
    return [line.strip() for line in outcome.lines]


AFTER = "messages published before then and not yet acknowledged are now acknowledged " + (
    "(the seek marks them so) and are not delivered"
)


def test_a_subscription_that_keeps_acknowledged_messages_redelivers_them() -> None:
    since = NOW - timedelta(hours=2)
    outcome = rewind(
        SUBSCRIPTION, since, retains_acked=True, retention=WEEK, topic_retention=NONE, now=NOW
    )
    assert lines_of(outcome) == [
        f"{SUBSCRIPTION} rewound to 2026-11-28T10:00:00+00:00",
        "it keeps acknowledged messages for 7 days: every message published since then is "
        "delivered again (a handler's ledger skips events that already took effect)",
        AFTER,
    ]
    assert (outcome.warning, outcome.error) == (None, None)


def test_a_topic_that_keeps_messages_lets_any_subscription_redeliver_them() -> None:
    outcome = rewind(
        SUBSCRIPTION,
        NOW - timedelta(hours=2),
        retains_acked=False,
        retention=WEEK,
        topic_retention=timedelta(days=1, hours=12),
        now=NOW,
    )
    assert lines_of(outcome)[1].startswith("its topic keeps messages for 1 day 12 hours: every")
    assert (outcome.warning, outcome.error) == (None, None)


def test_without_retention_acknowledged_messages_are_not_redelivered_and_that_is_an_error() -> None:
    outcome = rewind(
        SUBSCRIPTION,
        NOW - timedelta(minutes=5),
        retains_acked=False,
        retention=WEEK,
        topic_retention=NONE,
        now=NOW,
    )
    assert lines_of(outcome)[1:] == [
        "only messages published since then that were not yet acknowledged are delivered again",
        AFTER,
    ]
    assert outcome.warning is None
    assert outcome.error == (
        "supaglue-sync-state does not retain acknowledged messages (retain_acked_messages is "
        "off) and its topic keeps none (no message retention), so those acknowledged since "
        "2026-11-28T11:55:00+00:00 are NOT delivered again: set either (Terraform and "
        "`make run` set both for the routes' subscriptions); only what is acknowledged after "
        "that can be replayed"
    )


def test_a_time_beyond_the_retention_is_warned_about() -> None:
    outcome = rewind(
        SUBSCRIPTION,
        NOW - timedelta(days=8),
        retains_acked=True,
        retention=WEEK,
        topic_retention=timedelta(days=3),
        now=NOW,
    )
    assert outcome.error is None
    assert outcome.warning == (
        "--since 2026-11-20T12:00:00+00:00 is further back than supaglue-sync-state can replay "
        "(7 days, back to 2026-11-21T12:00:00+00:00): messages published before then are not "
        "delivered again"
    )


@pytest.mark.parametrize(
    ("back", "warned"),
    [(WEEK, False), (WEEK + timedelta(seconds=59), False), (WEEK + timedelta(minutes=2), True)],
)
def test_a_time_as_far_back_as_the_retention_is_not_beyond_it(
    back: timedelta, warned: bool
) -> None:
    # `--since 7d` is parsed a moment before the subscription is read.
    outcome = rewind(
        SUBSCRIPTION, NOW - back, retains_acked=True, retention=WEEK, topic_retention=NONE, now=NOW
    )
    assert (outcome.warning is not None) == warned


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (timedelta(days=7), "7 days"),
        (timedelta(days=1, hours=2, minutes=3), "1 day 2 hours"),
        (timedelta(minutes=10), "10 minutes"),
        (timedelta(hours=1, seconds=5), "1 hour 5 seconds"),
        (timedelta(0), "0 seconds"),
    ],
)
def test_durations_read_as_their_two_largest_units(span: timedelta, text: str) -> None:
    assert duration(span) == text
