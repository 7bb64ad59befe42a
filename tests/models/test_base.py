"""models/base.py: the engine's idle-connection ping on PostgreSQL."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import exc, text

from models import base
from models.base import make_engine


def _pid(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(url: str, pid: int) -> None:
    admin = make_engine(url)
    try:
        with admin.begin() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one() is True
    finally:
        admin.dispose()


@pytest.mark.postgres
def test_a_pooled_connection_the_server_dropped_while_idle_is_replaced_on_checkout(
        pg_schema_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(pg_schema_url, pool_size=1, max_overflow=0)
    try:
        pid = _pid(engine)
        _terminate(pg_schema_url, pid)
        monkeypatch.setattr(base, "PING_AFTER_IDLE", 0.0)  # it has been idle "long enough"
        with engine.connect() as conn:  # no error: the ping failed and the pool reconnected
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
        assert _pid(engine) != pid
    finally:
        engine.dispose()


class _Record:
    def __init__(self, checked_in_at: float | None) -> None:
        self.info = {} if checked_in_at is None else {"checked_in_at": checked_in_at}


class _Conn:
    def __init__(self, fail: bool = False) -> None:
        self.executed: list[str] = []
        self.fail = fail

    def cursor(self) -> _Conn:
        return self

    def execute(self, sql: str) -> None:
        if self.fail:
            raise OSError("server closed the connection unexpectedly")
        self.executed.append(sql)

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("idle", "pinged"), [(None, False), (0.5, False), (60.0, True)])
def test_only_a_connection_idle_past_the_threshold_is_pinged(idle: float | None, pinged: bool) -> None:
    conn = _Conn()
    at = None if idle is None else time.monotonic() - idle
    base._ping_if_idle(conn, _Record(at), None)
    assert conn.executed == (["SELECT 1"] if pinged else [])


def test_a_failed_ping_asks_the_pool_for_a_new_connection() -> None:
    with pytest.raises(exc.DisconnectionError):
        base._ping_if_idle(_Conn(fail=True), _Record(time.monotonic() - 60), None)
