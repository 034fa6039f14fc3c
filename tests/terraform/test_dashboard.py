"""The dashboard as Terraform renders it (terraform/dashboard.tf and dashboard.json.tftpl), and
every query of the dashboard and the alert policies against the metrics that exist."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from shared.names import Names
from shared.routing import load_routes
from tests.terraform.module import PREFIX, computed, expr, literal, load
from tests.terraform.monitoring_queries import (
    Catalogue,
    catalogue,
    google_list,
    metric_types_in,
    promql_name,
)
from tests.terraform.test_wiring import WITH_HOOKS

Json = dict[str, Any]

# The Monitoring dashboard's JSON (v1 Dashboard): the fields of each object this module uses and
# may use, and the values of its enums; anything else is a typo the API would refuse or ignore.
SHAPE: dict[str, set[str]] = {
    "dashboard": {"displayName", "mosaicLayout", "labels"},
    "mosaicLayout": {"columns", "tiles"},
    "tile": {"xPos", "yPos", "width", "height", "widget"},
    "widget": {"title", "xyChart"},
    "xyChart": {"dataSets", "timeshiftDuration", "thresholds", "xAxis", "yAxis", "y2Axis"},
    "dataSet": {
        "timeSeriesQuery",
        "plotType",
        "legendTemplate",
        "minAlignmentPeriod",
        "targetAxis",
    },
    "axis": {"label", "scale"},
    "timeSeriesQuery": {"timeSeriesFilter", "unitOverride"},
    "timeSeriesFilter": {"filter", "aggregation"},
    "aggregation": {"alignmentPeriod", "perSeriesAligner", "crossSeriesReducer", "groupByFields"},
}
PLOT_TYPES = {"LINE", "STACKED_AREA", "STACKED_BAR", "HEATMAP"}
AXES = {"Y1", "Y2"}
SCALES = {"LINEAR", "LOG10"}
# A mosaic of 12 columns is valid in every version of the API (newer ones take up to 48).
MAX_COLUMNS = 12


def rendered(variables: Mapping[str, str] | None = None) -> Json:
    """The dashboard JSON exactly as Terraform renders the resource's argument."""
    dashboard = load().resource("google_monitoring_dashboard", "pipeline")
    assert expr(dashboard["project"]) == "var.project_id"
    text = computed(expr(dashboard["dashboard_json"]), variables)
    assert isinstance(text, str)
    parsed: Json = json.loads(text)
    return parsed


def module_catalogue() -> Catalogue:
    return catalogue(computed("local.log_metrics"), computed("local.metric_type"))


def shape_problems(value: Any, kind: str, where: str = "dashboard") -> Iterator[str]:
    if not isinstance(value, dict):
        yield f"{where}: not an object"
        return
    for key in value.keys() - SHAPE[kind]:
        yield f"{where}: unknown field {key!r}"
    children = {
        ("dashboard", "mosaicLayout"): "mosaicLayout",
        ("tile", "widget"): "widget",
        ("widget", "xyChart"): "xyChart",
        ("xyChart", "yAxis"): "axis",
        ("xyChart", "y2Axis"): "axis",
        ("xyChart", "xAxis"): "axis",
        ("dataSet", "timeSeriesQuery"): "timeSeriesQuery",
        ("timeSeriesQuery", "timeSeriesFilter"): "timeSeriesFilter",
        ("timeSeriesFilter", "aggregation"): "aggregation",
    }
    for (parent, key), child in children.items():
        if parent == kind and key in value:
            yield from shape_problems(value[key], child, f"{where}.{key}")
    if kind == "mosaicLayout":
        for i, tile in enumerate(value.get("tiles", [])):
            yield from shape_problems(tile, "tile", f"{where}.tiles[{i}]")
    if kind == "xyChart":
        if not value.get("dataSets"):
            yield f"{where}: no dataSets"
        for i, data_set in enumerate(value.get("dataSets", [])):
            yield from shape_problems(data_set, "dataSet", f"{where}.dataSets[{i}]")
    if kind == "dataSet":
        if value.get("plotType") not in PLOT_TYPES:
            yield f"{where}: plotType {value.get('plotType')!r}"
        if value.get("targetAxis", "Y1") not in AXES:
            yield f"{where}: targetAxis {value.get('targetAxis')!r}"
    if kind == "axis" and value.get("scale", "LINEAR") not in SCALES:
        yield f"{where}: scale {value.get('scale')!r}"
    if kind == "timeSeriesFilter" and not value.get("filter"):
        yield f"{where}: no filter"


def data_sets(dashboard: Json) -> Iterator[tuple[str, Json]]:
    for tile in dashboard["mosaicLayout"]["tiles"]:
        for data_set in tile["widget"]["xyChart"]["dataSets"]:
            yield tile["widget"]["title"], data_set


