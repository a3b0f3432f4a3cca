"""Operations endpoints: /healthz for load balancers and /metrics for Prometheus (the only prometheus_client user).

/healthz needs no key. /metrics needs an API key like /api unless METRICS_PUBLIC=true, for scrapers that
cannot send headers; it shows counts, never customer data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.api.context import ApiContext, context
from worker.prediction import saved_model, state_json
from worker.serialize import iso
from worker.store.base import EVENT_STATUSES, RunTotals

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)

REGISTRY_EXTENSION = "prometheus_registry"


@bp.get("/healthz")
def healthz() -> tuple[dict[str, Any], int]:
    ctx = context()
    rules = ctx.rules()  # first: it notices a changed file, which sets or clears the error read below
    source = ctx.rules_source
    # Delivery off for want of a webhook's environment variable still answers 200: the API works, events wait.
    try:
        problem = ctx.delivery_problem()
    except Exception:  # the store does not answer: said below by the ping, with this process's own view meanwhile
        problem = rules.delivery_problem
    body = {
        "status": "degraded" if source.error or problem else "ok",
        "rulesVersion": rules.rules_version,
        "rulesError": source.error,
        "rulesLoadedAt": iso(source.loaded_at),
        "database": "ok",
        "delivery": "disabled" if problem else "ok",
        "deliveryProblem": problem,
    }
    try:  # no prediction is not a health problem: said, never degrading the status
        body["prediction"] = state_json(saved_model(ctx.store), rules)
    except Exception:
        body["prediction"] = None
    try:
        ctx.store.ping()
    except Exception:
        log.exception("health check: the store does not answer")
        return {**body, "status": "unavailable", "database": "unavailable"}, 503
    return body, 200


@bp.get("/metrics")
def metrics() -> Response:
    registry = current_app.extensions[REGISTRY_EXTENSION]
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def install_metrics(app: Flask, ctx: ApiContext) -> None:
    """A registry per app (not the process-global one) so that tests and several apps never share counters.

    Where several server processes run, each counts its own requests; the store gauges agree everywhere.
    """
    registry = CollectorRegistry()
    registry.register(_StoreCollector(ctx))
    requests_total = Counter("segment_worker_http_requests", "HTTP requests answered, by route and status",
                             ["route", "method", "status"], registry=registry)
    app.extensions[REGISTRY_EXTENSION] = registry

    @app.after_request
    def count_request(response: Response) -> Response:
        # The rule, not the path, so that customer ids never become label values.
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        requests_total.labels(route, request.method, str(response.status_code)).inc()
        return response


class _StoreCollector(Collector):
    """Gauges read from the store at scrape time, so they are right whichever process did the work."""

    def __init__(self, ctx: ApiContext):
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        customers = GaugeMetricFamily("segment_worker_customers", "Customers per stored segment",
                                      labels=["segment"])
        stored = {row.segment: row.customers for row in self.ctx.store.segment_summary()}
        names = list(self.ctx.rules().segment_names)
        # Segments of earlier rules stay visible until the next evaluation moves their customers.
        for name in names + sorted(set(stored) - set(names)):
            customers.add_metric([name], stored.get(name, 0))
        yield customers
        counts = self.ctx.store.event_counts(self.ctx.clock())
        yield GaugeMetricFamily("segment_worker_events_pending", "Events waiting for delivery",
                                value=counts["pending"])
        yield GaugeMetricFamily("segment_worker_events_dead", "Events that gave up; replay them after a fix",
                                value=counts["dead"])
        yield GaugeMetricFamily("segment_worker_events_superseded",
                                "Events not sent because the move they announce was undone before their turn",
                                value=counts.get("superseded", 0))
        yield GaugeMetricFamily("segment_worker_events_oldest_pending_age_seconds",
                                "Age of the oldest event still waiting for delivery",
                                value=counts["oldest_pending_age_seconds"])
        by_status = GaugeMetricFamily("segment_worker_events", "Events in the outbox by delivery status",
                                      labels=["status"])
        for status in EVENT_STATUSES:
            by_status.add_metric([status], counts.get(status, 0))
        yield by_status
        yield from self._evaluations()
        yield from self._transitions()
        yield from self._attempts()
        yield GaugeMetricFamily("segment_worker_rules_refused",
                                "1 while a changed rules file is refused and the last good rules stay in force",
                                value=1 if self.ctx.rules_source.error else 0)
        yield GaugeMetricFamily("segment_worker_delivery_disabled",
                                "1 while a webhook's environment variable is unset: nothing is delivered, events wait",
                                value=1 if self.ctx.delivery_problem() else 0)

    def _evaluations(self) -> Iterator[Metric]:
        recorded = self.ctx.store.last_run() or RunTotals(at=None)
        yield CounterMetricFamily("segment_worker_evaluation_runs", "Evaluation runs (scheduled or `evaluate`)",
                                  value=float(recorded.runs))
        yield CounterMetricFamily("segment_worker_customers_evaluated", "Customers evaluated by those runs",
                                  value=float(recorded.customers))
        yield CounterMetricFamily("segment_worker_evaluation_errors",
                                  "Customers whose evaluation failed (they stay due and are tried again)",
                                  value=float(recorded.errors))
        at = recorded.at
        if at is not None:
            yield GaugeMetricFamily("segment_worker_last_evaluation_timestamp_seconds",
                                    "When the last evaluation run happened (Unix time)", value=at.timestamp())
            yield GaugeMetricFamily("segment_worker_last_evaluation_age_seconds",
                                    "Seconds since the last evaluation run; grows when the scheduler is stuck",
                                    value=max(0.0, (self.ctx.clock() - at).total_seconds()))

    def _transitions(self) -> Iterator[Metric]:
        yield CounterMetricFamily("segment_worker_transitions", "Segment transitions recorded",
                                  value=self.ctx.store.transition_count())

    def _attempts(self) -> Iterator[Metric]:
        attempts = CounterMetricFamily("segment_worker_delivery_attempts", "Webhook delivery attempts by outcome",
                                       labels=["outcome"])
        for outcome, count in sorted(self.ctx.store.attempt_counts().items()):
            attempts.add_metric([outcome], count)
        yield attempts
