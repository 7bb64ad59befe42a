"""``orgsync workspaces list|show|members|activity|transfer|disconnect|
reconnect|subscription`` (create, rename, delete and invite are the platform
API's, in worker.cli.platform)."""
from __future__ import annotations

from typing import Any

import click
from sqlalchemy.orm import Session

from models import lanes, store
from models.errors import StoreError
from models.store import WorkspaceView
from models.tables import Workspace
from runtime import operations
from sync.errors import ProviderError, ProviderSaysGone, TransientProviderError
from sync.installations import Reconnection
from worker.cli import serialize
from worker.cli.context import CliContext, pass_ctx
from worker.cli.errors import fail, store_call
from worker.cli.inline import run_inline
from worker.cli.output import emit, progress


@click.group("workspaces")
def workspaces() -> None:
    """Inspect and manage workspaces."""


_WORKSPACE_ROW = "{id:<36}  {name:<30} {kind:<9} {status:<12} {ref:<30} {owner}"


def _render_workspace(w: WorkspaceView) -> None:
    owner = w.owner.username if w.owner else "-"
    click.echo(_WORKSPACE_ROW.format(id=w.id, name=w.name, kind=w.kind, status=w.status, ref=w.reference or "-",
                                     owner=owner).rstrip())


@workspaces.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def workspaces_list(ctx: CliContext, as_json: bool) -> None:
    """List every workspace."""
    with ctx.runtime.session() as s:
        # The same envelope as the API's listings ({"deliveries": [...]}).
        data = {"workspaces": [store.workspace_view(w) for w in store.list_workspaces(s)]}

    def render(d: dict[str, list[WorkspaceView]]) -> None:
        if not d["workspaces"]:
            click.echo("no workspaces")
            return
        click.echo(_WORKSPACE_ROW.format(id="ID", name="NAME", kind="KIND", status="STATUS", ref="REFERENCE",
                                         owner="OWNER"))
        for w in d["workspaces"]:
            _render_workspace(w)

    emit(data, as_json, render)


def _find(ctx: CliContext, ref: str) -> tuple[Session, Workspace]:
    s = ctx.runtime.session_factory()
    try:
        return s, store.find_workspace(s, ref)
    except StoreError as exc:
        s.close()
        fail(exc.message)


@workspaces.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def workspaces_show(ctx: CliContext, ref: str, as_json: bool) -> None:
    """Show one workspace (by id, name or github:/gitlab: reference)."""
    s, ws = _find(ctx, ref)
    with s:
        data = store.workspace_view(ws)
        last = store.last_sync_run(s, ws)

    def render(w: WorkspaceView) -> None:
        # One line a field of the JSON document.
        for key, value in serialize.workspace(w).items():
            if key == "owner":
                value = value["username"] if value else "-"
            click.echo(f"{key:<20} {value if value is not None else '-'}")
        if last:
            click.echo(f"{'last sync':<20} {last.result} at {serialize.iso(last.finished_at or last.started_at)}"
                       f" (+{last.added} -{last.removed} ~{last.changed}, {last.api_calls} API calls)")

    emit(data, as_json, render)


@workspaces.command("members")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def workspaces_members(ctx: CliContext, ref: str, as_json: bool) -> None:
    """List a workspace's members (roster members without an account too)."""
    s, ws = _find(ctx, ref)
    with s:
        data = {"workspace": store.workspace_view(ws), "members": store.members(s, ws)}

    def render(d: dict[str, Any]) -> None:
        if not d["members"]:
            click.echo("no members")
            return
        click.echo(f"{'LOGIN':<30} {'ROLE':<8} {'ACCOUNT':<25} ACCESS")
        for m in d["members"]:
            user = m["user"]["username"] if m["user"] else "(no account)"
            click.echo(f"{m['login']:<30} {m['role']:<8} {user:<25} {'yes' if m['access'] else 'no'}")

    emit(data, as_json, render)


