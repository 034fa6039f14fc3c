"""The inspector in a real browser: signed webhooks through the whole stack, then its page.

The stack runs as `make run` runs it (the Stack, with the inspector and the ingest function),
on free ports, with names and a Firestore database of its own; Debian's Chromium
(ops/install_chromium.sh, which make runs when it is missing) loads the page through
Playwright, and the test reads what a person would see there. Every wait is on what the
page shows, reloaded until it shows it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import pytest
import requests
from playwright.sync_api import Browser, Locator, Page, sync_playwright

from handlers.backfill_store import backfill_id
from ops.local.processes import REPO
from ops.local.stack import Emulators, Stack, StackSpec, running_stack
from ops.signing import signed_headers
from shared.events import REASON_INVALID
from shared.samples import sample
from tests.hooks import backfill as backfill_hooks
from tests.integration.conftest import PROJECT, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Every run's screenshot, in a folder git ignores; the README's is generated once (when it is
# missing: delete it to make a new one) and committed.
ARTIFACT: Final = REPO / ".artifacts" / "inspector.png"
README_SCREENSHOT: Final = REPO / "ops" / "inspector" / "screenshot.png"
README_HEIGHT: Final = 1300
BACKFILL_HOOK: Final = "tests.hooks.backfill.load_contacts"


@pytest.fixture(scope="module")
def stack(
    emulators: Emulators,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    spec = StackSpec.on_free_ports(
        PROJECT,
        tmp_path_factory.mktemp("inspector"),
        hook_modules="tests.hooks.pipeline,tests.hooks.backfill",
        with_ingest=True,
        # What `make run` has and a deployment has not: the events topic's watch subscription.
        watch_events=True,
        with_inspector=True,
        extra_env={
            # Only this module's webhooks on the page, however many other tests stored.
            "FIRESTORE_DATABASE": f"inspector-{uuid.uuid4().hex[:8]}",
            "BACKFILL_CHUNK_MAX_RECORDS": "10",
        },
    )
    with running_stack(spec, emulators) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (ops/install_chromium.sh)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    opened = browser.new_page(viewport={"width": 1280, "height": 900})
    yield opened
    opened.close()


Send = Callable[..., tuple[str, dict[str, Any]]]


@pytest.fixture
def send(stack: Stack) -> Iterator[Send]:
    """Sign and POST to the ingest function, as Svix does; (webhook id, payload)."""
    session = requests.Session()
    # Loopback only: a proxy in the environment must not see these requests.
    session.trust_env = False

    def post(
        event_type: str, body: bytes | None = None, **changes: Any
    ) -> tuple[str, dict[str, Any]]:
        payload = {**sample(event_type), **changes}
        if "run_id" in payload and "run_id" not in changes:
            payload["run_id"] = f"run-{uuid.uuid4().hex}"
        data = body if body is not None else json.dumps(payload).encode()
        webhook_id = f"msg_{uuid.uuid4().hex}"
        response = session.post(
            stack.spec.ingest_url,
            data=data,
            headers=signed_headers(data, webhook_id=webhook_id),
            timeout=15,
        )
        assert response.status_code == 204, response.text
        return webhook_id, payload

    yield post
    session.close()


def url(stack: Stack, **search: str) -> str:
    return stack.spec.inspector_url + ("?" + urlencode(search) if search else "")


def section(page: Page, webhook_id: str) -> Locator:
    """The webhook's section of the page."""
    return page.locator("section.webhook").filter(
        has=page.locator("code.webhook-id", has_text=webhook_id)
    )


def state(webhook: Locator, route: str) -> str:
    return webhook.locator(f"tr.stage[data-route='{route}'] .state").inner_text()


def effect(webhook: Locator, kind: str) -> dict[str, str]:
    """An effect's items as shown: label -> value."""
    card = webhook.locator(f".effect[data-effect='{kind}']")
    return dict(
        zip(card.locator("dt").all_inner_texts(), card.locator("dd").all_inner_texts(), strict=True)
    )


def shows(page: Page, address: str, ready: Callable[[], bool], *, what: str) -> None:
    """Load `address` until the page shows what `ready` looks for."""

    def loaded_and_ready() -> bool:
        page.goto(address)
        return ready()

    wait_for(loaded_and_ready, timeout=60, interval=0.3, what=what)


