"""GitHub adapter: GitHub App auth through PyGithub, rosters through REST.

Transport is PyGithub's ``Requester`` (the same object ``Github().requester``
exposes for endpoints PyGithub does not wrap), driven directly instead of
through ``PaginatedList`` because we need conditional requests (ETag) and
exact control over every request:

- no retries inside the adapter (``retry=0``): transient errors and rate
  limits go back to the job, which reschedules; PyGithub's default
  ``GithubRetry`` would sleep without bound on a rate limit;
- no client-side throttling (``seconds_between_*=0``; the default sleeps 0.25 s
  between requests, i.e. 25 s of idle time for a 100-page roster);
- every HTTP request is counted in ``api_calls`` (token exchange included).

Nothing here logs a token: the user's OAuth token lives only for the call
that received it, installation tokens only in this instance's memory.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import jwt
import requests
from github import Auth
from github.Requester import Requester

from sync.errors import (
    AuthBroken,
    InvalidUserToken,
    NotFound,
    ProviderError,
    RateLimited,
    TransientProviderError,
)
from sync.providers.base import (
    CachedInstallations,
    CachedPage,
    InstallationCache,
    PageCache,
    ProviderInstallation,
    ProviderMember,
    ProviderName,
    ProviderOrg,
    ProviderUser,
    RosterPage,
    TokenOrg,
    parse_retry_after,
)
from sync.roles import github_role

log = logging.getLogger(__name__)

API_VERSION = "2022-11-28"
USER_AGENT = "orgsync"
ACCEPT = "application/vnd.github+json"
# The only permission the adapter needs; asking for just this down-scopes the
# installation token, so a leaked token cannot do whatever else the app may do.
TOKEN_PERMISSIONS = {"members": "read"}
# Refresh an installation token this long before GitHub says it expires, so
# a long roster walk does not cross the expiry half way.
TOKEN_REFRESH_MARGIN = timedelta(minutes=5)
# GitHub: with no Retry-After on a secondary limit, wait at least a minute.
SECONDARY_DEFAULT_WAIT = timedelta(seconds=60)

_Who = Literal["installation", "app", "user", "anonymous"]


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    headers: Mapping[str, str]  # lower-cased names (PyGithub lower-cases them)
    body: str

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError as exc:
            # A 200 with a non-JSON body is a proxy or CDN error page, not GitHub.
            raise TransientProviderError(f"GitHub answered {self.status} with a non-JSON body") from exc

    @property
    def message(self) -> str:
        try:
            data = json.loads(self.body) if self.body else None
        except ValueError:
            return ""
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return cast(str, data["message"])
        return ""


@dataclass(slots=True)
class _InstallationToken:
    token: str
    expires_at: datetime
    requester: Requester


@functools.lru_cache(maxsize=4)
def parsed_private_key(pem: str) -> Any:
    """The app key, parsed once per process.

    Loading a PEM key validates the RSA numbers, which costs tens of
    milliseconds with current cryptography: done for every JWT it dominated a
    webhook's processing time. A worker calls this before forking so that its
    work horses inherit the parsed key. A bad key raises ValueError (AuthBroken
    at the call site)."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return load_pem_private_key(pem.encode(), password=None)


# Installation tokens shared by every adapter instance of this process (a
# job builds a fresh adapter; exchanging a token for each one would double the
# requests of a member re-read). In memory only, never logged; keyed by API
# URL, app id and installation id; dropped when GitHub rejects one.
_shared_tokens: dict[tuple[str, str, int], tuple[str, datetime]] = {}
_shared_tokens_lock = threading.Lock()


class _StaleOrgLogin(ProviderError):
    """The org login we hold now names another org (never a reason to remove
    anyone: a ProviderError stops the sync or member re-read)."""


def clear_token_cache() -> None:
    """Forget every shared installation token (tests; key rotation)."""
    with _shared_tokens_lock:
        _shared_tokens.clear()


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


