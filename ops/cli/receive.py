"""`python -m ops receive`: a local endpoint that prints every request your hooks send it.

It stands in for Slack, PagerDuty or any webhook a hook calls while it runs on
`make run`: point the hook's URL setting at it (.env.local) and watch.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TextIO

from ops import defaults
from ops.cli.args import Commands
from ops.cli.errors import CliError


def describe(method: str, path: str, body: bytes) -> str:
    """One request as it is printed: the line, then the body (JSON pretty-printed)."""
    try:
        text = json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        text = body.decode(errors="replace")
    return f"<- {method} {path}\n{text}" if text else f"<- {method} {path}"


def receiver(port: int, out: TextIO, *, status: int = 200) -> ThreadingHTTPServer:
    """A server on loopback:`port` (0: any free port) that prints and answers `status`."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with lock:
                print(describe("POST", self.path, body), file=out, flush=True)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """The printed requests are the log."""

    try:
        return ThreadingHTTPServer((defaults.LOOPBACK, port), Handler)
    except OSError as exc:
        raise CliError(f"cannot listen on {defaults.LOOPBACK}:{port}: {exc.strerror}") from None


def add_command(commands: Commands) -> None:
    parser = commands.add_parser(
        "receive",
        help="print every request sent to a local endpoint (a stand-in for Slack)",
        description="Listen on 127.0.0.1 and print each POST your hooks send, answering 200.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=defaults.RECEIVE_PORT,
        help=f"default {defaults.RECEIVE_PORT}",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    server = receiver(args.port, sys.stdout)
    print(
        f"Receiving on http://{defaults.LOOPBACK}:{server.server_address[1]}/ ; Ctrl-C stops.",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        return 0
    finally:
        server.server_close()
    return 0
