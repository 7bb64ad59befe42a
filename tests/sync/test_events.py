"""Delivery → action (sync.events): routing, out-of-order deliveries,
adoption, coalescing, outcomes, and how provider errors end a delivery.

End-to-end tests post signed payloads through the app and drain the queue
with a burst worker; the error-path tests call process_delivery directly
with a provider stand-in that fails on cue."""
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest
from sqlalchemy import select

from models import deliveries, store
from models.tables import Activity, SyncRun
from sync.context import SyncContext
from sync.errors import AuthBroken, RateLimited, TransientProviderError
from sync.events import Enqueuer, process_delivery
from sync.providers.base import (
    Provider,
    ProviderMember,
    ProviderOrg,
    ProviderUser,
    RosterPage,
    TokenOrg,
)
from tests.app_world import World
from tests.fakes.provider import ListEnqueuer

ORG_ID, LOGIN, INST = 38302899, "Octocoders", 1
ALICE = (501, "alice")


def org_event(action: str, user: tuple[int, str] = ALICE, **extra: Any) -> dict[str, Any]:
    return {
        "action": action,
        "membership": {"state": "active", "role": "member", "user": {"id": user[0], "login": user[1]}},
        "organization": {"id": ORG_ID, "login": LOGIN},
        "installation": {"id": INST},
        "sender": {"id": 9, "login": "admin"},
        **extra,
    }


def installation_event(action: str, installation_id: int = INST, org_id: int = ORG_ID,
                       login: str = LOGIN, sender: int = 9) -> dict[str, Any]:
    return {
        "action": action,
        "installation": {"id": installation_id, "target_type": "Organization",
                         "account": {"id": org_id, "login": login, "type": "Organization"}},
        "sender": {"id": sender, "login": "installer"},
    }


@pytest.fixture
def octo(world: World) -> str:
    world.server.github.add_org(ORG_ID, LOGIN, installation_id=INST)
    return world.github_workspace(ORG_ID, LOGIN, installation_id=INST)


# --------------------------------------------------------------------------- out of order


@pytest.mark.parametrize(("first", "second", "provider_says", "member"), [
    ("member_removed", "member_added", "member", True),
    ("member_added", "member_removed", "gone", False),
    ("member_added", "member_added", "member", True),
    ("member_removed", "member_removed", "gone", False),
], ids=["removed-then-added, still member", "added-then-removed, gone", "added twice", "removed twice"])
def test_out_of_order_deliveries_follow_the_provider(
    world: World, octo: str, first: str, second: str, provider_says: str, member: bool
) -> None:
    if provider_says == "member":
        world.server.github.add_member(ORG_ID, *ALICE, "member")
    # Delivered in the opposite order to how they happened; the queue runs
    # them in arrival order, and each re-reads GitHub.
    world.post_github("organization", org_event(first))
    world.post_github("organization", org_event(second))
    world.drain()
    assert (ALICE[0] in world.roster(octo)) is member


def test_role_comes_from_the_provider_not_the_payload(world: World, octo: str) -> None:
    world.server.github.add_member(ORG_ID, *ALICE, "admin")
    world.post_github("organization", org_event("member_added"))  # payload says "member"
    world.drain()
    assert world.roster(octo)[ALICE[0]] == ("alice", "admin")


def test_processed_delivery_links_the_activity_it_caused(world: World, octo: str) -> None:
    world.server.github.add_member(ORG_ID, *ALICE, "member")
    resp = world.post_github("organization", org_event("member_added"), delivery="act-1")
    world.drain()
    d = world.delivery("act-1")
    assert d is not None and d.status == "processed"
    assert d.outcome["result"] == "member_synced"  # type: ignore[index]
    with world.session() as s:
        entries = s.scalars(select(Activity).where(Activity.seq.in_(d.outcome["activity"]))).all()  # type: ignore[index]
        run = s.get(SyncRun, d.outcome["sync"]["id"])  # type: ignore[index]
    # The member added by the sync run this delivery started, and that run's summary.
    # Alice has no account here: the subject is her provider id, the login a detail.
    assert (entries[0].action, entries[0].subject) == ("member.added", f"github:{ALICE[0]}")
    assert entries[0].details["login"] == "alice"  # type: ignore[index]
    assert {e.actor for e in entries} == {f"sync:{run.id}"}  # type: ignore[union-attr]
    assert run is not None and run.trigger == "webhook:act-1"
    assert resp.get_json()["delivery"] == "act-1"


