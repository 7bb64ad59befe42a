"""The ``orgsync`` command line (click)."""
from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from typing import Any

import click

from models.config import ConfigError, Settings, load_settings
from runtime.process import Runtime, set_runtime
from worker.cli_platform import WORKSPACE_COMMANDS, users_group


class _Ctx:
    def __init__(self) -> None:
        self._runtime: Runtime | None = None
        # Only `dev` and `db upgrade` may create the default SQLite file; a
        # read run in the wrong directory must not leave an empty one behind.
        self.may_create_database = False

    @property
    def settings(self) -> Settings:
        """The configuration alone, for commands that use no database."""
        if self._runtime is not None:
            return self._runtime.settings
        try:
            return load_settings()
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            settings = self.settings
            if not self.may_create_database:
                missing = missing_sqlite_file(settings.database_url)
                if missing is not None:
                    raise click.ClickException(
                        f"no database at {missing} (DATABASE_URL={settings.database_url}; a relative path "
                        "is taken from the current directory): run `orgsync db upgrade` or `orgsync dev` "
                        "there first, or set DATABASE_URL")
            self._runtime = Runtime(settings)
            set_runtime(self._runtime)
        return self._runtime

    def use_runtime(self, runtime: Runtime) -> None:
        self._runtime = runtime
        set_runtime(runtime)

    @property
    def database_label(self) -> str:
        if self._runtime is None:
            return "the database"
        return f"the database at {self._runtime.engine.url.render_as_string(hide_password=True)}"


def missing_sqlite_file(url: str) -> str | None:
    """The absolute path of a SQLite database file that does not exist yet,
    else None (also for in-memory SQLite and for other databases)."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    if parsed.database.startswith("file:"):
        return None
    path = Path(parsed.database).expanduser().absolute()
    return None if path.exists() else str(path)


pass_ctx = click.make_pass_decorator(_Ctx, ensure=True)


def emit(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        render(data)


def fail(message: str) -> None:
    raise click.ClickException(message)


def warn_half_configured(rt: Runtime) -> None:
    from models.config_warnings import config_warnings

    for line in config_warnings(rt.settings):
        click.echo(f"warning: {line}", err=True)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


class OrgsyncGroup(click.Group):
    """Turns the operator errors every command can meet (a database or Redis
    that cannot be reached, Ctrl-C) into one line and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        import redis
        from alembic.util.exc import CommandError
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            raise SystemExit(130) from None
        except SQLAlchemyError as exc:
            obj = ctx.find_object(_Ctx)
            where = obj.database_label if obj is not None else "the database"
            if "no such table" in str(exc) or "UndefinedTable" in type(getattr(exc, "orig", exc)).__name__:
                raise click.ClickException(
                    f"{where} has no orgsync schema yet: run `orgsync db upgrade`") from None
            raise click.ClickException(f"cannot use {where}: {_first_line(exc)}") from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise click.ClickException(
                f"cannot reach Redis ({_first_line(exc)}); is REDIS_URL right and Redis running?") from None
        except CommandError as exc:
            raise click.ClickException(f"migration failed: {_first_line(exc)}") from None


@click.group(cls=OrgsyncGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-format", type=click.Choice(["auto", "text", "json"]), default=None,
              help="Logs on stderr: text on a terminal, JSON otherwise (auto; also ORGSYNC_LOG_FORMAT).")
@click.pass_context
def main(ctx: click.Context, log_format: str | None) -> None:
    """orgsync: keep workspaces in step with GitHub orgs and GitLab groups."""
    import os

    from runtime.logs import configure_logging

    ctx.ensure_object(_Ctx)
    if log_format is not None:
        # Long-running commands reconfigure logging; they read the choice here.
        os.environ["ORGSYNC_LOG_FORMAT"] = log_format
    # Commands print for people on stdout; logs go to stderr, and only
    # warnings unless asked (long-running processes raise this to INFO).
    configure_logging(os.environ.get("ORGSYNC_LOG_LEVEL") or "WARNING", force=True)


# ------------------------------------------------------------------ db


