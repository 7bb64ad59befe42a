"""Issue 10: the provider's word on installations, orgs and groups decides,
not a payload's (SPEC section 6, "The installation is the provider's fact",
"Destructive hints are verified", reconnect).

Everything runs through the app and the fake GitHub/GitLab server over real
HTTP, on SQLite and PostgreSQL; outcomes are the store, HTTP answers and
provider request counts. The numbers in the section titles are the issue's.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from models import store
from models.tables import Activity, Workspace
from sync.errors import TransientProviderError
from sync.installations import LOGIN_DISCOVERY_EVERY
from tests.app_world import MakeWorld, World
from worker import jobs

ORG_ID, LOGIN, LIVE, OLD = 90001, "acme", 501, 400
ALICE, BOB, CAROL = (11, "alice"), (12, "bob"), (13, "carol")
SERVICE, ADMIN = "svc-token", "admin-token"


@pytest.fixture
def w(make_world: MakeWorld) -> World:
    return make_world(service_tokens=(SERVICE,), admin_tokens=(ADMIN,))


def _org_with_roster(w: World, installation_id: int | None = LIVE) -> None:
    w.server.github.add_org(ORG_ID, LOGIN, installation_id=installation_id)
    w.server.github.add_member(ORG_ID, *ALICE, "admin")
    w.server.github.add_member(ORG_ID, *BOB, "member")
    w.server.github.add_member(ORG_ID, *CAROL, "member")


def _login(w: World, token: str, provider: str = "github") -> Any:
    resp = w.client.post("/v1/logins", json={"provider": provider, "access_token": token},
                         headers={"Authorization": f"Bearer {SERVICE}"})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def _admin(w: World, method: str, path: str, body: Any = None) -> Any:
    return w.client.open(path, method=method, json=body, headers={"Authorization": f"Bearer {ADMIN}"})


def _ws(w: World, provider: str = "github", org_id: int = ORG_ID) -> Workspace:
    with w.session() as s:
        ws = store.get_provider_workspace(s, provider, org_id)
        assert ws is not None
        return ws


def _activity(w: World, ws_id: str | None = None) -> list[str]:
    with w.session() as s:
        return [a.action for a in store.list_activity(s, workspace_id=ws_id, limit=10_000)]


def _member_event(action: str, installation_id: int, user: tuple[int, str] = ALICE) -> dict[str, Any]:
    return {"action": action, "organization": {"id": ORG_ID, "login": LOGIN},
            "installation": {"id": installation_id},
            "membership": {"state": "active", "role": "member", "user": {"id": user[0], "login": user[1]}},
            "sender": {"id": 9, "login": "someone"}}


def _installation_event(action: str, installation_id: int, *, target_type: str = "Organization",
                        account_type: str = "Organization", login: str = LOGIN) -> dict[str, Any]:
    return {"action": action,
            "installation": {"id": installation_id, "target_type": target_type,
                             "account": {"id": ORG_ID, "login": login, "type": account_type}},
            "sender": {"id": ALICE[0], "login": ALICE[1]}}


def _outcome(w: World, delivery: str) -> dict[str, Any]:
    d = w.delivery(delivery)
    assert d is not None, delivery
    assert d.status in ("processed", "ignored"), (d.status, d.error)
    return dict(d.outcome or {}, status=d.status)


# --------------------------------------------------------------------------- 1. discovery


def test_login_created_workspace_resyncs_with_one_installation_lookup(w: World) -> None:
    """The installation.created webhook was missed: the org's workspace came
    from a login, with no installation known. A resync asks GitHub once and
    mirrors the whole roster."""
    _org_with_roster(w)
    w.server.github.add_user_token("gho_alice", *ALICE)
    # The login itself asks (hourly) and queues the sync; drop that queued
    # job and that check, to show the operator's resync finds it on its own.
    _login(w, "gho_alice")
    ws = _ws(w)
    with w.session() as s:
        s.execute(update(Workspace).where(Workspace.id == ws.id)
                  .values(installation_id=None, link_status="no_installation", installation_checked_at=None))
    w.queue("sync").empty()
    w.server.github.reset_log()

    resp = _admin(w, "POST", "/v1/admin/resync", {"target": f"github:{LOGIN}"})
    assert resp.status_code == 202
    w.drain_all()
    assert w.roster(ws.id) == {11: ("alice", "admin"), 12: ("bob", "member"), 13: ("carol", "member")}
    assert w.server.github.count("/installation", method="GET") == 1
    assert (_ws(w).installation_id, _ws(w).link_status) == (LIVE, "ok")


def test_login_asks_for_the_installation_at_most_hourly(w: World) -> None:
    w.server.github.add_org(ORG_ID, LOGIN)  # no app installed
    w.server.github.add_member(ORG_ID, *ALICE, "admin")
    w.server.github.add_user_token("gho_alice", *ALICE)
    _login(w, "gho_alice")
    _login(w, "gho_alice")
    assert w.server.github.count("/installation") == 1
    assert _ws(w).installation_checked_at is not None
    # An hour later the next login asks again, and finds the new installation.
    with w.session() as s:
        ws = store.get_provider_workspace(s, "github", ORG_ID)
        assert ws is not None
        ws.installation_checked_at = ws.installation_checked_at - LOGIN_DISCOVERY_EVERY - timedelta(seconds=1)  # type: ignore[operator]
    w.server.github.install(ORG_ID, LIVE)
    _login(w, "gho_alice")
    assert w.server.github.count("/installation") == 2
    assert _ws(w).installation_id == LIVE
    assert w.sync_jobs() == [f"sync-{_ws(w).id}"]


def test_status_says_when_each_org_was_last_asked(w: World) -> None:
    _org_with_roster(w, installation_id=None)
    ws_id = w.github_workspace(ORG_ID, LOGIN)
    before = {item["id"]: item for item in _admin(w, "GET", "/v1/admin/status").get_json()["workspaces"]}
    assert before[ws_id]["installation_checked_at"] is None
    _admin(w, "POST", "/v1/admin/resync", {"target": ws_id})
    w.drain_all()
    after = {item["id"]: item for item in _admin(w, "GET", "/v1/admin/status").get_json()["workspaces"]}
    assert after[ws_id]["installation_checked_at"] is not None
    assert after[ws_id]["installation_id"] is None and after[ws_id]["link"] == "no_installation"


# --------------------------------------------------------------------------- 2. installation id hints


def test_a_replayed_delivery_naming_an_old_installation_does_not_repoint(w: World) -> None:
    _org_with_roster(w)
    ws_id = w.github_workspace(ORG_ID, LOGIN, installation_id=LIVE)
    w.post_github("organization", _member_event("member_added", OLD), delivery="old-id")
    w.drain()
    ws = _ws(w)
    assert (ws.installation_id, ws.link_status) == (LIVE, "ok")
    # The member re-read of that delivery ran with the live installation.
    assert w.roster(ws_id) == {11: ("alice", "admin")}
    out = _outcome(w, "old-id")
    assert out["installation_hint"] == {"payload": OLD, "stored": LIVE, "live": LIVE}
    # And the next resync still works.
    _admin(w, "POST", "/v1/admin/resync", {"target": ws_id})
    w.drain_all()
    assert set(w.roster(ws_id)) == {11, 12, 13}


def test_a_stale_stored_installation_is_healed_from_the_live_one(w: World) -> None:
    _org_with_roster(w)
    ws_id = w.github_workspace(ORG_ID, LOGIN, installation_id=OLD)
    w.post_github("organization", _member_event("member_added", LIVE), delivery="new-id")
    w.drain()
    assert _ws(w).installation_id == LIVE
    assert w.roster(ws_id) == {11: ("alice", "admin")}
    assert "workspace.installation_changed" in _activity(w, ws_id)


# --------------------------------------------------------------------------- 3. verify before destroying


def test_replayed_uninstall_changes_nothing_then_the_real_one_disconnects(w: World) -> None:
    _org_with_roster(w)
    ws_id = w.github_workspace(ORG_ID, LOGIN, installation_id=LIVE,
                               roster={11: ("alice", "admin"), 12: ("bob", "member")})
    payload = _installation_event("deleted", LIVE)
    # A captured installation.deleted, replayed under a new delivery id: the
    # signature verifies, GitHub says the app is still installed.
    w.post_github("installation", payload, delivery="replay-1")
    w.drain()
    out = _outcome(w, "replay-1")
    assert (out["status"], out["result"]) == ("processed", "contradicted")
    assert "still installed" in out["reason"]
    assert _ws(w).status == "active" and len(w.roster(ws_id)) == 2
    assert _activity(w, ws_id)[-1] == "hint.contradicted"
    # Membership events keep working.
    w.post_github("organization", _member_event("member_added", LIVE, CAROL))
    w.drain()
    assert 13 in w.roster(ws_id)

    # Now the app really is uninstalled: the same payload disconnects.
    w.server.github.revoke_installation(LIVE)
    w.post_github("installation", payload, delivery="real-1")
    w.drain()
    assert _outcome(w, "real-1")["result"] == "disconnected"
    assert _ws(w).status == "disconnected"
    assert _activity(w, ws_id)[-1] == "workspace.disconnected"


def test_a_hint_that_cannot_be_checked_is_retried_never_applied(w: World) -> None:
    _org_with_roster(w)
    w.github_workspace(ORG_ID, LOGIN, installation_id=LIVE)
    w.server.github.fail("/installation", 502, times=None, method="GET")
    w.post_github("installation", _installation_event("deleted", LIVE), delivery="down-1")
    w.drain()
    d = w.delivery("down-1")
    # Due again after a backoff (the sweep retries it), never applied blind.
    assert d is not None and d.status == "retrying" and "transient" in (d.error or "")
    assert d.due_at is not None
    assert _ws(w).status == "active"


@pytest.mark.parametrize("deleted", [False, True], ids=["org alive: contradicted", "org gone: disconnected"])
def test_organization_deleted_is_verified_by_reading_the_org(w: World, deleted: bool) -> None:
    _org_with_roster(w)
    ws_id = w.github_workspace(ORG_ID, LOGIN, installation_id=LIVE)
    if deleted:
        w.server.github.delete_org(ORG_ID)
    w.post_github("organization", {"action": "deleted", "organization": {"id": ORG_ID, "login": LOGIN},
                                   "installation": {"id": LIVE}}, delivery="org-del")
    w.drain()
    assert _outcome(w, "org-del")["result"] == ("disconnected" if deleted else "contradicted")
    assert w.workspace(ws_id).status == ("disconnected" if deleted else "active")


def test_group_destroy_for_a_live_group_changes_nothing(w: World) -> None:
    w.server.gitlab.add_group(78, "storecloud")
    w.server.gitlab.add_member(78, 41, "js", 40)
    w.server.gitlab.add_member(78, 42, "kim", 30)
    ws_id = w.gitlab_workspace(78, "storecloud", roster={41: ("js", "admin")})
    w.post_gitlab("System Hook", {"event_name": "group_destroy", "group_id": 78, "full_path": "storecloud",
                                  "path": "storecloud", "name": "StoreCloud"})
    w.drain()
    assert w.workspace(ws_id).status == "active"
    assert _activity(w, ws_id)[-1] == "hint.contradicted"
    # Later member events for the group are still acted on.
    w.post_gitlab("Member Hook", {"event_name": "user_add_to_group", "group_id": 78, "user_id": 42,
                                  "user_username": "kim"})
    w.drain()
    assert w.roster(ws_id) == {41: ("js", "admin"), 42: ("kim", "member")}


@pytest.mark.parametrize("gone", [False, True], ids=["user alive: contradicted", "user gone: removed"])
def test_user_destroy_is_verified_by_reading_the_user(w: World, gone: bool) -> None:
    w.server.gitlab.add_group(78, "storecloud")
    w.server.gitlab.add_member(78, 41, "js", 40)
    ws_id = w.gitlab_workspace(78, "storecloud", roster={41: ("js", "admin")})
    if gone:
        w.server.gitlab.delete_user(41)
    w.post_gitlab("System Hook", {"event_name": "user_destroy", "user_id": 41, "username": "js"},
                  idempotency_key="destroy-41")
    w.drain()
    assert w.roster(ws_id) == ({} if gone else {41: ("js", "admin")})
    with w.session() as s:
        entry = s.scalars(select(Activity).order_by(Activity.seq.desc()).limit(1)).one()
    assert entry.action == ("member.removed" if gone else "hint.contradicted")


# --------------------------------------------------------------------------- 4. reconnect


def test_reconnect_after_reinstall_restores_the_roster(w: World) -> None:
    _org_with_roster(w)
    ws_id = w.github_workspace(ORG_ID, LOGIN, installation_id=LIVE,
                               roster={11: ("alice", "admin"), 12: ("bob", "member"), 13: ("carol", "member")})
    w.server.github.revoke_installation(LIVE)
    w.post_github("installation", _installation_event("deleted", LIVE))
    w.drain()
    assert w.workspace(ws_id).status == "disconnected"
    # Still uninstalled: the operator's reconnect is refused and changes nothing.
    before = _activity(w, ws_id)
    refused = _admin(w, "POST", f"/v1/admin/workspaces/{ws_id}/reconnect")
    assert refused.status_code == 409 and refused.get_json()["error"] == "provider_says_gone"
    assert w.workspace(ws_id).status == "disconnected" and _activity(w, ws_id) == before
    # Reinstalled (a new installation id); its webhook was missed.
    w.server.github.install(ORG_ID, 777)
    w.server.github.remove_member(ORG_ID, BOB[0])
    resp = _admin(w, "POST", f"/v1/admin/workspaces/{ws_id}/reconnect")
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["result"] == "reconnected" and body["workspace"]["status"] == "active"
    w.drain_all()
    ws = w.workspace(ws_id)
    assert (ws.status, ws.installation_id, ws.link_status) == ("active", 777, "ok")
    assert w.roster(ws_id) == {11: ("alice", "admin"), 13: ("carol", "member")}
    assert "workspace.reconnected" in _activity(w, ws_id)


@pytest.mark.parametrize(("ref", "status", "error"), [
    ("nope", 404, "workspace_not_found"),
    ("dana", 409, "invalid_state"),  # a personal workspace has no provider org
    ("team-x", 409, "invalid_state"),  # nor has a managed one
    ("github:does-not-exist", 404, "workspace_not_found"),
])
def test_reconnect_bad_references_are_clear_errors(w: World, ref: str, status: int, error: str) -> None:
    with w.session() as s:
        user = store.create_user(s, "dana")
        store.create_managed_workspace(s, "team-x", user)
    before = w.counts()
    resp = _admin(w, "POST", f"/v1/admin/workspaces/{ref}/reconnect")
    assert (resp.status_code, resp.get_json()["error"]) == (status, error)
    assert w.counts() == before
    assert w.server.github.request_count == 0


def test_reconnect_needs_the_admin_token(w: World) -> None:
    _org_with_roster(w)
    ws_id = w.github_workspace(ORG_ID, LOGIN, installation_id=LIVE, status="disconnected")
    for headers in ({}, {"Authorization": f"Bearer {SERVICE}"}):
        assert w.client.post(f"/v1/admin/workspaces/{ws_id}/reconnect", headers=headers).status_code == 401
    assert w.workspace(ws_id).status == "disconnected"


def test_gitlab_group_back_reconnects_on_login_and_by_operator(w: World) -> None:
    w.server.gitlab.add_group(78, "storecloud")
    w.server.gitlab.add_member(78, 41, "js", 40)
    w.server.gitlab.add_member(78, 42, "kim", 30)
    ws_id = w.gitlab_workspace(78, "storecloud", roster={41: ("js", "admin")})
    # Confirmed deletion...
    w.server.gitlab.delete_group(78)
    w.post_gitlab("System Hook", {"event_name": "group_destroy", "group_id": 78, "full_path": "storecloud"})
    w.drain()
    assert w.workspace(ws_id).status == "disconnected"
    # ...then the group is restored (GitLab keeps deleted groups restorable).
    w.server.gitlab.add_group(78, "storecloud")
    w.server.gitlab.add_member(78, 41, "js", 40)
    w.server.gitlab.add_member(78, 42, "kim", 30)
    w.server.gitlab.add_user_token("glo_js", 41, "js")
    _login(w, "glo_js", provider="gitlab")
    assert w.workspace(ws_id).status == "active"
    w.drain_all()
    assert w.roster(ws_id) == {41: ("js", "admin"), 42: ("kim", "member")}


def test_operator_disconnect_is_not_undone_by_a_login(w: World) -> None:
    w.server.gitlab.add_group(78, "storecloud")
    w.server.gitlab.add_member(78, 41, "js", 40)
    ws_id = w.gitlab_workspace(78, "storecloud", roster={41: ("js", "admin")})
    assert _admin(w, "POST", f"/v1/admin/workspaces/{ws_id}/disconnect").status_code == 200
    w.server.gitlab.add_user_token("glo_js", 41, "js")
    _login(w, "glo_js", provider="gitlab")
    assert w.workspace(ws_id).status == "disconnected"
    resp = _admin(w, "POST", f"/v1/admin/workspaces/{ws_id}/reconnect")
    assert resp.status_code == 200 and resp.get_json()["result"] == "reconnected"
    assert w.workspace(ws_id).status == "active"


def test_resync_still_refuses_a_disconnected_workspace(w: World) -> None:
    _org_with_roster(w)
    ws_id = w.github_workspace(ORG_ID, LOGIN, installation_id=LIVE, status="disconnected")
    resp = _admin(w, "POST", "/v1/admin/resync", {"target": ws_id})
    assert resp.status_code == 409
    assert w.sync_jobs() == []


# --------------------------------------------------------------------------- 5, 6, 7


def test_target_renamed_for_an_unknown_installation_keeps_the_new_login(w: World) -> None:
    _org_with_roster(w)
    ws_id = w.github_workspace(ORG_ID, LOGIN, installation_id=OLD)
    w.server.github.rename_org(ORG_ID, "acme-two")
    payload = {"action": "renamed", "target_type": "Organization",
               "account": {"id": ORG_ID, "login": "acme-two", "type": "Organization"},
               "changes": {"login": {"from": LOGIN}}, "installation": {"id": LIVE}}
    w.post_github("installation_target", payload, delivery="rn")
    w.drain()
    ws = w.workspace(ws_id)
    assert (ws.provider_org_login, ws.name, ws.installation_id) == ("acme-two", "acme-two", LIVE)
    assert w.sync_jobs() == [f"sync-{ws_id}"]


@pytest.mark.parametrize("action", ["created", "new_permissions_accepted", "suspend", "unsuspend"])
@pytest.mark.parametrize(("target_type", "account_type"), [
    ("Organization", "Organization"), ("User", "User"), ("Organization", "User"), ("User", "Organization"),
])
def test_account_kind_is_decided_one_way_for_every_action(
    w: World, action: str, target_type: str, account_type: str
) -> None:
    """GitHub's installation record says the account is an organization:
    every action adopts it (or, for suspend, records nothing: it is never
    adopted from), whatever the payload's two fields claim."""
    _org_with_roster(w)
    w.post_github("installation", _installation_event(action, LIVE, target_type=target_type,
                                                      account_type=account_type), delivery="kind")
    w.drain()
    with w.session() as s:
        ws = store.get_provider_workspace(s, "github", ORG_ID)
    if action == "suspend":
        assert ws is None
    else:
        assert ws is not None and ws.installation_id == LIVE
        assert _outcome(w, "kind")["result"] == "adopted"


