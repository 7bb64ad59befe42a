"""`orgsync dev` starts on a fresh directory and answers /healthz and /readyz."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ORGSYNC = Path(sys.executable).with_name("orgsync")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_dev_serves_health_and_ready_on_embedded_default(tmp_path: Path) -> None:
    port = _free_port()
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
