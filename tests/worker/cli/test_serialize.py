"""The edges' serializers of the use cases' typed results agree: the API's
(webhooks/serialize.py), the CLI's (worker/cli/serialize.py) and the delivery
outcome's (sync/outcomes.py) write the same document for the same value, with
the keys in the same order. No database: the values are built here."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from models.store import RunResult, UserRef, WorkspaceView
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