def test_a_delivery_is_processed_once_even_if_its_job_runs_twice(world: World, octo: str) -> None:
    world.server.github.add_member(ORG_ID, *ALICE, "member")
    world.post_github("organization", org_event("member_added"), delivery="once")
    world.drain()
    with world.session() as s:
        runs_before = len(s.scalars(select(SyncRun)).all())
    ctx = SyncContext(world.runtime.session_factory, world.runtime.settings,
                      provider_for=lambda *_: pytest.fail("no provider call for a finished delivery"))
    assert process_delivery(ctx, "once", ListEnqueuer()) == "processed"
    with world.session() as s:
        assert len(s.scalars(select(SyncRun)).all()) == runs_before
        assert deliveries.get_delivery(s, "once").attempts == 1


# --------------------------------------------------------------------------- structural events


def test_structural_events_for_one_org_coalesce_into_one_full_sync(world: World, octo: str) -> None:
    world.post_github("installation", installation_event("new_permissions_accepted"))
    world.post_github("installation", installation_event("new_permissions_accepted"))
    world.post_github("organization", {"action": "renamed", "organization": {"id": ORG_ID, "login": LOGIN},
                                       "installation": {"id": INST}, "changes": {"login": {"from": "x"}}})
    world.drain()
    assert world.sync_jobs() == [f"sync-{octo}"]


@pytest.mark.parametrize(("event", "payload"), [
    ("installation_target", {"action": "renamed", "target_type": "Organization",
                             "account": {"id": ORG_ID, "login": "NewCoders", "type": "Organization"},
                             "changes": {"login": {"from": LOGIN}}, "installation": {"id": INST}}),
    ("organization", {"action": "renamed", "organization": {"id": ORG_ID, "login": "NewCoders"},
                      "changes": {"login": {"from": LOGIN}}, "installation": {"id": INST}}),
], ids=["installation_target.renamed", "organization.renamed"])
def test_renames_follow_the_org_as_github_reports_it(
    world: World, octo: str, event: str, payload: dict[str, Any]
) -> None:
    world.server.github.rename_org(ORG_ID, "NewCoders")
    world.post_github(event, payload)
    world.drain()
    ws = world.workspace(octo)
    assert (ws.provider_org_login, ws.name, ws.id) == ("NewCoders", "newcoders", octo)
    assert world.sync_jobs() == [f"sync-{octo}"]


def test_a_stale_rename_hint_does_not_win_over_the_provider(world: World, octo: str) -> None:
    # Renamed twice; the first rename's delivery arrives last.
    world.server.github.rename_org(ORG_ID, "Final")
    world.post_github("organization", {"action": "renamed", "organization": {"id": ORG_ID, "login": "Middle"},
                                       "installation": {"id": INST}})
    world.drain()
    assert world.workspace(octo).provider_org_login == "Final"


def test_unknown_installation_is_adopted_with_a_full_sync(world: World) -> None:
    world.server.github.add_org(777, "newco", installation_id=70)
    world.server.github.add_member(777, 11, "ann", "admin")
    world.server.github.add_member(777, 12, "ben", "member")
    resp = world.post_github("installation", installation_event("created", 70, 777, "newco", sender=11),
                             delivery="adopt-1")
    assert resp.get_json()["status"] == "queued"
    world.drain()
    # Adoption queues its full sync (serialised and coalesced per org)
    # instead of running it inside the delivery job.
    assert len(world.sync_jobs()) == 1
    world.drain_all()
    d = world.delivery("adopt-1")
    assert d is not None
    assert d.status == "processed", d.error
    assert d.outcome["result"] == "adopted"  # type: ignore[index]
    with world.session() as s:
        ws = store.get_provider_workspace(s, "github", 777)
        assert ws is not None
        assert (ws.installation_id, ws.pending_owner_provider_user_id) == (70, 11)
        ws_id = ws.id
    assert world.roster(ws_id) == {11: ("ann", "admin"), 12: ("ben", "member")}


def test_any_event_naming_an_unknown_installation_adopts_it(world: World) -> None:
    world.server.github.add_org(778, "otherco", installation_id=71)
    world.server.github.add_member(778, 13, "cat", "member")
    payload = {"action": "created", "team": {"id": 1, "name": "x"},
               "organization": {"id": 778, "login": "otherco"}, "installation": {"id": 71},
               "sender": {"id": 13, "login": "cat"}}
    assert world.post_github("team", payload).get_json()["status"] == "queued"
    world.drain_all()
    with world.session() as s:
        ws = store.get_provider_workspace(s, "github", 778)
        assert ws is not None and ws.installation_id == 71
        # Only an installer connects an org: a team event's sender is not owner.
        assert ws.pending_owner_provider_user_id is None
        ws_id = ws.id
    assert world.roster(ws_id) == {13: ("cat", "member")}