def query_problems(dashboard: Json, known: Catalogue) -> list[str]:
    found = []
    for title, data_set in data_sets(dashboard):
        query = data_set["timeSeriesQuery"]["timeSeriesFilter"]
        found += [
            f"{title}: {problem}"
            for problem in known.problems(query["filter"], query.get("aggregation"))
        ]
    return found


def layout_problems(dashboard: Json) -> list[str]:
    layout = dashboard["mosaicLayout"]
    columns = layout["columns"]
    found = [] if 1 <= columns <= MAX_COLUMNS else [f"{columns} columns"]
    taken: dict[tuple[int, int], str] = {}
    for tile in layout["tiles"]:
        title = tile["widget"]["title"]
        x, y, width, height = (tile.get(k, 0) for k in ("xPos", "yPos", "width", "height"))
        if not all(isinstance(n, int) and n >= 0 for n in (x, y, width, height)):
            found.append(f"{title}: position and size must be whole numbers")
            continue
        if width < 1 or height < 1 or x + width > columns:
            found.append(f"{title}: outside the {columns} columns")
        for cell in ((cx, cy) for cx in range(x, x + width) for cy in range(y, y + height)):
            if cell in taken:
                found.append(f"{title} overlaps {taken[cell]}")
                break
            taken[cell] = title
    return found


@pytest.mark.parametrize("variables", [{}, WITH_HOOKS], ids=["without hook events", "with"])
def test_the_dashboard_is_a_monitoring_dashboard_of_existing_metrics(
    variables: dict[str, str],
) -> None:
    dashboard = rendered(variables)
    assert list(shape_problems(dashboard, "dashboard")) == []
    assert layout_problems(dashboard) == []
    assert query_problems(dashboard, module_catalogue()) == []
    assert dashboard["displayName"] == f"{PREFIX}: Supaglue webhooks"


@pytest.mark.parametrize("variables", [{}, WITH_HOOKS], ids=["without hook events", "with"])
def test_each_subscribed_route_has_its_row_with_its_own_subscriptions(
    variables: dict[str, str],
) -> None:
    names = Names(PREFIX)
    dashboard = rendered(variables)
    titles = [tile["widget"]["title"] for tile in dashboard["mosaicLayout"]["tiles"]]
    routes = set(computed("local.subscribed_routes", variables))
    assert routes <= set(load_routes())
    per_route = {title.split(":")[0] for title in titles if ":" in title}
    assert per_route == routes
    metric = computed("local.metric_type")
    filters: dict[str, list[str]] = {}
    for title, data_set in data_sets(dashboard):
        query = data_set["timeSeriesQuery"]["timeSeriesFilter"]
        filters.setdefault(title, []).append(query["filter"])
    for route in routes:
        [deliveries] = filters[f"{route}: deliveries by outcome (per second)"]
        assert f'metric.type="{metric["deliveries"]}"' in deliveries
        assert f'metric.labels.route="{route}"' in deliveries
        subscription = f'resource.labels.subscription_id="{names.subscription(route)}"'
        backlog, oldest = filters[f"{route}: backlog and oldest unacked event"]
        assert "num_undelivered_messages" in backlog and subscription in backlog
        assert "oldest_unacked_message_age" in oldest and subscription in oldest
        [dead] = filters[f"{route}: dead letters waiting"]
        watch = names.watch_subscription(names.dead_letter_topic(route))
        assert "num_undelivered_messages" in dead
        assert f'resource.labels.subscription_id="{watch}"' in dead
    [running] = filters["Backfills running (chunk tasks queued)"]
    assert f'resource.labels.queue_id="{names.tasks_queue}"' in running
    latency = filters["Ingest latency (ms)"]
    assert all(f'resource.labels.service_name="{names.ingest_function}"' in f for f in latency)
    backfills = filters["Backfills started, done and failed (per 5 minutes)"]
    assert metric_types_in(backfills) == {
        metric[name] for name in ("backfill_scheduled", "backfill_completed", "backfill_failed")
    }


# The provider's arguments of an aggregation, and the API's fields they are.
AGGREGATION_ARGUMENTS = {
    "alignment_period": "alignmentPeriod",
    "per_series_aligner": "perSeriesAligner",
    "cross_series_reducer": "crossSeriesReducer",
    "group_by_fields": "groupByFields",
}


