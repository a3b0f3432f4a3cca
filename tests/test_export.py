"""CSV export: same customers as the API, streamed in constant memory, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
import tracemalloc
from datetime import timedelta

import pytest
from click.testing import CliRunner

from rules import Classifier
from tests.conftest import NOW
from worker.cli import main
from worker.evaluate import evaluate_due
from worker.export import COLUMNS, csv_chunks, export_filename, export_rows
from worker.store.base import Order


def seed(store, rules, customers: int) -> None:
    orders = []
    for n in range(customers):
        days = (n * 7) % 200  # a spread of Active and Dormant customers
        orders.append(Order(f"C-{n:06d}", f"O-{n}-1", NOW - timedelta(days=days + 40), 10_000 + n, None,
                            f"c{n}@example.com", f"Customer {n}"))
        orders.append(Order(f"C-{n:06d}", f"O-{n}-2", NOW - timedelta(days=days), 20_000, None, None, None))
    store.upsert_orders(orders, NOW)
    evaluate_due(store, rules, NOW)


def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_export_matches_the_api_list(store, rules, client, read_headers):
    seed(store, rules, 60)
    response = client.get("/api/customers.csv?segment=Dormant", headers=read_headers)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert 'filename="customers-dormant.csv"' in response.headers["Content-Disposition"]
    rows = parse(response.get_data(as_text=True))
    listed = client.get("/api/customers?segment=Dormant&limit=1000", headers=read_headers).get_json()["data"]
    assert [r["contactID"] for r in rows] == [c["contactID"] for c in listed]
    assert rows and all(r["segment"] == "Dormant" for r in rows)
    first, api_first = rows[0], listed[0]
    assert first["totalSpend"] == api_first["metrics"]["totalSpend"]
    assert first["lastOrderDate"] == api_first["metrics"]["lastOrderDate"]
    assert int(first["lastOrderDaysAgo"]) == api_first["metrics"]["lastOrderDaysAgo"]
    assert list(rows[0]) == list(COLUMNS)


def test_export_at_another_moment_classifies_at_that_moment(store, rules, client, read_headers):
    seed(store, rules, 30)
    later = (NOW + timedelta(days=365)).strftime("%Y-%m-%d")
    rows = parse(client.get(f"/api/customers.csv?segment=Dormant&asOf={later}", headers=read_headers)
                 .get_data(as_text=True))
    assert len(rows) == 30  # a year later nobody has ordered: everyone is Dormant


def test_export_rejects_an_unknown_segment(client, read_headers):
    response = client.get("/api/customers.csv?segment=Gold", headers=read_headers)
    assert response.status_code == 400 and "segment" in response.get_json()["error"]


def test_export_needs_a_key(client):
    assert client.get("/api/customers.csv").status_code == 401


def test_export_memory_does_not_grow_with_rows(store, rules):
    seed(store, rules, 12_000)
    classifier = Classifier(rules)

    def peak(limit_rows: int) -> tuple[int, int]:
        tracemalloc.start()
        written = 0
        for chunk in csv_chunks(r for i, r in enumerate(export_rows(store, classifier, NOW)) if i < limit_rows):
            written += chunk.count("\n")
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return written, top

    small_rows, small_peak = peak(2_500)
    large_rows, large_peak = peak(12_000)
    assert (small_rows, large_rows) == (2_501, 12_001)
    assert large_peak < small_peak * 2  # 4.8x the rows, nowhere near 4.8x the memory


def test_formula_like_names_stay_text(store, rules, client, read_headers):
    store.upsert_orders([Order("C-X", "X-1", NOW - timedelta(days=3), 1000, None, "=cmd@example.com",
                               "=HYPERLINK(\"http://evil\")")], NOW)
    rows = parse(client.get("/api/customers.csv", headers=read_headers).get_data(as_text=True))
    assert rows[0]["name"].startswith("'=") and rows[0]["email"].startswith("'=")


def test_cli_export_writes_the_file(store, rules, rules_file, database_url, env, tmp_path):
    seed(store, rules, 40)
    target = tmp_path / "dormant.csv"
    result = CliRunner().invoke(main, ["customers", "export", "--segment", "Dormant", "--as-of", NOW.isoformat(),
                                       "-o", str(target)],
                                env={**env, "DATABASE_URL": database_url, "RULES_FILE": str(rules_file)})
    assert result.exit_code == 0, result.output
    rows = parse(target.read_text(encoding="utf-8"))
    expected = [r["contactID"] for r in export_rows(store, Classifier(rules), NOW, "Dormant")]
    assert rows and [r["contactID"] for r in rows] == expected


def test_cli_export_refuses_an_unknown_segment(rules_file, database_url, env):
    result = CliRunner().invoke(main, ["customers", "export", "--segment", "Gold"],
                                env={**env, "DATABASE_URL": database_url, "RULES_FILE": str(rules_file)})
    assert result.exit_code == 2 and "not a segment" in result.output


def test_a_search_keeps_the_customers_the_store_search_finds(store, rules):
    seed(store, rules, 30)
    classifier = Classifier(rules)

    rows = list(export_rows(store, classifier, NOW, search="CUSTOMER 1"))

    assert [r["contactID"] for r in rows] == [r.contact_id for r in store.search_customers("CUSTOMER 1", 100)]
    assert len(rows) == 11  # Customer 1 and Customer 10 ... Customer 19


@pytest.mark.parametrize(("segment", "frequency", "name"), [
    (None, None, "customers-all.csv"), ("VIP", None, "customers-vip.csv"),
    ("Active", "One-time", "customers-active-one-time.csv"), ('Big "Spenders"\r\n', None, "customers-big-spenders.csv"),
    ("Über", None, "customers-ber.csv"), ("!!!", None, "customers-x.csv")])
def test_export_filenames_hold_only_letters_digits_and_dashes(segment, frequency, name):
    assert export_filename(segment, frequency) == name
