"""An in-memory GitLab REST API (the parts orgsync reads), as a WSGI app.

Mounted under ``/gl`` by ``demo.fakes.server.FakeProviderServer``; python-gitlab
then talks to ``http://127.0.0.1:PORT/gl`` and requests arrive as
``/api/v4/...``. Answers follow the shapes in ``shared/corpus/api/gitlab.*``
and GitLab's pagination headers (``Link``, ``X-Page``, ``X-Next-Page``,
``X-Total``...), including the quirk that counts are left out above 10,000
rows.

Sized for benchmarks: members live in dicts, and each group's ordered member
list is built once and reused until the group's membership changes, so a page
of a 100,000-member group costs a slice, not a sort.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from werkzeug.wrappers import Request, Response

DEFAULT_TOKEN = "glpat-orgsync-fake-service-token"
WEB_URL = "https://gitlab.example.com"
# GitLab stops counting (no X-Total / X-Total-Pages / rel="last") above this.
COUNT_LIMIT = 10_000
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 20
CREATED_AT = "2024-01-15T12:36:29.590Z"

StartResponse = Callable[..., Any]


@dataclass
class FakeGroup:
    id: int
    path: str
    name: str
    parent_id: int | None = None


@dataclass
class FakeUser:
    id: int
    username: str
    name: str
    namespace_id: int | None = None


@dataclass
class FakeMembership:
    user_id: int
    access_level: int
    expires_at: str | None = None
    state: str = "active"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # below the mount point: "/api/v4/groups/1/members/all"
    query: dict[str, str]
    status: int


@dataclass
class _Fault:
    status: int
    remaining: int | None  # None = until cleared
    match: Callable[[str, dict[str, str]], bool]
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class FakeGitLab:
    """Model helpers mutate state; ``wsgi`` serves it. All thread-safe."""

    def __init__(self, tokens: Iterable[str] = (DEFAULT_TOKEN,)) -> None:
        self._lock = threading.RLock()
        # Service tokens accepted in PRIVATE-TOKEN (and as Bearer, like PATs).
        self.tokens: set[str] = set(tokens)
        self.groups: dict[int, FakeGroup] = {}
        self.users: dict[int, FakeUser] = {}
        self.user_tokens: dict[str, int] = {}
        # group id -> user id -> membership; dict order = membership age.
        self.members: dict[int, dict[int, FakeMembership]] = {}
        self._ordered: dict[int, list[FakeMembership]] = {}
        self._user_namespaces: dict[int, int] = {}  # namespace id -> user id
        self._faults: list[_Fault] = []
        self.latency: float = 0.0
        self.requests: list[RecordedRequest] = []
        self.request_count = 0

    # -- model ------------------------------------------------------------

    def add_group(
        self, group_id: int, path: str, parent_id: int | None = None, name: str | None = None
    ) -> FakeGroup:
        with self._lock:
            if group_id in self._user_namespaces:
                raise ValueError(f"namespace id {group_id} is a user namespace")
            if parent_id is not None and parent_id not in self.groups:
                raise ValueError(f"parent group {parent_id} does not exist")
            group = FakeGroup(group_id, path, name or path, parent_id)
            self.groups[group_id] = group
            self.members.setdefault(group_id, {})
            self._ordered.pop(group_id, None)
            return group

    def rename_group(self, group_id: int, new_path: str, new_name: str | None = None) -> None:
        with self._lock:
            group = self.groups[group_id]
            group.path = new_path
            if new_name is not None:
                group.name = new_name

    def move_group(self, group_id: int, new_parent_id: int | None) -> None:
        with self._lock:
            self.groups[group_id].parent_id = new_parent_id

    def delete_group(self, group_id: int) -> None:
        """Delete a group and its subgroups, as GitLab does."""
        with self._lock:
            doomed = [group_id]
            while doomed:
                gid = doomed.pop()
                self.groups.pop(gid, None)
                self.members.pop(gid, None)
                self._ordered.pop(gid, None)
                doomed.extend(g.id for g in self.groups.values() if g.parent_id == gid)

    def add_user(
        self, user_id: int, username: str, name: str | None = None, namespace_id: int | None = None
    ) -> FakeUser:
        """Create or update a user; ``namespace_id`` gives them a personal
        namespace (which shares the id space with groups)."""
        with self._lock:
            user = self.users.get(user_id)
            if user is None:
                user = FakeUser(user_id, username, name or username)
                self.users[user_id] = user
            else:
                user.username = username
                if name is not None:
                    user.name = name
            if namespace_id is not None:
                if namespace_id in self.groups:
                    raise ValueError(f"namespace id {namespace_id} is a group")
                user.namespace_id = namespace_id
                self._user_namespaces[namespace_id] = user_id
            return user

    def rename_user(self, user_id: int, new_username: str) -> None:
        with self._lock:
            self.users[user_id].username = new_username

    def add_member(
        self,
        group_id: int,
        user_id: int,
        username: str | None = None,
        access_level: int = 30,
        expires_at: str | None = None,
        state: str = "active",
    ) -> None:
        with self._lock:
            if group_id not in self.groups:
                raise KeyError(f"group {group_id} does not exist")
            if user_id not in self.users:
                self.add_user(user_id, username or f"user{user_id}")
            elif username is not None:
                self.users[user_id].username = username
            roster = self.members[group_id]
            existing = roster.get(user_id)
            if existing is not None:
                existing.access_level = access_level
                existing.expires_at = expires_at
                existing.state = state
                return  # same position: no cache invalidation needed
            roster[user_id] = FakeMembership(user_id, access_level, expires_at, state)
            self._ordered.pop(group_id, None)

    def add_members(self, group_id: int, members: Iterable[tuple[int, str, int]]) -> None:
        """Bulk ``(user_id, username, access_level)``: for 100k-member setups."""
        with self._lock:
            roster = self.members[group_id]
            for user_id, username, level in members:
                user = self.users.get(user_id)
                if user is None:
                    self.users[user_id] = FakeUser(user_id, username, username)
                else:
                    user.username = username
                roster[user_id] = FakeMembership(user_id, level)
            self._ordered.pop(group_id, None)

    def remove_member(self, group_id: int, user_id: int) -> None:
        with self._lock:
            if self.members.get(group_id, {}).pop(user_id, None) is not None:
                self._ordered.pop(group_id, None)

    def set_access_level(
        self, group_id: int, user_id: int, access_level: int, expires_at: str | None = None
    ) -> None:
        with self._lock:
            membership = self.members[group_id][user_id]
            membership.access_level = access_level
            membership.expires_at = expires_at

    def set_member_state(self, group_id: int, user_id: int, state: str) -> None:
        with self._lock:
            self.members[group_id][user_id].state = state

    def delete_user(self, user_id: int) -> None:
        """The account is deleted on the instance: gone from every group."""
        with self._lock:
            self.users.pop(user_id, None)
            for gid, members in self.members.items():
                if members.pop(user_id, None) is not None:
                    self._ordered.pop(gid, None)

    def add_user_token(self, token: str, user_id: int, username: str | None = None) -> None:
        """An OAuth token of a user (sent as ``Authorization: Bearer``)."""
        with self._lock:
            if user_id not in self.users:
                self.add_user(user_id, username or f"user{user_id}")
            elif username is not None:
                self.users[user_id].username = username
            self.user_tokens[token] = user_id

    def revoke_token(self, token: str) -> None:
        with self._lock:
            self.tokens.discard(token)
            self.user_tokens.pop(token, None)

    def full_path(self, group_id: int) -> str:
        with self._lock:
            parts: list[str] = []
            current: int | None = group_id
            while current is not None:
                group = self.groups[current]
                parts.append(group.path)
                current = group.parent_id
            return "/".join(reversed(parts))

    # -- fault injection -----------------------------------------------------

    def fail_page(
        self, group_id: int, page: int, status: int = 500, times: int | None = None
    ) -> None:
        """Answer ``status`` for that page of the group's member listing
        (``times`` times, or until ``clear_faults``)."""
        path = f"/api/v4/groups/{group_id}/members/all"

        def match(p: str, q: dict[str, str]) -> bool:
            return p == path and q.get("page", "1") == str(page)

        self._add_fault(_Fault(status, times, match))

    def fail_next(
        self,
        status: int = 500,
        *,
        path_contains: str | None = None,
        times: int | None = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        def match(p: str, q: dict[str, str]) -> bool:
            return path_contains is None or path_contains in p

        self._add_fault(_Fault(status, times, match, dict(headers or {})))

    def rate_limit(
        self,
        times: int | None = 1,
        *,
        reset_at: int | None = None,
        retry_after: int | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Answer 429 like GitLab's limiters.

        With neither argument: ``RateLimit-Reset`` = now + 60 and
        ``Retry-After: 60`` (what GitLab sends). With only ``retry_after``:
        just ``Retry-After`` (a proxy or an unannounced limit).
        """
        headers: dict[str, str] = {}
        if reset_at is None and retry_after is None:
            reset_at = int(time.time()) + 60
            retry_after = 60
        if reset_at is not None:
            headers.update(
                {
                    "RateLimit-Name": "throttle_authenticated_api",
                    "RateLimit-Limit": "2000",
                    "RateLimit-Observed": "2001",
                    "RateLimit-Remaining": "0",
                    "RateLimit-Reset": str(reset_at),
                    "RateLimit-ResetTime": time.strftime(
                        "%a, %d %b %Y %H:%M:%S GMT", time.gmtime(reset_at)
                    ),
                }
            )
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)

        def match(p: str, q: dict[str, str]) -> bool:
            return path_contains is None or path_contains in p

        body = {"message": "Retry later"}
        self._add_fault(_Fault(429, times, match, headers, body))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, path: str, query: dict[str, str]) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.match(path, query):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._faults.remove(fault)
                    return fault
            return None

    # -- observability -----------------------------------------------------

    def count(self, path_prefix: str = "", method: str = "GET") -> int:
        """Requests whose path starts with ``path_prefix`` (below the mount)."""
        with self._lock:
            return sum(
                1 for r in self.requests if r.method == method and r.path.startswith(path_prefix)
            )

    def roster_requests(self, group_id: int) -> int:
        path = f"/api/v4/groups/{group_id}/members/all"
        with self._lock:
            return sum(1 for r in self.requests if r.path == path)

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()
            self.request_count = 0

    # -- WSGI ----------------------------------------------------------------

    def wsgi(self, environ: dict[str, Any], start_response: StartResponse) -> Any:
        request = Request(environ)
        query = {k: v for k, v in request.args.items()}
        path = request.path
        if self.latency:
            time.sleep(self.latency)
        try:
            response = self._dispatch(request, path, query)
        except _HttpError as err:
            response = _json({"message": err.message}, err.status)
        with self._lock:
            self.request_count += 1
            self.requests.append(RecordedRequest(request.method, path, query, response.status_code))
        return response(environ, start_response)

    def _dispatch(self, request: Request, path: str, query: dict[str, str]) -> Response:
        if request.method != "GET":
            raise _HttpError(405, "405 Method Not Allowed")
        principal = self._authenticate(request)
        fault = self._take_fault(path, query)
        if fault is not None:
            body = fault.body or {"message": f"{fault.status} fault injected"}
            response = _json(body, fault.status)
            response.headers.update(fault.headers)
            return response
        parts = [p for p in path.split("/") if p]
        if parts[:2] != ["api", "v4"]:
            raise _HttpError(404, "404 Not Found")
        route = parts[2:]
        with self._lock:
            if route == ["user"]:
                return self._current_user(principal)
            if route == ["groups"]:
                return self._list_groups(request, principal, query)
            if len(route) == 2 and route[0] == "groups":
                return _json(self._group_json(self._group(route[1])))
            if len(route) == 2 and route[0] == "users":
                return self._user(route[1])
            if len(route) == 2 and route[0] == "namespaces":
                return _json(self._namespace_json(route[1]))
            if len(route) == 4 and route[0] == "groups" and route[2:] == ["members", "all"]:
                return self._list_members(request, self._group(route[1]), query)
            if len(route) == 5 and route[0] == "groups" and route[2:4] == ["members", "all"]:
                return self._get_member(self._group(route[1]), route[4])
        raise _HttpError(404, "404 Not Found")

    def _authenticate(self, request: Request) -> int | None:
        """The user id behind the request (None for a service token)."""
        private = request.headers.get("PRIVATE-TOKEN")
        if private is not None:
            if private in self.tokens:
                return None
            raise _HttpError(401, "401 Unauthorized")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth[len("Bearer ") :]
            with self._lock:
                if token in self.user_tokens:
                    return self.user_tokens[token]
                if token in self.tokens:
                    return None
        raise _HttpError(401, "401 Unauthorized")

    # -- resources -----------------------------------------------------------

    def _group(self, raw_id: str) -> FakeGroup:
        if not raw_id.isdigit() or int(raw_id) not in self.groups:
            raise _HttpError(404, "404 Group Not Found")
        return self.groups[int(raw_id)]

    def _group_json(self, group: FakeGroup) -> dict[str, Any]:
        full_path = self.full_path(group.id)
        full_name = " / ".join(self.groups[int(gid)].name for gid in self._ancestry(group.id))
        return {
            "id": group.id,
            "name": group.name,
            "path": group.path,
            "description": "",
            "visibility": "private",
            "share_with_group_lock": False,
            "require_two_factor_authentication": False,
            "two_factor_grace_period": 48,
            "project_creation_level": "developer",
            "auto_devops_enabled": None,
            "subgroup_creation_level": "owner",
            "emails_disabled": None,
            "emails_enabled": None,
            "mentions_disabled": None,
            "lfs_enabled": True,
            "default_branch": None,
            "avatar_url": None,
            "web_url": f"{WEB_URL}/groups/{full_path}",
            "request_access_enabled": False,
            "repository_storage": "default",
            "full_name": full_name,
            "full_path": full_path,
            "file_template_project_id": None,
            "parent_id": group.parent_id,
            "created_at": CREATED_AT,
            "ip_restriction_ranges": None,
        }

    def _ancestry(self, group_id: int) -> list[int]:
        chain: list[int] = []
        current: int | None = group_id
        while current is not None:
            chain.append(current)
            current = self.groups[current].parent_id
        return list(reversed(chain))

    def _namespace_json(self, raw_id: str) -> dict[str, Any]:
        if raw_id.isdigit() and int(raw_id) in self.groups:
            group = self.groups[int(raw_id)]
            full_path = self.full_path(group.id)
            count = len(self.members.get(group.id, {}))
            return {
                "id": group.id,
                "name": group.name,
                "path": group.path,
                "kind": "group",
                "full_path": full_path,
                "parent_id": group.parent_id,
                "avatar_url": None,
                "web_url": f"{WEB_URL}/groups/{full_path}",
                "members_count_with_descendants": count,
                "billable_members_count": count,
                "plan": "default",
                "trial_ends_on": None,
                "trial": False,
                "root_repository_size": 0,
            }
        if raw_id.isdigit() and int(raw_id) in self._user_namespaces:
            user = self.users[self._user_namespaces[int(raw_id)]]
            return {
                "id": int(raw_id),
                "name": user.name,
                "path": user.username,
                "kind": "user",
                "full_path": user.username,
                "parent_id": None,
                "avatar_url": None,
                "web_url": f"{WEB_URL}/{user.username}",
                "billable_members_count": 1,
                "plan": "default",
                "trial_ends_on": None,
                "trial": False,
            }
        raise _HttpError(404, "404 Namespace Not Found")

    def _member_json(self, membership: FakeMembership) -> dict[str, Any]:
        user = self.users[membership.user_id]
        return {
            "id": user.id,
            "username": user.username,
            "name": user.name,
            "state": membership.state,
            "membership_state": membership.state,
            "avatar_url": None,
            "web_url": f"{WEB_URL}/{user.username}",
            "created_at": CREATED_AT,
            "expires_at": membership.expires_at,
            "access_level": membership.access_level,
            "group_saml_identity": None,
        }

    def _ordered_members(self, group_id: int) -> list[FakeMembership]:
        ordered = self._ordered.get(group_id)
        if ordered is None:
            ordered = list(self.members.get(group_id, {}).values())
            self._ordered[group_id] = ordered
        return ordered

    def _list_members(self, request: Request, group: FakeGroup, query: dict[str, str]) -> Response:
        # members/all = direct plus inherited members, each user once with
        # the highest level. A root group has no ancestors: served straight
        # from the cached list.
        ancestry = self._ancestry(group.id)
        if len(ancestry) == 1:
            return self._paginate(
                request, query, self._ordered_members(group.id), self._member_json
            )
        best: dict[int, FakeMembership] = {}
        for gid in ancestry:
            for m in self._ordered_members(gid):
                held = best.get(m.user_id)
                if held is None or m.access_level > held.access_level:
                    best[m.user_id] = m
        return self._paginate(request, query, list(best.values()), self._member_json)

    def _get_member(self, group: FakeGroup, raw_user_id: str) -> Response:
        if raw_user_id.isdigit():
            for gid in reversed(self._ancestry(group.id)):
                membership = self.members.get(gid, {}).get(int(raw_user_id))
                if membership is not None:
                    return _json(self._member_json(membership))
        raise _HttpError(404, "404 Not found")

    def _user(self, raw_id: str) -> Response:
        if not raw_id.isdigit() or int(raw_id) not in self.users:
            raise _HttpError(404, "404 User Not Found")
        user = self.users[int(raw_id)]
        return _json({"id": user.id, "username": user.username, "name": user.name, "state": "active",
                      "locked": False, "avatar_url": None, "web_url": f"{WEB_URL}/{user.username}"})

    def _current_user(self, principal: int | None) -> Response:
        if principal is None:
            return _json(
                {
                    "id": 1,
                    "username": "orgsync-bot",
                    "name": "orgsync bot",
                    "state": "active",
                    "bot": True,
                }
            )
        user = self.users[principal]
        return _json(
            {
                "id": user.id,
                "username": user.username,
                "name": user.name,
                "state": "active",
                "locked": False,
                "avatar_url": None,
                "web_url": f"{WEB_URL}/{user.username}",
                "created_at": CREATED_AT,
                "bot": False,
            }
        )

    def _list_groups(
        self, request: Request, principal: int | None, query: dict[str, str]
    ) -> Response:
        top_level_only = query.get("top_level_only", "false").lower() in ("true", "1")
        min_level_raw = query.get("min_access_level")
        min_level = int(min_level_raw) if min_level_raw and min_level_raw.isdigit() else None
        today = time.strftime("%Y-%m-%d", time.gmtime())
        rows: list[FakeGroup] = []
        for group in sorted(self.groups.values(), key=lambda g: g.id):
            if top_level_only and group.parent_id is not None:
                continue
            if principal is not None:
                membership = self.members.get(group.id, {}).get(principal)
                if membership is None or membership.state != "active":
                    continue
                # GitLab does not list groups through an expired membership.
                if membership.expires_at and membership.expires_at[:10] <= today:
                    continue
                if min_level is not None and membership.access_level < min_level:
                    continue
            rows.append(group)
        return self._paginate(request, query, rows, self._group_json)

    def _paginate(
        self,
        request: Request,
        query: dict[str, str],
        rows: list[Any],
        render: Callable[[Any], dict[str, Any]],
    ) -> Response:
        page = _positive_int(query.get("page"), 1)
        per_page = min(_positive_int(query.get("per_page"), DEFAULT_PER_PAGE), MAX_PER_PAGE)
        total = len(rows)
        total_pages = max(1, -(-total // per_page))
        start = (page - 1) * per_page
        body = [render(row) for row in rows[start : start + per_page]]
        next_page = page + 1 if start + per_page < total else None
        prev_page = page - 1 if page > 1 else None

        def link(n: int) -> str:
            params = {**query, "page": str(n), "per_page": str(per_page)}
            return f"{request.base_url}?{urlencode(params)}"

        links = []
        if prev_page is not None:
            links.append(f'<{link(prev_page)}>; rel="prev"')
        if next_page is not None:
            links.append(f'<{link(next_page)}>; rel="next"')
        links.append(f'<{link(1)}>; rel="first"')
        headers = {
            "X-Page": str(page),
            "X-Per-Page": str(per_page),
            "X-Next-Page": "" if next_page is None else str(next_page),
            "X-Prev-Page": "" if prev_page is None else str(prev_page),
        }
        if total <= COUNT_LIMIT:
            links.append(f'<{link(total_pages)}>; rel="last"')
            headers["X-Total"] = str(total)
            headers["X-Total-Pages"] = str(total_pages)
        headers["Link"] = ", ".join(links)
        response = _json(body)
        response.headers.update(headers)
        return response


def _positive_int(raw: str | None, default: int) -> int:
    if raw is None or not raw.isdigit() or int(raw) < 1:
        return default
    return int(raw)


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")
