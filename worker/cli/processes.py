"""The long-running processes: the Procfile's ``release``, ``worker`` and
``cron`` (``web`` is gunicorn serving webhooks.app), and ``dev``, which runs
web, jobs and cron in one process."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import click
import redis as redis_lib
from rq import SimpleWorker
from werkzeug.serving import make_server

from models.migrate import upgrade
from runtime.logs import configure_logging, get_logger
from runtime.process import Runtime
from runtime.queues import QUEUE_NAMES, all_queues, get_queue
from worker.cli.context import CliContext, pass_ctx, warn_half_configured
from worker.cli.errors import fail
from worker.cli.inline import InterruptibleWorker
from worker.cron import build_cron
from worker.jobs import OrgsyncWorker, warm_up


@click.command("release")
@pass_ctx
def release_cmd(ctx: CliContext) -> None:
    """The Procfile's release step: migrate to the newest schema.

    Heroku runs it to completion before starting anything else. A local
    Procfile runner (honcho, foreman) starts every line at once and stops all
    of them when any one exits, so there it stays running, idle, after the
    migration (web, worker and cron wait for the schema with `db wait`).
    """
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


@click.command("dev")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--demo", is_flag=True,
              help="Serve with a built-in stand-in GitHub and GitLab (seeded, app installed) and print what to try.")
@pass_ctx
def dev(ctx: CliContext, host: str, port: int, demo: bool) -> None:
    """Run web and jobs in one process (embedded default: SQLite, in-process Redis)."""
    configure_logging(force=True)
    ctx.may_create_database = True
    stand_in: Any = None
    if demo:
        # Loaded here, not at the top: the stand-in providers (fake GitHub,
        # GitLab and token issuers, RSA keys) are a heavy import (~0.2 s)
        # that only `dev --demo` uses.
        from demo import run as demo_run

        # The stand-ins replace every provider setting; the database and
        # Redis settings stay as configured.
        stand_in = demo_run.start(ctx.settings)
        ctx.use_runtime(Runtime(stand_in.settings))
    rt = ctx.runtime
    warn_half_configured(rt)
    upgrade(rt.settings.database_url)
    # The web app (Flask, the OIDC verifier with PyJWT and cryptography) is
    # loaded only by the one command that serves it: at the top it cost every
    # other command ~0.4 s of start-up.
    from oidc.settings import OidcSettings
    from oidc.verifier import OidcVerifier
    from webhooks.app import create_app

    verifier = None
    if stand_in is not None:
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
        stand_in.orgsync_url = base
        demo_run.adopt_all(stand_in, rt.session_factory)
        click.echo(demo_run.script(stand_in))
    sys.stdout.flush()
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    stop = threading.Event()
    threading.Thread(target=_dev_cron, args=(rt, stop), name="cron", daemon=True).start()
    # The worker runs in the main thread: RQ installs signal handlers, which
    # only the main thread may do; it runs jobs in-process. Ctrl-C or SIGTERM
    # ends the process at once rather than waiting for a running drain (RQ's
    # warm shutdown could take as long as a burst's settle wait): the
    # database holds the work, and what a drain had not committed is rolled
    # back and claimed again after its lease.
    worker = InterruptibleWorker(all_queues(rt.redis), connection=rt.redis)
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
    cron = build_cron(rt.redis, rt.settings, logging_level="WARNING")
    while not stop.is_set():
        try:
            cron.enqueue_jobs()
        except Exception:  # keep serving; the next tick retries
            logging.getLogger("orgsync.cron").exception("periodic jobs could not be queued")
        stop.wait(max(1.0, min(cron.calculate_sleep_interval(), 30.0)))


@click.command("worker")
@click.argument("queue_names", nargs=-1)
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option("--fork", is_flag=True, help="Run each job in a forked child (RQ's default worker).")
@click.option("--simple", is_flag=True, hidden=True, help="In-process jobs (the default now).")
@pass_ctx
def worker_cmd(ctx: CliContext, queue_names: tuple[str, ...], burst: bool, fork: bool, simple: bool) -> None:
    """Run an RQ worker on webhooks, sync, default (in that priority).

    Jobs run in this long-lived process: one database pool, one cache of
    installation tokens, no fork per job. A job is a lane's drain, which
    keeps its lease alive from a heartbeat thread while a long full sync
    runs; if this process dies, the lease runs out and another worker takes
    the work over. Job timeouts still hold (RQ's timer). --fork runs each
    job in a forked child instead.
    """
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


@click.command("cron")
@pass_ctx
def cron_cmd(ctx: CliContext) -> None:
    """Run RQ's cron scheduler: resyncs, sweep, prune. Run exactly one."""
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
