"""Small helpers shared by the bench scripts (figures, machine description)."""
from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1))))
    return ordered[k]


def describe_latencies(values_s: Sequence[float]) -> str:
    ms = [v * 1000 for v in values_s]
    return (f"p50 {percentile(ms, 50):.2f} ms, p95 {percentile(ms, 95):.2f} ms, "
            f"p99 {percentile(ms, 99):.2f} ms, mean {statistics.fmean(ms):.2f} ms")


def machine() -> str:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores {cpu}, "
            f"Python {platform.python_version()}")


def fresh_schema(pg_url: str, schema: str) -> str:
    """An empty PostgreSQL schema migrated to head (dropped first if a
    previous run left it); returns a URL whose search_path is that schema."""
    from sqlalchemy import text

    from models.base import make_engine
    from models.migrate import upgrade

    admin = make_engine(pg_url)
    with admin.begin() as c:
        c.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    url = f"{pg_url}{'&' if '?' in pg_url else '?'}options=-csearch_path%3D{schema}"
    upgrade(url)
    return url


def drop_schema(pg_url: str, schema: str) -> None:
    from sqlalchemy import text

    from models.base import make_engine

    admin = make_engine(pg_url)
    with admin.begin() as c:
        c.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()
