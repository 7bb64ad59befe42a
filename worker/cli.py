"""The ``orgsync`` command line (click)."""
from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from typing import Any

import click

from models.config import ConfigError, load_settings
from worker.runtime import Runtime, set_runtime


class _Ctx:
    def __init__(self) -> None:
        self._runtime: Runtime | None = None

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            try:
                settings = load_settings()
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
            self._runtime = Runtime(settings)
            set_runtime(self._runtime)
        return self._runtime


pass_ctx = click.make_pass_decorator(_Ctx, ensure=True)


def emit(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        render(data)


def fail(message: str) -> None:
    raise click.ClickException(message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """orgsync: keep workspaces in step with GitHub orgs and GitLab groups."""
    ctx.ensure_object(_Ctx)


# ------------------------------------------------------------------ db


@main.group()
def db() -> None:
    """Database migrations."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(ctx: _Ctx) -> None:
    """Migrate the database to the newest schema."""
    from models.migrate import upgrade

    upgrade(ctx.runtime.settings.database_url)
    click.echo("database is at the newest revision")


# ------------------------------------------------------------------ dev


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@pass_ctx
def dev(ctx: _Ctx, host: str, port: int) -> None:
    """Run web and jobs in one process (embedded default: SQLite, in-process Redis)."""
    from werkzeug.serving import make_server

    from models.migrate import upgrade
    from webhooks.app import create_app
    from worker.queues import all_queues

    rt = ctx.runtime
    upgrade(rt.settings.database_url)
    app = create_app(runtime=rt)
    server = make_server(host, port, app, threaded=True)
    base = f"http://{host}:{server.server_port}"
    click.echo(f"orgsync dev serving on {base}")
    click.echo(f"  database: {rt.engine.url.render_as_string(hide_password=True)}")
    click.echo(f"  redis:    {'embedded (in-process)' if rt.embedded else 'external'}")
    click.echo(f"  GitHub webhook URL: {base}/webhooks/github")
    click.echo(f"  GitLab webhook URL: {base}/webhooks/gitlab")
    sys.stdout.flush()
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    from rq import SimpleWorker

    # The worker runs in the main thread: RQ installs signal handlers, which
    # only the main thread may do. SimpleWorker runs jobs in-process.
    worker = SimpleWorker(all_queues(rt.redis), connection=rt.redis)
    try:
        worker.work(with_scheduler=True, logging_level="WARNING")
    finally:
        server.shutdown()


# ------------------------------------------------------------------ workspaces


@main.group()
def workspaces() -> None:
    """Inspect and manage workspaces."""


def _render_workspace(w: dict[str, Any]) -> None:
    owner = w["owner"]["username"] if w.get("owner") else "-"
    ref = w.get("reference") or "-"
    click.echo(f"{w['id']}  {w['name']:<30} {w['kind']:<9} {w['status']:<12} {ref:<30} owner={owner}")


@workspaces.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def workspaces_list(ctx: _Ctx, as_json: bool) -> None:
    """List every workspace."""
    from models import store

    with ctx.runtime.session() as s:
        data = [store.workspace_to_dict(w) for w in store.list_workspaces(s)]

    def render(items: list[dict[str, Any]]) -> None:
        if not items:
            click.echo("no workspaces")
        for w in items:
            _render_workspace(w)

    emit(data, as_json, render)


def _find(ctx: _Ctx, ref: str) -> Any:
    from models import store
    from models.errors import StoreError

    s = ctx.runtime.session_factory()
    try:
        return s, store.find_workspace(s, ref)
    except StoreError as exc:
        s.close()
        fail(exc.message)
        raise  # unreachable


@workspaces.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def workspaces_show(ctx: _Ctx, ref: str, as_json: bool) -> None:
    """Show one workspace (by id, name or github:/gitlab: reference)."""
    from models import store

    s, ws = _find(ctx, ref)
    with s:
        data = store.workspace_to_dict(ws)
        run = store.last_sync_run(s, ws)
        last = store.sync_run_to_dict(run) if run else None

    def render(w: dict[str, Any]) -> None:
        for key, value in w.items():
            if key == "owner":
                value = value["username"] if value else "-"
            click.echo(f"{key:<20} {value if value is not None else '-'}")
        if last:
            click.echo(f"{'last sync':<20} {last['result']} at {last['finished_at'] or last['started_at']}"
                       f" (+{last['added']} -{last['removed']} ~{last['changed']}, {last['api_calls']} API calls)")

    emit(data, as_json, render)


@workspaces.command("members")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def workspaces_members(ctx: _Ctx, ref: str, as_json: bool) -> None:
    """List a workspace's members (roster members without an account too)."""
    from models import store

    s, ws = _find(ctx, ref)
    with s:
        data = {"workspace": store.workspace_to_dict(ws), "members": store.members(s, ws)}

    def render(d: dict[str, Any]) -> None:
        if not d["members"]:
            click.echo("no members")
        for m in d["members"]:
            user = m["user"]["username"] if m["user"] else "(no account)"
            click.echo(f"{m['login']:<30} {m['role']:<8} {user:<25} {'access' if m['access'] else 'no access'}")

    emit(data, as_json, render)


@workspaces.command("activity")
@click.argument("ref")
@click.option("--after", default=0, type=int, help="Only entries after this sequence number.")
@click.option("--limit", default=100, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def workspaces_activity(ctx: _Ctx, ref: str, after: int, limit: int, as_json: bool) -> None:
    """A workspace's activity log."""
    from models import store

    s, ws = _find(ctx, ref)
    with s:
        data = [store.activity_to_dict(a) for a in store.list_activity(s, workspace_id=ws.id, after=after, limit=limit)]

    def render(items: list[dict[str, Any]]) -> None:
        if not items:
            click.echo("no activity")
        for a in items:
            click.echo(f"{a['seq']:>8} {a['at']} {a['actor']:<28} {a['action']:<22} {a['subject'] or ''}")

    emit(data, as_json, render)


if __name__ == "__main__":
    main()