@pytest.mark.parametrize("target_type", ["User", "Organization"])
def test_an_installation_github_does_not_know_on_an_org_is_not_adopted(w: World, target_type: str) -> None:
    # A user account's installation (GitHub has no org of that id), or a
    # replay of one that is gone: nothing is created, whatever the payload says.
    w.post_github("installation", _installation_event("created", LIVE, target_type=target_type,
                                                      account_type=target_type), delivery="nokind")
    w.drain()
    out = _outcome(w, "nokind")
    assert out["status"] == "ignored"
    assert w.counts()["workspaces"] == 0


def test_events_with_alternating_installation_ids_queue_one_full_sync(w: World) -> None:
    _org_with_roster(w)
    ws_id = w.github_workspace(ORG_ID, LOGIN, installation_id=LIVE)
    for i in range(10):
        team = {"action": "created", "team": {"id": i, "name": f"t{i}"},
                "organization": {"id": ORG_ID, "login": LOGIN},
                "installation": {"id": OLD if i % 2 else LIVE}, "sender": {"id": 9, "login": "x"}}
        w.post_github("team", team)
    for action in ("new_permissions_accepted", "unsuspend"):
        w.post_github("installation", _installation_event(action, OLD if action == "unsuspend" else LIVE))
    w.server.github.reset_log()
    w.drain()
    # The full syncs the batch asked for were coalesced into one, run by the
    # lane's drain after the batch: one listing (admins and members), once.
    assert w.server.github.count("/members") == 2
    assert w.sync_jobs() == [f"sync-{ws_id}"]
    assert _ws(w).installation_id == LIVE


