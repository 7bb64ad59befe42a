"""The edges' serializers of the use cases' typed results agree: the API's
(webhooks/serialize.py), the CLI's (worker/cli/serialize.py) and the delivery
outcome's (sync/outcomes.py) write the same document for the same value, with
the keys in the same order; so do the API's and the CLI's for the store's
views (activity entries, deliveries, users, their workspaces, invitations),
and the API-only views (access, join requests, members, sign-up) keep their
documented shape. No database: the values are built here."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from models.deliveries import DeliveryView
from models.managed import InvitationView, JoinRequestView, MemberView
from models.store import ActivityView, RunResult, UserRef, WorkspaceName, WorkspaceView
from models.users import (
    AccessView,
    IdentityRef,
    UserView,
    UserWorkspace,
    WorkspaceBrief,
    WorkspacesOfUser,
)
from runtime.operations import (
    DeliveryCounts,
    HeldSync,
    QueuedSync,
    Replay,
    StatusReport,
    WorkspaceStatus,
)
from sync import outcomes
from sync.installations import Reconnection
from webhooks import serialize as web
from worker.cli import serialize as cli

STARTED = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
FINISHED = datetime(2024, 5, 1, 12, 0, 7, tzinfo=UTC)

RUN = RunResult(
    id=7, workspace_id="ws_1", kind="full", trigger="operator", result="held", forced=False,
    started_at=STARTED, finished_at=FINISHED, added=1, removed=2, changed=3, api_calls=4, not_modified=5,
    error="would remove 15 of 20 members", details={"pages": 2, "would_remove": 15},
)
RUNNING = RunResult(
    id=8, workspace_id="ws_2", kind="member", trigger="webhook:d1", result="running", forced=True,
    started_at=STARTED, finished_at=None, added=0, removed=0, changed=0, api_calls=0, not_modified=0,
    error=None, details={},
)
PROVIDER = WorkspaceView(
    id="ws_1", name="acme", kind="provider", provider="github", provider_org_id=9001,
    provider_org_login="acme", reference="github:acme", status="active", link="broken",
    owner=UserRef("usr_1", "ann"), subscription="team",
)
MANAGED = WorkspaceView(
    id="ws_2", name="team", kind="managed", provider=None, provider_org_id=None, provider_org_login=None,
    reference=None, status="active", link=None, owner=None, subscription=None,
)


def _text(value: Any) -> str:
    return json.dumps(value)  # order-sensitive, unlike ==


def test_a_run_is_one_document_everywhere() -> None:
    expected = {
        "id": 7, "workspace": "ws_1", "kind": "full", "trigger": "operator", "result": "held", "forced": False,
        "started_at": "2024-05-01T12:00:00.123456+00:00", "finished_at": "2024-05-01T12:00:07+00:00",
        "added": 1, "removed": 2, "changed": 3, "api_calls": 4, "not_modified": 5,
        "error": "would remove 15 of 20 members", "details": {"pages": 2, "would_remove": 15},
    }
    for write in (web.run, cli.run, outcomes.run):
        assert _text(write(RUN)) == _text(expected)
        assert write(RUNNING)["finished_at"] is None
    assert _text(outcomes.run_summary(RUN)) == _text(
        {"id": 7, "kind": "full", "result": "held", "added": 1, "removed": 2, "changed": 3, "api_calls": 4})


@pytest.mark.parametrize("view", [PROVIDER, MANAGED], ids=["provider", "managed"])
def test_a_workspace_is_one_document_everywhere(view: WorkspaceView) -> None:
    keys = ["id", "name", "kind", "provider", "provider_org_id", "provider_org_login", "reference", "status",
            "link", "owner", "subscription"]
    docs = [web.workspace(view), cli.workspace(view), outcomes.workspace(view)]
    assert all(list(d) == keys for d in docs)
    assert _text(docs[0]) == _text(docs[1]) == _text(docs[2])
    assert docs[0]["owner"] == ({"id": "usr_1", "username": "ann"} if view.owner else None)


@pytest.mark.parametrize("queues,error", [(None, None), (None, "redis unreachable: ConnectionError"),
                                          ({"sync": {"queued": 1, "failed": 0}}, None)])
def test_the_status_report_is_one_document_for_the_api_and_the_cli(
    queues: dict[str, dict[str, int]] | None, error: str | None
) -> None:
    report = StatusReport(
        workspaces=(WorkspaceStatus(PROVIDER, "401 from GitHub", RUN, 55, FINISHED),
                    WorkspaceStatus(MANAGED, None, None, None, None)),
        held=(HeldSync("ws_1", "acme", 7, RUN.error),),
        deliveries=DeliveryCounts(pending=3, failed=1, deferred=0, retrying=2, by_status={"received": 3}),
        full_syncs_owed=1, queues=queues, queues_error=error,
    )
    doc = web.status(report)
    assert _text(doc) == _text(cli.status(report))
    assert list(doc) == ["workspaces", "held", "deliveries", "full_syncs_owed", "queues",
                         *(["queues_error"] if error else [])]
    first = doc["workspaces"][0]
    assert list(first)[-4:] == ["link_error", "last_sync", "installation_id", "installation_checked_at"]
    assert first["last_sync"] == {**web.run(RUN), "at": "2024-05-01T12:00:07+00:00"}
    assert doc["workspaces"][1]["last_sync"] is None
    assert doc["held"] == [{"workspace": "ws_1", "name": "acme", "run": 7, "reason": RUN.error}]


def test_the_operator_answers_are_one_document_for_the_api_and_the_cli() -> None:
    reconnected = Reconnection("reconnected", PROVIDER, True)
    assert _text(web.reconnection(reconnected)) == _text(cli.reconnection(reconnected)) \
        == _text(outcomes.reconnection(reconnected)) \
        == _text({"result": "reconnected", "workspace": web.workspace(PROVIDER), "full_sync_queued": True})
    assert web.queued(QueuedSync("ws_1", None)) == cli.queued(QueuedSync("ws_1", None)) \
        == {"workspace": "ws_1", "job": None}
    assert _text(web.replay(Replay("d-1", "queued", "j-1"))) == _text(cli.replay(Replay("d-1", "queued", "j-1"))) \
        == _text({"delivery": "d-1", "status": "queued", "job": "j-1"})


def test_the_cli_serializes_typed_results_anywhere_in_a_document() -> None:
    doc = {"queued": (QueuedSync("ws_1", "j"),), "results": [{"workspace": "ws_1", "state": "finished",
                                                              "run": RUN}], "n": 1}
    assert cli.to_json(doc) == {"queued": [{"workspace": "ws_1", "job": "j"}],
                                "results": [{"workspace": "ws_1", "state": "finished", "run": cli.run(RUN)}],
                                "n": 1}


# --------------------------------------------------------------------------- the store's views

ACTIVITY = ActivityView(seq=42, at=STARTED, workspace_id="ws_1", actor="user:usr_1", action="member.added",
                        subject="9001", details={"login": "ann", "role": "member"})
DELIVERY = DeliveryView(
    id="d-1", provider="github", event="organization", action="member_added", status="received",
    org_key="github:9001", attempts=1, job_id="j-1", error=None, due_at=FINISHED, leased_until=None,
    outcome={}, received_at=STARTED, queued_at=FINISHED, started_at=None, processed_at=None,
)
ANN = UserView(id="usr_1", username="ann",
               identities=(IdentityRef("github", 12, "ann-gh"), IdentityRef("gitlab", 34, "ann-gl")),
               personal_workspace=WorkspaceName("ws_p", "ann"))
BOB = UserView(id="usr_2", username="bob", identities=(), personal_workspace=None)
INVITATION = InvitationView(id=3, workspace_id="ws_2", token="inv_secret", role="admin", status="active",
                            expires_at=FINISHED, created_at=STARTED)


def test_an_activity_entry_is_one_document_for_the_api_and_the_cli() -> None:
    expected = {"seq": 42, "at": "2024-05-01T12:00:00.123456+00:00", "workspace": "ws_1", "actor": "user:usr_1",
                "action": "member.added", "subject": "9001", "details": {"login": "ann", "role": "member"}}
    assert _text(web.activity(ACTIVITY)) == _text(cli.activity(ACTIVITY)) == _text(expected)
    assert cli.to_json({"activity": [ACTIVITY]}) == {"activity": [expected]}


def test_a_delivery_is_one_document_for_the_api_and_the_cli() -> None:
    expected = {
        "id": "d-1", "provider": "github", "event": "organization", "action": "member_added", "status": "received",
        "org": "github:9001", "attempts": 1, "job": "j-1", "error": None, "due_at": "2024-05-01T12:00:07+00:00",
        "leased_until": None, "outcome": {}, "received_at": "2024-05-01T12:00:00.123456+00:00",
        "queued_at": "2024-05-01T12:00:07+00:00", "started_at": None, "processed_at": None,
    }
    assert _text(web.delivery(DELIVERY)) == _text(cli.delivery(DELIVERY)) == _text(expected)
    assert cli.to_json({"deliveries": [DELIVERY]}) == {"deliveries": [expected]}


@pytest.mark.parametrize("view", [ANN, BOB], ids=["identities", "bare"])
def test_a_user_is_one_document_for_the_api_and_the_cli(view: UserView) -> None:
    doc = web.user(view)
    assert _text(doc) == _text(cli.user(view)) == _text(cli.to_json(view))
    assert list(doc) == ["id", "username", "identities", "personal_workspace"]
    if view is ANN:
        assert doc["identities"] == [{"provider": "github", "provider_user_id": 12, "login": "ann-gh"},
                                     {"provider": "gitlab", "provider_user_id": 34, "login": "ann-gl"}]
        assert _text(doc["personal_workspace"]) == _text({"id": "ws_p", "name": "ann"})
    else:
        assert doc["identities"] == [] and doc["personal_workspace"] is None
    assert _text(web.signed_up(view)) == _text({"user": {"id": view.id, "username": view.username},
                                                "personal_workspace": doc["personal_workspace"]})


def test_a_users_workspaces_are_one_document_for_the_api_and_the_cli() -> None:
    view = WorkspacesOfUser(UserRef("usr_1", "ann"), (
        UserWorkspace("ws_1", "acme", "provider", "admin", "active", "team"),
        UserWorkspace("ws_p", "ann", "personal", "owner", "active", None),
    ))
    expected = {"user": {"id": "usr_1", "username": "ann"}, "workspaces": [
        {"id": "ws_1", "name": "acme", "kind": "provider", "role": "admin", "status": "active", "subscription": "team"},
        {"id": "ws_p", "name": "ann", "kind": "personal", "role": "owner", "status": "active", "subscription": None},
    ]}
    assert _text(web.workspaces_of_user(view)) == _text(cli.workspaces_of_user(view)) \
        == _text(cli.to_json(view)) == _text(expected)
    empty = WorkspacesOfUser(UserRef("usr_2", "bob"), ())
    assert web.workspaces_of_user(empty) == cli.workspaces_of_user(empty) \
        == {"user": {"id": "usr_2", "username": "bob"}, "workspaces": []}


def test_an_invitation_is_one_document_for_the_api_and_the_cli() -> None:
    expected = {"id": 3, "workspace": "ws_2", "token": "inv_secret", "role": "admin", "status": "active",
                "expires_at": "2024-05-01T12:00:07+00:00", "created_at": "2024-05-01T12:00:00.123456+00:00"}
    assert _text(web.invitation(INVITATION)) == _text(cli.invitation(INVITATION)) == _text(expected)
    assert cli.to_json({"invitation": INVITATION}) == {"invitation": expected}


def test_the_api_only_views_keep_their_shape() -> None:
    access = AccessView(WorkspaceBrief("ws_2", "team", "managed", "active", None), UserRef("usr_1", "ann"),
                        "admin", False)
    assert _text(web.access(access)) == _text({
        "workspace": {"id": "ws_2", "name": "team", "kind": "managed", "status": "active", "subscription": None},
        "user": {"id": "usr_1", "username": "ann"}, "role": "admin", "can_deploy": False})
    request = JoinRequestView(id=5, status="approved", role="member", workspace=WorkspaceName("ws_2", "team"),
                              user=UserRef("usr_2", "bob"), created_at=STARTED, decided_at=FINISHED)
    assert _text(web.join_request(request)) == _text({
        "id": 5, "status": "approved", "role": "member", "workspace": {"id": "ws_2", "name": "team"},
        "user": {"id": "usr_2", "username": "bob"}, "created_at": "2024-05-01T12:00:00.123456+00:00",
        "decided_at": "2024-05-01T12:00:07+00:00"})
    member = MemberView(WorkspaceName("ws_2", "team"), None, "billing")
    assert _text(web.member(member)) == _text({"workspace": {"id": "ws_2", "name": "team"}, "user": None,
                                               "role": "billing"})
