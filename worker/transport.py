"""Webhook HTTP policy: signing, the one HTTP session, each attempt's deadline, which answers are retried, and when.

This is the only module that imports requests (and urllib3 beneath it); delivery decides what to send, this how.
Over 500 lines because the whole-attempt deadline needs urllib3's pools and a watchdog beside the sending itself;
both are HTTP policy and belong here, not in delivery.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import itertools
import math
import random
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from types import TracebackType
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from standardwebhooks.webhooks import EmptyWebhookSecretError
from standardwebhooks.webhooks import Webhook as StandardWebhook
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ProtocolError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.poolmanager import PoolManager, ProxyManager
from urllib3.response import BaseHTTPResponse

from rules.webhooks import Webhook

USER_AGENT = "segment-worker/1"
RETRYABLE_STATUSES = frozenset({404, 408, 429})  # plus every 5xx; n8n answers 404 while a workflow is inactive
RETRY_AFTER_STATUSES = frozenset({429, 503})
MAX_RETRY_AFTER_SECONDS = 24 * 3600
JITTER = 0.2
POOL_SIZE = 8
BODY_EXCERPT_CHARS = 200
BODY_KEEP_BYTES = 4096  # of an answer's body, kept for the error excerpt
# Read on past the kept part so a small body frees its connection for the next send; a longer one is not worth
# downloading (50 MB error pages exist), so its connection is closed instead.
BODY_DRAIN_BYTES = 64 * 1024
READ_CHUNK_BYTES = 16 * 1024


class DeliveryError(Exception):
    """A send that did not get a 2xx; `permanent` says whether trying again can help."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        status: int | None = None,
        retry_after: float | None = None,
        duration_ms: int = 0,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.status = status
        self.retry_after = retry_after
        self.duration_ms = duration_ms


@dataclass(frozen=True)
class SendResult:
    status: int
    duration_ms: int
    excerpt: str = ""  # the start of the answer's body, secrets redacted (what `webhooks test` shows)


