"""Fixtures and helpers of the web app's tests: a World with the service and
admin APIs on (two admin tokens, for rotation) and a GitHub org workspace in
it; a clock the test moves; the SQL statements a block runs."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from models import store
from tests.app_world import MakeWorld, World

ADMIN = "admin-secret-1"
ADMIN_OLD = "admin-secret-0"
SERVICE = "service-secret-1"


@pytest.fixture
def api(make_world: MakeWorld) -> World:
    return make_world(admin_tokens=(ADMIN, ADMIN_OLD), service_tokens=(SERVICE,))


@pytest.fixture
def acme(api: World) -> dict[str, Any]:
    """A GitHub org workspace: user1 (admin, owner), user2 (member), 3 (no account)."""
    ws_id = api.github_workspace(9001, "acme", installation_id=77, roster={
        1: ("user1", "admin"), 2: ("user2", "member"), 3: ("user3", "member")})
    with api.session() as s:
        u1, _ = store.get_or_create_user_for_identity(s, "github", 1, "user1", actor="test")
        u2, _ = store.get_or_create_user_for_identity(s, "github", 2, "user2", actor="test")
        outsider, _ = store.get_or_create_user_for_identity(s, "github", 99, "outsider", actor="test")
        ws = store.get_workspace(s, ws_id)
        store.transfer_ownership(s, ws, u1, actor="test")
        ids = {"ws": ws_id, "u1": u1.id, "u2": u2.id, "outsider": outsider.id}
    return ids


class Clock:
    """A clock that stands still until a test moves ``now``."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextmanager
def statements(world: World) -> Iterator[list[str]]:
    """Every SQL statement the app's engine runs inside the block."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        seen.append(sql)

    event.listen(world.runtime.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(world.runtime.engine, "before_cursor_execute", record)
