"""The Flask app factory: webhooks, login sync, OIDC, service and admin API."""
from __future__ import annotations

import importlib
import logging
import sys

import redis as redis_lib
from flask import Flask

from models.config import ConfigError, Settings, load_settings
from models.config_warnings import config_warnings
from oidc.verifier import OidcVerifier
from runtime.logs import configure_logging
from runtime.process import Runtime
from webhooks.errors import register_error_handlers
from webhooks.limits import BodyReadDeadline, ExactLimitRequest
from webhooks.oidc_api import VERIFIER_EXTENSION

# GitHub allows payloads up to 25 MiB (SPEC section 4).
MAX_BODY = 25 * 1024 * 1024

_BLUEPRINTS = (
    "webhooks.health",
    "webhooks.github",
    "webhooks.gitlab",
    "webhooks.logins",
    "webhooks.oidc_api",
    "webhooks.api",
    "webhooks.platform",
    "webhooks.observability",
    "webhooks.openapi",
)


# gunicorn's "App failed to load" exit status: it stops the server instead of
# respawning a worker that can never start.
APP_LOAD_ERROR = 4


def settings_or_exit() -> Settings:
    """The environment's settings; a bad value ends the process with one line
    (an exception from the factory would be a traceback per gunicorn worker).
    gunicorn.conf.py calls this in gunicorn's master before any worker starts."""
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"orgsync: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(APP_LOAD_ERROR) from None


def _settings_or_exit() -> Settings:
    settings = settings_or_exit()
    configure_logging()
    for line in config_warnings(settings):
        logging.getLogger("orgsync.config").warning(line)
    return settings


def create_app(
    settings: Settings | None = None,
    *,
    redis: redis_lib.Redis | None = None,
    runtime: Runtime | None = None,
    oidc_verifier: OidcVerifier | None = None,
) -> Flask:
    """The web app. ``oidc_verifier``: the CI token verifier to use instead of
    one built from the settings on first use (``orgsync dev --demo`` passes
    one that fetches the stand-in issuers' keys in-process)."""
    configure_logging()
    app = Flask("orgsync")
    app.request_class = ExactLimitRequest
    app.wsgi_app = BodyReadDeadline(app.wsgi_app)  # type: ignore[method-assign]
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if runtime is None:
        runtime = Runtime(settings or _settings_or_exit(), redis_client=redis)
    app.extensions["orgsync"] = runtime
    if oidc_verifier is not None:
        app.extensions[VERIFIER_EXTENSION] = oidc_verifier
    register_error_handlers(app)
    for name in _BLUEPRINTS:
        app.register_blueprint(importlib.import_module(name).bp)
    return app
