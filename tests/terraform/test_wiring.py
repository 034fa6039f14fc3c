"""Terraform's wiring checked against the code it deploys, offline.

Values Terraform computes from variables and the routing table come from Terraform itself
(`terraform console` on routing.tf); the rest is read from the parsed HCL.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from handlers import backfills, ledger, store
from handlers.app import PUSH_PATH
from handlers.services import FUNCTIONS, WORKER_SERVICE, services
from ops.topology import Topology
from shared.routing import load_routes
from shared.settings import HandlerSettings, IngestSettings
from tests.terraform.module import PREFIX, block, computed, expr, literal, load

README = Path(__file__).resolve().parents[2] / "README.md"
# Read by the servers that run the code (the handlers' gunicorn), not by it.
SERVER_VARIABLES = {"THREADS"}


def env_name(field: str) -> str:
    return field.upper()


def required_fields(settings: type[BaseSettings]) -> set[str]:
    return {env_name(name) for name, field in settings.model_fields.items() if field.is_required()}


def known_fields(settings: type[BaseSettings]) -> set[str]:
    return {env_name(name) for name in settings.model_fields} | SERVER_VARIABLES


# --- routes and subscriptions --------------------------------------------------------------


def test_terraform_computes_the_same_filter_as_the_code_for_every_route() -> None:
    routes = load_routes()
    assert computed("local.route_filters") == {
        name: route.subscription_filter() for name, route in routes.items()
    }


def test_topic_and_subscription_names_are_the_ones_the_code_derives() -> None:
    topology = Topology(project="p", prefix=PREFIX)
    settings = HandlerSettings(
        google_cloud_project="p", service="alerts", topic_prefix=PREFIX, push_auth_disabled=True
    )
    assert computed("local.events_topic") == topology.events_topic
    assert computed("local.quarantine_topic") == topology.quarantine_topic
    for route in load_routes():
        assert computed("local.dead_letter_topics")[route] == settings.dead_letter_topic(route)
        assert computed("local.dead_letter_topics")[route] == topology.dead_letter_topic(route)
        assert computed("local.subscriptions")[route] == topology.subscription(route)


def test_every_route_has_a_push_subscription_with_filter_oidc_retries_and_dead_letters() -> None:
    sub = load().resource("google_pubsub_subscription", "push")
    assert expr(sub["for_each"]) == "local.routing"
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
    assert expr(watch["for_each"]) == "local.routing"
    assert expr(watch["topic"]) == "google_pubsub_topic.dead_letter[each.key].id"
    grants = module.of_kind("google_pubsub_topic_iam_member")
    agent = grants["agent_publishes_dead_letters"]
    assert expr(agent["for_each"]) == "local.routing"
    assert expr(agent["topic"]) == "google_pubsub_topic.dead_letter[each.key].name"
    forwards = module.of_kind("google_pubsub_subscription_iam_member")[
        "agent_forwards_from_subscription"
    ]
    assert literal(forwards["role"]) == "roles/pubsub.subscriber"
    assert expr(forwards["subscription"]) == "google_pubsub_subscription.push[each.key].name"


# --- services and environment variables -----------------------------------------------------


def test_one_cloud_run_service_per_service_the_image_runs() -> None:
    assert set(computed("local.handler_services")) == services()
    service = load().resource("google_cloud_run_v2_service", "handler")
    assert expr(service["for_each"]) == "local.handler_services"


def handler_environment(service: str) -> dict[str, str]:
    """The env vars the Cloud Run service `service` gets: static blocks and dynamic maps."""
    module = load()
    resource = module.resource("google_cloud_run_v2_service", "handler")
    [container] = block(resource, "template")["containers"]
    env = {literal(item["name"]): item["value"] for item in container.get("env", [])}
    backfill_services = set(computed("local.backfill_services"))
    for dynamic in container["dynamic"]:
        [(label, body)] = [(k, v) for k, v in dynamic.items() if not k.startswith("__")]
        assert literal(label) == "env"
        source = expr(body["for_each"])
        if source == "local.handler_env":
            env.update(module.locals["handler_env"])
        elif source == "contains(local.backfill_services, each.key) ? local.backfill_env : {}":
            if service in backfill_services:
                env.update(module.locals["backfill_env"])
        else:
            pytest.fail(f"unexpected env source {source}")
    return env


def test_the_services_that_enqueue_backfills_get_the_queue_settings() -> None:
    # The scheduler's service (its route's function is backfills.handle) and the worker.
    enqueuers = {
        route.service
        for name, route in load_routes().items()
        if FUNCTIONS[name] is backfills.handle
    } | {WORKER_SERVICE}
    assert set(computed("local.backfill_services")) == enqueuers
    needed = {"TASKS_LOCATION", "TASKS_QUEUE", "BACKFILL_WORKER_URL", "TASKS_SERVICE_ACCOUNT"}
    for service in services():
        env = handler_environment(service)
        if service in enqueuers:
            assert needed <= env.keys(), service
        else:
            assert not needed & env.keys(), service


@pytest.mark.parametrize("service", sorted(services()))
def test_every_handler_setting_the_code_needs_is_set_and_nothing_unknown(service: str) -> None:
    env = handler_environment(service)
    # Required, plus the push identity: without it the service refuses to start (auth on).
    assert (
        required_fields(HandlerSettings) | {"PUSH_AUDIENCE", "PUSH_SERVICE_ACCOUNT"} <= env.keys()
    )
    assert env.keys() <= known_fields(HandlerSettings)
    assert "PUSH_AUTH_DISABLED" not in env
    assert expr(env["SERVICE"]) == "each.key"
    # The audience each service expects is the one its callers put in the token.
    assert expr(env["PUSH_AUDIENCE"]) == "local.run_urls[each.key]"
    if service in computed("local.backfill_services"):
        assert expr(env["BACKFILL_WORKER_URL"]) == "local.run_urls[local.worker_service]"
    assert computed("local.worker_service") == WORKER_SERVICE
    # The claim on an event lasts exactly as long as an attempt can: the worker's request
    # timeout, or the handlers' ack deadline (their request timeout + 30 s).
    lease = expr(env["LEDGER_LEASE_SECONDS"])
    ack_deadline = expr(
        load().resource("google_pubsub_subscription", "push")["ack_deadline_seconds"]
    )
    assert "local.worker_timeout_seconds" in lease
    assert ack_deadline in lease


def test_the_worker_outlasts_its_task_dispatch_deadline() -> None:
    chunk_seconds = 240
    settings = HandlerSettings(
        google_cloud_project="p",
        service=WORKER_SERVICE,
        push_auth_disabled=True,
        tasks_location="l",
        tasks_queue="q",
        backfill_worker_url="https://w",
        backfill_chunk_seconds=chunk_seconds,
    )
    task = backfills.BackfillQueue(settings).task(backfills.TaskRequest("bf-1", 0))
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
    assert literal(build["environment_variables"]["GOOGLE_FUNCTION_SOURCE"]) == "ingest_fn/main.py"


# --- Firestore ------------------------------------------------------------------------------


def test_the_ttl_policy_is_on_the_field_the_ledger_writes() -> None:
    ttl = load().resource("google_firestore_field", "ledger_ttl")
    assert literal(ttl["collection"]) == ledger.COLLECTION
    assert literal(ttl["field"]) == "expires_at"
    assert '"expires_at": now + self._retention' in Path(ledger.__file__).read_text()
    assert "ttl_config" in ttl


def test_the_index_serves_the_query_that_cancels_a_connections_backfills() -> None:
    index = load().resource("google_firestore_index", "backfills_by_connection")
    assert literal(index["collection"]) == store.BACKFILLS
    source = Path(backfills.__file__).read_text()
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


def grantees(member: str, for_each: str | None) -> set[str]:
    """Who a grant's member expression names, resolving for_each over the handler accounts."""
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
            who |= set(computed(expr(for_each)))
        elif index == "[each.value.service]":
            who |= set(computed("local.routes_by_service"))
        else:
            pytest.fail(f"unexpected handler account index {index}")
    return who


