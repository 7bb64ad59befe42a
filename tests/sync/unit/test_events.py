"""sync.events.handle_delivery: webhooks are hints, the provider's answer
decides. Deliveries are handled directly (no intake, no queue); full syncs go
to a recording Enqueuer."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from models import deliveries
from sync.errors import RateLimited, TransientProviderError
from sync.events import Handled, handle_delivery
from tests.fakes.provider import ListEnqueuer
from tests.sync.unit.conftest import GH_INSTALLATION, Org


def deliver(org: Org, event: str, payload: dict[str, Any], queued: ListEnqueuer | None = None,
            delivery: str = "d-1") -> Handled:
    return handle_delivery(org.ctx, delivery, org.provider, event, json.dumps(payload), queued or ListEnqueuer())


def membership(org: Org, action: str, uid: int, login: str) -> dict[str, Any]:
    return {
        "action": action,
        "membership": {"state": "active", "role": "member", "user": {"id": uid, "login": login}},
        "organization": {"id": org.org_id, "login": "acme"},
        "installation": {"id": GH_INSTALLATION},
        "sender": {"id": 1, "login": "owner"},
    }


def installation(org: Org, action: str) -> dict[str, Any]:
    return {
        "action": action,
        "installation": {"id": GH_INSTALLATION, "target_type": "Organization",
                         "account": {"id": org.org_id, "login": "acme", "type": "Organization"}},
        "sender": {"id": 1, "login": "owner"},
    }


def gitlab_member(org: Org, event_name: str, uid: int, login: str) -> dict[str, Any]:
    return {"event_name": event_name, "group_id": org.org_id, "group_path": "acme", "user_id": uid,
            "user_username": login, "group_access": "Guest"}


def test_member_added_reads_that_member_once_and_adds_them(gh: Org) -> None:
    gh.fake.add_member(gh.org_id, 5, "eve", "admin")  # the payload says member; GitHub decides
    queued = ListEnqueuer()
    handled = deliver(gh, "organization", membership(gh, "member_added", 5, "eve"), queued)
    assert handled.status == deliveries.PROCESSED
    assert gh.roster() == {5: ("eve", "admin")}
    assert [(c.method, c.args[1:]) for c in gh.fake.calls] == [("get_member", (5, "eve"))]
    assert queued.full_syncs == []
    added = gh.activity("member.added")
    assert [a.actor for a in added] == [f"sync:{gh.last_run().id}"]
    assert gh.last_run().trigger == "webhook:d-1"


def test_member_added_that_the_provider_denies_adds_nobody(gh: Org) -> None:
    gh.fake.add_user(5, "eve")
    handled = deliver(gh, "organization", membership(gh, "member_added", 5, "eve"))
    assert handled.status == deliveries.PROCESSED
    assert gh.roster() == {}


def test_member_removed_removes_only_that_member_once_confirmed(gh: Org) -> None:
    gh.fake.add_members(gh.org_id, range(1, 4))
    deliver(gh, "organization", membership(gh, "member_added", 1, "user1"), delivery="a1")
    deliver(gh, "organization", membership(gh, "member_added", 2, "user2"), delivery="a2")
    gh.fake.remove_member(gh.org_id, 2)
    gh.fake.remove_member(gh.org_id, 1)  # gone as well, but this delivery is about 2
    gh.mark()
    deliver(gh, "organization", membership(gh, "member_removed", 2, "user2"), delivery="r2")
    assert set(gh.roster()) == {1}
    assert [a.details["provider_user_id"] for a in gh.activity("member.removed")] == [2]


def test_member_removed_that_the_provider_contradicts_keeps_the_member(gh: Org) -> None:
    gh.fake.add_member(gh.org_id, 2, "bob")
    deliver(gh, "organization", membership(gh, "member_added", 2, "bob"), delivery="a")
    deliver(gh, "organization", membership(gh, "member_removed", 2, "bob"), delivery="r")
    assert gh.roster() == {2: ("bob", "member")}
    assert gh.actions("member.") == ["member.added"]


def test_a_rate_limited_member_read_is_raised_with_nothing_applied(gh: Org) -> None:
    gh.fake.add_member(gh.org_id, 5, "eve")
    gh.fake.fail("get_member", RateLimited(datetime(2030, 1, 1, tzinfo=UTC)))
    with pytest.raises(RateLimited):
        deliver(gh, "organization", membership(gh, "member_added", 5, "eve"))
    assert gh.roster() == {}
    assert gh.last_run().result == "rate_limited"


def test_a_member_invitation_is_ignored_without_asking_github(gh: Org) -> None:
    handled = deliver(gh, "organization", membership(gh, "member_invited", 5, "eve"))
    assert handled.status == deliveries.IGNORED
    assert gh.fake.calls == []


def test_installation_deleted_disconnects_once_github_confirms(gh: Org) -> None:
    gh.fake.uninstall(GH_INSTALLATION)
    handled = deliver(gh, "installation", installation(gh, "deleted"))
    assert (handled.status, handled.outcome["result"]) == (deliveries.PROCESSED, "disconnected")
    assert gh.workspace().status == "disconnected"
    (entry,) = gh.activity("workspace.disconnected")
    assert entry.details["reason"] == "app_uninstalled"
    assert len(gh.fake.calls_to("get_org_installation")) == 1


def test_installation_deleted_that_github_contradicts_changes_nothing(gh: Org) -> None:
    handled = deliver(gh, "installation", installation(gh, "deleted"))
    assert handled.outcome["result"] == "contradicted"
    assert gh.workspace().status == "active"
    assert gh.actions() == ["hint.contradicted"]


def test_installation_deleted_while_github_is_unreachable_is_retried_not_applied(gh: Org) -> None:
    gh.fake.uninstall(GH_INSTALLATION)
    gh.fake.fail("get_org_installation", TransientProviderError("timeout"))
    with pytest.raises(TransientProviderError):
        deliver(gh, "installation", installation(gh, "deleted"))
    assert gh.workspace().status == "active"
    assert gh.actions() == []


def test_organization_renamed_follows_the_org_read_by_id_and_queues_a_full_sync(gh: Org) -> None:
    gh.fake.rename_org(gh.org_id, "acme-io")
    queued = ListEnqueuer()
    payload = {"action": "renamed", "organization": {"id": gh.org_id, "login": "spoofed"},
               "installation": {"id": GH_INSTALLATION}, "changes": {"login": {"from": "acme"}}}
    handled = deliver(gh, "organization", payload, queued)
    assert handled.outcome["result"] == "full_sync_queued"
    assert gh.workspace().provider_org_login == "acme-io"
    assert queued.full_syncs == [(gh.workspace_id, "webhook:d-1")]


def test_gitlab_member_event_re_reads_the_member(gl: Org) -> None:
    gl.fake.add_member(gl.org_id, 64, "test_user", "admin")
    handled = deliver(gl, "Member Hook", gitlab_member(gl, "user_add_to_group", 64, "test_user"))
    assert handled.status == deliveries.PROCESSED
    assert gl.roster() == {64: ("test_user", "admin")}
    assert [c.args[1] for c in gl.fake.calls_to("get_member")] == [64]
    gl.fake.remove_member(gl.org_id, 64)
    deliver(gl, "Member Hook", gitlab_member(gl, "user_remove_from_group", 64, "test_user"), delivery="d-2")
    assert gl.roster() == {}


def test_gitlab_subgroup_member_event_is_ignored(gl: Org) -> None:
    payload = {**gitlab_member(gl, "user_add_to_group", 64, "x"), "parent_group_id": gl.org_id,
               "group_id": 501}
    handled = deliver(gl, "Member Hook", payload)
    assert handled.status == deliveries.IGNORED
    assert gl.fake.calls == []
