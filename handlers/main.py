"""Entry point of the handler services: `gunicorn 'handlers.main:create_service_app()'`.

Settings are read, hook modules imported and their settings validated when the
server starts, so a misconfiguration stops the revision from serving instead
of failing deliveries.
"""

from __future__ import annotations

import sys
from typing import Final

import flask

from handlers.app import create_app
from handlers.hooks import SettingsInvalid, hooks, load_hook_modules
from handlers.reconcile.app import create_reconciler_app
from handlers.runtime import Runtime
from handlers.services import handlers_for, is_reconciler, is_worker
from handlers.worker import create_worker_app
from shared.log import JsonLogger
from shared.routing import RoutingTable, load_table, pattern_covers
from shared.settings import HandlerSettings, ReconcilerSettings, load_or_exit

# gunicorn stops, and so the revision fails to start, when a worker exits with this code while
# booting; with any other code it starts the worker again, and again.
WORKER_BOOT_ERROR: Final = 3


def create_service_app(settings: HandlerSettings | None = None) -> flask.Flask:
    """The service's app; a misconfiguration ends the process (see WORKER_BOOT_ERROR)."""
    try:
        return _create(settings)
    except SystemExit as exc:
        if exc.code not in (None, 0) and not isinstance(exc.code, int):
            sys.stderr.write(f"{exc.code}\n")
        raise SystemExit(WORKER_BOOT_ERROR) from None


def _create(settings: HandlerSettings | None) -> flask.Flask:
    settings = settings or load_or_exit(HandlerSettings, "handlers")
    if is_reconciler(settings.service) and not isinstance(settings, ReconcilerSettings):
        settings = load_or_exit(ReconcilerSettings, settings.service)
    logger = JsonLogger(
        settings.service,
        project_id=settings.google_cloud_project,
        labels={"service": settings.service},
    )
    load_hook_modules(settings.hook_modules)
    try:
        # Only this service's modules: a process may have imported others (a test's stack).
        hooks.load_settings(settings.hook_modules)
    except SettingsInvalid as exc:
        logger.log("CRITICAL", "settings_invalid", f"hook settings: {exc}")
        raise SystemExit(f"invalid hook settings: {exc}") from None
    runtime = Runtime(settings, hooks=hooks, logger=logger)
    if is_worker(settings.service):
        return create_worker_app(runtime)
    if isinstance(settings, ReconcilerSettings):
        return create_reconciler_app(settings, runtime)
    return create_app(handlers_for(settings.service, routing_table(settings)), runtime)


def routing_table(settings: HandlerSettings) -> RoutingTable:
    """The table with the hook events' route resolved, refusing to start if the deployment
    would not deliver an event type an `on` hook wants."""
    table = load_table()
    wanted = hooks.on_event_types(settings.hook_modules)
    if settings.hook_events is None:
        # No Terraform decided them (make run): the hooks' own.
        return table.with_hook_events(wanted)
    runs_hooks = any(r.from_hook_events for r in table.routes_of(settings.service))
    missing = [w for w in wanted if not any(pattern_covers(p, w) for p in settings.hook_events)]
    if runs_hooks and missing:
        message = (
            f"hooks want {', '.join(missing)}, which HOOK_EVENTS "
            f"({', '.join(settings.hook_events) or 'none'}) does not deliver: add them to "
            "hook_events in terraform/terraform.tfvars"
        )
        JsonLogger(settings.service).log("CRITICAL", "settings_invalid", message)
        raise SystemExit(message)
    return table.with_hook_events(settings.hook_events)
