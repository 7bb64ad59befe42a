"""GitHub App auth: the app's JWT and its installation tokens.

Nothing here logs a key or a token: installation tokens live only in this
process's memory.
"""
from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from github import Auth

from sync.errors import AuthBroken, TransientProviderError
from sync.providers.github_http import (
    GitHubResponse,
    GitHubTransport,
    authorization,
    check,
    raise_rate_limited,
)

# The only permission the adapter needs; asking for just this down-scopes the
# installation token, so a leaked token cannot do whatever else the app may do.
TOKEN_PERMISSIONS = {"members": "read"}
# Refresh an installation token this long before GitHub says it expires, so
# a long roster walk does not cross the expiry half way.
TOKEN_REFRESH_MARGIN = timedelta(minutes=5)


@functools.lru_cache(maxsize=4)
def parsed_private_key(pem: str) -> Any:
    """The app key, parsed once per process.

    Loading a PEM key validates the RSA numbers, which costs tens of
    milliseconds with current cryptography: done for every JWT it dominated a
    webhook's processing time. A worker calls this before forking so that its
    work horses inherit the parsed key. A bad key raises ValueError (AuthBroken
    at the call site)."""
    return load_pem_private_key(pem.encode(), password=None)


# Installation tokens shared by every adapter instance of this process (a
# job builds a fresh adapter; exchanging a token for each one would double the
# requests of a member re-read). In memory only, never logged; keyed by API
# URL, app id and installation id; dropped when GitHub rejects one.
_shared_tokens: dict[tuple[str, str, int], tuple[str, datetime]] = {}
_shared_tokens_lock = threading.Lock()
# The app's JWT, signed once and reused while it has APP_JWT_REUSE left to
# live: signing is an RSA operation, and every installation a worker meets
# needs one exchange. PyGithub's JWTs live 5 minutes (issued 60 s in the
# past for clock drift). Keyed by API URL, app id and the key itself.
APP_JWT_REUSE = 120.0
_app_jwts: dict[tuple[str, str, str], tuple[str, float]] = {}  # → (jwt, monotonic time signed)


def clear_token_cache() -> None:
    """Forget every shared installation token and app JWT (tests; key rotation)."""
    with _shared_tokens_lock:
        _shared_tokens.clear()
        _app_jwts.clear()


def _read_private_key(private_key: str | None) -> str | None:
    """GITHUB_APP_PRIVATE_KEY may be the PEM text or a path to a PEM file."""
    if not private_key:
        return None
    if "-----BEGIN" in private_key:
        return private_key
    if os.path.isfile(private_key):
        with open(private_key, encoding="utf-8") as fh:
            return fh.read()
    return private_key


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _InstallationToken:
    token: str
    expires_at: datetime

    @property
    def authorization(self) -> str:
        return authorization(Auth.Token(self.token))


class GitHubAppAuth:
    """Requests as the GitHub App (JWT) and as its installations (tokens
    exchanged on demand, cached per instance and per process)."""

    def __init__(self, http: GitHubTransport, app_id: str | None, private_key: str | None) -> None:
        self._http = http
        key = _read_private_key(private_key)
        self._app_auth: Auth.AppAuth | None = None
        if app_id and key:
            pem = key
            self._app_auth = Auth.AppAuth(str(app_id), lambda: parsed_private_key(pem))
        self._token_cache_key = (http.api_url, str(app_id or ""))
        self._jwt_cache_key = (*self._token_cache_key, hashlib.sha256((key or "").encode()).hexdigest())
        self._tokens: dict[int, _InstallationToken] = {}
        self._token_lock = threading.Lock()

    def close(self) -> None:
        self._tokens.clear()

    def app_authorization(self) -> str:
        """The Authorization header of a request as the app (its JWT)."""
        if self._app_auth is None:
            raise AuthBroken("GitHub App credentials (GITHUB_APP_ID / GITHUB_APP_PRIVATE_KEY) are not set")
        try:
            # Signed here rather than inside PyGithub's request so that a bad
            # key surfaces as AuthBroken; the error text could quote key
            # material, so it is not passed on.
            jwt_token = self._app_jwt(self._app_auth)
        except (jwt.PyJWTError, ValueError, TypeError):
            raise AuthBroken("the GitHub App private key cannot sign a JWT") from None
        return authorization(Auth.AppAuthToken(jwt_token))

    def _app_jwt(self, app_auth: Auth.AppAuth) -> str:
        now = time.monotonic()
        with _shared_tokens_lock:
            cached = _app_jwts.get(self._jwt_cache_key)
        if cached is not None and now - cached[1] < APP_JWT_REUSE:
            return cached[0]
        token = app_auth.create_jwt()
        with _shared_tokens_lock:
            _app_jwts[self._jwt_cache_key] = (token, now)
        return token

    def installation_get(
        self, installation_id: int, url: str, headers: dict[str, str] | None = None
    ) -> GitHubResponse:
        """GET ``url`` with the installation's token."""
        token, fresh = self._installation_token(installation_id)
        resp = self._http.send("GET", url, authorization=token.authorization, headers=headers)
        if resp.status == 401 and not fresh:
            # Our cached token may have been invalidated early (clock skew,
            # GitHub-side revocation); a new exchange tells "expired" apart from
            # "uninstalled" (the exchange then fails and raises AuthBroken).
            self._drop_token(installation_id)
            token, _ = self._installation_token(installation_id)
            resp = self._http.send("GET", url, authorization=token.authorization, headers=headers)
        return resp

    def _installation_token(self, installation_id: int) -> tuple[_InstallationToken, bool]:
        with self._token_lock:
            current = self._tokens.get(installation_id)
            if current is not None and current.expires_at - TOKEN_REFRESH_MARGIN > _now():
                return current, False
            if current is not None:
                del self._tokens[installation_id]
            shared_key = (*self._token_cache_key, int(installation_id))
            with _shared_tokens_lock:
                shared = _shared_tokens.get(shared_key)
            if shared is not None and shared[1] - TOKEN_REFRESH_MARGIN > _now():
                reused = _InstallationToken(shared[0], shared[1])
                self._tokens[installation_id] = reused
                return reused, False  # a 401 on it gets one new exchange
            minted = self._exchange_token(installation_id)
            self._tokens[installation_id] = minted
            with _shared_tokens_lock:
                _shared_tokens[shared_key] = (minted.token, minted.expires_at)
            return minted, True

    def _drop_token(self, installation_id: int) -> None:
        with self._token_lock:
            self._tokens.pop(installation_id, None)
        with _shared_tokens_lock:
            _shared_tokens.pop((*self._token_cache_key, int(installation_id)), None)

    def _exchange_token(self, installation_id: int) -> _InstallationToken:
        resp = self._http.send(
            "POST",
            f"/app/installations/{int(installation_id)}/access_tokens",
            authorization=self.app_authorization(),
            body={"permissions": TOKEN_PERMISSIONS},
        )
        raise_rate_limited(resp)
        if resp.status in (401, 403, 404, 422):
            # 401: app credentials rejected; 403: installation suspended;
            # 404: app uninstalled; 422: members:read not granted. The link to
            # this org is broken until someone acts; retrying will not help.
            raise AuthBroken(
                f"GitHub refused an installation token for installation {installation_id}"
                f" ({resp.status}: {resp.message or 'no message'})"
            )
        check(resp, who="app", what=f"token for installation {installation_id}")
        data = resp.json()
        try:
            token = str(data["token"])
            expires_at = datetime.fromisoformat(str(data["expires_at"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise TransientProviderError("GitHub's installation token answer is malformed") from exc
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        return _InstallationToken(token, expires_at)
