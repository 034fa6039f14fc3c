"""Terraform's wiring checked against the code it deploys, offline.

Values Terraform computes from variables and the routing table come from Terraform itself
(`terraform console` on routing.tf); the rest is read from the parsed HCL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from handlers import backfill_store, ledger, store, tasks_queue
from handlers.reconcile.app import RECONCILE_PATH
from handlers.services import is_reconciler
from ops.cli.archive import ARCHIVE_PREFIX, ARCHIVE_SUFFIX
from shared.names import Names
from shared.routing import MAX_FILTER_BYTES, PUSH_PATH, load_routes, load_table
from shared.settings import HandlerSettings, IngestSettings, ReconcilerSettings
from tests.terraform.module import (
    PREFIX,
    README,
    block,
    computed,
    dynamic_conditions,
    expr,
    literal,
    load,
)

# Read by the servers that run the code (the handlers' gunicorn), not by it.
SERVER_VARIABLES = {"THREADS"}
# What handler_environment puts for a variable whose value comes from Secret Manager.
SECRET = "<from Secret Manager>"

# A deployment that uses every hook feature: events for the hooks route, plain settings, and
# secrets (two variables naming one secret: one grant per service and secret, not per name).
HOOK_EVENTS = ["sync.complete", "entity.entity_mapping.*"]
HOOK_SETTINGS = {"CRM_BASE_URL": "https://crm.example.com", "CRM_BATCH": "100"}
HOOK_SECRETS = {
    "CRM_API_TOKEN": "crm-api-token",
    "CRM_TOKEN_ALIAS": "crm-api-token",
    "WAREHOUSE_DSN": "warehouse-dsn",
}


def hcl(value: Any) -> str:
    """A Python list or dict of strings as an HCL value for -var (JSON is valid HCL for these)."""
    return json.dumps(value)


WITH_HOOKS = {
    "hook_events": hcl(HOOK_EVENTS),
    "hook_settings": hcl(HOOK_SETTINGS),
    "hook_secrets": hcl(HOOK_SECRETS),
}


def env_name(field: str) -> str:
    return field.upper()


def required_fields(settings: type[BaseSettings]) -> set[str]:
    return {env_name(name) for name, field in settings.model_fields.items() if field.is_required()}


def known_fields(settings: type[BaseSettings]) -> set[str]:
    return {env_name(name) for name in settings.model_fields} | SERVER_VARIABLES


# --- routes and subscriptions --------------------------------------------------------------


@pytest.mark.parametrize("hook_events", [[], HOOK_EVENTS, ["sync.paused"], ["*"]])
def test_terraform_computes_the_same_filter_as_the_code_for_every_route(
    hook_events: list[str],
) -> None:
    routes = load_table().with_hook_events(tuple(hook_events)).routes
    assert any(route.from_hook_events for route in routes.values())
    assert computed("local.route_filters", {"hook_events": hcl(hook_events)}) == {
        name: route.subscription_filter() for name, route in routes.items()
    }


def test_a_route_without_event_types_gets_no_subscription_and_nothing_is_pushed_to_it() -> None:
    """An empty filter would deliver every event: the hooks route has no subscription, no
    dead-letter topic, no grants and no invoker until hook_events names an event."""
    routes = load_routes()
    hooks = {name for name, route in routes.items() if route.from_hook_events}
    static = set(routes) - hooks
    hook_services = {routes[name].service for name in hooks}
    assert set(computed("local.subscribed_routes")) == static
    assert set(computed("local.subscribed_routes", WITH_HOOKS)) == set(routes)
    assert set(computed("local.routed_services")).isdisjoint(hook_services)
    assert hook_services <= set(computed("local.routed_services", WITH_HOOKS))
    # The hooks service exists always (it scales to zero), invocable by nobody until then.
    assert hook_services <= set(computed("local.handler_services"))
    assert invokers() == expected_invokers(())
    assert invokers(WITH_HOOKS) == expected_invokers(tuple(HOOK_EVENTS))
    module = load()
    for kind, name in [
        ("google_pubsub_subscription", "push"),
        ("google_pubsub_subscription", "dead_letter_watch"),
        ("google_pubsub_topic", "dead_letter"),
        ("google_pubsub_topic_iam_member", "agent_publishes_dead_letters"),
        ("google_pubsub_subscription_iam_member", "agent_forwards_from_subscription"),
    ]:
        assert expr(module.resource(kind, name)["for_each"]) == "local.subscribed_routes", name
    policy = module.resource("google_monitoring_alert_policy", "dead_letter_backlog")
    assert expr(dynamic_conditions(policy)["for_each"]) == "local.subscribed_routes"
    # Dead-lettering grants follow the subscribed routes too (routes_by_service).
    assert set(computed("local.routes_by_service")).isdisjoint(hook_services)


def test_the_filter_length_is_checked_before_pubsub_refuses_it() -> None:
    assert computed("local.max_filter_bytes") == MAX_FILTER_BYTES
    sub = load().resource("google_pubsub_subscription", "push")
    [lifecycle] = sub["lifecycle"]
    [precondition] = lifecycle["precondition"]
    [hooks] = [name for name, route in load_routes().items() if route.from_hook_events]

    def holds(hook_events: list[str]) -> bool:
        condition = expr(precondition["condition"]).replace("each.key", json.dumps(hooks))
        return bool(computed(condition, {"hook_events": hcl(hook_events)}))

    def filter_bytes(hook_events: list[str]) -> int:
        route = load_table().with_hook_events(tuple(hook_events)).routes[hooks]
        return len(route.subscription_filter().encode())

    # The longest list of these that fits, and one more.
    types = [f"entity.entity_mapping.type_{i}" for i in range(20)]
    fitting = max((types[:n] for n in range(20) if filter_bytes(types[:n]) <= 256), key=len)
    too_many = types[: len(fitting) + 1]
    assert filter_bytes(fitting) <= MAX_FILTER_BYTES < filter_bytes(too_many)
    assert holds(fitting)
    assert not holds(too_many)
    message = literal(precondition["error_message"]).replace("${each.key}", hooks)
    assert "hook_events" in message


def test_every_name_terraform_gives_is_the_one_shared_names_derives() -> None:
    names = Names(PREFIX)
    settings = HandlerSettings(
        google_cloud_project="p", service="alerts", topic_prefix=PREFIX, push_auth_disabled=True
    )
    assert computed("local.events_topic") == names.events_topic
    assert computed("local.quarantine_topic") == names.quarantine_topic
    assert computed("local.quarantine_watch_subscription") == names.watch_subscription(
        names.quarantine_topic
    )
    assert computed("local.ingest_function") == names.ingest_function
    assert computed("local.tasks_queue") == names.tasks_queue
    assert computed("local.webhook_secret") == names.webhook_secret
    assert computed("local.supaglue_api_key_secret") == names.supaglue_api_key_secret
    assert computed("local.scheduler_account") == names.scheduler_account
    assert computed("local.reconcile_job") == names.reconcile_job
    assert computed("local.archive_subscription") == names.archive_subscription
    assert computed("local.archive_bucket", {"project_id": "my-project"}) == (
        names.archive_bucket("my-project")
    )
    table = load_table()
    assert computed("local.run_service_names") == {s: names.service(s) for s in table.services}
    for route in (r.name for r in table.active_routes()):
        dead_letter = names.dead_letter_topic(route)
        assert computed("local.dead_letter_topics")[route] == dead_letter
        assert settings.dead_letter_topic(route) == dead_letter
        assert computed("local.dead_letter_watch_subscriptions")[route] == (
            names.watch_subscription(dead_letter)
        )
        assert computed("local.subscriptions")[route] == names.subscription(route)


def test_every_route_has_a_push_subscription_with_filter_oidc_retries_and_dead_letters() -> None:
    sub = load().resource("google_pubsub_subscription", "push")
    assert expr(sub["for_each"]) == "local.subscribed_routes"
    assert expr(sub["topic"]) == "google_pubsub_topic.events.id"
    assert expr(sub["filter"]) == "local.route_filters[each.key]"
    assert sub["retain_acked_messages"] is True  # `python -m ops replay --since` seeks into it
    push = block(sub, "push_config")
    # The endpoint is the route's path on its service, as handlers/app.py registers it.
    assert literal(
        push["push_endpoint"]
    ) == "${local.run_urls[each.value.service]}" + PUSH_PATH.format(route="${each.key}")
    oidc = block(push, "oidc_token")
    assert expr(oidc["service_account_email"]) == "google_service_account.push.email"
    assert expr(oidc["audience"]) == "local.run_urls[each.value.service]"
    retry = block(sub, "retry_policy")
    assert {"minimum_backoff", "maximum_backoff"} <= retry.keys()
    dead = block(sub, "dead_letter_policy")
    assert expr(dead["dead_letter_topic"]) == "google_pubsub_topic.dead_letter[each.key].id"
    assert "max_delivery_attempts" in dead
    # The ack deadline outlasts the handler's own request timeout.
    assert expr(sub["ack_deadline_seconds"]) == "var.handlers.timeout_seconds + 30"
    service = load().resource("google_cloud_run_v2_service", "handler")
    assert "var.handlers.timeout_seconds" in block(service, "template")["timeout"]


def test_every_dead_letter_topic_has_a_pull_subscription_and_the_agent_grants() -> None:
    module = load()
    watch = module.resource("google_pubsub_subscription", "dead_letter_watch")
    assert expr(watch["for_each"]) == "local.subscribed_routes"
    assert expr(watch["topic"]) == "google_pubsub_topic.dead_letter[each.key].id"
    assert expr(watch["name"]) == "local.dead_letter_watch_subscriptions[each.key]"
    grants = module.of_kind("google_pubsub_topic_iam_member")
    agent = grants["agent_publishes_dead_letters"]
    assert expr(agent["for_each"]) == "local.subscribed_routes"
    assert expr(agent["topic"]) == "google_pubsub_topic.dead_letter[each.key].name"
    forwards = module.of_kind("google_pubsub_subscription_iam_member")[
        "agent_forwards_from_subscription"
    ]
    assert literal(forwards["role"]) == "roles/pubsub.subscriber"
    assert expr(forwards["subscription"]) == "google_pubsub_subscription.push[each.key].name"


# --- services and environment variables -----------------------------------------------------


def test_one_cloud_run_service_per_service_the_image_runs() -> None:
    assert set(computed("local.handler_services")) == set(load_table().services)
    assert computed("local.worker_service") == load_table().worker.name
    service = load().resource("google_cloud_run_v2_service", "handler")
    assert expr(service["for_each"]) == "local.handler_services"


def handler_environment(service: str, variables: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The env vars the Cloud Run service `service` gets, with `variables`: static blocks,
    the handlers.tf maps, and every other dynamic block as Terraform computes its for_each.
    A plain variable maps to its value (an expression string, or the computed value); a
    secret one to its `secret_key_ref` block, the secret being the computed value."""
    module = load()
    resource = module.resource("google_cloud_run_v2_service", "handler")
    [container] = block(resource, "template")["containers"]
    env: dict[str, Any] = {
        literal(item["name"]): item["value"] for item in container.get("env", [])
    }
    backfill_services = set(computed("local.backfill_services"))
    for dynamic in container["dynamic"]:
        [(label, body)] = [(k, v) for k, v in dynamic.items() if not k.startswith("__")]
        assert literal(label) == "env"
        source = expr(body["for_each"])
        [content] = body["content"]
        assert expr(content["name"]) == "env.key"
        if source == "local.handler_env":
            env.update(module.locals["handler_env"])
        elif source == "contains(local.backfill_services, each.key) ? local.backfill_env : {}":
            if service in backfill_services:
                env.update(module.locals["backfill_env"])
        elif source == "contains(local.reconciler_services, each.key) ? local.reconciler_env : {}":
            # reconciler.tf's, beside resources: its expressions as written.
            if service in computed("local.reconciler_services"):
                env.update(module.locals["reconciler_env"])
        elif source == (
            "contains(local.reconciler_services, each.key) ? local.reconciler_secret_env : {}"
        ):
            # The secret's id is the secret resource's: known once applied, so named here.
            ref = block(block(content, "value_source"), "secret_key_ref")
            assert expr(ref["secret"]) == "env.value"
            if service in computed("local.reconciler_services"):
                secrets = module.locals["reconciler_secret_env"]
                env.update({name: {**ref, "secret": SECRET} for name in secrets})
        elif "value_source" in content:
            # Secret Manager: the value is read by Cloud Run when an instance starts.
            assert "value" not in content
            ref = block(block(content, "value_source"), "secret_key_ref")
            assert expr(ref["secret"]) == "env.value"
            for name, secret in computed(source, variables).items():
                env[name] = {**ref, "secret": secret}
        else:
            # Pure over variables and routing.tf: Terraform computes it, for this service.
            assert expr(content["value"]) == "env.value"
            env.update(computed(source.replace("each.key", json.dumps(service)), variables))
    return env


