"""Users' hooks through the real apps on the emulators: `on` hooks, alert hooks, settings.

Each hook here records its calls in a list, so a test sees exactly how often it ran and with
what; the ledger entries live in the Firestore emulator.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from handlers import main
from handlers.hooks import (
    Alert,
    AlertKind,
    HookContext,
    HookRegistry,
    HookSettings,
    PermanentError,
    RawEvent,
    RetryableError,
    SettingsInvalid,
)
from handlers.main import routing_table
from shared.events import SyncPaused
from shared.settings import HandlerSettings
from tests.integration.harness import Harness

pytestmark = pytest.mark.integration

Build = Callable[..., Harness]


def log_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line[:1] == "{"]


def events_named(lines: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("event") == name]


# --- `on` hooks ----------------------------------------------------------------------------


def test_an_on_hook_runs_once_with_the_typed_event_and_its_context(harness: Build) -> None:
    registry = HookRegistry()
    calls: list[tuple[Any, HookContext]] = []

    @registry.on("sync.paused")
    def record(event: Any, context: HookContext) -> None:
        calls.append((event, context))

    h = harness("hooks", hook_events=("sync.paused",), hooks=registry)
    payload = h.payload("sync.paused", pause_reason="Manually paused by user")
    for _ in range(2):
        assert (
            h.push("hooks", payload, webhook_id="msg_on_1", sent_at=1_800_000_000).status_code
            == 204
        )
    [(event, context)] = calls
    assert isinstance(event, SyncPaused)
    assert event.pause_reason == "Manually paused by user"
    assert (context.webhook_id, context.webhook_timestamp) == ("msg_on_1", 1_800_000_000)
    assert context.attributes["customer_id"] == h.customer


def test_an_unknown_type_reaches_its_hook_as_the_raw_body_and_attributes(harness: Build) -> None:
    registry = HookRegistry()
    calls: list[RawEvent] = []

    @registry.on("brand.new.*")
    def record(event: RawEvent, _context: HookContext) -> None:
        calls.append(event)

    h = harness("hooks", hook_events=("brand.new.*",), hooks=registry)
    body = json.dumps({"webhook_event_type": "brand.new.thing", "x": [1]}).encode()
    attributes = {
        "webhook_id": "msg_raw",
        "webhook_timestamp": "1",
        "event_type": "brand.new.thing",
    }
    assert h.push("hooks", body, attributes=attributes).status_code == 204
    [raw] = calls
    assert (raw.event_type, raw.body, raw.attributes["webhook_id"]) == (
        "brand.new.thing",
        body,
        "msg_raw",
    )


def test_hooks_run_only_for_their_provider_and_object_and_events(
    harness: Build, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = HookRegistry()
    ran: list[str] = []

    @registry.on("sync.paused", provider="hubspot")
    def hubspot(*_: Any) -> None:
        ran.append("hubspot")

    @registry.on("sync.paused", object="Contact")
    def contact(*_: Any) -> None:
        ran.append("contact")

    @registry.on("sync.paused", object="deal")
    def deal(*_: Any) -> None:
        ran.append("deal")

    h = harness("hooks", hook_events=("sync.paused",), hooks=registry)
    capsys.readouterr()
    h.push("hooks", h.payload("sync.paused"))  # salesforce, contact
    h.push("hooks", h.payload("sync.complete"))  # not a hook event
    assert ran == ["contact"]
    assert len(events_named(log_lines(capsys), "not_mine")) == 1


def test_a_hook_asking_for_a_retry_runs_again_alone(harness: Build) -> None:
    registry = HookRegistry()
    ran: list[str] = []

    def flaky(*_: Any) -> None:
        ran.append("flaky")
        if ran.count("flaky") == 1:
            raise RetryableError("the CRM is not reachable yet")

    @registry.on("sync.paused")
    def steady(*_: Any) -> None:
        ran.append("steady")

    registry.on("sync.paused")(flaky)
    h = harness("hooks", hook_events=("sync.paused",), hooks=registry)
    payload = h.payload("sync.paused")
    assert h.push("hooks", payload, webhook_id="msg_retry_hook").status_code == 503
    assert h.push("hooks", payload, webhook_id="msg_retry_hook").status_code == 204
    assert h.push("hooks", payload, webhook_id="msg_retry_hook").status_code == 204
    assert ran == ["steady", "flaky", "flaky"]


def test_a_hook_failing_for_good_dead_letters_the_event_and_the_others_still_run(
    harness: Build,
) -> None:
    registry = HookRegistry()
    ran: list[str] = []

    def refuses(*_: Any) -> None:
        ran.append("refuses")
        raise PermanentError("this CRM account is closed")

    registry.on("sync.paused")(refuses)

    @registry.on("sync.paused")
    def after(*_: Any) -> None:
        ran.append("after")

    h = harness("hooks", hook_events=("sync.paused",), hooks=registry)
    assert h.push("hooks", h.payload("sync.paused"), webhook_id="msg_dead_hook").status_code == 204
    assert ran == ["refuses", "after"]
    [dead] = h.dead_letters("hooks")
    assert dead.attributes["reason"] == "handler_failed"
    assert "refuses" in dead.attributes["reason_detail"]
    assert "closed" in dead.attributes["reason_detail"]


# --- alerts and alert hooks ----------------------------------------------------------------


def test_every_alert_is_typed_and_reaches_its_hooks_once(
    harness: Build, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = HookRegistry()
    alerts: list[Alert] = []
    only_paused: list[Alert] = []

    @registry.alert
    def every(alert: Alert) -> None:
        alerts.append(alert)

    @registry.alert(kinds=["reconnect_required"])
    def reconnects(alert: Alert) -> None:
        only_paused.append(alert)

    h = harness("alerts", hooks=registry)
    failed = h.payload("sync.complete", result="ERROR", error_message="token expired")
    paused = h.payload("sync.paused", pause_reason="Unauthorized: 401")
    capsys.readouterr()
    for _ in range(2):
        h.push("alerts", failed, webhook_id="msg_alert_fail")
        h.push("alerts", paused, webhook_id="msg_alert_pause")
    assert [a.kind for a in alerts] == [AlertKind.SYNC_FAILED, AlertKind.RECONNECT_REQUIRED]
    sync_failed = alerts[0]
    assert (sync_failed.customer_id, sync_failed.provider_name, sync_failed.object) == (
        h.customer,
        "hubspot",
        "contact",
    )
    assert (sync_failed.connection_id, sync_failed.reason) == (
        failed["connection_id"],
        "token expired",
    )
    assert (sync_failed.webhook_id, sync_failed.run_id) == ("msg_alert_fail", failed["run_id"])
    assert [a.kind for a in only_paused] == [AlertKind.RECONNECT_REQUIRED]
    lines = log_lines(capsys)
    assert len(events_named(lines, "sync_failed")) == 1
    assert len(events_named(lines, "reconnect_required")) == 1


def test_an_alert_hook_asking_for_a_retry_does_not_repeat_the_alert_line(
    harness: Build, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = HookRegistry()
    posted: list[Alert] = []

    def slack_down_once(alert: Alert) -> None:
        if not posted:
            posted.append(alert)
            raise RetryableError("Slack answered 503")
        posted.append(alert)

    registry.alert(slack_down_once)
    h = harness("alerts", hooks=registry)
    payload = h.payload("sync.complete", result="ERROR")
    capsys.readouterr()
    assert h.push("alerts", payload, webhook_id="msg_alert_retry").status_code == 503
    assert h.push("alerts", payload, webhook_id="msg_alert_retry").status_code == 204
    assert len(posted) == 2
    assert len(events_named(log_lines(capsys), "sync_failed")) == 1


def test_the_nth_failed_sync_in_a_row_is_a_distinct_alert_and_a_success_ends_the_streak(
    harness: Build, capsys: pytest.CaptureFixture[str]
) -> None:
    h = harness("alerts")
    assert h.runtime.settings.repeated_failure_threshold == 3
    capsys.readouterr()

    def run(result: str, at: int) -> str:
        h.push("alerts", h.payload("sync.complete", result=result), sent_at=at)
        [line] = [
            line
            for line in log_lines(capsys)
            if line.get("event") in ("sync_failed", "sync_failed_repeatedly")
        ] or [{"event": "-"}]
        return str(line["event"]) + f"/{line.get('consecutive_failures', '-')}"

    base = 1_800_000_000
    assert [run("ERROR", base + i) for i in range(4)] == [
        "sync_failed/1",
        "sync_failed/2",
        "sync_failed_repeatedly/3",
        "sync_failed_repeatedly/4",
    ]
    assert run("SUCCESS", base + 10) == "-/-"
    # An older failed run arriving late does not extend the streak.
    assert run("ERROR", base + 5) == "sync_failed/-"
    assert run("ERROR", base + 11) == "sync_failed/1"


# --- settings ------------------------------------------------------------------------------


def test_a_missing_hook_setting_stops_the_service_naming_the_variable_not_the_value(
    tmp_path: Any,
) -> None:
    module = tmp_path / "crm_hooks.py"
    module.write_text(
        "from pydantic import SecretStr\n"
        "from pydantic_settings import SettingsConfigDict\n"
        "from handlers.hooks import HookSettings, hooks\n"
        "@hooks.settings\n"
        "class CrmSettings(HookSettings):\n"
        "    model_config = SettingsConfigDict(env_prefix='CRM_')\n"
        "    api_key: SecretStr\n"
        "    base_url: str\n"
    )
    script = "from handlers.main import create_service_app; create_service_app()"
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(tmp_path),
        "GOOGLE_CLOUD_PROJECT": "p",
        "SERVICE": "alerts",
        "PUSH_AUTH_DISABLED": "true",
        "HOOK_MODULES": "crm_hooks",
        "CRM_BASE_URL": "https://crm.example/very-secret-value",
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # gunicorn halts on a worker's boot error (3) instead of starting it again and again.
    assert done.returncode == 3
    assert "CRM_API_KEY" in done.stderr
    assert "CRM_BASE_URL" not in done.stderr
    assert "very-secret-value" not in done.stderr + done.stdout


def test_hook_settings_are_validated_once_and_read_typed() -> None:
    registry = HookRegistry()

    @registry.settings
    class Slack(HookSettings):
        model_config = SettingsConfigDict(env_prefix="SLACK_TEST_")
        webhook_url: SecretStr

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLACK_TEST_WEBHOOK_URL", "https://hooks.example/xyz")
        registry.load_settings()
    assert registry.get(Slack).webhook_url.get_secret_value() == "https://hooks.example/xyz"


def test_only_the_services_own_hook_modules_have_their_settings_validated() -> None:
    """A process may have imported other hook modules (a test's stack does): their settings
    are not this service's to require."""
    registry = HookRegistry()

    @registry.settings
    class Elsewhere(HookSettings):
        model_config = SettingsConfigDict(env_prefix="ELSEWHERE_TEST_")
        token: SecretStr

    registry.load_settings(["hooks.contacts"])
    for modules in ([__name__], [__name__.rpartition(".")[0]]):
        with pytest.raises(SettingsInvalid, match="ELSEWHERE_TEST_TOKEN"):
            registry.load_settings(modules)


def test_a_hook_module_named_covers_its_submodules_for_events_as_for_settings() -> None:
    """HOOK_MODULES naming a package: the `on` hooks of its submodules are its hooks, so the
    events they want reach the hooks route, as their settings are validated."""
    registry = HookRegistry()

    @registry.on("sync.paused")
    def paused(*_: Any) -> None: ...

    @registry.settings
    class Here(HookSettings):
        model_config = SettingsConfigDict(env_prefix="HERE_TEST_")
        token: SecretStr

    package = __name__.rpartition(".")[0]
    assert registry.on_event_types([package]) == ("sync.paused",)
    assert registry.on_event_types([__name__]) == ("sync.paused",)
    assert registry.on_event_types(["hooks.contacts"]) == ()
    # The settings of the same modules, by the same rule.
    with pytest.raises(SettingsInvalid, match="HERE_TEST_TOKEN"):
        registry.load_settings([package])
    registry.load_settings(["hooks.contacts"])


def test_the_hooks_service_refuses_to_start_when_the_deployment_would_not_deliver_a_hook_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = HookRegistry()

    @registry.on("sync.paused")
    def paused(*_: Any) -> None: ...

    @registry.on("brand.new.*")
    def brand_new(*_: Any) -> None: ...

    monkeypatch.setattr(main, "hooks", registry)
    settings = HandlerSettings(
        google_cloud_project="p",
        service="hooks",
        push_auth_disabled=True,
        hook_modules=(__name__,),
        hook_events=("sync.paused",),
    )
    with pytest.raises(SystemExit, match=r"hooks want brand\.new\.\*.*hook_events"):
        routing_table(settings)
    covered = settings.model_copy(update={"hook_events": ("sync.*", "brand.*")})
    route = routing_table(covered).routes["hooks"]
    assert route.event_types == ("sync.*", "brand.*")
    # make run sets no HOOK_EVENTS: the route takes the hooks' own.
    local = settings.model_copy(update={"hook_events": None})
    assert routing_table(local).routes["hooks"].event_types == ("sync.paused", "brand.new.*")
