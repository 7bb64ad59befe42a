"""Tenant resolution: a verified token → the workspace bound to its owner's
numeric id, the checks that workspace must pass, the activity entries and the
answer (``Tenant``; webhooks/serialize.py writes its JSON)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import redis as redis_lib

from models import store
from models.errors import WorkspaceNotFound
from models.store import WorkspaceView
from oidc.errors import (
    NoWorkspace,
    OidcError,
    OidcUnavailable,
    SubscriptionRequired,
    WorkspaceInactive,
    WorkspaceMismatch,
)
from oidc.redis_keys import REDIS_PREFIX, as_text
from oidc.settings import OidcProvider
from oidc.token import VerifiedToken
from sync.errors import NotFound, ProviderError
from sync.providers.base import ProviderOrg

log = logging.getLogger(__name__)

GITLAB_ROOT_TTL = 3600  # subgroups can be transferred; don't trust a cached root forever


class NamespaceResolver(Protocol):
    def get_top_level_group(self, namespace_id: int) -> ProviderOrg:
        """The top-level group of a GitLab namespace, by id. Raises
        sync.errors.NotFound for unknown namespaces and user namespaces."""
        ...


def _gitlab_root_id(
    namespace_id: int, resolver: NamespaceResolver | None, redis: redis_lib.Redis | None
) -> int | None:
    cache_key = f"{REDIS_PREFIX}:gitlab-root:{namespace_id}"
    if redis is not None:
        cached = as_text(redis.get(cache_key))
        if cached is not None and cached.isdigit():
            return int(cached)
    if resolver is None:
        return None
    try:
        root = resolver.get_top_level_group(namespace_id)
    except NotFound:
        return None
    except ProviderError as exc:
        log.warning("oidc: resolving GitLab namespace %d failed: %s", namespace_id, type(exc).__name__)
        raise OidcUnavailable() from None
    if redis is not None:
        redis.set(cache_key, str(root.org_id), ex=GITLAB_ROOT_TTL)
    return root.org_id


def find_tenant(
    session: Any,
    verified: VerifiedToken,
    resolver: NamespaceResolver | None = None,
    redis: redis_lib.Redis | None = None,
) -> Any | None:
    """The workspace bound to the token's owner by numeric id, or None.

    Never by name: org logins and group paths are released on rename or
    deletion and can be claimed by anyone, so a name match with an id
    mismatch is someone else's account (the account-name reuse attack).
    """

    owner_id = verified.owner_id
    if verified.provider == "github":
        # repository_owner_id is an org or a user; ids don't collide between
        # the two on GitHub (one account id space).
        return store.get_provider_workspace(
            session, "github", owner_id
        ) or store.get_personal_workspace_for_identity(session, "github", owner_id)

    # GitLab: a top-level group's namespace id is its group id, so a project
    # directly in a connected group needs no API call.
    workspace = store.get_provider_workspace(session, "gitlab", owner_id)
    if workspace is not None:
        return workspace
    # A subgroup: find its root by id through the API (never by the first
    # segment of namespace_path, which a renamed group would let someone else
    # own).
    root_id = _gitlab_root_id(owner_id, resolver, redis)
    if root_id is None or root_id == owner_id:
        return None
    return store.get_provider_workspace(session, "gitlab", root_id)


@dataclass(frozen=True, slots=True)
class Tenant:
    """A token resolved to its workspace (the answer to a CI job)."""

    workspace: WorkspaceView
    provider: OidcProvider
    owner_login: str
    owner_id: int
    repository: str
    subject: str


def _activity_details(verified: VerifiedToken, reason: str | None = None) -> dict[str, Any]:
    # Never the token itself: it is a bearer credential until it expires.
    details: dict[str, Any] = {
        "repository": verified.repository,
        "subject": verified.subject,
        "jti": verified.jti,
        "owner_id": verified.owner_id,
        "owner_login": verified.owner_login,
    }
    if reason is not None:
        details["reason"] = reason
    return details


def record_refusal(
    session: Any,
    verified: VerifiedToken,
    refusal: OidcError,
    resolver: NamespaceResolver | None = None,
    redis: redis_lib.Redis | None = None,
) -> bool:
    """Log a refusal that happened after the token verified (a replay) on its
    owner's workspace, if there is one. Returns whether an entry was made."""

    workspace = find_tenant(session, verified, resolver, redis)
    if workspace is None:
        return False
    store.log_activity(
        session,
        workspace.id,
        f"ci:{verified.provider}",
        "oidc.refused",
        subject=verified.repository,
        details=_activity_details(verified, refusal.error),
    )
    return True


def resolve_tenant(
    session: Any,
    verified: VerifiedToken,
    workspace_ref: str | None,
    resolver: NamespaceResolver | None = None,
    redis: redis_lib.Redis | None = None,
) -> Tenant:
    """Resolve a verified token to its workspace and check it may deploy.

    Returns what the 200 answer says (webhooks/serialize.py writes it).
    Raises NoWorkspace, WorkspaceMismatch, WorkspaceInactive or
    SubscriptionRequired; every outcome with a known
    workspace is logged to its activity (flushed, not committed: the caller
    commits, refusals included).
    """

    workspace = find_tenant(session, verified, resolver, redis)
    if workspace is None:
        log.info(
            "oidc: no workspace for %s owner id %d (%s)",
            verified.provider, verified.owner_id, verified.repository,
        )
        raise NoWorkspace()

    actor = f"ci:{verified.provider}"
    try:
        if workspace_ref is not None:
            try:
                requested = store.find_workspace(session, workspace_ref)
            except WorkspaceNotFound:
                requested = None
            # Same answer whether the other workspace exists or not: a CI
            # token must not be a way to probe for workspace names.
            if requested is None or requested.id != workspace.id:
                raise WorkspaceMismatch()
        if workspace.status != "active":
            raise WorkspaceInactive()
        if not workspace.subscription_plan:
            raise SubscriptionRequired()
    except OidcError as refusal:
        store.log_activity(
            session,
            workspace.id,
            actor,
            "oidc.refused",
            subject=verified.repository,
            details=_activity_details(verified, refusal.error),
        )
        log.info("oidc: refused %s for workspace %s: %s", verified.repository, workspace.id, refusal.error)
        raise

    store.log_activity(
        session,
        workspace.id,
        actor,
        "oidc.resolved",
        subject=verified.repository,
        details=_activity_details(verified),
    )
    log.info("oidc: resolved %s to workspace %s", verified.repository, workspace.id)
    return Tenant(store.workspace_view(workspace), verified.provider, verified.owner_login, verified.owner_id,
                  verified.repository, verified.subject)
