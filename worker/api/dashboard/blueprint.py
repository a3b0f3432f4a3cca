"""The dashboard's blueprint and what every one of its answers gets: the Content-Security-Policy and, for an error,
the HTML error page (never the API's JSON)."""

from __future__ import annotations

from flask import Blueprint, Response, render_template
from werkzeug.exceptions import HTTPException

# The templates stay beside the app's static files, in worker/api/templates/dashboard/.
bp = Blueprint("dashboard", __name__, template_folder="../templates")

# Everything comes from this origin: no inline script or style, no CDN, no framing, forms post only here.
CONTENT_SECURITY_POLICY = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"


@bp.after_request
def add_content_security_policy(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


@bp.errorhandler(HTTPException)
def error_page(error: HTTPException) -> tuple[str, int]:
    return render_template("dashboard/error.html", error=error), error.code or 500
