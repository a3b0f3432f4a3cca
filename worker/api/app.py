"""The Flask application factory: wires settings, store, rules and clock into blueprints, auth and JSON errors."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from datetime import datetime

from flask import Blueprint, Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from worker.api import campaigns, customers, dashboard, events, health, openapi, orders, rules, webhooks
from worker.api.auth import install_auth
from worker.api.context import EXTENSION, ApiContext
from worker.api.dashboard import install_dashboard_session
from worker.clock import utc_now
from worker.rules_file import RulesSource
from worker.settings import Settings, env_bool
from worker.store import open_store
from worker.store.base import Store, StoreBusy

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Every answer is computed for one moment and one key holder: nothing here may be cached.
    "Cache-Control": "no-store",
}
CORS_ALLOWED_METHODS = "GET, POST"
CORS_ALLOWED_HEADERS = "Authorization, X-API-Key, Content-Type"
CORS_MAX_AGE_SECONDS = 600


def create_app(settings: Settings, store: Store | None = None, rules_source: RulesSource | None = None,
               clock: Callable[[], datetime] | None = None) -> Flask:
    """The API for these settings; store, rules and clock can be passed in (tests), else built from settings.

    A store the app opens itself is closed with the app (when it is collected, or at exit); a store passed in
    stays its owner's to close. Never per request: a SQLite connection per request would slow every answer.
    """
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # keep the documented field order of the original API
    if store is None:
        store = open_store(settings.database_url)
        weakref.finalize(app, store.close)
    ctx = ApiContext(
        settings=settings,
        store=store,
        rules_source=rules_source if rules_source is not None else RulesSource(settings.rules_file, settings.env),
        clock=clock or utc_now,
    )
    app.extensions[EXTENSION] = ctx
    _install_cors(app, settings.cors_origins)  # first: a browser's preflight carries no API key
    install_auth(app, settings, metrics_public=env_bool(settings.env, "METRICS_PUBLIC", False))
    install_dashboard_session(app, settings)
    health.install_metrics(app, ctx)
    _register_blueprints(app)
    _register_error_handlers(app, settings)
    app.after_request(_add_security_headers)
    _limit_streamed_bodies(app, settings.max_request_bytes)  # after auth: a stranger's body is never read
    return app


def _register_blueprints(app: Flask) -> None:
    api = Blueprint("api", __name__, url_prefix="/api")
    for area in (customers, orders, events, rules, campaigns, webhooks, openapi):
        api.register_blueprint(area.bp)
    app.register_blueprint(api)
    app.register_blueprint(health.bp)
    app.register_blueprint(dashboard.bp)


def _register_error_handlers(app: Flask, settings: Settings) -> None:
    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error: RequestEntityTooLarge) -> tuple[Response, int]:
        return jsonify(error=f"the body is larger than {settings.max_request_bytes} bytes"), 413

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        response = error.get_response()
        response.data = jsonify(error=error.description or error.name).get_data()
        response.content_type = "application/json"
        return response

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> tuple[Response, int]:
        log.exception("unhandled error answering a request")
        return jsonify(error="internal error; the server log has the details"), 500

    @app.errorhandler(StoreBusy)
    def store_busy(error: StoreBusy) -> tuple[Response, int]:
        # Another writer held the store past this request's wait. The write that failed stored nothing and every
        # API write is safe to repeat (orders are upserts), so the client retries; a second is plenty, as no
        # transaction holds the store for longer than a fraction of one.
        log.warning("store busy answering %s %s: %s", request.method, request.path, error)
        response = jsonify(error="the store is busy; retry shortly")
        response.headers["Retry-After"] = "1"
        return response, 503


def _install_cors(app: Flask, origins: tuple[str, ...]) -> None:
    """Browsers on CORS_ORIGINS (exact origins) may call /api with a key in a header. Off while it is unset.

    Never Access-Control-Allow-Credentials: the API authenticates by header, so no cookie is ever invited along.
    """
    if not origins:
        return
    allowed = frozenset(origins)

    def allowed_origin() -> str | None:
        origin = request.headers.get("Origin", "")
        on_api = request.path == "/api" or request.path.startswith("/api/")
        return origin if on_api and origin.lower() in allowed else None

    @app.before_request
    def answer_preflight() -> Response | None:
        origin = allowed_origin()
        if request.method != "OPTIONS" or origin is None or "Access-Control-Request-Method" not in request.headers:
            return None
        response = Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = CORS_ALLOWED_METHODS
        response.headers["Access-Control-Allow-Headers"] = CORS_ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE_SECONDS)
        return response

    @app.after_request
    def allow_origin(response: Response) -> Response:
        origin = allowed_origin()
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
        response.vary.add("Origin")  # the answer depends on the Origin header: caches must keep them apart
        return response


def _limit_streamed_bodies(app: Flask, limit: int) -> None:
    """413 for a chunked body (no Content-Length) over the limit too. Werkzeug stops reading such a body at the
    limit without saying so, and a cut-off body must never be taken for the whole one."""

    @app.before_request
    def refuse_oversized_stream() -> None:
        if request.content_length is None and len(request.get_data(cache=True)) >= limit:
            raise RequestEntityTooLarge()


def _add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
