"""GitHub adapter: orgs, rosters, memberships and installations through REST.

The requests themselves go through ``github_http`` (PyGithub's ``Requester``,
no retries, no throttling, every request counted) and carry the credentials
``github_auth`` provides (the app's JWT, installation tokens). Nothing here
logs a token: the user's OAuth token lives only for the call that received it.
"""
from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from github import Auth

from sync.errors import AuthBroken, ProviderError, TransientProviderError
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
)
from sync.providers.github_auth import GitHubAppAuth
from sync.providers.github_http import GitHubTransport, authorization, check
from sync.roles import github_role


class _StaleOrgLogin(ProviderError):
    """The org login we hold now names another org (never a reason to remove
    anyone: a ProviderError stops the sync or member re-read)."""


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


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


class GitHubProvider:
    """The ``Provider`` for GitHub (github.com or GitHub Enterprise Server)."""

    name: ProviderName = "github"
    unlisted_roles = frozenset({"billing"})  # GET /orgs/{org}/members never lists billing managers

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
        self._http = GitHubTransport(self.api_url, timeout=timeout, per_page=per_page, on_send=self._count_request)
        self._auth = GitHubAppAuth(self._http, app_id, private_key)

    def _count_request(self) -> None:
        self.api_calls += 1

    def __repr__(self) -> str:  # never show keys or tokens
        return f"GitHubProvider({self.api_url!r}, installation_id={self.installation_id!r})"

    def close(self) -> None:
        self._http.close()
        self._auth.close()

    # ------------------------------------------------------------------ reads

    def get_org(self, org_id: int) -> ProviderOrg:
        if self.installation_id is not None:
            resp = self._auth.installation_get(self.installation_id, f"/organizations/{int(org_id)}")
        else:
            # Without an installation the org's public profile is still readable.
            resp = self._http.send("GET", f"/organizations/{int(org_id)}")
        check(resp, who="installation", what=f"organization {org_id}")
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
        app = self._auth.app_authorization()
        out: list[ProviderInstallation] = []
        url: str | None = f"{self.api_url}/app/installations?per_page={self.per_page}"
        while url is not None:
            cached = cache.get(url) if cache is not None else None
            headers = {"If-None-Match": cached.etag} if cached is not None and cached.etag else {}
            resp = self._http.send("GET", url, authorization=app, headers=headers)
            if resp.status == 304 and cached is not None:
                self.not_modified += 1
                out.extend(cached.installations)
                url = self._http.next_url(resp, url, cached_items=len(cached.installations))
                continue
            check(resp, who="app", what="the app's installations")
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
            url = self._http.next_url(resp, url)
        return out

    def get_user(self, provider_user_id: int) -> ProviderUser | None:
        url = f"/user/{int(provider_user_id)}"
        if self.installation_id is not None:
            resp = self._auth.installation_get(self.installation_id, url)
        else:
            resp = self._http.send("GET", url)
        if resp.status == 404:
            return None
        check(resp, who="installation", what=f"user {provider_user_id}")
        data = resp.json()
        with _parsing(f"user {provider_user_id}"):
            return ProviderUser(provider_user_id=int(data["id"]), login=str(data["login"]))

    def _org_installation(self, org_login: str) -> ProviderInstallation | None:
        resp = self._http.send("GET", f"/orgs/{_quote(org_login)}/installation",
                               authorization=self._auth.app_authorization())
        if resp.status == 404:
            return None
        check(resp, who="app", what=f"installation of {org_login}")
        data = resp.json()
        with _parsing(f"installation of {org_login}"):
            return _installation(data)

    def _public_org_login(self, org_id: int) -> str | None:
        """The org's current login by id, or None when the org is gone. Read
        without an installation token: the installation may be the very thing
        that is gone, and an org's profile is public."""
        resp = self._http.send("GET", f"/organizations/{int(org_id)}")
        if resp.status == 404:
            return None
        check(resp, who="anonymous", what=f"organization {org_id}")
        data = resp.json()
        with _parsing(f"organization {org_id}"):
            return str(data["login"])

    def iter_roster(self, org: ProviderOrg, cache: PageCache | None = None) -> Iterator[RosterPage]:
        installation_id = self._installation_of(org)
        for role in ("admin", "member"):
            url: str | None = (
                f"{self.api_url}/orgs/{_quote(org.login)}/members"
                f"?per_page={self.per_page}&role={role}"
            )
            while url is not None:
                cached = cache.get(url) if cache is not None else None
                headers = {"If-None-Match": cached.etag} if cached is not None and cached.etag else {}
                resp = self._auth.installation_get(installation_id, url, headers=headers)
                if resp.status == 304 and cached is not None:
                    self.not_modified += 1
                    members = list(cached.members)
                    yield RosterPage(members=members, not_modified=True, url=url)
                    url = self._http.next_url(resp, url, cached_items=len(members))
                    continue
                check(resp, who="installation", what=f"members of {org.login}")
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
                url = self._http.next_url(resp, url)

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
        resp = self._http.send("GET", "/user", authorization=authorization(Auth.Token(access_token)))
        check(resp, who="user", what="the token's user")
        data = resp.json()
        with _parsing("the token's user"):
            return ProviderUser(provider_user_id=int(data["id"]), login=str(data["login"]))

    def iter_token_orgs(self, access_token: str) -> Iterator[TokenOrg]:
        user = authorization(Auth.Token(access_token))
        url: str | None = f"{self.api_url}/user/memberships/orgs?per_page={self.per_page}&state=active"
        while url is not None:
            resp = self._http.send("GET", url, authorization=user)
            check(resp, who="user", what="the token's organizations")
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
            url = self._http.next_url(resp, url)

    # -------------------------------------------------------------- helpers

    def _membership(
        self, installation_id: int, org_login: str, user_id: int, login: str, org_id: int | None = None
    ) -> ProviderMember | None:
        resp = self._auth.installation_get(
            installation_id, f"/orgs/{_quote(org_login)}/memberships/{_quote(login)}"
        )
        if resp.status == 404:
            return None
        check(resp, who="installation", what=f"membership of {login} in {org_login}")
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
        resp = self._auth.installation_get(installation_id, f"/user/{user_id}")
        if resp.status == 404:
            return None
        check(resp, who="installation", what=f"user {user_id}")
        data = resp.json()
        with _parsing(f"user {user_id}"):
            return str(data["login"])

    def _current_org_login(self, installation_id: int, org: ProviderOrg) -> str:
        resp = self._auth.installation_get(installation_id, f"/organizations/{org.org_id}")
        # An org that is gone is not the same as "not a member": let the
        # caller disconnect the workspace instead of emptying its roster.
        check(resp, who="installation", what=f"organization {org.org_id}")
        data = resp.json()
        with _parsing(f"organization {org.org_id}"):
            return str(data["login"])

    def _installation_of(self, org: ProviderOrg) -> int:
        installation_id = org.installation_id if org.installation_id is not None else self.installation_id
        if installation_id is None:
            raise AuthBroken(f"the GitHub App is not installed on {org.login}")
        return int(installation_id)
