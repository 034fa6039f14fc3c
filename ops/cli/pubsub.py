"""`dlq list`, `dlq replay` and `replay --since`: the command line over ops/cli/dead_letters.py.

Works against the emulator (--emulator-host or $PUBSUB_EMULATOR_HOST) and a
real project (application default credentials) alike. Names follow the
Terraform and local topology (shared/names.py): `<prefix>-<route>-dead-letter-watch`,
`<prefix>-quarantine-watch`, `<prefix>-<route>` and `<prefix>-events`. Each
command reads the subscription it names before it touches it
(ops/cli/pubsub_target.py), so a wrong name fails with the names that exist.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from datetime import UTC, datetime, timedelta

from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # untyped package

from ops import defaults
from ops.cli import archive
from ops.cli import dead_letters as dlq
from ops.cli.archive import ARCHIVE_PREFIX
from ops.cli.args import Commands, positive
from ops.cli.errors import CliError
from ops.cli.pubsub_target import QUARANTINE, PubSub, resource_id, route_names
from shared.names import DEFAULT_PREFIX, Names
from shared.routing import load_table

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


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
    listing.add_argument("source", help=f"a route name, '{QUARANTINE}', or a subscription")
    listing.add_argument("--limit", type=positive, default=20)
    _common(listing)
    listing.set_defaults(handler=_run_list)

    replaying = actions.add_parser(
        "replay", help="republish dead letters to their original topic, then acknowledge them"
    )
    replaying.add_argument("source", help=f"a route name, '{QUARANTINE}', or a subscription")
    replaying.add_argument("--limit", type=positive, default=100)
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
        help="re-deliver everything since TIME to one handler subscription (Pub/Sub seek), "
        "or, with --from-archive, republish it from the events archive",
    )
    seek.add_argument("--since", required=True, type=parse_since, help="30m, 2h, 1d or ISO 8601")
    seek.add_argument("--subscription", help="a route name or a subscription (a seek)")
    seek.add_argument(
        "--from-archive",
        action="store_true",
        help="republish archived events to <prefix>-events instead of seeking",
    )
    seek.add_argument("--until", type=parse_since, help="with --from-archive: published before")
    seek.add_argument("--route", help="with --from-archive: only the events this route receives")
    seek.add_argument("--dry-run", action="store_true", help="with --from-archive: only list")
    seek.add_argument(
        "--archive",
        help="with --from-archive: gs://BUCKET/PREFIX or a directory of its files "
        f"(default gs://<project>-<prefix>-archive/{ARCHIVE_PREFIX})",
    )
    _common(seek)
    seek.set_defaults(handler=_run_replay_or_seek)


def _target(args: argparse.Namespace) -> PubSub:
    return PubSub(project=args.project, emulator_host=args.emulator_host, prefix=args.prefix)


def _dead_letter_source(
    target: PubSub, subscriber: pubsub_v1.SubscriberClient, name: str
) -> pubsub_v1.types.Subscription:
    """The pull subscription `name` means; a push one would take live events from its handler."""
    accepts = f"a route ({', '.join(route_names())}), {QUARANTINE}"
    subscription = target.subscription(
        subscriber, target.dead_letter_subscription(name), given=name, accepts=accepts
    )
    if subscription.push_config.push_endpoint:
        raise CliError(
            f"{resource_id(subscription.name)} is a push subscription (it delivers to "
            f"{subscription.push_config.push_endpoint}), not dead letters to read: "
            f"give {accepts} or a pull subscription"
        )
    return subscription


def _run_list(args: argparse.Namespace) -> int:
    target = _target(args)
    with target.failures():
        subscriber = target.subscriber()
        path = _dead_letter_source(target, subscriber, args.source).name
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
    target = _target(args)
    reasons = set(args.reason or [])
    ids = set(args.message_ids or [])

    def chosen(letter: dlq.DeadLetter) -> bool:
        return (not reasons or letter.reason in reasons) and (not ids or letter.message_id in ids)

    with target.failures():
        subscriber = target.subscriber()
        source = _dead_letter_source(target, subscriber, args.source)
        publisher = target.publisher()
        topic = target.topic_path(args.topic or Names(args.prefix).events_topic)
        target.topic(publisher, topic)
        if source.topic == topic:
            raise CliError(
                f"{resource_id(source.name)} reads {resource_id(topic)} itself: replaying it "
                "would publish its messages back where they came from; give a dead-letter "
                "subscription (a route name or quarantine)"
            )
        verb = "Would replay" if args.dry_run else "Replaying"
        print(f"{verb} up to {args.limit} from {source.name} to {topic}", flush=True)
        report = dlq.replay(
            subscriber,
            publisher,
            source.name,
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
    if report.failed:
        raise CliError(
            f"{len(report.failed)} dead letter(s) could not be republished to {topic} "
            "(listed above) and stay on the subscription"
        )
    return 0


def _run_replay_or_seek(args: argparse.Namespace) -> int:
    archive_only = [f for f in ("until", "route", "archive") if getattr(args, f) is not None]
    if args.dry_run:
        archive_only.append("dry_run")
    if args.from_archive == bool(args.subscription):
        raise CliError("replay needs --subscription (a seek) or --from-archive, not both", code=2)
    if args.from_archive:
        return _run_from_archive(args)
    if archive_only:
        flags = ", ".join(f"--{f.replace('_', '-')}" for f in archive_only)
        raise CliError(f"{flags} go with --from-archive only", code=2)
    return _run_seek(args)


def _run_from_archive(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    since: datetime = args.since
    until: datetime = args.until or now
    if since >= until:
        raise CliError(
            f"--since {since.isoformat()} is not before --until {until.isoformat()}", code=2
        )
    routes = load_table().routes
    if args.route is not None and args.route not in routes:
        raise CliError(f"--route {args.route} is not a route ({', '.join(sorted(routes))})", code=2)
    names = Names(args.prefix)
    source = args.archive or f"gs://{names.archive_bucket(args.project)}/{ARCHIVE_PREFIX}"

    def chosen(message: archive.Archived) -> bool:
        return args.route is None or routes[args.route].accepts(
            message.attributes.get("event_type", "")
        )

    target = _target(args)
    with target.failures():
        publisher = target.publisher()
        topic = target.topic_path(names.events_topic)
        target.topic(publisher, topic)
        verb = "Would replay" if args.dry_run else "Replaying"
        when = f"{since.isoformat(timespec='seconds')} to {until.isoformat(timespec='seconds')}"
        print(f"{verb} what was published {when} from {source} to {topic}", flush=True)
        report = archive.replay(
            publisher,
            topic,
            archive.archived(source, since=since, until=until),
            select=chosen,
            dry_run=args.dry_run,
            progress=lambda line: print(line, flush=True),
        )
    print(
        f"{'would replay' if args.dry_run else 'replayed'} {len(report.replayed)}, "
        f"skipped {report.skipped} (not --route {args.route}), failed {len(report.failed)}"
        if args.route
        else f"{'would replay' if args.dry_run else 'replayed'} {len(report.replayed)}, "
        f"failed {len(report.failed)}"
    )
    if report.failed:
        raise CliError(
            f"{len(report.failed)} archived message(s) could not be republished to {topic} "
            "(listed above); run the same command again: the ledger skips what took effect"
        )
    return 0


def _run_seek(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    since: datetime = args.since
    if since > now:
        # A seek to the future would mark everything published until then acknowledged.
        raise CliError(f"--since {since.isoformat()} is in the future", code=2)
    target = _target(args)
    with target.failures():
        subscriber = target.subscriber()
        subscription = target.subscription(
            subscriber,
            target.push_subscription(args.subscription),
            given=args.subscription,
            accepts=f"a route ({', '.join(route_names())})",
        )
        outcome = dlq.rewind(
            subscription.name,
            since,
            retains_acked=subscription.retain_acked_messages,
            retention=subscription.message_retention_duration,
            topic_retention=target.topic_retention(target.publisher(), subscription.topic),
            now=now,
        )
        # Also where nothing acknowledged comes back: what is unacknowledged is still redelivered.
        dlq.seek(subscriber, subscription.name, since)
    print("\n".join(outcome.lines))
    if outcome.warning:
        print(f"warning: {outcome.warning}", file=sys.stderr)
    if outcome.error:
        raise CliError(outcome.error)
    return 0
