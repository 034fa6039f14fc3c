"""The inspector's HTTP side: one GET page and a health check, on loopback only.

Thin on purpose: the query parameters become a Query, ops/inspector/stored.py reads, and
ops/inspector/journey.py builds the page the template renders. The clients are created on
the first request, not when the module loads.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final

import jinja2
import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from ops import defaults
from ops.cli.errors import CliError, one_line
from ops.inspector import stored
from ops.inspector.journey import Page, Query, build_page
from ops.inspector.settings import InspectorSettings

HEALTH_PATH: Final = "/healthz"
# Only the page's own inline styles; no script, no frame, no form posted elsewhere.
_POLICY: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# A page on loopback is still reachable from a browser's other tabs through a name that
# resolves to 127.0.0.1 (DNS rebinding): only these names get an answer.
_HOSTS: Final = [defaults.LOOPBACK, "localhost"]

Inspect = Callable[[Query], Page]


def templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("ops.inspector", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def inspector(settings: InspectorSettings) -> Inspect:
    """Read and build a page for a query; the clients are made once, on the first call."""
    made: list[stored.Clients] = []
    lock = threading.Lock()
    table = settings.routing()
    source = stored.where(settings)

    def inspect(query: Query) -> Page:
        with lock:
            if not made:
                made.append(stored.connect(settings))
        now = datetime.now(UTC)
        return build_page(
            stored.read(made[0], settings, query),
            query,
            table=table,
            now=now,
            rows=settings.rows,
            source=source,
        )

    return inspect


def create_app(inspect: Inspect) -> Starlette:
    environment = templates()

    def page(request: Request) -> Response:
        query = Query.from_params(request.query_params)
        try:
            shown = inspect(query)
        except CliError as exc:
            body = environment.get_template("error.html").render(
                query=query, error=one_line(str(exc))
            )
            return _html(body, status_code=503)
        return _html(environment.get_template("page.html").render(page=shown, query=query))

    def health(_request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            # Sync endpoints: Starlette runs them on its thread pool, as the clients block.
            Route("/", page, methods=["GET"]),
            Route(HEALTH_PATH, health, methods=["GET"]),
        ],
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=_HOSTS)],
    )


def _html(body: str, *, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(
        body,
        status_code=status_code,
        headers={"Content-Security-Policy": _POLICY, "Cache-Control": "no-store"},
    )


def parse_args(argv: Sequence[str] | None = None) -> InspectorSettings:
    parser = argparse.ArgumentParser(
        prog="python -m ops.inspector",
        description="Serve a read-only page of recent webhooks and their journeys through the "
        f"handlers, on {defaults.LOOPBACK} only.",
    )
    parser.add_argument("--project", help="default $GOOGLE_CLOUD_PROJECT")
    parser.add_argument(
        "--port", type=int, help=f"default $INSPECTOR_PORT, else {defaults.INSPECTOR_PORT}"
    )
    parser.add_argument("--database", help="default $FIRESTORE_DATABASE, else (default)")
    parser.add_argument("--prefix", help="the names' prefix (default $TOPIC_PREFIX, else supaglue)")
    parser.add_argument(
        "--hook-events",
        help="the hooks route's event types, as Terraform's hook_events (default $HOOK_EVENTS)",
    )
    parser.add_argument(
        "--firestore-host",
        help="the Firestore emulator's host:port (default $FIRESTORE_EMULATOR_HOST); without "
        "one, the real service with application default credentials",
    )
    parser.add_argument(
        "--emulator-host",
        help="the Pub/Sub emulator's host:port (default $PUBSUB_EMULATOR_HOST); without one, "
        "the real service",
    )
    args = parser.parse_args(argv)
    given = {
        "project": args.project,
        "port": args.port,
        "database": args.database,
        "prefix": args.prefix,
        "hook_events": args.hook_events,
        "firestore_emulator_host": args.firestore_host,
        "pubsub_emulator_host": args.emulator_host,
    }
    try:
        return InspectorSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        parser.error(f"invalid settings: {problems} (give --project, or $GOOGLE_CLOUD_PROJECT)")


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    # The Firestore client finds its emulator in the environment only.
    if settings.firestore_emulator_host:
        os.environ["FIRESTORE_EMULATOR_HOST"] = settings.firestore_emulator_host
    else:
        os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
    print(
        f"inspector: http://{defaults.LOOPBACK}:{settings.port}/ (read-only) for "
        f"{stored.where(settings)}",
        flush=True,
    )
    try:
        uvicorn.run(
            create_app(inspector(settings)),
            host=defaults.LOOPBACK,
            port=settings.port,
            log_level="warning",
        )
    except KeyboardInterrupt:
        return 0
    except SystemExit as exc:
        # uvicorn exits 1 when it cannot bind.
        print(f"error: the inspector could not serve on port {settings.port}", file=sys.stderr)
        return int(exc.code or 1)
    return 0
