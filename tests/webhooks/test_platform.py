"""The platform API (webhooks/platform.py; SPEC sections 3 and 4), on SQLite and
PostgreSQL.

Rules: every rule of SPEC section 3 through the platform API: who may do what
to which kind of workspace, and the code each refusal answers. A refusal
changes nothing (every row of every table); a change is visible to the caller
and logged with actor ``user:<id>``.

Users: users, a user's workspaces and the access question; and the fixed
number of SQL statements each of the two hot reads costs, whatever the number
of workspaces.

Isolation (SPEC section 3): two managed workspaces, each with its own owner,
admin and member. Nothing of A is readable, changeable or invitable through
B's references, tokens or ids: not with B's request or invitation ids under
A's name (nor A's under B's), not with forged or altered invitation tokens,
not by B's people acting on A."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from models import managed, store, users
from models.errors import StoreError
from tests.app_world import MakeWorld, World
from tests.webhooks.conftest import statements
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


# --------------------------------------------------------------------------- rules

# (action, workspace, acting user, target user) -> (status, error code or None)
# Workspaces: team (managed), personal (olivia's), acme (provider, connected),
# gone (provider, disconnected; only its owner gho keeps access).
RULES: list[tuple[str, str, str, str | None, int, str | None]] = [
    # managed: only the owner renames or deletes
    ("rename", "team", "olivia", None, 200, None),
    ("rename", "team", "adam", None, 403, "forbidden"),
    ("rename", "team", "mia", None, 403, "forbidden"),
    ("rename", "team", "bill", None, 403, "forbidden"),
    ("rename", "team", "otto", None, 403, "forbidden"),
    ("delete", "team", "olivia", None, 204, None),
    ("delete", "team", "adam", None, 403, "forbidden"),
    ("delete", "team", "mia", None, 403, "forbidden"),
    ("delete", "team", "otto", None, 403, "forbidden"),
    # managed: the owner and admins invite, change roles, remove members
    ("invite", "team", "olivia", None, 201, None),
    ("invite", "team", "adam", None, 201, None),
    ("invite", "team", "mia", None, 403, "forbidden"),
    ("invite", "team", "bill", None, 403, "forbidden"),
    ("invite", "team", "otto", None, 403, "forbidden"),
    ("role", "team", "olivia", "mia", 200, None),
    ("role", "team", "adam", "mia", 200, None),
    ("role", "team", "mia", "mia", 403, "forbidden"),
    ("role", "team", "bill", "mia", 403, "forbidden"),
    ("role", "team", "otto", "mia", 403, "forbidden"),
    ("role", "team", "adam", "otto", 404, "member_not_found"),
    ("remove", "team", "olivia", "mia", 204, None),
    ("remove", "team", "adam", "mia", 204, None),
    ("remove", "team", "mia", "mia", 204, None),  # a member may leave
    ("remove", "team", "bill", "mia", 403, "forbidden"),
    ("remove", "team", "otto", "mia", 403, "forbidden"),
    ("remove", "team", "adam", "otto", 404, "member_not_found"),
    # nobody removes or demotes the owner except by a transfer
    ("role", "team", "adam", "olivia", 409, "cannot_change_owner"),
    ("role", "team", "olivia", "olivia", 409, "cannot_change_owner"),
    ("remove", "team", "adam", "olivia", 409, "cannot_change_owner"),
    ("remove", "team", "olivia", "olivia", 409, "cannot_change_owner"),
    # personal: never renamed by hand, deleted or joined
    ("rename", "personal", "olivia", None, 409, "cannot_rename"),
    ("delete", "personal", "olivia", None, 409, "cannot_delete"),
    ("invite", "personal", "olivia", None, 409, "cannot_invite"),
    ("role", "personal", "olivia", "otto", 409, "personal_workspace"),
    ("remove", "personal", "olivia", "otto", 409, "personal_workspace"),
    ("rename", "personal", "otto", None, 403, "forbidden"),
    ("delete", "personal", "otto", None, 403, "forbidden"),
    ("invite", "personal", "otto", None, 403, "forbidden"),
    # provider: name and membership are the provider's; not deleted while connected
    ("rename", "acme", "gho", None, 409, "provider_managed"),
    ("rename", "acme", "gha", None, 409, "provider_managed"),
    ("delete", "acme", "gho", None, 409, "cannot_delete"),
    ("delete", "acme", "gha", None, 409, "cannot_delete"),
    ("delete", "acme", "ghm", None, 409, "cannot_delete"),
    ("invite", "acme", "gho", None, 409, "cannot_invite"),
    ("invite", "acme", "gha", None, 409, "cannot_invite"),
    ("role", "acme", "gho", "ghm", 409, "provider_managed"),
    ("remove", "acme", "gha", "ghm", 409, "provider_managed"),
    ("delete", "acme", "otto", None, 403, "forbidden"),
    ("invite", "acme", "otto", None, 403, "forbidden"),
    # provider, disconnected: deleted by its owner; roster access has ended
    ("delete", "gone", "gho", None, 204, None),
    ("delete", "gone", "gha", None, 403, "forbidden"),
    ("delete", "gone", "ghm", None, 403, "forbidden"),
    ("rename", "gone", "gho", None, 409, "provider_managed"),
    ("invite", "gone", "gho", None, 409, "cannot_invite"),
]


def _request(action: str, ws: str, target: str | None) -> tuple[str, str, dict[str, Any] | None]:
    if action == "rename":
        return "PATCH", f"/v1/workspaces/{ws}", {"name": "renamed"}
    if action == "delete":
        return "DELETE", f"/v1/workspaces/{ws}", None
    if action == "invite":
        return "POST", f"/v1/workspaces/{ws}/invitations", {"role": "member"}
    if action == "role":
        return "PATCH", f"/v1/workspaces/{ws}/members/{target}", {"role": "billing"}
    return "DELETE", f"/v1/workspaces/{ws}/members/{target}", None


EXPECTED_ACTION = {"rename": "workspace.renamed", "delete": "workspace.deleted", "invite": "invitation.created",
                   "role": "member.role_changed", "remove": "member.removed"}


@pytest.mark.parametrize(("action", "ws", "actor", "target", "status", "code"), RULES,
                         ids=[f"{a}-{w}-by-{u}" + (f"-on-{t}" if t else "") for a, w, u, t, _, _ in RULES])
def test_rule(world: World, cast: Cast, action: str, ws: str, actor: str, target: str | None,
              status: int, code: str | None) -> None:
    ws_id = cast[ws]
    method, path, body = _request(action, ws_id, target)
    before, seq = fingerprint(world), last_seq(world)
    resp = call(world, method, path, actor, body)
    assert resp.status_code == status, resp.get_data(as_text=True)
    if code is not None:
        err = resp.get_json()
        assert err["error"] == code and err["message"], err
        assert fingerprint(world) == before, "a refused call changed the store"
        return
    # One change, logged on the acting user's behalf, visible to the caller.
    entries = activity_after(world, seq)
    assert [e.action for e in entries] == [EXPECTED_ACTION[action]]
    assert entries[0].actor == f"user:{cast[actor]}" and entries[0].workspace_id == ws_id
    if target is not None:
        assert entries[0].subject == cast[target]
    members = {m["user"]["username"]: m["role"]
               for m in call(world, "GET", f"/v1/workspaces/{ws_id}/members").get_json().get("members", [])
               if m["user"]}
    if action == "rename":
        assert call(world, "GET", f"/v1/workspaces/{ws_id}").get_json()["name"] == "renamed"
    elif action == "delete":
        assert call(world, "GET", f"/v1/workspaces/{ws_id}").status_code == 404
    elif action == "invite":
        assert resp.get_json()["invitation"]["token"].startswith("inv_")
    elif action == "role":
        assert members[str(target)] == "billing"
    else:
        assert str(target) not in members


@pytest.mark.parametrize(("action", "ws", "target", "status", "code"), [
    # Operators: the role checks do not bind them, the store's rules do.
    ("rename", "team", None, 200, None),
    ("delete", "team", None, 204, None),
    ("invite", "team", None, 201, None),
    ("role", "team", "mia", 200, None),
    ("remove", "team", "mia", 204, None),
    ("role", "team", "olivia", 409, "cannot_change_owner"),
    ("rename", "personal", None, 409, "cannot_rename"),
    ("delete", "personal", None, 409, "cannot_delete"),
    ("invite", "personal", None, 409, "cannot_invite"),
    ("rename", "acme", None, 409, "provider_managed"),
    ("delete", "acme", None, 409, "cannot_delete"),
    ("invite", "acme", None, 409, "cannot_invite"),
    ("remove", "acme", "ghm", 409, "provider_managed"),
    ("delete", "gone", None, 204, None),
])
def test_operator_bound_by_store_rules_not_roles(world: World, cast: Cast, action: str, ws: str,
                                                 target: str | None, status: int, code: str | None) -> None:
    before, seq = fingerprint(world), last_seq(world)

    def act(s: Any) -> None:
        w = store.get_workspace(s, cast[ws])
        t = store.get_user(s, target) if target else None
        op = managed.OPERATOR
        if action == "rename":
            managed.rename_workspace(s, w, "renamed", op)
        elif action == "delete":
            managed.delete_workspace(s, w, op)
        elif action == "invite":
            managed.create_invitation(s, w, "member", op)
        elif action == "role":
            assert t is not None
            managed.change_role(s, w, t, "billing", op)
        else:
            assert t is not None
            managed.remove_member(s, w, t, op)

    if code is None:
        with world.session() as s:
            act(s)
        entries = activity_after(world, seq)
        assert [(e.action, e.actor) for e in entries] == [(EXPECTED_ACTION[action], "operator")]
    else:
        with pytest.raises(StoreError) as err, world.session() as s:
            act(s)
        assert err.value.code == code and err.value.status == status
        assert fingerprint(world) == before


# --------------------------------------------------------------------------- acting user

CHANGES = [
    ("POST", "/v1/workspaces", {"name": "new-team"}),
    ("PATCH", "/v1/workspaces/team", {"name": "x"}),
    ("DELETE", "/v1/workspaces/team", None),
    ("POST", "/v1/workspaces/team/invitations", {"role": "member"}),
    ("DELETE", "/v1/workspaces/team/invitations/1", None),
    ("POST", "/v1/invitations/inv_x/requests", None),
    ("POST", "/v1/workspaces/team/requests/1/approve", None),
    ("POST", "/v1/workspaces/team/requests/1/deny", None),
    ("PATCH", "/v1/workspaces/team/members/mia", {"role": "admin"}),
    ("DELETE", "/v1/workspaces/team/members/mia", None),
]


@pytest.mark.parametrize(("method", "path", "body"), CHANGES, ids=[f"{m} {p}" for m, p, _ in CHANGES])
@pytest.mark.parametrize(("user", "code"), [
    (None, "missing_user"), ("", "missing_user"), ("   ", "missing_user"), ("nobody", "unknown_user"),
    ("github:999", "unknown_user"), ("gitlab:abc", "unknown_user"), ("usr_0000000000000000", "unknown_user"),
])
def test_changes_need_a_known_acting_user(world: World, cast: Cast, method: str, path: str,
                                          body: dict[str, Any] | None, user: str | None, code: str) -> None:
    before = fingerprint(world)
    resp = call(world, method, path, user, body)
    assert resp.status_code == 400 and resp.get_json()["error"] == code, resp.get_data(as_text=True)
    assert fingerprint(world) == before


@pytest.mark.parametrize("ref", ["olivia", "OLIVIA", "id", "github:1"])
def test_acting_user_by_any_reference(world: World, cast: Cast, ref: str) -> None:
    user = {"olivia": "olivia", "OLIVIA": "OLIVIA", "id": cast["olivia"], "github:1": "github:1"}[ref]
    resp = call(world, "POST", "/v1/workspaces", user, {"name": "mine"})
    assert resp.status_code == 201
    owner = "gho" if ref == "github:1" else "olivia"
    assert resp.get_json()["owner"]["username"] == owner
    entries = [a for a in call(world, "GET", "/v1/changes?limit=1000").get_json()["changes"]
               if a["workspace"] == resp.get_json()["id"]]
    assert {a["actor"] for a in entries} == {f"user:{cast[owner]}"}


# --------------------------------------------------------------------------- create and rename

@pytest.mark.parametrize(("name", "status", "code"), [
    ("new-team", 201, None),
    ("TEAM", 409, "name_taken"),      # names are unique case-insensitively
    ("acme", 409, "name_taken"),      # a provider workspace's name
    ("olivia", 409, "name_taken"),    # a personal workspace's name
    ("", 400, "invalid_request"),
    ("a b", 400, "invalid_name"),
    ("github:acme", 400, "invalid_name"),
    ("ws_123", 400, "invalid_name"),
    ("-lead", 400, "invalid_name"),
    ("x" * 256, 400, "invalid_name"),
    (7, 400, "invalid_request"),
    (None, 400, "invalid_request"),
])
def test_create_managed_workspace(world: World, cast: Cast, name: Any, status: int, code: str | None) -> None:
    before = fingerprint(world)
    resp = call(world, "POST", "/v1/workspaces", "otto", {"name": name})
    assert resp.status_code == status, resp.get_data(as_text=True)
    if code:
        assert resp.get_json()["error"] == code
        assert fingerprint(world) == before
        return
    ws = resp.get_json()
    assert ws["kind"] == "managed" and ws["owner"]["username"] == "otto" and ws["name"] == name
    listed = call(world, "GET", "/v1/users/otto/workspaces").get_json()["workspaces"]
    assert {(w["name"], w["role"]) for w in listed} == {("otto", "owner"), (name, "owner")}


@pytest.mark.parametrize(("name", "status", "code"), [
    ("Team", 200, None),            # a change of case is the same name
    ("acme", 409, "name_taken"),
    ("a/b", 400, "invalid_name"),
    (["x"], 400, "invalid_request"),
])
def test_rename_rules(world: World, cast: Cast, name: Any, status: int, code: str | None) -> None:
    before = fingerprint(world)
    resp = call(world, "PATCH", f"/v1/workspaces/{cast['team']}", "olivia", {"name": name})
    assert resp.status_code == status, resp.get_data(as_text=True)
    if code:
        assert resp.get_json()["error"] == code
        assert fingerprint(world) == before
    else:
        assert call(world, "GET", "/v1/workspaces/team").get_json()["name"] == name


# --------------------------------------------------------------------------- invitations and requests


def _invite(world: World, cast: Cast, role: str = "member", user: str = "adam", **extra: Any) -> dict[str, Any]:
    resp = call(world, "POST", f"/v1/workspaces/{cast['team']}/invitations", user, {"role": role, **extra})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    return resp.get_json()["invitation"]  # type: ignore[no-any-return]


def test_invite_request_approve(world: World, cast: Cast) -> None:
    inv = _invite(world, cast, "admin")
    assert inv["status"] == "active" and inv["role"] == "admin"
    resp = call(world, "POST", f"/v1/invitations/{inv['token']}/requests", "otto")
    assert resp.status_code == 202
    req = resp.get_json()["request"]
    assert req["status"] == "requested" and req["workspace"]["id"] == cast["team"]
    assert call(world, "GET", f"/v1/workspaces/{cast['team']}/access/otto").get_json()["role"] is None
    # Asking twice returns the pending request; nothing new is logged.
    seq = last_seq(world)
    again = call(world, "POST", f"/v1/invitations/{inv['token']}/requests", "otto").get_json()["request"]
    assert again["id"] == req["id"] and activity_after(world, seq) == []
    resp = call(world, "POST", f"/v1/workspaces/{cast['team']}/requests/{req['id']}/approve", "olivia")
    assert resp.status_code == 200 and resp.get_json()["request"]["status"] == "approved"
    assert call(world, "GET", f"/v1/workspaces/{cast['team']}/access/otto").get_json()["role"] == "admin"
    # Decided once.
    resp = call(world, "POST", f"/v1/workspaces/{cast['team']}/requests/{req['id']}/deny", "olivia")
    assert resp.status_code == 409 and resp.get_json()["error"] == "invalid_state"
    # A member does not ask again.
    resp = call(world, "POST", f"/v1/invitations/{inv['token']}/requests", "otto")
    assert resp.status_code == 409 and resp.get_json()["error"] == "already_member"
    actions = [(a["action"], a["actor"], a["subject"]) for a in
               call(world, "GET", f"/v1/workspaces/{cast['team']}/activity?after={0}&limit=1000")
               .get_json()["activity"]][-3:]
    assert actions == [("invitation.created", f"user:{cast['adam']}", None),
                       ("member.requested", f"user:{cast['otto']}", cast["otto"]),
                       ("member.added", f"user:{cast['olivia']}", cast["otto"])]


def test_deny_gives_no_access(world: World, cast: Cast) -> None:
    inv = _invite(world, cast)
    req = call(world, "POST", f"/v1/invitations/{inv['token']}/requests", "otto").get_json()["request"]
    resp = call(world, "POST", f"/v1/workspaces/team/requests/{req['id']}/deny", "adam")
    assert resp.status_code == 200 and resp.get_json()["request"]["status"] == "denied"
    assert call(world, "GET", "/v1/workspaces/team/access/otto").get_json() ["role"] is None
    listed = call(world, "GET", "/v1/workspaces/team/requests").get_json()["requests"]
    assert [(r["user"]["username"], r["status"]) for r in listed if r["id"] == req["id"]] == [("otto", "denied")]


@pytest.mark.parametrize(("actor", "status", "code"), [
    ("olivia", 200, None), ("adam", 200, None), ("mia", 403, "forbidden"), ("bill", 403, "forbidden"),
    ("otto", 403, "forbidden"),
])
def test_who_decides_requests(world: World, cast: Cast, actor: str, status: int, code: str | None) -> None:
    inv = _invite(world, cast)
    with world.session() as s:
        gho = store.get_user(s, "gho")
        req, _ = managed.request_to_join(s, inv["token"], gho)
        req_id = req.id
    before = fingerprint(world)
    resp = call(world, "POST", f"/v1/workspaces/team/requests/{req_id}/approve", actor)
    assert resp.status_code == status
    if code:
        assert resp.get_json()["error"] == code and fingerprint(world) == before
    else:
        assert call(world, "GET", "/v1/workspaces/team/access/gho").get_json()["role"] == "member"


@pytest.mark.parametrize(("body", "code"), [
    ({"role": "owner"}, "invalid_role"), ({"role": "root"}, "invalid_role"), ({"role": 1}, "invalid_role"),
    ({"role": "member", "expires_in": 10}, "invalid_expiry"),
    ({"role": "member", "expires_in": 10**9}, "invalid_expiry"),
    ({"role": "member", "expires_in": "1d"}, "invalid_expiry"),
    ({"role": "member", "expires_in": True}, "invalid_expiry"),
    ([1], "invalid_request"),
])
def test_bad_invitations_are_400(world: World, cast: Cast, body: Any, code: str) -> None:
    before = fingerprint(world)
    resp = call(world, "POST", "/v1/workspaces/team/invitations", "olivia", body)
    assert resp.status_code == 400 and resp.get_json()["error"] == code
    assert fingerprint(world) == before


def test_invitation_defaults_member_and_seven_days(world: World, cast: Cast) -> None:
    from datetime import UTC, datetime, timedelta

    resp = call(world, "POST", "/v1/workspaces/team/invitations", "olivia")
    inv = resp.get_json()["invitation"]
    assert resp.status_code == 201 and inv["role"] == "member"
    left = datetime.fromisoformat(inv["expires_at"]) - datetime.now(UTC)
    assert timedelta(days=6, hours=23) < left <= timedelta(days=7)
    # The list never shows the token again, and the store keeps only its hash.
    listed = call(world, "GET", "/v1/workspaces/team/invitations").get_json()["invitations"]
    assert [i["token"] for i in listed if i["id"] == inv["id"]] == [None]
    with world.session() as s:
        row = s.get(managed.Invitation, inv["id"])
        assert row is not None and row.token_hash == managed.hash_token(inv["token"])
        assert inv["token"] not in repr(row.__dict__)


@pytest.mark.parametrize("how", ["expired", "revoked"])
def test_expired_or_revoked_link_is_410(world: World, cast: Cast, how: str) -> None:
    from datetime import timedelta

    from models.tables import utcnow

    inv = _invite(world, cast)
    if how == "expired":
        with world.session() as s:
            row = s.get(managed.Invitation, inv["id"])
            assert row is not None
            row.expires_at = utcnow() - timedelta(seconds=1)
        listed = call(world, "GET", "/v1/workspaces/team/invitations").get_json()["invitations"]
        assert [i["status"] for i in listed if i["id"] == inv["id"]] == ["expired"]
    else:
        resp = call(world, "DELETE", f"/v1/workspaces/team/invitations/{inv['id']}", "adam")
        assert resp.status_code == 204
        # Revoking again is not an error and logs nothing more.
        seq = last_seq(world)
        assert call(world, "DELETE", f"/v1/workspaces/team/invitations/{inv['id']}", "adam").status_code == 204
        assert activity_after(world, seq) == []
    before = fingerprint(world)
    resp = call(world, "POST", f"/v1/invitations/{inv['token']}/requests", "otto")
    assert resp.status_code == 410 and resp.get_json()["error"] == "invitation_expired"
    assert fingerprint(world) == before


@pytest.mark.parametrize("actor", ["mia", "bill", "otto"])
def test_only_managers_revoke(world: World, cast: Cast, actor: str) -> None:
    inv = _invite(world, cast)
    before = fingerprint(world)
    resp = call(world, "DELETE", f"/v1/workspaces/team/invitations/{inv['id']}", actor)
    assert resp.status_code == 403 and fingerprint(world) == before


@pytest.mark.parametrize("role", ["owner", "root", None])
def test_bad_member_roles(world: World, cast: Cast, role: Any) -> None:
    before = fingerprint(world)
    resp = call(world, "PATCH", "/v1/workspaces/team/members/mia", "olivia", {"role": role})
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_role"
    assert fingerprint(world) == before


# --------------------------------------------------------------------------- transfer wording


def test_transfer_to_roster_member_without_account_says_so(world: World, cast: Cast) -> None:
    from tests.webhooks.platform_helpers import ADMIN

    before = fingerprint(world)
    for to in ("dev0", "DEV0", "github:4"):
        resp = world.client.post(f"/v1/admin/workspaces/{cast['acme']}/transfer", json={"to": to},
                                 headers={"Authorization": f"Bearer {ADMIN}"})
        err = resp.get_json()
        assert resp.status_code == 409 and err["error"] == "invalid_transfer", err
        assert "dev0" in err["message"] and "no account yet" in err["message"]
        assert "no user" not in err["message"]
    resp = world.client.post(f"/v1/admin/workspaces/{cast['acme']}/transfer", json={"to": "ghost"},
                             headers={"Authorization": f"Bearer {ADMIN}"})
    assert resp.status_code == 404 and resp.get_json()["error"] == "user_not_found"
    assert fingerprint(world) == before


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
        with statements(world) as seen:
            body = call(world, "GET", f"/v1/users/{ref}/workspaces").get_json()
        assert len(body["workspaces"]) == n + 2
        counts["workspaces"].append(len(seen))
        with statements(world) as seen:
            body = call(world, "GET", f"/v1/workspaces/{tag}-ws-001/access/{ref}").get_json()
        assert body["role"] == "member"
        counts["access"].append(len(seen))
    assert counts["workspaces"][0] == counts["workspaces"][1], counts
    assert counts["access"][0] == counts["access"][1], counts
    # Small in absolute terms too: find the user (and its identity), one read
    # of roles; find the workspace, the user, one read of the role.
    assert counts["workspaces"][0] <= 4 and counts["access"][0] <= 5, counts


# --------------------------------------------------------------------------- isolation


@pytest.fixture
def two(world: World) -> dict[str, Any]:
    """Workspaces a and b; a-owner/a-admin/a-member, b-owner/b-admin/b-member;
    each has a live invitation and a pending request (by x-asker)."""
    out: dict[str, Any] = {}
    with world.session() as s:
        for side in ("a", "b"):
            owner = users.sign_up(s, f"{side}-owner")
            ws = managed.create_workspace(s, f"ws-{side}", owner, managed.OPERATOR)
            out[side] = ws.id
            for role in ("admin", "member"):
                _inv, token = managed.create_invitation(s, ws, role, managed.OPERATOR)
                req, _ = managed.request_to_join(s, token, users.sign_up(s, f"{side}-{role}"))
                managed.decide_request(s, ws, req.id, True, managed.OPERATOR)
            inv, token = managed.create_invitation(s, ws, "member", managed.OPERATOR)
            req, _ = managed.request_to_join(s, token, users.sign_up(s, f"{side}-asker"))
            out[f"{side}_inv"], out[f"{side}_token"], out[f"{side}_req"] = str(inv.id), token, str(req.id)
    return out


def _a_state(world: World, a: str) -> Any:
    return (call(world, "GET", f"/v1/workspaces/{a}").get_json(),
            call(world, "GET", f"/v1/workspaces/{a}/members").get_json(),
            call(world, "GET", f"/v1/workspaces/{a}/invitations").get_json(),
            call(world, "GET", f"/v1/workspaces/{a}/requests").get_json())


# Calls that would touch A, made through B's references or by B's people.
# (method, path template, acting user, body, expected status, expected code)
ATTACKS: list[tuple[str, str, str, Any, int, str]] = [
    # A's ids under B's name: not found there.
    ("POST", "/v1/workspaces/{b}/requests/{a_req}/approve", "b-owner", None, 404, "request_not_found"),
    ("POST", "/v1/workspaces/{b}/requests/{a_req}/deny", "b-admin", None, 404, "request_not_found"),
    ("DELETE", "/v1/workspaces/{b}/invitations/{a_inv}", "b-owner", None, 404, "invitation_not_found"),
    ("PATCH", "/v1/workspaces/{b}/members/a-member", "b-owner", {"role": "admin"}, 404, "member_not_found"),
    ("DELETE", "/v1/workspaces/{b}/members/a-admin", "b-owner", None, 404, "member_not_found"),
    # B's people acting on A directly: no access there.
    ("POST", "/v1/workspaces/{a}/requests/{a_req}/approve", "b-owner", None, 403, "forbidden"),
    ("POST", "/v1/workspaces/{a}/requests/{b_req}/approve", "b-owner", None, 403, "forbidden"),
    ("POST", "/v1/workspaces/{a}/requests/{a_req}/deny", "b-admin", None, 403, "forbidden"),
    ("DELETE", "/v1/workspaces/{a}/invitations/{a_inv}", "b-admin", None, 403, "forbidden"),
    ("POST", "/v1/workspaces/{a}/invitations", "b-owner", {"role": "admin"}, 403, "forbidden"),
    ("PATCH", "/v1/workspaces/{a}/members/a-member", "b-owner", {"role": "admin"}, 403, "forbidden"),
    ("DELETE", "/v1/workspaces/{a}/members/a-member", "b-admin", None, 403, "forbidden"),
    ("PATCH", "/v1/workspaces/{a}", "b-owner", {"name": "stolen"}, 403, "forbidden"),
    ("DELETE", "/v1/workspaces/{a}", "b-owner", None, 403, "forbidden"),
    # A's managers using B's ids under A's name: not found in A.
    ("POST", "/v1/workspaces/{a}/requests/{b_req}/approve", "a-owner", None, 404, "request_not_found"),
    ("DELETE", "/v1/workspaces/{a}/invitations/{b_inv}", "a-owner", None, 404, "invitation_not_found"),
    # Forged and altered invitation tokens.
    ("POST", "/v1/invitations/{forged}/requests", "b-member", None, 404, "invitation_not_found"),
    ("POST", "/v1/invitations/{a_token_altered}/requests", "b-member", None, 404, "invitation_not_found"),
    ("POST", "/v1/invitations/{a_token_hash}/requests", "b-member", None, 404, "invitation_not_found"),
    ("POST", "/v1/invitations/{a_inv}/requests", "b-member", None, 404, "invitation_not_found"),
    ("POST", "/v1/invitations/inv_/requests", "b-member", None, 404, "invitation_not_found"),
    # Nonsense ids.
    ("POST", "/v1/workspaces/{a}/requests/0/approve", "a-owner", None, 404, "request_not_found"),
    ("POST", "/v1/workspaces/{a}/requests/-1/approve", "a-owner", None, 404, "request_not_found"),
    ("POST", "/v1/workspaces/{a}/requests/99999999999999999999/approve", "a-owner", None, 404,
     "request_not_found"),
    ("DELETE", "/v1/workspaces/{a}/invitations/²", "a-owner", None, 404, "invitation_not_found"),
]


@pytest.mark.parametrize(("method", "template", "actor", "body", "status", "code"), ATTACKS,
                         ids=[f"{m} {t} as {u}" for m, t, u, _, _, _ in ATTACKS])
def test_nothing_of_a_through_b(world: World, two: dict[str, Any], method: str, template: str, actor: str,
                                body: Any, status: int, code: str) -> None:
    token = two["a_token"]
    values = {**two, "forged": "inv_" + "A" * 43,
              "a_token_altered": token[:-1] + ("A" if token[-1] != "A" else "B"),
              "a_token_hash": managed.hash_token(token)}
    path = template.format(**values)
    before_a, before = _a_state(world, two["a"]), fingerprint(world)
    resp = call(world, method, path, actor, body)
    assert resp.status_code == status, resp.get_data(as_text=True)
    err = resp.get_json()
    assert err["error"] == code and err["message"]
    assert fingerprint(world) == before and _a_state(world, two["a"]) == before_a


def test_a_invitation_token_joins_a_only(world: World, two: dict[str, Any]) -> None:
    """A's link is a request to join A, whoever holds it: never B."""
    resp = call(world, "POST", f"/v1/invitations/{two['a_token']}/requests", "b-member")
    assert resp.status_code == 202
    req = resp.get_json()["request"]
    assert req["workspace"]["id"] == two["a"]
    # B's owner cannot approve it, under either name; A's owner can.
    for ref, status in ((two["b"], 404), (two["a"], 403)):
        assert call(world, "POST", f"/v1/workspaces/{ref}/requests/{req['id']}/approve",
                    "b-owner").status_code == status
    assert call(world, "POST", f"/v1/workspaces/{two['a']}/requests/{req['id']}/approve",
                "a-owner").status_code == 200
    a_roles = call(world, "GET", f"/v1/workspaces/{two['a']}/access/b-member").get_json()["role"]
    b_roles = call(world, "GET", f"/v1/workspaces/{two['b']}/access/b-member").get_json()["role"]
    assert (a_roles, b_roles) == ("member", "member")


