"""The real server as a separate process on a free port, for the tests that talk to it over HTTP."""

from __future__ import annotations

import shlex
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
    """The Procfile's web command and the CLI's `api`; both bind to PORT from the environment, which the caller
    sets to `port`. (The key "procfile-gunicorn" predates the Procfile's move from gunicorn to waitress.)"""
    return {
        "procfile-gunicorn": procfile_command("web"),
        "cli-api": [sys.executable, "-m", "worker", "api", "--workers", "1"],
    }


def procfile_command(process: str) -> list[str]:
    """The Procfile's line for `process` as arguments, run by this interpreter (its lines use no shell syntax)."""
    for line in (ROOT / "Procfile").read_text(encoding="utf-8").splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process:
            if "$" in command:
                raise ValueError(f"the Procfile's {process!r} line uses shell syntax, which this cannot run")
            arguments = shlex.split(command)
            return [sys.executable, *arguments[1:]] if arguments[0] == "python" else arguments
    raise LookupError(f"the Procfile has no {process!r} process")


@contextmanager
def running_server(command: list[str], env: Mapping[str, str], log_path: Path, port: int,
                   cwd: Path = ROOT) -> Iterator[str]:
    """Start `command` in `cwd`, wait until /healthz answers, yield its base URL, and always stop it."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(base, process, log_path)
        yield base
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not ended within 10 s."""
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
