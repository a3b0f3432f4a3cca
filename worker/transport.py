"""Webhook HTTP policy: signing, the one HTTP session, which answers are retried, and when.

This is the only module that imports requests; delivery decides what to send, this decides how.
"""

from __future__ import annotations

import base64
import binascii
import math
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600, 10800, 21600, 43200)

USER_AGENT = "segment-worker/1"
RETRYABLE_STATUSES = frozenset({404, 408, 429})  # plus every 5xx; n8n answers 404 while a workflow is inactive
RETRY_AFTER_STATUSES = frozenset({429, 503})
MAX_RETRY_AFTER_SECONDS = 24 * 3600
JITTER = 0.2
POOL_SIZE = 8
BODY_EXCERPT_CHARS = 200
SIGNATURE_HEADERS = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature"})


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


class WebhookConfig(Protocol):
    name: str
    url: str
    secret: str
    timeout_seconds: float
    headers: Mapping[str, str]


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


def _signer(secret: str) -> Webhook:
    if not secret:
        raise ValueError("webhook secret may not be empty")
    if not secret.startswith("whsec_"):
        return Webhook(secret.encode("utf-8"))
    try:
        return Webhook(secret)
    except EmptyWebhookSecretError:
        raise ValueError("webhook secret 'whsec_...' has nothing after the prefix") from None
    except binascii.Error:
        raise ValueError("webhook secret 'whsec_...' must be base64 after the prefix") from None


class WebhookSender:
    """POSTs signed events to one webhook over one keep-alive session."""

    def __init__(self, webhook: WebhookConfig) -> None:
        if webhook.timeout_seconds <= 0:
            raise ValueError(f"webhook {webhook.name}: timeout_seconds must be positive")
        _signer(webhook.secret)
        self.name = webhook.name
        self._url, self._auth = _split_credentials(webhook.name, webhook.url)
        self._secret = webhook.secret
        self._timeout = float(webhook.timeout_seconds)
        self._static_headers = _checked_static_headers(webhook.name, webhook.headers)
        self._redacted = _sensitive_values(webhook.secret, self._static_headers, self._auth)
        self._session = requests.Session()
        # Retries belong to the outbox (durable, jittered); an adapter retry would hide attempts from it.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=POOL_SIZE, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def send(self, msg_id: str, body: bytes, timestamp: datetime) -> SendResult:
        """POST `body`; returns on 2xx, otherwise raises DeliveryError."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **self._static_headers,
            **sign_headers(self._secret, msg_id, timestamp, body),
        }
        started = time.monotonic()
        try:
            response = self._session.post(
                self._url,
                data=body,
                headers=headers,
                auth=self._auth,
                timeout=self._timeout,
                # A redirected POST may turn into a GET or drop auth; a moved webhook is a config fix.
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise DeliveryError(
                self._network_message(exc), permanent=False, duration_ms=_elapsed_ms(started)
            ) from None
        duration_ms = _elapsed_ms(started)
        if 200 <= response.status_code < 300:
            return SendResult(status=response.status_code, duration_ms=duration_ms)
        raise self._status_error(response, duration_ms)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> WebhookSender:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _status_error(self, response: requests.Response, duration_ms: int) -> DeliveryError:
        status = response.status_code
        retryable = status in RETRYABLE_STATUSES or 500 <= status < 600
        retry_after = None
        if status in RETRY_AFTER_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), datetime.now(timezone.utc))
        message = f"HTTP {status} from {self.name}"
        if status == 404:
            message += " (is the n8n workflow active?)"
        if 300 <= status < 400:
            message += " (redirects are not followed; set the webhook url to the final address)"
        excerpt = " ".join(self._redact(response.text).split())[:BODY_EXCERPT_CHARS]
        if excerpt:
            message += f": {excerpt}"
        return DeliveryError(
            message, permanent=not retryable, status=status, retry_after=retry_after, duration_ms=duration_ms
        )

    def _network_message(self, exc: requests.RequestException) -> str:
        # Never str(exc): requests puts the full URL (and so any password) into it.
        if isinstance(exc, requests.Timeout):
            return f"timed out after {self._timeout:g}s"
        if _caused_by(exc, ConnectionRefusedError):
            return f"connection refused by {self.name}"
        if isinstance(exc, requests.exceptions.SSLError):
            return f"TLS handshake with {self.name} failed"
        if isinstance(exc, requests.ConnectionError):
            return f"could not connect to {self.name} ({_root_cause(exc).__class__.__name__})"
        return f"request to {self.name} failed ({exc.__class__.__name__})"

    def _redact(self, text: str) -> str:
        for value in self._redacted:
            text = text.replace(value, "***")
        return text


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


def _split_credentials(name: str, url: str) -> tuple[str, tuple[str, str] | None]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook {name}: url must be http:// or https:// with a host")
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    bare = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return bare, (unquote(parts.username or ""), unquote(parts.password or ""))


def _checked_static_headers(name: str, headers: Mapping[str, str]) -> dict[str, str]:
    clashing = sorted(h for h in headers if h.lower() in SIGNATURE_HEADERS)
    if clashing:
        raise ValueError(f"webhook {name}: headers may not set {', '.join(clashing)}; they are signed per event")
    return dict(headers)


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
