"""Data sets for the scenarios: a generated CSV imported through the real CLI, and the bare-table baseline import."""

from __future__ import annotations

import csv
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.generate import HEADER, generate

REPO = Path(__file__).resolve().parent.parent
RULES_FILE = REPO / "rules.yaml"
WEBHOOK_SECRET = "whsec_YmVuY2gtd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc4OQ=="
API_KEY = "bench-read-key-0123456789"


@dataclass(frozen=True)
class Dataset:
    customers: int
    orders: int
    csv: Path
    db: Path
    import_seconds: float
    import_cpu_seconds: float

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.db}"


def bench_env(database_url: str, webhook_base: str = "http://127.0.0.1:9/webhook") -> dict[str, str]:
    """The environment every worker process of the bench gets (the rules read WEBHOOK_SECRET and N8N_WEBHOOK_URL)."""
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEYS", "ADMIN_API_KEYS", "N8N_HEADER_TOKEN")}
    env.update(DATABASE_URL=database_url, RULES_FILE=str(RULES_FILE), API_KEYS=API_KEY,
               WEBHOOK_SECRET=WEBHOOK_SECRET, N8N_WEBHOOK_URL=webhook_base, LOG_LEVEL="WARNING",
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def prepare(customers: int, work: Path, seed: int) -> Dataset:
    """Generate `customers` customers' orders and import them with `python -m worker import-orders` (timed)."""
    folder = work / f"n{customers}"
    folder.mkdir(parents=True, exist_ok=True)
    orders_csv = folder / "orders.csv"
    orders = generate(customers, orders_csv, seed)
    db = folder / "segments.db"
    seconds, cpu = import_with_cli(orders_csv, db)
    return Dataset(customers, orders, orders_csv, db, seconds, cpu)


def import_with_cli(orders_csv: Path, db: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of `python -m worker import-orders` into an empty store."""
    for leftover in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        leftover.unlink(missing_ok=True)
    return import_into(orders_csv, db)


def import_into(orders_csv: Path, db: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of `python -m worker import-orders` into the store as it is (empty or not)."""
    cpu, started = children_cpu(), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "worker", "import-orders", str(orders_csv)], cwd=REPO,
                          env=bench_env(f"sqlite:///{db}"), capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - started, children_cpu() - cpu
    if done.returncode != 0:
        raise RuntimeError(f"import-orders failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, cpu


def children_cpu() -> float:
    """User + system CPU seconds of every child process waited for so far (a delta times one subprocess)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def baseline_import(orders_csv: Path, work: Path) -> tuple[float, float, str]:
    """The same CSV into a bare table (no key, no index, text columns): sqlite3's `.import`, else executemany.
    Returns wall seconds, CPU seconds and which of the two it was."""
    db = work / "bare-import.db"
    db.unlink(missing_ok=True)
    columns = ", ".join(f"{name} TEXT" for name in HEADER)
    cli = shutil.which("sqlite3")
    cpu, started = children_cpu() + time.process_time(), time.perf_counter()
    if cli:
        subprocess.run([cli, str(db), f"CREATE TABLE orders ({columns});",
                        f".import --csv --skip 1 {orders_csv} orders"], check=True, capture_output=True)
        label = "sqlite3 CLI .import"
    else:
        conn = sqlite3.connect(db)
        conn.execute(f"CREATE TABLE orders ({columns})")
        with orders_csv.open(encoding="utf-8", newline="") as stream:
            reader = csv.reader(stream)
            next(reader)
            with conn:
                conn.executemany(f"INSERT INTO orders VALUES ({', '.join('?' * len(HEADER))})", reader)
        conn.close()
        label = "python sqlite3 executemany (no sqlite3 CLI)"
    seconds, cpu = time.perf_counter() - started, children_cpu() + time.process_time() - cpu
    db.unlink(missing_ok=True)
    return seconds, cpu, label


def snapshot(db: Path, to: Path) -> Path:
    """A consistent copy of a store's file (WAL folded in first), for a baseline that must not touch the original."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    to.unlink(missing_ok=True)
    shutil.copyfile(db, to)
    return to
