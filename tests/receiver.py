"""A real HTTP webhook receiver on 127.0.0.1 for tests: verifies signatures, records requests, scripts answers.

It plays n8n's part: keep-alive, Header Auth (403 on a wrong header) and scripted failures.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

DEFAULT_PATH = "/webhook/segment-events"


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: HTTPMessage  # case-insensitive lookup; missing names give None
    body: bytes
    json: Any  # None when the body is not JSON
    signature_valid: bool
    received_at: datetime
    status: int  # what the receiver answered


@dataclass
class _Response:
    status: int
    times: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


class Serving:
    """A test server used as a context manager: started on entry, stopped on exit."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Receiver(Serving):
    """Webhook endpoint on a free port; use as a context manager or call start()/stop()."""

    def __init__(self, secret: str | None = None, *, path: str = DEFAULT_PATH, default_status: int = 200) -> None:
        self.path = path
        self.default_status = default_status
        self.connections = 0
        self._verifier = _verifier(secret) if secret else None
        self._required_headers: dict[str, str] = {}
        self._script: deque[_Response] = deque()
        self._requests: list[ReceivedRequest] = []
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._running().server_address[:2]
        return f"http://{host}:{port}{self.path}"

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._changed:
            return list(self._requests)

    def start(self) -> Receiver:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        # A short poll keeps stop() fast; the default 0.5 s would dominate every test.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="test-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        assert self._thread is not None
        self._thread.join(timeout=5)
        self._server = None


    def respond_with(
        self,
        status: int,
        *,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
        body: bytes | str = b"",
        delay: float = 0.0,
    ) -> None:
        """Queue `status` for the next `times` requests, optionally after sleeping `delay` seconds."""
        raw = body.encode("utf-8") if isinstance(body, str) else body
        with self._changed:
            self._script.append(_Response(status, times, dict(headers or {}), raw, delay))

    def require_header(self, name: str, value: str) -> None:
        """Answer 403 to any request without `name: value`, like n8n's Header Auth."""
        self._required_headers[name] = value

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Block until at least `count` requests arrived; fails the test if they don't in time."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self._requests) >= count, timeout=timeout)
            if not arrived:
                raise AssertionError(f"expected {count} requests within {timeout}s, got {len(self._requests)}")
            return list(self._requests)

    def delivered_ids(self) -> list[str]:
        """webhook-id of every request answered with a 2xx, in arrival order."""
        return [r.headers["webhook-id"] for r in self.requests if 200 <= r.status < 300]

    def _running(self) -> ThreadingHTTPServer:
        if self._server is None:
            raise RuntimeError("receiver is not started")
        return self._server

    def _next_response(self, headers: HTTPMessage) -> _Response:
        if any(headers.get(name) != value for name, value in self._required_headers.items()):
            return _Response(403, 1, body=b'{"message":"Authorization data is wrong!"}')
        with self._changed:
            if not self._script:
                return _Response(self.default_status, 1)
            scripted = self._script[0]
            scripted.times -= 1
            if scripted.times <= 0:
                self._script.popleft()
            return scripted

    def _record(self, request: ReceivedRequest) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    def _connected(self) -> None:
        with self._changed:
            self.connections += 1

    def _signature_valid(self, body: bytes, headers: HTTPMessage) -> bool:
        if self._verifier is None:
            return False
        try:
            self._verifier.verify(body, dict(headers.items()), json_parse=False)
        except (WebhookVerificationError, ValueError):
            return False
        return True


def _verifier(secret: str) -> Webhook:
    return Webhook(secret if secret.startswith("whsec_") else secret.encode("utf-8"))


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 30  # drop idle keep-alive connections eventually so handler threads end

        def setup(self) -> None:
            super().setup()
            receiver._connected()

        def do_POST(self) -> None:
            expected = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(expected)
            if len(body) < expected:
                # The sender died mid-request (a kill -9 test): a real server never answers or counts this.
                self.close_connection = True
                return
            response = receiver._next_response(self.headers)
            receiver._record(
                ReceivedRequest(
                    method=self.command,
                    path=self.path,
                    headers=self.headers,
                    body=body,
                    json=_parse_json(body),
                    signature_valid=receiver._signature_valid(body, self.headers),
                    received_at=datetime.now(timezone.utc),
                    status=response.status,
                )
            )
            if response.delay:
                time.sleep(response.delay)
            try:
                self.send_response(response.status)
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up (a timeout test); nothing left to answer.
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
