"""Settings from environment variables, validated once at start-up.

Each deployable reads its own class from here and nothing else reads the
environment; a missing or placeholder value fails loudly with the variable's
name instead of surfacing later as a confusing runtime error.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Final, TypeVar

from pydantic import (
    BeforeValidator,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.log import JsonLogger
from shared.names import DEFAULT_PREFIX, Names

# Pub/Sub refuses a publish request over 10,000,000 bytes; keep room for the
# attributes and the request's framing so a body we accept can always be published.
PUBSUB_MAX_REQUEST_BYTES: Final = 10_000_000
MAX_BODY_BYTES_LIMIT: Final = PUBSUB_MAX_REQUEST_BYTES - 64 * 1024
# The svix verifier itself rejects timestamps more than five minutes away.
SVIX_TOLERANCE_SECONDS: Final = 300

_TOPIC_ID = re.compile(r"^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$")


def list_items(text: str) -> tuple[str, ...]:
    """A list in one variable: items separated by spaces or commas."""
    return tuple(part for part in re.split(r"[\s,]+", text) if part)


def split_list(value: object) -> object:
    """A settings field's validator: a string becomes its `list_items`."""
    return list_items(value) if isinstance(value, str) else value


class _Base(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    google_cloud_project: str = Field(min_length=1)


class IngestSettings(_Base):
    """What the ingest function needs: secrets, topics and limits."""

    webhook_secrets: Annotated[tuple[SecretStr, ...], NoDecode, BeforeValidator(split_list)] = (
        Field(min_length=1)
    )
    events_topic: str
    quarantine_topic: str
    webhook_tolerance_seconds: int = Field(
        default=SVIX_TOLERANCE_SECONDS, ge=1, le=SVIX_TOLERANCE_SECONDS
    )
    max_body_bytes: int = Field(default=MAX_BODY_BYTES_LIMIT, ge=1, le=MAX_BODY_BYTES_LIMIT)
    # Bounded so that an answer always reaches Svix well inside its 15 s budget.
    publish_timeout_seconds: float = Field(default=8.0, gt=0, le=12)
    # The most messages in one Publish request (Pub/Sub takes up to 1,000); the messages
    # that arrive while one request is out leave together in the next.
    publish_batch_max_messages: int = Field(default=100, ge=1, le=1000)
    # Messages waiting for Pub/Sub beyond this are refused with 503, not queued in memory.
    publish_max_outstanding: int = Field(default=1000, ge=1)
    # Log lines are written behind by a thread, at most this long after the request;
    # 0 writes each line before the response.
    log_write_behind_seconds: float = Field(default=0.01, ge=0, le=60)
    event_source: str = "supaglue"

    @field_validator("webhook_secrets")
    @classmethod
    def _check_secrets(cls, secrets: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for position, secret in enumerate(secrets, start=1):
            _check_secret(position, secret.get_secret_value())
        return secrets

    @field_validator("events_topic", "quarantine_topic")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        if not _TOPIC_ID.match(value) or value.lower().startswith("goog"):
            raise ValueError(
                f"{value!r} is not a Pub/Sub topic id (give the id, not projects/.../topics/...)"
            )
        return value


def _check_secret(position: int, secret: str) -> None:
    """Reject what the verifier would accept but cannot be a real Svix secret."""
    if not secret.startswith("whsec_"):
        raise ValueError(f"secret #{position} must start with 'whsec_'")
    key = secret.removeprefix("whsec_")
    try:
        decoded = base64.b64decode(key + "=" * (-len(key) % 4), validate=True)
    except binascii.Error:
        raise ValueError(f"secret #{position} is not base64 after 'whsec_'") from None
    if len(decoded) < 16:
        # Real Svix keys are 24+ random bytes; shorter ones are placeholders like whsec_changeme.
        raise ValueError(f"secret #{position} is shorter than 16 bytes: a placeholder?")


class HandlerSettings(_Base):
    """What a handler service needs; SERVICE selects which handlers it runs."""

    service: str = Field(min_length=1)
    # The deployment's name prefix: its topics are named from it (shared/names.py).
    topic_prefix: str = DEFAULT_PREFIX
    # Push authentication: both set in the cloud, or explicitly disabled for local runs.
    push_audience: str | None = None
    push_service_account: str | None = None
    push_auth_disabled: bool = False
    firestore_database: str = "(default)"
    # A claim on an event is held this long; longer than any handler runs.
    ledger_lease_seconds: float = Field(default=600, gt=0)
    # Every delivery claims its ledger entry before its handler runs, as all did before
    # deliveries with only Firestore effects became one transaction: for the benchmark's
    # comparison (ops/bench/drain.py), or to see each delivery in progress in the ledger.
    claim_every_delivery: bool = False
    # Ledger entries carry expires_at this far ahead, for Firestore's TTL policy.
    ledger_retention_days: int = Field(default=30, ge=1)
    # Modules whose import registers hooks (see handlers/hooks.py), comma-separated.
    hook_modules: Annotated[tuple[str, ...], NoDecode, BeforeValidator(split_list)] = ()
    # The hooks route's event types, as Terraform builds its subscription filter from them
    # (hook_events); unset where no Terraform decides them (make run): then the hooks' own.
    hook_events: Annotated[tuple[str, ...] | None, NoDecode, BeforeValidator(split_list)] = None
    # The Nth failed sync in a row of one (customer, provider, object) is a distinct alert.
    repeated_failure_threshold: int = Field(default=3, ge=2)
    publish_timeout_seconds: float = Field(default=8.0, gt=0, le=60)
    # Backfills (Cloud Tasks): where the scheduler enqueues and the worker is reached.
    tasks_location: str | None = None
    tasks_queue: str | None = None
    backfill_worker_url: str | None = None
    # The identity Cloud Tasks signs the worker's OIDC token as; unset locally.
    tasks_service_account: str | None = None
    # Local runs only: the Cloud Tasks emulator's host:port (the client library has no such variable).
    cloud_tasks_emulator_host: str | None = None
    # A chunk's budget, well inside the queue's dispatch deadline.
    backfill_chunk_max_records: int = Field(default=500, ge=1)
    backfill_chunk_seconds: float = Field(default=60, gt=0, le=1500)

    @model_validator(mode="after")
    def _auth_is_configured_or_explicitly_off(self) -> HandlerSettings:
        configured = bool(self.push_audience and self.push_service_account)
        if self.push_auth_disabled and (self.push_audience or self.push_service_account):
            raise ValueError("PUSH_AUTH_DISABLED is set together with PUSH_AUDIENCE/ACCOUNT")
        if not configured and not self.push_auth_disabled:
            raise ValueError(
                "set PUSH_AUDIENCE and PUSH_SERVICE_ACCOUNT, or PUSH_AUTH_DISABLED=true "
                "for a local run; authentication is never off by accident"
            )
        return self

    @property
    def backfills_configured(self) -> bool:
        return bool(self.tasks_location and self.tasks_queue and self.backfill_worker_url)

    @property
    def names(self) -> Names:
        return Names(self.topic_prefix)

    def dead_letter_topic(self, route: str) -> str:
        return self.names.dead_letter_topic(route)


class ReconcilerSettings(HandlerSettings):
    """The reconciler (SERVICE=reconciler): Supaglue's management API and a pass's budgets."""

    # From Secret Manager in the cloud; only ever sent to the API as x-api-key.
    supaglue_api_key: SecretStr = Field(min_length=1)
    supaglue_api_url: HttpUrl = HttpUrl("https://api.supaglue.io")
    # Runs that ended up to this long before the watermark are read again: an end time the API
    # recorded late, or a clock apart, still falls inside the next pass.
    reconcile_overlap_seconds: float = Field(default=3600, ge=0)
    # A run that ended less than this long ago is left to its webhook, which may still be in
    # Svix's first retries: recovering it now would be a false alarm.
    reconcile_settle_seconds: float = Field(default=600, ge=0)
    reconcile_page_size: int = Field(default=100, ge=1, le=1000)
    # A pass's budgets: API requests, and time; the next pass continues where it stopped.
    reconcile_max_requests: int = Field(default=200, ge=1)
    reconcile_time_budget_seconds: float = Field(default=240, gt=0, le=1700)
    # 429 and 5xx are retried this many times per request, backing off from the first delay
    # (doubling, or the API's Retry-After), never past the pass's time budget.
    reconcile_retries: int = Field(default=4, ge=0, le=10)
    reconcile_backoff_seconds: float = Field(default=1.0, gt=0, le=60)
    reconcile_request_timeout_seconds: float = Field(default=20, gt=0, le=120)


S = TypeVar("S", bound=_Base)


def load_or_exit(settings_class: type[S], component: str) -> S:
    """Settings, or a start-up failure naming the bad variables and never their values."""
    try:
        return settings_class()
    except ValidationError as exc:
        problems = "; ".join(validation_problems(settings_class, exc))
        JsonLogger(component).log("CRITICAL", "settings_invalid", problems)
        raise SystemExit(f"invalid {component} settings: {problems}") from None


def validation_problems(settings_class: type[BaseSettings], exc: ValidationError) -> list[str]:
    """Each error as `VARIABLE: what is wrong`; never the value (it may be a secret)."""
    prefix = str(settings_class.model_config.get("env_prefix") or "")
    return [
        f"{_variable_name(prefix, error['loc'])}: {error['msg']}"
        for error in exc.errors(include_input=False, include_url=False)
    ]


def _variable_name(prefix: str, location: tuple[int | str, ...]) -> str:
    """The environment variable a validation error's location stands for."""
    field = ".".join(str(part) for part in location)
    return f"{prefix}{field}".upper() if field else "SETTINGS"
