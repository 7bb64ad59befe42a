"""HTTP errors: every failure is JSON {"error", "message"} (SPEC section 4)."""
from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

from models.errors import StoreError


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.extra = extra


def error_response(status: int, error: str, message: str, **extra: Any) -> Any:
    body = {"error": error, "message": message, **extra}
    resp = jsonify(body)
    resp.status_code = status
    return resp


# Seconds a client should wait before retrying when the database is down.
DATABASE_RETRY_AFTER = 30

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api(err: ApiError) -> Any:
        return error_response(err.status, err.error, err.message, **err.extra)

    @app.errorhandler(StoreError)
    def _store(err: StoreError) -> Any:
        return error_response(err.status, err.code, err.message)

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException) -> Any:
        status = err.code or 500
        message = (err.description or err.name or "error").split("\n")[0]
        if status == 413:
            message = "The request body is too large."
        return error_response(status, _HTTP_CODES.get(status, "error"), message)

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(PoolTimeoutError)
    def _database_unavailable(err: Exception) -> Any:
        # The database is down or unreachable: nothing the caller did wrong,
        # and worth retrying (GitLab retries, and counts 5xx differently from
        # 4xx towards disabling a hook). No detail: the driver's message can
        # name hosts and users.
        app.logger.error("database unavailable: %s", type(err).__name__)
        resp = error_response(503, "database_unavailable", "The database is unavailable; retry later.")
        resp.headers["Retry-After"] = str(DATABASE_RETRY_AFTER)
        return resp

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Any:
        # Never a stack trace to the caller; the log has it (without secrets).
        app.logger.exception("unhandled error")
        return error_response(500, "internal_error", "The server failed to handle the request.")
