"""`python -m ops send`: sign a sample event (or any file) as Svix does and POST it."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

from standardwebhooks.webhooks import EmptyWebhookSecretError

from ops import defaults
from ops.cli.args import Commands, positive
from ops.cli.errors import CliError
from ops.signing import DEV_SECRET, new_webhook_id, signed_headers
from shared.samples import SAMPLES_DIR, sample_types

DEFAULT_URL: Final = defaults.INGEST_URL
SECRET_ENV: Final = "WEBHOOK_SECRET"  # noqa: S105 (a variable name, not a secret)
RESULTS: Final = ("SUCCESS", "ERROR")
SIMULATED_ERROR: Final = "Simulated failure sent by `ops send --result ERROR`"
# Event types whose model carries `error_message` (shared/events.py); prefixes end in a dot.
_TYPES_WITH_ERROR_MESSAGE: Final = (
    "sync.complete",
    "entity.entity_mapping.",
    "object.field_mapping.",
)
_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})
# What the ingest function's answers mean (README, The ingest function) and what to check.
_HINTS: Final = {
    401: f": the signature was refused; is --secret (or ${SECRET_ENV}) one of the function's "
    "WEBHOOK_SECRETS?",
    404: ": is --url the ingest function's URL?",
    405: ": is --url the ingest function's URL?",
    413: ": the body is over the function's MAX_BODY_BYTES",
    503: ": the function could not store it in Pub/Sub (its log says why); Svix would retry",
}
_REDIRECT: Final = ": a redirect, not followed with the signed body; give the URL it points to"


@dataclass(frozen=True)
class Response:
    status: int
    body: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def load_body(source: str) -> bytes:
    """The bytes of a sample event type (`sync.complete`) or of a file."""
    if source in sample_types():
        return (SAMPLES_DIR / f"{source}.json").read_bytes()
    try:
        return Path(source).read_bytes()
    except FileNotFoundError:
        raise CliError(
            f"{source!r} is neither a sample event type ({', '.join(sample_types())}) nor a file",
            code=2,
        ) from None
    except OSError as exc:
        raise CliError(f"cannot read {source}: {exc.strerror}", code=2) from None


def parse_assignment(text: str) -> tuple[str, object]:
    """`key=value`; the value is JSON when it parses (5, null, true, "5"), else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    try:
        value: object = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def apply_overrides(
    body: bytes, *, result: str | None = None, assignments: Sequence[tuple[str, object]] = ()
) -> bytes:
    """The body with `result` (and what goes with it) and the assignments applied.

    Without overrides the bytes are returned untouched, so any file, even one
    that is not JSON, is sent exactly as it is.
    """
    if result is None and not assignments:
        return body
    try:
        payload = json.loads(body)
    except ValueError:
        raise CliError("overrides need a JSON body; this one does not parse", code=2) from None
    if not isinstance(payload, dict):
        raise CliError("overrides need a JSON object body", code=2)
    if result is not None:
        _set_result(payload, result)
    for key, value in assignments:
        payload[key] = value
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _set_result(payload: dict[str, object], result: str) -> None:
    event_type = str(payload.get("webhook_event_type", ""))
    if "result" not in payload:
        raise CliError(f"{event_type or 'this event'} has no result to set", code=2)
    payload["result"] = result
    if result == "SUCCESS":
        payload.pop("error_message", None)
        return
    # A failed run, as Supaglue reports one: nothing synced, and why.
    if event_type == "sync.complete":
        payload["num_records_synced"] = 0
    if event_type.startswith(_TYPES_WITH_ERROR_MESSAGE):
        payload["error_message"] = SIMULATED_ERROR


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer to report, not one to follow with the signed body."""

    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float = 30.0) -> Response:
    """POST once; any HTTP status is a Response, no answer at all is a CliError."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise CliError(f"{url!r} is not an http(s) URL", code=2)
    handlers: list[urllib.request.BaseHandler] = [_NoRedirects()]
    if parsed.hostname in _LOOPBACK_HOSTS:
        # An HTTP(S)_PROXY in the environment must not intercept the local stack.
        handlers.append(urllib.request.ProxyHandler({}))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        url, data=body, headers={**headers, "User-Agent": "ops-send"}, method="POST"
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            return Response(response.status, response.read().decode(errors="replace"))
    except urllib.error.HTTPError as exc:
        with exc:
            return Response(exc.code, exc.read().decode(errors="replace"))
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(
            f"no answer from {url} ({reason}): is `make run` up, and is --url right?"
        ) from None


