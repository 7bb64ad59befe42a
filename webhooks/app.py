"""The Flask app factory: webhooks, login sync, OIDC, service and admin API."""
from __future__ import annotations

import importlib

import redis as redis_lib
from flask import Flask

from models.config import Settings, load_settings
from webhooks.errors import register_error_handlers
from webhooks.limits import BodyReadDeadline, ExactLimitRequest
from worker.logs import configure_logging
from worker.runtime import Runtime

# GitHub allows payloads up to 25 MiB (SPEC section 4).
MAX_BODY = 25 * 1024 * 1024

_BLUEPRINTS = (
    "webhooks.health",
    "webhooks.github",
    "webhooks.gitlab",
    "webhooks.logins",
    "webhooks.oidc_api",
    "webhooks.api",
    "webhooks.observability",
)


def create_app(
    settings: Settings | None = None,
    *,
    redis: redis_lib.Redis | None = None,
    runtime: Runtime | None = None,
) -> Flask:
    configure_logging()
    app = Flask("orgsync")
    app.request_class = ExactLimitRequest
    app.wsgi_app = BodyReadDeadline(app.wsgi_app)  # type: ignore[method-assign]
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if runtime is None:
        runtime = Runtime(settings or load_settings(), redis_client=redis)
    app.extensions["orgsync"] = runtime
    register_error_handlers(app)
    for name in _BLUEPRINTS:
        app.register_blueprint(importlib.import_module(name).bp)
    return app