@main.group()
def db() -> None:
    """Database migrations."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(ctx: _Ctx) -> None:
    """Migrate the database to the newest schema."""
    from models.migrate import upgrade

    ctx.may_create_database = True
    upgrade(ctx.runtime.settings.database_url)
    click.echo("database is at the newest revision")


def _wait_for_schema(ctx: _Ctx, timeout: float, say: Callable[[str], None]) -> None:
    """Return once the schema is at this code's head; fail after ``timeout``."""
    import time

    from sqlalchemy.exc import OperationalError

    from models.migrate import current, head_revisions, known_revision

    url = ctx.runtime.settings.database_url
    heads = head_revisions()
    deadline = time.monotonic() + timeout
    said = ""
    while True:
        try:
            rev = current(url)
            problem = f"the schema is at {rev or 'nothing'}, not {', '.join(heads)}"
        except OperationalError as exc:
            rev, problem = None, f"the database is not reachable ({_first_line(exc)})"
        if rev in heads:
            return
        if rev is not None and not known_revision(rev):
            # A newer release migrated past this code; its schema keeps ours working.
            say(f"the schema is at {rev}, newer than this code's {', '.join(heads)}; going on")
            return
        if time.monotonic() > deadline:
            raise click.ClickException(f"gave up after {timeout:.0f}s: {problem} (is `release` running?)")
        if problem != said:
            say(f"waiting for the release step: {problem}")
            said = problem
        time.sleep(1.0)


@db.command("wait")
@click.option("--timeout", default=300, show_default=True, type=click.IntRange(0),
              help="Seconds to wait before giving up.")
@pass_ctx
def db_wait(ctx: _Ctx, timeout: int) -> None:
    """Wait until the schema is at the newest revision (the Procfile's web,
    worker and cron run this first, so nothing serves an old schema)."""
    ctx.may_create_database = True  # the release step may not have created it yet
    import time
    from pathlib import Path

    def say(line: str) -> None:
        click.echo(line, err=True)

    path = missing_sqlite_file(ctx.runtime.settings.database_url)
    if path is not None:
        # Connecting would create the file empty; wait for release to create it.
        deadline = time.monotonic() + timeout
        say(f"waiting for the release step to create {path}")
        while not Path(path).exists():
            if time.monotonic() > deadline:
                raise click.ClickException(f"gave up after {timeout}s: no database at {path}")
            time.sleep(1.0)
    _wait_for_schema(ctx, timeout, say)


@main.command("release")
@pass_ctx
def release_cmd(ctx: _Ctx) -> None:
    """The Procfile's release step: migrate to the newest schema.

    Heroku runs it to completion before starting anything else. A local
    Procfile runner (honcho, foreman) starts every line at once and stops all
    of them when any one exits, so there it stays running, idle, after the
    migration (web, worker and cron wait for the schema with `db wait`).
    """
    import os
    import signal
    import threading

    from models.migrate import upgrade

    ctx.may_create_database = True
    upgrade(ctx.runtime.settings.database_url)
    click.echo("release: database is at the newest revision")
    if not _under_procfile_runner(os.environ):
        return
    click.echo("release: staying up, idle (a local Procfile runner stops everything when one process exits)")
    sys.stdout.flush()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def _under_procfile_runner(env: Any) -> bool:
    """True under honcho or foreman (which set HONCHO_PROCESS_NAME / PS), or
    when asked; never on Heroku, which sets DYNO and needs the release phase
    to exit."""
    if env.get("DYNO"):
        return False
    if env.get("ORGSYNC_RELEASE_STAY", "").strip().lower() in ("1", "true", "yes"):
        return True
    return bool(env.get("HONCHO_PROCESS_NAME") or env.get("PS", "").startswith("release."))


# ------------------------------------------------------------------ dev


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--demo", is_flag=True,
              help="Serve with a built-in stand-in GitHub and GitLab (seeded, app installed) and print what to try.")
