"""Issue #14's Terraform: what the hook and alerting variables refuse, and how the alert
channels keep their secrets out of Terraform's state.

Validations are evaluated by Terraform itself (`refusals_of`: each condition and message on a
candidate value); the channels' wiring is read from the parsed HCL, and what it computes from
variables by `terraform console`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import hcl2
import pytest

from shared.routing import load_table
from shared.settings import HandlerSettings
from tests.terraform.module import MODULE, README, computed, expr, literal, load, refusals_of
from tests.terraform.test_alert_policies import thresholds
from tests.terraform.test_wiring import (
    HOOK_SECRETS,
    HOOK_SETTINGS,
    SERVER_VARIABLES,
    WITH_HOOKS,
    handler_environment,
    known_fields,
)


def names_map(names: list[str]) -> list[str]:
    """Each name as a hook_settings / hook_secrets value of its own."""
    return [f"tomap({{{json.dumps(name)} = {json.dumps('x')}}})" for name in names]


# --- hook settings and secrets: the names -----------------------------------------------------


def names_the_services_read() -> set[str]:
    """Every variable a handler service reads or is given, but the hooks' own."""
    hook_names = set(HOOK_SETTINGS) | set(HOOK_SECRETS)
    given: set[str] = set()
    for service in load_table().services:
        given |= handler_environment(service, WITH_HOOKS).keys() - hook_names
    # Cloud Run's own (its container contract): PORT, K_SERVICE, K_REVISION, K_CONFIGURATION.
    cloud_run = {"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"}
    return (
        known_fields(HandlerSettings)
        | SERVER_VARIABLES
        | {"PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST", "PUSH_AUTH_DISABLED"}
        | given
        | cloud_run
    )


@pytest.mark.parametrize("variable", ["hook_settings", "hook_secrets"])
def test_a_hook_may_not_take_a_name_the_services_already_read(variable: str) -> None:
    read = names_the_services_read()
    assert {"SERVICE", "GOOGLE_CLOUD_PROJECT", "HOOK_MODULES", "TASKS_QUEUE"} <= read
    # Nor one that starts like them: settings the code may grow into.
    names = [*sorted(read), "HOOK_RETRIES", "PUSH_X", "BACKFILL_Y", "LEDGER_Z", "FIRESTORE_W"]
    for name, refused in zip(names, refusals_of(variable, names_map(names)), strict=True):
        assert any("a prefix of its own" in message for message in refused), (name, refused)


@pytest.mark.parametrize("variable", ["hook_settings", "hook_secrets"])
def test_hook_names_are_environment_variable_names_of_their_own(variable: str) -> None:
    bad = ["crm_token", "1CRM", "CRM-TOKEN", "CRM TOKEN", ""]
    for name, refused in zip(bad, refusals_of(variable, names_map(bad)), strict=True):
        assert any("environment variable names" in message for message in refused), name
    # Starting like a reserved name (PORT, SERVICE) is not being it.
    good = ["CRM_API_TOKEN", "WAREHOUSE_DSN", "S3_BUCKET", "X", "PORTAL_URL", "SERVICE_DESK_URL"]
    assert refusals_of(variable, names_map(good)) == [[]] * len(good)


def test_a_hook_secret_names_a_secret_and_no_name_is_both_plain_and_secret() -> None:
    values = [
        'tomap({CRM_TOKEN = "projects/p/secrets/crm-token"})',
        'tomap({CRM_TOKEN = "crm token"})',
        'tomap({CRM_TOKEN = ""})',
        'tomap({CRM_TOKEN = "crm-token_2"})',
    ]
    refused = refusals_of("hook_secrets", values)
    assert all(any("secret ids" in m for m in r) for r in refused[:3]), refused
    assert refused[3] == []
    [both] = refusals_of(
        "hook_secrets", ['tomap({CRM_TOKEN = "crm-token"})'], {"hook_settings": '{CRM_TOKEN="x"}'}
    )
    assert both == ["A name is in both hook_settings and hook_secrets: CRM_TOKEN."]


# --- hook events ------------------------------------------------------------------------------


