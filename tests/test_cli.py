"""The command line: import-orders (all or nothing unless --skip-invalid), evaluate, customers show, rules check,
events, demo. Run through click's runner with the environment a user would set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import NOW, Runner
from worker.cli import main
from worker.store import open_store

AS_OF = NOW.isoformat()
CSV_OK = """contactID,orderReference,orderDate,total,email,name,status
C-1,ORD-1,2026-01-10T09:00:00Z,100.10,ann@example.com,Ann,
C-1,ORD-2,2026-02-10T09:00:00Z,0.20,,,
C-2,ORD-3,2025-06-01,6000.00,bo@example.com,Bo,
C-2,ORD-4,2025-06-02,10.00,,,cancelled
"""


@pytest.fixture
def cli(runner: Runner):
    return runner.invoke


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_import_csv_prints_counts_and_stores_aggregates(cli, tmp_path, database_url):
    result = cli("import-orders", str(write(tmp_path, "orders.csv", CSV_OK)))
    assert result.exit_code == 0, result.output
    assert "imported: 4\nupdated: 0\nunchanged: 0\nrejected: 0\ncustomers changed: 2" in result.output
    customer = open_store(database_url).get_customer("C-1")
    assert customer.facts.total_cents == 10_030 and customer.facts.order_count == 2


def test_import_twice_is_idempotent(cli, tmp_path, database_url):
    path = write(tmp_path, "orders.csv", CSV_OK)
    cli("import-orders", str(path))
    result = cli("import-orders", str(path))
    assert "imported: 0\nupdated: 0\nunchanged: 4" in result.output
    assert open_store(database_url).get_customer("C-2").facts.total_cents == 600_000


def test_import_jsonl(cli, tmp_path, database_url):
    lines = [{"contactID": "C-9", "orderReference": f"J-{n}", "orderDate": f"2026-02-0{n}", "total": "1.05"}
             for n in range(1, 4)]
    path = write(tmp_path, "orders.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n")
    result = cli("import-orders", str(path))
    assert result.exit_code == 0 and "imported: 3" in result.output
    assert open_store(database_url).get_customer("C-9").facts.total_cents == 315


def test_a_file_with_bad_lines_imports_nothing_and_names_them(cli, tmp_path, database_url):
    bad = CSV_OK + "C-3,ORD-5,not-a-date,5.00,,,\nC-4,ORD-6,2026-01-01,-3,,,\n"
    result = cli("import-orders", str(write(tmp_path, "orders.csv", bad)))
    assert result.exit_code == 1
    assert "orders.csv:6 (orderReference ORD-5): orderDate:" in result.output
    assert "orders.csv:7 (orderReference ORD-6): total: -3 is negative" in result.output
    assert "nothing was imported" in result.output
    assert open_store(database_url).count_customers() == 0


def test_skip_invalid_imports_the_valid_records(cli, tmp_path, database_url):
    bad = CSV_OK + "C-3,ORD-5,not-a-date,5.00,,,\n"
    result = cli("import-orders", "--skip-invalid", str(write(tmp_path, "orders.csv", bad)))
    assert result.exit_code == 0
    assert "imported: 4" in result.output and "rejected: 1" in result.output
    assert open_store(database_url).count_customers() == 2


@pytest.mark.parametrize(("name", "text", "message"), [
    ("empty.csv", "", "no order records found"),
    ("header-only.csv", "contactID,orderReference,orderDate,total\n", "no order records found"),
    ("no-columns.csv", "a,b\n1,2\n", "header lacks column(s) contactID"),
    ("orders.txt", "whatever", "unknown file type"),
])
def test_unusable_files_are_refused_clearly(cli, tmp_path, database_url, name, text, message):
    result = cli("import-orders", str(write(tmp_path, name, text)))
    assert result.exit_code == 1 and message in result.output
    assert open_store(database_url).count_customers() == 0


def test_evaluate_prints_what_it_did_and_show_prints_the_api_json(cli, tmp_path):
    cli("import-orders", str(write(tmp_path, "orders.csv", CSV_OK)))
    result = cli("evaluate", "--as-of", AS_OF)
    assert result.exit_code == 0
    assert "customers evaluated: 2" in result.output and "first run: baseline" in result.output
    shown = json.loads(cli("customers", "show", "C-1", "--as-of", AS_OF).output)
    assert shown["data"]["metrics"]["totalSpend"] == "100.30"
    assert shown["data"]["metrics"]["segment"] == "Active"
    assert shown["data"]["metrics"]["lastOrderDaysAgo"] == 11


def test_show_unknown_customer_fails(cli, store):
    result = cli("customers", "show", "nobody")
    assert result.exit_code == 1 and "customer 'nobody' not found" in result.output


def test_evaluate_refuses_a_bad_as_of(cli):
    result = cli("evaluate", "--as-of", "yesterday")
    assert result.exit_code == 2 and "--as-of" in result.output


def test_rules_check_accepts_good_and_names_the_line_of_bad(cli, tmp_path, rules_text):
    assert cli("rules", "check").exit_code == 0
    bad = write(tmp_path, "bad.yaml", rules_text.replace("{gt: 90}", "{gtt: 90}"))
    result = cli("rules", "check", str(bad))
    assert result.exit_code == 1
    assert "bad.yaml:5 segments[1].when.lastOrderDaysAgo: unknown operator 'gtt'" in result.output


def test_events_list_and_replay(cli, tmp_path, database_url):
    cli("evaluate", "--as-of", AS_OF)  # the baseline, on an empty base
    cli("import-orders", str(write(tmp_path, "orders.csv", CSV_OK)))
    assert "events queued: 1" in cli("evaluate", "--as-of", AS_OF).output  # vip for C-2; C-1 arrives Active
    listed = cli("events", "list").output
    assert "pending" in listed
    event_id = listed.split()[0]
    store = open_store(database_url)
    store.claim_due_events(NOW, 10, "test", 60)
    store.record_failed([event_id], NOW, 400, "HTTP 400", 5, None)
    assert event_id in cli("events", "list", "--status", "dead").output
    assert cli("events", "replay", event_id).exit_code == 0
    assert store.get_event(event_id).status == "pending"
    assert cli("events", "replay", "evt_nope").exit_code == 1


def test_events_replay_dead_requeues_every_dead_event_of_a_campaign(cli, tmp_path, database_url):
    csv = "contactID,orderReference,orderDate,total\n" + "".join(
        f"N-{n},ORD-N{n},2026-02-20T09:00:00Z,50.00\nV-{n},ORD-V{n},2025-12-01,6000.00\n" for n in range(3))
    cli("evaluate", "--as-of", AS_OF)
    cli("import-orders", str(write(tmp_path, "orders.csv", csv)))
    cli("evaluate", "--as-of", AS_OF)  # three welcome and three vip events
    store = open_store(database_url)
    claimed = store.claim_due_events(NOW, 10, "test", 60)
    store.record_failed([e.id for e in claimed], NOW, 410, "HTTP 410", 5, None)
    assert len(store.list_events("dead", 10)) == 6

    assert cli("events", "replay", "--dead", "--campaign", "vipp").exit_code == 2  # not a campaign: usage error
    assert cli("events", "replay").exit_code == 2
    result = cli("events", "replay", "--dead", "--campaign", "vip")

    assert result.exit_code == 0 and "3 dead event(s) of campaign vip queued" in result.output
    assert sorted(e.campaign for e in store.list_events("pending", 10)) == ["vip"] * 3
    assert "3 dead event(s) queued" in cli("events", "replay", "--dead").output
    assert store.list_events("dead", 10) == []
    store.close()


def test_demo_loads_a_realistic_sample_without_serving(tmp_path, rules_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    database_url = f"sqlite:///{tmp_path}/demo.db"
    result = CliRunner().invoke(main, ["demo", "--no-serve", "--customers", "300"],
                                env={"DATABASE_URL": database_url, "RULES_FILE": str(rules_file),
                                     "N8N_WEBHOOK_URL": "http://127.0.0.1:9/webhook", "WEBHOOK_SECRET": "",
                                     "API_KEYS": ""})
    assert result.exit_code == 0, result.output
    assert "API key: demo-" in result.output
    summary = {s.segment: s.customers for s in open_store(database_url).segment_summary()}
    assert set(summary) == {"VIP", "Dormant", "New", "Active"} and sum(summary.values()) == 300
    assert all(count >= 10 for count in summary.values())


def test_a_csv_with_an_unknown_column_is_refused_at_its_header(cli, tmp_path, database_url):
    text = CSV_OK.replace("status\n", "status,discount\n", 1)
    result = cli("import-orders", str(write(tmp_path, "orders.csv", text)))
    assert result.exit_code == 1 and "orders.csv:1: header has unknown column(s) discount" in result.output
    assert open_store(database_url).count_customers() == 0
