"""CLI commands of the platform API (SPEC section 8): ``orgsync users show|
workspaces`` and ``orgsync workspaces create|rename|delete|invite``.

The operator acts as ``operator``: the store's rules bind them, the role
checks do not. ``--json`` prints exactly the body the HTTP API answers for
the same call; worker.cli attaches these commands to its groups.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
import sqlalchemy.exc

from models import managed, store, users
from models.errors import StoreError
from worker.cli.context import CliContext, pass_ctx
from worker.cli.output import emit
from worker.cli.serialize import iso

T = TypeVar("T")


def _run(obj: CliContext, fn: Callable[[Any], T]) -> T:
    """One transaction; a refusal or an unreachable database is one line and exit 1."""
    try:
        with obj.runtime.session() as s:
            return fn(s)
    except StoreError as exc:
        raise click.ClickException(exc.message) from None
    except sqlalchemy.exc.OperationalError as exc:
        raise click.ClickException(
            f"cannot reach the database ({type(exc.orig).__name__}); is DATABASE_URL right?") from None


# ------------------------------------------------------------------ users


@click.group()
def users_group() -> None:
    """Inspect users and the workspaces they can use."""


@users_group.command("show")
@click.argument("user")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON body.")
@pass_ctx
def users_show(obj: CliContext, user: str, as_json: bool) -> None:
    """Show a user (account id, username, github:<id> or gitlab:<id>)."""
    data = _run(obj, lambda s: users.user_view(s, users.resolve_user(s, user)))

    def render(d: users.UserView) -> None:
        click.echo(f"{d.id}  {d.username}")
        personal = d.personal_workspace
        click.echo(f"  personal workspace: {personal.name if personal else '-'}")
        for i in d.identities:
            click.echo(f"  {i.provider}: {i.login} (id {i.provider_user_id})")

    emit(data, as_json, render)


@users_group.command("workspaces")
@click.argument("user")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON body.")
@pass_ctx
def users_workspaces(obj: CliContext, user: str, as_json: bool) -> None:
    """Every workspace a user can use, with their role (what `workspace ls` shows)."""
    data = _run(obj, lambda s: users.workspaces_of_user(s, users.resolve_user(s, user)))

    def render(d: users.WorkspacesOfUser) -> None:
        if not d.workspaces:
            click.echo(f"{d.user.username} can use no workspace")
        for w in d.workspaces:
            click.echo(f"{w.name:<30} {w.kind:<9} {w.role:<8} {w.status:<12} "
                       f"subscription={w.subscription or '-'}")

    emit(data, as_json, render)


# ------------------------------------------------------------------ workspaces


@click.command("create")
@click.argument("name")
@click.option("--owner", required=True, help="The owner: account id, username, github:<id> or gitlab:<id>.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON body.")
@pass_ctx
def workspaces_create(obj: CliContext, name: str, owner: str, as_json: bool) -> None:
    """Create a managed workspace owned by a user."""
    data = _run(obj, lambda s: store.workspace_view(
        managed.create_workspace(s, name, users.resolve_user(s, owner), managed.OPERATOR)))
    emit(data, as_json, lambda w: click.echo(
        f"created {w.name} ({w.id}), owned by {w.owner.username if w.owner else '-'}"))


@click.command("rename")
@click.argument("ref")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON body.")
@pass_ctx
def workspaces_rename(obj: CliContext, ref: str, name: str, as_json: bool) -> None:
    """Rename a managed workspace."""
    data = _run(obj, lambda s: store.workspace_view(
        managed.rename_workspace(s, store.find_workspace(s, ref), name, managed.OPERATOR)))
    emit(data, as_json, lambda w: click.echo(f"{ref} is now named {w.name}"))


@click.command("delete")
@click.argument("ref")
@pass_ctx
def workspaces_delete(obj: CliContext, ref: str) -> None:
    """Delete a managed workspace, or a provider workspace once disconnected."""
    def act(s: Any) -> str:
        ws = store.find_workspace(s, ref)
        name = ws.name
        managed.delete_workspace(s, ws, managed.OPERATOR)
        return name

    click.echo(f"deleted {_run(obj, act)}")


@click.command("invite")
@click.argument("ref")
@click.option("--role", default="member", show_default=True, type=click.Choice(managed.GRANTABLE_ROLES))
@click.option("--expires-in", "expires_in", default=None, type=int,
              help="Seconds until the link expires (default 7 days).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON body.")
@pass_ctx
def workspaces_invite(obj: CliContext, ref: str, role: str, expires_in: int | None, as_json: bool) -> None:
    """Make an invitation link to a managed workspace; its token is shown only now."""
    def act(s: Any) -> dict[str, managed.InvitationView]:
        ws = store.find_workspace(s, ref)
        inv, token = managed.create_invitation(s, ws, role, managed.OPERATOR, managed.parse_expiry(expires_in))
        return {"invitation": managed.invitation_view(inv, token)}

    data = _run(obj, act)

    def render(d: dict[str, managed.InvitationView]) -> None:
        inv = d["invitation"]
        click.echo(f"invitation {inv.id} to {ref} as {inv.role}, expires {iso(inv.expires_at)}")
        click.echo(f"token (shown once): {inv.token}")
        click.echo("the invited user asks to join with POST /v1/invitations/<token>/requests")

    emit(data, as_json, render)


WORKSPACE_COMMANDS = (workspaces_create, workspaces_rename, workspaces_delete, workspaces_invite)
