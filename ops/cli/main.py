"""`python -m ops COMMAND`: the operator CLI's entry point.

A thin argparse layer over plain typed functions: each command module's
`add_command` declares one subcommand and a handler that turns its arguments
into a call and the outcome into an exit code (0 done, 1 failed, 2 bad usage).
A failure is a CliError, reported as one line on stderr: `error: ...`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ops.cli import pubsub, receive, reconcile, send, status, watch
from ops.cli.args import Handler
from ops.cli.errors import CliError, one_line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ops", description="Operator tools for the Supaglue webhook pipeline."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    send.add_command(commands)
    watch.add_command(commands)
    pubsub.add_commands(commands)
    status.add_command(commands)
    receive.add_command(commands)
    reconcile.add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except CliError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return exc.code
