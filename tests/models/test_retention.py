"""The daily prune of sync runs: old history goes, what status shows stays."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from models import store
from models.tables import SyncRun
from tests.worker_env import Env
from worker import jobs


def _run(env: Env, workspace_id: str, kind: str, result: str, age_days: int) -> int:
    started = datetime.now(UTC) - timedelta(days=age_days)
    with env.session() as s:
        run = SyncRun(workspace_id=workspace_id, kind=kind, trigger="test", result=result, started_at=started,
                      finished_at=None if result == "running" else started + timedelta(seconds=2))
        s.add(run)
        s.flush()
        return run.id


def test_prune_sync_runs_keeps_recent_running_and_each_workspaces_last_full_run(env_all_db: Env) -> None:
    env = env_all_db
    acme = env.add_org("acme")
    with env.session() as s:
        quiet = store.create_provider_workspace(s, "github", 777, "quiet", actor="test").id
    runs = {
        "acme old full": _run(env, acme, "full", "ok", 60),
        "acme old member": _run(env, acme, "member", "ok", 45),
        "acme old login": _run(env, acme, "login", "failed", 31),
        "acme stuck running": _run(env, acme, "full", "running", 40),
        "acme recent member": _run(env, acme, "member", "ok", 29),
        "acme last full": _run(env, acme, "full", "ok", 1),
        # A workspace not synced for months keeps its last (held) run: status
        # shows it, and an operator must still be able to force it.
        "quiet older full": _run(env, quiet, "full", "ok", 90),
        "quiet last full, held": _run(env, quiet, "full", "held", 60),
    }
    assert jobs.prune_sync_runs() == 4
    with env.session() as s:
        left = set(s.scalars(select(SyncRun.id)))
        last = store.last_sync_run(s, store.get_workspace(s, quiet))
    assert left == {runs[k] for k in ("acme stuck running", "acme recent member", "acme last full",
                                      "quiet last full, held")}
    assert last is not None and last.result == "held"
    assert jobs.prune_sync_runs() == 0
