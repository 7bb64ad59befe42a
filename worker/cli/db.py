"""``orgsync db upgrade|wait``: the schema."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import click
from sqlalchemy.exc import OperationalError

from models.migrate import current, head_revisions, known_revision, upgrade
from worker.cli.context import CliContext, missing_sqlite_file, pass_ctx
from worker.cli.errors import first_line


@click.group("db")
def db() -> None:
    """Database migrations."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(ctx: CliContext) -> None:
    """Migrate the database to the newest schema."""
    ctx.may_create_database = True
    upgrade(ctx.runtime.settings.database_url)
    click.echo("database is at the newest revision")


def _wait_for_schema(ctx: CliContext, timeout: float, say: Callable[[str], None]) -> None:
    """Return once the schema is at this code's head; fail after ``timeout``."""
    url = ctx.runtime.settings.database_url
    heads = head_revisions()
    deadline = time.monotonic() + timeout
    said = ""
    while True:
        try:
            rev = current(url)
            problem = f"the schema is at {rev or 'nothing'}, not {', '.join(heads)}"
        except OperationalError as exc:
            rev, problem = None, f"the database is not reachable ({first_line(exc)})"
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
def db_wait(ctx: CliContext, timeout: int) -> None:
    """Wait until the schema is at the newest revision (the Procfile's web,
    worker and cron run this first, so nothing serves an old schema)."""
    ctx.may_create_database = True  # the release step may not have created it yet

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
