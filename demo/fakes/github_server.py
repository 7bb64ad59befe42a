"""An in-memory GitHub REST API for tests and benchmarks.

Serves the endpoints the GitHub adapter uses, shaped like GitHub's answers
(field names from the examples in the shared corpus, ``corpus/api/github.*``),
with GitHub's quirks that matter to a syncer: ``Link`` pagination with
absolute URLs, weak ETags and 304 answers to ``If-None-Match``, rate-limit
headers, pending memberships, renames, revoked installations.

Mount ``FakeGitHub().wsgi`` anywhere (``demo.fakes.server`` mounts it at
``/gh``); all URLs it emits are built from the request's root URL.

Sized for benchmarks: members live in dicts; each org keeps its sorted member
ids per role and its rendered pages, both dropped on any change.
"""
from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt
from werkzeug.wrappers import Request, Response

DOCS = "https://docs.github.com/rest"
RATE_LIMIT = 5000

Role = Literal["admin", "member"]
State = Literal["active", "pending"]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    method: str
    path: str  # relative to the mount point, e.g. /orgs/acme/members
    query: dict[str, str]
    status: int
    auth: str  # "installation:<id>", "user:<id>", "jwt", "anonymous", "invalid"


@dataclass(slots=True)
class _Membership:
    role: Role
    state: State


@dataclass(slots=True)
class _Org:
    org_id: int
    login: str
    name: str | None
    installation_id: int | None = None
    members: dict[int, _Membership] = field(default_factory=dict)
    # Derived, dropped on any change: sorted active member ids per role
    # filter ("all", "admin", "member"), and rendered pages.
    sorted_ids: dict[str, list[int]] = field(default_factory=dict)
    pages: dict[tuple[str, str, int, int], tuple[bytes, str]] = field(default_factory=dict)

    def changed(self) -> None:
        self.sorted_ids.clear()
        self.pages.clear()


@dataclass(slots=True)
class _Installation:
    installation_id: int
    org_id: int
    permissions: dict[str, str]
    revoked: bool = False
    suspended: bool = False


@dataclass(slots=True)
class _Fault:
    match: Callable[[str, str, dict[str, str]], bool]  # (method, path, query)
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    times: int | None  # None = until cleared


