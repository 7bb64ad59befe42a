"""GitLab adapter: top-level groups, their members, a user's groups.

python-gitlab does the HTTP; this module owns paging, auth, rate limits and
turning GitLab's failures into ``sync.errors``. Nothing above it imports
python-gitlab.

python-gitlab would sleep for real on a 429 (``obey_rate_limit``, on by
default per request) and, with ``retry_transient_errors``, on 5xx. A worker
must never sleep inside a job, so every request here opts out of both and a
rate limit surfaces as ``RateLimited`` for the job layer to reschedule.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

import gitlab
import gitlab.exceptions
import requests

from sync.errors import NotFound, ProviderError, RateLimited, TransientProviderError
from sync.providers.base import (
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
from sync.providers.http_env import skip_idle_environment_lookups, tls_verify
from sync.providers.http_errors import NETWORK_ERRORS, parse_reset_epoch, raise_for_status, retry_at
from sync.roles import gitlab_role

__all__ = ["GitLabProvider", "NotAGroup"]

# GitLab nests groups at most 20 deep; anything longer is a cycle or a lie.
_MAX_GROUP_DEPTH = 32
_GUEST = 10
_MAINTAINER = 40


class NotAGroup(NotFound):
    """The namespace exists but is a user's personal namespace, not a group.

    A subclass of ``NotFound`` so a caller that only knows the Protocol's
    errors treats it as "no tenant"; one that cares can tell it apart.
    """

    def __init__(self, namespace_id: int, path: str) -> None:
        super().__init__(f"namespace {namespace_id} is a personal namespace, not a group")
        self.namespace_id = namespace_id
        self.path = path


class _CountingSession(requests.Session):
    """A requests session that counts every attempt and remembers the last
    response per thread (python-gitlab's exceptions drop the headers we need
    for 429s)."""

    def __init__(self, on_send: Callable[[], None]) -> None:
        super().__init__()
        skip_idle_environment_lookups(self)
        self._on_send = on_send
        self._local = threading.local()

    @property
    def last_response(self) -> requests.Response | None:
        return getattr(self._local, "response", None)

    def request(
        self, method: str, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        # requests re-sends custom headers such as PRIVATE-TOKEN on a redirect
        # to another host (it only strips Authorization). GitLab's API does not
        # redirect GETs, so a 3xx is treated as an error instead of followed.
        kwargs["allow_redirects"] = False
        self._local.response = None
        return super().request(method, url, *args, **kwargs)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self._on_send()
        response = super().send(request, **kwargs)
        self._local.response = response
        return response


class GitLabProvider:
    """The ``Provider`` for one GitLab instance and one service token.

    ``token`` is the service's ``read_api`` token (``GITLAB_TOKEN``); user
    OAuth tokens are passed per call and never kept. ``api_calls`` counts
    every HTTP request this instance made, user-token requests included.
    GitLab has no conditional requests, so ``not_modified`` stays 0.
    """

    name: ProviderName = "gitlab"
    unlisted_roles: frozenset[str] = frozenset()  # a group's member listing shows every access level

    def __init__(
        self, url: str, token: str | None, *, timeout: float = 10.0, per_page: int = 100
    ) -> None:
        if not 1 <= per_page <= 100:
            raise ValueError("per_page must be between 1 and 100 (GitLab's maximum)")
        self._url = url.rstrip("/")
        self._timeout = timeout
        self._per_page = per_page
        self._count_lock = threading.Lock()
        self.api_calls = 0
        self.not_modified = 0
        self._session = _CountingSession(self._count_request)
        self._gl = self._client(self._session, private_token=token)

    def _count_request(self) -> None:
        with self._count_lock:
            self.api_calls += 1

    # -- Provider ---------------------------------------------------------

    def get_org(self, org_id: int) -> ProviderOrg:
        # with_projects=false: older GitLab embeds every project of the group
        # in this answer unless told not to.
        data = self._get(f"/groups/{int(org_id)}", {"with_projects": "false"})
        return _group_org(data)

    def iter_roster(self, org: ProviderOrg, cache: PageCache | None = None) -> Iterator[RosterPage]:
        """Stream ``/groups/:id/members/all`` one page at a time.

        ``members/all`` (not ``members``) so that members who come in through
        a group share count too; GitLab returns each user once, with their
        highest access level. ``cache`` is ignored: GitLab has no ETags here.
        """
        path = f"/groups/{int(org.org_id)}/members/all"
        page = 1
        while True:
            query = {"page": str(page), "per_page": str(self._per_page)}
            response = self._request(path, query)
            items = _json_list(response)
            yield RosterPage(
                members=[_member(item) for item in items],
                url=f"{self._gl.api_url}{path}?page={page}&per_page={self._per_page}",
            )
            next_page = _next_page(response, page, len(items), self._per_page)
            if next_page is None:
                return
            page = next_page

    def get_member(
        self, org: ProviderOrg, provider_user_id: int, login: str | None
    ) -> ProviderMember | None:
        path = f"/groups/{int(org.org_id)}/members/all/{int(provider_user_id)}"
        try:
            data = self._get(path)
        except NotFound:
            return None
        return _member(data)

    def get_user(self, provider_user_id: int) -> ProviderUser | None:
        try:
            data = self._get(f"/users/{int(provider_user_id)}")
        except NotFound:
            return None
        return ProviderUser(provider_user_id=_id(data), login=str(data.get("username") or ""))

    def get_org_installation(self, org: ProviderOrg) -> ProviderInstallation | None:
        raise ProviderError("GitLab groups have no app installation")

    def list_installations(self, cache: InstallationCache | None = None) -> list[ProviderInstallation]:
        return []

    def get_top_level_group(self, namespace_id: int) -> ProviderOrg:
        """The root group above a CI token's ``namespace_id``.

        Walks ``parent_id`` by numeric id. Resolving by the first segment of
        ``full_path`` would be wrong: a deleted or renamed group's path can be
        claimed by anyone, and their pipelines would land in our tenant.

        Raises ``NotAGroup`` (a ``NotFound``) for a personal namespace, and
        ``NotFound`` when the namespace or an ancestor is not visible.
        """
        current = int(namespace_id)
        seen: set[int] = set()
        for _ in range(_MAX_GROUP_DEPTH):
            seen.add(current)
            data = self._get(f"/namespaces/{current}")
            if data.get("kind") != "group":
                raise NotAGroup(current, str(data.get("full_path") or data.get("path") or ""))
            parent = data.get("parent_id")
            if parent is None:
                return _group_org(data)
            current = int(parent)
            if current in seen:
                break
        raise ProviderError(f"namespace {namespace_id}: parent chain does not end in a root group")

    def get_token_user(self, access_token: str) -> ProviderUser:
        # A client of its own: the user's token must not ride on the service
        # session (cookies, auth) nor outlive this call.
        session = _CountingSession(self._count_request)
        try:
            user_gl = self._client(session, oauth_token=access_token)
            data = self._get("/user", client=user_gl, user_token=True)
            return ProviderUser(provider_user_id=_id(data), login=str(data.get("username") or ""))
        finally:
            session.close()

    def iter_token_orgs(self, access_token: str) -> Iterator[TokenOrg]:
        """Top-level groups the user can see with at least Guest access.

        Two listings: ``min_access_level=10`` (every group with access; this
        leaves out Minimal access, 5, and GitLab omits expired memberships)
        and ``min_access_level=40`` (the ones the user administers).
        """
        session = _CountingSession(self._count_request)
        try:
            user_gl = self._client(session, oauth_token=access_token)
            admin: dict[int, ProviderOrg] = {}
            for item in self._iter_list(user_gl, "/groups", _MAINTAINER):
                org = _group_org(item)
                admin[org.org_id] = org
            seen: set[int] = set()
            for item in self._iter_list(user_gl, "/groups", _GUEST):
                org = _group_org(item)
                if org.org_id in seen:
                    continue  # offset paging may repeat a row when the list shifts
                seen.add(org.org_id)
                yield TokenOrg(org=org, role="admin" if org.org_id in admin else "member")
            # A group that only the admin listing returned (the membership
            # changed between the two listings) still belongs to the user.
            for org_id, org in admin.items():
                if org_id not in seen:
                    yield TokenOrg(org=org, role="admin")
        finally:
            session.close()

    # -- HTTP ---------------------------------------------------------------

    def _client(
        self,
        session: requests.Session,
        *,
        private_token: str | None = None,
        oauth_token: str | None = None,
    ) -> gitlab.Gitlab:
        return gitlab.Gitlab(
            self._url,
            private_token=private_token,
            oauth_token=oauth_token,
            timeout=self._timeout,
            session=session,
            # The environment's CA bundle, read once (sync.providers.http_env).
            ssl_verify=tls_verify(),
            retry_transient_errors=False,
        )

    def _iter_list(
        self, client: gitlab.Gitlab, path: str, min_access_level: int
    ) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            query = {
                "top_level_only": "true",
                "min_access_level": str(min_access_level),
                "page": str(page),
                "per_page": str(self._per_page),
            }
            response = self._request(path, query, client=client, user_token=True)
            items = _json_list(response)
            yield from items
            next_page = _next_page(response, page, len(items), self._per_page)
            if next_page is None:
                return
            page = next_page

    def _get(
        self,
        path: str,
        query: dict[str, str] | None = None,
        *,
        client: gitlab.Gitlab | None = None,
        user_token: bool = False,
    ) -> dict[str, Any]:
        response = self._request(path, query, client=client, user_token=user_token)
        try:
            data = response.json()
        except ValueError:
            raise TransientProviderError(f"GitLab {path}: answer is not JSON") from None
        if not isinstance(data, dict):
            raise ProviderError(f"GitLab {path}: expected an object")
        return data

    def _request(
        self,
        path: str,
        query: dict[str, str] | None = None,
        *,
        client: gitlab.Gitlab | None = None,
        user_token: bool = False,
    ) -> requests.Response:
        gl = client or self._gl
        # Errors are raised after the ``except`` blocks, not inside them, so
        # that they carry no __context__: the chained traceback would hold
        # frames whose locals include a user's token.
        network_error: str | None = None
        other_error: str | None = None
        try:
            return gl.http_request(
                "get",
                path,
                query_data=query or {},
                obey_rate_limit=False,
                retry_transient_errors=False,
            )
        except gitlab.exceptions.GitlabError as exc:
            status = exc.response_code
        except NETWORK_ERRORS as exc:
            status, network_error = None, type(exc).__name__
        except requests.RequestException as exc:
            status, other_error = None, type(exc).__name__
        if network_error is not None:
            raise TransientProviderError(f"GitLab {path}: {network_error}")
        if other_error is not None:
            raise ProviderError(f"GitLab {path}: {other_error}")
        session = gl.session
        last = session.last_response if isinstance(session, _CountingSession) else None
        _raise_mapped(path, status, last, user_token)


def _raise_mapped(
    path: str, status: int | None, response: requests.Response | None, user_token: bool
) -> NoReturn:
    headers: Mapping[str, str] = response.headers if response is not None else {}
    where = f"GitLab {path}: HTTP {status}"
    if status == 429:
        reset_at, secondary = _rate_limit_reset(headers, datetime.now(UTC))
        raise RateLimited(reset_at, secondary=secondary, message=f"{where} (rate limited)")
    raise_for_status(status, where, user_token=user_token)


def _rate_limit_reset(headers: Mapping[str, str], now: datetime) -> tuple[datetime, bool]:
    """When to try again after a 429, and whether it was a secondary limit.

    GitLab's own limiters send ``RateLimit-Reset`` (epoch seconds) and
    ``Retry-After``; a proxy or an unannounced limit may send only
    ``Retry-After`` or nothing, which we treat as secondary (back off).
    """
    reset_at = parse_reset_epoch(headers.get("RateLimit-Reset"))
    if reset_at is not None:
        # Never in the past, whatever the clock skew between us and GitLab.
        return max(reset_at, now), False
    return retry_at(headers.get("Retry-After"), now), True


def _next_page(response: requests.Response, page: int, count: int, per_page: int) -> int | None:
    """The next page number, or None after the last page.

    We never follow the ``Link`` URL itself: it is built from GitLab's
    ``external_url`` and our token would go wherever it points. When a proxy
    strips both ``X-Next-Page`` and ``Link``, a full page means there may be
    more: stopping there would make the sync believe a truncated roster and
    remove everyone on the pages it never read.
    """
    if count == 0:
        return None
    header = response.headers.get("X-Next-Page")
    if header is not None:
        header = header.strip()
        if not header:
            return None
        return _forward(page, header)
    next_link = response.links.get("next", {}).get("url")
    if next_link:
        values = parse_qs(urlsplit(next_link).query).get("page")
        if values:
            return _forward(page, values[0])
    return page + 1 if count >= per_page else None


def _forward(page: int, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ProviderError(f"GitLab pagination: bad next page {value!r}") from None
    if number <= page:
        raise ProviderError(f"GitLab pagination: next page {number} after page {page}")
    return number


def _json_list(response: requests.Response) -> list[dict[str, Any]]:
    try:
        data = response.json()
    except ValueError:
        raise TransientProviderError("GitLab: list answer is not JSON") from None
    if not isinstance(data, list):
        raise ProviderError("GitLab: expected a list")
    return [item for item in data if isinstance(item, dict)]


def _id(data: Mapping[str, Any]) -> int:
    value = data.get("id")
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ProviderError("GitLab: object without a numeric id")
    try:
        return int(value)
    except ValueError:
        raise ProviderError("GitLab: object without a numeric id") from None


def _group_org(data: Mapping[str, Any]) -> ProviderOrg:
    return ProviderOrg(
        provider="gitlab",
        org_id=_id(data),
        login=str(data.get("full_path") or data.get("path") or data.get("id")),
        name=data.get("name"),
    )


def _member(data: Mapping[str, Any]) -> ProviderMember:
    access_level = data.get("access_level")
    # ``state`` is the user's state (blocked, deactivated); newer GitLab adds
    # ``membership_state`` ("awaiting" while a seat or approval is pending).
    # Neither kind of member may use the workspace.
    active = data.get("state") in ("active", None) and data.get("membership_state") in (
        "active",
        None,
    )
    role = gitlab_role(access_level, data.get("expires_at")) if active else None
    return ProviderMember(
        provider_user_id=_id(data),
        login=str(data.get("username") or ""),
        role=role,
        raw_role="" if access_level is None else str(access_level),
    )
