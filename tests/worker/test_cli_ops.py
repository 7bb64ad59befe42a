"""Operator CLI: each command's --json output is parsed and compared with the
HTTP API's object; queued work runs in-process without REDIS_URL; errors are
one line and a non-zero exit."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from werkzeug.serving import make_server

from demo.fakes.server import FakeProviderServer
from models import deliveries, store
from models.base import make_engine
from models.migrate import upgrade
from runtime.process import Runtime, embedded_redis, set_runtime
from tests.worker_env import (
    ADMIN_TOKEN,
    APP_ID,
    GITHUB_SECRET,
    INSTALLATION,
    ORG_ID,
    make_settings,
)
from webhooks.app import create_app
from worker import jobs
from worker.cli import main

ORGSYNC = Path(sys.executable).with_name("orgsync")


@pytest.fixture
def cli_env(tmp_path: Path, server: FakeProviderServer, app_key: str) -> Iterator[dict[str, str]]:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade(db)
    env = {
        "DATABASE_URL": db,
        "REDIS_URL": "",
        "GITHUB_API_URL": server.github_api_url,
        "GITHUB_APP_ID": APP_ID,
        "GITHUB_APP_PRIVATE_KEY": app_key,
        "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
        "ORGSYNC_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    embedded_redis().flushall()
    yield env
    embedded_redis().flushall()
    jobs.set_sync_context(None)
    set_runtime(None)


@pytest.fixture
def seeded(cli_env: dict[str, str], server: FakeProviderServer) -> dict[str, str]:
    server.github.add_org(ORG_ID, "acme", installation_id=INSTALLATION)
    for uid in (1, 2, 3):
        server.github.add_member(ORG_ID, uid, f"user{uid}", "admin" if uid == 1 else "member")
    engine = make_engine(cli_env["DATABASE_URL"])
    rt = Runtime(make_settings(cli_env["DATABASE_URL"], server, cli_env["GITHUB_APP_PRIVATE_KEY"]), engine=engine)
    with rt.session() as s:
        u1, _ = store.get_or_create_user_for_identity(s, "github", 1, "user1", actor="test")
        u2, _ = store.get_or_create_user_for_identity(s, "github", 2, "user2", actor="test")
        ws = store.create_provider_workspace(s, "github", ORG_ID, "acme", actor="test", owner=u1,
                                             installation_id=INSTALLATION)
        store.apply_roster_changes(s, ws, adds=[store.StoredMember(1, "user1", "admin"),
                                                store.StoredMember(2, "user2", "member")], actor="test")
        ids = {"ws": ws.id, "u1": u1.id, "u2": u2.id}
    engine.dispose()
    return ids


def run(env: dict[str, str], *args: str) -> Result:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def api_json(env: dict[str, str], method: str, path: str, body: Any = None) -> Any:
    """The HTTP API's answer for the same question, on the same database."""
    from models.config import load_settings

    rt = Runtime(load_settings({k: v for k, v in env.items() if v}))
    client = create_app(runtime=rt).test_client()
    resp = client.open(path, method=method, json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    rt.engine.dispose()
    return resp.get_json()


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


@pytest.mark.parametrize(("args", "message"), [
    (("workspaces", "transfer", "nope", "--to", "user2"), "no workspace 'nope'"),
    (("workspaces", "transfer", "acme", "--to", "ghost"), "ghost"),
    (("workspaces", "subscription", "acme"), "--plan NAME or --none"),
    (("workspaces", "subscription", "acme", "--plan", "bad name"), "plan name"),
    (("resync",), "--all"),
    (("resync", "nope"), "no workspace 'nope'"),
    (("deliveries", "replay", "missing"), "no delivery 'missing'"),
    (("deliveries", "list", "--status", "weird"), "--status must be one of"),
    (("worker",), "REDIS_URL"),
    (("cron",), "REDIS_URL"),
])
def test_errors_are_one_line_and_a_nonzero_exit(cli_env: dict[str, str], seeded: dict[str, str],
                                                args: tuple[str, ...], message: str) -> None:
    result = CliRunner().invoke(main, list(args), env=cli_env)
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_resync_without_redis_runs_the_sync_in_process(cli_env: dict[str, str], seeded: dict[str, str]) -> None:
    result = run(cli_env, "resync", "acme", "--json")
    body = as_json(result)
    [queued] = body["queued"]
    assert queued["workspace"] == seeded["ws"] and queued["job"].startswith("drain-")
    [done] = body["results"]
    assert done["state"] == "finished" and done["run"]["result"] == "ok" and done["run"]["added"] == 1
    assert "running the sync in this process" in result.stderr
    members = as_json(run(cli_env, "workspaces", "members", "acme", "--json"))
    assert {m["login"] for m in members["members"]} == {"user1", "user2", "user3"}

    human = run(cli_env, "resync", "--all")
    assert human.exit_code == 0 and "acme: ok (+0 -0 ~0" in human.stdout


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


def _record(env: dict[str, str], delivery_id: str, uid: int, status: str) -> None:
    payload = json.dumps({
        "action": "member_added", "organization": {"id": ORG_ID, "login": "acme"},
        "membership": {"user": {"id": uid, "login": f"user{uid}"}, "role": "member", "state": "active"},
        "installation": {"id": INSTALLATION},
    })
    engine = make_engine(env["DATABASE_URL"])
    from models.base import make_session_factory, session_scope

    with session_scope(make_session_factory(engine)) as s:
        deliveries.record_delivery(s, delivery_id, "github", "organization", "member_added", payload, "0" * 64,
                                   f"github:{ORG_ID}")
        deliveries.mark_failed(s, delivery_id, "transient provider error: 502") if status == "failed" else None
    engine.dispose()


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


@pytest.mark.redis
def test_resync_wait_follows_the_job_on_real_redis(cli_env: dict[str, str], seeded: dict[str, str],
                                                    real_redis: Any, server: FakeProviderServer) -> None:
    """`orgsync resync --wait` in its own process; a worker (here, in the test
    process) runs the sync; the command reports the result and exits."""
    from rq import SimpleWorker

    from runtime.queues import all_queues
    from tests.conftest import REDIS_URL

    env = {**os.environ, **cli_env, "REDIS_URL": REDIS_URL}
    settings = make_settings(cli_env["DATABASE_URL"], server, cli_env["GITHUB_APP_PRIVATE_KEY"],
                             redis_url=REDIS_URL)
    set_runtime(Runtime(settings, redis_client=real_redis))
    proc = subprocess.Popen([str(ORGSYNC), "resync", "acme", "--wait", "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            SimpleWorker(all_queues(real_redis), connection=real_redis).work(burst=True, logging_level="WARNING")
            time.sleep(0.2)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    body = json.loads(out)
    assert body["results"][0]["run"]["result"] == "ok"
    assert "acme: ok (+1 -0 ~0" in err  # progress went to stderr, JSON to stdout
    assert "JobStatus" not in err and "waiting for a worker" in err  # states in words


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


@pytest.mark.redis
def test_worker_does_not_exit_zero_when_rqs_loop_ends_on_its_own(
    cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """RQ's work() returns, without raising, on a Redis timeout; a worker that
    then exited 0 would look like a clean stop to a restart-on-failure
    supervisor. It works again; only a requested stop ends it."""
    from rq import SimpleWorker

    from tests.conftest import need_redis

    url = need_redis()
    calls: list[int] = []

    def work(self: SimpleWorker, burst: bool = False, **kwargs: Any) -> bool:
        calls.append(1)
        if len(calls) == 2:
            self._stop_requested = True  # a SIGTERM's warm shutdown
        return False

    monkeypatch.setattr(SimpleWorker, "work", work)
    monkeypatch.setattr("time.sleep", lambda s: None)
    result = CliRunner().invoke(main, ["worker"], env={**cli_env, "REDIS_URL": url})
    assert result.exit_code == 0, result.output
    assert len(calls) == 2
