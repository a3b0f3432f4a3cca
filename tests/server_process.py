"""The real server as a separate process on a free port, for the tests that talk to it over HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def commands(port: int) -> dict[str, list[str]]:
    """The Procfile's web command and the CLI's `api`, each bound to `port`."""
    return {
        "procfile-gunicorn": [sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "gthread",
                              "--threads", "4", "--bind", f"127.0.0.1:{port}", "worker.api.wsgi:app"],
        "cli-api": [sys.executable, "-m", "worker", "api", "--workers", "1"],
    }


@contextmanager
def running_server(command: list[str], env: Mapping[str, str], log_path: Path, port: int) -> Iterator[str]:
    """Start `command`, wait until /healthz answers, yield its base URL, and always stop it."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(base, process, log_path)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_healthy(base: str, process: subprocess.Popen, log_path: Path) -> None:
    # A first answer can be slower than a second on a busy machine: wait for it rather than fail.
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if requests.get(f"{base}/healthz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            time.sleep(0.1)
    pytest.fail(f"the server did not answer /healthz within {STARTUP_SECONDS}s:\n{log_path.read_text()}")
