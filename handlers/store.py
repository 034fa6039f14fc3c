"""Firestore naming shared by the handlers, the worker and the operator CLI."""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

CONNECTIONS: Final = "connections"
SYNC_STATE: Final = "sync_state"
BACKFILLS: Final = "backfills"
# Per (customer, provider, object): the alerts service's count of failed syncs in a row.
ALERT_STATE: Final = "alert_state"
# Per (customer, provider): when its connection was last deleted, for every handler to see.
DELETED_CONNECTIONS: Final = "deleted_connections"


def doc_id(*parts: str) -> str:
    """A readable document id from parts that may contain '/' or ':'."""
    return ":".join(quote(part, safe="") for part in parts)
