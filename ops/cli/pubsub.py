"""`dlq list`, `dlq replay` and `replay --since`: the command line over ops/cli/dead_letters.py.

Works against the emulator (--emulator-host or $PUBSUB_EMULATOR_HOST) and a
real project (application default credentials) alike. Names follow the
Terraform and local topology: `<prefix>-<route>-dead-letter-watch`,
`<prefix>-quarantine-watch`, `<prefix>-<route>` and `<prefix>-events`.
"""

from __future__ import annotations

import argparse
import os
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # untyped package

from ops import defaults, pubsub_admin
from ops.cli import dead_letters as dlq
from ops.cli.args import Commands
from shared.names import DEFAULT_PREFIX, Names
from shared.routing import load_routes

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def clients(emulator_host: str | None) -> tuple[Any, Any]:
    """Publisher and subscriber for the emulator if a host is given, else the real service."""
    if emulator_host:
        return (
            pubsub_admin.publisher_client(emulator_host),
            pubsub_admin.subscriber_client(emulator_host),
        )
    return pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()


def dead_letter_subscription(name: str, *, project: str, prefix: str) -> str:
    """A route name, `quarantine`, a subscription id, or a full path -> the path."""
    if name.startswith("projects/"):
        return name
    names = Names(prefix)
    if name in load_routes():
        name = names.watch_subscription(names.dead_letter_topic(name))
    elif name == "quarantine":
        name = names.watch_subscription(names.quarantine_topic)
    return f"projects/{project}/subscriptions/{name}"


def push_subscription(name: str, *, project: str, prefix: str) -> str:
    if name.startswith("projects/"):
        return name
    if name in load_routes():
        name = Names(prefix).subscription(name)
    return f"projects/{project}/subscriptions/{name}"


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """`30m`, `2h`, `1d` ago, or an ISO 8601 time (UTC when no offset is given)."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration like 30m / 2h / 1d nor an ISO 8601 time"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--project",
        default=os.environ.get("GOOGLE_CLOUD_PROJECT", defaults.LOCAL_PROJECT),
        help=f"default $GOOGLE_CLOUD_PROJECT, else {defaults.LOCAL_PROJECT}",
    )
    parser.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help=f"name prefix (default {DEFAULT_PREFIX})"
    )
    parser.add_argument(
        "--emulator-host",
        default=os.environ.get("PUBSUB_EMULATOR_HOST"),
        help="the Pub/Sub emulator (default $PUBSUB_EMULATOR_HOST); without it, the real service",
    )


def add_commands(commands: Commands) -> None:
    dead = commands.add_parser("dlq", help="inspect and replay dead letters")
    actions = dead.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="show dead letters and why, consuming nothing")
    listing.add_argument("source", help="a route name, 'quarantine', or a subscription")
    listing.add_argument("--limit", type=int, default=20)
    _common(listing)
    listing.set_defaults(handler=_run_list)

    replaying = actions.add_parser(
        "replay", help="republish dead letters to their original topic, then acknowledge them"
    )
    replaying.add_argument("source", help="a route name, 'quarantine', or a subscription")
    replaying.add_argument("--limit", type=int, default=100)
    replaying.add_argument("--dry-run", action="store_true", help="show what would be replayed")
    replaying.add_argument("--reason", action="append", help="only letters with this reason")
    replaying.add_argument(
        "--message-id", dest="message_ids", action="append", help="only these messages"
    )
    replaying.add_argument("--topic", help="target topic id (default <prefix>-events)")
    _common(replaying)
    replaying.set_defaults(handler=_run_replay)

    seek = commands.add_parser(
        "replay",
        help="re-deliver everything since TIME to one handler subscription (Pub/Sub seek)",
    )
    seek.add_argument("--since", required=True, type=parse_since, help="30m, 2h, 1d or ISO 8601")
    seek.add_argument("--subscription", required=True, help="a route name or a subscription")
    _common(seek)
    seek.set_defaults(handler=_run_seek)


def _run_list(args: argparse.Namespace) -> int:
    _, subscriber = clients(args.emulator_host)
    path = dead_letter_subscription(args.source, project=args.project, prefix=args.prefix)
    letters = dlq.list_dead_letters(subscriber, path, limit=args.limit)
    print(f"{len(letters)} dead letter(s) on {path}")
    for letter in letters:
        attributes = letter.attributes
        print(
            f"  {letter.message_id}  {letter.reason:<22} "
            f"{attributes.get('event_type', '-'):<32} {attributes.get('webhook_id', '-')}"
            f"  {attributes.get('reason_detail', '')[:80]}"
        )
    return 0


def _run_replay(args: argparse.Namespace) -> int:
    publisher, subscriber = clients(args.emulator_host)
    path = dead_letter_subscription(args.source, project=args.project, prefix=args.prefix)
    topic = publisher.topic_path(args.project, args.topic or Names(args.prefix).events_topic)
    reasons = set(args.reason or [])
    ids = set(args.message_ids or [])

    def chosen(letter: dlq.DeadLetter) -> bool:
        return (not reasons or letter.reason in reasons) and (not ids or letter.message_id in ids)

    verb = "Would replay" if args.dry_run else "Replaying"
    print(f"{verb} up to {args.limit} from {path} to {topic}", flush=True)
    report = dlq.replay(
        subscriber,
        publisher,
        path,
        topic,
        limit=args.limit,
        dry_run=args.dry_run,
        select=chosen,
        progress=lambda line: print(line, flush=True),
    )
    print(
        f"{'would replay' if args.dry_run else 'replayed'} {len(report.replayed)}, "
        f"skipped {len(report.skipped)}, failed {len(report.failed)}"
    )
    return 1 if report.failed else 0


def _run_seek(args: argparse.Namespace) -> int:
    _, subscriber = clients(args.emulator_host)
    path = push_subscription(args.subscription, project=args.project, prefix=args.prefix)
    dlq.seek(subscriber, path, args.since)
    print(f"{path} rewound to {args.since.isoformat()}: messages since then are delivered again")
    return 0
