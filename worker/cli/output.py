"""What the commands print: text for people, or with --json exactly one JSON
document on stdout (progress then goes to stderr). ``data`` may hold the use
cases' typed results: the JSON goes through worker/cli/serialize.py, the text
renderer gets them as they are."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from worker.cli.serialize import to_json


def emit(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    if as_json:
        click.echo(json.dumps(to_json(data), indent=2, default=str))
    else:
        render(data)


def progress(as_json: bool) -> Callable[[str], None]:
    # With --json, stdout carries only the JSON document.
    return (lambda line: click.echo(line, err=True)) if as_json else click.echo
