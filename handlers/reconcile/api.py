"""Supaglue's management API (v2), the three listings the reconciler reads.

The shapes are those of `mgmt-openapi.json` beside this file, the parts of Supaglue's
published spec that this code reads; a test holds the models and the local fake to it.
Every request is counted against the pass's budget; 429 and 5xx are retried with a back-off
(the API's Retry-After when it gives one) that never outlasts the pass; what still fails
is ApiUnavailable, and the pass stops there, to go on next time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal
from urllib.parse import quote

import requests
from pydantic import BaseModel, ConfigDict, ValidationError

from handlers.errors import HandlerError, Retry
from shared.errors import PermanentError
from shared.log import Severity

API_PREFIX: Final = "/mgmt/v2"
SYNC_RUNS_PATH: Final = f"{API_PREFIX}/sync-runs"
SYNCS_PATH: Final = f"{API_PREFIX}/syncs"
CONNECTIONS_PATH: Final = f"{API_PREFIX}/customers/{{customer_id}}/connections"
API_KEY_HEADER: Final = "x-api-key"
_RETRIED_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
# Retry-After is honoured up to this; a longer one waits for the next pass instead.
_MAX_RETRY_AFTER_SECONDS: Final = 60.0


class ApiUnavailable(Retry):
    """The API kept answering 429 or 5xx (or not at all): the next pass goes on from here."""

    event = "reconcile_api_unavailable"


class ApiRefused(HandlerError, PermanentError):
    """The API refused the request itself (401, 403, 400...): a wrong key or URL, not load."""

    status: ClassVar[int] = 500
    severity: ClassVar[Severity] = "ERROR"
    event: ClassVar[str] = "reconcile_failed"


class BudgetSpent(Exception):
    """The pass used its requests or its time; it stops and the next one goes on."""

    def __init__(self, what: Literal["requests", "time"]) -> None:
        super().__init__(what)
        self.what = what


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)


class SyncRun(_Model):
    """`sync_run`: one run of one sync, object or (deprecated) entity."""

    id: str
    sync_id: str | None = None
    customer_id: str
    provider_name: str
    connection_id: str
    category: str | None = None
    status: Literal["SUCCESS", "FAILURE", "IN_PROGRESS"]
    object_type: str | None = None
    object: str | None = None
    entity_id: str | None = None
    error_message: str | None = None
    num_records_synced: float | None = None
    start_timestamp: str
    end_timestamp: str | None = None


class Connection(_Model):
    """`connection`: a customer's connection to one provider."""

    id: str
    application_id: str
    customer_id: str
    provider_id: str
    provider_name: str
    category: str
    instance_url: str | None = None


class Sync(_Model):
    """`sync_with_provider_and_customer`: one sync, and whether it is paused."""

    id: str
    type: str
    object_type: str | None = None
    object: str | None = None
    entity_id: str | None = None
    connection_id: str
    paused: bool
    provider_name: str
    customer_id: str


@dataclass
class Budget:
    """What one pass may still spend: API requests, and time (a monotonic deadline)."""

    requests: int
    deadline: float
    used: int = 0

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def spend(self) -> None:
        if self.left() <= 0:
            raise BudgetSpent("time")
        if self.used >= self.requests:
            raise BudgetSpent("requests")
        self.used += 1


@dataclass
class SupaglueApi:
    """The management API at `base_url`, called with the API key as `x-api-key`."""

    base_url: str
    api_key: str
    budget: Budget
    retries: int = 4
    backoff_seconds: float = 1.0
    timeout_seconds: float = 20.0
    session: requests.Session | None = None
    sleep: Callable[[float], None] = time.sleep
    retried: int = 0

    def sync_runs(
        self, *, ended_after: str, page_size: int, cursor: str | None = None
    ) -> Iterator[tuple[list[SyncRun], str | None]]:
        """Pages of the runs that ended after `ended_after` (ISO 8601), each with the cursor
        of the page after it (None on the last), from `cursor` on."""
        params = {"end_timestamp": f">{ended_after}", "page_size": str(page_size)}
        yield from self._pages(SYNC_RUNS_PATH, params, SyncRun, cursor)

    def syncs(self, *, page_size: int) -> Iterator[tuple[list[Sync], str | None]]:
        yield from self._pages(SYNCS_PATH, {"page_size": str(page_size)}, Sync, None)

    def connections(self, customer_id: str) -> list[Connection]:
        body = self._get(CONNECTIONS_PATH.format(customer_id=quote(customer_id, safe="")), {})
        if not isinstance(body, list):
            raise ApiRefused(f"connections of {customer_id}: not a list")
        return [_parse(Connection, item) for item in body]

    def _pages(
        self, path: str, params: Mapping[str, str], model: type[Any], cursor: str | None
    ) -> Iterator[tuple[list[Any], str | None]]:
        while True:
            body = self._get(path, {**params, **({"cursor": cursor} if cursor else {})})
            if not isinstance(body, dict) or not isinstance(body.get("results"), list):
                raise ApiRefused(f"{path}: not a page of results")
            following = body.get("next") or None
            yield [_parse(model, item) for item in body["results"]], following
            if following is None:
                return
            cursor = str(following)

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        session = self.session = self.session or requests.Session()
        url = self.base_url.rstrip("/") + path
        delay = self.backoff_seconds
        for attempt in range(self.retries + 1):
            self.budget.spend()
            try:
                response = session.get(
                    url,
                    params=params,
                    headers={API_KEY_HEADER: self.api_key, "accept": "application/json"},
                    timeout=min(self.timeout_seconds, max(self.budget.left(), 0.1)),
                )
            except requests.RequestException as exc:
                problem, wait = f"{type(exc).__name__}: {exc}", delay
            else:
                if response.status_code < 300:
                    try:
                        return response.json()
                    except ValueError:
                        raise ApiRefused(
                            f"GET {path} answered {response.status_code}, not JSON"
                        ) from None
                if response.status_code not in _RETRIED_STATUSES:
                    raise ApiRefused(f"GET {path} answered {response.status_code}")
                problem = f"answered {response.status_code}"
                wait = _retry_after(response) or delay
            if attempt == self.retries or wait >= self.budget.left():
                raise ApiUnavailable(f"GET {path} {problem} ({attempt + 1} attempts)")
            self.retried += 1
            self.sleep(wait)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds <= _MAX_RETRY_AFTER_SECONDS else None


def _parse(model: type[Any], item: Any) -> Any:
    try:
        return model.model_validate(item)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        raise ApiRefused(f"a {model.__name__} the code cannot read ({fields})") from None
