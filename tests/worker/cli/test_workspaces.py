"""``orgsync workspaces ...`` (worker/cli/workspaces.py): each command's --json
is the HTTP API's object; reconnect reads the provider first."""
from __future__ import annotations

from click.testing import CliRunner

from demo.fakes.server import FakeProviderServer
from tests.worker.cli.conftest import api_json, as_json, run
from tests.worker_env import INSTALLATION, ORG_ID
from worker.cli import main


def test_workspace_commands_print_the_api_objects(cli_env: dict[str, str], seeded: dict[str, str]) -> None:
    shown = as_json(run(cli_env, "workspaces", "subscription", "acme", "--plan", "team", "--json"))
    assert shown["subscription"] == "team" and shown["id"] == seeded["ws"]
    transferred = as_json(run(cli_env, "workspaces", "transfer", "acme", "--to", "user2", "--json"))
    assert transferred["owner"] == {"id": seeded["u2"], "username": "user2"}
    assert as_json(run(cli_env, "workspaces", "show", "acme", "--json")) == transferred
    cleared = as_json(run(cli_env, "workspaces", "subscription", "acme", "--none", "--json"))
    assert cleared["subscription"] is None
    gone = as_json(run(cli_env, "workspaces", "disconnect", "acme", "--json"))
    assert gone["status"] == "disconnected"
    assert gone == api_json(cli_env, "POST", "/v1/admin/workspaces/acme/disconnect")


def test_workspaces_reconnect_reads_the_provider_first(cli_env: dict[str, str], seeded: dict[str, str],
                                                       server: FakeProviderServer) -> None:
    as_json(run(cli_env, "workspaces", "disconnect", "acme", "--json"))
    server.github.revoke_installation(INSTALLATION)
    refused = CliRunner().invoke(main, ["workspaces", "reconnect", "acme"], env=cli_env)
    assert refused.exit_code != 0
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not installed" in lines[0] and "nothing was changed" in lines[0]
    assert as_json(run(cli_env, "workspaces", "show", "acme", "--json"))["status"] == "disconnected"

    server.github.install(ORG_ID, INSTALLATION + 1)  # reinstalled
    result = run(cli_env, "workspaces", "reconnect", "acme", "--json")
    body = as_json(result)
    assert body["result"] == "reconnected" and body["workspace"]["status"] == "active"
    # Without REDIS_URL the full sync ran in this process: user3 joined.
    assert "running the full sync in this process" in result.stderr
    members = as_json(run(cli_env, "workspaces", "members", "acme", "--json"))["members"]
    assert sorted(m["provider_user_id"] for m in members) == [1, 2, 3]
