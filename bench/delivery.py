"""Webhook delivery scenario: the real outbox loop (`deliver_due`) against a bare requests.Session loop that
posts the same bodies, both to the tests' keep-alive receiver running in its own process."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from bench.dataset import REPO, bench_env
from bench.ruleset import bench_rules
from worker.delivery import Senders, deliver_due
from worker.store.sqlite import SQLiteStore


@dataclass(frozen=True)
class DeliveryFigures:
    events: int
    seconds: float
    bare_events: int
    bare_seconds: float
    received: int
    cpu_ms_per_event: float  # this process: claiming, signing, sending, recording
    bare_cpu_ms_per_event: float

    @property
    def per_second(self) -> float:
        return self.events / self.seconds

    @property
    def bare_per_second(self) -> float:
        return self.bare_events / self.bare_seconds

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "per_second": self.per_second, "bare_per_second": self.bare_per_second}


class ReceiverProcess:
    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "bench.receiver_process"], cwd=REPO,
                                        env=bench_env("sqlite:///unused.db"), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.base = self.process.stdout.readline().strip()
        if not self.base.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"the receiver did not start (said {self.base!r})")

    def count(self) -> int:
        self.process.stdin.write("count\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def stop(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def delivery(db: Path, now: datetime, events: int) -> DeliveryFigures:
    receiver = ReceiverProcess()
    try:
        rules = bench_rules(webhook_base=receiver.base + "/webhook")
        store = SQLiteStore(db)
        pending = store.list_events("pending", events)  # fewer on a small data set: deliver what there is
        if not pending:
            raise RuntimeError("no pending events to deliver")
        events = len(pending)
        bare_cpu = time.process_time()
        bare_seconds = _bare_loop([(rules.webhooks[e.webhook].url, e.body.encode()) for e in pending])
        bare_cpu = time.process_time() - bare_cpu
        senders = Senders()
        delivered = failed = 0
        started, cpu = time.perf_counter(), time.process_time()
        try:
            while delivered + failed < events:
                run = deliver_due(store, rules, senders, now, "bench", limit=min(200, events - delivered - failed))
                if run.attempted == 0:
                    break
                delivered, failed = delivered + run.delivered, failed + run.retrying + run.dead
        finally:
            senders.close()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        store.close()
        if failed:
            raise RuntimeError(f"{failed} of {delivered + failed} deliveries failed")
        return DeliveryFigures(delivered, seconds, len(pending), bare_seconds, receiver.count(),
                               cpu * 1000 / delivered, bare_cpu * 1000 / len(pending))
    finally:
        receiver.stop()


def _bare_loop(messages: list[tuple[str, bytes]]) -> float:
    """The floor: the same bodies, one after another, over one keep-alive session; no signing, no bookkeeping."""
    with requests.Session() as session:
        started = time.perf_counter()
        for url, body in messages:
            response = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10)
            if not 200 <= response.status_code < 300:
                raise RuntimeError(f"the receiver answered {response.status_code}")
        return time.perf_counter() - started
