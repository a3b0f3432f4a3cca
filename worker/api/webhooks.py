"""Webhook subscriptions over HTTP (admin key): what the n8n trigger node calls when its workflow is activated
(POST, which answers the subscription's own secret once) and deactivated (DELETE). A subscription receives every event
of its campaigns exactly as a rules.yaml webhook does, from the same outbox (worker/subscriptions.py)."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, request
from werkzeug.exceptions import BadRequest, NotFound

from rules.webhooks import url_problem
from worker.api.auth import write_access
from worker.api.context import context
from worker.rules_file import host_refusal
from worker.serialize import iso
from worker.store.base import Subscription
from worker.subscriptions import MAX_SUBSCRIPTIONS, new_subscription

bp = Blueprint("webhooks", __name__)

MAX_URL = 2000
MAX_DESCRIPTION = 200
SHAPE = 'send {"url": "https://...", "campaigns": ["welcome", ...], "description": "..."}'


@bp.post("/webhooks")
@write_access
def create_subscription() -> tuple[dict[str, Any], int]:
    ctx = context()
    url, campaigns, description = _subscription_fields(ctx.rules().campaigns)
    if len(ctx.store.subscriptions()) >= MAX_SUBSCRIPTIONS:
        raise BadRequest(f"there are already {MAX_SUBSCRIPTIONS} subscriptions; delete one first")
    subscription = new_subscription(url, campaigns, description, ctx.clock())
    ctx.store.add_subscription(subscription)
    return {**subscription_json(subscription), "secret": subscription.secret}, 201


@bp.get("/webhooks")
@write_access
def list_subscriptions() -> dict[str, Any]:
    data = [subscription_json(s) for s in context().store.subscriptions()]
    return {"data": data, "count": len(data)}


@bp.delete("/webhooks/<subscription_id>")
@write_access
def delete_subscription(subscription_id: str) -> tuple[str, int]:
    if not context().store.remove_subscription(subscription_id):
        raise NotFound(f"no webhook subscription '{subscription_id}'")
    return "", 204


def subscription_json(subscription: Subscription) -> dict[str, Any]:
    """A subscription as the API shows it: never its secret, which only the answer to its creation carries."""
    return {"id": subscription.id, "url": subscription.url, "campaigns": list(subscription.campaigns),
            "description": subscription.description, "createdAt": iso(subscription.created_at)}


def _subscription_fields(known: Any) -> tuple[str, list[str], str]:
    try:
        body = json.loads(request.get_data())
    except (ValueError, RecursionError):
        raise BadRequest(f"the body is not valid JSON; {SHAPE}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object; {SHAPE}")
    unknown = sorted(set(body) - {"url", "campaigns", "description"})
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; {SHAPE}")
    url, campaigns, description = body.get("url"), body.get("campaigns"), body.get("description", "")
    if not isinstance(url, str) or len(url) > MAX_URL:
        raise BadRequest(f"url: must be an http:// or https:// URL of at most {MAX_URL} characters")
    problem = url_problem(url) or ("may not contain spaces or line breaks" if any(c in url for c in "\r\n\0 ")
                                   else host_refusal(url, context().settings.webhook_allowed_hosts))
    if problem is not None:
        raise BadRequest(f"url: {problem}")
    if not isinstance(campaigns, list) or not campaigns or not all(isinstance(c, str) for c in campaigns):
        raise BadRequest(f"campaigns: must be a non-empty list of campaign names (GET /api/campaigns lists them: "
                         f"{', '.join(known) or 'none in the rules'})")
    missing = [c for c in campaigns if c not in known]
    if missing:
        raise BadRequest(f"campaigns: {', '.join(repr(c) for c in missing)} not in the rules; the campaigns are "
                         f"{', '.join(known) or 'none'}")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise BadRequest(f"description: must be text of at most {MAX_DESCRIPTION} characters")
    return url, campaigns, description
