"""Liveness and readiness."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from webhooks.services import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Any:
    rt = services()
    checks = {"database": rt.check_database(), "redis": rt.check_redis()}
    ready = all(v is None for v in checks.values())
    body = {
        "status": "ready" if ready else "unavailable",
        "checks": {k: ("ok" if v is None else f"failed: {v}") for k, v in checks.items()},
        "redis": "embedded" if rt.embedded else "external",
    }
    if not ready:
        body.update(error="not_ready", message="A dependency is unreachable.")
    resp = jsonify(body)
    resp.status_code = 200 if ready else 503
    return resp
