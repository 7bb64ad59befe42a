"""How the CLI fails: one line on stderr and a non-zero exit, never a traceback."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import click
import redis
from alembic.util.exc import CommandError
from sqlalchemy.exc import SQLAlchemyError

from models.errors import StoreError
from worker.cli.context import CliContext


def fail(message: str) -> NoReturn:
    raise click.ClickException(message)


def first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def store_call(fn: Callable[[], Any]) -> Any:
    """Run a store/queue action; its errors become one line and exit 1."""
    try:
        return fn()
    except StoreError as exc:
        fail(exc.message)
    except redis.RedisError as exc:
        fail(f"cannot reach Redis ({type(exc).__name__}); is REDIS_URL right and Redis running?")


class OrgsyncGroup(click.Group):
    """Turns the operator errors every command can meet (a database or Redis
    that cannot be reached, Ctrl-C) into one line and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            raise SystemExit(130) from None
        except SQLAlchemyError as exc:
            obj = ctx.find_object(CliContext)
            where = obj.database_label if obj is not None else "the database"
            if "no such table" in str(exc) or "UndefinedTable" in type(getattr(exc, "orig", exc)).__name__:
                raise click.ClickException(
                    f"{where} has no orgsync schema yet: run `orgsync db upgrade`") from None
            raise click.ClickException(f"cannot use {where}: {first_line(exc)}") from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise click.ClickException(
                f"cannot reach Redis ({first_line(exc)}); is REDIS_URL right and Redis running?") from None
        except CommandError as exc:
            raise click.ClickException(f"migration failed: {first_line(exc)}") from None