def test_the_services_that_enqueue_backfills_get_the_queue_settings() -> None:
    table = load_table()
    enqueuers = {name for name, service in table.services.items() if service.enqueues_backfills}
    assert set(computed("local.backfill_services")) == enqueuers
    # The services whose code enqueues: the scheduler's, and the worker (the next chunk).
    assert {r.service for r in table.routes.values() if r.handler == "handlers.scheduler"} | {
        table.worker.name
    } == enqueuers
    needed = {"TASKS_LOCATION", "TASKS_QUEUE", "BACKFILL_WORKER_URL", "TASKS_SERVICE_ACCOUNT"}
    for service in load_table().services:
        env = handler_environment(service)
        if service in enqueuers:
            assert needed <= env.keys(), service
        else:
            assert not needed & env.keys(), service


@pytest.mark.parametrize("variables", [{}, WITH_HOOKS], ids=["defaults", "with-hooks"])
@pytest.mark.parametrize("service", sorted(load_table().services))
def test_every_handler_setting_the_code_needs_is_set_and_nothing_unknown(
    service: str, variables: dict[str, str]
) -> None:
    env = handler_environment(service, variables)
    settings = ReconcilerSettings if is_reconciler(service) else HandlerSettings
    # Required, plus the push identity: without it the service refuses to start (auth on).
    assert required_fields(settings) | {"PUSH_AUDIENCE", "PUSH_SERVICE_ACCOUNT"} <= env.keys()
    # The hooks' own settings and secrets are the only names the settings classes do not read.
    hook_secrets = set(computed("var.hook_secrets", variables))
    hook_names = set(computed("var.hook_settings", variables)) | hook_secrets
    assert env.keys() <= known_fields(settings) | hook_names
    assert hook_names <= env.keys()
    # Supaglue's API key comes from Secret Manager, to the reconciler only.
    secrets = {name for name, value in env.items() if isinstance(value, dict)} - hook_secrets
    assert secrets == ({"SUPAGLUE_API_KEY"} if is_reconciler(service) else set())
    assert "PUSH_AUTH_DISABLED" not in env
    assert expr(env["SERVICE"]) == "each.key"
    # The audience each service expects is the one its callers put in the token.
    assert expr(env["PUSH_AUDIENCE"]) == "local.run_urls[each.key]"
    if service in computed("local.backfill_services"):
        assert expr(env["BACKFILL_WORKER_URL"]) == "local.run_urls[local.worker_service]"
    # The claim on an event lasts exactly as long as an attempt can: the worker's request
    # timeout, or the handlers' ack deadline (their request timeout + 30 s).
    lease = expr(env["LEDGER_LEASE_SECONDS"])
    ack_deadline = expr(
        load().resource("google_pubsub_subscription", "push")["ack_deadline_seconds"]
    )
    assert "local.worker_timeout_seconds" in lease
    assert ack_deadline in lease


