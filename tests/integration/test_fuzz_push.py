"""Property-based fuzzing of the handlers' push envelopes (hypothesis), on the emulators.

Whatever a push request carries: never a 5xx for input, never an unhandled
exception; what cannot be read is dead-lettered, not dropped.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.samples import sample, sample_types
from tests.conftest import examples
from tests.integration.harness import Harness

pytestmark = pytest.mark.integration

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
attribute_maps = st.dictionaries(
    st.sampled_from(["webhook_id", "event_type", "customer_id", "webhook_timestamp", "x"]),
    st.text(max_size=20) | st.sampled_from(sample_types()),
    max_size=5,
)


@st.composite
def push_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["binary", "json", "envelope", "event"]))
    if kind == "binary":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "envelope":
        message: dict[str, Any] = draw(
            st.dictionaries(
                st.sampled_from(["data", "attributes", "messageId", "publishTime"]),
                json_values,
                max_size=4,
            )
        )
        envelope: dict[str, Any] = {"message": message}
        if draw(st.booleans()):
            envelope["deliveryAttempt"] = draw(json_values)
        return json.dumps(envelope).encode()
    # A well-formed envelope around a mutated event.
    event_type = draw(st.sampled_from(sample_types()))
    payload = {**sample(event_type)}
    key = draw(st.sampled_from([*payload, "extra"]))
    payload[key] = draw(json_values)
    data = draw(st.sampled_from([json.dumps(payload).encode(), draw(st.binary(max_size=50))]))
    attributes = {"webhook_id": draw(st.text(min_size=1, max_size=20)), **draw(attribute_maps)}
    return json.dumps(
        {
            "message": {
                "data": base64.b64encode(data).decode(),
                "attributes": attributes,
                "messageId": "fuzz",
            }
        }
    ).encode()


@settings(
    max_examples=examples(120),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=push_bodies(), route=st.sampled_from(["alerts", "connections", "sync-state"]))
def test_any_push_body_is_answered_without_a_5xx(
    harness: Callable[[str], Harness], body: bytes, route: str
) -> None:
    service = {"alerts": "alerts", "connections": "connections", "sync-state": "transforms"}[route]
    h = harness(service)
    h.client.application.testing = True  # unhandled exceptions propagate instead of a 500
    response = h.client.post(f"/push/{route}", data=body)
    assert response.status_code == 204