def test_hook_events_are_types_or_prefixes_safe_inside_a_filter() -> None:
    bad = [["a*b"], ["*sync"], [""], ['sync"x'], ["sync complete"], ["sync.\\x"]]
    good = [[], ["sync.complete"], ["entity.*", "sync.paused"], ["*"], ["object.field_mapping.*"]]
    values = [f"tolist({json.dumps(events)})" for events in bad + good]
    results = refusals_of("hook_events", values)
    for events, refused in zip(bad, results[: len(bad)], strict=True):
        assert any("'*' only at the end" in m for m in refused), events
    assert results[len(bad) :] == [[]] * len(good)
    [twice] = refusals_of("hook_events", ['tolist(["sync.complete", "sync.complete"])'])
    assert twice == ["hook_events lists an event type twice."]


# --- alerting variables -----------------------------------------------------------------------

SLACK = {"channel_name": "#oncall", "auth_token_secret": "slack-token", "auth_token_version": "2"}
PAGERDUTY = {"service_key_secret": "pagerduty-key", "service_key_version": "latest"}
BASIC_AUTH = {
    "url": "https://alerts.example.com/hook",
    "username": "monitoring",
    "password_secret": "webhook-password",
    "password_version": "1",
}
TOKEN_AUTH = {
    "url": "https://alerts.example.com/hook?auth_token=abc",
    "username": None,
    "password_secret": None,
    "password_version": "latest",
}


def channels(**given: Any) -> str:
    """An alert_channels value with every attribute, as Terraform converts one."""
    return json.dumps({"slack": None, "pagerduty": None, "webhook": None, **given})


def test_alert_channels_refuse_what_cannot_work() -> None:
    cases = {
        "channel_name": channels(slack={**SLACK, "channel_name": "On Call"}),
        "https://": channels(webhook={**BASIC_AUTH, "url": "http://alerts.example.com"}),
        "together": channels(webhook={**BASIC_AUTH, "password_secret": None}),
        "never the secret itself": channels(
            pagerduty={**PAGERDUTY, "service_key_secret": "projects/p/secrets/k"}
        ),
        '"latest" or a version number': channels(slack={**SLACK, "auth_token_version": "v2"}),
    }
    results = refusals_of("alert_channels", list(cases.values()))
    for fragment, refused in zip(cases, results, strict=True):
        assert len(refused) == 1 and fragment in refused[0], (fragment, refused)
    good = [
        channels(),
        channels(slack=SLACK, pagerduty=PAGERDUTY, webhook=BASIC_AUTH),
        channels(webhook=TOKEN_AUTH),
    ]
    assert refusals_of("alert_channels", good) == [[]] * len(good)


def test_the_repeated_failure_threshold_is_a_whole_number_above_one() -> None:
    values = [thresholds(repeated_sync_failures=n) for n in (1, 2.5, 0, 2, 3, 10)]
    results = refusals_of("alert_thresholds", values)
    assert all(results[:3]) and results[3:] == [[], [], []], results


def test_the_variables_take_their_documented_shapes_on_the_command_line() -> None:
    """As terraform.tfvars would give them: partial objects, optional attributes defaulted."""
    given = {
        "alert_channels": (
            '{slack = {channel_name = "#oncall", auth_token_secret = "slack-token"},'
            ' webhook = {url = "https://x.example.com/h?auth_token=t"}}'
        ),
        **WITH_HOOKS,
    }
    value = computed("var.alert_channels", given)
    assert value["slack"]["auth_token_version"] == "latest"
    assert value["pagerduty"] is None
    assert value["webhook"]["username"] is None
    assert computed("var.alert_channels") == {"slack": None, "pagerduty": None, "webhook": None}


# --- alert channels ---------------------------------------------------------------------------

EPHEMERAL_SECRET = "ephemeral.google_secret_manager_secret_version.channel"
# Cloud Monitoring's notification channel descriptors: each type's labels, and which of them
# are secrets (the provider's sensitive_labels).
DESCRIPTORS = {
    "email": ({"email_address"}, set()),
    "slack": ({"channel_name"}, {"auth_token"}),
    "pagerduty": (set(), {"service_key"}),
    "webhook_tokenauth": ({"url"}, set()),
    "webhook_basicauth": ({"url", "username"}, {"password"}),
}
# Which variable field holds each channel's secret version.
VERSIONS = {
    "slack": ("auth_token", "var.alert_channels.slack.auth_token_version"),
    "pagerduty": ("service_key", "var.alert_channels.pagerduty.service_key_version"),
    "webhook": ("password", "var.alert_channels.webhook.password_version"),
}