def send(
    url: str,
    body: bytes,
    *,
    secret: str,
    webhook_id: str | None = None,
    repeat: int = 1,
    branded: bool = True,
    out: TextIO | None = None,
) -> list[Response]:
    """Deliver `body` signed, `repeat` times as one delivery; every answer, in order.

    Repeats keep the webhook id, as Svix's retries do, but are signed afresh:
    Svix signs each attempt with its own timestamp, which is what lets a retry
    hours later pass the receiver's five-minute window.
    """
    out = out or sys.stdout  # looked up per call, so a replaced sys.stdout is honoured
    webhook_id = webhook_id or new_webhook_id()
    label = _event_type(body)
    responses = []
    for attempt in range(1, repeat + 1):
        try:
            headers = signed_headers(body, secret, webhook_id=webhook_id, branded=branded)
        except UnicodeDecodeError:
            raise CliError("the body is not UTF-8 text, which Svix signs", code=2) from None
        except (ValueError, EmptyWebhookSecretError):
            raise CliError("the secret is not a Svix secret (whsec_ + base64)", code=2) from None
        counter = f" [{attempt}/{repeat}]" if repeat > 1 else ""
        print(
            f"-> POST {url} {label} ({len(body)} bytes) id {webhook_id}{counter}",
            file=out,
            flush=True,
        )
        response = post(url, body, headers)
        print(f"<- {response.status} {response.body.strip()}", file=out, flush=True)
        responses.append(response)
    return responses


def refusal(url: str, responses: Sequence[Response]) -> str | None:
    """What went wrong when an answer was not 2xx, and what to check; None if all were."""
    refused = [response for response in responses if not response.ok]
    if not refused:
        return None
    status = refused[-1].status
    counted = f" ({len(refused)} of {len(responses)} deliveries)" if len(responses) > 1 else ""
    hint = _HINTS.get(status, _REDIRECT if 300 <= status < 400 else "")
    return f"{url} answered {status}, not 2xx{counted}{hint}"


def _event_type(body: bytes) -> str:
    try:
        payload = json.loads(body)
    except ValueError:
        return "(not JSON)"
    event_type = payload.get("webhook_event_type") if isinstance(payload, dict) else None
    return event_type if isinstance(event_type, str) else "(no event type)"


def add_command(commands: Commands) -> None:
    parser = commands.add_parser(
        "send",
        help="POST a signed sample event (or file) to the ingest function",
        description="Sign a sample event or a file as Svix does and POST it; "
        "exits non-zero unless every answer is 2xx.",
    )
    parser.add_argument(
        "source",
        nargs="?",
        metavar="EVENT_TYPE_OR_FILE",
        help="a sample event type (see --list) or a file whose bytes are sent",
    )
    parser.add_argument("--list", action="store_true", help="list the sample event types")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"default {DEFAULT_URL}")
    parser.add_argument(
        "--secret", help=f"signing secret (default ${SECRET_ENV}, else the local dev secret)"
    )
    parser.add_argument(
        "--result",
        type=str.upper,
        choices=RESULTS,
        help="set `result`; ERROR also sets what a failed run carries",
    )
    parser.add_argument(
        "--set",
        dest="assignments",
        type=parse_assignment,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a top-level field (VALUE is JSON if it parses, else a string); repeatable",
    )
    parser.add_argument("--webhook-id", help="the svix-id (default: a new msg_... id)")
    parser.add_argument(
        "--repeat",
        type=positive,
        default=1,
        metavar="N",
        help="send the same delivery (same svix-id) N times, as Svix retries do",
    )
    parser.add_argument(
        "--unbranded", action="store_true", help="use webhook-* headers instead of svix-*"
    )
    parser.set_defaults(handler=_run_send)


def _run_send(args: argparse.Namespace) -> int:
    if args.list:
        for event_type in sample_types():
            print(event_type)
        return 0
    if args.source is None:
        raise CliError("send: give an event type or a file, or --list", code=2)
    body = apply_overrides(load_body(args.source), result=args.result, assignments=args.assignments)
    responses = send(
        args.url,
        body,
        secret=args.secret or os.environ.get(SECRET_ENV) or DEV_SECRET,
        webhook_id=args.webhook_id,
        repeat=args.repeat,
        branded=not args.unbranded,
    )
    problem = refusal(args.url, responses)
    if problem:
        raise CliError(problem)
    return 0
