"""The event outbox over HTTP: list by status, inspect one event with its delivery attempts, replay it."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from werkzeug.exceptions import NotFound

from worker.api.auth import write_access
from worker.api.context import context
from worker.api.params import choice_param, cursor_param, encode_cursor, limit_param
from worker.serialize import event_json, iso
from worker.store.base import EVENT_STATUSES, Attempt, EventRecord

bp = Blueprint("events", __name__)

STATUSES = EVENT_STATUSES


@bp.get("/events")
def list_events() -> dict[str, Any]:
    status = choice_param("status", STATUSES)
    limit, after = limit_param(), cursor_param()
    events = context().store.list_events(status, limit, after)
    next_cursor = encode_cursor(events[-1].id) if len(events) == limit else None
    return {"data": [event_json(e) for e in events], "count": len(events), "nextCursor": next_cursor}


@bp.get("/events/<event_id>")
def get_event(event_id: str) -> dict[str, Any]:
    store = context().store
    event = _event_or_404(event_id)
    return {"data": event_json(event), "attempts": [attempt_json(a) for a in store.attempts_for(event_id)]}


@bp.post("/events/<event_id>/replay")
@write_access
def replay_event(event_id: str) -> tuple[dict[str, Any], int]:
    ctx = context()
    if not ctx.store.replay_event(event_id, ctx.clock()):
        raise NotFound(f"event '{event_id}' not found")
    return {"data": event_json(_event_or_404(event_id))}, 202


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