def sensitive_labels(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The sensitive_labels blocks of a channel, static or dynamic (their content)."""
    found = list(body.get("sensitive_labels", []))
    for dynamic in body.get("dynamic", []):
        for label, inner in dynamic.items():
            if literal(label) == "sensitive_labels":
                found += inner["content"]
    return found


def test_channel_secrets_reach_only_write_only_labels_from_ephemeral_secret_versions() -> None:
    channels_ = load().of_kind("google_monitoring_notification_channel")
    assert set(channels_) == {"email", *VERSIONS}
    for name, (secret_label, version) in VERSIONS.items():
        [labels] = sensitive_labels(channels_[name])
        labels = {k: v for k, v in labels.items() if not k.startswith("__")}
        # The write-only argument and its version, nothing the state would keep.
        assert labels.keys() == {f"{secret_label}_wo", f"{secret_label}_wo_version"}, name
        assert expr(labels[f"{secret_label}_wo"]) == f'{EPHEMERAL_SECRET}["{name}"].secret_data'
        assert expr(labels[f"{secret_label}_wo_version"]) == version
    for name, body in channels_.items():
        # No secret as a plain label either.
        plain = body.get("labels", "")
        for _, secrets in DESCRIPTORS.values():
            for secret in secrets:
                assert not re.search(rf"\b{secret}\s*=", str(plain)), (name, secret)
    [(key, ephemeral)] = load().ephemerals.items()
    assert key == ("google_secret_manager_secret_version", "channel")
    assert expr(ephemeral["for_each"]) == "local.channel_secrets"
    assert expr(ephemeral["secret"]) == "each.value.secret"
    assert expr(ephemeral["version"]) == "each.value.version"
    assert expr(ephemeral["project"]) == "var.project_id"


def test_each_channel_secret_is_read_once_at_the_version_its_wo_version_names() -> None:
    secrets = expr(load().locals["channel_secrets"])
    everything = channels(slack=SLACK, pagerduty=PAGERDUTY, webhook=BASIC_AUTH)
    assert computed(secrets, {"alert_channels": everything}) == {
        "slack": {"secret": "slack-token", "version": "2"},
        "pagerduty": {"secret": "pagerduty-key", "version": "latest"},
        "webhook": {"secret": "webhook-password", "version": "1"},
    }
    # The ephemeral version and the *_wo_version come from the same variable field.
    for name, (_, version) in VERSIONS.items():
        field = version.removeprefix("var.alert_channels.")
        assert f"version = var.alert_channels.{field}" in secrets.replace("\n", " "), name
    # Token auth has no secret to read; no channel, nothing read.
    assert computed(secrets, {"alert_channels": channels(webhook=TOKEN_AUTH)}) == {}
    assert computed(secrets) == {}


def test_each_channel_has_its_descriptors_type_and_labels() -> None:
    module = load()
    channels_ = module.of_kind("google_monitoring_notification_channel")
    for name in ("email", "slack", "pagerduty"):
        body = channels_[name]
        assert literal(body["type"]) == name
        labels = set(body.get("labels", {}))
        secrets = {
            k.removesuffix("_wo")
            for labels_ in sensitive_labels(body)
            for k in labels_
            if k.endswith("_wo")
        }
        assert (labels, secrets) == DESCRIPTORS[name], name
    # The webhook's type, labels and secret follow from whether it has a username.
    webhook = channels_["webhook"]
    basic_auth = f"({expr(module.locals['webhook_basic_auth'])})"
    [dynamic] = webhook["dynamic"]
    sensitive = dynamic['"sensitive_labels"']
    [content] = sensitive["content"]
    secret_label = {k.removesuffix("_wo") for k in content if k.endswith("_wo")}
    shape = ", ".join(
        expr(e).replace("local.webhook_basic_auth", basic_auth)
        for e in (webhook["type"], f"${{keys({expr(webhook['labels'])})}}", sensitive["for_each"])
    )
    for auth, expected in [(BASIC_AUTH, "webhook_basicauth"), (TOKEN_AUTH, "webhook_tokenauth")]:
        kind, labels, secrets = computed(f"[{shape}]", {"alert_channels": channels(webhook=auth)})
        assert kind == expected
        assert (set(labels), secret_label if secrets else set()) == DESCRIPTORS[kind], kind


def test_every_alert_policy_notifies_every_channel() -> None:
    module = load()
    policies = module.of_kind("google_monitoring_alert_policy")
    assert policies
    for name, policy in policies.items():
        assert expr(policy["notification_channels"]) == "local.notification_channels", name
    every = expr(module.locals["notification_channels"])
    for name, body in module.of_kind("google_monitoring_notification_channel").items():
        reference = f"google_monitoring_notification_channel.{name}"
        assert reference in every, name
        if "count" in body:
            assert f"{reference}[*].id" in every, name
        else:
            assert f"for channel in {reference} : channel.id" in every, name


# --- the repeated-failure alert ---------------------------------------------------------------


def test_repeated_sync_failures_raise_a_critical_alert_from_the_alerts_service() -> None:
    module = load()
    metric = computed("local.log_metrics")["sync_failed_repeatedly"]
    clauses = metric["filter"].split(" AND ")
    assert clauses == [
        'jsonPayload.event="sync_failed_repeatedly"',
        "severity=CRITICAL",
        'labels.component="alerts"',
    ]
    assert metric["labels"] == {"provider_name": "jsonPayload.provider_name"}
    alert = module.locals["log_alerts"]["sync_failed_repeatedly"]
    assert literal(alert["severity"]) == "CRITICAL"
    # Every alert counts one of the metrics; this one fires on the first such line.
    assert set(module.locals["log_alerts"]) <= set(computed("local.log_metrics"))
    assert alert["threshold"] == 0
    runbook = literal(alert["summary"])
    for field in (
        "customer_id",
        "provider_name",
        "connection_id",
        "object",
        "consecutive_failures",
    ):
        assert field in runbook


# --- versions ---------------------------------------------------------------------------------


def terraform_block() -> dict[str, Any]:
    with (MODULE / "versions.tf").open() as handle:
        [found] = hcl2.load(handle)["terraform"]
    assert isinstance(found, dict)
    return found


def test_terraform_and_the_provider_are_new_enough_for_write_only_arguments() -> None:
    settings = terraform_block()
    required = literal(settings["required_version"])
    # Ephemeral resources came in 1.10, write-only arguments in 1.11.
    assert required == ">= 1.11"
    [providers] = settings["required_providers"]
    google = providers["google"]
    # 7.19: the notification channel's write-only sensitive_labels.
    assert literal(google["version"]) == ">= 7.19, < 8.0"
    deploy = README.read_text().split("## Deploy", 1)[1]
    assert "Terraform 1.11 or newer" in deploy
    assert "7.19" in deploy


def commented_value(example: str, variable: str) -> str:
    """The value of the commented-out `# variable = ...` in the example, uncommented (an
    object may run over several lines, up to a line `# }`)."""
    lines = example.splitlines()
    [start] = [i for i, line in enumerate(lines) if re.match(rf"# {variable}\s+= ", line)]
    first = lines[start].split("=", 1)[1].strip()
    if first != "{":
        return first
    end = lines.index("# }", start)
    return "\n".join(line.removeprefix("#") for line in [first, *lines[start + 1 : end + 1]])


def test_the_tfvars_example_shows_each_new_variable_with_a_value_terraform_accepts() -> None:
    example = (MODULE / "terraform.tfvars.example").read_text()
    variables = [
        "hook_events",
        "hook_settings",
        "hook_secrets",
        "alert_channels",
        "alert_thresholds",
        "runbook_url",
    ]
    given = {variable: commented_value(example, variable) for variable in variables}
    # -var takes a string variable's value as it is, without HCL's quotes.
    given["runbook_url"] = literal(given["runbook_url"])
    for threshold in ("repeated_sync_failures", "backlog_max_age_seconds", "ingest_refused_ratio"):
        assert threshold in given["alert_thresholds"], threshold
    values = computed(f"[{', '.join(f'var.{v}' for v in variables)}]", given)
    assert all(values), values
    channels_ = values[variables.index("alert_channels")]
    assert {"slack", "pagerduty", "webhook"} == {k for k, v in channels_.items() if v}
