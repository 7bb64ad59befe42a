"""The one interface every provider adapter implements.

Everything above this module (planner, apply, jobs, views) speaks in these
frozen dataclasses; PyGithub and python-gitlab stay inside the adapters.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from sync.roles import AccessRole

ProviderName = Literal["github", "gitlab"]
# A member's role is an AccessRole (sync.roles); None = the membership gives no
# access (GitHub pending invitation, GitLab minimal access or expired membership).


@dataclass(frozen=True, slots=True)
class ProviderMember:
    provider_user_id: int
    login: str
    role: AccessRole | None
    raw_role: str = ""  # the provider's own value, for the activity log ("admin", "40", ...)


@dataclass(frozen=True, slots=True)
class ProviderOrg:
    provider: ProviderName
    org_id: int
    login: str  # GitHub org login; GitLab group full_path
    name: str | None = None
    installation_id: int | None = None  # GitHub App installation on this org, if known


@dataclass(frozen=True, slots=True)
class ProviderUser:
    provider_user_id: int
    login: str


@dataclass(frozen=True, slots=True)
class TokenOrg:
    """An org (GitHub) or top-level group (GitLab) a user's token can see."""

    org: ProviderOrg
    role: AccessRole | None


@dataclass(slots=True)
class RosterPage:
    """One page of an org's roster.

    ``not_modified`` is True when the provider answered a conditional request
    with 304; ``members`` then holds the cached page content (from the
    ``PageCache``), so callers always see the full roster.
    """

    members: list[ProviderMember]
    not_modified: bool = False
    url: str = ""


@dataclass(slots=True)
class CachedPage:
    etag: str
    members: list[ProviderMember] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ProviderInstallation:
    """A GitHub App installation as the provider reports it now."""

    installation_id: int
    account_id: int
    account_login: str
    # "Organization" or "User": what GitHub's own installation record says,
    # which webhook examples contradict (account.type vs target_type).
    account_type: str
    suspended: bool = False

    @property
    def is_org(self) -> bool:
        return self.account_type == "Organization"


@dataclass(slots=True)
class CachedInstallations:
    etag: str
    installations: list[ProviderInstallation] = field(default_factory=list)


class InstallationCache(Protocol):
    """ETag cache for the conditional ``GET /app/installations`` pages."""

    def get(self, url: str) -> CachedInstallations | None: ...

    def put(self, url: str, page: CachedInstallations) -> None: ...


class PageCache(Protocol):
    """ETag cache for conditional roster requests, keyed by request URL.

    The sync engine backs it with the database so that any worker can send
    ``If-None-Match`` for a page another worker fetched.
    """

    def get(self, url: str) -> CachedPage | None: ...

    def put(self, url: str, page: CachedPage) -> None: ...


@runtime_checkable
class Provider(Protocol):
    name: ProviderName
    # Roles the roster listing never shows (GitHub lists an org's members, and
    # a billing manager is not one): a stored member with such a role missing
    # from a listing is no sign they left; only a read of their membership is.
    unlisted_roles: frozenset[str]
    api_calls: int  # requests made by this adapter instance (304s included)
    not_modified: int  # of those, answered 304

    def get_org(self, org_id: int) -> ProviderOrg:
        """Read an org/group by numeric id. Raises NotFound."""
        ...

    def iter_roster(self, org: ProviderOrg, cache: PageCache | None = None) -> Iterator[RosterPage]:
        """Stream the whole roster, 100 per page, never all of it in memory.

        Raises TransientProviderError / RateLimited / AuthBroken part way
        through; the caller must then apply no removals.
        """
        ...

    def get_member(self, org: ProviderOrg, provider_user_id: int, login: str | None) -> ProviderMember | None:
        """Re-read one member's current membership; None = not a member."""
        ...

    def get_user(self, provider_user_id: int) -> ProviderUser | None:
        """Read a user account by numeric id; None = the account is gone."""
        ...

    def get_org_installation(self, org: ProviderOrg) -> ProviderInstallation | None:
        """The app's live installation on an org (GitHub, app JWT); None =
        not installed, or the org is gone. Never trusts a stale login alone:
        a 404 is re-asked under the org's current login. GitLab has no app
        installations and raises ProviderError."""
        ...

    def list_installations(self, cache: InstallationCache | None = None) -> list[ProviderInstallation]:
        """Every installation of the app (GitHub ``GET /app/installations``,
        every page, conditional when ``cache`` holds ETags). GitLab: []."""
        ...

    def get_token_user(self, access_token: str) -> ProviderUser:
        """The user behind an OAuth token. Raises InvalidUserToken."""
        ...

    def iter_token_orgs(self, access_token: str) -> Iterator[TokenOrg]:
        """Orgs (GitHub: active memberships) or top-level groups (GitLab) the
        token can see, with the user's role in each."""
        ...

