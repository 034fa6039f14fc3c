"""A small fake of Supaglue's management API (v2): the three listings the reconciler reads.

`GET /mgmt/v2/sync-runs` (filters `end_timestamp`, `start_timestamp`, `customer_id`,
`provider_name`, `status`, `object`; cursor paging), `GET /mgmt/v2/syncs` (cursor paging) and
`GET /mgmt/v2/customers/{customer_id}/connections`, shaped as in
handlers/reconcile/mgmt-openapi.json and answered only with the right `x-api-key`. What it
holds is changed through `/_fake/...` (not Supaglue's API): `python -m ops supaglue` and the
tests add runs and connections, delete connections, pause syncs, and make the next answers
fail (a 500, a 429). Loopback only, one thread per request, in the process that starts it (the stack).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from ops.defaults import LOOPBACK, SUPAGLUE_ADMIN_PATH

# The key the local reconciler is given; anything else is answered 401, as Supaglue does.
DEV_API_KEY: Final = "local-supaglue-api-key"
APPLICATION_ID: Final = "local-application"
ADMIN: Final = SUPAGLUE_ADMIN_PATH
DEFAULT_PAGE_SIZE: Final = 100
_CONNECTIONS = re.compile(r"^/mgmt/v2/customers/([^/]+)/connections$")
_ADMIN_CONNECTION = re.compile(rf"^{ADMIN}/connections/([^/]+)/([^/]+)$")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _offset(cursor: str) -> int:
    try:
        offset = json.loads(base64.urlsafe_b64decode(cursor.encode()))["offset"]
    except (ValueError, KeyError, TypeError):
        raise ValueError("invalid cursor") from None
    if not isinstance(offset, int) or offset < 0:
        raise ValueError("invalid cursor")
    return offset


def _matches_time(value: str | None, condition: str) -> bool:
    """`>2021-01-06T03:24:53Z` or `<...`, as the API's timestamp filters take them."""
    if value is None:
        return False
    wanted = _time(condition[1:])
    return _time(value) > wanted if condition[0] == ">" else _time(value) < wanted


