"""gunicorn reads ./gunicorn.conf.py by default: the Procfile's `web` line and
any gunicorn started from the project directory.

A bad configuration value is reported by the master, once, before any worker
is forked: when every worker failed to load the app on its own, gunicorn 27
could die on the second worker's exit with a traceback and status 1 instead of
its "App failed to load" status 4.
"""
from __future__ import annotations

from typing import Any


def on_starting(server: Any) -> None:
    from webhooks.app import settings_or_exit

    settings_or_exit()
