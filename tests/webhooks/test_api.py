"""Service reads and the admin API (webhooks/api.py; SPEC section 4), on SQLite
and PostgreSQL: authentication first, then every documented answer,
asserting what the caller sees and what changed in the store and the queues."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from rq import Queue
from sqlalchemy import select, update

from models import deliveries, lanes, store
from models.tables import Delivery, SyncRun
from tests.app_world import MakeWorld, World
from tests.webhooks.conftest import ADMIN, ADMIN_OLD, SERVICE


def admin(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def service() -> dict[str, str]:
    return {"Authorization": f"Bearer {SERVICE}"}


# --------------------------------------------------------------------------- authentication

PROTECTED = [
    ("GET", "/v1/workspaces/acme", "service"),
    ("GET", "/v1/workspaces/acme/members", "service"),
    ("GET", "/v1/workspaces/acme/activity", "service"),
    ("GET", "/v1/changes", "service"),
    ("POST", "/v1/admin/resync", "admin"),
    ("GET", "/v1/admin/status", "admin"),
    ("GET", "/v1/admin/deliveries", "admin"),
    ("POST", "/v1/admin/deliveries/x/replay", "admin"),
    ("POST", "/v1/admin/workspaces/acme/transfer", "admin"),
    ("POST", "/v1/admin/workspaces/acme/disconnect", "admin"),
    ("POST", "/v1/admin/workspaces/acme/subscription", "admin"),
]


@pytest.mark.parametrize(("method", "path", "kind"), PROTECTED)
@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic YWRtaW46eA==", "Bearer ", "other-kind"])
def test_bad_credentials_are_401_and_change_nothing(
    api: World, acme: dict[str, Any], method: str, path: str, kind: str, auth: str | None,
) -> None:
    if auth == "other-kind":  # a service token on the admin API and the reverse
        auth = f"Bearer {SERVICE if kind == 'admin' else ADMIN}"
    before = api.counts()
    headers = {"Authorization": auth} if auth is not None else {}
    resp = api.client.open(path, method=method, headers=headers, json={"target": "all", "to": "x", "plan": "p"})
    assert resp.status_code == 401
    assert resp.get_json()["error"] == "unauthorized"
    assert api.counts() == before
    assert Queue("sync", connection=api.redis).count == 0


@pytest.mark.parametrize(("method", "path", "kind"), PROTECTED)
def test_apis_are_off_without_configured_tokens(make_world: MakeWorld, method: str, path: str, kind: str) -> None:
    world = make_world()
    resp = world.client.open(path, method=method, headers=admin(), json={})
    assert resp.status_code == 403
    assert resp.get_json()["error"] == f"{kind}_api_disabled"


def test_rotated_admin_tokens_are_both_accepted(api: World) -> None:
    for token in (ADMIN, ADMIN_OLD):
        assert api.client.get("/v1/admin/status", headers=admin(token)).status_code == 200


# --------------------------------------------------------------------------- reads


def test_workspace_by_id_name_and_reference(api: World, acme: dict[str, Any]) -> None:
    answers = [api.client.get(f"/v1/workspaces/{ref}", headers=service()) for ref in
               (acme["ws"], "acme", "ACME", "github:acme", "github:9001")]
    assert {r.status_code for r in answers} == {200}
    body = answers[0].get_json()
    assert all(r.get_json() == body for r in answers)
    assert {k: body[k] for k in ("id", "name", "kind", "provider", "provider_org_id", "provider_org_login",
                                 "status", "subscription")} == {
        "id": acme["ws"], "name": "acme", "kind": "provider", "provider": "github",
        "provider_org_id": 9001, "provider_org_login": "acme", "status": "active", "subscription": None}
    assert body["owner"] == {"id": acme["u1"], "username": "user1"}


@pytest.mark.parametrize("ref", ["nope", "gitlab:acme", "github:1234"])
def test_unknown_workspace_is_404(api: World, acme: dict[str, Any], ref: str) -> None:
    for suffix in ("", "/members", "/activity"):
        resp = api.client.get(f"/v1/workspaces/{ref}{suffix}", headers=service())
        assert resp.status_code == 404 and resp.get_json()["error"] == "workspace_not_found"


def test_members_include_roster_members_without_an_account(api: World, acme: dict[str, Any]) -> None:
    body = api.client.get("/v1/workspaces/acme/members", headers=service()).get_json()
    assert body["workspace"]["id"] == acme["ws"]
    by_login = {m["login"]: m for m in body["members"]}
    assert by_login["user1"]["role"] == "owner" and by_login["user1"]["user"]["id"] == acme["u1"]
    assert by_login["user2"] == {"user": {"id": acme["u2"], "username": "user2"}, "provider_user_id": 2,
                                 "login": "user2", "role": "member", "source": "provider", "access": True}
    assert by_login["user3"]["user"] is None and by_login["user3"]["access"] is False


def test_activity_and_changes_page_by_sequence(api: World, acme: dict[str, Any]) -> None:
    other = api.github_workspace(9002, "other", roster={5: ("user5", "member")})
    everything = api.client.get("/v1/changes?limit=1000", headers=service()).get_json()["changes"]
    seqs = [e["seq"] for e in everything]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    assert {e["workspace"] for e in everything} >= {acme["ws"], other}

    page1 = api.client.get("/v1/changes?limit=2", headers=service()).get_json()
    page2 = api.client.get(f"/v1/changes?after={page1['next_after']}&limit=2", headers=service()).get_json()
    assert [e["seq"] for e in page1["changes"] + page2["changes"]] == seqs[:4]
    end = api.client.get(f"/v1/changes?after={seqs[-1]}", headers=service()).get_json()
    assert end == {"changes": [], "next_after": seqs[-1]}

    mine = api.client.get("/v1/workspaces/acme/activity", headers=service()).get_json()
    assert mine["workspace"] == acme["ws"]
    assert mine["activity"] and {e["workspace"] for e in mine["activity"]} == {acme["ws"]}
    assert {"workspace.created", "member.added", "ownership.changed"} <= {e["action"] for e in mine["activity"]}
    after = mine["activity"][0]["seq"]
    rest = api.client.get(f"/v1/workspaces/acme/activity?after={after}&limit=1", headers=service()).get_json()
    assert [e["seq"] for e in rest["activity"]] == [mine["activity"][1]["seq"]]


@pytest.mark.parametrize("query", ["after=-1", "after=x", "after=1.5", "limit=0", "limit=1001", "limit=abc",
                                   "after=99999999999999999999999"])
def test_bad_paging_parameters_are_400(api: World, acme: dict[str, Any], query: str) -> None:
    for path in ("/v1/changes", "/v1/workspaces/acme/activity"):
        resp = api.client.get(f"{path}?{query}", headers=service())
        assert resp.status_code == 400, (path, query, resp.get_json())
        assert resp.get_json()["error"] == "invalid_parameter"


# --------------------------------------------------------------------------- admin: resync


def test_resync_queues_one_sync_and_a_second_trigger_joins_it(api: World, acme: dict[str, Any]) -> None:
    resp = api.client.post("/v1/admin/resync", headers=admin(), json={"target": "acme"})
    assert resp.status_code == 202
    body = resp.get_json()
    [item] = body["queued"]
    assert item["workspace"] == acme["ws"] and item["job"]
    again = api.client.post("/v1/admin/resync", headers=admin(), json={"target": acme["ws"], "force": True})
    # The second trigger joins the owed one (one due time on the lane) and
    # makes it forced; an operator always rings the lane's bell, and a second
    # wake-up finds nothing left to do.
    assert again.status_code == 202 and again.get_json()["queued"][0]["workspace"] == acme["ws"]
    q = Queue("sync", connection=api.redis)
    assert {j.args for j in q.jobs} == {("github:9001",)}
    with api.session() as s:
        lane = lanes.get(s, "github:9001")
        assert lane is not None and lane.full_sync_due_at is not None and lane.full_sync_force is True
    api.drain()
    with api.session() as s:
        runs = s.scalars(select(SyncRun).where(SyncRun.workspace_id == acme["ws"], SyncRun.kind == "full")).all()
        assert [(r.trigger, r.forced) for r in runs] == [("operator", True)]
        assert lanes.get(s, "github:9001").full_sync_due_at is None  # type: ignore[union-attr]


def test_resync_all_queues_every_active_provider_workspace(api: World, acme: dict[str, Any]) -> None:
    other = api.github_workspace(9002, "other", installation_id=78)
    api.github_workspace(9003, "gone", status="disconnected")
    api.gitlab_workspace(500, "grp")
    body = api.client.post("/v1/admin/resync", headers=admin(), json={"target": "all"}).get_json()
    queued = {item["workspace"] for item in body["queued"]}
    assert acme["ws"] in queued and other in queued and len(queued) == 3
    assert Queue("sync", connection=api.redis).count == 3


@pytest.mark.parametrize(("body", "status", "error"), [
    ({}, 400, "invalid_request"),
    ({"target": ""}, 400, "invalid_request"),
    ({"target": 5}, 400, "invalid_request"),
    ({"target": "acme", "force": "yes"}, 400, "invalid_request"),
    ([1, 2], 400, "invalid_request"),
    ({"target": "nope"}, 404, "workspace_not_found"),
])
def test_resync_rejects_bad_requests(api: World, acme: dict[str, Any], body: Any, status: int, error: str) -> None:
    resp = api.client.post("/v1/admin/resync", headers=admin(), json=body)
    assert resp.status_code == status and resp.get_json()["error"] == error
    assert Queue("sync", connection=api.redis).count == 0


def test_resync_of_a_workspace_that_cannot_sync_is_409(api: World, acme: dict[str, Any]) -> None:
    api.github_workspace(9003, "gone", status="disconnected")
    with api.session() as s:
        personal = store.create_user(s, "alice", actor="test")
        del personal
    for target in ("gone", "alice"):
        resp = api.client.post("/v1/admin/resync", headers=admin(), json={"target": target})
        assert resp.status_code == 409 and resp.get_json()["error"] == "invalid_state"


def test_resync_with_redis_down_is_still_owed_and_swept_later(
    make_world: MakeWorld, down_fake_redis: Any
) -> None:
    world = make_world(admin_tokens=(ADMIN,), redis=down_fake_redis)
    world.github_workspace(9001, "acme", installation_id=77)
    resp = world.client.post("/v1/admin/resync", headers=admin(), json={"target": "acme"})
    # The request is a due time in the database: nothing is lost with Redis.
    assert resp.status_code == 202
    assert resp.get_json()["queued"][0]["job"] is None
    with world.session() as s:
        assert lanes.lanes_with_due_full_sync(s) == ["github:9001"]


# --------------------------------------------------------------------------- admin: status


def test_status_shows_last_syncs_held_syncs_deliveries_and_queues(api: World, acme: dict[str, Any]) -> None:
    now = datetime.now(UTC)
    with api.session() as s:
        s.add(SyncRun(workspace_id=acme["ws"], kind="full", trigger="schedule", result="ok", started_at=now,
                      finished_at=now, added=3, removed=0, changed=1, api_calls=4))
        s.add(SyncRun(workspace_id=acme["ws"], kind="full", trigger="schedule", result="held", started_at=now,
                      finished_at=now, api_calls=2, error="would remove 9 of 10 members"))
        for i, status in enumerate(["received", "retrying", "failed", "processed", "deferred"]):
            deliveries.record_delivery(s, f"d{i}", "github", "organization", "member_added", "{}", "0" * 64,
                                       None, status=status)
    api.client.post("/v1/admin/resync", headers=admin(), json={"target": "acme"})
    body = api.client.get("/v1/admin/status", headers=admin()).get_json()
    [ws] = body["workspaces"]
    assert ws["id"] == acme["ws"] and ws["name"] == "acme"
    last = ws["last_sync"]
    assert last["result"] == "held" and last["api_calls"] == 2 and last["at"]
    assert {"added", "removed", "changed", "api_calls"} <= set(last)
    assert body["held"] == [{"workspace": acme["ws"], "name": "acme", "run": last["id"],
                             "reason": "would remove 9 of 10 members"}]
    assert body["deliveries"]["pending"] == 3 and body["deliveries"]["failed"] == 1
    assert body["deliveries"]["deferred"] == 1
    assert body["queues"]["sync"]["queued"] == 1 and body["queues"]["webhooks"]["queued"] == 0


# --------------------------------------------------------------------------- admin: deliveries


def _delivery(api: World, delivery_id: str, status: str) -> None:
    with api.session() as s:
        deliveries.record_delivery(s, delivery_id, "github", "organization", "member_added", "{}", "0" * 64,
                                   "github:9001")
        s.execute(update(Delivery).where(Delivery.id == delivery_id).values(status=status, error="boom"))


def test_deliveries_list_and_filter(api: World) -> None:
    _delivery(api, "f1", "failed")
    _delivery(api, "p1", "processed")
    every = api.client.get("/v1/admin/deliveries", headers=admin()).get_json()["deliveries"]
    assert {d["id"] for d in every} == {"f1", "p1"}
    failed = api.client.get("/v1/admin/deliveries?status=failed", headers=admin()).get_json()
    assert [d["id"] for d in failed["deliveries"]] == ["f1"]
    assert failed["deliveries"][0]["status"] == "failed" and failed["deliveries"][0]["error"] == "boom"
    assert "payload" not in failed["deliveries"][0]
    for bad in ("status=nope", "limit=0", "provider=bitbucket"):
        resp = api.client.get(f"/v1/admin/deliveries?{bad}", headers=admin())
        assert resp.status_code == 400


def test_replay_queues_a_failed_delivery(api: World) -> None:
    _delivery(api, "f1", "failed")
    resp = api.client.post("/v1/admin/deliveries/f1/replay", headers=admin())
    assert resp.status_code == 202
    body = resp.get_json()
    assert (body["delivery"], body["status"]) == ("f1", "queued") and body["job"]
    d = api.delivery("f1")
    assert d is not None and (d.status, d.attempts) == ("received", 0) and d.due_at is not None
    q = Queue("webhooks", connection=api.redis)
    assert [j.args for j in q.jobs] == [("github:9001",)]


def test_replay_of_unknown_or_finished_deliveries(api: World) -> None:
    _delivery(api, "p1", "processed")
    resp = api.client.post("/v1/admin/deliveries/missing/replay", headers=admin())
    assert resp.status_code == 404 and resp.get_json()["error"] == "delivery_not_found"
    resp = api.client.post("/v1/admin/deliveries/p1/replay", headers=admin())
    assert resp.status_code == 409
    assert Queue("webhooks", connection=api.redis).count == 0


# --------------------------------------------------------------------------- admin: workspaces


def test_transfer_ownership(api: World, acme: dict[str, Any]) -> None:
    resp = api.client.post("/v1/admin/workspaces/acme/transfer", headers=admin(), json={"to": "user2"})
    assert resp.status_code == 200
    assert resp.get_json()["owner"] == {"id": acme["u2"], "username": "user2"}
    with api.session() as s:
        actions = [a.action for a in store.list_activity(s, workspace_id=acme["ws"], after=0, limit=1000)]
    assert actions[-1] == "ownership.changed"


@pytest.mark.parametrize(("ref", "body", "status", "error"), [
    ("acme", {"to": "outsider"}, 409, "invalid_transfer"),
    ("acme", {"to": "user1"}, 409, "invalid_transfer"),
    ("acme", {"to": "ghost"}, 404, "user_not_found"),
    ("nope", {"to": "user2"}, 404, "workspace_not_found"),
    ("acme", {}, 400, "invalid_request"),
    ("acme", {"to": 7}, 400, "invalid_request"),
])
def test_transfer_refusals(api: World, acme: dict[str, Any], ref: str, body: Any, status: int, error: str) -> None:
    resp = api.client.post(f"/v1/admin/workspaces/{ref}/transfer", headers=admin(), json=body)
    assert resp.status_code == status and resp.get_json()["error"] == error
    assert api.workspace(acme["ws"]).owner_id == acme["u1"]


def test_disconnect(api: World, acme: dict[str, Any]) -> None:
    resp = api.client.post("/v1/admin/workspaces/acme/disconnect", headers=admin())
    assert resp.status_code == 200 and resp.get_json()["status"] == "disconnected"
    again = api.client.post("/v1/admin/workspaces/acme/disconnect", headers=admin())
    assert again.status_code == 200 and again.get_json()["status"] == "disconnected"
    with api.session() as s:
        store.create_user(s, "alice", actor="test")
    personal = api.client.post("/v1/admin/workspaces/alice/disconnect", headers=admin())
    assert personal.status_code == 409


def test_subscription(api: World, acme: dict[str, Any]) -> None:
    url = "/v1/admin/workspaces/acme/subscription"
    resp = api.client.post(url, headers=admin(), json={"plan": "team"})
    assert resp.status_code == 200 and resp.get_json()["subscription"] == "team"
    resp = api.client.post(url, headers=admin(), json={"plan": None})
    assert resp.status_code == 200 and resp.get_json()["subscription"] is None
    for bad in ({}, {"plan": ""}, {"plan": "has space"}, {"plan": 3}, {"plan": "x" * 65},
                # "$" matches before a final newline: these passed, the first overflowed to a 500.
                {"plan": "x" * 64 + "\n"}, {"plan": "team\n"}):
        resp = api.client.post(url, headers=admin(), json=bad)
        assert resp.status_code == 400, bad
    assert api.workspace(acme["ws"]).subscription_plan is None
