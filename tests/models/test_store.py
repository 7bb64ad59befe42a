"""Store rules (SPEC section 3), each with the error a caller gets; on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import store
from models.errors import (
    CannotDelete,
    CannotInvite,
    InvalidName,
    InvalidTransfer,
    NameTaken,
    WorkspaceNotFound,
)
from models.tables import Activity, Workspace


def _user(session: Session, login: str, provider: str = "github", uid: int | None = None):  # type: ignore[no-untyped-def]
    user, created = store.get_or_create_user_for_identity(
        session, provider, uid if uid is not None else abs(hash(login)) % 10**9, login, actor="test"
    )
    assert created
    return user


def _actions(session: Session, ws: Workspace) -> list[str]:
    return [a.action for a in store.list_activity(session, workspace_id=ws.id, limit=1000)]


def test_user_gets_personal_workspace_and_it_cannot_be_deleted(session: Session) -> None:
    user = store.create_user(session, "Alice")
    ws = store.find_workspace(session, "alice")
    assert ws.kind == "personal" and ws.owner_id == user.id and ws.personal_user_id == user.id
    assert _actions(session, ws) == ["workspace.created", "ownership.changed"]
    with pytest.raises(CannotDelete, match="personal workspace cannot be deleted"):
        store.delete_workspace(session, ws)
    assert session.get(Workspace, ws.id) is not None


@pytest.mark.parametrize("kind", ["personal", "provider"])
def test_invitations_are_refused_for_personal_and_provider(session: Session, kind: str) -> None:
    alice = store.create_user(session, "alice")
    bob = store.create_user(session, "bob")
    if kind == "personal":
        ws = store.find_workspace(session, "alice")
        match = "personal workspace cannot have other members"
    else:
        ws = store.create_provider_workspace(session, "github", 1, "acme", actor="test", owner=alice)
        match = "come from github"
    before = _actions(session, ws)
    with pytest.raises(CannotInvite, match=match):
        store.invite(session, ws, bob)
    assert _actions(session, ws) == before
    assert [m["user"]["id"] for m in store.members(session, ws) if m["user"]] == [alice.id]


def test_managed_workspace_invite_then_approve(session: Session) -> None:
    alice = store.create_user(session, "alice")
    bob = store.create_user(session, "bob")
    ws = store.create_managed_workspace(session, "team-x", alice)
    inv = store.invite(session, ws, bob)
    store.request_join(session, inv, actor="bob")
    store.decide_invitation(session, inv, True)
    assert store.role_in(session, ws, bob) == "member"
    assert _actions(session, ws)[-2:] == ["member.invited", "member.added"]


def test_connected_provider_workspace_cannot_be_deleted_until_disconnected(session: Session) -> None:
    owner = _user(session, "octo", uid=1)
    ws = store.create_provider_workspace(session, "github", 100, "Acme", actor="test", owner=owner)
    with pytest.raises(CannotDelete, match="disconnect it before deleting"):
        store.delete_workspace(session, ws)
    assert store.disconnect(session, ws, actor="operator")
    store.delete_workspace(session, ws)
    with pytest.raises(WorkspaceNotFound):
        store.find_workspace(session, "acme")
    actions = [a.action for a in session.scalars(select(Activity).where(Activity.workspace_id == ws.id))]
    assert actions[-2:] == ["workspace.disconnected", "workspace.deleted"]


def test_name_collisions_between_managed_github_and_gitlab(session: Session) -> None:
    alice = store.create_user(session, "alice")
    managed = store.create_managed_workspace(session, "acme", alice)
    gh = store.create_provider_workspace(session, "github", 42, "ACME", actor="t", owner=alice)
    gl = store.create_provider_workspace(session, "gitlab", 42, "acme", actor="t", owner=alice)
    gh2 = store.create_provider_workspace(session, "github", 43, "acme-github", actor="t", owner=alice)
    gl2 = store.create_provider_workspace(session, "gitlab", 77, "Acme", actor="t", owner=alice)
    assert managed.name == "acme"
    assert gh.name == "acme-github"
    assert gl.name == "acme-gitlab"
    # "acme-github" is taken by the first GitHub org, so the next rule applies.
    assert gh2.name == "acme-github-github"
    assert gl2.name == "acme-gitlab-77"
    # A GitHub org and a GitLab group of the same name are different workspaces.
    assert store.find_workspace(session, "github:acme").id == gh.id
    # GitLab paths are unique per instance: group 77 holding "Acme" now means
    # group 42's stored "acme" is stale, and it no longer resolves by path.
    assert store.find_workspace(session, "gitlab:acme").id == gl2.id
    assert store.find_workspace(session, "gitlab:id:42").id == gl.id
    with pytest.raises(NameTaken):
        store.create_managed_workspace(session, "ACME-GITHUB", alice)
    with pytest.raises(NameTaken, match="already has workspace"):
        store.create_provider_workspace(session, "github", 42, "other", actor="t", owner=alice)


@pytest.mark.parametrize("bad", ["", "a b", "x:y", "ws_123", "-lead", "a" * 256])
def test_invalid_managed_names(session: Session, bad: str) -> None:
    alice = store.create_user(session, "alice")
    with pytest.raises(InvalidName):
        store.create_managed_workspace(session, bad, alice)


def test_lookup_by_id_name_and_reference(session: Session) -> None:
    owner = _user(session, "octo", uid=7)
    gh = store.create_provider_workspace(session, "github", 9001, "Octo-Org", actor="t", owner=owner)
    gl = store.create_provider_workspace(session, "gitlab", 55, "group/sub", actor="t", owner=owner)
    for ref in (gh.id, "octo-org", "OCTO-ORG", "github:octo-org", "github:Octo-Org", "github:9001"):
        assert store.find_workspace(session, ref).id == gh.id, ref
    for ref in (gl.id, gl.name, "gitlab:group/sub", "gitlab:55"):
        assert store.find_workspace(session, ref).id == gl.id, ref
    assert gl.name == "group-sub"
    for missing in ("github:55", "gitlab:9001", "nope", "github:", "ws_0000"):
        with pytest.raises(WorkspaceNotFound):
            store.find_workspace(session, missing)


def test_ownership_transfer(session: Session) -> None:
    owner = _user(session, "owner", uid=1)
    admin = _user(session, "admin", uid=2)
    outsider = _user(session, "outsider", uid=3)
    ws = store.create_provider_workspace(session, "github", 5, "org", actor="t", owner=owner)
    store.apply_roster_changes(
        session, ws, actor="sync:1",
        adds=[store.StoredMember(1, "owner", "admin"), store.StoredMember(2, "admin", "admin")],
    )
    with pytest.raises(InvalidTransfer, match="not a member"):
        store.transfer_ownership(session, ws, outsider)
    store.transfer_ownership(session, ws, admin)
    assert ws.owner_id == admin.id and ws.billing_user_id == admin.id
    assert store.role_in(session, ws, admin) == "owner"
    assert store.role_in(session, ws, owner) == "admin"
    with pytest.raises(InvalidTransfer, match="personal"):
        store.transfer_ownership(session, store.find_workspace(session, "owner"), admin)


def test_owner_leaving_hands_ownership_to_longest_standing_admin(session: Session) -> None:
    owner = _user(session, "owner", uid=1)
    _user(session, "late-admin", uid=3)
    early = _user(session, "early-admin", uid=2)
    ws = store.create_provider_workspace(session, "github", 5, "org", actor="t", owner=owner)
    store.apply_roster_changes(session, ws, actor="s", adds=[store.StoredMember(1, "owner", "admin"),
                                                             store.StoredMember(4, "no-account", "admin")])
    store.apply_roster_changes(session, ws, actor="s", adds=[store.StoredMember(2, "early-admin", "admin")])
    store.apply_roster_changes(session, ws, actor="s", adds=[store.StoredMember(3, "late-admin", "admin")])
    store.apply_roster_changes(session, ws, actor="sync:9", removals=[1])
    assert ws.owner_id == early.id
    assert store.role_in(session, ws, owner) is None
    # Everyone with an account leaves: the workspace becomes ownerless.
    store.apply_roster_changes(session, ws, actor="sync:10", removals=[2, 3])
    assert ws.owner_id is None and ws.billing_user_id is None
    assert _actions(session, ws)[-1] == "ownership.lost"


def test_roster_member_without_account_gains_access_on_first_login(session: Session) -> None:
    owner = _user(session, "owner", uid=1)
    ws = store.create_provider_workspace(session, "github", 5, "org", actor="t", owner=owner)
    store.apply_roster_changes(session, ws, actor="s", adds=[store.StoredMember(1, "owner", "admin"),
                                                             store.StoredMember(77, "newbie", "member")])
    listed = {m["login"]: m for m in store.members(session, ws)}
    assert listed["newbie"]["user"] is None and listed["newbie"]["access"] is False
    newbie, _ = store.get_or_create_user_for_identity(session, "github", 77, "newbie", actor="login")
    assert store.role_in(session, ws, newbie) == "member"
    # Logins are labels: a renamed user keeps their access.
    store.get_or_create_user_for_identity(session, "github", 77, "newbie-renamed", actor="login")
    assert store.role_in(session, ws, newbie) == "member"
    assert store.roster(session, ws.id)[77].login == "newbie-renamed"


def test_disconnect_ends_roster_access_owner_keeps_it_reconnect_restores(session: Session) -> None:
    owner = _user(session, "owner", "gitlab", uid=1)
    member = _user(session, "member", "gitlab", uid=2)
    ws = store.create_provider_workspace(session, "gitlab", 5, "grp", actor="t", owner=owner)
    store.apply_roster_changes(session, ws, actor="s", adds=[store.StoredMember(1, "owner", "admin"),
                                                             store.StoredMember(2, "member", "member")])
    assert store.role_in(session, ws, member) == "member"
    store.disconnect(session, ws, actor="webhook:d1", reason="group_destroy")
    assert store.role_in(session, ws, member) is None
    assert store.role_in(session, ws, owner) == "owner"
    store.reconnect(session, ws, actor="operator")
    assert store.role_in(session, ws, member) == "member"
    assert _actions(session, ws)[-2:] == ["workspace.disconnected", "workspace.reconnected"]


def test_rename_follows_login_and_keeps_id(session: Session) -> None:
    owner = _user(session, "owner", uid=1)
    ws = store.create_provider_workspace(session, "github", 5, "old-name", actor="t", owner=owner)
    wid = ws.id
    assert store.rename_provider_workspace(session, ws, "New-Name", actor="webhook:x")
    assert ws.id == wid and ws.name == "new-name"
    assert store.find_workspace(session, "github:new-name").id == wid
    with pytest.raises(WorkspaceNotFound):
        store.find_workspace(session, "github:old-name")
    assert not store.rename_provider_workspace(session, ws, "New-Name", actor="webhook:y")


def test_activity_sequence_is_monotonic_and_in_the_same_transaction(session_factory) -> None:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        store.create_user(s, "alice")
        s.commit()
    with session_factory() as s:
        ws = store.find_workspace(s, "alice")
        store.set_subscription(s, ws, "pro")
        s.rollback()  # the change and its entry go together
    with session_factory() as s:
        ws = store.find_workspace(s, "alice")
        assert ws.subscription_plan is None
        assert _actions(s, ws) == ["workspace.created", "ownership.changed"]
        store.set_subscription(s, ws, "pro")
        s.commit()
        seqs = [a.seq for a in store.list_activity(s, limit=100)]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert store.list_activity(s, after=seqs[-2])[0].action == "subscription.changed"


def test_pending_owner_becomes_owner_on_first_login(session: Session) -> None:
    ws = store.create_provider_workspace(session, "github", 8, "org", actor="webhook:d",
                                         installation_id=11, pending_owner_provider_user_id=500)
    assert ws.owner_id is None
    user, _ = store.get_or_create_user_for_identity(session, "github", 500, "installer", actor="login:x")
    assert ws.owner_id == user.id and ws.billing_user_id == user.id