def test_reinstall_on_a_disconnected_org_reconnects_it(world: World, octo: str) -> None:
    world.server.github.revoke_installation(INST)
    world.post_github("installation", installation_event("deleted"))
    world.drain()
    assert world.workspace(octo).status == "disconnected"
    # Reinstalled: GitHub gives the new installation a new id.
    world.server.github.install(ORG_ID, 2)
    world.post_github("installation", installation_event("created", installation_id=2))
    world.drain()
    ws = world.workspace(octo)
    assert (ws.status, ws.installation_id) == ("active", 2)
    assert world.sync_jobs() == [f"sync-{octo}"]


def _suspend(w: World) -> None:
    w.server.github.suspend_installation(INST)


def _uninstall(w: World) -> None:
    w.server.github.revoke_installation(INST)


def _delete_org(w: World) -> None:
    w.server.github.delete_org(ORG_ID)


@pytest.mark.parametrize(("event", "payload", "provider_change", "status"), [
    ("installation", installation_event("suspend"), _suspend, "suspended"),
    ("installation", installation_event("deleted"), _uninstall, "disconnected"),
    ("organization", {"action": "deleted", "organization": {"id": ORG_ID, "login": LOGIN}}, _delete_org,
     "disconnected"),
], ids=["suspend", "installation.deleted", "organization.deleted"])
def test_status_events(world: World, octo: str, event: str, payload: dict[str, Any],
                       provider_change: Any, status: str) -> None:
    if provider_change is not None:
        provider_change(world)  # what GitHub says now confirms the hint
    world.post_github(event, payload)
    world.drain()
    ws = world.workspace(octo)
    assert ws.status == status
    with world.session() as s:
        actors = {a.actor for a in store.list_activity(s, workspace_id=octo)}
    assert any(a.startswith("webhook:") for a in actors)


def test_membership_events_on_a_suspended_workspace_are_ignored(world: World, octo: str) -> None:
    world.server.github.suspend_installation(INST)
    world.post_github("installation", installation_event("suspend"))
    world.server.github.add_member(ORG_ID, *ALICE, "member")
    resp = world.post_github("organization", org_event("member_added"), delivery="susp")
    world.drain()
    d = world.delivery("susp")
    assert d is not None and d.status == "ignored" and "suspended" in d.outcome["reason"]  # type: ignore[index]
    assert world.roster(octo) == {}
    assert resp.status_code == 202


# --------------------------------------------------------------------------- GitLab users


def test_gitlab_user_rename_relabels_identity_and_rosters(world: World) -> None:
    world.server.gitlab.add_group(78, "storecloud")
    world.server.gitlab.add_group(79, "othergroup")
    # GitLab's truth, which the hook's processing re-reads (the hook's
    # username may be stale when hooks arrive out of order).
    world.server.gitlab.add_member(78, 58, "new", 30)
    world.server.gitlab.add_member(79, 58, "new", 40)
    world.server.gitlab.add_member(79, 3, "x", 30)
    a = world.gitlab_workspace(78, "storecloud", roster={58: ("old", "member")})
    b = world.gitlab_workspace(79, "othergroup", roster={58: ("old", "admin"), 3: ("x", "member")})
    with world.session() as s:
        store.create_user(s, "old", identity=("gitlab", 58, "old"))
    world.post_gitlab("System Hook", {"event_name": "user_rename", "user_id": 58, "username": "new",
                                      "old_username": "old"})
    world.drain()
    assert world.roster(a) == {58: ("new", "member")}
    assert world.roster(b) == {58: ("new", "admin"), 3: ("x", "member")}
    with world.session() as s:
        ident = store.get_identity(s, "gitlab", 58)
        assert ident is not None and ident.login == "new"


