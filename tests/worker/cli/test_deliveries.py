"""``orgsync deliveries list|replay|send`` (worker/cli/deliveries.py): the
lists are the admin API's, a replay runs in this process without REDIS_URL, and
send signs and posts a payload to the app."""
from __future__ import annotations

import json
import threading
from pathlib import Path

from click.testing import CliRunner
from werkzeug.serving import make_server

from runtime.process import Runtime
from tests.worker.cli.conftest import _record, api_json, as_json, run
from tests.worker_env import INSTALLATION, ORG_ID
from webhooks.app import create_app
from worker.cli import main


def test_deliveries_list_and_replay(cli_env: dict[str, str], seeded: dict[str, str]) -> None:
    _record(cli_env, "d-failed", 3, "failed")
    _record(cli_env, "d-new", 2, "received")
    failed = as_json(run(cli_env, "deliveries", "list", "--failed", "--json"))
    assert [d["id"] for d in failed["deliveries"]] == ["d-failed"]
    assert failed == api_json(cli_env, "GET", "/v1/admin/deliveries?status=failed")
    listed = as_json(run(cli_env, "deliveries", "list", "--json"))["deliveries"]
    assert {d["id"] for d in listed} == {"d-failed", "d-new"}

    replayed = as_json(run(cli_env, "deliveries", "replay", "d-failed", "--json"))
    assert replayed["delivery"] == "d-failed" and replayed["status"] == "processed"
    members = as_json(run(cli_env, "workspaces", "members", "acme", "--json"))
    assert "user3" in {m["login"] for m in members["members"]}
    again = CliRunner().invoke(main, ["deliveries", "replay", "d-failed"], env=cli_env)
    assert again.exit_code == 1 and "already processed" in again.stderr


def test_deliveries_send_signs_and_posts_to_the_app(cli_env: dict[str, str], seeded: dict[str, str],
                                                    tmp_path: Path) -> None:
    from models.config import load_settings

    rt = Runtime(load_settings({k: v for k, v in cli_env.items() if v}))
    httpd = make_server("127.0.0.1", 0, create_app(runtime=rt), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        payload = tmp_path / "event.json"
        payload.write_text(json.dumps({
            "action": "member_added", "organization": {"id": ORG_ID, "login": "acme"},
            "membership": {"user": {"id": 3, "login": "user3"}, "role": "member", "state": "active"},
            "installation": {"id": INSTALLATION}}))
        url = f"http://127.0.0.1:{httpd.server_port}"
        body = as_json(run(cli_env, "deliveries", "send", str(payload), "--provider", "github",
                           "--event", "organization", "--delivery-id", "sent-1", "--url", url, "--json"))
        assert body == {"status_code": 202, "response": {"delivery": "sent-1", "status": "queued"}}
        listed = as_json(run(cli_env, "deliveries", "list", "--json"))
        assert [d["id"] for d in listed["deliveries"]] == ["sent-1"]
        # A wrong secret is refused by the app: non-zero exit.
        bad = CliRunner().invoke(main, ["deliveries", "send", str(payload), "--provider", "github", "--event",
                                        "organization", "--url", url],
                                 env={**cli_env, "GITHUB_WEBHOOK_SECRET": "wrong"})
        assert bad.exit_code == 1 and "401" in bad.stdout
    finally:
        httpd.shutdown()
        rt.engine.dispose()
