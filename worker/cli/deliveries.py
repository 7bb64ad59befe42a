"""``orgsync deliveries list|replay|send``: the webhook deliveries."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from models import deliveries as dstore
from models.deliveries import DeliveryView
from runtime.operations import Replay, replay_delivery
from sync.providers.signatures import github_headers, gitlab_headers
from worker.cli.client import PostFailed, post
from worker.cli.context import CliContext, pass_ctx
from worker.cli.errors import fail, store_call
from worker.cli.inline import run_inline
from worker.cli.output import emit, progress
from worker.cli.serialize import iso


@click.group("deliveries")
def deliveries() -> None:
    """Inspect, replay and send webhook deliveries."""


@deliveries.command("list")
@click.option("--failed", is_flag=True, help="Only failed deliveries.")
@click.option("--status", "status_", default=None, help="Only deliveries in this status.")
@click.option("--provider", type=click.Choice(["github", "gitlab"]), default=None)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def deliveries_list(ctx: CliContext, failed: bool, status_: str | None, provider: str | None, limit: int,
                    as_json: bool) -> None:
    """Recorded deliveries, newest first."""
    if failed:
        if status_ not in (None, dstore.FAILED):
            fail("--failed and --status disagree")
        status_ = dstore.FAILED
    if status_ is not None and status_ not in dstore.STATUSES:
        fail(f"--status must be one of: {', '.join(dstore.STATUSES)}")
    with ctx.runtime.session() as s:
        # Exactly GET /v1/admin/deliveries' body.
        data = {"deliveries": [dstore.delivery_view(d)
                               for d in dstore.list_deliveries(s, status=status_, provider=provider, limit=limit)]}

    def render(d_: dict[str, list[DeliveryView]]) -> None:
        if not d_["deliveries"]:
            click.echo("no deliveries")
            return
        click.echo(f"{'RECEIVED':<32} {'SOURCE':<6} {'STATUS':<10} {'EVENT':<36} ID")
        for d in d_["deliveries"]:
            event = d.event + (f".{d.action}" if d.action else "")
            line = f"{iso(d.received_at)!s:<32} {d.provider:<6} {d.status:<10} {event:<36} {d.id}"
            if d.error:
                line += f"  error: {d.error}"
            click.echo(line)

    emit(data, as_json, render)


@deliveries.command("replay")
@click.argument("delivery_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def deliveries_replay(ctx: CliContext, delivery_id: str, as_json: bool) -> None:
    """Queue a failed (or stuck) delivery again."""
    rt = ctx.runtime

    def act() -> Replay:
        with rt.session() as s:
            return replay_delivery(s, rt.redis, delivery_id)

    data = store_call(act)
    if rt.embedded:
        progress(as_json)("no REDIS_URL: processing the delivery in this process")

        def finished() -> bool:
            # One attempt is what an operator's replay asks for: a retry due
            # later would not run once this command exits.
            with rt.session() as s:
                row = dstore.get_delivery(s, delivery_id)
                return row.status in (*dstore.FINISHED, dstore.FAILED) or (
                    row.status in (dstore.RETRYING, dstore.DEFERRED) and row.attempts >= 1)

        run_inline(rt, 60, finished)
        with rt.session() as s:
            row = dstore.get_delivery(s, delivery_id)
            data, error = replace(data, status=row.status), row.error
    else:
        error = None
    emit(data, as_json, lambda d: click.echo(f"delivery {d.delivery_id}: {d.status}"))
    if data.status == dstore.FAILED or (rt.embedded and data.status not in dstore.FINISHED):
        later = "" if data.status == dstore.FAILED else "; it stays due and is retried when `orgsync dev` runs"
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
def deliveries_send(ctx: CliContext, payload_file: str, provider: str, event: str, url: str,
                    delivery_id: str | None, as_json: bool) -> None:
    """Sign a payload with the configured webhook secret and post it."""
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
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail(f"--url must be an http:// or https:// URL such as http://127.0.0.1:8000, not {url!r}")
    target = url.rstrip("/")
    if not target.endswith(f"/webhooks/{provider}"):
        target += f"/webhooks/{provider}"
    try:
        code, text = post(target, body, headers, timeout=30)
    except PostFailed as exc:
        fail(f"could not post to {target}: {exc}")
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
