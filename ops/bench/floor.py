"""The benchmark's floor: the ingest function with Pub/Sub taken out.

`make bench-ingest` serves it like the others (target `ingest`, this file as the
source). It runs ingest's own code, the very `ingest_fn.main.ingest` (read,
verify, classify, log, answer), but its publisher answers at once without
sending anything. Its CPU per request is what ingest costs before it waits for
Pub/Sub, so the benchmark can show how much of the gap to the bare async
function is the function's work and how much is the publish. Nothing here is
deployed; it never stores a message.
"""

from __future__ import annotations

from collections.abc import Mapping

import ingest_fn.main as ingest_main
from ingest_fn import publisher
from ingest_fn.main import ingest
from ingest_fn.service import Ingestor

__all__ = ["ingest"]


class InstantPublisher:
    """Confirms every message at once without sending it."""

    def __init__(self, project_id: str) -> None:
        self._project_id = project_id

    def topic_path(self, topic_id: str) -> str:
        return publisher.topic_path(self._project_id, topic_id)

    async def publish(self, topic_path: str, data: bytes, attributes: Mapping[str, str]) -> str:
        del topic_path, data, attributes
        return "0"


# The function's own settings and entry point; only the publisher is swapped.
_settings = ingest_main._SETTINGS
ingest_main._INGESTOR = Ingestor(_settings, InstantPublisher(_settings.google_cloud_project))
