"""Count what a Firestore client costs: document reads and writes, and transactions.

Wraps the client's generated API client, in the process that runs the code, so
what is counted is what the code sends, as Firestore bills it: a read per
document a lookup returns (found or missing) and per query result (at least
one per query), a write per write of a commit that succeeded (a failed commit
is not billed). The drain benchmark (ops/bench/drain.py) and the handlers'
cost tests use it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any

from google.cloud import firestore


@dataclass(frozen=True)
class Operations:
    reads: int = 0
    writes: int = 0
    transactions: int = 0
    rpcs: int = 0

    @property
    def billed(self) -> int:
        """What Firestore charges for: reads and writes (nothing here deletes)."""
        return self.reads + self.writes

    def __add__(self, other: Operations) -> Operations:
        return Operations(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: Operations) -> Operations:
        return Operations(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))


class Counter:
    """The operations counted so far (subtract two totals for what happened between)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = Operations()

    def add(self, **counts: int) -> None:
        with self._lock:
            self._total = self._total + Operations(**counts)

    @property
    def total(self) -> Operations:
        with self._lock:
            return self._total


class _CountingApi:
    """The generated API client, counting the calls that cost something."""

    def __init__(self, api: Any, counter: Counter) -> None:
        self._api = api
        self._counter = counter

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._api, name)
        counted = _COUNTED.get(name)
        if counted is None:
            return attribute
        counter = self._counter

        def call(*args: Any, **kwargs: Any) -> Any:
            return counted(counter, attribute, *args, **kwargs)

        return call


def _request_field(args: tuple[Any, ...], kwargs: dict[str, Any], name: str) -> Any:
    request = kwargs.get("request", args[0] if args else None)
    if isinstance(request, dict):
        return request.get(name)
    return getattr(request, name, None)


def _commit(counter: Counter, rpc: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    writes = len(list(_request_field(args, kwargs, "writes") or ()))
    counter.add(rpcs=1)
    response = rpc(*args, **kwargs)
    counter.add(writes=writes)
    return response


def _begin(counter: Counter, rpc: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    counter.add(rpcs=1, transactions=1)
    return rpc(*args, **kwargs)


def _rollback(counter: Counter, rpc: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    counter.add(rpcs=1)
    return rpc(*args, **kwargs)


def _lookup(counter: Counter, rpc: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[Any]:
    counter.add(rpcs=1)
    stream: Iterable[Any] = rpc(*args, **kwargs)

    def each() -> Iterator[Any]:
        for response in stream:
            if "found" in response or "missing" in response:
                counter.add(reads=1)
            yield response

    return each()


def _query(counter: Counter, rpc: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[Any]:
    counter.add(rpcs=1)
    stream: Iterable[Any] = rpc(*args, **kwargs)

    def each() -> Iterator[Any]:
        results = 0
        try:
            for response in stream:
                results += "document" in response
                yield response
        finally:
            # A query is billed one read even when it finds nothing.
            counter.add(reads=max(results, 1))

    return each()


_COUNTED: dict[str, Callable[..., Any]] = {
    "commit": _commit,
    "begin_transaction": _begin,
    "rollback": _rollback,
    "batch_get_documents": _lookup,
    "run_query": _query,
}


def count(client: firestore.Client) -> Counter:
    """Count every RPC `client` sends from now on; its counter (the same one if it already
    counts)."""
    api = client._firestore_api
    if isinstance(api, _CountingApi):
        return api._counter
    counter = Counter()
    # The client creates its generated API client on first use and keeps it here.
    client._firestore_api_internal = _CountingApi(api, counter)
    return counter