def grants_in_terraform() -> set[tuple[str, str]]:
    found = set()
    for (kind, _name), body in load().resources.items():
        if kind.endswith("_iam_member"):
            role = literal(body["role"])
            for who in grantees(body["member"], body.get("for_each")):
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
    assert grants_in_terraform() == readme


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
    assert "$(PREFIX)-webhook-secrets" in makefile
    secret = load().resource("google_secret_manager_secret", "webhook_secrets")
    assert literal(secret["secret_id"]) == "${var.name_prefix}-webhook-secrets"
    assert "serviceAccounts/$(PREFIX)-build@$(PROJECT).iam.gserviceaccount.com" in makefile
    build = load().resource("google_service_account", "build")
    assert literal(build["account_id"]) == "${var.name_prefix}-build"
    assert "gs://$(PROJECT)-$(PREFIX)-source/" in makefile
    bucket = load().resource("google_storage_bucket", "source")
    assert literal(bucket["name"]) == "${var.project_id}-${var.name_prefix}-source"
    repository = load().resource("google_artifact_registry_repository", "images")
    assert literal(repository["repository_id"]) == "${var.name_prefix}"
    assert "IMAGE = $(REGION)-docker.pkg.dev/$(PROJECT)/$(PREFIX)/handlers:$(TAG)" in makefile
