"""Property-based fuzzing of the ingest function's headers and bodies (hypothesis).

Whatever arrives: never a 5xx for input, never an unhandled exception, and
never a publish for a request whose signature does not verify. Correctly
signed bodies, however odd, are stored exactly once.
"""

from __future__ import annotations

import json
import string
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest_fn.publisher import AsyncPublisher
from ops.signing import DEV_SECRET, signed_headers
from shared.samples import sample_bytes, sample_types
from tests.conftest import IngestClient, examples, ingest_client

SIGNATURE_HEADERS = [
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
]
# Header values as HTTP can carry them: no CR/LF.
header_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\r\n"),
    max_size=200,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["sample", "mutated", "json", "binary"]))
    if kind == "sample":
        return sample_bytes(draw(st.sampled_from(sample_types())))
    if kind == "mutated":
        payload = json.loads(sample_bytes(draw(st.sampled_from(sample_types()))))
        key = draw(st.sampled_from([*payload, "webhook_event_type", "extra"]))
        payload[key] = draw(json_values)
        return json.dumps(payload).encode()
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    return draw(st.binary(max_size=300))


@st.composite
def signature_headers(draw: st.DrawFn) -> dict[str, str]:
    names = draw(st.lists(st.sampled_from(SIGNATURE_HEADERS), unique=True, max_size=6))
    headers = {}
    for name in names:
        cased = "".join(c.upper() if draw(st.booleans()) else c for c in name)
        value = draw(
            st.one_of(
                header_text,
                st.just(str(int(time.time()))),
                st.builds(lambda s: f"v1,{s}", st.text(string.ascii_letters + "+/=", max_size=60)),
            )
        )
        headers[cased] = value
    return headers


@pytest.fixture(scope="module")
def app_and_published() -> Iterator[tuple[IngestClient, list[bytes]]]:
    published: list[bytes] = []
    patch = pytest.MonkeyPatch()
    for key, value in {
        "WEBHOOK_SECRETS": DEV_SECRET,
        "GOOGLE_CLOUD_PROJECT": "fuzz",
        "EVENTS_TOPIC": "supaglue-events",
        "QUARANTINE_TOPIC": "supaglue-quarantine",
        "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",
        "MAX_BODY_BYTES": "2000",
    }.items():
        patch.setenv(key, value)

    async def record(_self: object, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        assert all(len(v.encode()) <= 1024 for v in attributes.values())
        published.append(data)
        return str(len(published))

    patch.setattr(AsyncPublisher, "publish", record)
    client: IngestClient = ingest_client()
    yield client, published
    patch.undo()


@settings(
    max_examples=examples(300),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE"]),
    body=bodies(),
    headers=signature_headers(),
)
def test_unverified_requests_are_refused_without_a_publish(
    app_and_published: tuple[IngestClient, list[bytes]],
    method: str,
    body: bytes,
    headers: dict[str, str],
) -> None:
    client, published = app_and_published
    before = len(published)
    response = client.open("/", method=method, data=body, headers=headers)
    assert response.status_code < 500
    assert response.status_code in (401, 405, 413)
    assert len(published) == before


@settings(
    max_examples=examples(200),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=bodies(), branded=st.booleans())
def test_signed_bodies_of_any_shape_are_stored_exactly_once(
    app_and_published: tuple[IngestClient, list[bytes]], body: bytes, branded: bool
) -> None:
    client, published = app_and_published
    try:
        headers = signed_headers(body, branded=branded)
    except UnicodeDecodeError:
        return  # svix signs text; Svix never sends a body that is not UTF-8
    before = len(published)
    response: Any = client.post("/", data=body, headers=headers)
    if len(body) > 2000:
        assert response.status_code == 413
        assert len(published) == before
        return
    assert response.status_code == 204
    assert published[before:] == [body]
