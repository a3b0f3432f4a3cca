"""Shared fixtures: rules in tmp_path, a fresh SQLite store, a fixed clock, the Flask app and client, a CLI
`runner`, API keys, builders for order JSON as n8n sends it, and `backend`: each store backend in turn (SQLite,
DynamoDB on a local moto server started once per session) for the suites every backend must pass."""

from __future__ import annotations

import base64
import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from rules import Rules
from tests.dashboard_helpers import sign_in
from tests.factories import rules_text
from tests.receiver import Receiver
from worker.api import create_app
from worker.cli import main
from worker.delivery import Senders
from worker.rules_file import RulesSource
from worker.serialize import iso
from worker.settings import Settings
from worker.store import open_store
from worker.store.base import Store

NOW = datetime(2026, 2, 21, 12, 0, tzinfo=timezone.utc)
# Signs the events of the outbox suites (tests/outbox_helpers.py re-exports it as SECRET).
OUTBOX_SECRET = "whsec_" + base64.b64encode(b"outbox-suite-secret-0123456789ab").decode()
READ_KEY = "read-key-0123456789ab"
ADMIN_KEY = "admin-key-0123456789"
WEBHOOK_SECRET = "test-webhook-secret"

# The seed defaults of DESIGN.md, kept apart from rules.yaml so that tests do not move when marketing tunes it.
RULES_YAML = rules_text()


@dataclass
class FixedClock:
    """The API's clock in tests: stands still until a test moves it."""

    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def make_order(contact_id: str, reference: str, order_date: datetime | str, total: str = "100.00",
               **fields: Any) -> dict[str, Any]:
    """One order as the API receives it; extra fields (email, name, status, or junk) pass through."""
    when = iso(order_date) if isinstance(order_date, datetime) else order_date
    return {"contactID": contact_id, "orderReference": reference, "orderDate": when, "total": total, **fields}


def build_orders(contact_id: str, count: int = 1, first: datetime = NOW - timedelta(days=10),
                 every_days: float = 7, total: str = "100.00", **fields: Any) -> list[dict[str, Any]]:
    """`count` orders of one customer, `every_days` apart from `first`, references '<contactID>-ORD-<n>'."""
    return [make_order(contact_id, f"{contact_id}-ORD-{n}", first + timedelta(days=every_days * n), total,
                       **fields) for n in range(count)]


@pytest.fixture
def env() -> dict[str, str]:
    return {"WEBHOOK_SECRET": WEBHOOK_SECRET, "N8N_WEBHOOK_URL": "http://127.0.0.1:9/webhook/segment-events"}


@pytest.fixture
def rules_text() -> str:
    return RULES_YAML


@pytest.fixture
def rules_file(tmp_path: Path, rules_text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_text, encoding="utf-8")
    return path


@pytest.fixture
def rules_source(rules_file: Path, env: dict[str, str]) -> RulesSource:
    return RulesSource(rules_file, env)


@pytest.fixture
def rules(rules_source: RulesSource) -> Rules:
    return rules_source.current()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/segments.db"


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    yield opened
    opened.close()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def settings(database_url: str, rules_file: Path, env: dict[str, str]) -> Settings:
    return Settings(database_url=database_url, rules_file=str(rules_file), api_keys=(READ_KEY,),
                    admin_api_keys=(ADMIN_KEY,), env=env)


class Runner:
    """`python -m worker ...` through click's runner, with the test's database, rules and environment."""

    def __init__(self, environment: dict[str, str]):
        self.environment = environment
        self._runner = CliRunner()

    def invoke(self, *args: str) -> Result:
        return self._runner.invoke(main, list(args), env=self.environment, catch_exceptions=False)


@pytest.fixture
def runner(rules_file: Path, database_url: str, env: dict[str, str]) -> Runner:
    return Runner({**env, "DATABASE_URL": database_url, "RULES_FILE": str(rules_file)})


@pytest.fixture
def app(settings: Settings, store: Store, rules_source: RulesSource, clock: FixedClock) -> Flask:
    return create_app(settings, store=store, rules_source=rules_source, clock=clock)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def admin(client: FlaskClient) -> FlaskClient:
    assert sign_in(client, ADMIN_KEY).status_code == 302
    return client


@pytest.fixture
def reader(client: FlaskClient) -> FlaskClient:
    assert sign_in(client, READ_KEY).status_code == 302
    return client


