"""Full org sync at scale, against the fake GitHub over loopback HTTP.

For each roster size N: a fresh database, one provider workspace, then
1. a full sync of N members (all adds): wall time, API calls against
   ceil(N/100) (+ the separate admin listing, the token exchange and the org
   read), database statements, peak memory;
2. an unchanged re-sync: how many roster requests were answered 304.

The fake server runs in its own process, so the memory figures are the
sync's (peak RSS of the measuring process over its baseline, and the peak
of Python allocations traced by tracemalloc during the sync).

    .venv/bin/python bench/sync_bench.py                 # N = 10,000 and 100,000
    .venv/bin/python bench/sync_bench.py --n 10000
ORGSYNC_BENCH_DATABASE_URL=postgresql+psycopg://... also runs on PostgreSQL
(in a throwaway schema).
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import resource
import secrets
import tempfile
import time
import tracemalloc
from multiprocessing.connection import Connection
from typing import Any

import _common  # noqa: F401  (puts the project on sys.path)
from _common import machine
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import event, insert, text

from models import store
from models.base import Base, make_engine, make_session_factory
from models.config import Settings
from models.tables import Counter
from sync.context import build_sync_context
from sync.orgs import full_sync

ORG_ID, INSTALLATION, APP_ID = 9001, 77, "4242"
ADMIN_EVERY = 50  # 2% admins, as in a typical large org


# --------------------------------------------------------------------------- fake server process


def _serve(n: int, conn: Connection) -> None:
    from demo.fakes.server import FakeProviderServer

    server = FakeProviderServer(keep_alive=True)
    gh = server.github
    gh.add_org(ORG_ID, "bigco", installation_id=INSTALLATION)
    gh.add_members(
        ORG_ID,
        ((uid, f"user{uid}", "admin" if uid % ADMIN_EVERY == 0 else "member") for uid in range(1, n + 1)),
    )
    server.start()
    conn.send(server.github_api_url)
    while True:
        cmd = conn.recv()
        if cmd == "stats":
            conn.send({
                "requests": gh.request_count,
                "roster": sum(1 for r in gh.requests if r.path.endswith("/members")),
                "not_modified": gh.count("/members", status=304),
            })
        elif cmd == "reset":
            gh.reset_log()
            conn.send(True)
        else:
            server.stop()
            conn.send(True)
            return


# --------------------------------------------------------------------------- one measured run


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _database(label: str) -> tuple[str, Any]:
    """(url, cleanup) for a fresh, empty database."""
    if label == "sqlite":
        tmp = tempfile.mkdtemp()
        return f"sqlite:///{tmp}/bench.db", lambda: None
    url = os.environ["ORGSYNC_BENCH_DATABASE_URL"]
    schema = f"bench_{secrets.token_hex(4)}"
    admin = make_engine(url)
    with admin.begin() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))

    def cleanup() -> None:
        with admin.begin() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}", cleanup


def _run(n: int, label: str, key: str, out: Connection) -> None:
    try:
        _measure(n, label, key, out)
    except BaseException as exc:
        out.send(f"N={n:,} on {label}: failed: {type(exc).__name__}: {exc}")
        raise


def _measure(n: int, label: str, key: str, out: Connection) -> None:
    parent, child = mp.Pipe()
    srv = mp.Process(target=_serve, args=(n, child), daemon=True)
    srv.start()
    api_url = parent.recv()
    url, cleanup = _database(label)
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    with engine.begin() as c:
        c.execute(insert(Counter).values(name="activity", value=0))
    statements = [0]

    @event.listens_for(engine, "before_cursor_execute")
    def _count(*_args: Any) -> None:
        statements[0] += 1

    factory = make_session_factory(engine)
    ctx = build_sync_context(
        Settings(github_api_url=api_url, github_app_id=APP_ID, github_app_private_key=key), factory
    )
    with ctx.session() as s:
        ws_id = store.create_provider_workspace(
            s, "github", ORG_ID, "bigco", actor="bench", installation_id=INSTALLATION
        ).id
    lines: list[str] = []
    try:
        admins = n // ADMIN_EVERY
        expected_roster = math.ceil(admins / 100) + math.ceil((n - admins) / 100)
        parent.send("reset")
        parent.recv()

        # 1. first full sync: every member is an add.
        statements[0] = 0
        base_rss = _rss_mib()
        t0 = time.perf_counter()
        first = full_sync(ctx, ws_id, trigger="bench")
        wall = time.perf_counter() - t0
        peak_rss = _rss_mib()
        first_statements = statements[0]
        parent.send("stats")
        stats = parent.recv()
        lines += [
            f"N={n:,} on {label}",
            f"  full sync:        {wall:8.2f} s wall, result {first.result}, added {first.added:,}",
            (f"  API calls:        {first.api_calls} (fake server saw {stats['requests']}); roster "
            f"requests {stats['roster']} = ceil(N/100) {math.ceil(n / 100)} + "
            f"{stats['roster'] - math.ceil(n / 100)} (admins listed separately; expected "
            f"{expected_roster}) + 2 constant (token exchange, org read)"),
            f"  DB statements:    {first_statements} ({first_statements / n:.4f} per member)",
            (f"  peak RSS:         {peak_rss:.0f} MiB (baseline {base_rss:.0f} MiB, "
            f"+{peak_rss - base_rss:.0f} MiB)"),
        ]

        # 2. unchanged re-sync: every roster page should be a 304.
        parent.send("reset")
        parent.recv()
        statements[0] = 0
        tracemalloc.start()
        t0 = time.perf_counter()
        second = full_sync(ctx, ws_id, trigger="bench")
        wall2 = time.perf_counter() - t0
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        parent.send("stats")
        stats2 = parent.recv()
        lines += [
            (f"  unchanged resync: {wall2:8.2f} s wall (under tracemalloc), result {second.result}, "
            f"changes +{second.added} -{second.removed} ~{second.changed}"),
            (f"                    304 answers {stats2['not_modified']} of {stats2['roster']} roster "
            f"requests (run.not_modified {second.not_modified}), API calls {second.api_calls}, "
            f"DB statements {statements[0]}, traced Python peak {traced_peak / 2**20:.1f} MiB"),
        ]
    finally:
        parent.send("stop")
        parent.recv()
        srv.join(5)
        engine.dispose()
        cleanup()
    out.send("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, action="append", help="roster size (repeatable)")
    args = parser.parse_args()
    sizes = args.n or [10_000, 100_000]
    dbs = ["sqlite"] + (["postgresql"] if os.environ.get("ORGSYNC_BENCH_DATABASE_URL") else [])
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    print(f"sync bench on {machine()}")
    for n in sizes:
        for label in dbs:
            # Each run in a fresh process: peak RSS is a high-water mark.
            recv, send = mp.Pipe(duplex=False)
            proc = mp.Process(target=_run, args=(n, label, key, send))
            proc.start()
            report = recv.recv() if recv.poll(3600) else f"N={n:,} on {label}: no report"
            proc.join()
            print(report, flush=True)


if __name__ == "__main__":
    main()
