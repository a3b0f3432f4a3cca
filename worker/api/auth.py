"""API keys: who may read /api (and /metrics), who may write, checked before any route runs. Keys are never logged."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

from flask import Flask, Response, current_app, jsonify, request

from worker.settings import Settings

log = logging.getLogger(__name__)

View = TypeVar("View", bound=Callable[..., object])


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

    @app.before_request
    def require_key() -> Response | None:
        if not _guarded(request.path, metrics_public):
            return None
        key = presented_key()
        if key is None or not key_matches(key, read_keys):
            return _refuse(401, "missing or invalid API key; send 'Authorization: Bearer <key>' or 'X-API-Key'")
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


def _guarded(path: str, metrics_public: bool) -> bool:
    return path == "/api" or path.startswith("/api/") or (path == "/metrics" and not metrics_public)


def _refuse(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="segment-worker"'
    return response
