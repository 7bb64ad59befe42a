"""An in-memory ``Provider`` (sync/providers/base.py) for the fast unit tier.

``FakeProvider`` holds orgs, members, user accounts, app installations and
OAuth tokens in dicts and answers the Protocol's methods with the *net*
semantics of the real adapters (sync/providers/github.py and gitlab.py):

- identity is the numeric id: the adapters re-resolve stale logins by id
  before answering "not a member", so the fake answers by id and ignores the
  ``login`` label it is given (it records it);
- ``get_org`` raises ``NotFound`` for an org that is gone; ``get_member``
  returns ``None`` for a non-member or a deleted account (GitHub raises
  ``NotFound`` when the org itself is gone), and a member with ``role=None``
  for a membership that gives no access (GitHub pending invitation, GitLab
  minimal access); ``get_user`` returns ``None`` for a deleted account;
- rosters are paged by offset, ``per_page`` to a page, the listing read
  again for each page (a change mid-walk shifts the later pages). GitHub:
  admins, then members (``?role=admin`` / ``?role=member``), at least one
  (maybe empty) page per role; billing managers and pending invitations are
  never listed. GitLab: ``members/all``, at least one page, members without
  access (``role=None``) listed;
- GitHub reads of an org's members need the org's live, unsuspended app
  installation (``org.installation_id``): otherwise ``AuthBroken``, as when
  the token exchange is refused (``get_org`` reads the public profile and
  needs none: an uninstalled org's sync breaks at its roster, not its org
  read, with the same outcome);
- GitHub listings are conditional when given a cache: a page whose content
  is unchanged is answered "304" (``not_modified`` += 1) from the cache; GitLab
  has no ETags (cache ignored, ``not_modified`` stays 0);
- ``get_org_installation``: GitHub answers the org's installation by org id
  (``None`` when not installed or the org is gone); GitLab raises
  ``ProviderError``. ``list_installations``: every installation, user
  accounts included (``account_type="User"``); GitLab ``[]`` with no request;
- ``api_calls`` counts one request per call and one per listing page (a
  failed request included); token exchanges and the adapters' extra
  re-resolution reads are not modelled.

Scripting: ``add_org`` / ``rename_org`` / ``delete_org``, ``add_member`` /
``set_role`` / ``remove_member`` / ``hide_from_listing``, ``add_user`` /
``rename_user`` / ``delete_user``, ``install`` / ``uninstall`` /
``set_suspended``, ``add_token``; ``fail(method, error, page=, times=, after=)``
queues one-shot failures (``RateLimited``, ``TransientProviderError``, ...);
``calls`` records every Protocol call in order (``calls_to(method)``).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Generic, Literal, TypeVar

from sync.errors import AuthBroken, InvalidUserToken, NotFound, ProviderError
from sync.events import Enqueuer
from sync.providers.base import (
    CachedInstallations,
    CachedPage,
    InstallationCache,
    PageCache,
    Provider,
    ProviderInstallation,
    ProviderMember,
    ProviderName,
    ProviderOrg,
    ProviderUser,
    RosterPage,
    TokenOrg,
)
from sync.roles import AccessRole

_Page = TypeVar("_Page", CachedPage, CachedInstallations)

Method = Literal[
    "get_org", "iter_roster", "get_member", "get_user", "get_org_installation",
    "list_installations", "get_token_user", "iter_token_orgs",
]


@dataclass(frozen=True, slots=True)
class Call:
    """One Protocol call as the fake received it."""

    method: Method
    args: tuple[object, ...]


@dataclass(slots=True)
class _Failure:
    error: Exception
    page: int  # listings: raised when this page is requested; 1 for the others
    times: int | None  # None: every time
    after: int  # matching requests let through first


@dataclass(slots=True)
class _Org:
    login: str
    name: str | None
    members: dict[int, AccessRole | None] = field(default_factory=dict)
    hidden: set[int] = field(default_factory=set)  # left out of listings only


class FakeProvider:
    """A scriptable in-memory provider; see the module docstring."""

    def __init__(self, name: ProviderName = "github", *, per_page: int = 100) -> None:
        self.name: ProviderName = name
        # As the adapters: GitHub's member listings never show billing managers.
        self.unlisted_roles: frozenset[str] = frozenset({"billing"}) if name == "github" else frozenset()
        self.api_calls = 0
        self.not_modified = 0
        self.per_page = per_page
        self.calls: list[Call] = []
        self._orgs: dict[int, _Org] = {}
        self._users: dict[int, str] = {}
        self._installations: dict[int, ProviderInstallation] = {}
        self._tokens: dict[str, int] = {}
        self._failures: dict[Method, list[_Failure]] = {}

    # ------------------------------------------------------------- scripting

    def add_org(self, org_id: int, login: str, *, name: str | None = None,
                installation_id: int | None = None) -> None:
        self._orgs[org_id] = _Org(login, name)
        if installation_id is not None:
            self.install(installation_id, org_id, login)

    def rename_org(self, org_id: int, login: str) -> None:
        self._orgs[org_id].login = login
        for inst in list(self._installations.values()):
            if inst.account_id == org_id:
                self._installations[inst.installation_id] = replace(inst, account_login=login)

    def delete_org(self, org_id: int) -> None:
        """The org is gone, and with it the app's installation on it."""
        del self._orgs[org_id]
        for inst in list(self._installations.values()):
            if inst.account_id == org_id:
                del self._installations[inst.installation_id]

    def add_user(self, uid: int, login: str) -> None:
        self._users[uid] = login

    def rename_user(self, uid: int, login: str) -> None:
        self._users[uid] = login

    def delete_user(self, uid: int) -> None:
        """The account is deleted: a member of nothing any more."""
        del self._users[uid]
        for org in self._orgs.values():
            org.members.pop(uid, None)

    def add_member(self, org_id: int, uid: int, login: str | None = None,
                   role: AccessRole | None = "member") -> None:
        """``role=None``: a membership without access (pending / minimal).
        ``login`` names (or renames) the account; default ``user<uid>``."""
        self._users[uid] = login or self._users.get(uid, f"user{uid}")
        self._orgs[org_id].members[uid] = role

    def add_members(self, org_id: int, uids: range, role: AccessRole = "member") -> None:
        for uid in uids:
            self.add_member(org_id, uid, role=role)

    def set_role(self, org_id: int, uid: int, role: AccessRole | None) -> None:
        members = self._orgs[org_id].members
        if uid not in members:
            raise KeyError(f"user {uid} is not a member of org {org_id}")
        members[uid] = role

    def remove_member(self, org_id: int, uid: int) -> None:
        del self._orgs[org_id].members[uid]

    def hide_from_listing(self, org_id: int, uid: int) -> None:
        """Leave a member out of roster listings while a membership read
        still finds them (a member falling between two offset pages)."""
        self._orgs[org_id].hidden.add(uid)

    def install(self, installation_id: int, account_id: int, account_login: str, *,
                account_type: str = "Organization", suspended: bool = False) -> None:
        self._installations[installation_id] = ProviderInstallation(
            installation_id, account_id, account_login, account_type, suspended)

    def uninstall(self, installation_id: int) -> None:
        del self._installations[installation_id]

    def set_suspended(self, installation_id: int, suspended: bool = True) -> None:
        inst = self._installations[installation_id]
        self._installations[installation_id] = replace(inst, suspended=suspended)

    def add_token(self, token: str, uid: int) -> None:
        """An OAuth token of user ``uid`` (who must have an account)."""
        self._tokens[token] = uid

    def fail(self, method: Method, error: Exception, *, page: int = 1, times: int | None = 1,
             after: int = 0) -> None:
        """The next ``times`` calls of ``method`` raise ``error``, once
        ``after`` calls went through (listings: when page ``page`` of a walk
        is requested, after the earlier pages were yielded); ``times=None``:
        every call. Queued failures fire in order."""
        self._failures.setdefault(method, []).append(_Failure(error, page, times, after))

    def calls_to(self, method: Method) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    # ------------------------------------------------------------- Protocol

    def get_org(self, org_id: int) -> ProviderOrg:
        self._request("get_org", org_id)
        org = self._org(org_id)
        return ProviderOrg(self.name, org_id, org.login, org.name)

    def iter_roster(self, org: ProviderOrg, cache: PageCache | None = None) -> Iterator[RosterPage]:
        self._record("iter_roster", org, cache)
        if self.name == "gitlab":
            yield from self._pages(f"fake://gitlab/groups/{org.org_id}/members/all",
                                   partial(self._listing, org, None), None, 0)
            return
        pages = 0
        for role in ("admin", "member"):
            pages += yield from self._pages(f"fake://github/orgs/{org.login}/members?role={role}",
                                            partial(self._listing, org, role), cache, pages)

    def get_member(self, org: ProviderOrg, provider_user_id: int, login: str | None) -> ProviderMember | None:
        self._request("get_member", org, provider_user_id, login)
        uid = int(provider_user_id)
        if self.name == "github":
            self._check_installation(org)
        if uid not in self._users:
            return None  # account deleted: a member of nothing
        if self.name == "gitlab":
            found = self._orgs.get(org.org_id)
            return self._member(uid, found.members[uid]) if found and uid in found.members else None
        current = self._org(org.org_id)  # GitHub: an org that is gone is not "not a member"
        return self._member(uid, current.members[uid]) if uid in current.members else None

    def get_user(self, provider_user_id: int) -> ProviderUser | None:
        self._request("get_user", provider_user_id)
        login = self._users.get(int(provider_user_id))
        return ProviderUser(int(provider_user_id), login) if login is not None else None

    def get_org_installation(self, org: ProviderOrg) -> ProviderInstallation | None:
        if self.name == "gitlab":
            self._record("get_org_installation", org)
            raise ProviderError("GitLab groups have no app installation")
        self._request("get_org_installation", org)
        if org.org_id not in self._orgs:
            return None
        return next((i for i in self._installations.values() if i.account_id == org.org_id), None)

    def list_installations(self, cache: InstallationCache | None = None) -> list[ProviderInstallation]:
        self._record("list_installations", cache)
        if self.name == "gitlab":
            return []
        everything = sorted(self._installations.values(), key=lambda i: i.installation_id)
        out: list[ProviderInstallation] = []
        number = 1
        while True:
            self._fire("list_installations", number)
            self.api_calls += 1
            url = f"fake://github/app/installations?page={number}"
            page = everything[(number - 1) * self.per_page: number * self.per_page]
            etag = _etag(page)
            cached = cache.get(url) if cache is not None else None
            if cached is not None and cached.etag == etag:
                self.not_modified += 1
                page = list(cached.installations)
            elif cache is not None:
                cache.put(url, CachedInstallations(etag, page))
            out.extend(page)
            if number * self.per_page >= len(everything):
                return out
            number += 1

    def get_token_user(self, access_token: str) -> ProviderUser:
        self._request("get_token_user", "<token>")
        uid = self._tokens.get(access_token)
        if uid is None or uid not in self._users:
            raise InvalidUserToken(f"{self.name} rejected the token")
        return ProviderUser(uid, self._users[uid])

    def iter_token_orgs(self, access_token: str) -> Iterator[TokenOrg]:
        self._request("iter_token_orgs", "<token>")
        uid = self._tokens.get(access_token)
        if uid is None or uid not in self._users:
            raise InvalidUserToken(f"{self.name} rejected the token")
        for org_id, org in sorted(self._orgs.items()):
            role = org.members.get(uid)
            if role is not None:  # active memberships (GitHub) / Guest and up (GitLab)
                yield TokenOrg(ProviderOrg(self.name, org_id, org.login, org.name), role)

    # ------------------------------------------------------------- helpers

    def _record(self, method: Method, *args: object) -> None:
        self.calls.append(Call(method, args))

    def _request(self, method: Method, *args: object) -> None:
        """Record a one-request call, count it, then raise a queued failure."""
        self._record(method, *args)
        self._fire(method, 1)
        self.api_calls += 1

    def _fire(self, method: Method, page: int) -> None:
        queued = self._failures.get(method, [])
        for failure in queued:
            if failure.page == page:
                if failure.after > 0:
                    failure.after -= 1
                    continue
                if failure.times is not None:
                    failure.times -= 1
                    if failure.times <= 0:
                        queued.remove(failure)
                self.api_calls += 1  # the failed request was sent
                raise failure.error

    def _pages(self, url: str, listing: Callable[[], list[ProviderMember]], cache: PageCache | None,
               before: int) -> Generator[RosterPage, None, int]:
        """Yield a listing a page at a time (offset paging: the listing is read
        again for each page, so a change mid-walk shifts later pages, as on
        the real providers); returns how many pages were read. ``before``:
        pages this walk read already (for ``fail(page=...)``)."""
        number = 0
        while True:
            number += 1
            self._fire("iter_roster", before + number)
            self.api_calls += 1
            members = listing()
            page_url = f"{url}{'&' if '?' in url else '?'}page={number}"
            chunk = members[(number - 1) * self.per_page: number * self.per_page]
            cached = cache.get(page_url) if cache is not None else None
            etag = _etag(chunk)
            if cached is not None and cached.etag == etag:
                self.not_modified += 1
                yield RosterPage(list(cached.members), not_modified=True, url=page_url)
            else:
                if cache is not None:
                    cache.put(page_url, CachedPage(etag, chunk))
                yield RosterPage(chunk, url=page_url)
            if number * self.per_page >= len(members):
                return number

    def _listing(self, org: ProviderOrg, role: AccessRole | None) -> list[ProviderMember]:
        """One provider listing now: GitHub's for ``role``; GitLab's (``None``)
        with members without access included."""
        if role is not None:
            self._check_installation(org)
        current = self._org(org.org_id)
        return [self._member(uid, r) for uid, r in sorted(current.members.items())
                if uid not in current.hidden and (role is None or r == role)]

    def _member(self, uid: int, role: AccessRole | None) -> ProviderMember:
        raw = _RAW_ROLE[self.name].get(role, "pending:member" if self.name == "github" else "5")
        return ProviderMember(uid, self._users[uid], role, raw_role=raw)

    def _org(self, org_id: int) -> _Org:
        found = self._orgs.get(org_id)
        if found is None:
            raise NotFound(f"{self.name} answered 404 for org {org_id}")
        return found

    def _check_installation(self, org: ProviderOrg) -> None:
        """GitHub member reads use the org's installation token."""
        if org.installation_id is None:
            raise AuthBroken(f"the GitHub App is not installed on {org.login}")
        inst = self._installations.get(org.installation_id)
        if inst is None or inst.suspended or inst.account_id != org.org_id:
            raise AuthBroken(f"GitHub refused a token for installation {org.installation_id}")


