"""What every `python -m ops` command shares: one-line failures, and checking an emulator is up."""

from __future__ import annotations

import socket


class CliError(Exception):
    """A failure to report in one line, without a traceback; `code` is the exit status."""

    def __init__(self, message: str, *, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def ensure_listening(host_port: str) -> None:
    """Fail at once when nothing listens: a client would retry for a minute first."""
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=3):
            pass
    except ValueError:
        raise CliError(f"{host_port!r} is not host:port", code=2) from None
    except OSError as exc:
        raise CliError(
            f"nothing answers at {host_port} ({exc.strerror or exc}): is `make run` up?"
        ) from None
