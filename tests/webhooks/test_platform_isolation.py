"""Isolation (SPEC section 3) through the platform API, on SQLite and
PostgreSQL: two managed workspaces, each with its own owner, admin and
member. Nothing of A is readable, changeable or invitable through B's
references, tokens or ids: not with B's request or invitation ids under A's
name (nor A's under B's), not with forged or altered invitation tokens, not
by B's people acting on A."""
from __future__ import annotations

from typing import Any

import pytest

from models import managed, store, users
from tests.app_world import MakeWorld, World
from tests.webhooks.platform_helpers import call, fingerprint, platform_world


@pytest.fixture
def world(make_world: MakeWorld) -> World:
    return platform_world(make_world)


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
