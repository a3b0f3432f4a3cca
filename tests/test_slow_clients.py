"""Slow clients (slowloris) against the real server process: 200 connections sending their request headers one
byte a second must not keep /healthz or an authenticated read from answering within a second.

Covered: the Procfile's web command, `python -m worker api`, and `python -m worker serve` (whose scheduler must
still evaluate and deliver meanwhile), and a SIGTERM with the slow connections still open. Why waitress, and
what gunicorn did here: the comment at the top of worker/server.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from tests.conftest import ADMIN_KEY, READ_KEY, WEBHOOK_SECRET
from tests.factories import order
from tests.factories import rules_text as build_rules_text
from tests.receiver import Receiver
from tests.server_process import ROOT, commands, free_port, procfile_command, running_server
from worker.ingest import ingest_orders
from worker.store import open_store

SLOW_CLIENTS = 200
BYTE_EVERY_SECONDS = 1.0
ANSWER_WITHIN_SECONDS = 1.0
PROBE_FOR_SECONDS = 5.0
PROBE_EVERY_SECONDS = 0.5
STOP_WITHIN_SECONDS = 5.0  # SIGTERM with nothing running: the slow connections are closed, not waited for


@pytest.fixture
def rules_text() -> str:
    # `serve` announces everyone on its first run, so its scheduler visibly evaluates and delivers.
    return build_rules_text(first_run="emit")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(WEBHOOK_SECRET) as running:
        yield running


@pytest.fixture
def served_env(tmp_path: Path, rules_file: Path, receiver: Receiver) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/served.db",
        "RULES_FILE": str(rules_file),
        "API_KEYS": READ_KEY,
        "ADMIN_API_KEYS": ADMIN_KEY,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "N8N_WEBHOOK_URL": receiver.url,
        "PORT": str(free_port()),
    }


class SlowClients:
    """Connections that started a request and add one header byte every BYTE_EVERY_SECONDS, from one thread."""

    def __init__(self, port: int, count: int) -> None:
        self.sockets = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
        for sock in self.sockets:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        self.dropped = 0  # connections the server closed or that failed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, name="slow-clients", daemon=True)
        self._thread.start()

    def _trickle(self) -> None:
        sending = list(self.sockets)
        while not self._stop.wait(BYTE_EVERY_SECONDS):
            for sock in list(sending):
                try:
                    sock.send(b"X")
                except OSError:
                    sending.remove(sock)
                    self.dropped += 1

    def still_open(self) -> int:
        """How many connections the server has neither answered nor closed (nothing to read on them)."""
        waiting = 0
        for sock in self.sockets:
            sock.setblocking(False)
            try:
                sock.recv(1, socket.MSG_PEEK)  # an answer (a 400, a 408) or b"" for a closed connection
            except BlockingIOError:
                waiting += 1
            except OSError:
                pass
            finally:
                sock.setblocking(True)
        return waiting

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in self.sockets:
            sock.close()


@contextmanager
def slow_clients(base: str, count: int = SLOW_CLIENTS) -> Iterator[SlowClients]:
    clients = SlowClients(int(base.rsplit(":", 1)[1]), count)
    try:
        time.sleep(BYTE_EVERY_SECONDS * 1.5)  # the server has accepted them and seen a trickled byte
        yield clients
    finally:
        clients.close()


def probe(base: str) -> list[tuple[str, int | str, float]]:
    """GET /healthz and GET /api/segments (with a read key) on new connections, every PROBE_EVERY_SECONDS for
    PROBE_FOR_SECONDS: (path, status or error, seconds) each."""
    answers = []
    deadline = time.monotonic() + PROBE_FOR_SECONDS
    while time.monotonic() < deadline:
        for path, headers in (("/healthz", {}), ("/api/segments", {"X-API-Key": READ_KEY})):
            started = time.monotonic()
            try:
                status: int | str = requests.get(f"{base}{path}", headers=headers,
                                                 timeout=ANSWER_WITHIN_SECONDS).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            answers.append((path, status, round(time.monotonic() - started, 3)))
        time.sleep(PROBE_EVERY_SECONDS)
    return answers


def assert_all_answered_in_time(answers: list[tuple[str, int | str, float]]) -> None:
    late = [answer for answer in answers if answer[1] != 200 or answer[2] >= ANSWER_WITHIN_SECONDS]
    assert len(answers) >= 10 and not late, f"not 200 within {ANSWER_WITHIN_SECONDS}s: {late} of {answers}"


@pytest.mark.parametrize("entry_point", ["procfile-web", "cli-api"])
def test_health_and_reads_answer_within_a_second_while_200_clients_send_headers_slowly(
        entry_point: str, served_env: dict[str, str], tmp_path: Path) -> None:
    port = int(served_env["PORT"])
    command = procfile_command("web") if entry_point == "procfile-web" else commands(port)["cli-api"]
    with running_server(command, served_env, tmp_path / "server.log", port) as base:
        with slow_clients(base) as clients:
            answers = probe(base)
            still_open = clients.still_open()

    assert_all_answered_in_time(answers)
    assert still_open == SLOW_CLIENTS and clients.dropped == 0, "the slow clients were not all held open"


def test_serve_answers_slow_clients_and_its_scheduler_still_evaluates_and_delivers(
        served_env: dict[str, str], receiver: Receiver, tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    store = open_store(served_env["DATABASE_URL"])
    try:
        ingest_orders(store, [order("C-1", "ORD-1", now - timedelta(days=3)),
                              order("C-2", "ORD-2", now - timedelta(days=2))], now)
    finally:
        store.close()
    port = int(served_env["PORT"])
    command = [sys.executable, "-m", "worker", "serve"]
    with running_server(command, served_env, tmp_path / "server.log", port) as base:
        with slow_clients(base):
            answers = probe(base)
            delivered = receiver.wait_for(2, timeout=15)

    assert_all_answered_in_time(answers)
    welcomed = sorted((request.json["campaign"], request.json["customer"]["contactID"]) for request in delivered
                      if request.signature_valid)
    assert welcomed == [("welcome", "C-1"), ("welcome", "C-2")]


def test_sigterm_with_slow_clients_open_stops_promptly_and_cleanly(served_env: dict[str, str],
                                                                   tmp_path: Path) -> None:
    port = int(served_env["PORT"])
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "worker", "serve"], cwd=ROOT, env=served_env,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_answering(base, process)
        with slow_clients(base) as clients:
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=STOP_WITHIN_SECONDS + 5)
            took = time.monotonic() - started
            left_open = clients.still_open()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert code == 0, log_path.read_text()
    assert took < STOP_WITHIN_SECONDS, f"took {took:.1f}s to stop"
    assert left_open == 0


def wait_until_answering(base: str, process: subprocess.Popen, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"{base}/healthz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            time.sleep(0.1)
    pytest.fail(f"the server did not answer /healthz within {within}s (exit code {process.poll()})")
