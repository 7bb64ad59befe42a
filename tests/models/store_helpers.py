"""Helpers of the store's tests: a user with a provider identity, and the
actions logged on a workspace."""
from __future__ import annotations

from sqlalchemy.orm import Session

from models import store
from models.tables import Workspace


def _user(session: Session, login: str, provider: str = "github", uid: int | None = None):  # type: ignore[no-untyped-def]
    user, created = store.get_or_create_user_for_identity(
        session, provider, uid if uid is not None else abs(hash(login)) % 10**9, login, actor="test"
    )
    assert created
    return user


def _actions(session: Session, ws: Workspace) -> list[str]:
    return [a.action for a in store.list_activity(session, workspace_id=ws.id, limit=1000)]
