"""`status`: connections, sync state and backfills from Firestore, as readable tables.

Against the emulator with --firestore-host (or $FIRESTORE_EMULATOR_HOST), or a
real project with application default credentials.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from google.cloud import firestore

from handlers.store import BACKFILLS, CONNECTIONS, SYNC_STATE

TABLES: dict[str, tuple[str, Sequence[str]]] = {
    "connections": (
        CONNECTIONS,
        ("customer_id", "provider_name", "status", "last_result", "last_event_type", "updated_at"),
    ),
    "sync state": (
        SYNC_STATE,
        (
            "customer_id",
            "provider_name",
            "object",
            "last_result",
            "consecutive_failures",
            "last_records_synced",
            "total_runs",
            "updated_at",
        ),
    ),
    "backfills": (
        BACKFILLS,
        ("backfill_id", "customer_id", "object", "state", "chunks_done", "records", "updated_at"),
    ),
}


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table; columns as wide as their widest cell."""
    body = [[cell(row.get(column)) for column in columns] for row in rows]
    widths = [
        max([len(column), *(len(line[i]) for line in body)]) for i, column in enumerate(columns)
    ]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in body]
    return "\n".join(line.rstrip() for line in lines)


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "status", help="connections, sync state and backfills from Firestore"
    )
    parser.add_argument(
        "--project",
        default=os.environ.get("GOOGLE_CLOUD_PROJECT", "local-dev"),
        help="default $GOOGLE_CLOUD_PROJECT, else local-dev",
    )
    parser.add_argument(
        "--firestore-host",
        default=os.environ.get("FIRESTORE_EMULATOR_HOST"),
        help="the Firestore emulator (default $FIRESTORE_EMULATOR_HOST); without it, the real service",
    )
    parser.add_argument("--limit", type=int, default=50, help="rows per table (newest first)")
    parser.set_defaults(handler=_run_status)


def _run_status(args: argparse.Namespace) -> int:
    if args.firestore_host:
        os.environ["FIRESTORE_EMULATOR_HOST"] = args.firestore_host
    db = firestore.Client(project=args.project)
    for title, (collection, columns) in TABLES.items():
        query = (
            db.collection(collection)
            .order_by("updated_at", direction=firestore.Query.DESCENDING)
            .limit(args.limit)
        )
        rows = [snapshot.to_dict() or {} for snapshot in query.stream()]
        print(f"\n{title} ({len(rows)} shown)")
        print(table(rows, columns) if rows else "  (none)")
    return 0
