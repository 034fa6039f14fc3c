"""The local topology is the one Terraform creates: every setting of every subscription.

Terraform's values come from Terraform itself (variable defaults, computed names and filters)
and from the parsed HCL; the local ones are read back from the Pub/Sub emulator after
ops/local/topology.py created them.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # untyped package

from ops import pubsub_admin
from ops.local import topology
from ops.local.emulators import Emulator
from shared.names import Names
from shared.routing import load_table
from tests.integration.conftest import PROJECT
from tests.terraform.module import block, computed, expr, literal, load

pytestmark = pytest.mark.integration


def seconds(duration: str) -> int:
    assert duration.endswith("s"), duration
    return int(duration[:-1])


@pytest.fixture(scope="module")
def created(pubsub_emulator: Emulator) -> tuple[Names, Any]:
    names = Names(f"t{uuid.uuid4().hex[:6]}")
    table = load_table()
    urls = {service: f"http://127.0.0.1:{s.local_port}" for service, s in table.services.items()}
    topology.create(names, PROJECT, table.active_routes(), pubsub_emulator.host_port, urls)
    return names, pubsub_admin.subscriber_client(pubsub_emulator.host_port)


def test_push_subscriptions_have_terraforms_settings(created: tuple[Names, Any]) -> None:
    names, subscriber = created
    delivery = computed("var.delivery")
    handlers = computed("var.handlers")
    push = load().resource("google_pubsub_subscription", "push")
    assert expr(push["ack_deadline_seconds"]) == "var.handlers.timeout_seconds + 30"
    assert literal(block(push, "expiration_policy")["ttl"]) == ""
    for route in load_table().active_routes():
        name = route.name
        sub = subscriber.get_subscription(
            subscription=subscriber.subscription_path(PROJECT, names.subscription(name))
        )
        assert sub.filter == computed("local.route_filters")[name]
        assert sub.ack_deadline_seconds == handlers["timeout_seconds"] + 30
        assert sub.retain_acked_messages is push["retain_acked_messages"] is True
        assert sub.message_retention_duration.total_seconds() == seconds(
            delivery["message_retention"]
        )
        assert sub.retry_policy.minimum_backoff.total_seconds() == seconds(
            delivery["minimum_backoff"]
        )
        assert sub.retry_policy.maximum_backoff.total_seconds() == seconds(
            delivery["maximum_backoff"]
        )
        assert sub.dead_letter_policy.max_delivery_attempts == delivery["max_delivery_attempts"]
        assert sub.dead_letter_policy.dead_letter_topic.endswith(
            "/topics/" + names.dead_letter_topic(name)
        )
        assert sub.push_config.push_endpoint.endswith(route.push_path)
        # Terraform's ttl "" (never expire): an empty policy here.
        assert not sub.expiration_policy.ttl


def test_watch_subscriptions_and_topics_have_terraforms_settings(
    created: tuple[Names, Any], pubsub_emulator: Emulator
) -> None:
    names, subscriber = created
    retention = seconds(computed("var.delivery")["message_retention"])
    watches = {
        "quarantine_watch": [names.quarantine_topic],
        "dead_letter_watch": [
            names.dead_letter_topic(route.name) for route in load_table().active_routes()
        ],
    }
    for resource, topics in watches.items():
        declared = load().resource("google_pubsub_subscription", resource)
        for topic in topics:
            sub = subscriber.get_subscription(
                subscription=subscriber.subscription_path(PROJECT, names.watch_subscription(topic))
            )
            assert sub.ack_deadline_seconds == declared["ack_deadline_seconds"]
            assert sub.message_retention_duration.total_seconds() == retention
    publisher: pubsub_v1.PublisherClient = pubsub_admin.publisher_client(pubsub_emulator.host_port)
    for topic in (names.events_topic, names.quarantine_topic):
        found = publisher.get_topic(topic=publisher.topic_path(PROJECT, topic))
        assert found.message_retention_duration.total_seconds() == retention
