"""``orgsync resync``: queue full syncs and, with --wait (always without
Redis), follow them to their results."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click

from models import lanes, queries, store
from models.store import RunResult
from models.tables import as_utc, utcnow
from runtime import operations
from runtime.operations import QueuedSync
from runtime.process import Runtime
from worker.cli.context import CliContext, pass_ctx
from worker.cli.errors import fail, store_call
from worker.cli.inline import run_inline
from worker.cli.output import emit, progress


@click.command("resync")
@click.argument("ref", required=False)
@click.option("--all", "all_", is_flag=True, help="Every active provider workspace.")
@click.option("--wait", is_flag=True, help="Wait for the syncs and show their progress and results.")
@click.option("--force", is_flag=True, help="Apply a sync held by the mass-removal guard.")
@click.option("--timeout", default=1800, show_default=True, type=click.IntRange(1), help="Seconds to wait.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def resync(ctx: CliContext, ref: str | None, all_: bool, wait: bool, force: bool, timeout: int, as_json: bool) -> None:
    """Queue a full sync of one workspace (REF) or of all (--all)."""
    if bool(ref) == all_:
        fail("give a workspace reference or --all")
    rt = ctx.runtime

    def act() -> tuple[list[QueuedSync], int]:
        with rt.session() as s:
            before = queries.max_sync_run_id(s)
            return operations.resync(s, rt.redis, "all" if all_ else str(ref), force=force), before

    queued, before = store_call(act)
    say = progress(as_json)
    if not queued:
        emit({"queued": []}, as_json, lambda _: click.echo("no active provider workspaces to sync"))
        return
    for item in queued:
        say(f"queued {item.workspace_id}" + (f" (wake-up {item.job})" if item.job else ""))
    if rt.embedded:
        say("no REDIS_URL: running the sync in this process")
        wait = True
        timeout = min(timeout, 120)
    if not wait:
        if as_json:
            emit({"queued": queued}, True, click.echo)
        return
    results = _wait_for_syncs(rt, queued, before, timeout, say, inline=rt.embedded)
    if as_json:
        emit({"queued": queued, "results": results}, True, click.echo)
    bad = [r for r in results if r["state"] != "finished" or r["run"].result in ("failed", "auth_broken")]
    if bad:
        raise SystemExit(1)


def _wait_for_syncs(rt: Runtime, queued: list[QueuedSync], after_run: int, timeout: float,
                    say: Callable[[str], None], *, inline: bool) -> list[dict[str, Any]]:
    """Follow each owed full sync until it produced a finished run, printing
    each change of state. The database says what is owed and when (a retry's
    backoff, a rate limit's reset); ``inline`` runs the work in this process."""
    names: dict[str, str] = {}
    lane_of: dict[str, str] = {}
    with rt.session() as s:
        for item in queued:
            ws = store.get_workspace(s, item.workspace_id)
            names[ws.id], lane_of[ws.id] = ws.name, lanes.lane_of_workspace(ws)
    results: dict[str, dict[str, Any]] = {}
    last_state: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    total = len(queued)
    while True:
        waiting = [item.workspace_id for item in queued if item.workspace_id not in results]
        next_due: dict[str, tuple[Any, RunResult]] = {}
        with rt.session() as s:
            runs = queries.full_runs_after(s, waiting, after_run)
            owed = lanes.pending_full_syncs(s, [lane_of[w] for w in waiting])
        for ws_id in waiting:
            run = runs.get(ws_id)
            due = owed.get(lane_of[ws_id])
            if run is not None and run.result != "running" and due is None:
                results[ws_id] = {"workspace": ws_id, "state": "finished", "run": run}
                say(f"[{len(results)}/{total}] {names[ws_id]}: {describe_run(run)}")
                continue
            if run is not None and run.result in ("failed", "rate_limited") and due is not None:
                label = (f"{run.result.replace('_', ' ')} ({run.error or ''}); "
                         f"next try at {due.isoformat(timespec='seconds')}")
                next_due[ws_id] = (due, run)
            elif run is not None and run.result == "running":
                label = "running"
            else:
                label = "waiting for a worker" if not inline else "starting"
            if last_state.get(ws_id) != label:
                last_state[ws_id] = label
                say(f"        {names[ws_id]}: {label}")
        if len(results) >= total:
            break
        remaining = deadline - time.monotonic()
        # Inline, a retry due after the deadline will not run here: say so now
        # rather than wait for nothing.
        hopeless = inline and next_due and all(
            (as_utc(due) - utcnow()).total_seconds() > remaining for due, _ in next_due.values())  # type: ignore[operator]
        if remaining <= 0 or hopeless:
            for ws_id in waiting:
                if ws_id in results:
                    continue
                due_run = next_due.get(ws_id)
                results[ws_id] = {"workspace": ws_id, "state": "gave_up" if due_run else "timeout",
                                  "run": due_run[1] if due_run else None}
                if due_run:
                    where = "when `orgsync dev` is running" if inline else "by a worker"
                    say(f"gave up on {names[ws_id]}: the provider keeps failing "
                        f"({due_run[1].error or due_run[1].result}); the sync stays owed and "
                        f"runs at {due_run[0].isoformat(timespec='seconds')} {where}")
                else:
                    say(f"stopped waiting for {names[ws_id]} after {int(timeout)} s; the sync stays owed "
                        "and runs " + ("when `orgsync dev` is running" if inline else "when a worker is free"))
            break
        if inline:
            run_inline(rt, 0)
        time.sleep(0.5)
    return [results[item.workspace_id] for item in queued]


def describe_run(run: RunResult) -> str:
    text = f"{run.result} (+{run.added} -{run.removed} ~{run.changed}, {run.api_calls} API calls)"
    if run.result == "rate_limited":
        text += f"; rescheduled for {run.details.get('reset_at', 'the reset time')}"
    elif run.error:
        text += f": {run.error}"
    return text