@pytest.mark.parametrize("service", sorted(load_table().services))
def test_every_service_gets_the_hook_settings_and_secrets_and_secrets_come_from_secret_manager(
    service: str,
) -> None:
    env = handler_environment(service, WITH_HOOKS)
    for name, value in HOOK_SETTINGS.items():
        assert env[name] == value
    for name, secret in HOOK_SECRETS.items():
        assert env[name] == {"secret": secret, "version": '"latest"', "__is_block__": True}
    # None of them is also given in clear.
    assert not set(HOOK_SECRETS) & set(HOOK_SETTINGS)


def test_hook_events_reach_the_hooks_service_and_the_threshold_the_alerts_service() -> None:
    table = load_table()
    hook_services = {r.service for r in table.routes.values() if r.from_hook_events}
    alerts_services = {r.service for r in table.routes.values() if r.handler == "handlers.alerts"}
    assert hook_services and alerts_services
    threshold = 5
    variables = {**WITH_HOOKS, "alert_thresholds": f"{{repeated_sync_failures={threshold}}}"}
    for service in table.services:
        env = handler_environment(service, variables)
        if service in hook_services:
            # The same list the subscription filter is built from, as HOOK_EVENTS reads it.
            assert env["HOOK_EVENTS"] == ",".join(HOOK_EVENTS)
        else:
            assert "HOOK_EVENTS" not in env, service
        if service in alerts_services:
            assert env["REPEATED_FAILURE_THRESHOLD"] == str(threshold)
        else:
            assert "REPEATED_FAILURE_THRESHOLD" not in env, service
    default = computed("var.alert_thresholds.repeated_sync_failures")
    assert default == 3
    # Once HandlerSettings reads it (#14's Python half), the code's default is Terraform's.
    field = HandlerSettings.model_fields.get("repeated_failure_threshold")
    if field is not None:
        assert field.default == default
    for service in hook_services:
        assert handler_environment(service)["HOOK_EVENTS"] == ""