@pass_ctx
def dev(ctx: _Ctx, host: str, port: int, demo: bool) -> None:
    """Run web and jobs in one process (embedded default: SQLite, in-process Redis)."""
    from werkzeug.serving import make_server

    from models.migrate import upgrade
    from runtime.logs import configure_logging
    from runtime.queues import all_queues
    from webhooks.app import create_app

    configure_logging(force=True)
    ctx.may_create_database = True
    stand_in: Any = None
    if demo:
        from demo import run as demo_run

        # The stand-ins replace every provider setting; the database and
        # Redis settings stay as configured.
        stand_in = demo_run.start(ctx.settings)
        ctx.use_runtime(Runtime(stand_in.settings))
    rt = ctx.runtime
    warn_half_configured(rt)
    upgrade(rt.settings.database_url)
    verifier = None
    if stand_in is not None:
        from oidc.settings import OidcSettings
        from oidc.verifier import OidcVerifier

        verifier = OidcVerifier(OidcSettings.from_settings(rt.settings), rt.redis, stand_in.oidc_http)
    app = create_app(runtime=rt, oidc_verifier=verifier)
    server = make_server(host, port, app, threaded=True)
    base = f"http://{host}:{server.server_port}"
    click.echo(f"orgsync dev serving on {base}")
    click.echo(f"  database: {rt.engine.url.render_as_string(hide_password=True)}")
    click.echo(f"  redis:    {'embedded (in-process)' if rt.embedded else 'external'}")
    click.echo(f"  GitHub webhook URL: {base}/webhooks/github")
    click.echo(f"  GitLab webhook URL: {base}/webhooks/gitlab")
    if stand_in is not None:
        from demo import run as demo_run

        stand_in.orgsync_url = base
        demo_run.adopt_all(stand_in, rt.session_factory)
        click.echo(demo_run.script(stand_in))
    sys.stdout.flush()
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    stop = threading.Event()
    threading.Thread(target=_dev_cron, args=(rt, stop), name="cron", daemon=True).start()
    from rq import SimpleWorker

    # The worker runs in the main thread: RQ installs signal handlers, which
    # only the main thread may do. SimpleWorker runs jobs in-process.
    worker = SimpleWorker(all_queues(rt.redis), connection=rt.redis)
    try:
        # No RQ scheduler: retries and deferrals are due times in the
        # database, fired by the sweep (the cron thread above), exactly as in
        # production.
        worker.work(logging_level="WARNING")
    finally:
        stop.set()
        server.shutdown()


def _dev_cron(rt: Runtime, stop: threading.Event) -> None:
    """The periodic jobs of `orgsync cron`, enqueued from a thread (RQ's
    CronScheduler.start installs signal handlers, which only the main thread
    may do, so its enqueue step is driven here)."""
    import logging

    from worker.cron import build_cron

    cron = build_cron(rt.redis, rt.settings, logging_level="WARNING")
    while not stop.is_set():
        try:
            cron.enqueue_jobs()
        except Exception:  # keep serving; the next tick retries
            logging.getLogger("orgsync.cron").exception("periodic jobs could not be queued")
        stop.wait(max(1.0, min(cron.calculate_sleep_interval(), 30.0)))


# ------------------------------------------------------------------ workspaces


@main.group()
def workspaces() -> None:
    """Inspect and manage workspaces."""


_WORKSPACE_ROW = "{id:<36}  {name:<30} {kind:<9} {status:<12} {ref:<30} {owner}"


def _render_workspace(w: dict[str, Any]) -> None:
    owner = w["owner"]["username"] if w.get("owner") else "-"
    ref = w.get("reference") or "-"
    click.echo(_WORKSPACE_ROW.format(id=w["id"], name=w["name"], kind=w["kind"], status=w["status"], ref=ref,
                                     owner=owner).rstrip())


@workspaces.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def workspaces_list(ctx: _Ctx, as_json: bool) -> None:
    """List every workspace."""
    from models import store

    with ctx.runtime.session() as s:
        # The same envelope as the API's listings ({"deliveries": [...]}).
        data = {"workspaces": [store.workspace_to_dict(w) for w in store.list_workspaces(s)]}

    def render(d: dict[str, Any]) -> None:
        if not d["workspaces"]:
            click.echo("no workspaces")
            return
        click.echo(_WORKSPACE_ROW.format(id="ID", name="NAME", kind="KIND", status="STATUS", ref="REFERENCE",
                                         owner="OWNER"))
        for w in d["workspaces"]:
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
def workspaces_activity(ctx: _Ctx, ref: str, after: int, limit: int, as_json: bool) -> None:
    """A workspace's activity log."""
    from models import store

    s, ws = _find(ctx, ref)
    with s:
        entries = [store.activity_to_dict(a)
                   for a in store.list_activity(s, workspace_id=ws.id, after=after, limit=limit)]
    # Exactly GET /v1/workspaces/<ref>/activity's body.
    data = {"workspace": ws.id, "activity": entries, "next_after": entries[-1]["seq"] if entries else after}

    def render(d: dict[str, Any]) -> None:
        if not d["activity"]:
            click.echo("no activity")
            return
        click.echo(f"{'SEQ':>8} {'AT':<32} {'ACTOR':<28} {'ACTION':<22} SUBJECT")
        for a in d["activity"]:
            click.echo(f"{a['seq']:>8} {a['at']:<32} {a['actor']:<28} {a['action']:<22} {a['subject'] or ''}")

    emit(data, as_json, render)


