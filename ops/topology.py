"""Create the Pub/Sub topology from the routing table, on the emulator.

The same shape Terraform builds in the cloud (terraform/pubsub.tf): an events
topic, a quarantine topic, and for each route a push subscription with a
filter, a retry policy and a dead-letter topic, plus a pull subscription on
every dead-letter topic for inspection and replay.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from google.api_core import exceptions as api_exceptions
from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # untyped package
from google.protobuf import duration_pb2

from ops import pubsub_admin
from shared.routing import Route, load_routes

MAX_DELIVERY_ATTEMPTS = 5
ACK_DEADLINE_SECONDS = 60


@dataclass(frozen=True)
class Topology:
    project: str
    prefix: str
    routes: dict[str, Route] = field(default_factory=load_routes)

    @property
    def events_topic(self) -> str:
        return f"{self.prefix}-events"

    @property
    def quarantine_topic(self) -> str:
        return f"{self.prefix}-quarantine"

    def subscription(self, route: str) -> str:
        return f"{self.prefix}-{route}"

    def dead_letter_topic(self, route: str) -> str:
        # The handlers derive the same name from TOPIC_PREFIX (HandlerSettings).
        return f"{self.prefix}-{route}-dead-letter"

    def watch_subscription(self, topic: str) -> str:
        return f"{topic}-watch"


def create(
    topology: Topology,
    emulator_host: str,
    service_urls: Mapping[str, str],
    *,
    max_delivery_attempts: int = MAX_DELIVERY_ATTEMPTS,
    minimum_backoff_seconds: int = 1,
    maximum_backoff_seconds: int = 10,
) -> None:
    """Create every topic and subscription; push endpoints are `<service url>/push/<route>`."""
    publisher = pubsub_admin.publisher_client(emulator_host)
    subscriber = pubsub_admin.subscriber_client(emulator_host)
    project = topology.project
    for topic in (topology.events_topic, topology.quarantine_topic):
        pubsub_admin.ensure_topic(publisher, project, topic)
    pubsub_admin.ensure_pull_subscription(
        subscriber,
        project,
        topology.quarantine_topic,
        topology.watch_subscription(topology.quarantine_topic),
    )
    for name, route in topology.routes.items():
        dead_letter = topology.dead_letter_topic(name)
        pubsub_admin.ensure_topic(publisher, project, dead_letter)
        pubsub_admin.ensure_pull_subscription(
            subscriber, project, dead_letter, topology.watch_subscription(dead_letter)
        )
        request = pubsub_v1.types.Subscription(
            name=subscriber.subscription_path(project, topology.subscription(name)),
            topic=publisher.topic_path(project, topology.events_topic),
            push_config=pubsub_v1.types.PushConfig(
                push_endpoint=f"{service_urls[route.service].rstrip('/')}/push/{name}"
            ),
            ack_deadline_seconds=ACK_DEADLINE_SECONDS,
            # The emulator accepts the filter but does not apply it: handlers check too.
            filter=route.subscription_filter(),
            retry_policy=pubsub_v1.types.RetryPolicy(
                minimum_backoff=duration_pb2.Duration(seconds=minimum_backoff_seconds),
                maximum_backoff=duration_pb2.Duration(seconds=maximum_backoff_seconds),
            ),
            dead_letter_policy=pubsub_v1.types.DeadLetterPolicy(
                dead_letter_topic=publisher.topic_path(project, dead_letter),
                max_delivery_attempts=max_delivery_attempts,
            ),
        )
        with contextlib.suppress(api_exceptions.AlreadyExists):
            subscriber.create_subscription(request=request)
