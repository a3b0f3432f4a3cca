"""A DynamoDB-compatible endpoint on 127.0.0.1 for the tests and the bench: moto's server app in a child process.

    python -m tests.dynamo_server          prints the port it listens on, then serves until terminated

moto answers requests on several threads without isolating them: a conditional write is checked and applied in
separate steps, and a cancelled TransactWriteItems restores a copy of the whole table, undoing writes that other
requests made meanwhile. Real DynamoDB makes every single request atomic, and that is all the store relies on.
So this server hands moto one request at a time: requests from several clients still interleave between each
other (which is what the concurrency tests exercise), but each request is atomic, as on AWS.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
# Dummy credentials: boto3 signs requests with them; moto accepts anything and no request ever reaches AWS.
CLIENT_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
              "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}
STARTUP_SECONDS = 30


class DynamoServer:
    """Starts the child process, knows its endpoint URL, stops it."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self.endpoint_url = ""

    def start(self) -> str:
        env = {**os.environ, **CLIENT_ENV}
        self._process = subprocess.Popen([sys.executable, "-m", "tests.dynamo_server"], cwd=REPO, env=env,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        port = self._read_port()
        self.endpoint_url = f"http://127.0.0.1:{port}"
        _wait_until_listening(port)
        return self.endpoint_url

    def _read_port(self) -> int:
        assert self._process is not None and self._process.stdout is not None
        found: list[str] = []
        reader = threading.Thread(target=lambda: found.append(self._process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(STARTUP_SECONDS)
        if not found or not found[0].strip().isdigit():
            self.stop()
            raise RuntimeError(f"the DynamoDB test server did not start (said {found!r})")
        return int(found[0])

    def cpu_seconds(self) -> float | None:
        """The server process's CPU time so far, for the bench; None where unknown."""
        return None if self._process is None else cpu_seconds_of(self._process.pid)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._process = None

    def __enter__(self) -> DynamoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_until_listening(port: int) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _one_at_a_time(app: Callable[..., Iterable[bytes]]) -> Callable[..., list[bytes]]:
    lock = threading.Lock()

    def serialized(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with lock:
            response = app(environ, start_response)
            try:
                return list(response)
            finally:
                close = getattr(response, "close", None)
                if close is not None:
                    close()

    return serialized


def serve() -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, _one_at_a_time(DomainDispatcherApplication(create_backend_app)),
                         threaded=True)
    print(server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve()


def cpu_seconds_of(pid: int) -> float | None:
    """A process's CPU time so far (user + system, from Linux's /proc); None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, in clock ticks