def test_the_worker_outlasts_its_task_dispatch_deadline() -> None:
    chunk_seconds = 240
    settings = HandlerSettings(
        google_cloud_project="p",
        service=load_table().worker.name,
        push_auth_disabled=True,
        tasks_location="l",
        tasks_queue="q",
        backfill_worker_url="https://w",
        backfill_chunk_seconds=chunk_seconds,
    )
    task = tasks_queue.BackfillQueue(settings).task(tasks_queue.TaskRequest("bf-1", 0))
    timeout = computed(
        "local.worker_timeout_seconds", {"backfills": f"{{chunk_seconds={chunk_seconds}}}"}
    )
    assert timeout > task.dispatch_deadline.seconds
    assert timeout <= 3600  # Cloud Run's longest request timeout


def test_every_ingest_setting_the_code_needs_is_set_and_nothing_unknown() -> None:
    function = load().resource("google_cloudfunctions2_function", "ingest")
    config = block(function, "service_config")
    plain = config["environment_variables"]
    secret = {literal(item["key"]) for item in config["secret_environment_variables"]}
    env = plain.keys() | secret
    assert required_fields(IngestSettings) <= env
    assert env <= known_fields(IngestSettings)
    assert secret == {"WEBHOOK_SECRETS"}, "the signing secrets come from Secret Manager only"
    assert "WEBHOOK_SECRETS" not in plain
    # An async function: one event loop per worker, no request threads to size.
    assert "THREADS" not in plain
    build = block(function, "build_config")
    assert literal(build["entry_point"]) == "ingest"
    # The runtime's default source, main.py at the archive's root (test_source_archive.py).
    assert "GOOGLE_FUNCTION_SOURCE" not in build.get("environment_variables", {})


