"""The ``orgsync`` command line (click): the group ``main`` and its commands,
one module a noun.

- db: ``db upgrade|wait``; processes: ``release``, ``dev``, ``worker``, ``cron``
- workspaces: ``workspaces list|show|members|activity|transfer|disconnect|reconnect|subscription``
- platform: ``users show|workspaces`` and ``workspaces create|rename|delete|invite``
- syncs: ``resync``; status: ``status``; deliveries: ``deliveries list|replay|send``
- shared: context (settings, runtime), errors (one line, exit 1), output (text or
  --json), inline (work run in this process without Redis), client (HTTP post)
"""
from __future__ import annotations

import os

import click

from runtime.logs import configure_logging
from worker.cli.context import CliContext
from worker.cli.db import db
from worker.cli.deliveries import deliveries
from worker.cli.errors import OrgsyncGroup
from worker.cli.platform import WORKSPACE_COMMANDS, users_group
from worker.cli.processes import cron_cmd, dev, release_cmd, worker_cmd
from worker.cli.status import status
from worker.cli.syncs import resync
from worker.cli.workspaces import workspaces


@click.group(cls=OrgsyncGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-format", type=click.Choice(["auto", "text", "json"]), default=None,
              help="Logs on stderr: text on a terminal, JSON otherwise (auto; also ORGSYNC_LOG_FORMAT).")
@click.pass_context
def main(ctx: click.Context, log_format: str | None) -> None:
    """orgsync: keep workspaces in step with GitHub orgs and GitLab groups."""
    ctx.ensure_object(CliContext)
    if log_format is not None:
        # Long-running commands reconfigure logging; they read the choice here.
        os.environ["ORGSYNC_LOG_FORMAT"] = log_format
    # Commands print for people on stdout; logs go to stderr, and only
    # warnings unless asked (long-running processes raise this to INFO).
    configure_logging(os.environ.get("ORGSYNC_LOG_LEVEL") or "WARNING", force=True)


for _command in WORKSPACE_COMMANDS:
    workspaces.add_command(_command)
for _command in (db, release_cmd, dev, workspaces, resync, status, deliveries, worker_cmd, cron_cmd):
    main.add_command(_command)
main.add_command(users_group, "users")
