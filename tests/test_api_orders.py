"""POST /api/orders: the body shapes n8n sends, upsert by orderReference, all-or-nothing batches, size limits."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import NOW, make_order

ORDER = make_order("C-1", "ORD-1", "2026-02-20T09:15:00Z", "149.90", email="ann@example.com", name="Ann")


def get_customer(client, headers, contact_id):
    return client.get(f"/api/customers/{contact_id}", headers=headers)


@pytest.mark.parametrize("body", [ORDER, [ORDER], {"orders": [ORDER]}], ids=["object", "list", "orders-key"])
def test_one_order_creates_the_customer_in_any_body_shape(post_orders, body):
    response = post_orders(body)

    assert response.status_code == 200
    result = response.get_json()
    assert (result["imported"], result["updated"], result["unchanged"]) == (1, 0, 0)
    [customer] = result["customers"]
    assert customer["contactID"] == "C-1"
    assert customer["metrics"]["totalSpend"] == "149.90"
    assert customer["metrics"]["segment"] == "New"


def test_a_list_of_orders_updates_every_touched_customer(post_orders, make_orders):
    orders = (make_orders("C-1", count=3, first=NOW - timedelta(days=20))
              + make_orders("C-2", count=2, total="2600.00"))

    result = post_orders(orders).get_json()

    assert result["imported"] == 5
    assert [(c["contactID"], c["metrics"]["orderCount"], c["metrics"]["totalSpend"], c["metrics"]["segment"])
            for c in result["customers"]] == [("C-1", 3, "300.00", "New"), ("C-2", 2, "5200.00", "VIP")]


def test_resending_an_order_updates_it_and_never_double_counts(client, read_headers, post_orders):
    post_orders(ORDER)

    corrected = post_orders({**ORDER, "total": "200.00"}).get_json()
    repeated = post_orders({**ORDER, "total": "200.00"}).get_json()

    assert (corrected["imported"], corrected["updated"]) == (0, 1)
    assert repeated["unchanged"] == 1
    metrics = get_customer(client, read_headers, "C-1").get_json()["data"]["metrics"]
    assert (metrics["orderCount"], metrics["totalSpend"]) == (1, "200.00")


def test_a_cancelled_order_does_not_count(post_orders):
    post_orders(ORDER)

    customer = post_orders({**ORDER, "status": "cancelled"}).get_json()["customers"][0]

    assert customer["metrics"] == {
        "orderCount": 0, "totalSpend": "0.00", "firstOrderDate": None, "lastOrderDate": None,
        "lastOrderReference": customer["metrics"]["lastOrderReference"], "segment": "New",
        "lastOrderDaysAgo": None, "purchaseFrequency": "None", "rfm": None, "predicted": None,
    }


def test_money_is_exact_even_when_sent_as_json_numbers(client, admin_headers):
    body = '[{"contactID": "C-1", "orderReference": "A", "orderDate": "2026-02-20", "total": 0.1},' \
           ' {"contactID": "C-1", "orderReference": "B", "orderDate": "2026-02-20", "total": 0.2}]'

    response = client.post("/api/orders", data=body, content_type="application/json", headers=admin_headers)

    assert response.get_json()["customers"][0]["metrics"]["totalSpend"] == "0.30"


def test_a_batch_with_bad_records_stores_nothing_and_names_every_error(client, read_headers, post_orders):
    orders = [
        make_order("C-1", "ORD-1", NOW - timedelta(days=1), "10.00"),
        make_order("C-2", "ORD-2", NOW - timedelta(days=1), "ten dollars"),
        {"contactID": "C-3", "orderReference": "ORD-3", "total": "5.00"},
        make_order("C-4", "ORD-4", "last tuesday", "5.00"),
        make_order("C-5", "ORD-5", "9999-12-31T23:59:59-12:00", "5.00"),
    ]

    response = post_orders(orders)

    assert response.status_code == 400
    body = response.get_json()
    assert "nothing was stored" in body["error"]
    assert len(body["errors"]) == 4
    assert body["errors"][0].startswith("record 1 (orderReference ORD-2): total:")
    assert body["errors"][1].startswith("record 2 (orderReference ORD-3): orderDate:")
    assert body["errors"][2].startswith("record 3 (orderReference ORD-4): orderDate:")
    assert body["errors"][3].startswith("record 4 (orderReference ORD-5): orderDate:")
    assert all(get_customer(client, read_headers, f"C-{n}").status_code == 404 for n in range(1, 6))


def test_unknown_fields_are_refused(post_orders):
    response = post_orders({**ORDER, "discount": "5%"})

    assert response.status_code == 400
    assert "discount" in response.get_json()["errors"][0]


@pytest.mark.parametrize(("body", "message"), [
    ("not json at all", "not valid JSON"),
    ("[]", "no orders"),
    ("42", "must be JSON objects"),
    ('"an order"', "must be JSON objects"),
    ("[" * 50_000 + "]" * 50_000, "not valid JSON"),
    ("\xff\xfe", "not valid JSON"),
])
def test_bodies_that_are_not_orders_are_400(client, admin_headers, body, message):
    response = client.post("/api/orders", data=body.encode("latin-1"), content_type="application/json",
                           headers=admin_headers)

    assert response.status_code == 400
    assert message in response.get_json()["error"]


def test_items_that_are_not_objects_are_named_per_record(post_orders):
    response = post_orders([ORDER, 7])

    assert response.status_code == 400
    assert response.get_json()["errors"] == [
        "record 1: must be an object with contactID, orderReference, orderDate, total"]


def test_a_body_over_the_size_limit_is_413(client, admin_headers):
    response = client.post("/api/orders", data=b"[" + b" " * (10 * 1024 * 1024) + b"]",
                           content_type="application/json", headers=admin_headers)

    assert response.status_code == 413
    assert response.get_json() == {"error": "the body is larger than 5242880 bytes"}


def test_orders_endpoint_only_accepts_post(client, admin_headers):
    response = client.get("/api/orders", headers=admin_headers)

    assert response.status_code == 405
    assert "error" in response.get_json()
    assert "POST" in response.headers["Allow"]


class CountingStore:
    """The test's store, counting the reads an order request makes."""

    def __init__(self, store):
        self.store = store
        self.customer_reads = 0
        self.rfm_reads = 0

    def customers_by_id(self, contact_ids):
        self.customer_reads += 1
        return self.store.customers_by_id(contact_ids)

    def rfm_cutoffs(self):
        self.rfm_reads += 1
        return self.store.rfm_cutoffs()

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_an_order_request_reads_and_classifies_its_customers_once(settings, store, rules_source, clock,
                                                                  admin_headers, make_orders):
    from worker.api import create_app

    counting = CountingStore(store)
    client = create_app(settings, store=counting, rules_source=rules_source, clock=clock).test_client()
    client.post("/api/orders", json=make_orders("C-0"), headers=admin_headers)  # warm: the classifier is compiled
    counting.customer_reads = counting.rfm_reads = 0

    answer = client.post("/api/orders", json=make_orders("C-1") + make_orders("C-2", total="6000.00"),
                         headers=admin_headers).get_json()

    assert [(c["contactID"], c["metrics"]["segment"]) for c in answer["customers"]] == [("C-1", "New"),
                                                                                        ("C-2", "VIP")]
    assert counting.customer_reads == 1, "the customers are read once, for the evaluation and the answer"
    assert counting.rfm_reads == 1, "one classifier: the RFM boundaries are read once"
