"""Every rule of SPEC section 3 through the platform API, on SQLite and
PostgreSQL: who may do what to which kind of workspace, and the code each
refusal answers. A refusal changes nothing (every row of every table); a
change is visible to the caller and logged with actor ``user:<id>``."""
from __future__ import annotations

from typing import Any

import pytest

from models import managed, store
from models.errors import StoreError
from tests.app_world import MakeWorld, World
from tests.webhooks.platform_helpers import (
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