@pytest.fixture
def read_headers() -> dict[str, str]:
    return {"X-API-Key": READ_KEY}


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def make_orders() -> Callable[..., list[dict[str, Any]]]:
    return build_orders


@pytest.fixture
def post_orders(client: FlaskClient, admin_headers: dict[str, str]) -> Callable[[Any], TestResponse]:
    """POST a body (one order, a list, or anything) to /api/orders with a write key."""

    def post(body: Any) -> TestResponse:
        return client.post("/api/orders", json=body, headers=admin_headers)

    return post


# --- every store backend ------------------------------------------------------------------------------------

@dataclass
class Backend:
    """One store backend under test: the URL of this test's store, and how to open it or an empty sibling."""

    name: str
    url: str
    new_url: Callable[[], str]

    def open(self) -> Store:
        """Another handle on the same data (a second connection, or a second process's view)."""
        return open_store(self.url)

    def fresh(self) -> Store:
        """A new, empty store of the same kind."""
        return open_store(self.new_url())


@pytest.fixture(scope="session")
def dynamodb_endpoint() -> Iterator[str]:
    """A DynamoDB-compatible server (moto) on a free 127.0.0.1 port for the session; dummy credentials for boto3."""
    from tests.dynamo_server import CLIENT_ENV, DynamoServer

    saved = {name: os.environ.get(name) for name in CLIENT_ENV}
    os.environ.update(CLIENT_ENV)
    server = DynamoServer()
    try:
        yield server.start()
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# Prefixes of the tables made by new_dynamodb_url that the running test has not dropped yet.
_MADE_PREFIXES: list[str] = []


def new_dynamodb_url(endpoint: str) -> str:
    """Tables of their own (a fresh prefix) on the test server, made as `init-db` makes them; dropped after the
    test by `drop_dynamodb_tables` (the server slows down as tables pile up: 0.1 s to make a set on an empty server,
    1.5 s after a few hundred)."""
    from tests.dynamo_server import REGION
    from worker.store.dynamodb import DynamoConfig, create_tables

    prefix = f"t{uuid.uuid4().hex[:12]}_"
    create_tables(DynamoConfig(REGION, endpoint, prefix))
    _MADE_PREFIXES.append(prefix)
    return f"dynamodb://?region={REGION}&endpoint_url={endpoint}&table_prefix={prefix}"


@pytest.fixture(autouse=True)
def drop_dynamodb_tables(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not _MADE_PREFIXES:
        return
    from tests.dynamo_server import REGION
    from worker.store.dynamodb import TABLES, DynamoConfig, make_client

    endpoint = request.getfixturevalue("dynamodb_endpoint")
    client = make_client(REGION, endpoint)
    while _MADE_PREFIXES:
        config = DynamoConfig(REGION, endpoint, _MADE_PREFIXES.pop())
        for design in TABLES:
            try:
                client.delete_table(TableName=config.table(design.noun))
            except client.exceptions.ResourceNotFoundException:
                pass


@pytest.fixture(params=["sqlite", "dynamodb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        numbers = itertools.count()
        return Backend("sqlite", f"sqlite:///{tmp_path}/segments.db",
                       lambda: f"sqlite:///{tmp_path}/fresh-{next(numbers)}/segments.db")
    endpoint = request.getfixturevalue("dynamodb_endpoint")
    return Backend("dynamodb", new_dynamodb_url(endpoint), lambda: new_dynamodb_url(endpoint))


# --- long versions of the reliability tests -------------------------------------------------------------------

def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the long versions of the reliability tests (marked slow): 50 chaos rounds ...")
    parser.addoption("--run-n8n", action="store_true", default=False,
                     help="also run the tests against a real n8n (marked n8n; ../shared/n8n-peer installs it, ~5 min)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--run-n8n"):  # not collected at all without the option: a real n8n is opt-in
        live = [item for item in items if "n8n" in item.keywords]
        if live:
            config.hook.pytest_deselected(items=live)
            items[:] = [item for item in items if "n8n" not in item.keywords]
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long version: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on 127.0.0.1 that checks OUTBOX_SECRET's signatures."""
    with Receiver(OUTBOX_SECRET) as running:
        yield running


@pytest.fixture
def senders(receiver: Receiver) -> Iterator[Senders]:
    # Depends on the receiver so its keep-alive connections close before the receiver stops.
    built = Senders()
    yield built
    built.close()
