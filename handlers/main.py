"""Entry point of the handler services: `gunicorn 'handlers.main:create_service_app()'`.

Settings are read and hook modules imported when the server starts, so a
misconfiguration stops the revision from serving instead of failing deliveries.
"""

from __future__ import annotations

import flask

from handlers.app import create_app
from handlers.hooks import hooks, load_hook_modules
from handlers.reconcile.app import create_reconciler_app
from handlers.runtime import Runtime
from handlers.services import handlers_for, is_reconciler, is_worker
from handlers.worker import create_worker_app
from shared.log import JsonLogger
from shared.settings import HandlerSettings, ReconcilerSettings, load_or_exit


def create_service_app(settings: HandlerSettings | None = None) -> flask.Flask:
    settings = settings or load_or_exit(HandlerSettings, "handlers")
    if is_reconciler(settings.service) and not isinstance(settings, ReconcilerSettings):
        settings = load_or_exit(ReconcilerSettings, settings.service)
    logger = JsonLogger(
        settings.service,
        project_id=settings.google_cloud_project,
        labels={"service": settings.service},
    )
    load_hook_modules(settings.hook_modules)
    runtime = Runtime(settings, hooks=hooks, logger=logger)
    if is_worker(settings.service):
        return create_worker_app(runtime)
    if isinstance(settings, ReconcilerSettings):
        return create_reconciler_app(settings, runtime)
    return create_app(handlers_for(settings.service), runtime)
