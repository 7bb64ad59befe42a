"""The chaos run (bench/chaos.py) at a small size: the Procfile's processes on
PostgreSQL and a Redis of the script's own, Redis killed and restarted empty
mid-run, one worker SIGKILLed mid-job; every accepted delivery must be
processed exactly once and the store must equal the fake provider's truth.

The script does all the checking and exits non-zero on any failure; its
output (the counts and each check) is shown when this test fails."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REQUIRE, ROOT, need_postgres

pytestmark = [pytest.mark.deep, pytest.mark.postgres]

# Small enough for a few minutes on a CI machine, large enough that Redis dies
# with jobs queued and that a worker is caught running a delivery job.
ARGS = [
    "--deliveries", "600",
    "--org-size", "60",
    "--clients", "3",
    "--redis-down", "5",
    "--redis-at", "0.4",
    # A worker is SIGKILLed while its drain holds deliveries under its lease:
    # the lease (60 s) runs out and the minute's sweep wakes the lane again.
    "--kill-at", "0.5",
    # Each provider answer takes 20 ms, so a drain holds its rows long enough
    # to be caught (and killed) mid-batch.
    "--provider-latency", "0.02",
    "--budget", "600",
    "--wait-limit", "600",
    "--seed", "20240601",
]


def need_redis_server() -> None:
    if shutil.which("redis-server") is not None:
        return
    message = "needs the redis-server binary (the chaos run starts and kills its own Redis)"
    if REQUIRE:
        pytest.fail(f"{message} (ORGSYNC_REQUIRE_SERVICES is set, so this may not be skipped)")
    pytest.skip(message)


def test_chaos_run_loses_nothing_and_processes_each_delivery_once() -> None:
    url = need_postgres()
    need_redis_server()
    env = {**os.environ, "ORGSYNC_CHAOS_DATABASE_URL": url}
    try:
        result = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "chaos.py"), *ARGS],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=840, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"the chaos run did not finish within {exc.timeout}s:\n{out[-6000:]}")
    report = result.stdout[-8000:] + ("\n--- stderr ---\n" + result.stderr[-3000:] if result.stderr else "")
    assert result.returncode == 0, f"chaos run failed (exit {result.returncode}):\n{report}"
    assert "RESULT: OK" in result.stdout, report
