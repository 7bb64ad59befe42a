"""Configuration: read and validated once at start (SPEC section 2).

A bad value raises ConfigError naming the variable; entry points print its
one line and exit non-zero. Secrets are kept out of ``repr`` so they never
reach a log line or a traceback.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


class ConfigError(Exception):
    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"configuration error: {variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///orgsync.db"
    redis_url: str | None = None
    admin_tokens: tuple[str, ...] = field(default=(), repr=False)
    service_tokens: tuple[str, ...] = field(default=(), repr=False)
    github_api_url: str = "https://api.github.com"
    github_app_id: str | None = None
    github_app_private_key: str | None = field(default=None, repr=False)
    github_webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    gitlab_url: str = "https://gitlab.com"
    gitlab_token: str | None = field(default=None, repr=False)
    gitlab_webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    gitlab_webhook_signing_secret: str | None = field(default=None, repr=False)
    oidc_audience: str = "orgsync"
    oidc_github_issuers: tuple[str, ...] = ("https://token.actions.githubusercontent.com",)
    oidc_gitlab_issuers: tuple[str, ...] = ("https://gitlab.com",)
    oidc_accept_github_owner_audience: bool = False
    resync_interval: int = 21600
    max_removal_fraction: float = 0.5

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name, "")
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _url(env: Mapping[str, str], name: str, default: str, schemes: tuple[str, ...]) -> str:
    value = env.get(name, "").strip() or default
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc:
        raise ConfigError(name, f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
    return value.rstrip("/")


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, "must be true or false")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, "must be a whole number of seconds") from None
    if value < minimum:
        raise ConfigError(name, f"must be at least {minimum}")
    return value


def _fraction(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, "must be a number between 0 and 1") from None
    if not 0 < value <= 1:
        raise ConfigError(name, "must be a number greater than 0 and at most 1")
    return value


def _private_key(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if "-----BEGIN" in raw:
        return raw.replace("\\n", "\n")
    path = Path(raw)
    try:
        text = path.read_text()
    except OSError:
        raise ConfigError(name, "must be PEM text or the path of a readable PEM file") from None
    if "-----BEGIN" not in text:
        raise ConfigError(name, "the file does not hold a PEM key")
    return text


def _issuers(env: Mapping[str, str], name: str, default: str) -> tuple[str, ...]:
    values = _list(env, name) or (default,)
    for value in values:
        parts = urlsplit(value)
        # OIDC issuers are compared exactly; plain http would let anyone on the
        # path serve keys.
        if parts.scheme != "https" or not parts.netloc:
            raise ConfigError(name, "each issuer must be an https:// URL")
    return values


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    database_url = env.get("DATABASE_URL", "").strip() or "sqlite:///orgsync.db"
    if "://" not in database_url:
        raise ConfigError("DATABASE_URL", "must be a SQLAlchemy URL such as sqlite:///orgsync.db")
    scheme = database_url.split("://", 1)[0]
    if not scheme.startswith(("sqlite", "postgres")):
        raise ConfigError("DATABASE_URL", "only sqlite:// and postgresql+psycopg:// are supported")
    if scheme in ("postgresql", "postgres"):
        database_url = "postgresql+psycopg://" + database_url.split("://", 1)[1]
    redis_url = env.get("REDIS_URL", "").strip() or None
    if redis_url is not None:
        redis_url = _url(env, "REDIS_URL", redis_url, ("redis", "rediss", "unix"))
    app_id = env.get("GITHUB_APP_ID", "").strip() or None
    if app_id is not None and not (app_id.isascii() and app_id.isdigit()):
        raise ConfigError("GITHUB_APP_ID", "must be the numeric app id")
    signing = env.get("GITLAB_WEBHOOK_SIGNING_SECRET", "").strip() or None
    if signing is not None and not signing.startswith("whsec_"):
        raise ConfigError("GITLAB_WEBHOOK_SIGNING_SECRET", "must start with whsec_")
    audience = env.get("OIDC_AUDIENCE", "").strip() or "orgsync"
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        admin_tokens=_list(env, "ORGSYNC_ADMIN_TOKEN"),
        service_tokens=_list(env, "ORGSYNC_SERVICE_TOKEN"),
        github_api_url=_url(env, "GITHUB_API_URL", "https://api.github.com", ("https", "http")),
        github_app_id=app_id,
        github_app_private_key=_private_key(env, "GITHUB_APP_PRIVATE_KEY"),
        github_webhook_secrets=_list(env, "GITHUB_WEBHOOK_SECRET"),
        gitlab_url=_url(env, "GITLAB_URL", "https://gitlab.com", ("https", "http")),
        gitlab_token=env.get("GITLAB_TOKEN", "").strip() or None,
        gitlab_webhook_secrets=_list(env, "GITLAB_WEBHOOK_SECRET"),
        gitlab_webhook_signing_secret=signing,
        oidc_audience=audience,
        oidc_github_issuers=_issuers(env, "OIDC_GITHUB_ISSUERS", "https://token.actions.githubusercontent.com"),
        oidc_gitlab_issuers=_issuers(env, "OIDC_GITLAB_ISSUERS", "https://gitlab.com"),
        oidc_accept_github_owner_audience=_bool(env, "OIDC_ACCEPT_GITHUB_OWNER_AUDIENCE", False),
        resync_interval=_int(env, "ORGSYNC_RESYNC_INTERVAL", 21600, 60),
        max_removal_fraction=_fraction(env, "ORGSYNC_MAX_REMOVAL_FRACTION", 0.5),
    )
