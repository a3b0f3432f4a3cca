"""The real thing: the API served by a separate process on a free port, driven over HTTP with requests.

Both entry points are covered: the Procfile's gunicorn command and `python -m worker api`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import ADMIN_KEY, READ_KEY, WEBHOOK_SECRET
from tests.server_process import commands, free_port, running_server


@pytest.fixture(params=["procfile-gunicorn", "cli-api"])
def server(request: pytest.FixtureRequest, tmp_path: Path, rules_file: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{tmp_path}/served.db",
        "RULES_FILE": str(rules_file),
        "API_KEYS": READ_KEY,
        "ADMIN_API_KEYS": ADMIN_KEY,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "N8N_WEBHOOK_URL": "http://127.0.0.1:9/webhook/segment-events",
    }
    with running_server(commands(port)[request.param], env, tmp_path / "server.log", port) as base:
        yield base


def test_the_served_api_takes_an_order_and_answers_for_the_customer(server):
    order = {"contactID": "C-1", "orderReference": "ORD-1", "orderDate": "2026-02-20T09:15:00Z",
             "total": "149.90", "email": "ann@example.com", "name": "Ann"}

    posted = requests.post(f"{server}/api/orders", json=[order], headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                           timeout=10)
    shown = requests.get(f"{server}/api/customers/C-1", headers={"X-API-Key": READ_KEY}, timeout=10)
    refused = requests.get(f"{server}/api/customers/C-1", timeout=10)

    assert posted.status_code == 200, posted.text
    assert posted.json()["imported"] == 1
    assert shown.status_code == 200
    customer = shown.json()["data"]
    assert (customer["contactID"], customer["email"]) == ("C-1", "ann@example.com")
    assert customer["metrics"]["totalSpend"] == "149.90"
    assert customer["metrics"]["lastOrderDate"] == "2026-02-20T09:15:00.000Z"
    assert refused.status_code == 401
    assert refused.headers["X-Content-Type-Options"] == "nosniff"
