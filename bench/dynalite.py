"""dynalite (a DynamoDB implementation on LevelDB, from the npm registry) on 127.0.0.1 for the DynamoDB bench: installed
into bench/.dynalite on first use (`npm install`, a few seconds), started on a free port, stopped at the end."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.dynamo_server import cpu_seconds_of
from tests.server_process import free_port, stop

VERSION = "4.0.0"
HOME = Path(__file__).resolve().parent / ".dynalite"


def install() -> Path:
    """The dynalite command, installed with npm into bench/.dynalite if it is not there yet."""
    command = HOME / "node_modules" / ".bin" / "dynalite"
    if command.exists():
        return command
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("the DynamoDB bench needs Node.js and npm to install dynalite (apt-get install npm)")
    HOME.mkdir(exist_ok=True)
    done = subprocess.run([npm, "install", "--prefix", str(HOME), "--no-audit", "--no-fund", f"dynalite@{VERSION}"],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not command.exists():
        raise RuntimeError(f"npm could not install dynalite {VERSION}: {done.stderr[-1500:]}")
    return command


class Dynalite:
    """`with Dynalite() as server:` a fresh in-memory dynalite; server.endpoint_url, server.cpu_seconds()."""

    def __init__(self) -> None:
        self.endpoint_url = ""
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Dynalite:
        command = install()
        port = free_port()
        # tables are ACTIVE at once (dynalite waits 500 ms by default, and boto3's waiters then poll every 20 s)
        self._process = subprocess.Popen([str(command), "--port", str(port), "--host", "127.0.0.1",
                                          "--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.endpoint_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"dynalite stopped: {self._process.stderr.read().decode()[-1500:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("dynalite did not listen within 30 s")

    def __exit__(self, *exc: Any) -> None:
        if self._process is not None:
            stop(self._process)

    def cpu_seconds(self) -> float | None:
        """The server process's CPU so far (user + system)."""
        return None if self._process is None else cpu_seconds_of(self._process.pid)


if __name__ == "__main__":  # python -m bench.dynalite: install it now (what the bench does on first use)
    print(install())
