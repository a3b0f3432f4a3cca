"""POST /api/orders: record one order or a batch (all or nothing), then re-evaluate the touched customers at once."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from flask import Blueprint, request
from werkzeug.exceptions import BadRequest

from worker.api.auth import write_access
from worker.api.context import context
from worker.evaluate import evaluate_customers
from worker.ingest import Intake, OrdersRejected, ingest_orders, parse_orders
from worker.serialize import customer_json

bp = Blueprint("orders", __name__)

BODY_SHAPES = "send one order object, a list of orders, or {\"orders\": [...]}"


@bp.post("/orders")
@write_access
def post_orders() -> dict[str, Any] | tuple[dict[str, Any], int]:
    items = _order_items()
    ctx = context()
    now = ctx.clock()
    classifier = ctx.classifier()  # one rules version for the evaluation and the answer
    try:
        orders = parse_orders(items, Intake.at(classifier.rules.orders, now))
    except OrdersRejected as exc:
        return {"error": f"{len(exc.errors)} of {len(items)} order(s) rejected; nothing was stored",
                "errors": exc.errors}, 400
    ingested = ingest_orders(ctx.store, orders, now, classifier.rules.orders)
    evaluated = evaluate_customers(ctx.store, classifier, ingested.contact_ids, now)
    return {"imported": ingested.inserted, "updated": ingested.updated, "unchanged": ingested.unchanged,
            "customers": [customer_json(record, current) for record, current in evaluated.customers],
            "transitions": evaluated.run.transitions}


def _order_items() -> list[Any]:
    """The orders in the body, in any of the shapes n8n and scripts send."""
    try:
        # Decimal keeps money exact: 0.1 + 0.2 must never become 0.30000000000000004 on the way in.
        body = json.loads(request.get_data(), parse_float=Decimal)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise BadRequest(f"the body is not valid JSON; {BODY_SHAPES}") from None
    if isinstance(body, dict) and isinstance(body.get("orders"), list) and len(body) == 1:
        body = body["orders"]
    items = [body] if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise BadRequest(f"the body must be JSON objects; {BODY_SHAPES}")
    if not items:
        raise BadRequest(f"no orders in the body; {BODY_SHAPES}")
    return items
