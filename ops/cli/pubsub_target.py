"""The Pub/Sub the CLI's commands talk to, and the subscriptions and topics they name.

Every Pub/Sub command goes through here: it builds its clients, turns a route
name into the deployment's subscription, reads the subscription (or topic)
before using it, and reports every Pub/Sub failure as one line. A name that
does not exist is answered with the names that do, so a wrong route, prefix or
project is visible at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from google.api_core import exceptions as api_exceptions
from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # untyped package

from ops import defaults, pubsub_admin
from ops.cli.errors import CliError, ensure_listening, google_failures
from shared.names import DEFAULT_PREFIX, Names
from shared.routing import load_table

EMULATOR_FLAG: Final = "--emulator-host"
QUARANTINE: Final = "quarantine"
# What a subscription names as its topic once the topic was deleted.
DELETED_TOPIC: Final = "_deleted-topic_"
# Without a bound a client retries an unanswered call for a minute.
_TIMEOUT_SECONDS: Final = 30.0
# An error line lists this many names, then says how many more there are.
_LISTED: Final = 20


def route_names() -> list[str]:
    return sorted(load_table().routes)


def resource_id(path: str) -> str:
    """`projects/p/subscriptions/s` -> `s`."""
    return path.rsplit("/", 1)[-1]


def _listing(names: Iterable[str]) -> str:
    ordered = sorted(names)
    shown = ", ".join(ordered[:_LISTED])
    more = len(ordered) - _LISTED
    return f"{shown} and {more} more" if more > 0 else shown


@dataclass(frozen=True)
class PubSub:
    """A project on the emulator (when `emulator_host` is given) or on the real service."""

    project: str
    emulator_host: str | None = None
    prefix: str = DEFAULT_PREFIX

    def where(self, project: str | None = None) -> str:
        project = project or self.project
        if self.emulator_host:
            return f"project {project} on the Pub/Sub emulator at {self.emulator_host}"
        return f"Pub/Sub in project {project}"

    @contextlib.contextmanager
    def failures(self) -> Iterator[None]:
        """Any Pub/Sub or credentials failure inside, as one CliError."""
        with google_failures(self.where(), local=f"{EMULATOR_FLAG} (or $PUBSUB_EMULATOR_HOST)"):
            yield

    def subscriber(self) -> pubsub_v1.SubscriberClient:
        if self.emulator_host:
            ensure_listening(self.emulator_host, flag=EMULATOR_FLAG)
            return pubsub_admin.subscriber_client(self.emulator_host)
        return pubsub_v1.SubscriberClient()

    def publisher(self) -> pubsub_v1.PublisherClient:
        if self.emulator_host:
            ensure_listening(self.emulator_host, flag=EMULATOR_FLAG)
            return pubsub_admin.publisher_client(self.emulator_host)
        return pubsub_v1.PublisherClient()

    # --- names -------------------------------------------------------------

    def _path(self, kind: str, name: str) -> str:
        return name if name.startswith("projects/") else f"projects/{self.project}/{kind}/{name}"

    def push_subscription(self, name: str) -> str:
        """A route name, a subscription id, or a full path -> the path."""
        if name in load_table().routes:
            name = Names(self.prefix).subscription(name)
        return self._path("subscriptions", name)

    def dead_letter_subscription(self, name: str) -> str:
        """A route name, `quarantine`, a subscription id, or a full path -> the path."""
        names = Names(self.prefix)
        if name in load_table().routes:
            name = names.watch_subscription(names.dead_letter_topic(name))
        elif name == QUARANTINE:
            name = names.watch_subscription(names.quarantine_topic)
        return self._path("subscriptions", name)

    def subscription_path(self, name: str) -> str:
        """A subscription id or a full path -> the path."""
        return self._path("subscriptions", name)

    def topic_path(self, name: str) -> str:
        return self._path("topics", name)

    # --- reading before use ------------------------------------------------

    def subscription(
        self,
        subscriber: pubsub_v1.SubscriberClient,
        path: str,
        *,
        given: str,
        accepts: str = "",
    ) -> pubsub_v1.types.Subscription:
        """The subscription at `path`, or a CliError naming the subscriptions that exist.

        `given` is what the user typed; `accepts` says what else the command takes
        ("a route (alerts, ...)").
        """
        try:
            return subscriber.get_subscription(subscription=path, timeout=_TIMEOUT_SECONDS)
        except api_exceptions.NotFound:
            pass
        project = path.split("/")[1]
        existing = subscriber.list_subscriptions(
            project=f"projects/{project}", timeout=_TIMEOUT_SECONDS
        )
        names = [resource_id(subscription.name) for subscription in existing]
        there = "one of the subscriptions there"
        meant = (
            f" (route {given} with prefix {self.prefix})" if given in load_table().routes else ""
        )
        raise self._missing(
            "subscription", path, f"{accepts}, or {there}" if accepts else there, names, meant
        )

    def topic(self, publisher: pubsub_v1.PublisherClient, path: str) -> None:
        """Nothing if the topic at `path` exists, else a CliError naming the topics that do."""
        try:
            publisher.get_topic(topic=path, timeout=_TIMEOUT_SECONDS)
            return
        except api_exceptions.NotFound:
            pass
        project = path.split("/")[1]
        existing = publisher.list_topics(project=f"projects/{project}", timeout=_TIMEOUT_SECONDS)
        names = [resource_id(topic.name) for topic in existing]
        raise self._missing("topic", path, "--topic with one of the topics there", names)

    def topic_retention(self, publisher: pubsub_v1.PublisherClient, path: str) -> timedelta:
        """How long the topic at `path` keeps messages, acknowledged or not (a seek reaches
        them); none when it keeps none or was deleted."""
        if path == DELETED_TOPIC:
            return timedelta(0)
        try:
            topic = publisher.get_topic(topic=path, timeout=_TIMEOUT_SECONDS)
        except api_exceptions.NotFound:
            return timedelta(0)
        retention: timedelta = topic.message_retention_duration
        return retention

    def _missing(
        self, kind: str, path: str, choices: str, existing: list[str], meant: str = ""
    ) -> CliError:
        where = self.where(path.split("/")[1])
        if not existing:
            if self.emulator_host:
                hint = (
                    f"is --project or {EMULATOR_FLAG} wrong? "
                    f"(`make run` uses project {defaults.LOCAL_PROJECT})"
                )
            else:
                hint = "is --project wrong, or is the pipeline not deployed there?"
            return CliError(f"{where} has no {kind}s at all: {hint}")
        return CliError(
            f"no {kind} {resource_id(path)}{meant} in {where}; give {choices}: {_listing(existing)}"
        )
