"""The alert policies (terraform/monitoring.tf): each links its runbook entry in the README, the
push backlog is watched per route, and an ingest that refuses most requests pages within hours.

Validations are evaluated by Terraform itself (`refusals_of`); queries come from `terraform
console` on the files without resources, the rest from the parsed HCL.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from shared.names import Names
from shared.routing import ROUTING_FILE, load_routes
from tests.terraform.module import (
    PREFIX,
    README,
    computed,
    dynamic_conditions,
    expr,
    literal,
    load,
    refusals_of,
)
from tests.terraform.test_wiring import WITH_HOOKS

RUNBOOK = "Runbook"
# How each policy's documentation ends: its entry under the README's Runbook.
_LINK = re.compile(r"\n\n\[Runbook\]\(\$\{var\.runbook_url\}#(?P<anchor>[^)]+)\)$")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation but - and _ dropped, each
    space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(markdown: str) -> list[tuple[int, str]]:
    """(level, text) of each heading outside fenced code blocks."""
    found, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"^(#{1,6}) (.+)$", line)):
            found.append((len(match[1]), match[2]))
    return found


def runbook_anchors() -> set[str]:
    """The anchors of the headings under the README's Runbook section."""
    inside, found = False, set()
    for level, text in headings(README.read_text()):
        if level <= 2:
            inside = text == RUNBOOK
        elif inside:
            found.add(github_anchor(text))
    return found


def thresholds(**given: Any) -> str:
    """An alert_thresholds value with every attribute, as Terraform converts one: the defaults
    and `given`."""
    return json.dumps({**computed("var.alert_thresholds"), **given})


def test_anchors_are_the_ones_github_derives() -> None:
    assert github_anchor("What `replay --since` redelivers") == "what-replay---since-redelivers"
    assert github_anchor("Replay from beyond Pub/Sub's retention") == (
        "replay-from-beyond-pubsubs-retention"
    )
    assert github_anchor("A push subscription falls behind") == "a-push-subscription-falls-behind"
    assert headings("# A\n```\n# not a heading\n```\n### B c") == [(1, "A"), (3, "B c")]


def test_every_alert_policy_says_what_happened_and_links_its_runbook_entry() -> None:
    module = load()
    entries = runbook_anchors()
    assert entries, "the README has no Runbook entries"
    linked = set()
    for name, policy in module.of_kind("google_monitoring_alert_policy").items():
        [documentation] = policy.get("documentation", [None])
        assert documentation, f"{name} has no documentation"
        assert literal(documentation["mime_type"]) == "text/markdown", name
        content = literal(documentation["content"])
        link = _LINK.search(content)
        assert link, f"{name}'s documentation does not end with its runbook link: {content!r}"
        summaries, anchors = [content[: link.start()]], [link["anchor"]]
        if link["anchor"] == "${each.value.runbook}":
            assert summaries == ["${each.value.summary}"], name
            instances = module.locals[expr(policy["for_each"]).removeprefix("local.")].values()
            summaries = [literal(instance["summary"]) for instance in instances]
            anchors = [literal(instance["runbook"]) for instance in instances]
        for summary in summaries:
            assert len(summary.split()) >= 8, f"{name}'s documentation does not say what happened"
        for anchor in anchors:
            assert anchor in entries, f"{name} links #{anchor}, not a heading under {RUNBOOK}"
            linked.add(anchor)
    assert linked


def test_the_runbook_url_is_a_readme_each_alert_can_append_an_anchor_to() -> None:
    assert computed("var.runbook_url") == "README.md"
    good = ['"README.md"', '"https://github.com/acme/supaglue-gcp/blob/main/README.md"']
    bad = ['"https://github.com/acme/x/blob/main/README.md#runbook"', '"http://x/README.md"', '""']
    results = refusals_of("runbook_url", good + bad)
    assert results[: len(good)] == [[]] * len(good)
    assert all(results[len(good) :]), results


# --- the push backlog -------------------------------------------------------------------------


def test_a_push_subscription_falling_behind_alerts_for_its_route() -> None:
    policy = load().resource("google_monitoring_alert_policy", "push_backlog")
    conditions = dynamic_conditions(policy)
    assert expr(conditions["for_each"]) == "local.subscribed_routes"
    [content] = conditions["content"]
    [threshold] = content["condition_threshold"]
    clauses = literal(threshold["filter"]).split(" AND ")
    assert clauses == [
        'metric.type="pubsub.googleapis.com/subscription/oldest_unacked_message_age"',
        'resource.type="pubsub_subscription"',
        # The route's push subscription, not its dead letters (the dead-letter policy's).
        'resource.labels.subscription_id="${google_pubsub_subscription.push[conditions.key].name}"',
    ]
    assert literal(threshold["comparison"]) == "COMPARISON_GT"
    assert expr(threshold["threshold_value"]) == "var.alert_thresholds.backlog_max_age_seconds"
    assert literal(threshold["aggregations"][0]["per_series_aligner"]) == "ALIGN_MAX"
    assert computed("var.alert_thresholds.backlog_max_age_seconds") == 900
    # Every route with a subscription, the hooks route once hook_events names events.
    assert set(computed("local.subscribed_routes", WITH_HOOKS)) == set(load_routes())


