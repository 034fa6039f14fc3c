"""Cloud Monitoring queries checked against the metrics that exist.

A query may name a Google metric type from the subset of Google's metrics list in
google_metrics.json (its labels, kind and monitored resource types), or one of the module's
log-based metrics (its type and the label keys of its descriptor), nothing else: `problems`
returns what a monitoring filter (with its aggregation) or a PromQL query names that does not
exist, or aligns a metric in a way its kind does not allow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

GOOGLE_METRICS: Final = Path(__file__).with_name("google_metrics.json")

_CLAUSE: Final = re.compile(
    r'^(?P<field>[a-z_]+(?:\.[a-z_]+)*)\s*=\s*"(?P<value>(?:[^"\\]|\\.)*)"$'
)
_LABEL_FIELD: Final = re.compile(r'^(?P<scope>metric|resource)\.labels?\.(?P<key>"?\w+"?)$')
_PROMQL_SELECTOR: Final = re.compile(r"(?P<name>[A-Za-z_:][\w:]*)\{(?P<matchers>[^}]*)\}")
_PROMQL_MATCHER: Final = re.compile(r'^\s*(?P<label>\w+)\s*(?:=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*$')
# Aligners that need a metric that counts (DELTA or CUMULATIVE), and those that need a number.
_COUNTING_ALIGNERS: Final = {"ALIGN_RATE", "ALIGN_DELTA"}
_NUMERIC_ALIGNERS: Final = {"ALIGN_MAX", "ALIGN_MIN", "ALIGN_MEAN", "ALIGN_SUM"}


@dataclass(frozen=True)
class Metric:
    type: str
    kind: str
    value_type: str
    labels: frozenset[str]
    # Empty for a log-based metric: its series carry the resource of the lines it counts.
    resource_types: frozenset[str]


@dataclass(frozen=True)
class Catalogue:
    metrics: Mapping[str, Metric]
    resource_labels: Mapping[str, frozenset[str]]

    def problems(self, log_filter: str, aggregation: Mapping[str, Any] | None = None) -> list[str]:
        """What a monitoring filter, and the aggregation applied to it, get wrong."""
        found: list[str] = []
        fields: dict[str, str] = {}
        labels: list[tuple[str, str]] = []
        for clause in log_filter.split(" AND "):
            match = _CLAUSE.match(clause.strip())
            if match is None:
                found.append(f"unsupported clause {clause!r}")
                continue
            field, value = match["field"], json.loads(f'"{match["value"]}"')
            label = _LABEL_FIELD.match(field)
            if label:
                labels.append((label["scope"], label["key"].strip('"')))
            elif field in ("metric.type", "resource.type"):
                if field in fields:
                    found.append(f"{field} given twice in {log_filter!r}")
                fields[field] = value
            else:
                found.append(f"unknown field {field!r}")
        metric = self.metrics.get(fields.get("metric.type", ""))
        if metric is None:
            return [*found, f"unknown metric type {fields.get('metric.type')!r}"]
        resource_type = fields.get("resource.type")
        if resource_type is not None:
            if resource_type not in self.resource_labels:
                found.append(f"unknown resource type {resource_type!r}")
            elif metric.resource_types and resource_type not in metric.resource_types:
                found.append(f"{metric.type} is not written for resource type {resource_type!r}")
        if aggregation:
            for field in aggregation.get("groupByFields", []):
                label = _LABEL_FIELD.match(field)
                if label is None:
                    found.append(f"unsupported groupByFields entry {field!r}")
                else:
                    labels.append((label["scope"], label["key"].strip('"')))
            found += self._alignment_problems(metric, aggregation)
        for scope, key in labels:
            found += self._label_problems(metric, resource_type, scope, key)
        return found

    def promql_problems(self, query: str) -> list[str]:
        """What a PromQL query's selectors name that does not exist."""
        found: list[str] = []
        by_name = {promql_name(metric.type): metric for metric in self.metrics.values()}
        selectors = list(_PROMQL_SELECTOR.finditer(query))
        if not selectors:
            return [f"no selector in {query!r}"]
        for selector in selectors:
            metric = by_name.get(selector["name"])
            if metric is None:
                found.append(f"unknown PromQL metric {selector['name']!r}")
                continue
            given: dict[str, str] = {}
            for matcher in selector["matchers"].split(","):
                match = _PROMQL_MATCHER.match(matcher)
                if match is None:
                    found.append(f"unsupported matcher {matcher!r}")
                    continue
                given[match["label"]] = matcher.split('"')[1]
            resource_type = given.pop("monitored_resource", None)
            if resource_type is None and len(metric.resource_types) == 1:
                [resource_type] = metric.resource_types
            if resource_type is not None and resource_type not in metric.resource_types:
                found.append(f"{metric.type} is not written for resource type {resource_type!r}")
            resource_labels = self.resource_labels.get(resource_type or "", frozenset())
            for label in given:
                if label not in metric.labels | resource_labels:
                    found.append(f"{metric.type} has no label {label!r}")
        return found

    def _label_problems(
        self, metric: Metric, resource_type: str | None, scope: str, key: str
    ) -> list[str]:
        if scope == "metric":
            return [] if key in metric.labels else [f"{metric.type} has no metric label {key!r}"]
        if resource_type is None and len(metric.resource_types) == 1:
            [resource_type] = metric.resource_types
        if resource_type is None:
            return [f"resource label {key!r} of {metric.type} without a resource.type"]
        if key in self.resource_labels.get(resource_type, frozenset()):
            return []
        return [f"resource type {resource_type!r} has no label {key!r}"]

    @staticmethod
    def _alignment_problems(metric: Metric, aggregation: Mapping[str, Any]) -> list[str]:
        found = []
        aligner = aggregation.get("perSeriesAligner")
        reducer = aggregation.get("crossSeriesReducer")
        if aligner in _COUNTING_ALIGNERS and metric.kind not in ("DELTA", "CUMULATIVE"):
            found.append(f"{aligner} on {metric.type}, a {metric.kind} metric")
        if aligner in _NUMERIC_ALIGNERS and metric.value_type not in ("INT64", "DOUBLE"):
            found.append(f"{aligner} on {metric.type}, a {metric.value_type} metric")
        if reducer and (aligner in (None, "ALIGN_NONE") or "alignmentPeriod" not in aggregation):
            # The API refuses a cross-series reducer on unaligned series.
            found.append(f"{reducer} on {metric.type} without an aligner and alignment period")
        if str(reducer).startswith("REDUCE_PERCENTILE_") and metric.value_type != "DISTRIBUTION":
            found.append(f"{reducer} on {metric.type}, which is not a distribution")
        return found