def alert_queries() -> Iterator[tuple[str, str, Json | None]]:
    """(policy, filter or PromQL query, aggregation) of every alert policy condition, with the
    log-based metric each for_each instance counts in its place and other interpolations (names,
    not checked here) as a placeholder."""
    module = load()
    metric_type = computed("local.metric_type")
    for name, policy in module.of_kind("google_monitoring_alert_policy").items():
        keys = [None]
        if "for_each" in policy:
            keys = list(module.locals[expr(policy["for_each"]).removeprefix("local.")])
        conditions = list(policy.get("conditions", []))
        for dynamic in policy.get("dynamic", []):
            conditions += [
                d["content"][0] for k, d in dynamic.items() if literal(k) == "conditions"
            ]
        for condition in conditions:
            for threshold in condition.get("condition_threshold", []):
                for key in keys:

                    def value(interpolation: re.Match[str], key: str | None = key) -> str:
                        inside = interpolation[1]
                        if inside == "local.metric_type[each.key]":
                            assert key is not None
                            return str(metric_type[key])
                        named = re.fullmatch(r'local\.metric_type\["(\w+)"\]', inside)
                        return str(metric_type[named[1]]) if named else "placeholder"

                    # Interpolations out first: they may hold quotes of their own.
                    text = literal(re.sub(r"\$\{([^}]*)\}", value, threshold["filter"]))
                    [aggregations] = threshold["aggregations"]
                    aggregation = {
                        api: (
                            [literal(v) for v in aggregations[argument]]
                            if isinstance(aggregations[argument], list)
                            else literal(aggregations[argument])
                        )
                        for argument, api in AGGREGATION_ARGUMENTS.items()
                        if argument in aggregations
                    }
                    yield f"{name}[{key}]", text, aggregation
            for promql in condition.get("condition_prometheus_query_language", []):
                query = computed(expr(promql["query"]))
                yield name, query, None


def test_every_alert_query_names_existing_metrics_and_labels() -> None:
    known = module_catalogue()
    checked = 0
    for policy, query, aggregation in alert_queries():
        problems = (
            known.promql_problems(query)
            if aggregation is None
            else known.problems(query, aggregation)
        )
        assert problems == [], (policy, query)
        checked += 1
    assert checked >= len(load().of_kind("google_monitoring_alert_policy"))


def test_the_metrics_list_is_exactly_what_the_module_queries() -> None:
    """So the committed subset of Google's list stays the one the module relies on."""
    dashboard = rendered(WITH_HOOKS)
    used = metric_types_in(
        d["timeSeriesQuery"]["timeSeriesFilter"]["filter"] for _, d in data_sets(dashboard)
    )
    promql = ""
    for _, query, aggregation in alert_queries():
        if aggregation is None:
            promql += query
        else:
            used |= metric_types_in([query])
    listed = set(google_list()["metrics"])
    used |= {metric for metric in listed if f"{promql_name(metric)}{{" in promql}
    log_based = set(computed("local.metric_type").values())
    assert used - log_based == listed
    listed_resources = set(google_list()["resource_types"])
    assert {t for m in google_list()["metrics"].values() for t in m["resource_types"]} == (
        listed_resources
    )
    # Each entry names the page of Google's list it was read from.
    for name, metric in google_list()["metrics"].items():
        assert metric["source"].split("#")[0] in google_list()["sources"], name


def test_an_unknown_metric_or_label_is_refused() -> None:
    """The checks above can fail: each of these edits of the real dashboard is caught."""
    known = module_catalogue()
    dashboard = rendered()
    assert query_problems(dashboard, known) == []

    def edited(edit: Any) -> list[str]:
        changed = copy.deepcopy(dashboard)
        [first, *_] = changed["mosaicLayout"]["tiles"]
        edit(first["widget"]["xyChart"]["dataSets"][0]["timeSeriesQuery"]["timeSeriesFilter"])
        return query_problems(changed, known)

    def replace(old: str, new: str) -> Any:
        def edit(query: Json) -> None:
            assert old in query["filter"]
            query["filter"] = query["filter"].replace(old, new)

        return edit

    ingest = computed("local.metric_type")["ingest_requests"]
    assert edited(replace(ingest, ingest + "_typo"))
    assert edited(replace(ingest, "run.googleapis.com/request_counts"))
    assert edited(lambda q: q.update(filter=q["filter"] + ' AND metric.labels.route="x"'))
    assert edited(lambda q: q["aggregation"]["groupByFields"].append("metric.label.status"))
    assert edited(lambda q: q["aggregation"]["groupByFields"].append("resource.label.zone"))
    assert edited(lambda q: q.update(filter=q["filter"] + ' AND resource.type="gce_instance"'))
    assert edited(lambda q: q["aggregation"].update(crossSeriesReducer="REDUCE_PERCENTILE_99"))
    pubsub = 'metric.type="pubsub.googleapis.com/subscription/num_undelivered_messages"'
    assert known.problems(pubsub + ' AND resource.labels.service_name="x"')
    assert known.problems(pubsub, {"alignmentPeriod": "60s", "perSeriesAligner": "ALIGN_RATE"})
    assert known.promql_problems('run_googleapis_com:request_count{response_class="4xx"}')
    assert known.promql_problems('run_googleapis_com:request_counts{service_name="x"}')
    assert list(shape_problems({**dashboard, "gridLayout": {}}, "dashboard"))
    overlapping = copy.deepcopy(dashboard)
    overlapping["mosaicLayout"]["tiles"][1]["xPos"] = 3
    assert layout_problems(overlapping)


def test_the_dashboard_waits_for_the_log_based_metrics() -> None:
    dashboard = load().resource("google_monitoring_dashboard", "pipeline")
    assert dashboard["depends_on"] == ["${google_logging_metric.events}"]