def test_the_backlog_threshold_outlasts_one_retry_back_off() -> None:
    values = [thresholds(backlog_max_age_seconds=n) for n in (600, 300, 900.5, 601, 900)]
    results = refusals_of("alert_thresholds", values)
    assert all(results[:3]) and results[3:] == [[], []], results
    # The variable's own value must pass too, or Terraform warns instead of evaluating.
    given = {
        "delivery": '{maximum_backoff = "1200s"}',
        "alert_thresholds": thresholds(backlog_max_age_seconds=1500),
    }
    [longer_back_off] = refusals_of("alert_thresholds", [thresholds()], given)
    assert any("delivery.maximum_backoff (1200s)" in m for m in longer_back_off), longer_back_off


@pytest.mark.parametrize("policy", ["push_backlog", "dead_letter_backlog"])
def test_a_policy_with_a_condition_per_route_stops_the_plan_past_six_routes(
    policy: str, tmp_path: Path
) -> None:
    module = load()
    [lifecycle] = module.resource("google_monitoring_alert_policy", policy)["lifecycle"]
    [precondition] = lifecycle["precondition"]
    limit = module.locals["max_policy_conditions"]
    condition = expr(precondition["condition"]).replace("local.max_policy_conditions", str(limit))
    assert computed(condition, WITH_HOOKS) is True
    table = json.loads(ROUTING_FILE.read_text())
    for i in range(limit + 1 - len(table["routes"])):
        table["routes"][f"extra-{i}"] = {**table["routes"]["alerts"]}
    crowded = tmp_path / "routing.json"
    crowded.write_text(json.dumps(table))
    assert computed(condition, WITH_HOOKS, routing_table=crowded) is False


# --- ingest refusing most requests ------------------------------------------------------------


def test_ingest_refusing_most_requests_pages_from_a_promql_ratio() -> None:
    policy = load().resource("google_monitoring_alert_policy", "ingest_refusals")
    [condition] = policy["conditions"]
    [promql] = condition["condition_prometheus_query_language"]
    assert expr(promql["query"]) == "local.ingest_refusal_query"
    assert literal(promql["duration"]) == "${var.alert_thresholds.ingest_refused_minutes * 60}s"
    assert literal(policy["severity"]) == "CRITICAL"
    ingest = Names(PREFIX).ingest_function
    selector = (
        "run_googleapis_com:request_count"
        f'{{monitored_resource="cloud_run_revision",service_name="{ingest}"'
    )
    refused = f'sum(increase({selector},response_code_class!="2xx"}}[30m]))'
    every = f"sum(increase({selector}}}[30m]))"
    assert computed("local.ingest_refusal_query") == (
        f"({refused} / {every} > 0.5) and ({refused} >= 5)"
    )
    custom = thresholds(ingest_refused_ratio=0.8, ingest_refused_minutes=60)
    query = computed("local.ingest_refusal_query", {"alert_thresholds": custom})
    assert "[60m]" in query and "> 0.8)" in query and "[30m]" not in query


def test_the_refusal_alert_fires_within_hours_of_a_bad_deploy() -> None:
    """Svix disables an endpoint after 5 days of failures: the window and the time it must hold
    for (the same minutes) stay within a few hours."""
    bad = [
        thresholds(ingest_refused_ratio=0),
        thresholds(ingest_refused_ratio=1),
        thresholds(ingest_refused_minutes=4),
        thresholds(ingest_refused_minutes=361),
        thresholds(ingest_refused_minutes=30.5),
        thresholds(ingest_refused_min_requests=0),
    ]
    good = [thresholds(), thresholds(ingest_refused_minutes=360, ingest_refused_ratio=0.9)]
    results = refusals_of("alert_thresholds", bad + good)
    assert all(results[: len(bad)]), results
    assert results[len(bad) :] == [[]] * len(good)
    # The longest accepted: refusals over its window, holding for its duration.
    policy = load().resource("google_monitoring_alert_policy", "ingest_refusals")
    [promql] = policy["conditions"][0]["condition_prometheus_query_language"]
    longest = {"alert_thresholds": thresholds(ingest_refused_minutes=360)}
    duration = computed(promql["duration"], longest)
    [window] = set(re.findall(r"\[(\d+)m\]", computed("local.ingest_refusal_query", longest)))
    assert int(window) * 60 + int(duration.removesuffix("s")) <= 12 * 3600 < 5 * 24 * 3600
