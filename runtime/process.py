"""Process-wide resources built from Settings: database engine and Redis,
the sync context (sessions and the provider factory) and the enqueuer.

The web app, the worker and the CLI each build one Runtime and take what they
need from it; nothing else builds a SyncContext, a provider adapter or an
enqueuer for a process.

With no REDIS_URL the process uses one in-process Redis stand-in (a fakeredis
server with Lua, which RQ's scheduler and unique jobs need), shared by the web
app and the in-process worker so that the real RQ code path runs.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property

import redis
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from models.base import make_engine, make_session_factory, session_scope
from models.config import Settings, load_settings
from runtime.queues import RqEnqueuer
from sync.context import SyncContext, build_sync_context
from sync.providers.base import Provider

_embedded_lock = threading.Lock()
_embedded_server: object | None = None


def embedded_redis() -> redis.Redis:
    """The process's in-process Redis stand-in (one server per process)."""
    global _embedded_server
    import fakeredis

    with _embedded_lock:
        if _embedded_server is None:
            _embedded_server = fakeredis.FakeServer()
        return fakeredis.FakeRedis(server=_embedded_server)  # type: ignore[arg-type]


class Runtime:
    def __init__(self, settings: Settings | None = None, *, redis_client: redis.Redis | None = None,
                 engine: Engine | None = None) -> None:
        self.settings = settings or load_settings()
        self._redis = redis_client
        self._engine = engine
        self._sync: tuple[int, SyncContext] | None = None
        self._sync_lock = threading.Lock()

    @cached_property
    def engine(self) -> Engine:
        return self._engine or make_engine(self.settings.database_url)

    @cached_property
    def session_factory(self) -> sessionmaker[Session]:
        return make_session_factory(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with session_scope(self.session_factory) as s:
            yield s

    @cached_property
    def intake_engine(self) -> Engine:
        """The web intake's own pool on PostgreSQL: connections that stay in
        autocommit (no isolation-level switch per checkout) and are not pinged
        on checkout. A connection the server dropped is caught when the
        statement fails instead, and the statement retried once on a new one
        (``autocommit_session``'s caller): one round trip per delivery instead
        of two. SQLite and a test's injected engine use the main engine."""
        url = self.settings.database_url
        if self._engine is not None or url.startswith("sqlite"):
            return self.engine
        return make_engine(url, pool_pre_ping=False, isolation_level="AUTOCOMMIT")

    @contextmanager
    def autocommit_connection(self) -> Iterator[Connection]:
        """A connection whose every statement commits on its own: for a unit
        of work that is one statement (recording a delivery), this saves the
        BEGIN and COMMIT round trips and is just as durable. With no pre-ping,
        a dropped connection surfaces as ``DBAPIError.connection_invalidated``
        on the first statement; the pool has then been emptied and a retry
        gets a fresh connection. (A Connection, not a Session: the intake
        runs Core statements, and a Session per request costs CPU.)"""
        conn = self.intake_engine.connect()
        if self.intake_engine is self.engine:  # shared pool: autocommit for this checkout only
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        with conn:
            yield conn

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            if self.settings.redis_url is None:
                self._redis = embedded_redis()
            else:
                self._redis = redis.Redis.from_url(
                    self.settings.redis_url, socket_connect_timeout=2, socket_timeout=5,
                    health_check_interval=30,
                )
        return self._redis

    @property
    def sync_context(self) -> SyncContext:
        """The process's SyncContext, rebuilt after a fork (RQ's work horse
        with ``orgsync worker --fork``) so that no database connection is
        shared between processes."""
        with self._sync_lock:
            if self._sync is None or self._sync[0] != os.getpid():
                if self._sync is not None:
                    # Connections inherited from the parent belong to the parent.
                    self.engine.dispose(close=False)
                    if "intake_engine" in self.__dict__ and self.intake_engine is not self.engine:
                        self.intake_engine.dispose(close=False)
                self._sync = (os.getpid(), build_sync_context(self.settings, self.session_factory))
            return self._sync[1]

    def use_sync_context(self, ctx: SyncContext | None) -> None:
        """Tests: use this context (e.g. providers pointed at a fake server);
        None goes back to the one built from the settings."""
        with self._sync_lock:
            self._sync = None if ctx is None else (os.getpid(), ctx)

    def provider_for(self, name: str, installation_id: int | None = None) -> Provider:
        """A fresh adapter for ``name`` with this process's credentials."""
        return self.sync_context.provider_for(name, installation_id)

    @property
    def enqueuer(self) -> RqEnqueuer:
        """Owes full syncs (a due time in the database) and wakes their lanes."""
        return RqEnqueuer(self.redis, self.session_factory)

    @property
    def embedded(self) -> bool:
        return self.settings.redis_url is None

    def check_database(self) -> str | None:

        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - readiness reports any failure
            return type(exc).__name__
        return None

    def check_redis(self) -> str | None:
        try:
            self.redis.ping()
        except Exception as exc:  # noqa: BLE001
            return type(exc).__name__
        return None


_current: Runtime | None = None


def get_runtime() -> Runtime:
    """The process's Runtime, for RQ jobs (which receive only ids)."""
    global _current
    if _current is None:
        _current = Runtime()
    return _current


def set_runtime(runtime: Runtime | None) -> None:
    global _current
    _current = runtime