# --- the reconciler and the archive ---------------------------------------------------------


def test_cloud_scheduler_calls_the_reconciler_with_its_own_identity() -> None:
    module = load()
    [reconciler] = computed("local.reconciler_services")
    assert reconciler == load_table().reconciler.name  # type: ignore[union-attr]
    job = module.resource("google_cloud_scheduler_job", "reconcile")
    assert expr(job["for_each"]) == "local.reconciler_services"
    target = block(job, "http_target")
    assert literal(target["http_method"]) == "POST"
    assert literal(target["uri"]) == "${local.run_urls[each.key]}" + RECONCILE_PATH
    oidc = block(target, "oidc_token")
    assert expr(oidc["service_account_email"]) == "google_service_account.scheduler.email"
    assert expr(oidc["audience"]) == "local.run_urls[each.key]"
    # The reconciler accepts that identity's token for its own URL, and only that one invokes it.
    env = handler_environment(reconciler)
    assert "google_service_account.scheduler.email" in expr(env["PUSH_SERVICE_ACCOUNT"])
    assert invokers()[reconciler] == "scheduler"
    # The scheduler waits for a whole pass, and the service's request outlasts the budget.
    assert literal(job["attempt_deadline"]) == "${local.reconciler_timeout_seconds}s"
    budget = 240
    assert computed("local.reconciler_timeout_seconds") > budget
    assert computed("local.reconciler_timeout_seconds") <= 1800  # the scheduler's limit
    assert (
        "local.reconciler_timeout_seconds"
        in block(module.resource("google_cloud_run_v2_service", "handler"), "template")["timeout"]
    )
    assert ReconcilerSettings.model_fields["reconcile_time_budget_seconds"].default == budget