class FakeSupaglue:
    """The fake's data and its HTTP server; `start` serves it on a thread."""

    def __init__(self, port: int = 0, *, api_key: str = DEV_API_KEY) -> None:
        self.api_key = api_key
        self.runs: list[dict[str, Any]] = []
        self.connections: dict[str, list[dict[str, Any]]] = {}
        self.syncs: list[dict[str, Any]] = []
        # Statuses the next API requests are answered with, one each, before any data.
        self.faults: deque[dict[str, Any] | None] = deque()
        self.api_requests = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((LOOPBACK, port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> FakeSupaglue:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-supaglue", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Idempotent; a fake never started only closes its socket."""
        if self._thread is not None:
            # shutdown() waits for serve_forever, so only a started fake may call it.
            self._server.shutdown()
            self._thread = None
        self._server.server_close()

    # --- what it holds --------------------------------------------------------

    def add_run(self, **fields: Any) -> dict[str, Any]:
        """A finished object run (fields override the defaults); returns it as listed."""
        ended = fields.pop("end_timestamp", None) or _now()
        status = fields.pop("status", "SUCCESS")
        run = {
            "id": f"run_{uuid.uuid4().hex[:20]}",
            "sync_id": f"sync_{uuid.uuid4().hex[:12]}",
            "object_type": "standard",
            "object": "contact",
            "error_message": "sync failed (fake)" if status == "FAILURE" else None,
            "start_timestamp": (_time(ended) - timedelta(minutes=1)).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            ),
            "end_timestamp": None if status == "IN_PROGRESS" else ended,
            "application_id": APPLICATION_ID,
            "customer_id": "my-customer-1",
            "provider_name": "hubspot",
            "category": "crm",
            "connection_id": f"conn_{uuid.uuid4().hex[:12]}",
            "status": status,
            "num_records_synced": 0 if status != "SUCCESS" else 100,
            **fields,
        }
        with self._lock:
            self.runs.append(run)
        return run

    def add_connection(self, **fields: Any) -> dict[str, Any]:
        connection = {
            "id": f"conn_{uuid.uuid4().hex[:12]}",
            "application_id": APPLICATION_ID,
            "customer_id": "my-customer-1",
            "provider_id": f"prov_{uuid.uuid4().hex[:12]}",
            "provider_name": "hubspot",
            "category": "crm",
            "instance_url": "https://app.hubspot.com/contacts/1",
            **fields,
        }
        with self._lock:
            listed = self.connections.setdefault(str(connection["customer_id"]), [])
            listed[:] = [c for c in listed if c["provider_name"] != connection["provider_name"]]
            listed.append(connection)
        return connection

    def delete_connection(self, customer_id: str, provider_name: str) -> dict[str, Any] | None:
        with self._lock:
            listed = self.connections.get(customer_id, [])
            for connection in listed:
                if connection["provider_name"] == provider_name:
                    listed.remove(connection)
                    return connection
        return None

    def set_sync(self, **fields: Any) -> dict[str, Any]:
        """The object sync of (customer, provider, object), added or updated (e.g. paused)."""
        key = ("customer_id", "provider_name", "object")
        with self._lock:
            for sync in self.syncs:
                if all(sync[k] == fields.get(k, sync[k]) for k in key):
                    sync.update(fields)
                    return dict(sync)
            sync = {
                "id": f"sync_{uuid.uuid4().hex[:12]}",
                "type": "object",
                "object_type": "standard",
                "object": "contact",
                "connection_id": f"conn_{uuid.uuid4().hex[:12]}",
                "sync_config_id": f"config_{uuid.uuid4().hex[:12]}",
                "paused": False,
                "provider_name": "hubspot",
                "customer_id": "my-customer-1",
                **fields,
            }
            self.syncs.append(sync)
            return dict(sync)

    def fail_next(self, *statuses: int, retry_after: int | None = None, after: int = 0) -> None:
        """Answer API requests with `statuses`, one each, once `after` more were answered."""
        with self._lock:
            self.faults.extend([None] * after)
            self.faults.extend({"status": s, "retry_after": retry_after} for s in statuses)

    # --- the API ----------------------------------------------------------------

    def list_runs(self, query: dict[str, str]) -> list[dict[str, Any]]:
        with self._lock:
            runs = list(self.runs)
        for name in ("customer_id", "provider_name", "object"):
            if name in query:
                runs = [r for r in runs if r.get(name) == query[name]]
        if "status" in query:
            runs = [r for r in runs if str(r["status"]).lower() == query["status"].lower()]
        for name in ("start_timestamp", "end_timestamp"):
            if name in query:
                runs = [r for r in runs if _matches_time(r.get(name), query[name])]
        return runs

    def list_syncs(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.syncs)

    def list_connections(self, customer_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.connections.get(customer_id, []))

    def next_fault(self) -> dict[str, Any] | None:
        with self._lock:
            self.api_requests += 1
            return self.faults.popleft() if self.faults else None


def _page(items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
    size = int(query.get("page_size", DEFAULT_PAGE_SIZE))
    start = _offset(query["cursor"]) if query.get("cursor") else 0
    end = start + size
    return {
        "next": _cursor(end) if end < len(items) else None,
        "previous": _cursor(max(0, start - size)) if start else None,
        "total_count": len(items),
        "results": items[start:end],
    }


def _handler(fake: FakeSupaglue) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the stack streams the services' logs, not this fake's."""

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, title: str, headers: dict[str, str] | None = None) -> None:
            error = {
                "id": str(uuid.uuid4()),
                "detail": title,
                "problem_type": "FAKE_ERROR",
                "title": title,
                "code": "FAKE_ERROR",
                "status": str(status),
                "meta": {"origin": "supaglue"},
            }
            self._send(status, {"errors": [error]}, headers)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            return body

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if url.path == f"{ADMIN}/state":
                self._send(
                    200, {"runs": fake.runs, "connections": fake.connections, "syncs": fake.syncs}
                )
                return
            if self.headers.get("x-api-key") != fake.api_key:
                self._error(401, "Unauthorized")
                return
            fault = fake.next_fault()
            if fault is not None:
                after = fault["retry_after"]
                headers = {"retry-after": str(after)} if after is not None else {}
                self._error(fault["status"], "injected fault", headers)
                return
            connections = _CONNECTIONS.match(url.path)
            try:
                if url.path == "/mgmt/v2/sync-runs":
                    self._send(200, _page(fake.list_runs(query), query))
                elif url.path == "/mgmt/v2/syncs":
                    self._send(200, _page(fake.list_syncs(), query))
                elif connections:
                    self._send(200, fake.list_connections(unquote(connections.group(1))))
                else:
                    self._error(404, "Not found")
            except ValueError as exc:
                self._error(400, str(exc))

        def do_POST(self) -> None:
            routes: dict[str, Callable[..., Any]] = {
                f"{ADMIN}/sync-runs": fake.add_run,
                f"{ADMIN}/connections": fake.add_connection,
                f"{ADMIN}/syncs": fake.set_sync,
            }
            try:
                body = self._body()
                if self.path == f"{ADMIN}/faults":
                    fake.fail_next(
                        *body["statuses"],
                        retry_after=body.get("retry_after"),
                        after=int(body.get("after", 0)),
                    )
                    self._send(200, {"queued": len(fake.faults)})
                elif self.path in routes:
                    self._send(201, routes[self.path](**body))
                else:
                    self._error(404, "Not found")
            except (ValueError, KeyError, TypeError) as exc:
                self._error(400, f"{type(exc).__name__}: {exc}")

        def do_DELETE(self) -> None:
            match = _ADMIN_CONNECTION.match(self.path)
            if not match:
                self._error(404, "Not found")
                return
            deleted = fake.delete_connection(unquote(match.group(1)), unquote(match.group(2)))
            if deleted is None:
                self._error(404, "no such connection")
            else:
                self._send(200, deleted)

    return Handler
