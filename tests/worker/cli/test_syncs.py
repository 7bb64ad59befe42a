"""``orgsync resync`` (worker/cli/syncs.py): without REDIS_URL the sync runs in
this process; with --wait on real Redis the command follows the job to its
result."""
from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import pytest

from demo.fakes.server import FakeProviderServer
from runtime.process import Runtime, set_runtime
from tests.conftest import ORGSYNC
from tests.worker.cli.conftest import as_json, run
from tests.worker_env import make_settings


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
