"""Publish RPC benchmark: Google's PublisherAsyncClient against a raw grpc.aio call.

What it measures
    Our process's CPU (time.process_time) per Publish RPC and per message, and the
    wall time per RPC, for the same PublishRequests sent to a Pub/Sub emulator
    started here, on the event loop the function runs on (uvloop when installed):
    - raw: a grpc.aio unary-unary call registered on the channel, raw protobuf
      request and response (what ingest_fn/publisher.py ships);
    - gapic: google.pubsub_v1.PublisherAsyncClient.publish with the same request
      wrapped (not copied) in its proto-plus type, with an AsyncRetry as the
      publisher would pass one, and with retry=None.
    One RPC at a time (the cost of the call, not the emulator's queueing), batches
    of 1 and of 16 messages (the sync.complete sample and its attributes), rounds
    interleaved, after warming the emulator's JVM.

Run
    python -m ops.bench.publish [--rpcs 2000] [--rounds 3] [--warmup 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

import grpc
import uvloop
from google.api_core import retry_async
from google.pubsub_v1.services.publisher import PublisherAsyncClient
from google.pubsub_v1.types import pubsub as pubsub_types

from ops import pubsub_admin
from ops.local.emulators import start_pubsub

REPO: Final = Path(__file__).resolve().parents[2]
SAMPLE: Final = REPO / "shared" / "samples" / "sync.complete.json"
PROJECT: Final = "bench-publish"
TOPIC_ID: Final = "bench-publish"
ATTRIBUTES: Final = {
    "event_type": "sync.complete",
    "webhook_id": "msg_2bRKiZTfTCO5e2yPWQnHbcIWW2x",
    "webhook_timestamp": "1764000000",
    "source": "supaglue",
    "customer_id": "customer-1",
    "connection_id": "e6a1b2c3-0000-4000-8000-000000000000",
    "provider_name": "salesforce",
    "object": "contact",
}

Send = Callable[[Any], Awaitable[int]]


def raw_sender(host: str, topic: str) -> Send:
    channel = grpc.aio.insecure_channel(host)
    call = channel.unary_unary(
        "/google.pubsub.v1.Publisher/Publish",
        request_serializer=pubsub_types.PublishRequest.pb().SerializeToString,
        response_deserializer=pubsub_types.PublishResponse.pb().FromString,
        _registered_method=True,
    )
    metadata = (("x-goog-request-params", f"topic={topic}"),)

    async def send(request: Any) -> int:
        response = await call(request, timeout=8.0, metadata=metadata)
        return len(response.message_ids)

    return send


def gapic_sender(*, with_retry: bool) -> Send:
    client = PublisherAsyncClient()  # PUBSUB_EMULATOR_HOST: an insecure channel to the emulator
    wrap = pubsub_types.PublishRequest.wrap
    retryable = retry_async.if_exception_type(Exception)

    async def send(request: Any) -> int:
        retry = (
            retry_async.AsyncRetry(predicate=retryable, initial=0.05, maximum=1.0, timeout=8.0)
            if with_retry
            else None
        )
        response = await client.publish(request=wrap(request), retry=retry, timeout=8.0)
        return len(response.message_ids)

    return send


def request_of(topic: str, size: int) -> Any:
    data = SAMPLE.read_bytes()
    message = pubsub_types.PubsubMessage.pb()
    return pubsub_types.PublishRequest.pb()(
        topic=topic, messages=[message(data=data, attributes=ATTRIBUTES) for _ in range(size)]
    )


async def run(send: Send, request: Any, rpcs: int) -> tuple[float, float]:
    """CPU µs and wall ms per RPC over `rpcs` sequential RPCs."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(rpcs):
        await send(request)
    return (
        (time.process_time() - cpu) / rpcs * 1e6,
        (time.perf_counter() - wall) / rpcs * 1e3,
    )


async def bench(host: str, topic: str, opts: argparse.Namespace) -> None:
    senders = {
        "raw grpc.aio": raw_sender(host, topic),
        "gapic, AsyncRetry": gapic_sender(with_retry=True),
        "gapic, retry=None": gapic_sender(with_retry=False),
    }
    requests = {size: request_of(topic, size) for size in (1, 16)}
    for send in senders.values():
        await run(send, requests[16], opts.warmup // len(senders) // 16 + 1)
        await run(send, requests[1], opts.warmup // len(senders))
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for _ in range(opts.rounds):
        for size, request in requests.items():
            for name, send in senders.items():
                results.setdefault((name, size), []).append(await run(send, request, opts.rpcs))
    print(f"{'client':20} {'batch':>5} {'CPU us/RPC':>11} {'CPU us/msg':>11} {'wall ms/RPC':>11}")
    for (name, size), values in results.items():
        cpu = statistics.median(v[0] for v in values)
        wall = statistics.median(v[1] for v in values)
        low, high = min(v[0] for v in values), max(v[0] for v in values)
        print(
            f"{name:20} {size:5d} {cpu:11.0f} {cpu / size:11.1f} {wall:11.2f}"
            f"   (CPU {low:.0f}-{high:.0f} over {len(values)} rounds)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.publish", description=__doc__)
    parser.add_argument("--rpcs", type=int, default=2000, help="RPCs per client, batch and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=4000, help="unmeasured RPCs first")
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="the event loop"
    )
    opts = parser.parse_args(argv)
    emulator = start_pubsub(PROJECT)
    try:
        admin = pubsub_admin.publisher_client(emulator.host_port)
        topic = pubsub_admin.ensure_topic(admin, PROJECT, TOPIC_ID)
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host_port
        if opts.loop == "uvloop":
            uvloop.run(bench(emulator.host_port, topic, opts))
        else:
            asyncio.run(bench(emulator.host_port, topic, opts))
        print(f"event loop: {opts.loop}")
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
