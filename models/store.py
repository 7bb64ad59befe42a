"""The core workspace store's public API: every rule of SPEC section 3, by concern.

This module only re-exports; the code lives in the module of its concern:

- ``models.activity``: the activity log (change feed), numbered in commit order;
- ``models.identities``: provider identities linked to accounts;
- ``models.workspaces``: names, references, creation, renames, status, subscription;
- ``models.ownership``: owners, transfers, ownership passing on;
- ``models.memberships``: invitations, direct members, effective members and roles;
- ``models.roster``: provider rosters (keyed by numeric user id) and their page cache;
- ``models.runs``: sync runs and what they settled;
- ``models.users``: accounts (with their personal workspace).

Callers outside ``models`` use ``from models import store`` and ``store.x``;
modules inside ``models`` import the concern's module, never this one.
Callers pass a Session; functions flush but never commit, so a caller's whole
unit of work (the change and its activity entries) is one transaction.
"""
from __future__ import annotations

from models.activity import (
    ActivityEntry,
    ActivityView,
    activity_seqs,
    activity_view,
    latest_seq,
    list_activity,
    log_activities,
    log_activity,
    reattribute_activity,
)
from models.identities import (
    get_identity,
    set_identity_login,
)
from models.memberships import (
    decide_invitation,
    invite,
    members,
    request_join,
    role_in,
    user_workspaces,
)
from models.ownership import (
    claim_unowned,
    transfer_ownership,
)
from models.roster import (
    MemberWorkspace,
    RosterPages,
    StoredMember,
    apply_roster_changes,
    cached_roster_pages,
    member_workspaces,
    roster,
    roster_count,
    roster_login,
    roster_logins,
    roster_workspace_ids,
    save_roster_pages,
)
from models.runs import (
    RunOutcome,
    RunResult,
    finish_run,
    last_sync_run,
    open_run,
    run_result,
    settled_members_since,
)
from models.users import (
    create_user,
    get_or_create_user_for_identity,
    get_user,
)
from models.workspaces import (
    PLAN_NAME,
    UserRef,
    WorkspaceName,
    WorkspaceState,
    WorkspaceView,
    create_managed_workspace,
    create_provider_workspace,
    delete_workspace,
    disconnect,
    find_workspace,
    get_personal_workspace_for_identity,
    get_provider_workspace,
    get_workspace,
    get_workspace_by_installation,
    list_workspaces,
    lock_workspace,
    mark_full_synced,
    mark_link,
    reconnect,
    rename_provider_workspace,
    set_subscription,
    suspend,
    unsuspend,
    workspace_state,
    workspace_view,
)

__all__ = [
    "PLAN_NAME",
    "ActivityEntry",
    "ActivityView",
    "MemberWorkspace",
    "RosterPages",
    "RunOutcome",
    "RunResult",
    "StoredMember",
    "UserRef",
    "WorkspaceName",
    "WorkspaceState",
    "WorkspaceView",
    "activity_seqs",
    "activity_view",
    "apply_roster_changes",
    "cached_roster_pages",
    "claim_unowned",
    "create_managed_workspace",
    "create_provider_workspace",
    "create_user",
    "decide_invitation",
    "delete_workspace",
    "disconnect",
    "find_workspace",
    "finish_run",
    "get_identity",
    "get_or_create_user_for_identity",
    "get_personal_workspace_for_identity",
    "get_provider_workspace",
    "get_user",
    "get_workspace",
    "get_workspace_by_installation",
    "invite",
    "last_sync_run",
    "latest_seq",
    "list_activity",
    "list_workspaces",
    "lock_workspace",
    "log_activities",
    "log_activity",
    "mark_full_synced",
    "mark_link",
    "member_workspaces",
    "members",
    "open_run",
    "reattribute_activity",
    "reconnect",
    "rename_provider_workspace",
    "request_join",
    "role_in",
    "roster",
    "roster_count",
    "roster_login",
    "roster_logins",
    "roster_workspace_ids",
    "run_result",
    "save_roster_pages",
    "set_identity_login",
    "set_subscription",
    "settled_members_since",
    "suspend",
    "transfer_ownership",
    "unsuspend",
    "user_workspaces",
    "workspace_state",
    "workspace_view",
]
