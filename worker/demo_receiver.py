"""The demo's stand-in for n8n: an HTTP endpoint on 127.0.0.1 that checks each request's Standard Webhooks signature,
answers 200, and logs what n8n would have got, one line per event (a summary a second when many arrive at once)."""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

log = logging.getLogger(__name__)

PATH = "/webhook"  # the base URL's path, as n8n's: rules.yaml appends /segment-<campaign>
REPORT_EVERY_SECONDS = 1.0
# Up to this many events in one report are logged one line each; more become a count per campaign and the last few.
SHOWN_EVENTS = 5
LAST_SHOWN = 3
MAX_BODY_BYTES = 16 * 1024 * 1024  # a batch of a few hundred events is well under a megabyte


def describe(event: Mapping[str, Any]) -> str:
    """One event body (serialize.event_body) as one line: campaign, customer, the move and when it happened."""
    transition = event.get("transition") or {}
    before, after = transition.get("from"), transition.get("to")
    milestone = event.get("milestone")
    if milestone:
        move = f"{after}, {milestone.get('metric')} reached {milestone.get('days')}"
    else:
        move = f"{before or '(first order)'} -> {after}"
    customer = (event.get("customer") or {}).get("contactID")
    occurred = str(event.get("occurredAt") or "")[:10]
    return f"{event.get('campaign')}  {customer}  {move}  (occurred {occurred})"


def events_in(body: Any) -> list[Mapping[str, Any]]:
    """The events of one request: a batch `{"events": [...]}` (a webhook's batch_size) or a single event."""
    if isinstance(body, dict) and isinstance(body.get("events"), list):
        return [event for event in body["events"] if isinstance(event, dict)]
    return [body] if isinstance(body, dict) else []


class DemoReceiver:
    """Listens on 127.0.0.1 on a free port; `url` is the webhook base URL to give the rules (N8N_WEBHOOK_URL)."""

    def __init__(self, secret: str, report_every: float = REPORT_EVERY_SECONDS):
        # The same reading of the secret as the sender's: whsec_ and base64, or any other text as its UTF-8 bytes.
        self._verifier = Webhook(secret if secret.startswith("whsec_") else secret.encode("utf-8"))
        self._report_every = report_every
        self._arrived: list[tuple[str, str]] = []  # (campaign, line) not reported yet
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the demo receiver is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{PATH}"

    def start(self) -> Self:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._threads = [threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                          name="demo-receiver", daemon=True),
                         threading.Thread(target=self._report_loop, name="demo-receiver-report", daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._server = None
        self._report()  # what arrived during the last moments

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def receive(self, body: bytes, headers: Mapping[str, str]) -> int:
        """The HTTP status for one request: 401 unless its signature verifies, 400 unless it holds events, else 200
        with its events queued for the next report."""
        try:
            self._verifier.verify(body, dict(headers), json_parse=False)
        except (WebhookVerificationError, ValueError) as exc:
            log.warning("demo receiver refused a request: its signature does not verify (%s)", exc)
            return 401
        try:
            events = events_in(json.loads(body))
        except ValueError:
            events = []
        if not events:
            log.warning("demo receiver refused a request: its body holds no event")
            return 400
        with self._lock:
            self._arrived += [(str(event.get("campaign")), describe(event)) for event in events]
        return 200

    def _report_loop(self) -> None:
        while not self._stopping.wait(self._report_every):
            self._report()

    def _report(self) -> None:
        with self._lock:
            arrived, self._arrived = self._arrived, []
        if len(arrived) <= SHOWN_EVENTS:
            for _, line in arrived:
                log.info("n8n would get: %s", line)
            return
        counts = Counter(campaign for campaign, _ in arrived)
        log.info("n8n would get %d events: %s; the last %d:", len(arrived),
                 ", ".join(f"{campaign} {count}" for campaign, count in counts.most_common()), LAST_SHOWN)
        for _, line in arrived[-LAST_SHOWN:]:
            log.info("  n8n would get: %s", line)


def _handler_for(receiver: DemoReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the worker's sessions expect of n8n
        timeout = 30  # idle keep-alive connections end, and their threads with them

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self.close_connection = True  # the unread body would be taken for the next request
                self._answer(413)
                return
            body = self.rfile.read(length)
            self._answer(receiver.receive(body, {name: value for name, value in self.headers.items()}))

        def _answer(self, status: int) -> None:
            text = json.dumps({"received": status == 200}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per event is logged by the receiver; a line per request would repeat it

    return Handler
