"""The embedded default (no REDIS_URL): nobody else would run the work a
command queues, so the command runs it in its own process, with the real RQ
code path (a burst worker) and the same sweep that fires retries in
production."""
from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import click
from rq import SimpleWorker

from runtime.process import Runtime
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


def run_inline(rt: Runtime, seconds: float, done: Callable[[], bool] | None = None) -> None:
    """Run the queued work in this process for up to ``seconds`` (or until
    ``done``)."""
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