class _Answer(Exception):
    """Raised inside a handler to answer early (errors)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _etag(body: bytes) -> str:
    return f'W/"{hashlib.sha256(body).hexdigest()}"'


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    bare = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == bare:
            return True
    return False


def _node_id(kind: str, ident: int) -> str:
    return base64.b64encode(f"0{len(kind)}:{kind}{ident}".encode()).decode()


class FakeGitHub:
    """GitHub as the adapter sees it. Thread-safe (the test server is threaded)."""

    def __init__(
        self,
        *,
        app_id: str | int | None = None,
        app_public_key: str | bytes | None = None,
        token_ttl: timedelta = timedelta(hours=1),
        latency: float = 0.0,
        link_on_304: bool = True,
    ) -> None:
        # When app_public_key is set, app JWTs are verified (RS256, iss=app_id)
        # like GitHub does; otherwise any well-formed JWT is accepted.
        self.app_id = str(app_id) if app_id is not None else None
        self.app_public_key = app_public_key
        self.token_ttl = token_ttl
        self.latency = latency
        # GitHub need not repeat Link on a 304; turn this off to test callers
        # that must cope without it.
        self.link_on_304 = link_on_304
        self.requests: list[RequestRecord] = []
        self.rate_used = 0
        self._lock = threading.RLock()
        self._orgs: dict[int, _Org] = {}
        self._org_by_login: dict[str, int] = {}
        self._users: dict[int, str] = {}
        self._user_by_login: dict[str, int] = {}
        self._installations: dict[int, _Installation] = {}
        self._installation_tokens: dict[str, tuple[int, datetime]] = {}
        self._user_tokens: dict[str, int] = {}
        # Orgs with OAuth app access restrictions: user tokens do not see them.
        self.hidden_from_user_tokens: set[int] = set()
        self._faults: list[_Fault] = []
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Response]]] = [
            ("POST", re.compile(r"/app/installations/(?P<inst>\d+)/access_tokens"), self._h_access_token),
            ("GET", re.compile(r"/orgs/(?P<org>[^/]+)/installation"), self._h_org_installation),
            ("GET", re.compile(r"/app/installations"), self._h_installations),
            ("GET", re.compile(r"/organizations/(?P<org_id>\d+)"), self._h_org),
            ("GET", re.compile(r"/orgs/(?P<org>[^/]+)"), self._h_org),
            ("GET", re.compile(r"/organizations/(?P<org_id>\d+)/members"), self._h_members),
            ("GET", re.compile(r"/orgs/(?P<org>[^/]+)/members"), self._h_members),
            ("GET", re.compile(r"/orgs/(?P<org>[^/]+)/memberships/(?P<user>[^/]+)"), self._h_membership),
            ("GET", re.compile(r"/user"), self._h_me),
            ("GET", re.compile(r"/user/memberships/orgs"), self._h_my_memberships),
            ("GET", re.compile(r"/user/(?P<user_id>\d+)"), self._h_user),
            ("GET", re.compile(r"/users/(?P<user>[^/]+)"), self._h_user),
        ]

    # ------------------------------------------------------------ the model

    def add_org(
        self, org_id: int, login: str, installation_id: int | None = None, name: str | None = None
    ) -> None:
        with self._lock:
            if login.lower() in self._org_by_login and self._org_by_login[login.lower()] != org_id:
                raise ValueError(f"org login {login} taken")
            old = self._orgs.get(org_id)
            if old is not None:
                self._org_by_login.pop(old.login.lower(), None)
            org = old or _Org(org_id, login, name)
            org.login, org.name = login, name if name is not None else org.name
            self._orgs[org_id] = org
            self._org_by_login[login.lower()] = org_id
            if installation_id is not None:
                self.install(org_id, installation_id)
            org.changed()

    def install(
        self, org: int | str, installation_id: int, permissions: dict[str, str] | None = None
    ) -> None:
        with self._lock:
            o = self._org(org)
            old = self._installations.get(o.installation_id) if o.installation_id is not None else None
            if old is not None and old.installation_id != installation_id:
                # An app has one installation per account: a reinstall
                # replaces the old one, whose id then 404s.
                old.revoked = True
            o.installation_id = installation_id
            self._installations[installation_id] = _Installation(
                installation_id, o.org_id, permissions or {"members": "read", "metadata": "read"}
            )

    def revoke_installation(self, installation_id: int) -> None:
        """The app was uninstalled: the exchange 404s, issued tokens 401."""
        with self._lock:
            inst = self._installations[installation_id]
            inst.revoked = True
            org = self._orgs.get(inst.org_id)
            if org is not None and org.installation_id == installation_id:
                org.installation_id = None

    def suspend_installation(self, installation_id: int, suspended: bool = True) -> None:
        with self._lock:
            self._installations[installation_id].suspended = suspended

    def expire_tokens(self) -> None:
        """Invalidate every issued installation token (as if an hour passed)."""
        with self._lock:
            self._installation_tokens.clear()

    def rename_org(self, org: int | str, new_login: str) -> None:
        with self._lock:
            o = self._org(org)
            self._org_by_login.pop(o.login.lower(), None)
            o.login = new_login
            self._org_by_login[new_login.lower()] = o.org_id
            o.changed()

    def delete_org(self, org: int | str) -> None:
        with self._lock:
            o = self._org(org)
            self._org_by_login.pop(o.login.lower(), None)
            del self._orgs[o.org_id]

    def add_user(self, user_id: int, login: str) -> None:
        with self._lock:
            holder = self._user_by_login.get(login.lower())
            if holder is not None and holder != user_id:
                raise ValueError(f"login {login} belongs to user {holder}")
            old = self._users.get(user_id)
            if old is not None and old != login:
                self._rename(user_id, old, login)
            else:
                self._users[user_id] = login
                self._user_by_login[login.lower()] = user_id

    def rename_user(self, user_id: int, new_login: str) -> None:
        with self._lock:
            old = self._users[user_id]
            if new_login.lower() in self._user_by_login and self._user_by_login[new_login.lower()] != user_id:
                raise ValueError(f"login {new_login} taken")
            self._rename(user_id, old, new_login)

    def _rename(self, user_id: int, old: str, new: str) -> None:
        self._user_by_login.pop(old.lower(), None)
        self._users[user_id] = new
        self._user_by_login[new.lower()] = user_id
        for org in self._orgs.values():
            if user_id in org.members:
                org.changed()

    def delete_user(self, user_id: int) -> None:
        with self._lock:
            login = self._users.pop(user_id)
            self._user_by_login.pop(login.lower(), None)
            for org in self._orgs.values():
                if org.members.pop(user_id, None) is not None:
                    org.changed()

    def add_member(
        self,
        org: int | str,
        user_id: int,
        login: str,
        role: Role = "member",
        state: State = "active",
    ) -> None:
        with self._lock:
            o = self._org(org)
            self.add_user(user_id, login)
            o.members[user_id] = _Membership(role, state)
            o.changed()

    def add_members(self, org: int | str, members: Iterable[tuple[int, str, Role]]) -> None:
        """Bulk add (user_id, login, role), active; for large benchmark orgs."""
        with self._lock:
            o = self._org(org)
            for user_id, login, role in members:
                self._users[user_id] = login
                self._user_by_login[login.lower()] = user_id
                o.members[user_id] = _Membership(role, "active")
            o.changed()

    def remove_member(self, org: int | str, user_id: int) -> None:
        with self._lock:
            o = self._org(org)
            del o.members[user_id]
            o.changed()

    def set_role(self, org: int | str, user_id: int, role: Role) -> None:
        with self._lock:
            o = self._org(org)
            o.members[user_id].role = role
            o.changed()

    def set_state(self, org: int | str, user_id: int, state: State) -> None:
        with self._lock:
            o = self._org(org)
            o.members[user_id].state = state
            o.changed()

    def add_user_token(self, token: str, user_id: int, login: str) -> None:
        with self._lock:
            self.add_user(user_id, login)
            self._user_tokens[token] = user_id

    def revoke_user_token(self, token: str) -> None:
        with self._lock:
            self._user_tokens.pop(token, None)

    def members_of(self, org: int | str) -> dict[int, tuple[str, str, str]]:
        """{user_id: (login, role, state)} — for assertions."""
        with self._lock:
            o = self._org(org)
            return {uid: (self._users[uid], m.role, m.state) for uid, m in o.members.items()}

    def _org(self, ref: int | str) -> _Org:
        if isinstance(ref, int):
            return self._orgs[ref]
        return self._orgs[self._org_by_login[ref.lower()]]

    # ------------------------------------------------------ fault injection

    def fail(
        self,
        path_contains: str,
        status: int = 500,
        *,
        times: int | None = 1,
        message: str = "Server Error",
        headers: dict[str, str] | None = None,
        method: str | None = None,
    ) -> None:
        """The next ``times`` requests whose path contains ``path_contains`` fail."""

        def match(m: str, path: str, query: dict[str, str]) -> bool:
            return path_contains in path and (method is None or m == method)

        self._add_fault(match, status, message, headers, times)

    def fail_page(
        self, path_or_role: str, page: int, status: int = 500, *, times: int | None = 1
    ) -> None:
        """Fail one roster page: ``path_or_role`` is a role ("admin", "member")
        or a path fragment; pages count from 1."""

        def match(m: str, path: str, query: dict[str, str]) -> bool:
            hit = query.get("role") == path_or_role or (
                path_or_role not in ("admin", "member", "all") and path_or_role in path
            )
            return hit and int(query.get("page") or 1) == page

        self._add_fault(match, status, "Server Error", None, times)

    def rate_limit(
        self,
        kind: Literal["primary", "secondary"] = "primary",
        *,
        reset: int | None = None,
        retry_after: int | None = None,
        status: int = 403,
        times: int | None = 1,
        path_contains: str = "",
    ) -> None:
        """Answer the next ``times`` requests with a rate-limit error.

        primary: ``X-RateLimit-Remaining: 0`` and ``X-RateLimit-Reset: reset``
        (epoch seconds, default now + 1 h). secondary: GitHub's message, with
        ``Retry-After`` only when ``retry_after`` is given.
        """
        headers: dict[str, str]
        if kind == "primary":
            reset_at = reset if reset is not None else int(time.time()) + 3600
            headers = {
                "X-RateLimit-Limit": str(RATE_LIMIT),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Used": str(RATE_LIMIT),
                "X-RateLimit-Reset": str(reset_at),
            }
            message = "API rate limit exceeded for installation. Please wait and try again."
        else:
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            message = (
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
            )

        def match(m: str, path: str, query: dict[str, str]) -> bool:
            return path_contains in path

        self._add_fault(match, status, message, headers, times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add_fault(
        self,
        match: Callable[[str, str, dict[str, str]], bool],
        status: int,
        message: str,
        headers: dict[str, str] | None,
        times: int | None,
    ) -> None:
        body = {"message": message, "documentation_url": DOCS, "status": str(status)}
        with self._lock:
            self._faults.append(_Fault(match, status, body, dict(headers or {}), times))

    # --------------------------------------------------------- observability

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def count(self, path_contains: str = "", *, status: int | None = None, method: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for r in self.requests
                if path_contains in r.path
                and (status is None or r.status == status)
                and (method is None or r.method == method)
            )

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    # ------------------------------------------------------------------ WSGI

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        response, auth = self._dispatch(request)
        with self._lock:
            self.requests.append(
                RequestRecord(
                    request.method,
                    request.path,
                    {k: v for k, v in request.args.items()},
                    response.status_code,
                    auth,
                )
            )
        return response(environ, start_response)

    __call__ = wsgi

    def _dispatch(self, request: Request) -> tuple[Response, str]:
        if self.latency > 0:
            time.sleep(self.latency)
        path = request.path.rstrip("/") or "/"
        query = {k: v for k, v in request.args.items()}
        auth = "anonymous"
        try:
            with self._lock:
                for fault in self._faults:
                    if fault.match(request.method, path, query):
                        if fault.times is not None:
                            fault.times -= 1
                            if fault.times <= 0:
                                self._faults.remove(fault)
                        return self._json(fault.body, fault.status, fault.headers), auth
            for method, pattern, handler in self._routes:
                m = pattern.fullmatch(path)
                if m is None:
                    continue
                if method != request.method:
                    raise _Answer(404, "Not Found")
                auth, principal = self._authenticate(request)
                response = handler(request, principal, **m.groupdict())
                return response, auth
            raise _Answer(404, "Not Found")
        except _Answer as answer:
            return self._json(
                {"message": answer.message, "documentation_url": DOCS, "status": str(answer.status)},
                answer.status,
                answer.headers,
            ), auth

    def _authenticate(self, request: Request) -> tuple[str, tuple[str, Any]]:
        header = request.headers.get("Authorization", "")
        if not header:
            return "anonymous", ("anonymous", None)
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() not in ("token", "bearer") or not credential:
            raise _Answer(401, "Bad credentials")
        with self._lock:
            installation = self._installation_tokens.get(credential)
            if installation is not None:
                inst_id, expires_at = installation
                inst = self._installations[inst_id]
                if inst.revoked or expires_at <= datetime.now(UTC):
                    raise _Answer(401, "Bad credentials")
                if inst.suspended:
                    raise _Answer(403, "This installation has been suspended")
                return f"installation:{inst_id}", ("installation", inst_id)
            user_id = self._user_tokens.get(credential)
            if user_id is not None:
                if user_id not in self._users:
                    raise _Answer(401, "Bad credentials")
                return f"user:{user_id}", ("user", user_id)
        if credential.count(".") == 2:
            return "jwt", ("jwt", self._verify_jwt(credential))
        raise _Answer(401, "Bad credentials")

    def _verify_jwt(self, token: str) -> dict[str, Any]:
        try:
            if self.app_public_key is not None:
                claims = jwt.decode(
                    token,
                    self.app_public_key,
                    algorithms=["RS256"],
                    options={"require": ["iat", "exp", "iss"]},
                    leeway=60,
                )
            else:
                claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.ExpiredSignatureError as exc:
            raise _Answer(401, "'Expiration time' claim ('exp') is too far in the future") from exc
        except jwt.PyJWTError as exc:
            raise _Answer(401, "A JSON web token could not be decoded") from exc
        if self.app_id is not None and str(claims.get("iss")) != self.app_id:
            raise _Answer(401, "Integration not found")
        return dict(claims)

    # -------------------------------------------------------------- handlers

    def _h_access_token(self, request: Request, principal: tuple[str, Any], inst: str) -> Response:
        if principal[0] != "jwt":
            raise _Answer(401, "A JSON web token could not be decoded")
        body = request.get_json(silent=True) or {}
        with self._lock:
            installation = self._installations.get(int(inst))
            if installation is None or installation.revoked:
                raise _Answer(404, "Not Found")
            if installation.suspended:
                raise _Answer(403, "This installation has been suspended")
            wanted = body.get("permissions") or {}
            granted = installation.permissions
            if any(granted.get(k) not in (v, "write") for k, v in wanted.items()):
                raise _Answer(422, "The permissions requested are not granted to this installation.")
            token = "ghs_" + secrets.token_urlsafe(27)
            expires_at = datetime.now(UTC) + self.token_ttl
            self._installation_tokens[token] = (installation.installation_id, expires_at)
        return self._json(
            {
                "token": token,
                "expires_at": expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "permissions": wanted or granted,
                "repository_selection": "all",
            },
            201,
        )

    def _h_org_installation(self, request: Request, principal: tuple[str, Any], org: str) -> Response:
        if principal[0] != "jwt":
            raise _Answer(401, "A JSON web token could not be decoded")
        with self._lock:
            o = self._find_org(org)
            if o is None or o.installation_id is None:
                raise _Answer(404, "Not Found")
            inst = self._installations[o.installation_id]
            return self._json(self._installation_json(request.root_url.rstrip("/"), inst, o))

    def _h_installations(self, request: Request, principal: tuple[str, Any]) -> Response:
        """``GET /app/installations``: every live installation, oldest first,
        paginated with Link, weak ETag per page, 304 to If-None-Match."""
        if principal[0] != "jwt":
            raise _Answer(401, "A JSON web token could not be decoded")
        per_page, page = self._paging(request)
        root = request.root_url.rstrip("/")
        with self._lock:
            live = [
                (inst, self._orgs[inst.org_id])
                for inst in sorted(self._installations.values(), key=lambda i: i.installation_id)
                if not inst.revoked and inst.org_id in self._orgs
            ]
            total = len(live)
            chunk = live[(page - 1) * per_page : page * per_page]
            body = json.dumps([self._installation_json(root, inst, o) for inst, o in chunk]).encode()
        etag = _etag(body)
        link = self._link(f"{root}/app/installations", {}, per_page, page, total)
        headers = {"ETag": etag}
        if link:
            headers["Link"] = link
        if _etag_matches(request.headers.get("If-None-Match"), etag):
            return self._response(b"", 304, headers, count_rate=False)
        return self._response(body, 200, headers)

    def _installation_json(self, root: str, inst: _Installation, o: _Org) -> dict[str, Any]:
        return {
            "id": inst.installation_id,
            "account": self._org_simple_user(root, o),
            "repository_selection": "all",
            "access_tokens_url": f"{root}/app/installations/{inst.installation_id}/access_tokens",
            "repositories_url": f"{root}/installation/repositories",
            "html_url": f"https://github.com/organizations/{o.login}/settings/installations/{inst.installation_id}",
            "app_id": int(self.app_id) if self.app_id and self.app_id.isdigit() else 1,
            "app_slug": "orgsync",
            "target_id": o.org_id,
            "target_type": "Organization",
            "permissions": inst.permissions,
            "events": ["organization"],
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
            "single_file_name": None,
            "has_multiple_single_files": False,
            "single_file_paths": [],
            "suspended_by": None,
            "suspended_at": "2024-01-02T00:00:00Z" if inst.suspended else None,
        }

    def _h_org(
        self, request: Request, principal: tuple[str, Any], org: str | None = None, org_id: str | None = None
    ) -> Response:
        with self._lock:
            o = self._find_org(org if org is not None else int(org_id or 0))
            if o is None:
                raise _Answer(404, "Not Found")
            root = request.root_url.rstrip("/")
            data = self._org_simple(root, o)
            members = len([m for m in o.members.values() if m.state == "active"])
            data.update(
                {
                    "name": o.name,
                    "company": None,
                    "blog": None,
                    "location": None,
                    "email": None,
                    "twitter_username": None,
                    "is_verified": False,
                    "has_organization_projects": True,
                    "has_repository_projects": True,
                    "public_repos": 0,
                    "public_gists": 0,
                    "followers": 0,
                    "following": 0,
                    "html_url": f"https://github.com/{o.login}",
                    "created_at": "2020-01-01T00:00:00Z",
                    "updated_at": "2024-01-01T00:00:00Z",
                    "archived_at": None,
                    "type": "Organization",
                    "collaborators": members,
                }
            )
            return self._json(data)

    def _h_members(
        self, request: Request, principal: tuple[str, Any], org: str | None = None, org_id: str | None = None
    ) -> Response:
        role = request.args.get("role", "all")
        if role not in ("all", "admin", "member"):
            raise _Answer(422, "Validation Failed")
        per_page, page = self._paging(request)
        root = request.root_url.rstrip("/")
        with self._lock:
            o = self._find_org(org if org is not None else int(org_id or 0))
            if o is None:
                raise _Answer(404, "Not Found")
            self._require_org_reader(principal, o)
            ids = o.sorted_ids.get(role)
            if ids is None:
                ids = sorted(
                    uid
                    for uid, m in o.members.items()
                    if m.state == "active" and (role == "all" or m.role == role)
                )
                o.sorted_ids[role] = ids
            key = (root, role, per_page, page)
            cached = o.pages.get(key)
            if cached is None:
                chunk = ids[(page - 1) * per_page : page * per_page]
                body = json.dumps([self._simple_user(root, uid, self._users[uid]) for uid in chunk]).encode()
                cached = (body, _etag(body))
                o.pages[key] = cached
            total = len(ids)
            org_id_value = o.org_id
        body, etag = cached
        link = self._link(
            f"{root}/organizations/{org_id_value}/members", {"role": role}, per_page, page, total
        )
        headers = {"ETag": etag, "Cache-Control": "private, max-age=60, s-maxage=60", "Vary": "Accept, Authorization"}
        if _etag_matches(request.headers.get("If-None-Match"), etag):
            if link and self.link_on_304:
                headers["Link"] = link
            # A 304 costs no rate limit on GitHub.
            return self._response(b"", 304, headers, count_rate=False)
        if link:
            headers["Link"] = link
        return self._response(body, 200, headers)

    def _h_membership(self, request: Request, principal: tuple[str, Any], org: str, user: str) -> Response:
        root = request.root_url.rstrip("/")
        with self._lock:
            o = self._find_org(org)
            if o is None:
                raise _Answer(404, "Not Found")
            self._require_org_reader(principal, o)
            user_id = self._user_by_login.get(urllib.parse.unquote(user).lower())
            membership = o.members.get(user_id) if user_id is not None else None
            if user_id is None or membership is None:
                raise _Answer(404, "Not Found")
            return self._json(self._membership(root, o, user_id, membership))

    def _h_me(self, request: Request, principal: tuple[str, Any]) -> Response:
        if principal[0] != "user":
            raise _Answer(401, "Requires authentication")
        with self._lock:
            user_id = principal[1]
            data = self._simple_user(request.root_url.rstrip("/"), user_id, self._users[user_id])
        data.update({"name": None, "company": None, "email": None, "created_at": "2020-01-01T00:00:00Z"})
        return self._json(data)

    def _h_my_memberships(self, request: Request, principal: tuple[str, Any]) -> Response:
        if principal[0] != "user":
            raise _Answer(401, "Requires authentication")
        state = request.args.get("state")
        if state not in (None, "active", "pending"):
            raise _Answer(422, "Validation Failed")
        per_page, page = self._paging(request)
        root = request.root_url.rstrip("/")
        user_id = principal[1]
        with self._lock:
            items = [
                (o, o.members[user_id])
                for o in sorted(self._orgs.values(), key=lambda o: o.org_id)
                if user_id in o.members and (state is None or o.members[user_id].state == state)
                and o.org_id not in self.hidden_from_user_tokens
            ]
            total = len(items)
            chunk = items[(page - 1) * per_page : page * per_page]
            data = [self._membership(root, o, user_id, m) for o, m in chunk]
        params = {"state": state} if state else {}
        link = self._link(f"{root}/user/memberships/orgs", params, per_page, page, total)
        return self._json(data, headers={"Link": link} if link else None)

    def _h_user(
        self, request: Request, principal: tuple[str, Any], user: str | None = None, user_id: str | None = None
    ) -> Response:
        with self._lock:
            if user_id is not None:
                uid: int | None = int(user_id)
            else:
                uid = self._user_by_login.get(urllib.parse.unquote(user or "").lower())
            if uid is None or uid not in self._users:
                raise _Answer(404, "Not Found")
            data = self._simple_user(request.root_url.rstrip("/"), uid, self._users[uid])
        data.update({"name": None, "company": None, "created_at": "2020-01-01T00:00:00Z"})
        return self._json(data)

    # --------------------------------------------------------------- helpers

    def _find_org(self, ref: int | str) -> _Org | None:
        if isinstance(ref, int):
            return self._orgs.get(ref)
        org_id = self._org_by_login.get(urllib.parse.unquote(ref).lower())
        return self._orgs.get(org_id) if org_id is not None else None

    def _require_org_reader(self, principal: tuple[str, Any], org: _Org) -> None:
        kind, ident = principal
        if kind == "installation":
            if org.installation_id != ident:
                raise _Answer(403, "Resource not accessible by integration")
            return
        if kind == "user":
            m = org.members.get(ident)
            if m is None or m.state != "active":
                raise _Answer(403, "Must be an organization member")
            return
        raise _Answer(401, "Requires authentication")

    @staticmethod
    def _paging(request: Request) -> tuple[int, int]:
        try:
            per_page = int(request.args.get("per_page", 30))
            page = int(request.args.get("page", 1))
        except ValueError:
            raise _Answer(422, "Validation Failed") from None
        return max(1, min(per_page, 100)), max(1, page)

    @staticmethod
    def _link(base: str, params: dict[str, str], per_page: int, page: int, total: int) -> str:
        last = max(1, -(-total // per_page))

        def url(n: int) -> str:
            return f"{base}?{urllib.parse.urlencode({**params, 'per_page': per_page, 'page': n})}"

        parts = []
        if page > 1:
            parts.append(f'<{url(page - 1)}>; rel="prev"')
        if page < last:
            parts.append(f'<{url(page + 1)}>; rel="next"')
            parts.append(f'<{url(last)}>; rel="last"')
        if page > 1:
            parts.append(f'<{url(1)}>; rel="first"')
        return ", ".join(parts)

    @staticmethod
    def _simple_user(root: str, user_id: int, login: str, kind: str = "User") -> dict[str, Any]:
        api = f"{root}/users/{login}"
        return {
            "login": login,
            "id": user_id,
            "node_id": _node_id(kind, user_id),
            "avatar_url": f"https://avatars.githubusercontent.com/u/{user_id}?v=4",
            "gravatar_id": "",
            "url": api,
            "html_url": f"https://github.com/{login}",
            "followers_url": f"{api}/followers",
            "following_url": f"{api}/following{{/other_user}}",
            "gists_url": f"{api}/gists{{/gist_id}}",
            "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{api}/subscriptions",
            "organizations_url": f"{api}/orgs",
            "repos_url": f"{api}/repos",
            "events_url": f"{api}/events{{/privacy}}",
            "received_events_url": f"{api}/received_events",
            "type": kind,
            "site_admin": False,
        }

    def _org_simple_user(self, root: str, org: _Org) -> dict[str, Any]:
        return self._simple_user(root, org.org_id, org.login, kind="Organization")

    @staticmethod
    def _org_simple(root: str, org: _Org) -> dict[str, Any]:
        api = f"{root}/orgs/{org.login}"
        return {
            "login": org.login,
            "id": org.org_id,
            "node_id": _node_id("Organization", org.org_id),
            "url": api,
            "repos_url": f"{api}/repos",
            "events_url": f"{api}/events",
            "hooks_url": f"{api}/hooks",
            "issues_url": f"{api}/issues",
            "members_url": f"{api}/members{{/member}}",
            "public_members_url": f"{api}/public_members{{/member}}",
            "avatar_url": f"https://avatars.githubusercontent.com/u/{org.org_id}?v=4",
            "description": None,
        }

    def _membership(self, root: str, org: _Org, user_id: int, m: _Membership) -> dict[str, Any]:
        login = self._users[user_id]
        return {
            "url": f"{root}/orgs/{org.login}/memberships/{login}",
            "state": m.state,
            "role": m.role,
            "organization_url": f"{root}/orgs/{org.login}",
            "direct_membership": True,
            "enterprise_teams_providing_indirect_membership": [],
            "organization": self._org_simple(root, org),
            "user": self._simple_user(root, user_id, login),
        }

    def _json(
        self, data: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        return self._response(json.dumps(data).encode(), status, headers or {})

    _request_ids = itertools.count(1)

    def _response(
        self, body: bytes, status: int, headers: dict[str, str], *, count_rate: bool = True
    ) -> Response:
        with self._lock:
            if count_rate:
                self.rate_used += 1
            used = self.rate_used
        base = {
            "X-RateLimit-Limit": str(RATE_LIMIT),
            # Never 0 here: an exhausted limit is injected with rate_limit(), so
            # a long benchmark does not turn every answer into a primary limit.
            "X-RateLimit-Remaining": str(max(1, RATE_LIMIT - used)),
            "X-RateLimit-Used": str(used),
            "X-RateLimit-Reset": str(int(time.time()) + 3600),
            "X-RateLimit-Resource": "core",
            "X-GitHub-Api-Version-Selected": "2022-11-28",
            "X-GitHub-Request-Id": f"FAKE:{next(self._request_ids):08X}",
        }
        base.update(headers)
        return Response(
            body if status != 304 else b"",
            status=status,
            headers=base,
            content_type="application/json; charset=utf-8" if status != 304 else None,
        )
