"""`python -m ops watch`: print what arrives on the local stack's watch subscriptions."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Final, TextIO

from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # untyped package

from ops import defaults, pubsub_admin
from ops.cli.args import Commands
from ops.cli.pubsub_target import PubSub, resource_id
from shared.names import Names
from shared.routing import load_table

LOCAL_PROJECT: Final = defaults.LOCAL_PROJECT


def watch_subscriptions(names: Names | None = None) -> list[str]:
    """What `make run` lets people watch: events, quarantine and every dead-letter topic."""
    names = names or Names()
    topics = [names.events_topic, names.quarantine_topic]
    topics += [names.dead_letter_topic(route) for route in load_table().routes]
    return [names.watch_subscription(topic) for topic in topics]


def format_message(subscription: str, message: pubsub_admin.PulledMessage) -> str:
    lines = [f"=== {subscription}  message {message.message_id}"]
    lines += [f"  {key}: {value}" for key, value in sorted(message.attributes.items())]
    try:
        body = json.dumps(json.loads(message.data), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        body = f"({len(message.data)} bytes, not JSON)\n" + message.data.decode(errors="replace")
    lines.append(body)
    return "\n".join(lines)


def watch(
    subscriber: pubsub_v1.SubscriberClient,
    paths: Mapping[str, str],
    *,
    once: bool = False,
    interval: float = 1.0,
    out: TextIO | None = None,
) -> int:
    """Print and acknowledge what arrives on the subscriptions (name -> path); the number of
    messages. Pulls until interrupted, or once with `once`."""
    out = out or sys.stdout
    seen = 0
    while True:
        pulled = 0
        for name, path in paths.items():
            messages = pubsub_admin.pull(subscriber, path, ack=False, timeout=5)
            for message in messages:
                print(format_message(name, message), file=out, flush=True)
            if messages:
                # Acknowledged only once printed, so an interrupted watch loses nothing.
                subscriber.acknowledge(
                    subscription=path, ack_ids=[message.ack_id for message in messages]
                )
            pulled += len(messages)
        seen += pulled
        if once:
            return seen
        if not pulled:
            time.sleep(interval)


def _present(
    subscriber: pubsub_v1.SubscriberClient, target: PubSub, defaults_: list[str]
) -> list[str]:
    """The default subscriptions that exist: a route with no events (the hooks route when no
    hook wants any) has no dead-letter topic to watch. All of them when none exists, so that
    the check below says what does."""
    existing = {
        resource_id(s.name)
        for s in subscriber.list_subscriptions(project=f"projects/{target.project}", timeout=30)
    }
    return [name for name in defaults_ if name in existing] or defaults_


def add_command(commands: Commands) -> None:
    parser = commands.add_parser(
        "watch",
        help="print what arrives on the local topics",
        description="Pull from the watch subscriptions, print each message "
        "(attributes and body) and acknowledge it.",
    )
    parser.add_argument(
        "--emulator-host",
        help=f"default $PUBSUB_EMULATOR_HOST, else {defaults.PUBSUB_HOST}",
    )
    parser.add_argument("--project", default=LOCAL_PROJECT, help=f"default {LOCAL_PROJECT}")
    parser.add_argument(
        "--subscription",
        dest="subscriptions",
        action="extend",
        nargs="+",
        metavar="S",
        help=f"subscription id or path (default: {', '.join(watch_subscriptions())})",
    )
    parser.add_argument("--once", action="store_true", help="pull once and exit")
    parser.set_defaults(handler=_run_watch)


def _run_watch(args: argparse.Namespace) -> int:
    host = args.emulator_host or os.environ.get("PUBSUB_EMULATOR_HOST") or defaults.PUBSUB_HOST
    target = PubSub(project=args.project, emulator_host=host)
    with target.failures():
        subscriber = target.subscriber()
        names = args.subscriptions or _present(subscriber, target, watch_subscriptions())
        try:
            paths = {
                name: target.subscription(
                    subscriber, target.subscription_path(name), given=name
                ).name
                for name in names
            }
            if not args.once:
                print(
                    f"Watching {', '.join(names)} on {host} (project {args.project}); "
                    "Ctrl-C stops.",
                    flush=True,
                )
            count = watch(subscriber, paths, once=args.once)
        except KeyboardInterrupt:
            # Ctrl-C is how a watch ends.
            return 0
        finally:
            subscriber.close()
    if args.once and not count:
        print("(no messages)")
    return 0
