"""A misbehaving webhook receiver on 127.0.0.1 for tests: answers slowly, hugely, never, or not even in TLS.

Each request gets the next queued behaviour (a function of the connection), then plain 200s. Every misbehaviour
gives up after GIVE_UP_SECONDS, so a sender without a deadline fails its test instead of hanging it.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable
from http.client import HTTPMessage, parse_headers
from typing import BinaryIO

from tests.receiver import Serving

DEFAULT_PATH = "/webhook/segment-events"
GIVE_UP_SECONDS = 10.0
DRIP_EVERY = 0.2  # well inside any per-read timeout, so only a deadline for the whole attempt ends a drip
MB = 1024 * 1024


class Exchange:
    """One turn on a connection: the request (when the behaviour reads it) and the means to answer."""

    def __init__(self, receiver: HostileReceiver, sock: socket.socket, rfile: BinaryIO) -> None:
        self.receiver = receiver
        self.sock = sock
        self.rfile = rfile

    def read_request(self) -> HTTPMessage | None:
        """The request's headers (its body read and dropped), or None if the client hung up."""
        try:
            if not self.rfile.readline():
                return None
            headers = parse_headers(self.rfile)
            self.rfile.read(int(headers.get("Content-Length") or 0))
        except OSError:
            return None
        self.receiver._record(headers)
        return headers

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def drip(self, data: bytes) -> bool:
        """`data` one byte every DRIP_EVERY seconds; False once the client hangs up, the receiver stops or
        GIVE_UP_SECONDS pass."""
        until = time.monotonic() + GIVE_UP_SECONDS
        for byte in data:
            if time.monotonic() > until or not self.send(bytes([byte])):
                return False
            if self.receiver._stopping.wait(DRIP_EVERY):
                return False
        return True

    def hold(self) -> None:
        """Say nothing until the client hangs up, the receiver stops or GIVE_UP_SECONDS pass."""
        self.sock.settimeout(GIVE_UP_SECONDS)
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass


# Whether the connection may carry another request afterwards.
Behaviour = Callable[[Exchange], bool]


def answer(status: int = 200, body: bytes = b"ok") -> Behaviour:
    """A well-behaved answer, kept alive."""

    def play(exchange: Exchange) -> bool:
        if exchange.read_request() is None:
            return False
        return exchange.send(_head(status, len(body)) + body)

    return play


def drip_body(after: float = 0.0) -> Behaviour:
    """Headers (after `after` seconds), then a 100 kB body one byte at a time."""

    def play(exchange: Exchange) -> bool:
        if exchange.read_request() is None or exchange.receiver._stopping.wait(after):
            return False
        exchange.send(_head(200, 100_000))
        exchange.drip(b"." * 100_000)
        return False

    return play


def drip_headers() -> Behaviour:
    """A status line, then an endless header one byte at a time."""

    def play(exchange: Exchange) -> bool:
        if exchange.read_request() is None:
            return False
        exchange.send(b"HTTP/1.1 200 OK\r\n")
        exchange.drip(b"X-Drip: " + b"a" * 60_000)
        return False

    return play


def never_answer() -> Behaviour:
    """Take the request and keep the connection open without a word."""

    def play(exchange: Exchange) -> bool:
        if exchange.read_request() is not None:
            exchange.hold()
        return False

    return play


def huge_body(status: int = 200, size: int = 50 * MB) -> Behaviour:
    """`size` bytes of words, made up as they are sent rather than held."""
    block = b"lorem ipsum dolor sit amet " * 2500

    def play(exchange: Exchange) -> bool:
        if exchange.read_request() is None or not exchange.send(_head(status, size)):
            return False
        left = size
        while left > 0:
            if not exchange.send(block[:left]):
                return False
            left -= len(block)
        return True

    return play


def drip_tls_handshake() -> Behaviour:
    """For an https:// url: the start of a TLS handshake record whose payload comes one byte at a time."""

    def play(exchange: Exchange) -> bool:
        # A handshake record header (type 22, TLS 1.2, 16 kB long) keeps the client reading its payload.
        exchange.send(b"\x16\x03\x03\x40\x00")
        exchange.drip(b"\x00" * 0x4000)
        return False

    return play


class HostileReceiver(Serving):
    """A receiver on a free port playing queued behaviours; a context manager, or call start()/stop()."""

    def __init__(self, *, path: str = DEFAULT_PATH) -> None:
        self.path = path
        self.connections = 0
        self.webhook_ids: list[str | None] = []
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}{self.path}"

    @property
    def https_url(self) -> str:
        return f"https://{self.address}{self.path}"

    @property
    def address(self) -> str:
        if self._server is None:
            raise RuntimeError("hostile receiver is not started")
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def play(self, *behaviours: Behaviour) -> None:
        """Answer the next requests with `behaviours`, one each, in order; plain 200s after that."""
        with self._lock:
            self._script.extend(behaviours)

    def start(self) -> HostileReceiver:
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _handler_for(self))
        # Handler threads are joined on stop (block_on_close), after stop() has cut their connections.
        server.daemon_threads = False
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="hostile-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        with self._lock:
            for sock in self._open:
                _shut(sock)
        self._server.server_close()
        assert self._thread is not None
        self._thread.join(timeout=5)
        self._server = None

    def _next(self) -> Behaviour:
        with self._lock:
            return self._script.popleft() if self._script else answer()

    def _record(self, headers: HTTPMessage) -> None:
        with self._lock:
            self.webhook_ids.append(headers.get("webhook-id"))

    def _opened(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            self._open.add(sock)
            if self._stopping.is_set():
                _shut(sock)

    def _closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)


def _head(status: int, length: int) -> bytes:
    return f"HTTP/1.1 {status} Hostile\r\nContent-Length: {length}\r\nContent-Type: text/plain\r\n\r\n".encode()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone


def _handler_for(receiver: HostileReceiver) -> type[socketserver.BaseRequestHandler]:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            receiver._opened(self.connection)
            try:
                exchange = Exchange(receiver, self.connection, self.rfile)
                # The behaviour is taken when a request starts (its first byte), not while a connection idles in
                # the client's pool: a connection the client drops unused must not use one up.
                while _request_starts(self.connection) and receiver._next()(exchange):
                    pass
            finally:
                receiver._closed(self.connection)

    return Handler


def _request_starts(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except OSError:
        return False
