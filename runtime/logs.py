"""Structured logging: one JSON object per line, secrets redacted.

Every process (web, worker, cron, CLI) calls ``configure_logging()`` once at
start. Context bound with ``bind_context`` (delivery id, provider, org, job
id) is merged into every line logged while it is bound, including lines from
the standard ``logging`` module (RQ, gunicorn, Flask), which go through the
same processors.
"""
from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog

REDACTED = "[redacted]"

# Keys whose values are credentials. Matched as substrings of the lowercased
# key, so "github_app_private_key", "X-Hub-Signature-256" and "access_token"
# are all caught; a false positive only hides a harmless value.
_SECRET_KEY_PARTS = (
    "token", "secret", "authorization", "password", "passwd", "private_key", "privatekey",
    "signature", "api_key", "apikey", "cookie", "jwt", "credential",
)
# Values that look like credentials whatever key they sit under: PEM blocks,
# bearer headers, GitHub/GitLab token formats, Standard Webhooks secrets, JWTs.
_SECRET_VALUE_PATTERNS = (
    re.compile(r"()-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)(\b(?:access_token|token|secret|password|private_key)=)[^\s&\"']+"),
    re.compile(r"()\b(gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{16,})"),
    re.compile(r"()\bwhsec_[A-Za-z0-9+/=]{8,}"),
    re.compile(r"()\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
)
# A string none of the patterns can match is left alone after one search:
# every part any pattern starts with, case-insensitively (a superset, so a
# false positive only costs the full check). Log lines are written on every
# request; most values (ids, event names) need no more than this.
_MAYBE_SECRET = re.compile(
    r"-----BEGIN|bearer|(?:access_token|token|secret|password|private_key)=|gh[pousr]_|github_pat_|glpat-"
    r"|whsec_|eyJ",
    re.IGNORECASE,
)
# Keys that contain a secret-looking part but hold no secret (bookkeeping).
_SAFE_KEYS = frozenset({"token_kind", "tokens_configured"})


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    k = key.lower().replace("-", "_")
    if k in _SAFE_KEYS:
        return False
    return any(part in k for part in _SECRET_KEY_PARTS)


def redact_value(value: Any) -> Any:
    if isinstance(value, str):
        if _MAYBE_SECRET.search(value) is None:
            return value
        for pattern in _SECRET_VALUE_PATTERNS:
            value = pattern.sub(lambda m: m.group(1) + REDACTED, value)
        return value
    if isinstance(value, Mapping):
        return {k: (REDACTED if isinstance(k, str) and _secret_key(k) else redact_value(v))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


def redact_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: hide anything that looks like a credential."""
    for key in list(event_dict):
        if _secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = redact_value(event_dict[key])
    return event_dict


_configured = False


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a line is logged (test
    runners and daemonisers swap it after start-up)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


LOG_FORMATS = ("auto", "text", "json")


def log_format(requested: str | None = None, stream: Any = None) -> str:
    """``text`` or ``json``: as requested (or ``ORGSYNC_LOG_FORMAT``), and for
    ``auto`` text when the logs go to a terminal (a person reads them) and
    JSON otherwise (a log collector reads them)."""
    choice = (requested or os.environ.get("ORGSYNC_LOG_FORMAT") or "auto").strip().lower()
    if choice in ("text", "json"):
        return choice
    target = stream if stream is not None else sys.stderr
    try:
        return "text" if target.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def configure_logging(level: str | int | None = None, *, stream: Any = None, force: bool = False,
                      fmt: str | None = None) -> None:
    """Route structlog and the standard library through one renderer (JSON,
    or text on a terminal; see ``log_format``).

    Idempotent: the app factory, the worker and the CLI may all call it.
    ``ORGSYNC_LOG_LEVEL`` sets the level (default INFO).
    """
    global _configured
    if _configured and not force:
        return
    level = level or os.environ.get("ORGSYNC_LOG_LEVEL", "INFO").upper()
    numeric = logging.getLevelName(level) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        numeric = logging.INFO

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            # Redaction runs last, after exceptions are rendered to text, so a
            # token inside an exception message is caught too.
            redact_secrets,
            structlog.processors.JSONRenderer(default=str) if log_format(fmt, stream) == "json"
            else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback),
        ],
    )
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(formatter)
    handler.set_name("orgsync")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "orgsync" or force:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # RQ installs its own colour handlers unless its loggers already have one;
    # route them through ours instead (one format on every line).
    for name in ("rq.worker", "rq.scheduler", "rq.cron", "rq.queue", "rq.job"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    _configured = True


def get_logger(name: str | None = None) -> Any:
    return structlog.stdlib.get_logger(name)


def bind_context(**values: Any) -> None:
    structlog.contextvars.bind_contextvars(**{k: v for k, v in values.items() if v is not None})


@contextmanager
def log_context(**values: Any) -> Iterator[None]:
    """Bind values for the duration of a job or request."""
    tokens = structlog.contextvars.bind_contextvars(**{k: v for k, v in values.items() if v is not None})
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
