"""Owners (models/ownership.py): transfers, ownership passing on when the owner
leaves, a pending owner claiming on first login; on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from models import store
from models.errors import InvalidTransfer
from tests.models.store_helpers import _actions, _user


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


def test_pending_owner_becomes_owner_on_first_login(session: Session) -> None:
    ws = store.create_provider_workspace(session, "github", 8, "org", actor="webhook:d",
                                         installation_id=11, pending_owner_provider_user_id=500)
    assert ws.owner_id is None
    user, _ = store.get_or_create_user_for_identity(session, "github", 500, "installer", actor="login:x")
    assert ws.owner_id == user.id and ws.billing_user_id == user.id