def test_gitlab_member_event_for_a_subgroup_is_not_mirrored(world: World) -> None:
    world.server.gitlab.add_group(100, "acme")
    world.server.gitlab.add_group(101, "team", parent_id=100)
    ws = world.gitlab_workspace(100, "acme")
    world.server.gitlab.add_member(101, 64, "sub_user", 30)
    resp = world.post_gitlab("Member Hook", {"event_name": "user_add_to_group", "group_id": 101,
                                             "group_path": "team", "user_id": 64,
                                             "user_username": "sub_user"}, idempotency_key="sub-1")
    # Intake is pure; the worker finds no top-level group 101 in the store.
    assert resp.get_json()["status"] == "queued"
    world.drain()
    d = world.delivery("sub-1")
    assert d is not None and d.status == "ignored" and "subgroup" in d.outcome["reason"]  # type: ignore[index]
    assert world.roster(ws) == {}


# --------------------------------------------------------------------------- error paths


class FailingProvider:
    """A provider whose every read raises the given error."""

    name: Literal["github", "gitlab"] = "github"

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.api_calls = 0
        self.not_modified = 0

    def get_org(self, org_id: int) -> ProviderOrg:
        raise self.error

    def iter_roster(self, org: ProviderOrg, cache: Any = None) -> Iterator[RosterPage]:
        raise self.error

    def get_member(self, org: ProviderOrg, provider_user_id: int, login: str | None) -> ProviderMember | None:
        self.api_calls += 1
        raise self.error

    def get_token_user(self, access_token: str) -> ProviderUser:
        raise self.error

    def iter_token_orgs(self, access_token: str) -> Iterator[TokenOrg]:
        raise self.error


def _record(world: World, delivery_id: str, payload: dict[str, Any]) -> None:
    with world.session() as s:
        deliveries.record_delivery(s, delivery_id, "github", "organization", payload["action"],
                                   json.dumps(payload), "0" * 64, f"github:{ORG_ID}")


def _ctx(world: World, error: Exception) -> SyncContext:
    def provider_for(name: str, installation_id: int | None) -> Provider:
        return FailingProvider(error)

    return SyncContext(world.runtime.session_factory, world.runtime.settings, provider_for=provider_for)


def test_rate_limited_delivery_is_deferred_and_raised(world: World, octo: str) -> None:
    _record(world, "rl", org_event("member_added"))
    reset = datetime.now(UTC) + timedelta(minutes=5)
    with pytest.raises(RateLimited):
        process_delivery(_ctx(world, RateLimited(reset)), "rl", ListEnqueuer())
    d = world.delivery("rl")
    assert d is not None and d.status == "deferred"
    assert world.roster(octo) == {}


def test_transient_error_makes_the_delivery_due_again(world: World, octo: str) -> None:
    _record(world, "tr", org_event("member_removed"))
    with pytest.raises(TransientProviderError):
        process_delivery(_ctx(world, TransientProviderError("GitHub answered 502")), "tr", ListEnqueuer())
    d = world.delivery("tr")
    assert d is not None and d.status == "retrying" and "502" in (d.error or "")
    assert d.due_at is not None and d.leased_until is None
    # The retry runs it again and it can still succeed.
    world.server.github.add_member(ORG_ID, *ALICE, "member")
    ctx = SyncContext(world.runtime.session_factory, world.runtime.settings,
                      provider_for=_real_provider(world))
    assert process_delivery(ctx, "tr", ListEnqueuer()) == "processed"
    assert world.delivery("tr").attempts == 2  # type: ignore[union-attr]


def test_broken_credentials_fail_the_delivery_without_retrying(world: World, octo: str) -> None:
    _record(world, "ab", org_event("member_added"))
    status = process_delivery(_ctx(world, AuthBroken("installation revoked")), "ab", ListEnqueuer())
    assert status == "failed"
    d = world.delivery("ab")
    assert d is not None
    assert "auth_broken" in (d.error or "")
    assert world.workspace(octo).link_status == "broken"


def test_structural_event_asks_the_enqueuer_for_a_full_sync(world: World, octo: str) -> None:
    payload = installation_event("new_permissions_accepted")
    with world.session() as s:
        deliveries.record_delivery(s, "np", "github", "installation", payload["action"],
                                   json.dumps(payload), "0" * 64, None)
    enqueuer = ListEnqueuer()
    ctx: SyncContext = _ctx(world, AssertionError("no provider call"))
    sink: Enqueuer = enqueuer
    assert process_delivery(ctx, "np", sink) == "processed"
    assert enqueuer.full_syncs == [(octo, "webhook:np")]


def _real_provider(world: World) -> Any:
    from sync.context import default_provider_factory

    return default_provider_factory(world.runtime.settings)
