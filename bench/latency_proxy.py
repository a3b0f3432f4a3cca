"""A TCP proxy on 127.0.0.1 that holds every chunk a client sends for a fixed delay before passing it on: a simulated
network between the worker and a local DynamoDB server, so that the number of requests and how many are in flight,
not the local server's CPU, decide the figures (as on AWS, where a request is a round trip of a few ms).

    python -m bench.latency_proxy --upstream-port 8000 --delay-ms 5     (prints its port, serves until killed)

Chunks keep their order and are each due `delay` after they arrived, so a connection's requests are delayed, not
serialized behind each other's delays; the answers come back at once. Loopback only: it listens on 127.0.0.1 and
connects only to the 127.0.0.1 upstream it is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

from tests.server_process import stop

CHUNK = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader to writer, each chunk held until `delay` after it was read (0: at once)."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def release() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    sender = asyncio.create_task(release())
    try:
        while data := await reader.read(CHUNK):
            queue.put_nowait((time.monotonic() + delay, data))
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    queue.put_nowait((0.0, b""))
    with contextlib.suppress(Exception):
        await sender


async def serve(upstream_port: int, delay: float) -> None:
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, server_writer, delay), _pipe(server_reader, client_writer, 0.0))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with server:
        await server.serve_forever()


@contextlib.contextmanager
def proxied(endpoint_url: str, delay_ms: float) -> Iterator[str]:
    """`with proxied("http://127.0.0.1:8000", 5) as url:` the same server behind a proxy process adding delay_ms."""
    port = int(endpoint_url.rsplit(":", 1)[1].rstrip("/"))
    process = subprocess.Popen([sys.executable, "-m", "bench.latency_proxy", "--upstream-port", str(port),
                                "--delay-ms", str(delay_ms)], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        if not line.strip().isdigit():
            raise RuntimeError("the latency proxy did not start")
        yield f"http://127.0.0.1:{int(line)}"
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream-port", type=int, required=True, help="the local server's port on 127.0.0.1")
    parser.add_argument("--delay-ms", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(serve(args.upstream_port, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
