"""Entry point of the handler services: `gunicorn 'handlers.main:create_service_app()'`.

Settings are read and hook modules imported when the server starts, so a
misconfiguration stops the revision from serving instead of failing deliveries.
"""

from __future__ import annotations

import flask

from handlers.app import Runtime, create_app
from handlers.hooks import hooks, load_hook_modules
from handlers.services import WORKER_SERVICE, handlers_for
from handlers.worker import create_worker_app
from shared.log import JsonLogger
from shared.settings import HandlerSettings, load_or_exit


def create_service_app(settings: HandlerSettings | None = None) -> flask.Flask:
    settings = settings or load_or_exit(HandlerSettings, "handlers")
    logger = JsonLogger(
        settings.service,
        project_id=settings.google_cloud_project,
        labels={"service": settings.service},
    )
    load_hook_modules(settings.hook_modules)
    runtime = Runtime(settings, hooks=hooks, logger=logger)
    if settings.service == WORKER_SERVICE:
        return create_worker_app(runtime)
    return create_app(handlers_for(settings.service), runtime)
