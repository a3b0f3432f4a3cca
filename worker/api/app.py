"""The Flask application factory: wires settings, store, rules and clock into blueprints, auth and JSON errors."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone

from flask import Blueprint, Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from worker.api import customers, dashboard, events, health, openapi, orders, rules
from worker.api.auth import install_auth
from worker.api.context import EXTENSION, ApiContext
from worker.api.dashboard import install_dashboard_session
from worker.rules_file import RulesSource
from worker.settings import Settings, env_bool
from worker.store import open_store
from worker.store.base import Store

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Every answer is computed for one moment and one key holder: nothing here may be cached.
    "Cache-Control": "no-store",
}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def create_app(settings: Settings, store: Store | None = None, rules_source: RulesSource | None = None,
               clock: Callable[[], datetime] | None = None) -> Flask:
    """The API for these settings; store, rules and clock can be passed in (tests), else built from settings."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # keep the documented field order of the original API
    ctx = ApiContext(
        settings=settings,
        store=store if store is not None else open_store(settings.database_url),
        rules_source=rules_source if rules_source is not None else RulesSource(settings.rules_file, settings.env),
        clock=clock or utc_now,
    )
    app.extensions[EXTENSION] = ctx
    install_auth(app, settings, metrics_public=env_bool(settings.env, "METRICS_PUBLIC", False))
    install_dashboard_session(app, settings)
    health.install_metrics(app, ctx)
    _register_blueprints(app)
    _register_error_handlers(app, settings)
    app.after_request(_add_security_headers)
    return app


def _register_blueprints(app: Flask) -> None:
    api = Blueprint("api", __name__, url_prefix="/api")
    for area in (customers, orders, events, rules, openapi):
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


def _add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