# --------------------------------------------------------------------------- reconciliation


def test_reconciliation_adopts_a_missed_installation_and_lists_conditionally(w: World) -> None:
    _org_with_roster(w)
    w.server.github.add_org(ORG_ID + 1, "beta", installation_id=LIVE + 1)
    result = jobs.reconcile_installations()
    assert result["result"] == "ok" and len(result["adopted"]) == 2
    ws = _ws(w)
    assert (ws.installation_id, ws.status, ws.owner_id) == (LIVE, "active", None)
    w.drain_all()
    assert set(w.roster(ws.id)) == {11, 12, 13}
    # Nothing changed at GitHub: the next pass costs one 304 and changes nothing.
    counts = w.counts()
    w.server.github.reset_log()
    again = jobs.reconcile_installations()
    assert again["not_modified"] == 1 and "adopted" not in again
    assert w.server.github.count("/app/installations", status=304) == 1
    assert w.server.github.request_count == 1
    assert {k: v for k, v in w.counts().items() if k != "deliveries"} == \
        {k: v for k, v in counts.items() if k != "deliveries"}


def test_reconciliation_walks_every_page(w: World) -> None:
    for i in range(101):
        w.server.github.add_org(200_000 + i, f"org{i}", installation_id=300_000 + i)
    result = jobs.reconcile_installations()
    assert len(result["adopted"]) == 101
    assert w.server.github.count("/app/installations") == 2


