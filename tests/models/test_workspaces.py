"""Workspace rules (models/workspaces.py; SPEC section 3), each with the error a
caller gets: deletion, names, references, disconnect, renames; on SQLite and
PostgreSQL."""
from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import store
from models.errors import CannotDelete, InvalidName, NameTaken, WorkspaceNotFound
from models.tables import Activity
from tests.models.store_helpers import _actions, _user


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