_RAW_ROLE: dict[str, dict[AccessRole | None, str]] = {
    "github": {"admin": "admin", "member": "member", "billing": "billing_manager"},
    "gitlab": {"admin": "40", "member": "30"},
}


def _etag(items: Sequence[object]) -> str:
    return hashlib.sha256(repr(items).encode()).hexdigest()[:16]


class DictCache(Generic[_Page]):
    """An ETag cache in a dict: ``DictCache[CachedPage]()`` is a ``PageCache``
    (the sync engine's is ``sync.apply.DbPageCache``),
    ``DictCache[CachedInstallations]()`` an ``InstallationCache``."""

    def __init__(self) -> None:
        self.pages: dict[str, _Page] = {}

    def get(self, url: str) -> _Page | None:
        return self.pages.get(url)

    def put(self, url: str, page: _Page) -> None:
        self.pages[url] = page


class ListEnqueuer:
    """The ``Enqueuer`` (sync/events.py) test double: records the full syncs
    asked for."""

    def __init__(self) -> None:
        self.full_syncs: list[tuple[str, str]] = []

    def full_sync(self, workspace_id: str, trigger: str) -> None:
        self.full_syncs.append((workspace_id, trigger))


# The Protocol checks (mypy): each fake is what it stands in for.
_: Provider = FakeProvider()
_pages: PageCache = DictCache[CachedPage]()
_installations: InstallationCache = DictCache[CachedInstallations]()
_enqueuer: Enqueuer = ListEnqueuer()
