"""The banners at the top of every signed-in page: the rules file is refused, delivery is disabled (a webhook's
environment variable is unset), or webhook delivery is failing or behind."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import g

from worker.api.context import ApiContext, context

log = logging.getLogger(__name__)

# Delivery runs every few seconds and the default retry schedule tries again after 5, 30, 120 and 600 s: an event
# still pending after ten minutes has failed four attempts in a row, or no worker is delivering at all. A backlog
# paced at max_per_second shows here too, rightly: its customers are waiting for their campaign either way.
DELIVERY_BEHIND_SECONDS = 600


@dataclass(frozen=True)
class Banners:
    """What the top of every signed-in page warns about; the defaults mean all is well."""

    rules_error: str | None = None  # the same text as /healthz's rulesError
    rules_file: str = ""
    dead: int = 0
    waited_seconds: float | None = None  # the oldest pending event's age, once past DELIVERY_BEHIND_SECONDS
    behind_after_seconds: float = DELIVERY_BEHIND_SECONDS
    delivery_problem: str | None = None  # rules.delivery_problem: why nothing is delivered, the same as /healthz's


def banners() -> Banners:
    """This request's banners, worked out once (a page and its error page share them); none for the signed out."""
    if g.get("access") is None:
        return Banners()
    if "banners" not in g:
        g.banners = _current_banners()
    return g.banners


def _current_banners() -> Banners:
    ctx = context()
    ctx.rules()  # first: it notices a changed file, which sets or clears the error read below
    source = ctx.rules_source
    try:
        counts = event_counts()
    except Exception:
        # The page still helps without its delivery banner; /healthz reports a store that does not answer.
        log.exception("dashboard: cannot read the event queue for the delivery banner")
        return Banners(source.error, str(source.path), delivery_problem=_delivery_problem(ctx))
    oldest = float(counts.get("oldest_pending_age_seconds", 0.0))
    return Banners(source.error, str(source.path), int(counts.get("dead", 0)),
                   oldest if oldest > DELIVERY_BEHIND_SECONDS else None, delivery_problem=_delivery_problem(ctx))


def _delivery_problem(ctx: ApiContext) -> str | None:
    try:
        return ctx.delivery_problem()
    except Exception:
        log.exception("dashboard: cannot read the delivery state")
        return ctx.rules().delivery_problem


def event_counts() -> dict[str, float]:
    """The event queue's counts, read from the store once per request, so a page and its banner agree."""
    if "event_counts" not in g:
        ctx = context()
        g.event_counts = ctx.store.event_counts(ctx.clock())
    return g.event_counts
