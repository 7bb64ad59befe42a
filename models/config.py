"""Configuration: read and validated once at start (SPEC section 2).

A bad value raises ConfigError naming the variable; entry points print its
one line and exit non-zero. Secrets are kept out of ``repr`` so they never
reach a log line or a traceback.
"""
from __future__ import annotations

import base64
import binascii
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
    oidc_max_token_lifetime: int = 14400
    resync_interval: int = 21600
    max_removal_fraction: float = 0.5
    metrics_tokens: tuple[str, ...] = field(default=(), repr=False)

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


# GitHub.com's Actions issuer; an enterprise with a unique issuer URL gets
# ``https://token.actions.githubusercontent.com/<enterprise slug>``, still
# signed by github.com and carrying github.com ids.
GITHUB_COM_ISSUER_HOST = "token.actions.githubusercontent.com"
GITHUB_COM_API_HOST = "api.github.com"


def _host(url: str) -> str:
    return (urlsplit(url).netloc or "").lower()


def issuer_instance(provider: str, issuer: str, github_api_url: str, gitlab_url: str) -> str | None:
    """The provider instance (its API base URL) whose numeric ids an
    issuer's tokens carry, when that is the instance the store mirrors;
    None when the issuer belongs to another instance.

    Ids are unique per instance only: GitHub Enterprise Server's org 42 and
    github.com's org 42 are different owners, as are gitlab.com's and a
    self-managed GitLab's group 42. The store holds the ids of exactly one
    instance per provider, so a token from any other instance must never be
    looked up in it.
    """
    host = _host(issuer)
    if provider == "github":
        api_host = _host(github_api_url)
        if host == GITHUB_COM_ISSUER_HOST:
            return github_api_url if api_host == GITHUB_COM_API_HOST else None
        # GitHub Enterprise Server issues from https://HOST/_services/token and
        # serves its API at https://HOST/api/v3: the same host.
        return github_api_url if api_host != GITHUB_COM_API_HOST and host == api_host else None
    # A GitLab instance is its own issuer (https://gitlab.example.com).
    return gitlab_url if host == _host(gitlab_url) else None


def _default_issuers(provider: str, github_api_url: str, gitlab_url: str) -> tuple[str, ...]:
    """The issuer of the synced instance itself, when it can issue tokens we
    accept (https only); none for a plain-http instance (a local stand-in)."""
    if provider == "github":
        if _host(github_api_url) == GITHUB_COM_API_HOST:
            return (f"https://{GITHUB_COM_ISSUER_HOST}",)
        parts = urlsplit(github_api_url)
        return (f"https://{parts.netloc}/_services/token",) if parts.scheme == "https" else ()
    return (gitlab_url,) if urlsplit(gitlab_url).scheme == "https" else ()


def _bound_issuers(env: Mapping[str, str], provider: str, github_api_url: str, gitlab_url: str
                   ) -> tuple[str, ...]:
    name = "OIDC_GITHUB_ISSUERS" if provider == "github" else "OIDC_GITLAB_ISSUERS"
    if not _list(env, name):
        return _default_issuers(provider, github_api_url, gitlab_url)
    issuers = _issuers(env, name, "")
    instance_var = "GITHUB_API_URL" if provider == "github" else "GITLAB_URL"
    instance = github_api_url if provider == "github" else gitlab_url
    for issuer in issuers:
        if issuer_instance(provider, issuer, github_api_url, gitlab_url) is None:
            raise ConfigError(
                name, f"issuer {issuer} belongs to another instance than {instance_var}={instance}; "
                "its tokens' ids cannot be resolved in this store",
            )
    return issuers


def _signing_secret(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.startswith("whsec_"):
        raise ConfigError(name, "must start with whsec_")
    # The HMAC key is the base64 after the prefix. An empty or undecodable
    # key would make every signature trivially forgeable (HMAC with an empty
    # key is public knowledge), so it stops the process instead.
    try:
        key = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(name, "the part after whsec_ must be base64") from None
    if len(key) < 16:
        raise ConfigError(name, "the key after whsec_ must decode to at least 16 bytes")
    return raw


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
    signing = _signing_secret(env, "GITLAB_WEBHOOK_SIGNING_SECRET")
    github_api_url = _url(env, "GITHUB_API_URL", "https://api.github.com", ("https", "http"))
    gitlab_url = _url(env, "GITLAB_URL", "https://gitlab.com", ("https", "http"))
    audience = env.get("OIDC_AUDIENCE", "").strip() or "orgsync"
    github_issuers = _bound_issuers(env, "github", github_api_url, gitlab_url)
    gitlab_issuers = _bound_issuers(env, "gitlab", github_api_url, gitlab_url)
    if set(github_issuers) & set(gitlab_issuers):
        # One issuer must mean one claim schema, or a GitLab token could be
        # read with GitHub's claim names.
        raise ConfigError("OIDC_GITLAB_ISSUERS", "an issuer is also listed in OIDC_GITHUB_ISSUERS")
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        admin_tokens=_list(env, "ORGSYNC_ADMIN_TOKEN"),
        service_tokens=_list(env, "ORGSYNC_SERVICE_TOKEN"),
        github_api_url=github_api_url,
        github_app_id=app_id,
        github_app_private_key=_private_key(env, "GITHUB_APP_PRIVATE_KEY"),
        github_webhook_secrets=_list(env, "GITHUB_WEBHOOK_SECRET"),
        gitlab_url=gitlab_url,
        gitlab_token=env.get("GITLAB_TOKEN", "").strip() or None,
        gitlab_webhook_secrets=_list(env, "GITLAB_WEBHOOK_SECRET"),
        gitlab_webhook_signing_secret=signing,
        oidc_audience=audience,
        oidc_github_issuers=github_issuers,
        oidc_gitlab_issuers=gitlab_issuers,
        oidc_accept_github_owner_audience=_bool(env, "OIDC_ACCEPT_GITHUB_OWNER_AUDIENCE", False),
        # GitHub's tokens live 5-10 minutes, GitLab's as long as the job's
        # timeout; a token valid for years is a standing credential that the
        # replay guard would have to remember for years.
        oidc_max_token_lifetime=_int(env, "OIDC_MAX_TOKEN_LIFETIME", 14400, 60),
        resync_interval=_int(env, "ORGSYNC_RESYNC_INTERVAL", 21600, 60),
        max_removal_fraction=_fraction(env, "ORGSYNC_MAX_REMOVAL_FRACTION", 0.5),
        metrics_tokens=_list(env, "ORGSYNC_METRICS_TOKEN"),
    )