def sign_headers(secret: str, msg_id: str, timestamp: datetime, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers for `body`; `timestamp` is the moment of sending (receivers reject >5 min skew)."""
    if timestamp.tzinfo is None:
        # A naive datetime would be read as local time by astimezone(); refuse the guess.
        raise ValueError("webhook timestamp must be timezone-aware")
    utc = timestamp.astimezone(timezone.utc)
    signature = _signer(secret).sign(msg_id=msg_id, timestamp=utc, data=body.decode("utf-8"))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(utc.timestamp())),
        "webhook-signature": signature,
    }


def _signer(secret: str) -> StandardWebhook:
    if not secret:
        raise ValueError("webhook secret may not be empty")
    if not secret.startswith("whsec_"):
        return StandardWebhook(secret.encode("utf-8"))
    try:
        return StandardWebhook(secret)
    except EmptyWebhookSecretError:
        raise ValueError("webhook secret 'whsec_...' has nothing after the prefix") from None
    except binascii.Error:
        raise ValueError("webhook secret 'whsec_...' must be base64 after the prefix") from None


class WebhookSender:
    """POSTs signed events to one webhook over one keep-alive session, each attempt within timeout_seconds.

    `webhook` was checked when the rules were read (URL, secret, headers, timeout); `name` is its key in rules.yaml.
    """

    def __init__(self, name: str, webhook: Webhook) -> None:
        self.name = name
        self._url, self._auth = _split_credentials(webhook.url)
        self._secret = webhook.secret
        self._timeout = float(webhook.timeout_seconds)
        self._static_headers = dict(webhook.headers)
        self._redacted = _sensitive_values(webhook.secret, self._static_headers, self._auth)
        self._watchdog = _Watchdog(f"deadlines-{name}")
        self._session = requests.Session()
        # Retries belong to the outbox (durable, jittered); an adapter retry would hide attempts from it.
        adapter = _GuardedAdapter(pool_connections=1, pool_maxsize=POOL_SIZE, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def send(self, msg_id: str, body: bytes, timestamp: datetime) -> SendResult:
        """POST `body`; returns on 2xx, otherwise raises DeliveryError (also when no whole answer came in time)."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **self._static_headers,
            **sign_headers(self._secret, msg_id, timestamp, body),
        }
        started = time.monotonic()
        deadline = _Deadline(self._timeout)
        self._watchdog.watch(deadline)
        failure: Exception | None = None
        try:
            answer = self._exchange(body, headers, deadline)
        except (requests.RequestException, Urllib3Error) as exc:
            failure = exc
        finally:
            # Whatever the read made of a socket the deadline shut (an error, or an EOF that looks like the end of
            # the body), the attempt ran out of time.
            too_late = deadline.end()
        duration_ms = _elapsed_ms(started)
        if too_late:
            raise DeliveryError(self._timeout_message(), permanent=False, duration_ms=duration_ms)
        if failure is not None:
            raise DeliveryError(self._network_message(failure), permanent=False, duration_ms=duration_ms)
        if 200 <= answer.status < 300:
            return SendResult(status=answer.status, duration_ms=duration_ms, excerpt=self._excerpt(answer))
        raise self._status_error(answer, duration_ms)

    def close(self) -> None:
        self._session.close()
        self._watchdog.close()

    def __enter__(self) -> WebhookSender:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _exchange(self, body: bytes, headers: Mapping[str, str], deadline: _Deadline) -> _Answer:
        _in_flight.deadline = deadline
        try:
            # Per-read timeouts alone let a receiver that drips bytes hold the attempt for ever; the deadline
            # ends it. These only stop a connect from outliving it.
            wait = deadline.remaining()
            response = self._session.post(
                self._url,
                data=body,
                headers=headers,
                auth=self._auth,
                timeout=(wait, wait),
                # A redirected POST may turn into a GET or drop auth; a moved webhook is a config fix.
                allow_redirects=False,
                stream=True,
            )
            # Closing a response whose body was not read to the end closes its connection: a half-read one
            # never goes back to the keep-alive pool.
            with response:
                kept, cut = _read_capped(response.raw)
            return _Answer(response.status_code, response.headers.get("Retry-After"), kept, cut, response.encoding)
        finally:
            _in_flight.deadline = None

    def _status_error(self, answer: _Answer, duration_ms: int) -> DeliveryError:
        status = answer.status
        retryable = status in RETRYABLE_STATUSES or 500 <= status < 600
        retry_after = None
        if status in RETRY_AFTER_STATUSES:
            retry_after = parse_retry_after(answer.retry_after, datetime.now(timezone.utc))
        message = f"HTTP {status} from {self.name}"
        if status == 404:
            message += " (is the n8n workflow active?)"
        if 300 <= status < 400:
            message += " (redirects are not followed; set the webhook url to the final address)"
        excerpt = self._excerpt(answer)
        if excerpt:
            message += f": {excerpt}"
        return DeliveryError(
            message, permanent=not retryable, status=status, retry_after=retry_after, duration_ms=duration_ms
        )

    def _excerpt(self, answer: _Answer) -> str:
        words = self._redact(answer.text()).split()
        if answer.cut:
            # The last word may be the start of a secret cut off at the cap, which redaction cannot recognise.
            words = words[:-1]
        return " ".join(words)[:BODY_EXCERPT_CHARS]

    def _timeout_message(self) -> str:
        return f"no complete answer from {self.name} within {self._timeout:g}s"

    def _network_message(self, exc: Exception) -> str:
        # Never str(exc): requests puts the full URL (and so any password) into it.
        if isinstance(exc, (requests.Timeout, Urllib3Timeout)):
            return self._timeout_message()
        if _caused_by(exc, ConnectionRefusedError):
            return f"connection refused by {self.name}"
        if isinstance(exc, requests.exceptions.SSLError):
            return f"TLS handshake with {self.name} failed"
        if isinstance(exc, requests.ConnectionError):
            return f"could not connect to {self.name} ({_root_cause(exc).__class__.__name__})"
        if isinstance(exc, ProtocolError):
            return f"the answer from {self.name} broke off ({_root_cause(exc).__class__.__name__})"
        return f"request to {self.name} failed ({exc.__class__.__name__})"

    def _redact(self, text: str) -> str:
        for value in self._redacted:
            text = text.replace(value, "***")
        return text


