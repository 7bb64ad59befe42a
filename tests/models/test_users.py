"""Accounts (models/users.py): each has a personal workspace, which cannot be
deleted; on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from models import store
from models.errors import CannotDelete
from models.tables import Workspace
from tests.models.store_helpers import _actions


def test_user_gets_personal_workspace_and_it_cannot_be_deleted(session: Session) -> None:
    user = store.create_user(session, "Alice")
    ws = store.find_workspace(session, "alice")
    assert ws.kind == "personal" and ws.owner_id == user.id and ws.personal_user_id == user.id
    assert _actions(session, ws) == ["workspace.created", "ownership.changed"]
    with pytest.raises(CannotDelete, match="personal workspace cannot be deleted"):
        store.delete_workspace(session, ws)
    assert session.get(Workspace, ws.id) is not None
