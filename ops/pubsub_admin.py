"""Topics and subscriptions on the Pub/Sub emulator (or a real project).

Clients here are built explicitly for a host, so tests and tools can talk to
several emulators without touching PUBSUB_EMULATOR_HOST in their own process.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import grpc
from google.api_core import exceptions as api_exceptions
from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # untyped package
from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport


@dataclass(frozen=True)
class PulledMessage:
    data: bytes
    attributes: dict[str, str]
    message_id: str
    ack_id: str


def publisher_client(emulator_host: str) -> pubsub_v1.PublisherClient:
    channel = grpc.insecure_channel(emulator_host)
    return pubsub_v1.PublisherClient(transport=PublisherGrpcTransport(channel=channel))


def subscriber_client(emulator_host: str) -> pubsub_v1.SubscriberClient:
    channel = grpc.insecure_channel(emulator_host)
    return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))


def ensure_topic(publisher: pubsub_v1.PublisherClient, project: str, topic: str) -> str:
    path = str(publisher.topic_path(project, topic))
    with contextlib.suppress(api_exceptions.AlreadyExists):
        publisher.create_topic(name=path)
    return path


def ensure_pull_subscription(
    subscriber: pubsub_v1.SubscriberClient, project: str, topic: str, subscription: str
) -> str:
    path = str(subscriber.subscription_path(project, subscription))
    with contextlib.suppress(api_exceptions.AlreadyExists):
        subscriber.create_subscription(
            name=path, topic=pubsub_v1.PublisherClient.topic_path(project, topic)
        )
    return path


def pull(
    subscriber: pubsub_v1.SubscriberClient,
    subscription_path: str,
    *,
    max_messages: int = 100,
    ack: bool = True,
    timeout: float = 10.0,
) -> list[PulledMessage]:
    """Pull what is available now (one call), acknowledging it unless told not to."""
    response = subscriber.pull(
        subscription=subscription_path,
        max_messages=max_messages,
        return_immediately=True,
        timeout=timeout,
    )
    messages = [
        PulledMessage(
            data=bytes(received.message.data),
            attributes=dict(received.message.attributes),
            message_id=received.message.message_id,
            ack_id=received.ack_id,
        )
        for received in response.received_messages
    ]
    if ack and messages:
        subscriber.acknowledge(subscription=subscription_path, ack_ids=[m.ack_id for m in messages])
    return messages
