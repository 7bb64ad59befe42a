"""``orgsync status``: the operator's overview."""
from __future__ import annotations

import click

from runtime.operations import StatusReport, status_report
from worker.cli.context import CliContext, pass_ctx
from worker.cli.output import emit
from worker.cli.serialize import iso
from worker.cli.syncs import describe_run


@click.command("status")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def status(ctx: CliContext, as_json: bool) -> None:
    """Provider workspaces and their last sync, held syncs, deliveries, queues."""
    rt = ctx.runtime
    # The embedded stand-in lives inside `orgsync dev`; this process's own
    # would always look empty.
    with rt.session() as s:
        data = status_report(s, None if rt.embedded else rt.redis)

    def render(d: StatusReport) -> None:
        if not d.workspaces:
            click.echo("no provider workspaces")
        for w in d.workspaces:
            last = w.last_sync
            if last is None:
                sync = "never synced"
            else:
                sync = f"{last.result} at {iso(last.finished_at or last.started_at)} " \
                    + describe_run(last).split(" ", 1)[1]
            link = "" if w.workspace.link in (None, "ok") else f" [{w.workspace.link}]"
            click.echo(f"{w.workspace.name:<30} {w.workspace.status:<12}{link} {sync}")
        for h in d.held:
            click.echo(f"HELD {h.name}: {h.reason} (orgsync resync {h.name} --force applies it)")
        dl = d.deliveries
        click.echo(f"deliveries: {dl.pending} pending, {dl.failed} failed, {dl.deferred} deferred, "
                   f"{dl.retrying} retrying; full syncs owed: {d.full_syncs_owed}")
        if d.queues is None:
            click.echo("queues: " + (d.queues_error or "embedded (inside the orgsync dev process)"))
        else:
            for name, q in d.queues.items():
                click.echo(f"queue {name:<9} {q['queued']} queued, {q['scheduled']} scheduled, "
                           f"{q['started']} running, {q['failed']} failed")

    emit(data, as_json, render)
