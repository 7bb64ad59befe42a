"""Access to the process Runtime from inside a request."""
from __future__ import annotations

from flask import current_app

from runtime.process import Runtime


def services() -> Runtime:
    return current_app.extensions["orgsync"]  # type: ignore[no-any-return]
