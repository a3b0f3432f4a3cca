"""API scenarios: the Flask app in process (test client), and the real server (`python -m worker api`, waitress)
with a threaded client."""

from __future__ import annotations

import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from bench.dataset import API_KEY, REPO, RULES_FILE, bench_env
from worker.api import create_app
from worker.rules_file import RulesSource
from worker.server import THREADS_PER_WORKER
from worker.settings import Settings
from worker.store.sqlite import SQLiteStore

HEADERS = {"X-API-Key": API_KEY}
# The Procfile's web runs `python -m worker api` with WEB_CONCURRENCY unset, so the CLI's default of 2 applies:
# set here so that an inherited value cannot change what is measured.
WEB_CONCURRENCY = 2
SERVER_THREADS = WEB_CONCURRENCY * THREADS_PER_WORKER  # as serve_api counts them
STARTUP_SECONDS = 30
STOP_SECONDS = 20  # serve_api answers the requests in flight for up to 10 s after SIGTERM


def sample_ids(db: Path, count: int, seed: int) -> list[str]:
    """`count` customer ids picked at random (deterministically) from the store."""
    store = SQLiteStore(db)
    total = store.count_customers()
    store.close()
    rng = random.Random(seed)
    from bench.generate import customer_id  # the generator names customers C0000001 ... in order

    return [customer_id(rng.randint(1, total)) for _ in range(count)]


def in_process(db: Path, env: dict[str, str], now: datetime, ids: list[str], list_pages: int) -> dict[str, Any]:
    """Milliseconds per request through Flask's test client: GET one customer, and list pages of 1000."""
    settings = Settings.from_env(env)
    store = SQLiteStore(db)
    app = create_app(settings, store=store, rules_source=RulesSource(RULES_FILE, env), clock=lambda: now)
    client = app.test_client()
    _expect(client.get(f"/api/customers/{ids[0]}", headers=HEADERS))  # warm: rules, classifier, connection
    one = []
    for contact_id in ids:
        started = time.perf_counter()
        response = client.get(f"/api/customers/{contact_id}", headers=HEADERS)
        one.append((time.perf_counter() - started) * 1000)
        _expect(response)
    pages, cursor = [], None
    for _ in range(list_pages):
        query = "/api/customers?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        started = time.perf_counter()
        response = client.get(query, headers=HEADERS)
        pages.append((time.perf_counter() - started) * 1000)
        body = _expect(response)
        cursor = body["nextCursor"]  # None after the last page: start again from the first
    store.close()
    return {"get_one_p50_ms": statistics.median(one), "get_one_p99_ms": _percentile(one, 99),
            "get_one_requests": len(one), "list_median_ms": statistics.median(pages),
            "list_max_ms": max(pages), "list_pages": len(pages)}


def _expect(response: Any) -> dict[str, Any]:
    if response.status_code != 200:
        raise RuntimeError(f"API answered {response.status_code}: {response.get_data(as_text=True)[:500]}")
    return response.get_json()


@dataclass(frozen=True)
class Load:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    client_cpu_ms_per_request: float = 0.0
    server_cpu_ms_per_request: float = 0.0

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "per_second": self.per_second}


def served(app: str, env: dict[str, str], paths: list[str], threads: int, seconds: float, max_requests: int,
           log: Path) -> Load:
    """Start `python -m bench.server <app>` (`api` or `hello`: `python -m worker api` on 127.0.0.1, one process),
    load it with `threads` client threads (one requests.Session each) for `seconds` or `max_requests`, then stop it."""
    port = _free_port()
    with log.open("w", encoding="utf-8") as errors:
        server = subprocess.Popen([sys.executable, "-m", "bench.server", app], cwd=REPO, env={**env, "PORT": str(port)},
                                  stdout=subprocess.DEVNULL, stderr=errors)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(server, base + paths[0], log)
        hammer(base, paths, threads, min(1.0, seconds / 5), max_requests // 10)  # warm: threads, rules, connections
        server_cpu = _process_cpu_seconds(server.pid)
        load = hammer(base, paths, threads, seconds, max_requests)
        server_ms = (_process_cpu_seconds(server.pid) - server_cpu) * 1000 / load.requests
        return replace(load, server_cpu_ms_per_request=server_ms)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def hammer(base: str, paths: list[str], threads: int, seconds: float, max_requests: int) -> Load:
    """Closed-loop load from 127.0.0.1: each thread sends its next request when the previous one answered."""
    deadline = time.perf_counter() + seconds
    budget = threading.Semaphore(max_requests)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads

    def client(index: int) -> None:
        with requests.Session() as session:
            n = index
            while time.perf_counter() < deadline and budget.acquire(blocking=False):
                path = paths[n % len(paths)]
                n += threads
                started = time.perf_counter()
                try:
                    ok = session.get(base + path, headers=HEADERS, timeout=10).status_code == 200
                except requests.RequestException:
                    ok = False
                latencies[index].append((time.perf_counter() - started) * 1000)
                errors[index] += not ok

    started, cpu = time.perf_counter(), time.process_time()
    workers = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(seconds + 30)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    every = sorted(x for per_thread in latencies for x in per_thread)
    if not every:
        raise RuntimeError("the load client sent no request")
    return Load(len(every), sum(errors), elapsed, _percentile(every, 50), _percentile(every, 99),
                client_cpu_ms_per_request=cpu * 1000 / len(every))


def http_env(db: Path) -> dict[str, str]:
    env = bench_env(f"sqlite:///{db}")
    env["WEB_CONCURRENCY"] = str(WEB_CONCURRENCY)
    return env


def _wait_until_up(server: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}: {log.read_text()[-2000:]}")
        try:
            if requests.get(url, headers=HEADERS, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server did not answer {url} within {STARTUP_SECONDS}s")


def _process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of one process, all its threads, from /proc; 0 where there is no /proc. The server is
    one process with no children (waitress's threads), so this is all of its CPU."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]