def test_lists_show_only_their_workspace(world: World, two: dict[str, Any]) -> None:
    for side, other in (("a", "b"), ("b", "a")):
        invs = call(world, "GET", f"/v1/workspaces/{two[side]}/invitations").get_json()["invitations"]
        reqs = call(world, "GET", f"/v1/workspaces/{two[side]}/requests").get_json()["requests"]
        assert invs and {i["workspace"] for i in invs} == {two[side]}
        assert reqs and {r["workspace"]["id"] for r in reqs} == {two[side]}
        assert two[f"{other}_inv"] not in {str(i["id"]) for i in invs if i["status"] == "active"}
        assert all(i["token"] is None for i in invs)
        names = [w["name"] for w in
                 call(world, "GET", f"/v1/users/{side}-member/workspaces").get_json()["workspaces"]]
        assert f"ws-{other}" not in names and f"ws-{side}" in names


def test_same_name_at_github_and_gitlab_are_different_workspaces(world: World) -> None:
    with world.session() as s:
        gh = store.create_provider_workspace(s, "github", 10, "same", actor="test", installation_id=1)
        gl = store.create_provider_workspace(s, "gitlab", 10, "same", actor="test")
        store.get_or_create_user_for_identity(s, "github", 77, "octo", actor="test")
        store.apply_roster_changes(s, gh, adds=[store.StoredMember(77, "octo", "admin")], actor="test")
        # The same numeric id at GitLab is another person.
        store.apply_roster_changes(s, gl, adds=[store.StoredMember(77, "someone-else", "admin")], actor="test")
        ids = (gh.id, gl.id)
    assert call(world, "GET", f"/v1/workspaces/{ids[0]}/access/octo").get_json()["role"] == "admin"
    assert call(world, "GET", f"/v1/workspaces/{ids[1]}/access/octo").get_json()["role"] is None
    names = [w["name"] for w in call(world, "GET", "/v1/users/octo/workspaces").get_json()["workspaces"]]
    assert names == ["octo", "same"]