def _store_call(fn: Callable[[], Any]) -> Any:
    """Run a store/queue action; its errors become one line and exit 1."""
    import redis

    from models.errors import StoreError

    try:
        return fn()
    except StoreError as exc:
        fail(exc.message)
    except redis.RedisError as exc:
        fail(f"cannot reach Redis ({type(exc).__name__}); is REDIS_URL right and Redis running?")


@workspaces.command("transfer")
@click.argument("ref")
@click.option("--to", "to", required=True, help="User id or username of the new owner.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def workspaces_transfer(ctx: _Ctx, ref: str, to: str, as_json: bool) -> None:
    """Transfer a workspace's ownership (and billing) to another member."""
    from models import store
    from runtime import operations

    def act() -> dict[str, Any]:
        with ctx.runtime.session() as s:
            return store.workspace_to_dict(operations.transfer(s, ref, to))

    data = _store_call(act)
    emit(data, as_json, lambda w: click.echo(f"{w['name']} is now owned by {w['owner']['username']}"))


@workspaces.command("disconnect")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def workspaces_disconnect(ctx: _Ctx, ref: str, as_json: bool) -> None:
    """Disconnect a provider workspace (roster access ends; the owner keeps access)."""
    from models import store
    from runtime import operations

    def act() -> tuple[dict[str, Any], bool]:
        with ctx.runtime.session() as s:
            ws, changed = operations.disconnect(s, ref)
            return store.workspace_to_dict(ws), changed

    data, changed = _store_call(act)
    emit(data, as_json, lambda w: click.echo(
        f"{w['name']} {'disconnected' if changed else 'was already disconnected'}"))


@workspaces.command("reconnect")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def workspaces_reconnect(ctx: _Ctx, ref: str, as_json: bool) -> None:
    """Reconnect a disconnected provider workspace once the provider confirms
    its org is back (app installed, group readable), then fully sync it."""
    from models import store
    from runtime import operations
    from sync.errors import ProviderError, ProviderSaysGone, TransientProviderError

    rt = ctx.runtime

    def act() -> dict[str, Any]:
        try:
            return operations.reconnect(rt, ref)
        except ProviderSaysGone as exc:
            fail(f"{exc}; nothing was changed")
        except TransientProviderError:
            fail("the provider could not be reached; nothing was changed (try again later)")
        except ProviderError as exc:
            fail(f"the provider's answer cannot be used ({exc}); nothing was changed")
        raise AssertionError("unreachable")

    data = _store_call(act)
    if data["full_sync_queued"] and rt.embedded:
        _progress(as_json)("no REDIS_URL: running the full sync in this process")
        from models import lanes

        def synced() -> bool:
            with rt.session() as s:
                ws = store.get_workspace(s, data["workspace"]["id"])
                return not lanes.pending_full_syncs(s, [lanes.lane_of_workspace(ws)])

        _run_inline(rt, 60, synced)
    emit(data, as_json, lambda d: click.echo(
        f"{d['workspace']['name']} {'reconnected; full sync queued' if d['result'] == 'reconnected' else 'was already connected'}"))


@workspaces.command("subscription")
@click.argument("ref")
@click.option("--plan", default=None, help="Plan name.")
@click.option("--none", "no_plan", is_flag=True, help="Remove the subscription.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def workspaces_subscription(ctx: _Ctx, ref: str, plan: str | None, no_plan: bool, as_json: bool) -> None:
    """Set (--plan NAME) or clear (--none) a workspace's subscription."""
    from models import store

    if (plan is None) == (not no_plan):
        fail("give exactly one of --plan NAME or --none")

    from runtime import operations

    def act() -> dict[str, Any]:
        with ctx.runtime.session() as s:
            return store.workspace_to_dict(operations.set_subscription(s, ref, None if no_plan else plan))

    data = _store_call(act)
    emit(data, as_json, lambda w: click.echo(f"{w['name']}: subscription {w['subscription'] or 'none'}"))


for _command in WORKSPACE_COMMANDS:
    workspaces.add_command(_command)
main.add_command(users_group, "users")


# ------------------------------------------------------------------ resync


def _run_inline(rt: Runtime, seconds: float, done: Callable[[], bool] | None = None) -> None:
    """Embedded default: nobody else would run the queued work, so this
    process does, with the real RQ code path (a burst worker) and the same
    sweep that fires retries in production."""
    import os
    import signal
    import time

    from rq import SimpleWorker

    from worker.jobs import run_jobs_inline

    class InterruptibleWorker(SimpleWorker):
        """RQ's own Ctrl-C handling waits for the running job (a warm
        shutdown) and a second Ctrl-C exits 0 with a traceback; here the
        queue lives only in this process, so Ctrl-C ends it at once. What a
        sync had not committed is rolled back by the database."""

        def _install_signal_handlers(self) -> None:
            def stop(signum: int, _frame: Any) -> None:
                sys.stdout.flush()
                click.echo("interrupted: stopped the work running in this process", err=True)
                sys.stderr.flush()
                os._exit(128 + signum)

            signal.signal(signal.SIGINT, stop)
            signal.signal(signal.SIGTERM, stop)

    import logging

    rq_log = logging.getLogger("rq.worker")
    rq_log.addFilter(_drop_tracebacks)
    try:
        run_jobs_inline(rt.redis, until=time.monotonic() + seconds, done=done, worker_class=InterruptibleWorker)
    finally:
        rq_log.removeFilter(_drop_tracebacks)


def _drop_tracebacks(record: Any) -> bool:
    """A one-shot command reports a failed job itself, in one line; RQ's log
    of it keeps its first line, without the traceback RQ puts in the text."""
    message = record.getMessage()
    if "\nTraceback" in message:
        record.msg, record.args = message.split("\nTraceback", 1)[0], ()
    return True


def _progress(as_json: bool) -> Callable[[str], None]:
    # With --json, stdout carries only the JSON document.
    return (lambda line: click.echo(line, err=True)) if as_json else click.echo


def _wait_for_syncs(rt: Runtime, queued: list[dict[str, Any]], after_run: int, timeout: float,
                    say: Callable[[str], None], *, inline: bool) -> list[dict[str, Any]]:
    """Follow each owed full sync until it produced a finished run, printing
    each change of state. The database says what is owed and when (a retry's
    backoff, a rate limit's reset); ``inline`` runs the work in this process."""
    import time

    from models import lanes, queries, store
    from models.tables import as_utc, utcnow

    names: dict[str, str] = {}
    lane_of: dict[str, str] = {}
    with rt.session() as s:
        for item in queued:
            ws = store.get_workspace(s, item["workspace"])
            names[ws.id], lane_of[ws.id] = ws.name, lanes.lane_of_workspace(ws)
    results: dict[str, dict[str, Any]] = {}
    last_state: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    total = len(queued)
    while True:
        waiting = [item["workspace"] for item in queued if item["workspace"] not in results]
        next_due: dict[str, Any] = {}
        with rt.session() as s:
            runs = queries.full_runs_after(s, waiting, after_run)
            run_dicts = {w: store.sync_run_to_dict(r) for w, r in runs.items()}
            owed = lanes.pending_full_syncs(s, [lane_of[w] for w in waiting])
        for ws_id in waiting:
            run = run_dicts.get(ws_id)
            due = owed.get(lane_of[ws_id])
            if run is not None and run["result"] != "running" and due is None:
                results[ws_id] = {"workspace": ws_id, "state": "finished", "run": run}
                say(f"[{len(results)}/{total}] {names[ws_id]}: {_describe_run(run)}")
                continue
            if run is not None and run["result"] in ("failed", "rate_limited") and due is not None:
                label = (f"{run['result'].replace('_', ' ')} ({run.get('error') or ''}); "
                         f"next try at {due.isoformat(timespec='seconds')}")
                next_due[ws_id] = (due, run)
            elif run is not None and run["result"] == "running":
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
                        f"({due_run[1].get('error') or due_run[1]['result']}); the sync stays owed and "
                        f"runs at {due_run[0].isoformat(timespec='seconds')} {where}")
                else:
                    say(f"stopped waiting for {names[ws_id]} after {int(timeout)} s; the sync stays owed "
                        "and runs " + ("when `orgsync dev` is running" if inline else "when a worker is free"))
            break
        if inline:
            _run_inline(rt, 0)
        time.sleep(0.5)
    return [results[item["workspace"]] for item in queued]


# RQ's job states in words (RQ's JobStatus prints as "JobStatus.QUEUED").
_STATE_WORDS = {
    "queued": "queued, waiting for a worker",
    "started": "running",
    "deferred": "waiting for another job",
    "scheduled": "scheduled",
    "finished": "finishing",
    "failed": "failed",
    "stopped": "stopped",
    "canceled": "canceled",
}


def _describe_run(run: dict[str, Any]) -> str:
    text = (f"{run['result']} (+{run['added']} -{run['removed']} ~{run['changed']}, "
            f"{run['api_calls']} API calls)")
    if run["result"] == "rate_limited":
        text += f"; rescheduled for {run['details'].get('reset_at', 'the reset time')}"
    elif run.get("error"):
        text += f": {run['error']}"
    return text


@main.command()
@click.argument("ref", required=False)
@click.option("--all", "all_", is_flag=True, help="Every active provider workspace.")
@click.option("--wait", is_flag=True, help="Wait for the syncs and show their progress and results.")
@click.option("--force", is_flag=True, help="Apply a sync held by the mass-removal guard.")
@click.option("--timeout", default=1800, show_default=True, type=click.IntRange(1), help="Seconds to wait.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def resync(ctx: _Ctx, ref: str | None, all_: bool, wait: bool, force: bool, timeout: int, as_json: bool) -> None:
    """Queue a full sync of one workspace (REF) or of all (--all)."""
    from models import queries
    from runtime import operations

    if bool(ref) == all_:
        fail("give a workspace reference or --all")
    rt = ctx.runtime

    def act() -> tuple[list[dict[str, Any]], int]:
        with rt.session() as s:
            before = queries.max_sync_run_id(s)
            return operations.resync(s, rt.redis, "all" if all_ else str(ref), force=force), before

    queued, before = _store_call(act)
    say = _progress(as_json)
    if not queued:
        emit({"queued": []}, as_json, lambda _: click.echo("no active provider workspaces to sync"))
        return
    for item in queued:
        say(f"queued {item['workspace']}" + (f" (wake-up {item['job']})" if item["job"] else ""))
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
    bad = [r for r in results if r["state"] != "finished" or r["run"]["result"] in ("failed", "auth_broken")]
    if bad:
        raise SystemExit(1)


# ------------------------------------------------------------------ status


@main.command()
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def status(ctx: _Ctx, as_json: bool) -> None:
    """Provider workspaces and their last sync, held syncs, deliveries, queues."""
    from runtime.operations import status_report

    rt = ctx.runtime
    # The embedded stand-in lives inside `orgsync dev`; this process's own
    # would always look empty.
    with rt.session() as s:
        data = status_report(s, None if rt.embedded else rt.redis)

    def render(d: dict[str, Any]) -> None:
        if not d["workspaces"]:
            click.echo("no provider workspaces")
        for w in d["workspaces"]:
            last = w["last_sync"]
            if last is None:
                sync = "never synced"
            else:
                sync = f"{last['result']} at {last['at']} " + _describe_run(last).split(" ", 1)[1]
            link = "" if w["link"] in (None, "ok") else f" [{w['link']}]"
            click.echo(f"{w['name']:<30} {w['status']:<12}{link} {sync}")
        for h in d["held"]:
            click.echo(f"HELD {h['name']}: {h['reason']} (orgsync resync {h['name']} --force applies it)")
        dl = d["deliveries"]
        click.echo(f"deliveries: {dl['pending']} pending, {dl['failed']} failed, {dl['deferred']} deferred, "
                   f"{dl['retrying']} retrying; full syncs owed: {d['full_syncs_owed']}")
        if d["queues"] is None:
            click.echo("queues: " + d.get("queues_error", "embedded (inside the orgsync dev process)"))
        else:
            for name, q in d["queues"].items():
                click.echo(f"queue {name:<9} {q['queued']} queued, {q['scheduled']} scheduled, "
                           f"{q['started']} running, {q['failed']} failed")

    emit(data, as_json, render)


# ------------------------------------------------------------------ deliveries


@main.group()
def deliveries() -> None:
    """Inspect, replay and send webhook deliveries."""


@deliveries.command("list")
@click.option("--failed", is_flag=True, help="Only failed deliveries.")
@click.option("--status", "status_", default=None, help="Only deliveries in this status.")
@click.option("--provider", type=click.Choice(["github", "gitlab"]), default=None)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def deliveries_list(ctx: _Ctx, failed: bool, status_: str | None, provider: str | None, limit: int,
                    as_json: bool) -> None:
    """Recorded deliveries, newest first."""
    from models import deliveries as dstore

    if failed:
        if status_ not in (None, dstore.FAILED):
            fail("--failed and --status disagree")
        status_ = dstore.FAILED
    if status_ is not None and status_ not in dstore.STATUSES:
        fail(f"--status must be one of: {', '.join(dstore.STATUSES)}")
    with ctx.runtime.session() as s:
        # Exactly GET /v1/admin/deliveries' body.
        data = {"deliveries": [dstore.delivery_to_dict(d)
                               for d in dstore.list_deliveries(s, status=status_, provider=provider, limit=limit)]}

    def render(d_: dict[str, Any]) -> None:
        if not d_["deliveries"]:
            click.echo("no deliveries")
            return
        click.echo(f"{'RECEIVED':<32} {'SOURCE':<6} {'STATUS':<10} {'EVENT':<36} ID")
        for d in d_["deliveries"]:
            event = d["event"] + (f".{d['action']}" if d["action"] else "")
            line = f"{d['received_at']:<32} {d['provider']:<6} {d['status']:<10} {event:<36} {d['id']}"
            if d["error"]:
                line += f"  error: {d['error']}"
            click.echo(line)

    emit(data, as_json, render)


@deliveries.command("replay")
@click.argument("delivery_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def deliveries_replay(ctx: _Ctx, delivery_id: str, as_json: bool) -> None:
    """Queue a failed (or stuck) delivery again."""
    from models import deliveries as dstore
    from runtime.operations import replay_delivery

    rt = ctx.runtime

    def act() -> dict[str, Any]:
        with rt.session() as s:
            return replay_delivery(s, rt.redis, delivery_id)

    data = _store_call(act)
    if rt.embedded:
        _progress(as_json)("no REDIS_URL: processing the delivery in this process")

        def finished() -> bool:
            # One attempt is what an operator's replay asks for: a retry due
            # later would not run once this command exits.
            with rt.session() as s:
                row = dstore.get_delivery(s, delivery_id)
                return row.status in (*dstore.FINISHED, dstore.FAILED) or (
                    row.status in (dstore.RETRYING, dstore.DEFERRED) and row.attempts >= 1)

        _run_inline(rt, 60, finished)
        with rt.session() as s:
            row = dstore.get_delivery(s, delivery_id)
            data["status"], error = row.status, row.error
    else:
        error = None
    emit(data, as_json, lambda d: click.echo(f"delivery {d['delivery']}: {d['status']}"))
    if data["status"] == dstore.FAILED or (rt.embedded and data["status"] not in dstore.FINISHED):
        later = "" if data["status"] == dstore.FAILED else "; it stays due and is retried when `orgsync dev` runs"
        fail(f"delivery {delivery_id} failed again" + (f": {error}" if error else "") + later)


@deliveries.command("send")
@click.argument("payload_file", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--provider", type=click.Choice(["github", "gitlab"]), required=True)
@click.option("--event", required=True,
              help="GitHub: X-GitHub-Event (e.g. organization). GitLab: X-Gitlab-Event (e.g. 'Member Hook').")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True,
              help="Base URL of orgsync (or the full webhook URL).")
@click.option("--delivery-id", default=None, help="Delivery id / idempotency key (default: a new UUID).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def deliveries_send(ctx: _Ctx, payload_file: str, provider: str, event: str, url: str,
                    delivery_id: str | None, as_json: bool) -> None:
    """Sign a payload with the configured webhook secret and post it."""
    import http.client
    import urllib.error
    import urllib.request
    from pathlib import Path

    from sync.providers.signatures import github_headers, gitlab_headers

    settings = ctx.settings
    body = Path(payload_file).read_bytes()
    try:
        json.loads(body)
    except ValueError:
        fail(f"{payload_file} is not JSON")
    if provider == "github":
        if not settings.github_webhook_secrets:
            fail("GITHUB_WEBHOOK_SECRET is not set: nothing to sign with")
        headers = github_headers(body, settings.github_webhook_secrets[0], event, delivery_id)
    else:
        if not settings.gitlab_webhook_secrets:
            fail("GITLAB_WEBHOOK_SECRET is not set: nothing to authenticate with")
        headers = gitlab_headers(body, event=event, token=settings.gitlab_webhook_secrets[0],
                                 signing_secret=settings.gitlab_webhook_signing_secret,
                                 idempotency_key=delivery_id)
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail(f"--url must be an http:// or https:// URL such as http://127.0.0.1:8000, not {url!r}")
    target = url.rstrip("/")
    if not target.endswith(f"/webhooks/{provider}"):
        target += f"/webhooks/{provider}"
    request = urllib.request.Request(target, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            code, text = resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        code, text = err.code, err.read().decode(errors="replace")
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        fail(f"could not post to {target}: {getattr(exc, 'reason', exc) or type(exc).__name__}")
    try:
        answer: Any = json.loads(text)
    except ValueError:
        answer = {"body": text[:500]}
    data = {"status_code": code, "response": answer}
    if as_json:
        emit(data, True, click.echo)
    else:
        click.echo(f"{code} {json.dumps(answer)}")
    if code >= 400:
        raise SystemExit(1)


# ------------------------------------------------------------------ processes


@main.command("worker")
@click.argument("queue_names", nargs=-1)
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option("--fork", is_flag=True, help="Run each job in a forked child (RQ's default worker).")
@click.option("--simple", is_flag=True, hidden=True, help="In-process jobs (the default now).")
@pass_ctx
def worker_cmd(ctx: _Ctx, queue_names: tuple[str, ...], burst: bool, fork: bool, simple: bool) -> None:
    """Run an RQ worker on webhooks, sync, default (in that priority).

    Jobs run in this long-lived process: one database pool, one cache of
    installation tokens, no fork per job. A job is a lane's drain, which
    keeps its lease alive from a heartbeat thread while a long full sync
    runs; if this process dies, the lease runs out and another worker takes
    the work over. Job timeouts still hold (RQ's timer). --fork runs each
    job in a forked child instead.
    """
    import time

    import redis as redis_lib
    from rq import SimpleWorker

    from runtime.logs import configure_logging, get_logger
    from runtime.queues import QUEUE_NAMES, get_queue
    from worker.jobs import OrgsyncWorker, warm_up

    configure_logging(force=True)
    log = get_logger("orgsync.worker")
    rt = ctx.runtime
    if rt.embedded:
        fail("orgsync worker needs REDIS_URL (without it, `orgsync dev` runs the jobs in its own process)")
    warn_half_configured(rt)
    names = queue_names or QUEUE_NAMES
    unknown = [n for n in names if n not in QUEUE_NAMES]
    if unknown:
        fail(f"unknown queue {unknown[0]!r}; the queues are {', '.join(QUEUE_NAMES)}")
    cls = OrgsyncWorker if fork else SimpleWorker
    warm_up(rt)
    delay = 1.0
    while True:
        try:
            # The worker's constructor already talks to Redis.
            w = cls([get_queue(n, rt.redis) for n in names], connection=rt.redis)
            w.work(burst=burst)
            if burst or w._stop_requested:
                return
            # RQ's loop also ends, without raising, on a Redis timeout or an
            # error of its own; exiting 0 then would look like a clean stop to
            # a restart-on-failure supervisor. Work again instead.
            log.warning("worker.loop_ended", retry_in=delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
        except (redis_lib.ConnectionError, redis_lib.TimeoutError) as exc:
            # RQ survives a Redis outage only while idle in dequeue; one that
            # hits it mid-loop would end the process. A blip must not leave
            # the platform restarting crashed workers with back-off: wait for
            # Redis and work again. Work is in the database; nothing is lost.
            log.warning("worker.redis_unavailable", error=type(exc).__name__, retry_in=delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
            try:
                rt.redis.ping()
                delay = 1.0
            except (redis_lib.ConnectionError, redis_lib.TimeoutError):
                pass


@main.command("cron")
@pass_ctx
def cron_cmd(ctx: _Ctx) -> None:
    """Run RQ's cron scheduler: resyncs, sweep, prune. Run exactly one."""
    import time

    import redis as redis_lib

    from runtime.logs import configure_logging, get_logger
    from worker.cron import build_cron

    configure_logging(force=True)
    log = get_logger("orgsync.cron")
    rt = ctx.runtime
    if rt.embedded:
        fail("orgsync cron needs REDIS_URL (without it, `orgsync dev` runs the periodic jobs itself)")
    warn_half_configured(rt)
    delay = 1.0
    while True:
        try:
            build_cron(rt.redis, rt.settings).start()
            return
        except (redis_lib.ConnectionError, redis_lib.TimeoutError) as exc:
            # The sweep is the recovery path for lost work, and a Procfile
            # runner stops everything when one process exits: wait Redis out.
            log.warning("cron.redis_unavailable", error=type(exc).__name__, retry_in=delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


if __name__ == "__main__":
    main()
