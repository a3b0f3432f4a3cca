"""Rules preview: the exact move matrix for a VIP threshold change, campaign counts, and proof nothing is written."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from rules import parse_rules
from tests.conftest import NOW, RULES_YAML
from worker.cli import main
from worker.evaluate import evaluate_due
from worker.rules_preview import preview_store

AS_OF = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
VIP_3000 = RULES_YAML.replace("totalSpend: {gt: 5000}", "totalSpend: {gt: 3000}")

# contact, total, days since first order, days since last order -> segment under $5,000 / under $3,000
BASE = [
    ("A-ACTIVE", "4000.00", 100, 10),    # Active -> VIP
    ("B-DORMANT", "3500.00", 300, 200),  # Dormant -> VIP
    ("C-ACTIVE", "2500.00", 100, 10),    # stays Active
    ("D-VIP", "6000.00", 100, 10),       # VIP either way
    ("E-EDGE", "3000.00", 100, 10),      # exactly 3000 is not over 3000: stays Active
    ("F-NEW", "3200.00", 5, 2),          # New -> VIP
    ("G-NEW", "3300.00", 8, 8),          # New -> VIP
]


@pytest.fixture
def base(store, rules, post_orders):
    for contact, total, first_days, last_days in BASE:
        orders = [{"contactID": contact, "orderReference": f"{contact}-1", "total": "0.00",
                   "orderDate": (NOW - timedelta(days=first_days)).isoformat()},
                  {"contactID": contact, "orderReference": f"{contact}-2", "total": total,
                   "orderDate": (NOW - timedelta(days=last_days)).isoformat()}]
        assert post_orders(orders).status_code == 200
    evaluate_due(store, rules, NOW)
    return store


def dump(database_url: str) -> list[str]:
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
        return list(conn.iterdump())


def test_vip_threshold_3000_moves_exactly_the_customers_between_3000_and_5000(base, rules, env):
    result = preview_store(base, rules, parse_rules(VIP_3000, env=env), NOW)
    assert result.customers == len(BASE)
    assert dict(result.moves) == {("Active", "VIP"): 1, ("Dormant", "VIP"): 1, ("New", "VIP"): 2}
    assert dict(result.campaigns) == {"vip": 4}
    assert result.samples[("New", "VIP")] == ["F-NEW", "G-NEW"]
    assert result.before["VIP"] == 1 and result.after["VIP"] == 5


def test_identical_rules_move_nobody(base, rules, env):
    result = preview_store(base, rules, parse_rules(RULES_YAML, env=env), NOW)
    assert result.moved == 0 and not result.campaigns


def test_preview_writes_nothing(base, rules, env, database_url):
    before = dump(database_url)
    preview_store(base, rules, parse_rules(VIP_3000, env=env), NOW + timedelta(days=400))
    assert dump(database_url) == before


def test_api_preview_answers_the_matrix_and_writes_nothing(base, client, admin_headers, database_url):
    before = dump(database_url)
    response = client.post(f"/api/rules/preview?asOf={AS_OF}", data=VIP_3000,
                           headers={**admin_headers, "Content-Type": "application/yaml"})
    assert response.status_code == 200
    data = response.get_json()["data"]
    assert {(m["from"], m["to"]): m["customers"] for m in data["moves"]} == {
        ("Active", "VIP"): 1, ("Dormant", "VIP"): 1, ("New", "VIP"): 2}
    assert data["campaigns"] == {"vip": 4} and data["moved"] == 4
    assert data["segments"]["VIP"] == {"before": 1, "after": 5}
    assert dump(database_url) == before


def test_api_preview_accepts_json_wrapped_rules(base, client, admin_headers):
    response = client.post(f"/api/rules/preview?asOf={AS_OF}", json={"rules": VIP_3000},
                           headers=admin_headers)
    assert response.status_code == 200 and response.get_json()["data"]["moved"] == 4


def test_api_preview_needs_a_write_key(base, client, read_headers):
    assert client.post("/api/rules/preview", data=VIP_3000, headers=read_headers).status_code == 403


def test_api_preview_refuses_broken_rules_naming_the_line(base, client, admin_headers):
    broken = VIP_3000.replace("{gt: 90}", "{gtt: 90}")
    response = client.post("/api/rules/preview", data=broken, headers=admin_headers)
    assert response.status_code == 400
    assert response.get_json()["errors"] == [
        "candidate.yaml:5 segments[1].when.lastOrderDaysAgo: unknown operator 'gtt' "
        "(use one of: gt, gte, lt, lte, eq)"]


def test_api_preview_refuses_an_empty_body(base, client, admin_headers):
    assert client.post("/api/rules/preview", data="", headers=admin_headers).status_code == 400


def test_cli_preview_prints_the_moves(base, rules_file, database_url, env, tmp_path: Path):
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(VIP_3000, encoding="utf-8")
    result = CliRunner().invoke(main, ["rules", "preview", str(candidate), "--as-of", NOW.isoformat()],
                                env={**env, "DATABASE_URL": database_url, "RULES_FILE": str(rules_file)})
    assert result.exit_code == 0, result.output
    assert "4 would move" in result.output
    assert "New -> VIP" in result.output and "campaign vip: 4 event(s)" in result.output