def test_the_reconcilers_defaults_are_the_codes() -> None:
    """Every 15 minutes, and Terraform's budgets are those the settings default to."""
    assert computed("var.reconciler.schedule") == "*/15 * * * *"
    fields = ReconcilerSettings.model_fields
    for variable, field in (
        ("overlap_seconds", "reconcile_overlap_seconds"),
        ("settle_seconds", "reconcile_settle_seconds"),
        ("page_size", "reconcile_page_size"),
        ("max_requests", "reconcile_max_requests"),
        ("time_budget_seconds", "reconcile_time_budget_seconds"),
    ):
        assert computed(f"var.reconciler.{variable}") == fields[field].default, variable
    assert computed("var.reconciler.api_url") == str(fields["supaglue_api_url"].default).rstrip("/")


def test_every_event_is_archived_with_its_attributes_for_400_days() -> None:
    module = load()
    subscription = module.resource("google_pubsub_subscription", "archive")
    assert expr(subscription["topic"]) == "google_pubsub_topic.events.id"
    assert expr(subscription["name"]) == "local.archive_subscription"
    storage = block(subscription, "cloud_storage_config")
    assert expr(storage["bucket"]) == "google_storage_bucket.archive.name"
    assert block(storage, "avro_config")["write_metadata"] is True
    assert literal(storage["filename_prefix"]) == ARCHIVE_PREFIX
    assert literal(storage["filename_suffix"]) == ARCHIVE_SUFFIX
    bucket = module.resource("google_storage_bucket", "archive")
    assert bucket["uniform_bucket_level_access"] is True
    assert literal(bucket["public_access_prevention"]) == "enforced"
    [rule] = bucket["lifecycle_rule"]
    assert expr(block(rule, "condition")["age"]) == "var.archive.retention_days"
    assert literal(block(rule, "action")["type"]) == "Delete"
    assert computed("var.archive.retention_days") == 400


# --- Firestore ------------------------------------------------------------------------------


def test_the_ttl_policy_is_on_the_field_the_ledger_writes() -> None:
    ttl = load().resource("google_firestore_field", "ledger_ttl")
    assert literal(ttl["collection"]) == ledger.COLLECTION
    assert literal(ttl["field"]) == ledger.EXPIRES_FIELD
    assert "ttl_config" in ttl


def test_the_index_serves_the_query_that_cancels_a_connections_backfills() -> None:
    index = load().resource("google_firestore_index", "backfills_by_connection")
    assert literal(index["collection"]) == store.BACKFILLS
    source = Path(backfill_store.__file__).read_text()
    query_fields = re.findall(r'FieldFilter\(\s*"(\w+)"', source)
    assert [literal(f["field_path"]) for f in index["fields"]] == query_fields