@cache
def google_list() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(GOOGLE_METRICS.read_text())
    return loaded


def catalogue(
    log_metrics: Mapping[str, Mapping[str, Any]], metric_types: Mapping[str, str]
) -> Catalogue:
    """Google's metrics of the list, and the module's log-based metrics (`log_metrics` and
    `metric_types` as Terraform computes local.log_metrics and local.metric_type)."""
    listed = google_list()
    metrics = {
        name: Metric(
            name,
            entry["kind"],
            entry["value_type"],
            frozenset(entry["labels"]),
            frozenset(entry["resource_types"]),
        )
        for name, entry in listed["metrics"].items()
    }
    counter = listed["log_based_metrics"]
    for name, metric in log_metrics.items():
        metric_type = metric_types[name]
        assert metric_type.startswith(counter["type_prefix"]), metric_type
        metrics[metric_type] = Metric(
            metric_type,
            counter["kind"],
            counter["value_type"],
            frozenset(metric["labels"]),
            frozenset(),
        )
    resources = {name: frozenset(labels) for name, labels in listed["resource_types"].items()}
    return Catalogue(metrics, resources)


def promql_name(metric_type: str) -> str:
    """Cloud Monitoring's PromQL name of a metric type: the first / becomes :, every other
    character PromQL does not allow becomes _."""
    domain, _, path = metric_type.partition("/")
    return f"{re.sub(r'[^A-Za-z0-9_]', '_', domain)}:{re.sub(r'[^A-Za-z0-9_]', '_', path)}"


def metric_types_in(filters: Iterable[str]) -> set[str]:
    """The metric types the filters name."""
    found = set()
    for log_filter in filters:
        for clause in log_filter.split(" AND "):
            match = _CLAUSE.match(clause.strip())
            if match and match["field"] == "metric.type":
                found.add(match["value"])
    return found
