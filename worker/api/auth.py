"""API keys: who may read /api (and /metrics), who may write, checked before any route runs; and the slow-down for
addresses that keep sending wrong keys (here and at dashboard sign-in). Keys are never logged."""

from __future__ import annotations

import hmac
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from flask import Flask, Response, current_app, jsonify, request

from worker.api.context import context
from worker.settings import Settings

log = logging.getLogger(__name__)

View = TypeVar("View", bound=Callable[..., object])

# Ten wrong keys in a minute is more than any person mistyping or any client misconfigured and retrying; after
# that an address is refused for a minute, which holds a guesser to about ten tries a minute per address.
FAILURE_LIMIT = 10
FAILURE_WINDOW_SECONDS = 60
# About 100 bytes each: a flood of addresses costs at most a few MB, and pushes out the oldest ones first.
FAILURE_ADDRESSES = 10_000
_FAILURES = "api_key_failures"
_INVALID_KEY = "missing or invalid API key; send 'Authorization: Bearer <key>' or 'X-API-Key'"


def write_access(view: View) -> View:
    """Marks a route that changes data: it needs a key from ADMIN_API_KEYS (or any key while that is unset)."""
    view.requires_write = True  # type: ignore[attr-defined]
    return view


def install_auth(app: Flask, settings: Settings, metrics_public: bool) -> None:
    """Guards every path under /api, and /metrics unless it is public, whether or not a route matches it."""
    read_keys = tuple(dict.fromkeys(settings.api_keys + settings.admin_api_keys))
    write_keys = settings.write_keys
    if not read_keys:
        log.warning("API_KEYS is not set: every /api request is refused with 401 until keys are configured")
    app.extensions[_FAILURES] = KeyFailures(FAILURE_LIMIT, timedelta(seconds=FAILURE_WINDOW_SECONDS),
                                            FAILURE_ADDRESSES)

    @app.before_request
    def require_key() -> Response | None:
        if not _guarded(request.path, metrics_public):
            return None
        address, now = request.remote_addr or "", context().clock()
        # Before the key is looked at: a blocked address learns nothing, not even that a guess was right.
        wait = key_failures().retry_after(address, now)
        if wait is not None:
            return too_many_wrong_keys(wait)
        key = presented_key()
        if key is None:
            return _refuse(401, _INVALID_KEY)
        if not key_matches(key, read_keys):
            key_failures().record(address, now)
            return _refuse(401, _INVALID_KEY)
        view = current_app.view_functions.get(request.endpoint or "")
        if getattr(view, "requires_write", False) and not key_matches(key, write_keys):
            return _refuse(403, "this API key may read but not write")
        return None


def presented_key() -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("X-API-Key", "").strip() or None


def key_matches(presented: str, keys: Iterable[str]) -> bool:
    """Compares with every key, without stopping at the first match, so timing does not tell which key is close."""
    given = presented.encode("utf-8")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.encode("utf-8"))
    return matched


# --- the slow-down for wrong keys -----------------------------------------------------------------------------

@dataclass
class _Tally:
    since: datetime
    count: int = 0
    blocked_until: datetime | None = None


class KeyFailures:
    """Wrong keys per client address: after `limit` of them within `window`, the address is refused for `window`.

    Kept in this process's memory, so each server process counts on its own: with W processes an address gets at
    most W x limit tries per window, still a slow-down of many orders of magnitude. At most `max_addresses` are
    remembered, the least recently failing forgotten first. The address is request.remote_addr: behind a proxy
    that is the proxy's, so every client behind it shares one count (X-Forwarded-For is not trusted: anybody can
    send it).
    """

    def __init__(self, limit: int, window: timedelta, max_addresses: int) -> None:
        self._limit = limit
        self._window = window
        self._max_addresses = max_addresses
        self._tallies: OrderedDict[str, _Tally] = OrderedDict()
        self._lock = threading.Lock()  # the server's threads share this object

    def retry_after(self, address: str, now: datetime) -> int | None:
        """Whole seconds until `address` may try again, or None while it is not refused."""
        with self._lock:
            tally = self._tallies.get(address)
            if tally is None or tally.blocked_until is None:
                return None
            if now >= tally.blocked_until:
                del self._tallies[address]
                return None
            return max(1, math.ceil((tally.blocked_until - now).total_seconds()))

    def record(self, address: str, now: datetime) -> None:
        """One more wrong key from `address`."""
        with self._lock:
            tally = self._tallies.pop(address, None)
            if tally is None or now >= tally.since + self._window:
                tally = _Tally(now)
            tally.count += 1
            self._tallies[address] = tally  # last: the most recent failure
            while len(self._tallies) > self._max_addresses:
                self._tallies.popitem(last=False)
            if tally.count == self._limit:
                tally.blocked_until = now + self._window
                seconds = int(self._window.total_seconds())
                log.warning("%d wrong API keys from %s within %d s: refusing it for %d s", tally.count,
                            address or "an unknown address", seconds, seconds)


def key_failures() -> KeyFailures:
    """This app's count of wrong keys, shared by /api and dashboard sign-in."""
    return current_app.extensions[_FAILURES]


def too_many_wrong_keys(retry_after: int) -> Response:
    response = _refuse(429, f"too many wrong API keys from this address; try again in {retry_after} s")
    response.headers["Retry-After"] = str(retry_after)
    return response


def _guarded(path: str, metrics_public: bool) -> bool:
    return path == "/api" or path.startswith("/api/") or (path == "/metrics" and not metrics_public)


def _refuse(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="segment-worker"'
    return response
