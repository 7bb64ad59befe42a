"""Process-wide resources built from Settings: database engine and Redis.

With no REDIS_URL the process uses one in-process Redis stand-in (a fakeredis
server with Lua, which RQ's scheduler and unique jobs need), shared by the web
app and the in-process worker so that the real RQ code path runs.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property

import redis
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from models.base import make_engine, make_session_factory, session_scope
from models.config import Settings, load_settings

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

    @contextmanager
    def autocommit_session(self) -> Iterator[Session]:
        """A session whose every statement commits on its own: for a unit of
        work that is one statement (recording a delivery), this saves the
        BEGIN and COMMIT round trips and is just as durable."""
        with (self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
              Session(bind=conn) as s):
            yield s

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