# --- variables and outputs ------------------------------------------------------------------


def test_every_variable_has_a_description_and_a_type_and_outputs_are_described() -> None:
    module = load()
    for name, variable in module.variables.items():
        assert literal(variable.get("description", "")).strip(), name
        assert "type" in variable, name
    for name, output in module.outputs.items():
        assert literal(output.get("description", "")).strip(), name
    assert (
        expr(module.outputs["ingest_url"]["value"]) == "google_cloudfunctions2_function.ingest.url"
    )


# --- service accounts and roles ------------------------------------------------------------

AGENT = "Pub/Sub service agent"
SECRET_ACCESSOR = "roles/secretmanager.secretAccessor"


# The account each caller of table.services invokes with (routing's `called_by`).
CALLER_ACCOUNTS = {"pubsub": "push", "tasks": "tasks", "scheduler": "scheduler"}


def invokers(variables: Mapping[str, str] | None = None) -> dict[str, str]:
    """service -> the account allowed to invoke it, as Terraform computes the invoker grants
    with `variables` (each account's member as its name: members are known only on apply)."""
    invoker = load().resource("google_cloud_run_v2_service_iam_member", "invoker")
    member = re.sub(r"google_service_account\.([\w-]+)\.member", r'"\1"', expr(invoker["member"]))
    mapping = f"{{for k in {expr(invoker['for_each'])} : k => {member.replace('each.key', 'k')}}}"
    found: dict[str, str] = computed(mapping, variables)
    return found


def expected_invokers(hook_events: tuple[str, ...]) -> dict[str, str]:
    """Every service that something calls, and who calls it: what the routing table says."""
    table = load_table().with_hook_events(hook_events)
    pushed = {route.service for route in table.active_routes()}
    return {
        service.name: CALLER_ACCOUNTS[service.called_by]
        for service in table.services.values()
        if service.called_by != "pubsub" or service.name in pushed
    }


def grantees(
    member: str, for_each: str | None, variables: Mapping[str, str] | None = None
) -> set[str]:
    """Who a grant's member expression names, resolving for_each over the handler accounts
    as Terraform computes it with `variables`."""
    if member == '"allUsers"':
        return {"allUsers"}
    if expr(member) == "local.pubsub_service_agent":
        return {AGENT}
    named = set(re.findall(r"google_service_account\.([\w-]+)(\[[^\]]+\])?\.member", member))
    assert named, member
    who: set[str] = set()
    for account, index in named:
        if account != "handler":
            who.add(account)
        elif index == "[each.key]":
            assert for_each is not None
            who |= set(computed(expr(for_each), variables))
        elif index == "[each.value.service]":
            assert for_each is not None
            pairs = computed(expr(for_each), variables)
            who |= {pair["service"] for pair in pairs.values()}
        else:
            pytest.fail(f"unexpected handler account index {index}")
    return who


def grants_in_terraform(variables: Mapping[str, str] | None = None) -> set[tuple[str, str]]:
    found = set()
    for (kind, _name), body in load().resources.items():
        if kind.endswith("_iam_member"):
            role = literal(body["role"])
            for who in grantees(body["member"], body.get("for_each"), variables):
                found.add((who, role))
    return found


def grants_in_readme() -> set[tuple[str, str]]:
    text = README.read_text()
    section = text[text.index("### Service accounts and roles") :]
    section = section[: section.index("\n### ", 1)]
    found = set()
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[1].startswith("`roles/"):
            continue
        role = cells[1].strip("`")
        for account in cells[0].split(","):
            found.add((account.strip().strip("`"), role))
    return found


def test_each_account_holds_only_the_roles_the_readme_lists() -> None:
    readme = grants_in_readme()
    assert readme, "the README's roles table is missing"
    # The table lists every grant a deployment can get: with hook events and secrets.
    assert grants_in_terraform(WITH_HOOKS) == readme
    # Without them, less: no grant on a secret nobody named, no dead-lettering for the hooks
    # route that has no subscription (the hooks service keeps its Firestore grant).
    services = set(load_table().services)
    hooks_services = {r.service for r in load_table().routes.values() if r.from_hook_events}
    # The reconciler reads its API key's secret either way.
    reconciler = load_table().reconciler
    hook_secret_readers = services - {reconciler.name} if reconciler else services
    assert readme - grants_in_terraform() == {(s, SECRET_ACCESSOR) for s in hook_secret_readers} | {
        (s, "roles/pubsub.publisher") for s in hooks_services
    }


