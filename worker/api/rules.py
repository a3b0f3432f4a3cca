"""POST /api/rules/preview: who would move, and which campaigns would fire, under a candidate rules file."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, request
from werkzeug.exceptions import BadRequest

from rules import RulesError, parse_rules
from worker import rules_preview as previews
from worker.api.auth import write_access
from worker.api.context import context
from worker.api.params import as_of_param
from worker.logs import masked_env
from worker.rules_preview import PreviewOutOfTime, preview_json, preview_store

bp = Blueprint("rules", __name__)

@bp.post("/rules/preview")
@write_access
def rules_preview() -> dict[str, Any] | tuple[dict[str, Any], int]:
    """The body is the candidate rules.yaml text (or JSON {"rules": "<yaml text>"}); nothing is written."""
    deadline = time.monotonic() + previews.WEB_PREVIEW_SECONDS
    ctx = context()
    try:
        # The candidate comes from a client: `${WEBHOOK_SECRET}` in it must not read the secret back out through an
        # error message or a segment name, so secret-named variables interpolate as '***'.
        candidate = parse_rules(_candidate_text(), source="candidate.yaml", env=masked_env(ctx.settings.env))
    except RulesError as exc:
        return {"error": "the candidate rules were refused", "errors": exc.problems}, 400
    current = ctx.rules()
    as_of = as_of_param() or ctx.clock()
    try:
        result = preview_store(ctx.store, current, candidate, as_of, deadline)
    except PreviewOutOfTime as exc:
        return {"error": f"the preview was stopped after {previews.WEB_PREVIEW_SECONDS:g} seconds "
                         f"({exc.customers} customers compared); run `python -m worker rules preview FILE` on "
                         "the server, which has no time limit"}, 503
    return {"data": preview_json(result, current, candidate, as_of)}


def _candidate_text() -> str:
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("rules"), str):
            raise BadRequest('send the rules.yaml text as the body, or JSON {"rules": "<yaml text>"}')
        return body["rules"]
    try:
        text = request.get_data(as_text=False).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the rules must be UTF-8 text") from None
    if not text.strip():
        raise BadRequest("send the candidate rules.yaml text as the request body")
    return text