def test_the_page_shows_each_webhooks_journey_its_effects_and_its_dead_letters(
    stack: Stack, send: Send, page: Page
) -> None:
    customer = f"cust-{uuid.uuid4().hex[:10]}"
    failed, _ = send("sync.complete", customer_id=customer, result="ERROR")
    mapping, _ = send(
        "object.field_mapping.created",
        customer_id=customer,
        object_name="contact",
        result="SUCCESS",
    )
    # The pipeline tests' hook refuses this object for good: a dead letter.
    poison, _ = send("sync.complete", customer_id=customer, object="poison", result="SUCCESS")
    connected, payload = send("connection.created", customer_id=customer, result="SUCCESS")

    def settled() -> bool:
        if section(page, poison).locator("tr.dead-letter").count() == 0:
            return False
        if effect(section(page, mapping), "backfill").get("state") != "done":
            return False
        finals = [
            state(section(page, failed), "alerts"),
            state(section(page, failed), "sync-state"),
            state(section(page, connected), "connections"),
            state(section(page, connected), "backfill-scheduler"),
        ]
        return finals == ["done"] * 4

    shows(
        page, url(stack, customer=customer), settled, what="every webhook of the customer settled"
    )
    assert page.locator("section.webhook").count() == 4

    # A failed sync: both routes that receive it took effect once; its sync state says so.
    webhook = section(page, failed)
    assert webhook.locator(".type").inner_text() == "sync.complete"
    assert webhook.locator(".door").inner_text() == "published"
    assert webhook.locator("tr.stage[data-route='sync-state'] td").nth(3).inner_text() == "1"
    recorded = effect(webhook, "sync state")
    assert (recorded["last result"], recorded["failures in a row"]) == ("ERROR", "1")
    assert (
        "its last run is this one"
        in webhook.locator(".effect[data-effect='sync state']").inner_text()
    )

    # A mapping change: its backfill ran through Cloud Tasks and the worker, chunk by chunk.
    backfill = effect(section(page, mapping), "backfill")
    assert (backfill["state"], backfill["records"]) == ("done", str(backfill_hooks.RECORDS))
    assert backfill["chunks done"] == "5"
    assert backfill_id(mapping, BACKFILL_HOOK) in section(page, mapping).inner_text()

    # A permanent failure: the ledger let go of it, and its dead letter says why.
    webhook = section(page, poison)
    assert state(webhook, "sync-state") == "failed"
    assert state(webhook, "alerts") == "done"
    letter = webhook.locator("tr.dead-letter[data-route='sync-state']").inner_text()
    assert "handler_failed" in letter
    assert "this object can never be transformed" in letter

    # A new connection: the registry holds it, written by this webhook.
    registry = effect(section(page, connected), "connection registry")
    assert (registry["status"], registry["by webhook"]) == ("active", connected)
    assert registry["last event"] == payload["webhook_event_type"]

    ARTIFACT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACT), full_page=True)
    assert ARTIFACT.stat().st_size > 10_000
    if not README_SCREENSHOT.exists():
        # The top of the page only: small enough to commit.
        page.screenshot(
            path=str(README_SCREENSHOT),
            full_page=True,
            clip={"x": 0, "y": 0, "width": 1280, "height": README_HEIGHT},
        )


def test_a_search_narrows_the_list_and_finds_what_was_quarantined(
    stack: Stack, send: Send, page: Page
) -> None:
    mine, theirs = (f"cust-{uuid.uuid4().hex[:10]}" for _ in range(2))
    connection = f"conn-{uuid.uuid4().hex[:10]}"
    own, _ = send("sync.complete", customer_id=mine, connection_id=connection)
    other, _ = send("sync.complete", customer_id=theirs)
    # Verified, but not a valid event: the function stores it on the quarantine topic.
    quarantined, _ = send("sync.complete", body=b'{"webhook_event_type": "sync.complete"}')

    def both_listed() -> bool:
        return all(state(section(page, w), "sync-state") == "done" for w in (own, other))

    shows(page, url(stack), both_listed, what="both customers' webhooks on the page")

    page.get_by_label("customer").fill(mine)
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(f"**customer={mine}**")
    assert section(page, own).count() == 1
    assert section(page, other).count() == 0
    assert page.locator(".summary").inner_text().startswith("1 webhook match")

    page.get_by_label("customer").fill("")
    page.get_by_label("connection").fill(connection)
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(f"**connection={connection}**")
    assert [code.inner_text() for code in page.locator("code.webhook-id").all()] == [own]

    shows(
        page,
        url(stack, webhook=quarantined),
        lambda: section(page, quarantined).count() == 1,
        what="the quarantined webhook",
    )
    webhook = section(page, quarantined)
    assert webhook.locator(".door").inner_text() == "quarantined"
    assert REASON_INVALID in webhook.inner_text()
    assert "Never reached a handler" in webhook.inner_text()
    assert webhook.locator("tr.stage").count() == 0