@dataclass(frozen=True)
class _Answer:
    status: int
    retry_after: str | None
    body: bytes  # at most BODY_KEEP_BYTES
    cut: bool  # the body went on past `body`
    encoding: str | None

    def text(self) -> str:
        try:
            return self.body.decode(self.encoding or "utf-8", errors="replace")
        except LookupError:  # a charset Python does not know
            return self.body.decode("utf-8", errors="replace")


def _read_capped(raw: BaseHTTPResponse) -> tuple[bytes, bool]:
    """The body's first BODY_KEEP_BYTES, and whether it went on past them; reads no more than BODY_DRAIN_BYTES
    and a chunk."""
    kept = b""
    read = 0
    while read <= BODY_DRAIN_BYTES:
        chunk = raw.read(READ_CHUNK_BYTES, decode_content=True)
        if not chunk:
            return kept, read > BODY_KEEP_BYTES
        read += len(chunk)
        kept += chunk[: BODY_KEEP_BYTES - len(kept)]
    return kept, True


# The deadline of the attempt running on this thread, for the connections that the attempt picks up.
_in_flight = threading.local()
# Serialises handing a connection to an attempt with shutting it at a deadline, across all senders.
_handover = threading.Lock()


class _Deadline:
    """The end of one attempt. When it passes, the socket the attempt uses is shut down, so whatever read or write
    is blocked on it (dripped headers or body, a receiver that never answers) fails. A TLS handshake has no socket
    to shut; _GuardedConnect bounds it instead."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.ended = False
        self._passed = False
        self._conn: HTTPConnection | None = None

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def guard(self, conn: HTTPConnection) -> None:
        """Make `conn` the attempt's; shut it at once if the deadline passed while it had no socket yet."""
        with _handover:
            conn.deadline = self  # type: ignore[attr-defined]
            self._conn = conn
            if self._passed:
                _shut(conn)

    def expire(self) -> None:
        with _handover:
            if self.ended:
                return
            self._passed = True
            # A connection this attempt finished with may already be in another attempt's hands.
            if self._conn is not None and getattr(self._conn, "deadline", None) is self:
                _shut(self._conn)

    def end(self) -> bool:
        """Stop the clock; True if the deadline passed first."""
        with _handover:
            self.ended = True
            return self._passed


def _shut(conn: HTTPConnection) -> None:
    sock = conn.sock
    if not isinstance(sock, socket.socket):
        return
    try:
        # socket.socket's shutdown, not SSLSocket's: that one also drops the TLS state the blocked reader uses.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # closed meanwhile by its own thread: nothing left to stop


