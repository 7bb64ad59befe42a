"""The platform CLI commands, driving the real ``orgsync`` console script in
a subprocess on a migrated SQLite database: ``--json`` prints exactly the
body the HTTP API answers for the same call; the operator is bound by the
store's rules (one line, non-zero exit), not by roles; every change is in
the change feed with actor ``operator``."""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models import store, users
from models.config import Settings
from models.migrate import upgrade
from runtime.process import Runtime
from tests.conftest import ORGSYNC
from webhooks.app import create_app

SERVICE = "cli-platform-service"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    upgrade(url)
    rt = Runtime(Settings(database_url=url))
    with rt.session() as s:
        users.sign_up(s, "olivia")
        users.sign_up(s, "otto")
        gho, _ = store.get_or_create_user_for_identity(s, "github", 1, "gho", actor="test")
        ws = store.create_provider_workspace(s, "github", 9001, "acme", actor="test", owner=gho,
                                             installation_id=5)
        store.apply_roster_changes(s, ws, adds=[store.StoredMember(1, "gho", "admin"),
                                                store.StoredMember(4, "dev0", "member")], actor="test")
    rt.engine.dispose()
    yield url


def orgsync(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": db, "REDIS_URL": "", "ORGSYNC_SERVICE_TOKEN": SERVICE}
    env.pop("ORGSYNC_LOG_LEVEL", None)
    return subprocess.run([str(ORGSYNC), *args], env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def api(db: str, method: str, path: str, body: Any = None, user: str | None = None) -> Any:
    rt = Runtime(Settings(database_url=db, service_tokens=(SERVICE,)))
    headers = {"Authorization": f"Bearer {SERVICE}"}
    if user:
        headers["X-Orgsync-User"] = user
    resp = create_app(runtime=rt).test_client().open(path, method=method, json=body, headers=headers)
    rt.engine.dispose()
    return resp.status_code, resp.get_json()


def test_reads_print_the_api_bodies(db: str) -> None:
    for args, path in ((("users", "show", "gho"), "/v1/users/gho"),
                       (("users", "show", "github:1"), "/v1/users/github:1"),
                       (("users", "workspaces", "gho"), "/v1/users/gho/workspaces"),
                       (("users", "workspaces", "olivia"), "/v1/users/olivia/workspaces")):
        cli = ok_json(orgsync(db, *args, "--json"))
        status, body = api(db, "GET", path)
        assert status == 200 and cli == body, args
    listed = ok_json(orgsync(db, "users", "workspaces", "gho", "--json"))["workspaces"]
    assert [(w["name"], w["role"]) for w in listed] == [("acme", "owner"), ("gho", "owner")]


def test_managed_workspace_lifecycle(db: str) -> None:
    created = ok_json(orgsync(db, "workspaces", "create", "team", "--owner", "olivia", "--json"))
    assert created["kind"] == "managed" and created["owner"]["username"] == "olivia"
    assert api(db, "GET", f"/v1/workspaces/{created['id']}") == (200, created)

    renamed = ok_json(orgsync(db, "workspaces", "rename", "team", "crew", "--json"))
    assert renamed["name"] == "crew" and api(db, "GET", "/v1/workspaces/crew") == (200, renamed)

    invite = ok_json(orgsync(db, "workspaces", "invite", "crew", "--role", "admin", "--json"))
    inv = invite["invitation"]
    assert set(invite) == {"invitation"} and inv["role"] == "admin" and inv["token"].startswith("inv_")
    # The printed token is the link: otto asks, olivia approves, otto is admin.
    status, req = api(db, "POST", f"/v1/invitations/{inv['token']}/requests", user="otto")
    assert status == 202
    status, _ = api(db, "POST", f"/v1/workspaces/crew/requests/{req['request']['id']}/approve", user="olivia")
    assert status == 200
    assert api(db, "GET", "/v1/workspaces/crew/access/otto")[1]["role"] == "admin"
    # The API lists the same invitation, without its token.
    listed = api(db, "GET", "/v1/workspaces/crew/invitations")[1]["invitations"]
    assert listed == [{**inv, "token": None}]

    deleted = orgsync(db, "workspaces", "delete", "crew")
    assert deleted.returncode == 0 and "deleted crew" in deleted.stdout
    assert api(db, "GET", "/v1/workspaces/crew")[0] == 404
    changes = api(db, "GET", "/v1/changes?limit=1000")[1]["changes"]
    mine = [(c["action"], c["actor"]) for c in changes if c["workspace"] == created["id"]]
    assert mine == [("workspace.created", "operator"), ("ownership.changed", "operator"),
                    ("workspace.renamed", "operator"), ("invitation.created", "operator"),
                    ("member.requested", f"user:{req['request']['user']['id']}"),
                    ("member.added", f"user:{created['owner']['id']}"),
                    ("workspace.deleted", "operator")]


@pytest.mark.parametrize(("args", "message"), [
    (("workspaces", "delete", "olivia"), "personal workspace cannot be deleted"),
    (("workspaces", "rename", "olivia", "x"), "personal workspace"),
    (("workspaces", "invite", "olivia"), "personal workspace cannot have other members"),
    (("workspaces", "delete", "acme"), "disconnect it before deleting"),
    (("workspaces", "rename", "acme", "x"), "rename the org there"),
    (("workspaces", "invite", "acme"), "add them to the org there"),
    (("workspaces", "create", "acme", "--owner", "olivia"), "already exists"),
    (("workspaces", "create", "bad name", "--owner", "olivia"), "must be 1-255"),
    (("workspaces", "create", "x", "--owner", "ghost"), "no user 'ghost'"),
    (("workspaces", "invite", "nope"), "no workspace 'nope'"),
    (("workspaces", "invite", "olivia", "--expires-in", "5"), "expires_in"),
    (("users", "show", "ghost"), "no user 'ghost'"),
    (("users", "workspaces", "github:99"), "no account is linked to github user 99"),
    (("workspaces", "transfer", "acme", "--to", "dev0"), "dev0 (github user 4) is a member of the github org"),
])
def test_store_rules_bind_the_operator(db: str, args: tuple[str, ...], message: str) -> None:
    before = api(db, "GET", "/v1/changes?limit=1000")[1]
    result = orgsync(db, *args)
    assert result.returncode != 0 and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert api(db, "GET", "/v1/changes?limit=1000")[1] == before


def test_provider_workspace_deleted_once_disconnected(db: str) -> None:
    assert orgsync(db, "workspaces", "delete", "acme").returncode != 0
    assert orgsync(db, "workspaces", "disconnect", "acme").returncode == 0
    result = orgsync(db, "workspaces", "delete", "acme")
    assert result.returncode == 0, result.stderr
    assert api(db, "GET", "/v1/workspaces/acme")[0] == 404
    names = [w["name"] for w in ok_json(orgsync(db, "users", "workspaces", "gho", "--json"))["workspaces"]]
    assert names == ["gho"]