@contextmanager
def _parsing(what: str) -> Iterator[None]:
    """A 2xx whose JSON lacks the fields we read is GitHub misbehaving, not a
    crash in our code: report it as a provider error."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProviderError(f"GitHub's answer for {what} is malformed") from exc


def _installation(data: Any) -> ProviderInstallation:
    account = data.get("account") or {}
    # GitHub's installation record is the one source for the account kind;
    # target_type is the documented field, account.type the fallback.
    kind = data.get("target_type") or account.get("type") or ""
    return ProviderInstallation(
        installation_id=int(data["id"]),
        account_id=int(account.get("id", data.get("target_id"))),
        account_login=str(account.get("login") or ""),
        account_type=str(kind),
        suspended=bool(data.get("suspended_at")),
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _next_link(headers: Mapping[str, str]) -> str | None:
    link = headers.get("link")
    if not link:
        return None
    for part in link.split(","):
        section = part.split(";")
        if len(section) < 2:
            continue
        url = section[0].strip()
        if not (url.startswith("<") and url.endswith(">")):
            continue
        for param in section[1:]:
            key, _, value = param.strip().partition("=")
            if key.strip() == "rel" and "next" in value.strip().strip('"').split():
                return url[1:-1]
    return None


def _with_page(url: str, page: int) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "page"]
    query.append(("page", str(page)))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _page_of(url: str) -> int:
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("page")
    try:
        return int(values[0]) if values else 1
    except ValueError:
        return 1


class GitHubProvider:
    """The ``Provider`` for GitHub (github.com or GitHub Enterprise Server)."""

    name: ProviderName = "github"

    def __init__(
        self,
        api_url: str,
        app_id: str | None = None,
        private_key: str | None = None,
        *,
        installation_id: int | None = None,
        timeout: float = 10.0,
        per_page: int = 100,
    ) -> None:
        if not 1 <= per_page <= 100:
            raise ValueError("per_page must be between 1 and 100 (GitHub's maximum)")
        self.api_url = api_url.rstrip("/")
        self.installation_id = int(installation_id) if installation_id is not None else None
        self.per_page = per_page
        self.api_calls = 0
        self.not_modified = 0
        key = _read_private_key(private_key)
        self._app_auth: Auth.AppAuth | None = None
        if app_id and key:
            pem = key
            self._app_auth = Auth.AppAuth(str(app_id), lambda: parsed_private_key(pem))
        self._token_cache_key = (self.api_url, str(app_id or ""))
        self._base = Requester(
            auth=None,
            base_url=self.api_url,
            # requests takes float timeouts; PyGithub only annotates int.
            timeout=cast(int, timeout),
            user_agent=USER_AGENT,
            per_page=per_page,
            verify=True,
            retry=0,
            pool_size=None,
            seconds_between_requests=0,
            seconds_between_writes=0,
            api_version=API_VERSION,
        )
        self._origin = self._origin_of(self.api_url)
        self._prefix = urllib.parse.urlsplit(self.api_url).path.rstrip("/")
        self._tokens: dict[int, _InstallationToken] = {}
        self._token_lock = threading.Lock()

    def __repr__(self) -> str:  # never show keys or tokens
        return f"GitHubProvider({self.api_url!r}, installation_id={self.installation_id!r})"

    def close(self) -> None:
        self._base.close()
        for tok in self._tokens.values():
            tok.requester.close()
        self._tokens.clear()

    # ------------------------------------------------------------------ reads

    def get_org(self, org_id: int) -> ProviderOrg:
        if self.installation_id is not None:
            resp = self._installation_get(self.installation_id, f"/organizations/{int(org_id)}")
        else:
            # Without an installation the org's public profile is still readable.
            resp = self._send(self._base, "GET", f"/organizations/{int(org_id)}")
        self._check(resp, who="installation", what=f"organization {org_id}")
        data = resp.json()
        with _parsing(f"organization {org_id}"):
            return ProviderOrg(
                provider="github",
                org_id=int(data["id"]),
                login=str(data["login"]),
                name=data.get("name"),
                installation_id=self.installation_id,
            )

    def find_installation(self, org_login: str) -> int | None:
        """The app's installation id on an org, or None if not installed."""
        found = self._org_installation(org_login)
        return found.installation_id if found is not None else None

    def get_org_installation(self, org: ProviderOrg) -> ProviderInstallation | None:
        found = self._org_installation(org.login) if org.login else None
        if found is not None:
            if found.account_id != org.org_id:
                # Our login now names another org (renamed, then re-taken):
                # its installation is not ours to adopt.
                found = None
            else:
                return found
        # SAFETY: "None" may disconnect a workspace. A 404 under a stale login
        # (the org was renamed) is not "uninstalled": resolve the org by its
        # immutable id and ask once more under its current name.
        current = self._public_org_login(org.org_id)
        if current is None or current.lower() == (org.login or "").lower():
            return None
        found = self._org_installation(current)
        return found if found is not None and found.account_id == org.org_id else None

    def list_installations(self, cache: InstallationCache | None = None) -> list[ProviderInstallation]:
        requester = self._app_requester()
        out: list[ProviderInstallation] = []
        try:
            url: str | None = f"{self.api_url}/app/installations?per_page={self.per_page}"
            while url is not None:
                cached = cache.get(url) if cache is not None else None
                headers = {"If-None-Match": cached.etag} if cached is not None and cached.etag else {}
                resp = self._send(requester, "GET", url, headers=headers)
                if resp.status == 304 and cached is not None:
                    self.not_modified += 1
                    out.extend(cached.installations)
                    following = _next_link(resp.headers)
                    if following is None and "link" not in resp.headers \
                            and len(cached.installations) >= self.per_page:
                        following = _with_page(url, _page_of(url) + 1)
                    url = self._checked_next(following)
                    continue
                self._check(resp, who="app", what="the app's installations")
                if resp.status != 200:
                    raise ProviderError(f"GitHub answered {resp.status} to an installations page")
                data = resp.json()
                if not isinstance(data, list):
                    raise TransientProviderError("GitHub installations page is not a list")
                with _parsing("the app's installations"):
                    page = [_installation(item) for item in data]
                etag = resp.headers.get("etag")
                if cache is not None and etag:
                    cache.put(url, CachedInstallations(etag=etag, installations=page))
                out.extend(page)
                url = self._checked_next(_next_link(resp.headers))
        finally:
            requester.close()
        return out

    def get_user(self, provider_user_id: int) -> ProviderUser | None:
        url = f"/user/{int(provider_user_id)}"
        if self.installation_id is not None:
            resp = self._installation_get(self.installation_id, url)
        else:
            resp = self._send(self._base, "GET", url)
        if resp.status == 404:
            return None
        self._check(resp, who="installation", what=f"user {provider_user_id}")
        data = resp.json()
        with _parsing(f"user {provider_user_id}"):
            return ProviderUser(provider_user_id=int(data["id"]), login=str(data["login"]))

    def _org_installation(self, org_login: str) -> ProviderInstallation | None:
        requester = self._app_requester()
        try:
            resp = self._send(requester, "GET", f"/orgs/{self._quote(org_login)}/installation")
        finally:
            requester.close()
        if resp.status == 404:
            return None
        self._check(resp, who="app", what=f"installation of {org_login}")
        data = resp.json()
        with _parsing(f"installation of {org_login}"):
            return _installation(data)

    def _public_org_login(self, org_id: int) -> str | None:
        """The org's current login by id, or None when the org is gone. Read
        without an installation token: the installation may be the very thing
        that is gone, and an org's profile is public."""
        resp = self._send(self._base, "GET", f"/organizations/{int(org_id)}")
        if resp.status == 404:
            return None
        self._check(resp, who="anonymous", what=f"organization {org_id}")
        data = resp.json()
        with _parsing(f"organization {org_id}"):
            return str(data["login"])

    def iter_roster(self, org: ProviderOrg, cache: PageCache | None = None) -> Iterator[RosterPage]:
        installation_id = self._installation_of(org)
        for role in ("admin", "member"):
            url: str | None = (
                f"{self.api_url}/orgs/{self._quote(org.login)}/members"
                f"?per_page={self.per_page}&role={role}"
            )
            while url is not None:
                cached = cache.get(url) if cache is not None else None
                headers = {"If-None-Match": cached.etag} if cached is not None and cached.etag else {}
                resp = self._installation_get(installation_id, url, headers=headers)
                if resp.status == 304 and cached is not None:
                    self.not_modified += 1
                    members = list(cached.members)
                    yield RosterPage(members=members, not_modified=True, url=url)
                    following = _next_link(resp.headers)
                    if following is None and "link" not in {k.lower() for k in resp.headers} \
                            and len(members) >= self.per_page:
                        # A 304 need not repeat the Link header; when it carries
                        # none, a full cached page means there may be another one
                        # (GitHub paginates by number). A Link header without
                        # rel="next" says this was the last page.
                        following = _with_page(url, _page_of(url) + 1)
                    url = self._checked_next(following)
                    continue
                self._check(resp, who="installation", what=f"members of {org.login}")
                if resp.status != 200:
                    raise ProviderError(f"GitHub answered {resp.status} to a roster page")
                data = resp.json()
                if not isinstance(data, list):
                    raise TransientProviderError("GitHub roster page is not a list")
                with _parsing(f"members of {org.login}"):
                    members = [
                        ProviderMember(
                            provider_user_id=int(item["id"]),
                            login=str(item["login"]),
                            role=github_role(role),
                            raw_role=role,
                        )
                        for item in data
                    ]
                etag = resp.headers.get("etag")
                if cache is not None and etag:
                    cache.put(url, CachedPage(etag=etag, members=members))
                yield RosterPage(members=members, not_modified=False, url=url)
                url = self._checked_next(_next_link(resp.headers))

    def get_member(self, org: ProviderOrg, provider_user_id: int, login: str | None) -> ProviderMember | None:
        installation_id = self._installation_of(org)
        user_id = int(provider_user_id)
        if not login:
            login = self._current_login(installation_id, user_id)
            if login is None:
                return None
        try:
            found = self._membership(installation_id, org.login, user_id, login, org.org_id)
        except (_StaleOrgLogin, AuthBroken):
            # Our org login may be stale and now name another org (renamed,
            # then re-taken): GitHub answers 403 for an org our installation
            # cannot see, or another org's membership where it can. Address
            # the org by its id before blaming our credentials.
            current_org = self._current_org_login(installation_id, org)
            if current_org.lower() == org.login.lower():
                raise
            return self._membership(installation_id, current_org, user_id, login, org.org_id)
        if found is not None:
            return found
        # SAFETY: "None" makes the caller remove this person. A 404 (or a login
        # now held by someone else) may only mean our labels are stale: the
        # user or the org was renamed. Re-resolve both by their immutable ids
        # and ask once more before declaring a non-member.
        current_login = self._current_login(installation_id, user_id)
        if current_login is None:
            return None  # account deleted: not a member anywhere
        current_org = self._current_org_login(installation_id, org)
        if current_login.lower() == login.lower() and current_org.lower() == org.login.lower():
            return None
        return self._membership(installation_id, current_org, user_id, current_login, org.org_id)

    # ----------------------------------------------------- user OAuth token

    def get_token_user(self, access_token: str) -> ProviderUser:
        requester = self._base.withAuth(Auth.Token(access_token))
        try:
            resp = self._send(requester, "GET", "/user")
        finally:
            requester.close()
        self._check(resp, who="user", what="the token's user")
        data = resp.json()
        with _parsing("the token's user"):
            return ProviderUser(provider_user_id=int(data["id"]), login=str(data["login"]))

    def iter_token_orgs(self, access_token: str) -> Iterator[TokenOrg]:
        requester = self._base.withAuth(Auth.Token(access_token))
        try:
            url: str | None = f"{self.api_url}/user/memberships/orgs?per_page={self.per_page}&state=active"
            while url is not None:
                resp = self._send(requester, "GET", url)
                self._check(resp, who="user", what="the token's organizations")
                data = resp.json()
                if not isinstance(data, list):
                    raise TransientProviderError("GitHub membership list is not a list")
                with _parsing("the token's organizations"):
                    orgs = [
                        TokenOrg(
                            org=ProviderOrg(
                                provider="github",
                                org_id=int(item["organization"]["id"]),
                                login=str(item["organization"]["login"]),
                            ),
                            role=github_role(item.get("role"), item.get("state")),
                        )
                        for item in data
                    ]
                yield from orgs
                url = self._checked_next(_next_link(resp.headers))
        finally:
            requester.close()

    # -------------------------------------------------------------- helpers

    def _membership(
        self, installation_id: int, org_login: str, user_id: int, login: str, org_id: int | None = None
    ) -> ProviderMember | None:
        resp = self._installation_get(
            installation_id, f"/orgs/{self._quote(org_login)}/memberships/{self._quote(login)}"
        )
        if resp.status == 404:
            return None
        self._check(resp, who="installation", what=f"membership of {login} in {org_login}")
        data = resp.json()
        with _parsing(f"membership of {login}"):
            user = data.get("user") or {}
            # The login may now belong to a different account (renamed, then
            # taken): identity is the numeric id, never the login.
            if int(user.get("id", -1)) != user_id:
                return None
            answered_org = (data.get("organization") or {}).get("id")
            if org_id is not None and answered_org is not None and int(answered_org) != int(org_id):
                raise _StaleOrgLogin(org_login)
            role = data.get("role")
            state = data.get("state")
        raw = str(role or "") if state in (None, "active") else f"{state}:{role}"
        return ProviderMember(
            provider_user_id=user_id,
            login=str(user.get("login") or login),
            role=github_role(role, state),
            raw_role=raw,
        )

    def _current_login(self, installation_id: int, user_id: int) -> str | None:
        resp = self._installation_get(installation_id, f"/user/{user_id}")
        if resp.status == 404:
            return None
        self._check(resp, who="installation", what=f"user {user_id}")
        data = resp.json()
        with _parsing(f"user {user_id}"):
            return str(data["login"])

    def _current_org_login(self, installation_id: int, org: ProviderOrg) -> str:
        resp = self._installation_get(installation_id, f"/organizations/{org.org_id}")
        # An org that is gone is not the same as "not a member": let the
        # caller disconnect the workspace instead of emptying its roster.
        self._check(resp, who="installation", what=f"organization {org.org_id}")
        data = resp.json()
        with _parsing(f"organization {org.org_id}"):
            return str(data["login"])

    def _installation_of(self, org: ProviderOrg) -> int:
        installation_id = org.installation_id if org.installation_id is not None else self.installation_id
        if installation_id is None:
            raise AuthBroken(f"the GitHub App is not installed on {org.login}")
        return int(installation_id)

    def _installation_get(
        self, installation_id: int, url: str, headers: dict[str, str] | None = None
    ) -> _Response:
        token, fresh = self._installation_token(installation_id)
        resp = self._send(token.requester, "GET", url, headers=headers)
        if resp.status == 401 and not fresh:
            # Our cached token may have been invalidated early (clock skew,
            # GitHub-side revocation); a new exchange tells "expired" apart from
            # "uninstalled" (the exchange then fails and raises AuthBroken).
            self._drop_token(installation_id)
            token, _ = self._installation_token(installation_id)
            resp = self._send(token.requester, "GET", url, headers=headers)
        return resp

    def _installation_token(self, installation_id: int) -> tuple[_InstallationToken, bool]:
        with self._token_lock:
            current = self._tokens.get(installation_id)
            if current is not None and current.expires_at - TOKEN_REFRESH_MARGIN > _now():
                return current, False
            if current is not None:
                current.requester.close()
                del self._tokens[installation_id]
            shared_key = (*self._token_cache_key, int(installation_id))
            with _shared_tokens_lock:
                shared = _shared_tokens.get(shared_key)
            if shared is not None and shared[1] - TOKEN_REFRESH_MARGIN > _now():
                reused = _InstallationToken(shared[0], shared[1], self._base.withAuth(Auth.Token(shared[0])))
                self._tokens[installation_id] = reused
                return reused, False  # a 401 on it gets one new exchange
            minted = self._exchange_token(installation_id)
            self._tokens[installation_id] = minted
            with _shared_tokens_lock:
                _shared_tokens[shared_key] = (minted.token, minted.expires_at)
            return minted, True

    def _drop_token(self, installation_id: int) -> None:
        with self._token_lock:
            current = self._tokens.pop(installation_id, None)
            if current is not None:
                current.requester.close()
        with _shared_tokens_lock:
            _shared_tokens.pop((*self._token_cache_key, int(installation_id)), None)

    def _exchange_token(self, installation_id: int) -> _InstallationToken:
        requester = self._app_requester()
        try:
            resp = self._send(
                requester,
                "POST",
                f"/app/installations/{int(installation_id)}/access_tokens",
                body={"permissions": TOKEN_PERMISSIONS},
            )
        finally:
            requester.close()
        self._raise_rate_limited(resp)
        if resp.status in (401, 403, 404, 422):
            # 401: app credentials rejected; 403: installation suspended;
            # 404: app uninstalled; 422: members:read not granted. The link to
            # this org is broken until someone acts; retrying will not help.
            raise AuthBroken(
                f"GitHub refused an installation token for installation {installation_id}"
                f" ({resp.status}: {resp.message or 'no message'})"
            )
        self._check(resp, who="app", what=f"token for installation {installation_id}")
        data = resp.json()
        try:
            token = str(data["token"])
            expires_at = datetime.fromisoformat(str(data["expires_at"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise TransientProviderError("GitHub's installation token answer is malformed") from exc
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        return _InstallationToken(token, expires_at, self._base.withAuth(Auth.Token(token)))

    def _app_requester(self) -> Requester:
        if self._app_auth is None:
            raise AuthBroken("GitHub App credentials (GITHUB_APP_ID / GITHUB_APP_PRIVATE_KEY) are not set")
        try:
            # Signed here rather than inside PyGithub's request so that a bad
            # key surfaces as AuthBroken; the error text could quote key
            # material, so it is not passed on.
            jwt_token = self._app_auth.create_jwt()
        except (jwt.PyJWTError, ValueError, TypeError):
            raise AuthBroken("the GitHub App private key cannot sign a JWT") from None
        return self._base.withAuth(Auth.AppAuthToken(jwt_token))

    def _send(
        self,
        requester: Requester,
        verb: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        body: Any | None = None,
    ) -> _Response:
        request_headers = {"Accept": ACCEPT, **(headers or {})}
        self.api_calls += 1
        try:
            status, response_headers, text = requester.requestJson(verb, url, headers=request_headers, input=body)
        except (
            requests.exceptions.Timeout,
            requests.exceptions.ConnectionError,
            requests.exceptions.RetryError,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            raise TransientProviderError(f"GitHub unreachable: {type(exc).__name__}") from None
        except requests.exceptions.RequestException as exc:
            raise ProviderError(f"GitHub request failed: {type(exc).__name__}") from None
        return _Response(int(status), {k.lower(): str(v) for k, v in response_headers.items()}, text or "")

    def _check(self, resp: _Response, *, who: _Who, what: str) -> None:
        """Turn a non-success answer into the project's error types."""
        if 200 <= resp.status < 300 or resp.status == 304:
            return
        self._raise_rate_limited(resp)
        detail = f"GitHub answered {resp.status} for {what}"
        if resp.status >= 500 or resp.status == 408:
            raise TransientProviderError(detail)
        if resp.status in (401, 403):
            if who == "user":
                raise InvalidUserToken(detail)
            raise AuthBroken(f"{detail}: {resp.message or 'access denied'}")
        if resp.status == 404:
            raise NotFound(detail)
        raise ProviderError(f"{detail}: {resp.message or 'unexpected answer'}")

    def _raise_rate_limited(self, resp: _Response) -> None:
        if resp.status not in (403, 429):
            return
        headers = resp.headers
        message = resp.message.lower()
        now = _now()
        if headers.get("x-ratelimit-remaining") == "0" or message.startswith("api rate limit exceeded"):
            reset_at = now + SECONDARY_DEFAULT_WAIT
            reset = headers.get("x-ratelimit-reset")
            if reset:
                try:
                    reset_at = datetime.fromtimestamp(int(float(reset)), tz=UTC)
                except (ValueError, OverflowError, OSError):
                    pass
            log.info("github primary rate limit until %s", reset_at.isoformat())
            raise RateLimited(reset_at, secondary=False)
        retry_after = headers.get("retry-after")
        if (
            retry_after is not None
            or "secondary rate limit" in message
            or Requester.isSecondaryRateLimitError(message)
            or resp.status == 429
        ):
            reset_at = max(parse_retry_after(retry_after, now) or now + SECONDARY_DEFAULT_WAIT, now)
            log.info("github secondary rate limit until %s", reset_at.isoformat())
            raise RateLimited(reset_at, secondary=True)

    def _checked_next(self, url: str | None) -> str | None:
        """Follow a Link only to our own API: the installation token rides along."""
        if url is None:
            return None
        if not url.startswith(("http://", "https://")):
            url = urllib.parse.urljoin(self.api_url + "/", url)
        parts = urllib.parse.urlsplit(url)
        if self._origin_of(url) != self._origin or not parts.path.startswith(self._prefix + "/"):
            raise ProviderError("GitHub pagination link points outside the configured API URL")
        return url

    @staticmethod
    def _origin_of(url: str) -> tuple[str, str, int]:
        parts = urllib.parse.urlsplit(url)
        default = 443 if parts.scheme == "https" else 80
        return parts.scheme, (parts.hostname or "").lower(), parts.port or default

    @staticmethod
    def _quote(segment: str) -> str:
        return urllib.parse.quote(segment, safe="")