class _Watchdog:
    """One thread per sender that expires its attempts' deadlines as they pass.

    One thread rather than a timer per attempt: starting a thread costs a third of a keep-alive send.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._due: list[tuple[float, int, _Deadline]] = []
        self._order = itertools.count()  # breaks ties between equal deadlines, which do not compare
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: _Deadline) -> None:
        with self._changed:
            # Attempts mostly end long before their deadline; dropping them here, not only when the watchdog
            # wakes, keeps a burst of quick failures (n8n down) from piling up for a whole timeout.
            self._drop_ended()
            heapq.heappush(self._due, (deadline.at, next(self._order), deadline))
            # Started on first use, again after close(), and in a forked child, where the parent's does not run.
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            elif self._due[0][2] is deadline:
                self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            thread, self._thread = self._thread, None
            self._changed.notify_all()
        if thread is not None:
            thread.join(timeout=5)

    def _run(self) -> None:
        me = threading.current_thread()
        with self._changed:
            while self._thread is me:
                self._drop_ended()
                if not self._due:
                    self._changed.wait()
                    continue
                wait = self._due[0][0] - time.monotonic()
                if wait > 0:
                    self._changed.wait(wait)
                    continue
                heapq.heappop(self._due)[2].expire()

    def _drop_ended(self) -> None:
        while self._due and self._due[0][2].ended:
            heapq.heappop(self._due)


def _guard_in_flight(conn: HTTPConnection) -> None:
    deadline = getattr(_in_flight, "deadline", None)
    if deadline is not None:
        deadline.guard(conn)


class _GuardedConnect:
    """Hands a connection to the attempt's deadline once connected too: one that passed meanwhile had no socket
    to shut yet."""

    deadline: _Deadline | None = None

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        deadline = getattr(_in_flight, "deadline", None)
        if deadline is not None:
            # Wrapping for TLS detaches this socket, so the deadline cannot shut it during the handshake; but
            # CPython bounds a whole handshake by the socket's timeout, so make that end with the deadline.
            sock.settimeout(max(deadline.remaining(), 0.001))
        return sock

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _guard_in_flight(self)  # type: ignore[arg-type]


class _GuardedPick:
    """Hands each connection taken from the pool (reused or new) to the attempt's deadline."""

    def _get_conn(self, timeout: float | None = None) -> HTTPConnection:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        _guard_in_flight(conn)
        return conn


class _GuardedConnection(_GuardedConnect, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnect, HTTPSConnection):
    pass


class _GuardedPool(_GuardedPick, HTTPConnectionPool):
    ConnectionCls = _GuardedConnection


class _GuardedHTTPSPool(_GuardedPick, HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


_GUARDED_POOLS = {"http": _GuardedPool, "https": _GuardedHTTPSPool}


class _GuardedAdapter(HTTPAdapter):
    """Hands every connection it uses, direct or through an HTTP(S) proxy, to the current attempt's deadline."""

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _GUARDED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: object) -> PoolManager:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, ProxyManager):  # a SOCKS manager has pools of its own kind
            manager.pool_classes_by_scheme = _GUARDED_POOLS
        return manager


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)  # RFC 9110 dates are GMT
    return max(0.0, (when - now).total_seconds())


def next_attempt_at(
    attempts: int,
    now: datetime,
    schedule: Sequence[float],
    rng: random.Random,
    retry_after: float | None = None,
) -> datetime | None:
    """When to try again after `attempts` failures, or None when the schedule is spent (the event is dead)."""
    if attempts < 1:
        raise ValueError("attempts counts failures so far and starts at 1")
    if attempts > len(schedule):
        return None
    # Jitter spreads a burst of failures (n8n down for everyone) so retries don't arrive in lockstep.
    delay = schedule[attempts - 1] * rng.uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
    return now + timedelta(seconds=delay)


def _split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without `user:password@`, and those credentials, which are sent as basic auth instead."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    bare = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return bare, (unquote(parts.username or ""), unquote(parts.password or ""))


def _sensitive_values(secret: str, headers: Mapping[str, str], auth: tuple[str, str] | None) -> list[str]:
    values = {secret, secret.removeprefix("whsec_"), *headers.values()}
    if auth:
        values.add(auth[1])
        values.add(base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    # Longest first so a value containing another is replaced whole.
    return sorted((v for v in values if v), key=len, reverse=True)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(e, kind) for e in _cause_chain(exc))


def _root_cause(exc: BaseException) -> BaseException:
    return list(_cause_chain(exc))[-1]


def _cause_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        # urllib3 wraps the socket error in MaxRetryError.reason rather than chaining it.
        reason = getattr(current, "reason", None)
        nxt = reason if isinstance(reason, BaseException) else None
        if nxt is None and current.args and isinstance(current.args[0], BaseException):
            nxt = current.args[0]
        current = nxt or current.__cause__ or current.__context__


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
