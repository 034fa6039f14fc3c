"""Example payloads, one per event type (from Supaglue's spec): `ops send`, tests, benchmarks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

SAMPLES_DIR: Final = Path(__file__).parent


def sample_types() -> list[str]:
    return sorted(path.name.removesuffix(".json") for path in SAMPLES_DIR.glob("*.json"))


def sample_bytes(event_type: str) -> bytes:
    return (SAMPLES_DIR / f"{event_type}.json").read_bytes()


def sample(event_type: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(sample_bytes(event_type))
    return payload
