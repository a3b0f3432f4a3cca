"""API fuzzing with schemathesis over /api/openapi.json, on the WSGI app (no server): for any input no 5xx, and
every answer matches the documented status codes, content type and schema. Examples are bounded for CI."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ADMIN_KEY, NOW, build_orders
from worker.api import create_app

EXAMPLES = 30  # per operation and generation mode (valid and invalid inputs): about 700 requests, 15 s
FUZZED: Counter = Counter()  # (operation, status) -> requests
CHECKS = [schemathesis.checks.not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module", autouse=True)
def report_counts() -> Iterator[None]:
    yield
    statuses = Counter()
    for (_, status), count in FUZZED.items():
        statuses[status] += count
    tried = {op for op, _ in FUZZED}  # negative mode also tries methods a path does not declare (405)
    print(f"\nfuzzed {sum(FUZZED.values())} requests over {len(tried)} method/path pairs; "
          f"answers by status: {dict(sorted(statuses.items()))}; 5xx: {sum(statuses[s] for s in statuses if s >= 500)}")


@pytest.fixture
def fuzz_app(settings, store, rules_source, clock):
    app = create_app(settings, store=store, rules_source=rules_source, clock=clock)
    # Something to find: customers and events, so that reads also take the paths with data.
    orders = build_orders("C-1", 3, first=NOW - timedelta(days=20)) + build_orders("C-2", 1, total="6000.00")
    stored = app.test_client().post("/api/orders", json=orders, headers={"X-API-Key": ADMIN_KEY})
    assert stored.status_code == 200, stored.get_json()
    return app


@pytest.fixture
def api_schema(fuzz_app):
    return schemathesis.openapi.from_wsgi("/api/openapi.json", fuzz_app, headers={"X-API-Key": ADMIN_KEY})


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_api_fail_or_break_its_schema(case) -> None:
    response = case.call(headers={"X-API-Key": ADMIN_KEY})
    FUZZED[(f"{case.method} {case.operation.path}", response.status_code)] += 1
    case.validate_response(response, checks=CHECKS, headers={"X-API-Key": ADMIN_KEY})
