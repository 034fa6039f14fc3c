"""What every `python -m ops` command shares: one-line failures, checking an emulator is up, and
the Google clients' failures said as what is wrong and what to do, in one place."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Final

import google.auth.exceptions
from google.api_core import exceptions as api_exceptions

# Sets up the application default credentials the Google clients find without being told.
LOGIN: Final = "`gcloud auth application-default login`"


class CliError(Exception):
    """A failure to report in one line, without a traceback; `code` is the exit status."""

    def __init__(self, message: str, *, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def one_line(text: str) -> str:
    """`text` with line breaks and runs of spaces made single spaces: a client's message may
    span lines, and an error is reported in one."""
    return " ".join(text.split())


def ensure_listening(host_port: str, *, flag: str) -> None:
    """Fail at once when nothing listens: a client would retry for a minute first."""
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=3):
            pass
    except ValueError:
        raise CliError(f"{flag} {host_port!r} is not host:port", code=2) from None
    except OSError as exc:
        raise CliError(
            f"nothing answers at {host_port} ({exc.strerror or exc}): "
            f"is `make run` up, and is {flag} right?"
        ) from None


def firestore_place(host: str | None, project: str | None, database: str) -> str:
    """Which Firestore a command reads, as its errors name it: the emulator at `host`, or
    the real service."""
    if host:
        return f"project {project} on the Firestore emulator at {host}, database {database}"
    named = f"project {project}" if project else "the credentials' project"
    return f"Firestore in {named}, database {database}"


def firestore_failures(where: str) -> contextlib.AbstractContextManager[None]:
    """`google_failures` for the Firestore `where` (a `firestore_place`)."""
    return google_failures(where, local="--firestore-host (or $FIRESTORE_EMULATOR_HOST)")


@contextlib.contextmanager
def google_failures(where: str, *, local: str) -> Iterator[None]:
    """A Google client's or credentials' failure inside, as one CliError about `where`.

    `where` names the service and project ("project p on the Pub/Sub emulator at h");
    `local` is how to point the command at an emulator instead of the real service.
    """
    try:
        yield
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise CliError(
            f"no Google Cloud credentials for {where} ({exc}): run {LOGIN}, "
            f"or give {local} for the local emulator"
        ) from None
    except google.auth.exceptions.GoogleAuthError as exc:
        raise CliError(
            f"the credentials for {where} do not work ({exc}): run {LOGIN} again"
        ) from None
    except (api_exceptions.PermissionDenied, api_exceptions.Unauthenticated) as exc:
        raise CliError(
            f"{where} refused access ({exc.message}): is --project right, "
            "and may these credentials use it?"
        ) from None
    except (
        api_exceptions.ServiceUnavailable,
        api_exceptions.DeadlineExceeded,
        api_exceptions.RetryError,
    ) as exc:
        raise CliError(f"{where} did not answer ({exc.message}): is it up?") from None
    except api_exceptions.InvalidArgument as exc:
        raise CliError(f"{where} refused a name as invalid ({exc.message})", code=2) from None
    except api_exceptions.GoogleAPIError as exc:
        raise CliError(f"{where} failed: {exc}") from None
