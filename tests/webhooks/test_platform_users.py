"""Users, a user's workspaces and the access question through the platform
API, on SQLite and PostgreSQL; and the fixed number of SQL statements each
of the two hot reads costs, whatever the number of workspaces."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import event

from models import managed, store, users
from tests.app_world import MakeWorld, World
from tests.webhooks.platform_helpers import (
    ADMIN,
    Cast,
    activity_after,
    call,
    fingerprint,
    last_seq,
    make_cast,
    platform_world,
)


@pytest.fixture
def world(make_world: MakeWorld) -> World:
    return platform_world(make_world)


@pytest.fixture
def cast(world: World) -> Cast:
    return make_cast(world)


# --------------------------------------------------------------------------- sign-up


def test_sign_up_without_a_provider(world: World) -> None:
    seq = last_seq(world)
    resp = call(world, "POST", "/v1/users", body={"username": "Newbie"})
    assert resp.status_code == 201
    body = resp.get_json()
    user, personal = body["user"], body["personal_workspace"]
    assert user["username"] == "Newbie" and personal["name"] == "Newbie"
    shown = call(world, "GET", f"/v1/users/{user['id']}").get_json()
    assert shown == {"id": user["id"], "username": "Newbie", "identities": [],
                     "personal_workspace": {"id": personal["id"], "name": "Newbie"}}
    listed = call(world, "GET", "/v1/users/newbie/workspaces").get_json()["workspaces"]
    assert listed == [{"id": personal["id"], "name": "Newbie", "kind": "personal", "role": "owner",
                       "status": "active", "subscription": None}]
    entries = activity_after(world, seq)
    assert {e.actor for e in entries} == {f"user:{user['id']}"}
    assert [e.action for e in entries] == ["workspace.created", "ownership.changed"]


def test_sign_up_beside_a_workspace_of_that_name(world: World, cast: Cast) -> None:
    resp = call(world, "POST", "/v1/users", body={"username": "team"})
    assert resp.status_code == 201
    assert resp.get_json()["personal_workspace"]["name"] == "team-personal"


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"username": "olivia"}, 409, "username_taken"),
    ({"username": "OLIVIA"}, 409, "username_taken"),
    ({"username": "a:b"}, 400, "invalid_username"),
    ({"username": "github:1"}, 400, "invalid_username"),
    ({"username": "usr_abc"}, 400, "invalid_username"),
    ({"username": "a b"}, 400, "invalid_username"),
    ({"username": "-x"}, 400, "invalid_username"),
    ({"username": "x" * 65}, 400, "invalid_username"),
    ({"username": "a\x00b"}, 400, "invalid_username"),
    ({"username": ""}, 400, "invalid_request"),
    ({"username": 5}, 400, "invalid_request"),
    ({}, 400, "invalid_request"),
    ([], 400, "invalid_request"),
])
def test_bad_sign_ups(world: World, cast: Cast, body: Any, status: int, code: str) -> None:
    before = fingerprint(world)
    resp = call(world, "POST", "/v1/users", body=body)
    assert resp.status_code == status and resp.get_json()["error"] == code, resp.get_data(as_text=True)
    assert fingerprint(world) == before


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize(("ref", "who"), [
    ("gho", "gho"), ("GHO", "gho"), ("github:1", "gho"), ("GitHub:1", "gho"), ("id:gho", "gho"),
    ("github:3", "ghm"), ("olivia", "olivia"),
])
def test_user_references(world: World, cast: Cast, ref: str, who: str) -> None:
    ref = cast[who] if ref.startswith("id:") else ref
    body = call(world, "GET", f"/v1/users/{quote(ref, safe=':')}").get_json()
    assert body["username"] == who and body["id"] == cast[who]
    if who.startswith("gh"):
        assert body["identities"][0]["provider"] == "github"
    assert body["personal_workspace"]["name"] == who


@pytest.mark.parametrize("ref", ["nobody", "github:999", "gitlab:1", "github:x", "github:²", "bitbucket:1",
                                 "github:" + "9" * 20, "a%00b", "usr_0000000000000000", "x" * 400])
def test_unknown_user_references_are_404(world: World, cast: Cast, ref: str) -> None:
    for path in (f"/v1/users/{ref}", f"/v1/users/{ref}/workspaces", f"/v1/workspaces/team/access/{ref}"):
        resp = call(world, "GET", path)
        assert resp.status_code == 404 and resp.get_json()["error"] == "user_not_found", (path, resp.data)


# --------------------------------------------------------------------------- a user's workspaces


def test_user_workspaces_lists_every_kind_sorted_by_name(world: World, cast: Cast) -> None:
    with world.session() as s:
        team = store.get_workspace(s, cast["team"])
        store.set_subscription(s, team, "pro", actor="test")
        # gha is an admin of acme and of gone (disconnected: no access) and
        # now a member of a managed workspace too.
        _inv, token = managed.create_invitation(s, team, "billing", managed.OPERATOR)
        req, _ = managed.request_to_join(s, token, store.get_user(s, "gha"))
        managed.decide_request(s, team, req.id, True, managed.OPERATOR)
    body = call(world, "GET", "/v1/users/github:2/workspaces").get_json()
    assert body["user"] == {"id": cast["gha"], "username": "gha"}
    assert [(w["name"], w["kind"], w["role"], w["status"], w["subscription"]) for w in body["workspaces"]] == [
        ("acme", "provider", "admin", "active", None),
        ("gha", "personal", "owner", "active", None),
        ("team", "managed", "billing", "active", "pro"),
    ]
    # The owner of a disconnected workspace keeps access to it.
    names = [w["name"] for w in call(world, "GET", "/v1/users/gho/workspaces").get_json()["workspaces"]]
    assert names == ["acme", "gho", "gone"]


@pytest.mark.parametrize("status", ["suspended", "disconnected"])
def test_roster_access_ends_with_the_connection(world: World, cast: Cast, status: str) -> None:
    with world.session() as s:
        ws = store.get_workspace(s, cast["acme"])
        (store.suspend if status == "suspended" else store.disconnect)(s, ws, actor="test")
    for who, role in (("ghm", None), ("gha", None), ("gho", "owner")):
        listed = {w["name"]: w for w in call(world, "GET", f"/v1/users/{who}/workspaces").get_json()["workspaces"]}
        assert (listed["acme"]["role"] if "acme" in listed else None) == role
        answer = call(world, "GET", f"/v1/workspaces/acme/access/{who}").get_json()
        assert answer["role"] == role and answer["can_deploy"] is False


# --------------------------------------------------------------------------- access


@pytest.mark.parametrize(("ws", "who", "plan", "role", "can_deploy"), [
    ("team", "mia", None, "member", False),
    ("team", "mia", "pro", "member", True),
    ("team", "bill", "pro", "billing", True),
    ("team", "olivia", "pro", "owner", True),
    ("team", "otto", "pro", None, False),
    ("acme", "ghm", "pro", "member", True),
    ("acme", "ghm", None, "member", False),
    ("acme", "gho", "pro", "owner", True),
    ("acme", "olivia", "pro", None, False),
    ("gone", "gho", "pro", "owner", False),   # disconnected: not active
    ("gone", "gha", "pro", None, False),
    ("personal", "olivia", "pro", "owner", True),
    ("personal", "otto", "pro", None, False),
])
def test_access(world: World, cast: Cast, ws: str, who: str, plan: str | None, role: str | None,
                can_deploy: bool) -> None:
    if plan:
        resp = world.client.post(f"/v1/admin/workspaces/{cast[ws]}/subscription", json={"plan": plan},
                                 headers={"Authorization": f"Bearer {ADMIN}"})
        assert resp.status_code == 200
    body = call(world, "GET", f"/v1/workspaces/{cast[ws]}/access/{who}").get_json()
    assert body["role"] == role and body["can_deploy"] is can_deploy
    assert body["user"] == {"id": cast[who], "username": who}
    assert body["workspace"]["id"] == cast[ws]


def test_access_to_unknown_workspace_is_404(world: World, cast: Cast) -> None:
    resp = call(world, "GET", "/v1/workspaces/nope/access/olivia")
    assert resp.status_code == 404 and resp.get_json()["error"] == "workspace_not_found"


# --------------------------------------------------------------------------- SQL statements per request


@contextmanager
def count_statements(world: World) -> Iterator[list[str]]:
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(world.runtime.engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(world.runtime.engine, "before_cursor_execute", before)


def _user_in(world: World, n: int, tag: str) -> None:
    """User ``tag`` in n managed workspaces (as a member) plus their personal
    one, and in one provider workspace through the roster."""
    with world.session() as s:
        owner = users.sign_up(s, f"{tag}-owner")
        user, _ = store.get_or_create_user_for_identity(s, "github", hash(tag) % 10**6 + 10**6, tag, actor="test")
        for i in range(n):
            ws = managed.create_workspace(s, f"{tag}-ws-{i:03d}", owner, managed.OPERATOR)
            _inv, token = managed.create_invitation(s, ws, "member", managed.OPERATOR)
            req, _ = managed.request_to_join(s, token, user)
            managed.decide_request(s, ws, req.id, True, managed.OPERATOR)
        org = store.create_provider_workspace(s, "github", hash(tag) % 10**6 + 5 * 10**6, f"{tag}-org",
                                              actor="test", installation_id=1)
        ident = user.identities[0]
        store.apply_roster_changes(s, org, adds=[store.StoredMember(ident.provider_user_id, tag, "admin")],
                                   actor="test")


@pytest.mark.parametrize("ref_kind", ["username", "github"])
def test_hot_reads_cost_a_fixed_number_of_statements(world: World, ref_kind: str) -> None:
    counts: dict[str, list[int]] = {"workspaces": [], "access": []}
    for n, tag in ((3, "small"), (40, "large")):
        _user_in(world, n, tag)
        with world.session() as s:
            ident = store.get_user(s, tag).identities[0]
        ref = tag if ref_kind == "username" else f"github:{ident.provider_user_id}"
        with count_statements(world) as seen:
            body = call(world, "GET", f"/v1/users/{ref}/workspaces").get_json()
        assert len(body["workspaces"]) == n + 2
        counts["workspaces"].append(len(seen))
        with count_statements(world) as seen:
            body = call(world, "GET", f"/v1/workspaces/{tag}-ws-001/access/{ref}").get_json()
        assert body["role"] == "member"
        counts["access"].append(len(seen))
    assert counts["workspaces"][0] == counts["workspaces"][1], counts
    assert counts["access"][0] == counts["access"][1], counts
    # Small in absolute terms too: find the user (and its identity), one read
    # of roles; find the workspace, the user, one read of the role.
    assert counts["workspaces"][0] <= 4 and counts["access"][0] <= 5, counts
