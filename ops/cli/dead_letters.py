"""Dead letters and replay: inspect, republish, and rewind subscriptions.

Plain functions over Pub/Sub clients, so they run the same against the
emulator and a real project; ops/cli/pubsub.py is the thin command line over them.
A replayed message goes back to its original topic with its original
attributes and a trace of its own (shared.contract.retraced), and its dead letter is acknowledged only once Pub/Sub confirmed
the republish; the handlers' ledger makes a replay of an already-handled
event harmless.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from google.api_core import exceptions as api_exceptions
from google.protobuf import timestamp_pb2

from shared.contract import Attr, retraced

# What the handlers and Pub/Sub's dead-letter policy add; removed before a replay.
DEAD_LETTER_ATTRIBUTES: Final = frozenset(
    {
        Attr.REASON.value,
        Attr.REASON_DETAIL.value,
        Attr.HANDLER.value,
        Attr.ORIGINAL_MESSAGE_ID.value,
    }
)
PUBSUB_DEAD_LETTER_PREFIX: Final = "CloudPubSubDeadLetter"
_PULL_BATCH: Final = 100
_LEASE_SECONDS: Final = 60
# `--since 7d` on a subscription that keeps seven days asks for what it holds: only a time
# clearly beyond the retention loses messages.
_RETENTION_SLACK: Final = timedelta(minutes=1)


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    ack_id: str
    data: bytes
    attributes: dict[str, str]
    publish_time: datetime | None

    @property
    def reason(self) -> str:
        if Attr.REASON.value in self.attributes:
            return self.attributes[Attr.REASON.value]
        if any(k.startswith(PUBSUB_DEAD_LETTER_PREFIX) for k in self.attributes):
            return "max_delivery_attempts"
        return "unknown"

    def original_attributes(self) -> dict[str, str]:
        return {
            key: value
            for key, value in self.attributes.items()
            if key not in DEAD_LETTER_ATTRIBUTES and not key.startswith(PUBSUB_DEAD_LETTER_PREFIX)
        }


@dataclass
class ReplayReport:
    replayed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _pull(subscriber: Any, subscription: str, limit: int) -> Iterator[DeadLetter]:
    """Pull up to `limit` messages, leasing them; stops when the subscription has no more."""
    pulled = 0
    while pulled < limit:
        response = subscriber.pull(
            subscription=subscription,
            max_messages=min(_PULL_BATCH, limit - pulled),
            return_immediately=True,
            timeout=30,
        )
        if not response.received_messages:
            return
        ids = [received.ack_id for received in response.received_messages]
        # Keep the batch leased while it is being shown or republished.
        subscriber.modify_ack_deadline(
            subscription=subscription, ack_ids=ids, ack_deadline_seconds=_LEASE_SECONDS
        )
        for received in response.received_messages:
            message = received.message
            pulled += 1
            yield DeadLetter(
                message_id=message.message_id,
                ack_id=received.ack_id,
                data=bytes(message.data),
                attributes=dict(message.attributes),
                publish_time=message.publish_time,
            )


def _release(subscriber: Any, subscription: str, ack_ids: Iterable[str]) -> None:
    """Give leased messages back at once, so they stay on the subscription untouched."""
    ids = list(ack_ids)
    for start in range(0, len(ids), _PULL_BATCH):
        with contextlib.suppress(api_exceptions.GoogleAPICallError):
            subscriber.modify_ack_deadline(
                subscription=subscription,
                ack_ids=ids[start : start + _PULL_BATCH],
                ack_deadline_seconds=0,
            )


def list_dead_letters(subscriber: Any, subscription: str, *, limit: int) -> list[DeadLetter]:
    """Read without consuming: every message listed stays on the subscription."""
    letters = list(_pull(subscriber, subscription, limit))
    _release(subscriber, subscription, (letter.ack_id for letter in letters))
    return letters


def replay(
    subscriber: Any,
    publisher: Any,
    subscription: str,
    topic: str,
    *,
    limit: int,
    dry_run: bool = False,
    select: Callable[[DeadLetter], bool] = lambda _letter: True,
    progress: Callable[[str], None] = lambda _line: None,
    timeout: float = 30.0,
) -> ReplayReport:
    """Republish chosen dead letters to `topic`; acknowledge each only after it is stored."""
    report = ReplayReport()
    keep: list[str] = []
    for number, letter in enumerate(_pull(subscriber, subscription, limit), start=1):
        if not select(letter):
            report.skipped.append(letter.message_id)
            keep.append(letter.ack_id)
            continue
        if dry_run:
            report.replayed.append(letter.message_id)
            keep.append(letter.ack_id)
            progress(f"[{number}] would replay {letter.message_id} ({letter.reason})")
            continue
        try:
            new_id = publisher.publish(
                topic, letter.data, **retraced(letter.original_attributes())
            ).result(timeout=timeout)
        except Exception as exc:  # noqa: BLE001
            # Not stored, so not acknowledged: the dead letter stays for the next attempt.
            report.failed[letter.message_id] = f"{type(exc).__name__}: {exc}"
            keep.append(letter.ack_id)
            progress(f"[{number}] FAILED {letter.message_id}: {exc}")
            continue
        subscriber.acknowledge(subscription=subscription, ack_ids=[letter.ack_id])
        report.replayed.append(letter.message_id)
        progress(f"[{number}] replayed {letter.message_id} as {new_id} ({letter.reason})")
    _release(subscriber, subscription, keep)
    return report


def seek(subscriber: Any, subscription: str, since: datetime) -> None:
    """Rewind a subscription to `since` (what that redelivers: `rewind`)."""
    timestamp = timestamp_pb2.Timestamp()
    timestamp.FromDatetime(since)
    subscriber.seek(request={"subscription": subscription, "time": timestamp}, timeout=30)


@dataclass(frozen=True)
class Rewind:
    """What a seek redelivers: lines to print, and a warning or an error to report."""

    lines: list[str]
    warning: str | None = None
    error: str | None = None


def rewind(
    subscription: str,
    since: datetime,
    *,
    retains_acked: bool,
    retention: timedelta,
    topic_retention: timedelta,
    now: datetime,
) -> Rewind:
    """What seeking `subscription` to `since` redelivers, from its and its topic's settings.

    A seek marks every message it can reach that was published before `since`
    acknowledged, and every one since then unacknowledged. It reaches acknowledged
    messages only where they are kept: by the subscription (`retain_acked_messages`,
    for its `retention`) or by its topic (`topic_retention`), and no further back.
    """
    name = subscription.rsplit("/", 1)[-1]
    when = since.isoformat(timespec="seconds")
    lines = [f"{subscription} rewound to {when}"]
    kept_by = []
    if retains_acked:
        kept_by.append(f"it keeps acknowledged messages for {duration(retention)}")
    if topic_retention:
        kept_by.append(f"its topic keeps messages for {duration(topic_retention)}")
    reach = max(retention if retains_acked else timedelta(0), topic_retention)
    warning = error = None
    if reach:
        lines.append(
            f"  {' and '.join(kept_by)}: every message published since then is delivered "
            "again (a handler's ledger skips events that already took effect)"
        )
        oldest = now - reach
        if since < oldest - _RETENTION_SLACK:
            warning = (
                f"--since {when} is further back than {name} can replay ({duration(reach)}, "
                f"back to {oldest.isoformat(timespec='seconds')}): messages published before then "
                "are not delivered again"
            )
    else:
        lines.append(
            "  only messages published since then that were not yet acknowledged "
            "are delivered again"
        )
        error = (
            f"{name} does not retain acknowledged messages (retain_acked_messages is off) and "
            f"its topic keeps none (no message retention), so those acknowledged since {when} "
            "are NOT delivered again: set either (Terraform and `make run` set both for the "
            "routes' subscriptions); only what is acknowledged after that can be replayed"
        )
    lines.append(
        "  messages published before then and not yet acknowledged are now acknowledged "
        "(the seek marks them so) and are not delivered"
    )
    return Rewind(lines, warning, error)


def duration(span: timedelta) -> str:
    """`7 days`, `1 day 12 hours`, `10 minutes`: the two largest units."""
    seconds = int(span.total_seconds())
    parts = []
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    return " ".join(parts[:2]) or "0 seconds"
