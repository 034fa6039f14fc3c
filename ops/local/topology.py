"""The Pub/Sub topology on the emulator, built as terraform/pubsub.tf builds it in the cloud.

An events topic and a quarantine topic; per route of the routing table a push
subscription with its filter, retry policy, retention and dead-letter topic;
a pull subscription on every dead-letter topic and on quarantine for people
(`ops dlq`, `ops watch`); and the backfill queue on the Tasks emulator. `Delivery`'s defaults are Terraform's variable
defaults, and a test compares the two, so a local subscription behaves as a
deployed one (a seek redelivers acknowledged messages, for instance).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc
from google.api_core import exceptions as api_exceptions
from google.cloud import pubsub_v1, tasks_v2  # type: ignore[attr-defined]  # untyped package
from google.cloud.tasks_v2.services.cloud_tasks.transports.grpc import CloudTasksGrpcTransport
from google.protobuf import duration_pb2

from ops import pubsub_admin
from shared.names import Names
from shared.routing import Route


@dataclass(frozen=True)
class Delivery:
    """How Pub/Sub delivers to a route: Terraform's `delivery` and `handlers` defaults."""

    max_delivery_attempts: int = 10
    minimum_backoff_seconds: int = 10
    maximum_backoff_seconds: int = 600
    # Seven days: how far back `ops replay --since` can seek; acked messages are kept too.
    message_retention_seconds: int = 604_800
    # The handlers' request timeout; the ack deadline outlasts it by 30 s.
    handler_timeout_seconds: int = 60

    @property
    def ack_deadline_seconds(self) -> int:
        return self.handler_timeout_seconds + 30

    def retention(self) -> duration_pb2.Duration:
        return duration_pb2.Duration(seconds=self.message_retention_seconds)


# Watch subscriptions are for people reading a topic: Terraform gives them this deadline.
WATCH_ACK_DEADLINE_SECONDS = 60


def create(
    names: Names,
    project: str,
    routes: Iterable[Route],
    emulator_host: str,
    service_urls: Mapping[str, str],
    delivery: Delivery = Delivery(),
    *,
    watch_events: bool = False,
) -> None:
    """Create every topic and subscription (idempotent); push to `<service url>/push/<route>`."""
    publisher = pubsub_admin.publisher_client(emulator_host)
    subscriber = pubsub_admin.subscriber_client(emulator_host)
    try:
        watched = [names.quarantine_topic, *([names.events_topic] if watch_events else [])]
        for topic in (names.events_topic, names.quarantine_topic):
            _topic(publisher, project, topic, delivery)
        for route in routes:
            dead_letter = names.dead_letter_topic(route.name)
            _topic(publisher, project, dead_letter, delivery)
            watched.append(dead_letter)
            _push_subscription(subscriber, publisher, names, project, route, service_urls, delivery)
        for topic in watched:
            _ensure(
                subscriber,
                pubsub_v1.types.Subscription(
                    name=subscriber.subscription_path(project, names.watch_subscription(topic)),
                    topic=publisher.topic_path(project, topic),
                    ack_deadline_seconds=WATCH_ACK_DEADLINE_SECONDS,
                    message_retention_duration=delivery.retention(),
                    expiration_policy=pubsub_v1.types.ExpirationPolicy(),
                ),
            )
    finally:
        subscriber.close()


def _topic(
    publisher: pubsub_v1.PublisherClient, project: str, topic: str, delivery: Delivery
) -> None:
    with contextlib.suppress(api_exceptions.AlreadyExists):
        publisher.create_topic(
            request=pubsub_v1.types.Topic(
                name=publisher.topic_path(project, topic),
                message_retention_duration=delivery.retention(),
            )
        )


def _push_subscription(
    subscriber: pubsub_v1.SubscriberClient,
    publisher: pubsub_v1.PublisherClient,
    names: Names,
    project: str,
    route: Route,
    service_urls: Mapping[str, str],
    delivery: Delivery,
) -> None:
    endpoint = service_urls[route.service].rstrip("/") + route.push_path
    _ensure(
        subscriber,
        pubsub_v1.types.Subscription(
            name=subscriber.subscription_path(project, names.subscription(route.name)),
            topic=publisher.topic_path(project, names.events_topic),
            push_config=pubsub_v1.types.PushConfig(push_endpoint=endpoint),
            ack_deadline_seconds=delivery.ack_deadline_seconds,
            # The emulator accepts the filter but does not apply it: handlers check too.
            filter=route.subscription_filter(),
            retain_acked_messages=True,
            message_retention_duration=delivery.retention(),
            # An empty policy: never expire, however quiet the route.
            expiration_policy=pubsub_v1.types.ExpirationPolicy(),
            retry_policy=pubsub_v1.types.RetryPolicy(
                minimum_backoff=duration_pb2.Duration(seconds=delivery.minimum_backoff_seconds),
                maximum_backoff=duration_pb2.Duration(seconds=delivery.maximum_backoff_seconds),
            ),
            dead_letter_policy=pubsub_v1.types.DeadLetterPolicy(
                dead_letter_topic=publisher.topic_path(
                    project, names.dead_letter_topic(route.name)
                ),
                max_delivery_attempts=delivery.max_delivery_attempts,
            ),
        ),
    )


def _ensure(subscriber: pubsub_v1.SubscriberClient, request: pubsub_v1.types.Subscription) -> None:
    with contextlib.suppress(api_exceptions.AlreadyExists):
        subscriber.create_subscription(request=request)


def create_queue(emulator_host: str, queue_path: str) -> None:
    """The backfill queue, as terraform/tasks.tf creates it (the emulator ignores its limits)."""
    channel = grpc.insecure_channel(emulator_host)
    try:
        client = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
        parent = queue_path.rsplit("/queues/", 1)[0]
        with contextlib.suppress(api_exceptions.AlreadyExists):
            client.create_queue(parent=parent, queue=tasks_v2.Queue(name=queue_path), timeout=30)
    finally:
        channel.close()
