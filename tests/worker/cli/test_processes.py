"""`orgsync dev` starts on a fresh directory and answers /healthz and /readyz."""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.conftest import ORGSYNC, free_port
from worker.cli import main


def _get(url: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_dev_serves_health_and_ready_on_embedded_default(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    proc = subprocess.Popen(
        [str(ORGSYNC), "dev", "--port", str(port)], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/healthz")
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None:
                    raise AssertionError(f"orgsync dev exited: {proc.stdout.read()}")  # type: ignore[union-attr]
                time.sleep(0.2)
        assert status == 200 and body == {"status": "ok"}
        status, body = _get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200, body
        assert body["checks"] == {"database": "ok", "redis": "ok"} and body["redis"] == "embedded"
        assert (tmp_path / "orgsync.db").exists()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}/webhooks/github" in out


def test_bad_configuration_stops_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    env = dict(os.environ, ORGSYNC_MAX_REMOVAL_FRACTION="lots")
    proc = subprocess.run([str(ORGSYNC), "workspaces", "list"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "ORGSYNC_MAX_REMOVAL_FRACTION" in lines[0], proc.stderr


def test_dev_retries_a_failed_membership_read_with_no_redis_anywhere(tmp_path: Path, server: Any,
                                                                     app_key: str) -> None:
    """The embedded mode runs the production pipeline: a 502 makes the delivery
    due again (a time in SQLite), the dev process's own sweep wakes its lane,
    and the retry applies it — no Redis server, no RQ scheduler."""
    import hashlib
    import hmac

    from models import store
    from models.base import make_engine, make_session_factory, session_scope
    from models.migrate import upgrade
    from models.tables import RosterEntry

    db_url = f"sqlite:///{tmp_path / 'dev.db'}"
    upgrade(db_url)
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    server.github.add_org(9001, "acme", installation_id=77)
    server.github.add_member(9001, 5, "user5", "member")
    with session_scope(sessions) as s:
        store.create_provider_workspace(s, "github", 9001, "acme", actor="test", installation_id=77)
    server.github.fail("/memberships/", 502, times=1)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "ORGSYNC_", "GITHUB_"))}
    env.update(DATABASE_URL=db_url, GITHUB_API_URL=server.github_api_url, GITHUB_APP_ID="4242",
               GITHUB_APP_PRIVATE_KEY=app_key, GITHUB_WEBHOOK_SECRET="s3cret")
    proc = subprocess.Popen([str(ORGSYNC), "dev", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"http://127.0.0.1:{port}/healthz")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline and proc.poll() is None, "orgsync dev did not start"
                time.sleep(0.2)
        body = json.dumps({"action": "member_added", "organization": {"id": 9001, "login": "acme"},
                           "installation": {"id": 77},
                           "membership": {"user": {"id": 5, "login": "user5"}, "role": "member"}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/webhooks/github", data=body, method="POST", headers={
            "Content-Type": "application/json", "X-GitHub-Event": "organization", "X-GitHub-Delivery": "dev-502",
            "X-Hub-Signature-256": "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 202 and json.loads(resp.read())["status"] == "queued"
        posted = time.monotonic()
        applied = None
        while time.monotonic() < posted + 75:
            with session_scope(sessions) as s:
                if s.get(RosterEntry, (store.get_provider_workspace(s, "github", 9001).id, 5)) is not None:  # type: ignore[union-attr]
                    applied = time.monotonic() - posted
                    break
            time.sleep(0.5)
        assert applied is not None, "the retried delivery was never applied"
        assert applied < 60
        with session_scope(sessions) as s:
            from models import deliveries

            d = deliveries.get_delivery(s, "dev-502")
            assert (d.status, d.attempts) == ("processed", 2)
        assert server.github.count("/memberships/", status=502) == 1
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
        engine.dispose()


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