def hook_secret_grants(variables: Mapping[str, str] | None = None) -> set[tuple[str, str]]:
    """(service account, secret) of every secretAccessor grant to a handler account."""
    module = load()
    found = set()
    for (kind, name), body in module.resources.items():
        if kind.endswith("_iam_member") and literal(body["role"]) == SECRET_ACCESSOR:
            if "google_service_account.handler" not in body["member"]:
                continue
            if expr(body["secret_id"]) == "google_secret_manager_secret.supaglue_api_key.secret_id":
                # The reconciler's API key (test_cloud_scheduler_calls_the_reconciler...).
                continue
            assert kind == "google_secret_manager_secret_iam_member", name
            assert expr(body["member"]) == (
                "google_service_account.handler[each.value.service].member"
            )
            assert expr(body["secret_id"]) == "each.value.secret"
            assert expr(body["project"]) == "var.project_id"
            for pair in computed(expr(body["for_each"]), variables).values():
                found.add((pair["service"], pair["secret"]))
    return found


def test_every_handler_service_may_read_exactly_the_hook_secrets() -> None:
    services = set(load_table().services)
    assert hook_secret_grants() == set()
    assert hook_secret_grants(WITH_HOOKS) == {
        (service, secret) for service in services for secret in set(HOOK_SECRETS.values())
    }
    # Each service reads them at start-up, so its revision waits for the grants.
    depends_on = load().resource("google_cloud_run_v2_service", "handler")["depends_on"]
    grants = "google_secret_manager_secret_iam_member.handler_reads_hook_secrets"
    assert f"${{{grants}}}" in depends_on


def test_no_account_gets_a_basic_role_and_only_the_function_is_public() -> None:
    for (kind, name), body in load().resources.items():
        if kind.endswith("_iam_member"):
            assert literal(body["role"]) not in {"roles/owner", "roles/editor", "roles/viewer"}
            if literal(body["member"]) in {"allUsers", "allAuthenticatedUsers"}:
                assert (kind, name) == ("google_cloud_run_v2_service_iam_member", "ingest_public")
                assert expr(body["name"]) == "google_cloudfunctions2_function.ingest.name"


# --- make deploy ----------------------------------------------------------------------------


def test_make_deploy_names_what_terraform_creates() -> None:
    makefile = (README.parent / "Makefile").read_text()
    targets = re.findall(r"-target=([\w.]+)", makefile)
    assert targets, "make deploy applies the bootstrap resources first"
    for target in targets:
        kind, name = target.split(".")
        assert (kind, name) in load().resources, target
    # The names make deploy spells out with $(PREFIX) and $(PROJECT), as Terraform builds them.
    assert Names("$(PREFIX)").webhook_secret in makefile
    secret = load().resource("google_secret_manager_secret", "webhook_secrets")
    assert expr(secret["secret_id"]) == "local.webhook_secret"
    assert "serviceAccounts/$(PREFIX)-build@$(PROJECT).iam.gserviceaccount.com" in makefile
    build = load().resource("google_service_account", "build")
    assert literal(build["account_id"]) == "${var.name_prefix}-build"
    assert "gs://$(PROJECT)-$(PREFIX)-source/" in makefile
    bucket = load().resource("google_storage_bucket", "source")
    assert literal(bucket["name"]) == "${var.project_id}-${var.name_prefix}-source"
    repository = load().resource("google_artifact_registry_repository", "images")
    assert literal(repository["repository_id"]) == "${var.name_prefix}"
    assert "IMAGE = $(REGION)-docker.pkg.dev/$(PROJECT)/$(PREFIX)/handlers:$(TAG)" in makefile
