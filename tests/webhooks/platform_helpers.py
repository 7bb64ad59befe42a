"""Shared set-up of the platform API tests: a World with the service API on,
a cast of users in every kind of workspace, and a fingerprint of the store
(to prove that a refused call changed nothing)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from models import managed, store, users
from models.base import Base
from models.tables import Activity
from tests.app_world import MakeWorld, World

SERVICE = "platform-service-token"
ADMIN = "platform-admin-token"


def platform_world(make_world: MakeWorld) -> World:
    return make_world(service_tokens=(SERVICE,), admin_tokens=(ADMIN,))


def headers(user: str | None = None) -> dict[str, str]:
    h = {"Authorization": f"Bearer {SERVICE}"}
    if user is not None:
        h["X-Orgsync-User"] = user
    return h


def call(world: World, method: str, path: str, user: str | None = None, body: Any = None) -> Any:
    kwargs: dict[str, Any] = {"headers": headers(user)}
    if body is not None:
        kwargs["json"] = body
    return world.client.open(path, method=method, **kwargs)


def fingerprint(world: World) -> str:
    """A hash of every row of every table: catches updates, not only inserts."""
    h = hashlib.sha256()
    with world.runtime.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in sorted(repr(tuple(r)) for r in conn.execute(select(table)).all()):
                h.update(table.name.encode() + b"\0" + row.encode() + b"\n")
    return h.hexdigest()


def activity_after(world: World, seq: int) -> list[Activity]:
    with world.session() as s:
        return list(s.scalars(select(Activity).where(Activity.seq > seq).order_by(Activity.seq)))


def last_seq(world: World) -> int:
    with world.session() as s:
        return int(s.scalar(select(Activity.seq).order_by(Activity.seq.desc()).limit(1)) or 0)


@dataclass
class Cast:
    """Users by role, and one workspace of each kind.

    managed ``team``: olivia owner, adam admin, mia member, bill billing.
    personal ``olivia``. provider ``acme`` (GitHub org 9001, connected):
    gho (GitHub 1) owner, gha (2) admin, ghm (3) member. provider ``gone``
    (GitHub org 9002, disconnected): gho owner, gha admin on the roster.
    otto is in nothing but his own personal workspace.
    """

    ids: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.ids[key]


def make_cast(world: World) -> Cast:
    ids: dict[str, str] = {}
    with world.session() as s:
        for name in ("olivia", "adam", "mia", "bill", "otto"):
            ids[name] = users.sign_up(s, name).id
        gho, _ = store.get_or_create_user_for_identity(s, "github", 1, "gho", actor="test")
        gha, _ = store.get_or_create_user_for_identity(s, "github", 2, "gha", actor="test")
        ghm, _ = store.get_or_create_user_for_identity(s, "github", 3, "ghm", actor="test")
        ids.update(gho=gho.id, gha=gha.id, ghm=ghm.id)
        olivia = store.get_user(s, "olivia")
        team = managed.create_workspace(s, "team", olivia, managed.OPERATOR)
        for name, role in (("adam", "admin"), ("mia", "member"), ("bill", "billing")):
            _inv, token = managed.create_invitation(s, team, role, managed.OPERATOR)
            req, _ = managed.request_to_join(s, token, store.get_user(s, name))
            managed.decide_request(s, team, req.id, True, managed.OPERATOR)
        ids["team"] = team.id
        for org_id, login in ((9001, "acme"), (9002, "gone")):
            ws = store.create_provider_workspace(s, "github", org_id, login, actor="test", owner=gho,
                                                 installation_id=org_id)
            store.apply_roster_changes(s, ws, adds=[store.StoredMember(1, "gho", "admin"),
                                                    store.StoredMember(2, "gha", "admin"),
                                                    store.StoredMember(3, "ghm", "member"),
                                                    store.StoredMember(4, "dev0", "member")], actor="test")
            ids[login] = ws.id
        store.disconnect(s, store.get_workspace(s, ids["gone"]), actor="test")
        ids["personal"] = store.find_workspace(s, "olivia").id
    return Cast(ids)
