"""Input at the edges of what people and programs send: lone surrogates from JSON escapes (API and JSON Lines),
Excel's "CSV UTF-8" (a byte order mark) and its semicolon-separated CSV, and imports that end up storing nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import NOW, make_order
from worker.cli import main
from worker.store import open_store

SURROGATE = "contains characters that cannot be stored (a lone surrogate)"
HEADER = "contactID,orderReference,orderDate,total,email,name,status\n"
ROWS = "C-1,ORD-1,2026-01-10T09:00:00Z,100.10,ann@example.com,Ann,\nC-2,ORD-2,2025-06-01,6000.00,,Bo,\n"


@pytest.fixture
def cli(rules_file: Path, database_url: str, env: dict[str, str]):
    environment = {**env, "DATABASE_URL": database_url, "RULES_FILE": str(rules_file)}

    def run(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=environment, catch_exceptions=False)

    return run


def jsonl_line(contact_id: str, reference: str, **fields: str) -> str:
    """One JSON Lines record as a program writes it: anything outside ASCII as a \\u escape."""
    return json.dumps({"contactID": contact_id, "orderReference": reference, "orderDate": "2026-02-01",
                       "total": "1.50", **fields}) + "\n"


# --- lone surrogates ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["contactID", "name", "email", "status"])
def test_a_lone_surrogate_sent_to_the_api_is_a_400_naming_record_and_field(client, admin_headers, read_headers,
                                                                              field):
    good = make_order("C-1", "ORD-1", NOW, "10.00")
    bad = make_order("C-2", "ORD-2", NOW, "10.00", **{field: "Ann \ud800"})
    body = json.dumps([good, bad])  # ensure_ascii: the surrogate travels as the escape \ud800, as n8n sends it
    assert "\\ud800" in body

    response = client.post("/api/orders", data=body, content_type="application/json", headers=admin_headers)

    assert response.status_code == 400
    assert response.get_json()["errors"] == [f"record 1 (orderReference ORD-2): {field}: {SURROGATE}"]
    assert client.get("/api/customers/C-1", headers=read_headers).status_code == 404


def test_a_lone_surrogate_in_the_order_reference_is_named_escaped(client, admin_headers):
    body = json.dumps([make_order("C-1", "ORD-\udc80", NOW, "10.00")])

    response = client.post("/api/orders", data=body, content_type="application/json", headers=admin_headers)

    assert response.status_code == 400
    assert response.get_json()["errors"] == [f"record 0 (orderReference ORD-\\udc80): orderReference: {SURROGATE}"]


def test_a_jsonl_line_with_a_lone_surrogate_is_named_and_refuses_the_file(cli, tmp_path, database_url):
    path = tmp_path / "orders.jsonl"
    path.write_text(jsonl_line("C-1", "J-1") + jsonl_line("C-\ud800", "J-2") + jsonl_line("C-3", "J-3"),
                    encoding="utf-8")

    result = cli("import-orders", str(path))

    assert result.exit_code == 1
    assert f"orders.jsonl:2 (orderReference J-2): contactID: {SURROGATE}" in result.output
    assert "nothing was imported" in result.output
    assert open_store(database_url).count_customers() == 0


def test_skip_invalid_imports_the_rest_of_a_jsonl_file_around_a_lone_surrogate(cli, tmp_path, database_url):
    path = tmp_path / "orders.jsonl"
    path.write_text(jsonl_line("C-1", "J-1") + jsonl_line("C-2", "J-2", name="\udfff Bo") + jsonl_line("C-3", "J-3"),
                    encoding="utf-8")

    result = cli("import-orders", "--skip-invalid", str(path))

    assert result.exit_code == 0, result.output
    assert "imported: 2" in result.output and "rejected: 1" in result.output
    assert f"orders.jsonl:2 (orderReference J-2): name: {SURROGATE}" in result.output
    store = open_store(database_url)
    assert store.get_customer("C-2") is None
    assert [store.get_customer(c).facts.total_cents for c in ("C-1", "C-3")] == [150, 150]


# --- what Excel saves ---------------------------------------------------------------------------------------

def test_an_excel_csv_utf8_file_with_a_byte_order_mark_is_read_as_normal(cli, tmp_path, database_url):
    path = tmp_path / "orders.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + ROWS).replace("\n", "\r\n").encode("utf-8"))

    result = cli("import-orders", str(path))

    assert result.exit_code == 0, result.output
    assert "imported: 2" in result.output
    assert open_store(database_url).get_customer("C-1").facts.total_cents == 10_010


def test_a_semicolon_separated_csv_is_refused_with_a_hint(cli, tmp_path, database_url):
    path = tmp_path / "orders.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + ROWS).replace(",", ";").encode("utf-8"))

    result = cli("import-orders", str(path))

    assert result.exit_code == 1
    assert "orders.csv:1: header lacks column(s) contactID, orderReference, orderDate, total" in result.output
    assert "the header looks semicolon-separated: save the file as comma-separated CSV" in result.output
    assert open_store(database_url).count_customers() == 0


def test_a_file_that_is_not_utf8_is_refused_with_a_hint(cli, tmp_path, database_url):
    path = tmp_path / "orders.csv"
    path.write_bytes((HEADER + "C-1,ORD-1,2026-01-10,1.00,,Zoë,\n").encode("cp1252"))

    result = cli("import-orders", "--skip-invalid", str(path))

    assert result.exit_code == 1
    assert "orders.csv: not UTF-8 text" in result.output and "CSV UTF-8" in result.output
    assert open_store(database_url).count_customers() == 0


# --- imports that store nothing fail, with or without --skip-invalid ----------------------------------------

@pytest.mark.parametrize(("name", "text", "message"), [
    ("every-record-bad.csv", HEADER + "C-1,ORD-1,soon,1.00,,,\nC-2,ORD-2,2026-01-01,-1,,,\n",
     "all 2 record(s) were invalid; nothing was imported"),
    ("wrong-header.csv", "customer,reference,date,amount\nC-1,ORD-1,2026-01-01,1.00\n",
     "wrong-header.csv:1: header lacks column(s) contactID"),
    ("unknown-column.csv", HEADER.replace("status", "discount") + "C-1,ORD-1,2026-01-01,1.00,,,5\n",
     "unknown-column.csv:1: header has unknown column(s) discount"),
    ("blank-lines.jsonl", "\n\n", "blank-lines.jsonl: no order records found"),
])
def test_skip_invalid_that_stores_nothing_fails_saying_why(cli, tmp_path, database_url, name, text, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")

    result = cli("import-orders", "--skip-invalid", str(path))

    assert result.exit_code == 1
    assert message in result.output
    assert "imported:" not in result.output
    assert open_store(database_url).count_customers() == 0


# The short path for plain records (worker.ingest._plain_order) must give exactly the order the full checks give, or
# leave the record to them: any text a file can hold in each field.
_FIELD_TEXT = st.one_of(
    st.sampled_from(["", " ", "C-1", " C-1 ", "C/1", ".", "..", "é", "x" * 257, "\t", "a\x00b"]),
    st.text(max_size=12),
)
_DATES = st.sampled_from(["2026-02-21T08:30:00Z", "2026-02-21T08:30:00.123Z", "2026-02-21", "2026-02-21T08:30:00z",
                          "2026-02-21T08:30:00+02:00Z", "2026-02-21T08:30:00", "1969-12-31T23:00:00Z",
                          "2201-01-01T00:00:00Z", " 2026-02-21T08:30:00Z ", "2026-13-01T00:00:00Z", "Z", "",
                          "2027-06-01T00:00:00Z"])
_TOTALS = st.sampled_from(["149.90", "149.9", " 12 ", "0", "1.234", "-1", "1e3", "10000000000.00", "", "abc", "7."])


@given(contact=_FIELD_TEXT, ref=_FIELD_TEXT, date=_DATES, total=_TOTALS,
       optional=st.dictionaries(st.sampled_from(["status", "email", "name", "extra"]), _FIELD_TEXT, max_size=3))
def test_the_short_path_for_plain_records_agrees_with_the_full_checks(contact, ref, date, total, optional):
    from datetime import datetime, timezone

    from worker.ingest import Intake, RecordError, _checked_order, _plain_order
    item = {"contactID": contact, "orderReference": ref, "orderDate": date, "total": total, **optional}
    intake = Intake(datetime(2026, 6, 2, tzinfo=timezone.utc), 1)
    plain = _plain_order(item, intake)
    try:
        checked = _checked_order(item, "record 0", intake)
    except RecordError:
        checked = None
    if plain is not None:
        assert plain == checked


def test_a_plain_record_takes_the_short_path_to_the_same_order():
    from worker.ingest import _checked_order, _plain_order
    item = {"contactID": " C-1", "orderReference": "O-1 ", "orderDate": "2026-02-21T08:30:00.120Z", "total": "149.9",
            "email": "ann@example.com", "name": " ", "status": ""}
    plain = _plain_order(item, None)
    assert plain is not None and plain == _checked_order(item, "record 0", None)
    assert (plain.total_cents, plain.name, plain.status) == (14_990, "", None)