@workspaces.command("activity")
@click.argument("ref")
@click.option("--after", default=0, type=int, help="Only entries after this sequence number.")
@click.option("--limit", default=100, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def workspaces_activity(ctx: CliContext, ref: str, after: int, limit: int, as_json: bool) -> None:
    """A workspace's activity log."""
    s, ws = _find(ctx, ref)
    with s:
        entries = [store.activity_view(a)
                   for a in store.list_activity(s, workspace_id=ws.id, after=after, limit=limit)]
    # Exactly GET /v1/workspaces/<ref>/activity's body.
    data = {"workspace": ws.id, "activity": entries, "next_after": entries[-1].seq if entries else after}

    def render(d: dict[str, Any]) -> None:
        if not d["activity"]:
            click.echo("no activity")
            return
        click.echo(f"{'SEQ':>8} {'AT':<32} {'ACTOR':<28} {'ACTION':<22} SUBJECT")
        for a in d["activity"]:
            click.echo(f"{a.seq:>8} {serialize.iso(a.at)!s:<32} {a.actor:<28} {a.action:<22} {a.subject or ''}")

    emit(data, as_json, render)


@workspaces.command("transfer")
@click.argument("ref")
@click.option("--to", "to", required=True, help="User id or username of the new owner.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def workspaces_transfer(ctx: CliContext, ref: str, to: str, as_json: bool) -> None:
    """Transfer a workspace's ownership (and billing) to another member."""
    def act() -> WorkspaceView:
        with ctx.runtime.session() as s:
            return operations.transfer(s, ref, to)

    data = store_call(act)
    emit(data, as_json, lambda w: click.echo(f"{w.name} is now owned by {w.owner.username if w.owner else '-'}"))


@workspaces.command("disconnect")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def workspaces_disconnect(ctx: CliContext, ref: str, as_json: bool) -> None:
    """Disconnect a provider workspace (roster access ends; the owner keeps access)."""
    def act() -> tuple[WorkspaceView, bool]:
        with ctx.runtime.session() as s:
            return operations.disconnect(s, ref)

    data, changed = store_call(act)
    emit(data, as_json, lambda w: click.echo(
        f"{w.name} {'disconnected' if changed else 'was already disconnected'}"))


@workspaces.command("reconnect")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def workspaces_reconnect(ctx: CliContext, ref: str, as_json: bool) -> None:
    """Reconnect a disconnected provider workspace once the provider confirms
    its org is back (app installed, group readable), then fully sync it."""
    rt = ctx.runtime

    def act() -> Reconnection:
        try:
            return operations.reconnect(rt, ref)
        except ProviderSaysGone as exc:
            fail(f"{exc}; nothing was changed")
        except TransientProviderError:
            fail("the provider could not be reached; nothing was changed (try again later)")
        except ProviderError as exc:
            fail(f"the provider's answer cannot be used ({exc}); nothing was changed")

    data = store_call(act)
    if data.full_sync_queued and rt.embedded:
        progress(as_json)("no REDIS_URL: running the full sync in this process")

        def synced() -> bool:
            with rt.session() as s:
                ws = store.get_workspace(s, data.workspace.id)
                return not lanes.pending_full_syncs(s, [lanes.lane_of_workspace(ws)])

        run_inline(rt, 60, synced)
    emit(data, as_json, lambda d: click.echo(
        f"{d.workspace.name} {'reconnected; full sync queued' if d.result == 'reconnected' else 'was already connected'}"))


@workspaces.command("subscription")
@click.argument("ref")
@click.option("--plan", default=None, help="Plan name.")
@click.option("--none", "no_plan", is_flag=True, help="Remove the subscription.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def workspaces_subscription(ctx: CliContext, ref: str, plan: str | None, no_plan: bool, as_json: bool) -> None:
    """Set (--plan NAME) or clear (--none) a workspace's subscription."""
    if (plan is None) == (not no_plan):
        fail("give exactly one of --plan NAME or --none")

    def act() -> WorkspaceView:
        with ctx.runtime.session() as s:
            return operations.set_subscription(s, ref, None if no_plan else plan)

    data = store_call(act)
    emit(data, as_json, lambda w: click.echo(f"{w.name}: subscription {w.subscription or 'none'}"))
