"""The Terraform module as data: python-hcl2's parse of every file, with helpers to read it.

Expressions stay strings (`${...}`); string literals keep their quotes, which `literal` strips.
Values that Terraform computes from variables and files come from `ops.terraform.evaluate`, on
the files without resources (PURE_FILES).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import hcl2

from ops.terraform import evaluate

MODULE: Final = Path(__file__).resolve().parents[2] / "terraform"
README: Final = MODULE.parent / "README.md"


@dataclass(frozen=True)
class Module:
    resources: dict[tuple[str, str], dict[str, Any]]
    data: dict[tuple[str, str], dict[str, Any]]
    ephemerals: dict[tuple[str, str], dict[str, Any]]
    locals: dict[str, Any]
    variables: dict[str, dict[str, Any]]
    outputs: dict[str, dict[str, Any]]

    def resource(self, kind: str, name: str) -> dict[str, Any]:
        return self.resources[(kind, name)]

    def of_kind(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: body for (k, name), body in self.resources.items() if k == kind}


@cache
def load() -> Module:
    resources: dict[tuple[str, str], dict[str, Any]] = {}
    data: dict[tuple[str, str], dict[str, Any]] = {}
    ephemerals: dict[tuple[str, str], dict[str, Any]] = {}
    local_values: dict[str, Any] = {}
    variables: dict[str, dict[str, Any]] = {}
    outputs: dict[str, dict[str, Any]] = {}
    for path in sorted(MODULE.glob("*.tf")):
        with path.open() as handle:
            parsed = hcl2.load(handle)
        for block in parsed.get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    key = (literal(kind), literal(name))
                    assert key not in resources, f"{key} declared twice"
                    resources[key] = body
        for block in parsed.get("data", []):
            for kind, named in block.items():
                for name, body in named.items():
                    data[(literal(kind), literal(name))] = body
        for block in parsed.get("ephemeral", []):
            for kind, named in block.items():
                for name, body in named.items():
                    ephemerals[(literal(kind), literal(name))] = body
        for block in parsed.get("locals", []):
            local_values.update({k: v for k, v in block.items() if not k.startswith("__")})
        for block in parsed.get("variable", []):
            variables.update({literal(k): v for k, v in block.items()})
        for block in parsed.get("output", []):
            outputs.update({literal(k): v for k, v in block.items()})
    return Module(resources, data, ephemerals, local_values, variables, outputs)


# The prefix the tests deploy under; names Terraform computes carry it.
PREFIX: Final = "acme"
# The module's files without resources (and the template they render): Terraform evaluates
# them offline, with no provider.
PURE_FILES: Final = ("routing.tf", "variables.tf", "metrics.tf", "dashboard.json.tftpl")


@cache
def _computed(
    expression: str, variables: tuple[tuple[str, str], ...], routing_table: Path | None
) -> Any:
    return evaluate(
        expression,
        files=PURE_FILES,
        variables={"name_prefix": PREFIX, **dict(variables)},
        routing_table=routing_table,
    )


def computed(
    expression: str,
    variables: Mapping[str, str] | None = None,
    *,
    routing_table: Path | None = None,
) -> Any:
    """What Terraform computes for `expression` (ops.terraform.evaluate), once per session;
    with `routing_table`, from that table instead of shared/routing.json."""
    return _computed(expression, tuple(sorted((variables or {}).items())), routing_table)


def refusals_of(
    variable: str, values: Sequence[str], variables: Mapping[str, str] | None = None
) -> list[list[str]]:
    """For each of `values`, the error messages of the validations of `variable` it fails.

    Each value is an HCL expression of the variable's type after conversion (tolist, tomap, or
    an object with every attribute). `terraform console` reports a failed validation only as a
    warning, without its message, so each condition and message is evaluated here, in one
    console run, on the value in the variable's place; `variables` are the other variables a
    condition reads.
    """
    checks = []
    for validation in load().variables[variable].get("validation", []):
        condition = _in_place_of(variable, expr(validation["condition"]))
        message = _in_place_of(variable, validation["error_message"])
        checks.append(f'({condition}) ? "" : {message}')
    results = computed(
        f"[for candidate in [{', '.join(values)}] : [{', '.join(checks)}]]", variables
    )
    return [[message for message in result if message] for result in results]


def _in_place_of(variable: str, expression: str) -> str:
    return re.sub(rf"\bvar\.{variable}\b", "candidate", expression)


def literal(value: Any) -> Any:
    """A quoted HCL string literal's value; anything else unchanged."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        decoded = json.loads(value)
        assert isinstance(decoded, str)
        return decoded
    return value


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The single nested block `name` of a resource body."""
    [found] = body[name]
    assert isinstance(found, dict)
    return found


def expr(value: str) -> str:
    """The inside of a `${...}` expression."""
    assert value.startswith("${") and value.endswith("}"), value
    return value[2:-1]


def dynamic_conditions(policy: Mapping[str, Any]) -> dict[str, Any]:
    """An alert policy's `dynamic "conditions"` block."""
    [conditions] = [d['"conditions"'] for d in policy["dynamic"] if '"conditions"' in d]
    assert isinstance(conditions, dict)
    return conditions
