"""POST /api/rules/preview: who would move, and which campaigns would fire, under a candidate rules file."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, request
from werkzeug.exceptions import BadRequest

from rules import CustomerFacts, RulesError, parse_rules
from rules.preview import preview
from worker.api.auth import write_access
from worker.api.context import context
from worker.api.params import as_of_param
from worker.logs import masked_env
from worker.rules_preview import preview_json
from worker.store.base import Store

bp = Blueprint("rules", __name__)

# A request that holds a server thread longer than this is one a proxy has likely given up on; the CLI's
# `rules preview` has no such limit. Parsing is not interrupted, but the size and nesting limits of parse_rules
# keep it to a few seconds; reading the customers is stopped between batches.
PREVIEW_SECONDS = 10.0
_BATCH = 5000


class _OutOfTime(Exception):
    def __init__(self, customers: int):
        self.customers = customers
        super().__init__(f"stopped after {customers} customers")


@bp.post("/rules/preview")
@write_access
def rules_preview() -> dict[str, Any] | tuple[dict[str, Any], int]:
    """The body is the candidate rules.yaml text (or JSON {"rules": "<yaml text>"}); nothing is written."""
    deadline = time.monotonic() + PREVIEW_SECONDS
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
        result = preview(_customers_until(ctx.store, deadline), current, candidate, as_of)
    except _OutOfTime as exc:
        return {"error": f"the preview was stopped after {PREVIEW_SECONDS:g} seconds ({exc.customers} customers "
                         "compared); run `python -m worker rules preview FILE` on the server, which has no time "
                         "limit"}, 503
    return {"data": preview_json(result, current, candidate, as_of)}


def _customers_until(store: Store, deadline: float) -> Iterator[tuple[str, CustomerFacts]]:
    """Every customer's facts, as worker.rules_preview reads them, raising _OutOfTime once `deadline` has passed."""
    customers = 0
    for batch in store.iter_customers(batch_size=_BATCH):
        if time.monotonic() > deadline:
            raise _OutOfTime(customers)
        for record in batch:
            yield record.contact_id, record.facts
        customers += len(batch)


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
