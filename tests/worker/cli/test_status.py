"""``orgsync status`` (worker/cli/status.py): its --json is the admin API's
status."""
from __future__ import annotations

from tests.worker.cli.conftest import api_json, as_json, run


def test_status_json_matches_the_api(cli_env: dict[str, str], seeded: dict[str, str]) -> None:
    run(cli_env, "resync", "acme")
    body = as_json(run(cli_env, "status", "--json"))
    [ws] = body["workspaces"]
    assert ws["id"] == seeded["ws"] and ws["last_sync"]["result"] == "ok"
    assert {"added", "removed", "changed", "api_calls", "at"} <= set(ws["last_sync"])
    assert body["held"] == [] and body["deliveries"]["pending"] == 0
    assert body["queues"] is None  # the embedded stand-in lives in `orgsync dev`
    api = api_json(cli_env, "GET", "/v1/admin/status")
    assert {k: v for k, v in api.items() if k != "queues"} == {k: v for k, v in body.items() if k != "queues"}
    human = run(cli_env, "status")
    assert "acme" in human.stdout and "deliveries: 0 pending, 0 failed" in human.stdout
