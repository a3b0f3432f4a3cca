"""The event outbox over HTTP: list by status, inspect one event with its delivery attempts, replay it, and
replay dead events in bulk."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, request
from werkzeug.exceptions import BadRequest, Conflict, NotFound

from worker.api.auth import write_access
from worker.api.context import context
from worker.api.params import choice_param, cursor_param, encode_cursor, limit_param
from worker.serialize import event_json, iso
from worker.store.base import (
    BULK_REPLAY_LIMIT,
    DEAD,
    EVENT_STATUSES,
    HELD_OUT,
    HELD_OUT_NOT_REPLAYED,
    Attempt,
    EventRecord,
)

log = logging.getLogger(__name__)

bp = Blueprint("events", __name__)

STATUSES = EVENT_STATUSES
MAX_CAMPAIGN_CHARS = 200
REPLAY_FILTERS = ("status", "campaign", "limit")
BULK_REPLAY_EXAMPLE = '{"status": "dead", "campaign": "vip"}'


@bp.get("/events")
def list_events() -> dict[str, Any]:
    status = choice_param("status", STATUSES)
    limit, after = limit_param(), cursor_param()
    store = context().store
    events = store.list_events(status, limit, after)
    next_cursor = encode_cursor(events[-1].id) if len(events) == limit else None
    total = sum(store.count_events(s) for s in ([status] if status else STATUSES))
    return {"data": [event_json(e) for e in events], "count": len(events), "total": total, "nextCursor": next_cursor}


@bp.post("/events/replay")
@write_access
def replay_dead_events() -> tuple[dict[str, Any], int]:
    """Dead events (of one campaign, or all) pending again, at most `limit` per call; `remaining` says how many
    matching dead events wait for the next call."""
    campaign, limit = bulk_replay_filters()
    ctx = context()
    queued = ctx.store.replay_dead_events(ctx.clock(), campaign, limit)
    remaining = ctx.store.count_events(DEAD, campaign)
    log.info("bulk replay: %d dead event(s) of %s queued again, %d still dead", queued,
             f"campaign {campaign}" if campaign else "every campaign", remaining)
    return {"queued": queued, "remaining": remaining, "status": DEAD, "campaign": campaign}, 202


@bp.get("/events/<event_id>")
def get_event(event_id: str) -> dict[str, Any]:
    store = context().store
    event = _event_or_404(event_id)
    return {"data": event_json(event), "attempts": [attempt_json(a) for a in store.attempts_for(event_id)]}


@bp.post("/events/<event_id>/replay")
@write_access
def replay_event(event_id: str) -> tuple[dict[str, Any], int]:
    ctx = context()
    if _event_or_404(event_id).status == HELD_OUT:
        raise Conflict(f"event '{event_id}' is not replayed: {HELD_OUT_NOT_REPLAYED}")
    if not ctx.store.replay_event(event_id, ctx.clock()):
        raise NotFound(f"event '{event_id}' not found")
    return {"data": event_json(_event_or_404(event_id))}, 202


def bulk_replay_filters() -> tuple[str | None, int]:
    """The campaign (None: every campaign) and the limit of a bulk replay from its JSON body; 400 for anything
    else. An empty body replays every dead event."""
    raw = request.get_data(cache=True)
    body = request.get_json(force=True, silent=True) if raw.strip() else {}
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object such as {BULK_REPLAY_EXAMPLE}")
    unknown = sorted(set(body) - set(REPLAY_FILTERS))
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; a bulk replay takes {', '.join(REPLAY_FILTERS)}")
    status = body.get("status", DEAD)
    if status != DEAD:
        raise BadRequest(f"status: a bulk replay takes dead events only, got {status!r}. A superseded event is sent "
                         "without its re-check when replayed, which is decided one event at a time: "
                         "POST /api/events/<id>/replay")
    campaign = body.get("campaign")
    if campaign is not None and (not isinstance(campaign, str) or not 1 <= len(campaign) <= MAX_CAMPAIGN_CHARS
                                 or not campaign.isprintable()):
        raise BadRequest(f"campaign: a campaign name of 1 to {MAX_CAMPAIGN_CHARS} characters, or null for all")
    limit = body.get("limit", BULK_REPLAY_LIMIT)
    if type(limit) is not int or not 1 <= limit <= BULK_REPLAY_LIMIT:
        raise BadRequest(f"limit: a whole number from 1 to {BULK_REPLAY_LIMIT}, got {limit!r}")
    return campaign, limit


def attempt_json(attempt: Attempt) -> dict[str, Any]:
    return {
        "attemptedAt": iso(attempt.attempted_at),
        "status": attempt.status,
        "error": attempt.error,
        "durationMs": attempt.duration_ms,
    }


def _event_or_404(event_id: str) -> EventRecord:
    event = context().store.get_event(event_id)
    if event is None:
        raise NotFound(f"event '{event_id}' not found")
    return event
