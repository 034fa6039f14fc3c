"""The events archive: the Avro files the Cloud Storage subscription writes (terraform/archive.tf),
read back and republished with their original attributes and a trace of their own
(`replay --from-archive`).

With `write_metadata`, each file is an Avro container of records
`{subscription_name, message_id, publish_time, attributes, data}` (Pub/Sub's documentation,
Cloud Storage subscriptions, Avro format): `ARCHIVE_SCHEMA` below. The archive is read from
its bucket (`gs://BUCKET/PREFIX`) or from a directory holding copies of its files; a message
is republished only if it was published in [since, until), once per message id, and counted
as replayed only once Pub/Sub confirmed the republish. The handlers' ledger skips what
already took effect.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO, Any, Final

import fastavro

from ops.cli.errors import CliError
from shared.contract import retraced

ARCHIVE_PREFIX: Final = "events/"
ARCHIVE_SUFFIX: Final = ".avro"
# What a Cloud Storage subscription with write_metadata writes, field for field.
ARCHIVE_SCHEMA: Final = {
    "type": "record",
    "name": "PubsubMessage",
    "fields": [
        {"name": "subscription_name", "type": "string"},
        {"name": "message_id", "type": "string"},
        {"name": "publish_time", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "attributes", "type": {"type": "map", "values": "string"}},
        {"name": "data", "type": "bytes"},
    ],
}


@dataclass(frozen=True)
class Archived:
    message_id: str
    publish_time: datetime
    attributes: dict[str, str]
    data: bytes
    file: str


@dataclass
class ArchiveReport:
    replayed: list[str] = field(default_factory=list)
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)


def read_file(stream: IO[bytes], name: str) -> Iterator[Archived]:
    """The messages of one archive file."""
    try:
        records = fastavro.reader(stream)
    except (ValueError, fastavro.read.SchemaResolutionError) as exc:
        raise CliError(f"{name} is not an Avro file of the archive ({exc})") from None
    for record in records:
        if not isinstance(record, dict) or "attributes" not in record:
            raise CliError(f"{name} holds records without attributes: was write_metadata on?")
        published = record["publish_time"]
        if isinstance(published, int):
            published = datetime.fromtimestamp(published / 1_000_000, UTC)
        yield Archived(
            message_id=str(record["message_id"]),
            publish_time=published,
            attributes=dict(record["attributes"]),
            data=bytes(record["data"]),
            file=name,
        )


def _files(source: str) -> Iterator[tuple[str, Callable[[], IO[bytes]]]]:
    """(name, opener) of every archive file under `source`, in name order (time order)."""
    if source.startswith("gs://"):
        # Imported here: only a replay from the cloud needs the storage client.
        from google.cloud import storage  # type: ignore[attr-defined]  # noqa: PLC0415

        bucket, _, prefix = source.removeprefix("gs://").partition("/")
        client = storage.Client()
        for blob in sorted(client.list_blobs(bucket, prefix=prefix), key=lambda b: b.name):
            if blob.name.endswith(ARCHIVE_SUFFIX):
                yield f"gs://{bucket}/{blob.name}", partial(_download, blob)
        return
    root = Path(source)
    if not root.is_dir():
        raise CliError(f"--archive {source} is neither gs://BUCKET/PREFIX nor a directory", code=2)
    for path in sorted(root.rglob(f"*{ARCHIVE_SUFFIX}")):
        yield str(path), partial(_open, path)


def _open(path: Path) -> IO[bytes]:
    return path.open("rb")


def _download(blob: Any) -> IO[bytes]:
    return io.BytesIO(blob.download_as_bytes())


def archived(source: str, *, since: datetime, until: datetime) -> Iterator[Archived]:
    """Each message published in [since, until), once (a subscription may write one twice)."""
    seen: set[str] = set()
    for name, opener in _files(source):
        with opener() as stream:
            for message in read_file(stream, name):
                if since <= message.publish_time < until and message.message_id not in seen:
                    seen.add(message.message_id)
                    yield message


def replay(
    publisher: Any,
    topic: str,
    messages: Iterable[Archived],
    *,
    select: Callable[[Archived], bool] = lambda _m: True,
    dry_run: bool = False,
    progress: Callable[[str], None] = lambda _line: None,
    timeout: float = 30.0,
) -> ArchiveReport:
    """Republish the chosen messages: their data byte for byte, their attributes with a trace
    of their own (shared.contract.retraced)."""
    report = ArchiveReport()
    for number, message in enumerate(messages, start=1):
        event = message.attributes.get("event_type", "-")
        if not select(message):
            report.skipped += 1
            continue
        if dry_run:
            report.replayed.append(message.message_id)
            progress(f"[{number}] would replay {message.message_id} {event} ({message.file})")
            continue
        try:
            new_id = publisher.publish(topic, message.data, **retraced(message.attributes)).result(
                timeout=timeout
            )
        except Exception as exc:  # noqa: BLE001
            report.failed[message.message_id] = f"{type(exc).__name__}: {exc}"
            progress(f"[{number}] FAILED {message.message_id}: {exc}")
            continue
        report.replayed.append(message.message_id)
        progress(f"[{number}] replayed {message.message_id} {event} as {new_id}")
    return report
