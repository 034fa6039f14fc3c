"""`reconcile` and `supaglue`: run a reconciliation pass, and feed the local fake Supaglue API.

`reconcile` POSTs to the reconciler's /reconcile, as Cloud Scheduler does in the cloud, and
prints the pass's counts. `supaglue add-run | add-connection | delete-connection | pause-sync | fail`
change what the fake management API of `make run` lists (ops/local/fake_supaglue.py),
over HTTP: a sync run or a connection change whose webhook was never sent.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Final
from urllib.parse import quote

import requests

from ops import defaults
from ops.cli.args import Commands
from ops.cli.errors import CliError
from shared.routing import load_table

ADMIN: Final = defaults.SUPAGLUE_ADMIN_PATH
RESULTS: Final = {"SUCCESS": "SUCCESS", "ERROR": "FAILURE", "IN_PROGRESS": "IN_PROGRESS"}
_TIMEOUT_SECONDS: Final = 300.0


def reconciler_url() -> str:
    """Where `make run` serves the reconciler (its routing table's local_port)."""
    reconciler = load_table().reconciler
    assert reconciler is not None, "the routing table has no reconciler"
    return f"http://{defaults.LOOPBACK}:{reconciler.local_port}"


def add_command(commands: Commands) -> None:
    reconcile = commands.add_parser(
        "reconcile", help="run one reconciliation pass (what Cloud Scheduler does every 15 min)"
    )
    reconcile.add_argument(
        "--url", default=reconciler_url(), help="the reconciler (default: make run's)"
    )
    reconcile.set_defaults(handler=_run_reconcile)

    fake = commands.add_parser("supaglue", help="change what make run's fake Supaglue API lists")
    fake.add_argument(
        "--url", default=defaults.SUPAGLUE_URL, help=f"the fake (default {defaults.SUPAGLUE_URL})"
    )
    actions = fake.add_subparsers(dest="supaglue_command", required=True, metavar="ACTION")
    run = actions.add_parser("add-run", help="a finished sync run, as if its webhook was lost")
    _who(run)
    run.add_argument("--object", default="contact")
    run.add_argument("--result", choices=sorted(RESULTS), default="SUCCESS")
    run.add_argument("--records", type=int, default=100)
    run.add_argument("--run-id", help="default: a new one")
    run.add_argument("--connection-id", help="default: a new one")
    run.set_defaults(handler=_run_add_run)
    connection = actions.add_parser("add-connection", help="a connection the API lists")
    _who(connection)
    connection.add_argument("--connection-id", help="default: a new one")
    connection.set_defaults(handler=_run_add_connection)
    delete = actions.add_parser("delete-connection", help="a connection no longer listed")
    _who(delete)
    delete.set_defaults(handler=_run_delete_connection)
    pause = actions.add_parser("pause-sync", help="an object sync the API lists as paused")
    _who(pause)
    pause.add_argument("--object", default="contact")
    pause.add_argument("--resume", action="store_true", help="list it as running again")
    pause.set_defaults(handler=_run_pause_sync)
    fail = actions.add_parser("fail", help="answer the next API requests with these statuses")
    fail.add_argument("statuses", type=int, nargs="+", help="e.g. 500 429")
    fail.add_argument("--retry-after", type=int, help="Retry-After seconds on each")
    fail.set_defaults(handler=_run_fail)


def _who(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--customer", required=True, help="the customer id")
    parser.add_argument("--provider", default="hubspot")


def _call(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    try:
        response = requests.request(method, url, json=body, timeout=_TIMEOUT_SECONDS)
    except requests.RequestException as exc:
        raise CliError(
            f"no answer from {url} ({exc}): is `make run` up, and is --url right?"
        ) from None
    try:
        answer = response.json()
    except ValueError:
        answer = response.text
    if response.status_code >= 300 and not isinstance(answer, dict):
        raise CliError(f"{url} answered {response.status_code}: {str(answer)[:200]}")
    return response.status_code, answer


def _run_reconcile(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/") + "/reconcile"
    status, counts = _call("POST", url)
    print(f"{url} answered {status}: {counts.get('outcome')}")
    for name, value in counts.items():
        if name != "outcome" and value not in (None, 0):
            print(f"  {name:<24} {value}")
    if status >= 300:
        raise CliError(f"the pass did not complete ({counts.get('outcome')}); the next one resumes")
    return 0


def _fake(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    status, answer = _call(method, args.url.rstrip("/") + ADMIN + path, body)
    if status >= 300:
        errors = answer.get("errors") or [{}]
        raise CliError(f"the fake Supaglue API answered {status}: {errors[0].get('title')}")
    return answer


def _run_add_run(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "customer_id": args.customer,
        "provider_name": args.provider,
        "object": args.object,
        "status": RESULTS[args.result],
        "num_records_synced": args.records if args.result == "SUCCESS" else 0,
    }
    body |= {k: v for k, v in (("id", args.run_id), ("connection_id", args.connection_id)) if v}
    run = _fake(args, "POST", "/sync-runs", body)
    print(
        f"sync run {run['id']} ({run['status']}, {run['object']}) of {run['customer_id']} on "
        f"{run['provider_name']} ended {run['end_timestamp']}; no webhook was sent for it"
    )
    print(json.dumps(run))
    return 0


def _run_add_connection(args: argparse.Namespace) -> int:
    body = {"customer_id": args.customer, "provider_name": args.provider}
    if args.connection_id:
        body["id"] = args.connection_id
    connection = _fake(args, "POST", "/connections", body)
    print(f"connection {connection['id']} of {args.customer} on {args.provider} is listed")
    return 0


def _run_delete_connection(args: argparse.Namespace) -> int:
    path = f"/connections/{quote(args.customer, safe='')}/{quote(args.provider, safe='')}"
    connection = _fake(args, "DELETE", path)
    print(
        f"connection {connection['id']} of {args.customer} on {args.provider} is no longer listed"
    )
    return 0


def _run_pause_sync(args: argparse.Namespace) -> int:
    body = {
        "customer_id": args.customer,
        "provider_name": args.provider,
        "object": args.object,
        "paused": not args.resume,
    }
    sync = _fake(args, "POST", "/syncs", body)
    state = "paused" if sync["paused"] else "running"
    print(f"sync {sync['id']} of {args.object} for {args.customer} on {args.provider} is {state}")
    return 0


def _run_fail(args: argparse.Namespace) -> int:
    _fake(args, "POST", "/faults", {"statuses": args.statuses, "retry_after": args.retry_after})
    print(
        f"the next {len(args.statuses)} API request(s) answer {' then '.join(map(str, args.statuses))}"
    )
    return 0