def test_reconciliation_disconnects_a_gone_installation_only_once_verified(w: World) -> None:
    _org_with_roster(w)
    ws_id = w.github_workspace(ORG_ID, LOGIN, installation_id=LIVE, roster={11: ("alice", "admin")})
    w.server.github.revoke_installation(LIVE)
    result = jobs.reconcile_installations()
    assert result["disconnected"] == [ws_id] and result["verified_missing"] == 1
    assert w.workspace(ws_id).status == "disconnected"
    # Reinstalled while the webhook was lost: the next pass reconnects it.
    w.server.github.install(ORG_ID, 777)
    result = jobs.reconcile_installations()
    assert result["reconnected"] == [ws_id]
    w.drain_all()
    ws = w.workspace(ws_id)
    assert (ws.status, ws.installation_id) == ("active", 777)
    assert set(w.roster(ws_id)) == {11, 12, 13}


def test_reconciliation_leaves_an_operators_disconnect_alone(w: World) -> None:
    _org_with_roster(w)
    ws_id = w.github_workspace(ORG_ID, LOGIN, installation_id=LIVE, status="disconnected")
    jobs.reconcile_installations()
    assert w.workspace(ws_id).status == "disconnected"


def test_reconciliation_that_cannot_list_changes_nothing(w: World) -> None:
    _org_with_roster(w)
    w.server.github.add_org(ORG_ID + 1, "beta", installation_id=LIVE + 1)
    w.server.github.fail("/app/installations", 502)
    counts = w.counts()
    with pytest.raises(TransientProviderError):
        jobs.reconcile_installations()
    assert w.counts() == counts


@pytest.mark.parametrize("suspended", [False, True], ids=["replayed: contradicted", "real: suspended"])
def test_suspend_is_verified_before_it_blocks_the_org(w: World, suspended: bool) -> None:
    _org_with_roster(w)
    ws_id = w.github_workspace(ORG_ID, LOGIN, installation_id=LIVE)
    if suspended:
        w.server.github.suspend_installation(LIVE)
    w.post_github("installation", _installation_event("suspend", LIVE), delivery="susp")
    w.drain()
    assert _outcome(w, "susp")["result"] == ("suspended" if suspended else "contradicted")
    assert w.workspace(ws_id).status == ("suspended" if suspended else "active")
