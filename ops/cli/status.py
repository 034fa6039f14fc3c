"""`status`: connections, sync state and backfills from Firestore, as readable tables.

Against the emulator with --firestore-host (or $FIRESTORE_EMULATOR_HOST), or a
real project with application default credentials. Each table shows the most
recently updated documents first (every handler sets `updated_at`).

Reading (`read_status`) and formatting (`format_status`) are separate, so the
formatting is a pure function over plain dicts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from google.cloud import firestore

from handlers.store import BACKFILLS, CONNECTIONS, SYNC_STATE
from ops import defaults
from ops.cli.args import Commands, positive
from ops.cli.errors import CliError, ensure_listening, firestore_failures, firestore_place

# The project `make run` uses; the emulator's default here, as it is `ops watch`'s.
EMULATOR_PROJECT: Final = defaults.LOCAL_PROJECT
EMULATOR_ENV: Final = "FIRESTORE_EMULATOR_HOST"
# Cells longer than this (error messages) are cut, so a row stays on one line.
MAX_CELL: Final = 48
_QUERY_TIMEOUT_SECONDS: Final = 30.0


@dataclass(frozen=True)
class Column:
    field: str
    header: str


@dataclass(frozen=True)
class Table:
    title: str
    collection: str
    columns: tuple[Column, ...]


def _columns(*pairs: tuple[str, str]) -> tuple[Column, ...]:
    return tuple(Column(field, header) for field, header in pairs)


TABLES: Final = (
    Table(
        "connections",
        CONNECTIONS,
        _columns(
            ("customer_id", "customer"),
            ("provider_name", "provider"),
            ("status", "status"),
            ("last_event_type", "last event"),
            ("last_result", "result"),
            ("updated_at", "updated (UTC)"),
        ),
    ),
    Table(
        "sync state",
        SYNC_STATE,
        _columns(
            ("customer_id", "customer"),
            ("provider_name", "provider"),
            ("object", "object"),
            ("last_result", "last result"),
            ("consecutive_failures", "failures in a row"),
            ("last_records_synced", "records"),
            ("total_runs", "runs"),
            ("updated_at", "updated (UTC)"),
            ("last_error_message", "last error"),
        ),
    ),
    Table(
        "backfills",
        BACKFILLS,
        _columns(
            ("backfill_id", "backfill"),
            ("customer_id", "customer"),
            ("provider_name", "provider"),
            ("object", "object"),
            ("state", "state"),
            ("chunks_done", "chunks"),
            ("records", "records"),
            ("updated_at", "updated (UTC)"),
            ("last_error", "last error"),
        ),
    ),
)


def cell(value: Any) -> str:
    """One value as table text: `-` for none, times in UTC to the second, one line, cut short."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        when = value.astimezone(UTC) if value.tzinfo is not None else value
        return when.strftime("%Y-%m-%d %H:%M:%S")
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 3] + "..."


def table(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str],
    headers: Sequence[str] | None = None,
) -> str:
    """A plain-text table of `columns` (fields of each row); columns as wide as their widest cell."""
    headers = list(headers or columns)
    body = [[cell(row.get(column)) for column in columns] for row in rows]
    widths = [
        max([len(header), *(len(line[i]) for line in body)]) for i, header in enumerate(headers)
    ]
    lines = ["  ".join(c.ljust(w) for c, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in body]
    return "\n".join(line.rstrip() for line in lines)


def format_status(
    rows_by_collection: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    source: str,
    limit: int | None = None,
) -> str:
    """Every table of TABLES, from documents (as dicts) by collection name, newest first."""
    parts = [source]
    for spec in TABLES:
        rows = list(rows_by_collection.get(spec.collection, ()))
        shown = f"{len(rows)}, newest first" if rows else "none"
        if limit is not None and len(rows) >= limit:
            shown = f"the newest {limit}; there may be more (--limit)"
        parts.append(f"\n{spec.title} ({shown})")
        if rows:
            parts.append(
                table(
                    rows,
                    [c.field for c in spec.columns],
                    [c.header for c in spec.columns],
                )
            )
    return "\n".join(parts)


def read_status(db: firestore.Client, *, limit: int) -> dict[str, list[dict[str, Any]]]:
    """The `limit` most recently updated documents of each collection TABLES shows."""
    result: dict[str, list[dict[str, Any]]] = {}
    for spec in TABLES:
        query = (
            db.collection(spec.collection)
            .order_by("updated_at", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        result[spec.collection] = [
            snapshot.to_dict() or {} for snapshot in query.stream(timeout=_QUERY_TIMEOUT_SECONDS)
        ]
    return result


@contextlib.contextmanager
def _emulator(host: str | None) -> Iterator[None]:
    """The Firestore client reads the emulator's address from the environment only."""
    saved = os.environ.get(EMULATOR_ENV)
    if host:
        os.environ[EMULATOR_ENV] = host
    else:
        os.environ.pop(EMULATOR_ENV, None)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(EMULATOR_ENV, None)
        else:
            os.environ[EMULATOR_ENV] = saved


def add_command(commands: Commands) -> None:
    parser = commands.add_parser(
        "status",
        help="connections, sync state and backfills from Firestore",
        description="Print the handlers' state in Firestore as tables: connections, "
        "sync state and backfills, most recently updated first.",
    )
    parser.add_argument(
        "--firestore-host",
        default=os.environ.get(EMULATOR_ENV),
        help=f"the Firestore emulator's host:port (default ${EMULATOR_ENV}); "
        "without one, the real service with application default credentials",
    )
    parser.add_argument(
        "--project",
        help=f"default: {EMULATOR_PROJECT} on the emulator; otherwise $GOOGLE_CLOUD_PROJECT, "
        "else the credentials' project",
    )
    parser.add_argument(
        "--database",
        default=os.environ.get("FIRESTORE_DATABASE", "(default)"),
        help="the Firestore database, as the handlers' FIRESTORE_DATABASE "
        "(default $FIRESTORE_DATABASE, else (default))",
    )
    parser.add_argument(
        "--limit", type=positive, default=50, help="rows per table, newest first (default 50)"
    )
    parser.set_defaults(handler=_run_status)


def _run_status(args: argparse.Namespace) -> int:
    host: str | None = args.firestore_host
    if host:
        ensure_listening(host, flag="--firestore-host")
        project = args.project or EMULATOR_PROJECT
    else:
        project = args.project or os.environ.get("GOOGLE_CLOUD_PROJECT")
    where = firestore_place(host, project, args.database)
    with _emulator(host), firestore_failures(where):
        try:
            db = firestore.Client(project=project, database=args.database)
        except OSError:
            # Raised when neither --project, the environment nor the credentials name one.
            raise CliError(
                "no project: give --project, or --firestore-host for the emulator"
            ) from None
        rows = read_status(db, limit=args.limit)
        if not any(rows.values()) and not _has_documents(db):
            raise CliError(
                f"{where} has no documents at all: nothing was handled there yet, or --project "
                f"or --firestore-host is wrong (`make run` uses project {EMULATOR_PROJECT})"
            )
    source = (
        f"Firestore emulator {host}, project {db.project}"
        if host
        else f"Firestore of project {db.project}"
    ) + f", database {args.database}"
    print(format_status(rows, source=source, limit=args.limit))
    return 0


def _has_documents(db: firestore.Client) -> bool:
    """Whether any collection exists: the emulator serves every project, known or not."""
    return any(True for _ in db.collections(timeout=_QUERY_TIMEOUT_SECONDS))
