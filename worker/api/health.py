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
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.api.context import ApiContext, context
from worker.serialize import iso

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)

REGISTRY_EXTENSION = "prometheus_registry"
# Any read proves the store answers; a key that is never written is the cheapest read there is.
_PROBE_KEY = "healthz-probe"


@bp.get("/healthz")
def healthz() -> tuple[dict[str, Any], int]:
    ctx = context()
    rules = ctx.rules()  # first: it notices a changed file, which sets or clears the error read below
    source = ctx.rules_source
    body = {
        "status": "degraded" if source.error else "ok",
        "rulesVersion": rules.rules_version,
        "rulesError": source.error,
        "rulesLoadedAt": iso(source.loaded_at),
        "database": "ok",
    }
    try:
        ctx.store.get_meta(_PROBE_KEY)
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

    Under several gunicorn workers each process counts its own requests; the store gauges agree everywhere.
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
        names = [segment.name for segment in self.ctx.rules().segments]
        # Segments of earlier rules stay visible until the next evaluation moves their customers.
        for name in names + sorted(set(stored) - set(names)):
            customers.add_metric([name], stored.get(name, 0))
        yield customers
        counts = self.ctx.store.event_counts(self.ctx.clock())
        yield GaugeMetricFamily("segment_worker_events_pending", "Events waiting for delivery",
                                value=counts["pending"])
        yield GaugeMetricFamily("segment_worker_events_dead", "Events that gave up; replay them after a fix",
                                value=counts["dead"])
        yield GaugeMetricFamily("segment_worker_events_oldest_pending_age_seconds",
                                "Age of the oldest event still waiting for delivery",
                                value=counts["oldest_pending_age_seconds"])
