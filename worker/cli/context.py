"""What every command is handed: the configuration and, on first use, the
process's Runtime (database, Redis)."""
from __future__ import annotations

from pathlib import Path

import click
from sqlalchemy.engine import make_url

from models.config import ConfigError, Settings, load_settings
from models.config_warnings import config_warnings
from runtime.process import Runtime, set_runtime


class CliContext:
    def __init__(self) -> None:
        self._runtime: Runtime | None = None
        # Only `dev` and `db upgrade` may create the default SQLite file; a
        # read run in the wrong directory must not leave an empty one behind.
        self.may_create_database = False

    @property
    def settings(self) -> Settings:
        """The configuration alone, for commands that use no database."""
        if self._runtime is not None:
            return self._runtime.settings
        try:
            return load_settings()
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            settings = self.settings
            if not self.may_create_database:
                missing = missing_sqlite_file(settings.database_url)
                if missing is not None:
                    raise click.ClickException(
                        f"no database at {missing} (DATABASE_URL={settings.database_url}; a relative path "
                        "is taken from the current directory): run `orgsync db upgrade` or `orgsync dev` "
                        "there first, or set DATABASE_URL")
            self._runtime = Runtime(settings)
            set_runtime(self._runtime)
        return self._runtime

    def use_runtime(self, runtime: Runtime) -> None:
        self._runtime = runtime
        set_runtime(runtime)

    @property
    def database_label(self) -> str:
        if self._runtime is None:
            return "the database"
        return f"the database at {self._runtime.engine.url.render_as_string(hide_password=True)}"


def missing_sqlite_file(url: str) -> str | None:
    """The absolute path of a SQLite database file that does not exist yet,
    else None (also for in-memory SQLite and for other databases)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    if parsed.database.startswith("file:"):
        return None
    path = Path(parsed.database).expanduser().absolute()
    return None if path.exists() else str(path)


pass_ctx = click.make_pass_decorator(CliContext, ensure=True)


def warn_half_configured(rt: Runtime) -> None:
    for line in config_warnings(rt.settings):
        click.echo(f"warning: {line}", err=True)
