"""Customer reads: the original Lambda's format, filters, paging, asOf, segment totals and transition history."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest

from tests.conftest import NOW, make_order
from worker.evaluate import evaluate_due


@pytest.fixture
def population(post_orders, make_orders):
    """One customer per segment, plus a weekly buyer; stored segments are evaluated at NOW."""
    orders = [
        *make_orders("vip", first=NOW - timedelta(days=5), total="6000.00"),
        *make_orders("new", first=NOW - timedelta(days=3), total="50.00"),
        *make_orders("active", count=2, first=NOW - timedelta(days=60), every_days=30),
        *make_orders("dormant", count=2, first=NOW - timedelta(days=200), every_days=80),
        *make_orders("weekly", count=8, first=NOW - timedelta(days=45), every_days=5),
    ]
    assert post_orders(orders).status_code == 200


def ids(response) -> list[str]:
    return ids_of(response.get_json())


def ids_of(body: dict) -> list[str]:
    return [customer["contactID"] for customer in body["data"]]


def test_customer_json_matches_the_original_lambda_format(client, read_headers, post_orders):
    post_orders([
        make_order("C-1", "ORD-1", "2026-01-12T08:30:00Z", "1000.25", email="ann@example.com", name="Ann"),
        make_order("C-1", "ORD-2", "2026-02-11T08:30:00Z", "245.25", email="ann@example.com", name="Ann"),
    ])

    response = client.get("/api/customers/C-1", headers=read_headers)

    assert response.status_code == 200
    assert response.get_json() == {"data": {
        "contactID": "C-1", "name": "Ann", "email": "ann@example.com",
        "metrics": {
            "orderCount": 2, "totalSpend": "1245.50",
            "firstOrderDate": "2026-01-12T08:30:00.000Z", "lastOrderDate": "2026-02-11T08:30:00.000Z",
            "lastOrderReference": "ORD-2", "segment": "Active", "lastOrderDaysAgo": 10,
            "purchaseFrequency": "Monthly",
            "rfm": None,  # no RFM boundaries computed yet
            "predicted": None,  # no churn model fitted yet
        },
        "experiments": {},  # the rules run no threshold experiment
    }}


def test_unknown_customer_is_404_naming_it(client, read_headers):
    response = client.get("/api/customers/nobody", headers=read_headers)

    assert response.status_code == 404
    assert response.get_json() == {"error": "customer 'nobody' not found"}


@pytest.mark.parametrize("as_of", [None, "2026-03-01"], ids=["stored-index", "evaluated-at-asOf"])
def test_pages_cover_everyone_once(client, read_headers, post_orders, make_orders, as_of):
    everyone = [f"C-{n:03d}" for n in range(25)]
    assert post_orders([order for cid in everyone for order in make_orders(cid)]).status_code == 200
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": 7, **({"cursor": cursor} if cursor else {}), **({"asOf": as_of} if as_of else {})}
        body = client.get("/api/customers", query_string=query, headers=read_headers).get_json()
        assert body["count"] == len(body["data"]) <= 7
        seen += [customer["contactID"] for customer in body["data"]]
        pages += 1
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert seen == everyone
    assert pages == 4


def test_list_defaults_to_everyone_in_contact_id_order(client, read_headers, population):
    body = client.get("/api/customers", headers=read_headers).get_json()

    assert ids_of(body) == ["active", "dormant", "new", "vip", "weekly"]
    assert body["count"] == 5
    assert body["nextCursor"] is None


@pytest.mark.parametrize(("query", "expected"), [
    ({"segment": "Active"}, ["active", "weekly"]),
    ({"segment": "VIP"}, ["vip"]),
    ({"segment": "Dormant"}, ["dormant"]),
    ({"purchaseFrequency": "Weekly"}, ["weekly"]),
    ({"purchaseFrequency": "One-time"}, ["new", "vip"]),
    ({"segment": "Active", "purchaseFrequency": "Monthly"}, ["active"]),
    ({"segment": "Dormant", "purchaseFrequency": "Weekly"}, []),
])
def test_filters_by_segment_and_purchase_frequency(client, read_headers, population, query, expected):
    stored = client.get("/api/customers", query_string=query, headers=read_headers)
    evaluated = client.get("/api/customers", query_string={**query, "asOf": NOW.isoformat()}, headers=read_headers)

    assert ids(stored) == expected
    assert ids(evaluated) == expected


@pytest.mark.parametrize(("query", "parameter"), [
    ("limit=0", "limit"),
    ("limit=1001", "limit"),
    ("limit=ten", "limit"),
    ("limit=-5", "limit"),
    ("cursor=not*base64", "cursor"),
    ("cursor=" + base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="), "cursor"),
    ("asOf=yesterday", "asOf"),
    ("asOf=2026-13-45", "asOf"),
    ("asOf=9999-12-31T23:59:59-12:00", "asOf"),
    ("asOf=9999-12-31", "asOf"),
    ("asOf=0001-01-01", "asOf"),
    ("segment=Gold", "segment"),
    ("purchaseFrequency=Daily", "purchaseFrequency"),
])
def test_bad_query_parameters_are_400_naming_the_parameter(client, read_headers, query, parameter):
    response = client.get(f"/api/customers?{query}", headers=read_headers)

    assert response.status_code == 400
    assert response.get_json()["error"].startswith(f"{parameter}:")


def test_unknown_segment_lists_the_valid_ones(client, read_headers):
    error = client.get("/api/customers?segment=Gold", headers=read_headers).get_json()["error"]

    assert "VIP, Dormant, New, Active" in error


def test_as_of_moves_days_ago_and_segment(client, read_headers, population):
    now = client.get("/api/customers/active", headers=read_headers).get_json()["data"]["metrics"]
    later = client.get("/api/customers/active?asOf=2026-05-15", headers=read_headers).get_json()["data"]["metrics"]

    assert (now["lastOrderDaysAgo"], now["segment"]) == (30, "Active")
    assert (later["lastOrderDaysAgo"], later["segment"]) == (113, "Dormant")


def test_as_of_on_the_list_classifies_everyone_at_that_moment(client, read_headers, population):
    response = client.get("/api/customers?segment=Dormant&asOf=2026-05-15T00:00:00Z", headers=read_headers)

    assert ids(response) == ["active", "dormant", "weekly"]


def test_stale_stored_segment_is_not_listed_under_a_filter_it_no_longer_matches(
        client, read_headers, population, clock):
    clock.advance(days=61)  # 'active' passed 90 days without an order; no evaluation has run since

    listed = client.get("/api/customers?segment=Active", headers=read_headers).get_json()
    shown = client.get("/api/customers/active", headers=read_headers).get_json()["data"]

    assert ids_of(listed) == ["weekly"]
    assert shown["metrics"]["segment"] == "Dormant"


def test_full_page_of_stale_rows_still_hands_out_a_cursor(client, read_headers, population, clock):
    clock.advance(days=61)

    first = client.get("/api/customers?segment=Active&limit=1", headers=read_headers).get_json()
    second = client.get("/api/customers", query_string={"segment": "Active", "limit": 1,
                                                        "cursor": first["nextCursor"]}, headers=read_headers)

    assert first["data"] == [] and first["nextCursor"] is not None
    assert ids(second) == ["weekly"]


def test_segment_summary_lists_every_segment_and_adds_up(client, read_headers, population):
    body = client.get("/api/segments", headers=read_headers).get_json()

    assert [row["segment"] for row in body["data"]] == ["VIP", "Dormant", "New", "Active"]
    assert {row["segment"]: row["customers"] for row in body["data"]} == {"VIP": 1, "Dormant": 1, "New": 1,
                                                                          "Active": 2}
    assert body["customers"] == sum(row["customers"] for row in body["data"]) == 5
    assert sum(row["share"] for row in body["data"]) == pytest.approx(1.0)
    assert body["data"][0]["totalSpend"] == "6000.00"
    assert body["asOf"] == "2026-02-21T12:00:00.000Z"


def test_segment_summary_at_as_of_reclassifies_everyone(client, read_headers, population):
    body = client.get("/api/segments?asOf=2026-05-15", headers=read_headers).get_json()

    assert {row["segment"]: row["customers"] for row in body["data"]} == {"VIP": 1, "Dormant": 3, "New": 0,
                                                                          "Active": 1}
    assert body["customers"] == 5
    assert body["asOf"] == "2026-05-15T00:00:00.000Z"


def test_segment_summary_of_an_empty_store_has_zero_rows(client, read_headers):
    body = client.get("/api/segments", headers=read_headers).get_json()

    assert [(row["customers"], row["totalSpend"], row["share"]) for row in body["data"]] == [(0, "0.00", 0.0)] * 4
    assert body["customers"] == 0


def test_transitions_record_the_move_an_order_caused(client, read_headers, post_orders, store, rules, clock):
    evaluate_due(store, rules, clock())  # the store's first run: a silent baseline
    post_orders(make_order("C-9", "ORD-1", NOW - timedelta(days=2), "100.00"))

    moved = post_orders(make_order("C-9", "ORD-2", NOW - timedelta(hours=1), "5000.00")).get_json()
    body = client.get("/api/customers/C-9/transitions", headers=read_headers).get_json()

    assert moved["transitions"] == 1
    assert body["count"] == 2
    assert [(t["from"], t["to"]) for t in body["data"]] == [(None, "New"), ("New", "VIP")]
    assert body["data"][1]["occurredAt"] == "2026-02-21T11:00:00.000Z"
    assert body["data"][1]["detectedAt"] == "2026-02-21T12:00:00.000Z"
    assert body["data"][1]["rulesVersion"] == rules.rules_version


def test_transitions_of_an_unknown_customer_are_404(client, read_headers):
    response = client.get("/api/customers/nobody/transitions", headers=read_headers)

    assert response.status_code == 404
    assert response.get_json() == {"error": "customer 'nobody' not found"}


def test_an_unexpected_failure_is_a_500_that_leaks_nothing(client, read_headers, store, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("database password is hunter2")

    monkeypatch.setattr(store, "list_customers_sorted", broken)

    response = client.get("/api/customers", headers=read_headers)

    assert response.status_code == 500
    assert response.get_json() == {"error": "internal error; the server log has the details"}
    assert "hunter2" not in response.get_data(as_text=True)


# --- sorting and totals ----------------------------------------------------------------------------------------

@pytest.fixture
def spenders(post_orders, make_orders):
    """Six customers, two pairs tied on spend (and on the last order): sorting must split ties by contactID."""
    rows = [("s-a", "300.00", 3), ("s-b", "100.00", 10), ("s-c", "300.00", 3), ("s-d", "200.00", 40),
            ("s-e", "100.00", 10), ("s-f", "50.00", 200)]
    orders = [order for cid, total, days in rows for order in make_orders(cid, first=NOW - timedelta(days=days),
                                                                          total=total)]
    assert post_orders(orders).status_code == 200


def page_all(client, headers, **query) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        body = client.get("/api/customers", query_string={**query, **({"cursor": cursor} if cursor else {})},
                          headers=headers).get_json()
        pages.append(ids_of(body))
        cursor = body["nextCursor"]
        if cursor is None:
            return pages


@pytest.mark.parametrize("as_of", [None, NOW.isoformat()], ids=["stored", "asOf"])
@pytest.mark.parametrize(("sort", "expected"), [
    ("totalSpend", ["s-f", "s-b", "s-e", "s-d", "s-a", "s-c"]),
    ("-totalSpend", ["s-c", "s-a", "s-d", "s-e", "s-b", "s-f"]),
    ("lastOrderDate", ["s-f", "s-d", "s-b", "s-e", "s-a", "s-c"]),
    ("-lastOrderDate", ["s-c", "s-a", "s-e", "s-b", "s-d", "s-f"]),  # fewest days since the last order first
    ("-contactID", ["s-f", "s-e", "s-d", "s-c", "s-b", "s-a"]),
])
def test_sorted_pages_cover_everyone_once_ties_by_contact_id(client, read_headers, spenders, sort, expected, as_of):
    pages = page_all(client, read_headers, sort=sort, limit=4, **({"asOf": as_of} if as_of else {}))

    assert [c for page in pages for c in page] == expected
    assert [len(page) for page in pages] == [4, 2]


def test_a_cursor_belongs_to_its_sort(client, read_headers, spenders):
    by_spend = client.get("/api/customers?sort=totalSpend&limit=2", headers=read_headers).get_json()["nextCursor"]
    by_id = client.get("/api/customers?limit=2", headers=read_headers).get_json()["nextCursor"]

    for sort, cursor in (("lastOrderDate", by_spend), ("-totalSpend", by_spend), ("totalSpend", by_id)):
        response = client.get("/api/customers", query_string={"sort": sort, "cursor": cursor}, headers=read_headers)
        assert response.status_code == 400, sort
        assert response.get_json()["error"].startswith("cursor: not a cursor of a list sorted by")
    assert base64.urlsafe_b64decode(by_id + "==").decode() == "s-b", "the default order keeps plain contactID cursors"


@pytest.mark.parametrize("forged", ['["totalSpend", 99999999999999999999999, "x"]', '["totalSpend", "1", "x"]',
                                    '["totalSpend", 1.5, "x"]', '{"a": 1}', '["totalSpend", 1]', '7',
                                    '["totalSpend", 0, "\\ud800"]'])
def test_a_forged_sorted_cursor_is_a_400_not_a_500(client, read_headers, spenders, forged):
    cursor = base64.urlsafe_b64encode(forged.encode()).decode().rstrip("=")

    response = client.get("/api/customers", query_string={"sort": "totalSpend", "cursor": cursor},
                          headers=read_headers)

    assert response.status_code == 400
    assert response.get_json()["error"].startswith("cursor:")


def test_an_unknown_sort_is_a_400_listing_the_choices(client, read_headers):
    response = client.get("/api/customers?sort=spend", headers=read_headers)

    assert response.status_code == 400
    assert response.get_json()["error"] == ("sort: unknown value 'spend'; valid values are contactID, -contactID, "
                                            "totalSpend, -totalSpend, lastOrderDate, -lastOrderDate")


@pytest.mark.parametrize(("query", "total"), [
    ({}, 5), ({"segment": "Active"}, 2), ({"purchaseFrequency": "One-time"}, 2),
    ({"segment": "Active", "purchaseFrequency": "Monthly"}, 1), ({"segment": "VIP", "limit": 1}, 1),
    ({"segment": "Dormant", "asOf": "2026-05-15"}, 3)])
def test_lists_say_how_many_customers_the_filter_has_on_every_page(client, read_headers, population, query, total):
    first = client.get("/api/customers", query_string={**query, "limit": 1}, headers=read_headers).get_json()

    assert first["total"] == total
    if first["nextCursor"]:
        second = client.get("/api/customers", query_string={**query, "limit": 1, "cursor": first["nextCursor"]},
                            headers=read_headers).get_json()
        assert second["total"] == total


# --- a customer's events ---------------------------------------------------------------------------------------

def test_a_customers_events_are_listed_oldest_first(client, read_headers, store, rules, clock, post_orders):
    evaluate_due(store, rules, clock())  # the baseline: later customers are welcomed
    post_orders(make_order("C-9", "ORD-1", NOW - timedelta(days=2), "100.00"))
    post_orders(make_order("C-9", "ORD-2", NOW - timedelta(hours=1), "5000.00"))
    post_orders(make_order("C-8", "ORD-3", NOW - timedelta(days=1), "10.00"))

    body = client.get("/api/customers/C-9/events", headers=read_headers).get_json()

    assert [(e["campaign"], e["status"], e["contactID"]) for e in body["data"]] == [
        ("welcome", "pending", "C-9"), ("vip", "pending", "C-9")]
    assert body["count"] == 2
    assert ids_of(client.get("/api/customers/C-9/events?limit=1", headers=read_headers).get_json()) == ["C-9"]


def test_events_of_an_unknown_customer_are_404(client, read_headers):
    response = client.get("/api/customers/nobody/events", headers=read_headers)

    assert response.status_code == 404
    assert response.get_json() == {"error": "customer 'nobody' not found"}
