"""One customer's life told through the outbox: each move becomes one signed event at the receiver, in order."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rules import Rules
from tests.outbox_helpers import LIFECYCLE, T0, UTC, ingest, make_rules, order_json
from tests.receiver import ReceivedRequest, Receiver
from worker.delivery import DeliveryRun, Senders, deliver_due
from worker.evaluate import evaluate_due
from worker.serialize import iso
from worker.store.base import Store

BERLIN = ZoneInfo("Europe/Berlin")
FIRST_ORDER_AT = datetime(2025, 1, 10, 10, 0, tzinfo=UTC)  # 11:00 in Berlin, 10 January
BODY_KEYS = {"id", "type", "campaign", "occurredAt", "detectedAt", "transition", "customer", "rulesVersion"}


def berlin(day: int, hour: int = 12) -> datetime:
    """`day` calendar days after the first order's local date, at `hour` o'clock in Berlin."""
    local = datetime(2025, 1, 10, hour, tzinfo=BERLIN) + timedelta(days=day)
    return local.astimezone(UTC)


def berlin_midnight(day: int) -> datetime:
    return datetime.combine((datetime(2025, 1, 10) + timedelta(days=day)).date(), datetime.min.time(),
                            tzinfo=BERLIN).astimezone(UTC)


class Story:
    """Evaluates at an explicit moment, delivers, and hands back what reached the receiver this step."""

    def __init__(self, store: Store, rules: Rules, senders: Senders, receiver: Receiver):
        self.store, self.rules, self.senders, self.receiver = store, rules, senders, receiver
        self.seen = 0

    def step(self, as_of: datetime) -> list[ReceivedRequest]:
        run = evaluate_due(self.store, self.rules, as_of)
        delivered = deliver_due(self.store, self.rules, self.senders, as_of, "story")
        assert delivered == DeliveryRun(delivered=run.events)
        requests = self.receiver.wait_for(self.seen + run.events)[self.seen:]
        self.seen += run.events
        self.assert_quiet_rerun(as_of)
        return requests

    def assert_quiet_rerun(self, as_of: datetime) -> None:
        again = evaluate_due(self.store, self.rules, as_of)
        assert again.events == 0 and again.transitions == 0
        assert deliver_due(self.store, self.rules, self.senders, as_of, "story").attempted == 0
        assert len(self.receiver.requests) == self.seen


def assert_event(request: ReceivedRequest, rules: Rules, *, campaign: str, kind: str, occurred_at: datetime,
                 detected_at: datetime, moved: tuple[str | None, str], metrics: dict[str, Any]) -> dict[str, Any]:
    body = request.json
    assert request.signature_valid
    assert request.status == 200
    assert request.headers["webhook-id"] == body["id"]
    assert body["id"].startswith("evt_")
    assert BODY_KEYS <= set(body) <= BODY_KEYS | {"milestone"}
    assert (body["campaign"], body["type"]) == (campaign, kind)
    assert body["occurredAt"] == iso(occurred_at)
    assert body["detectedAt"] == iso(detected_at)
    assert body["transition"] == {"from": moved[0], "to": moved[1]}
    assert body["rulesVersion"] == rules.rules_version and body["rulesVersion"].startswith("sha256:")
    customer = body["customer"]
    assert (customer["contactID"], customer["email"], customer["name"]) == ("C1", "c1@example.com", "Customer C1")
    assert {key: customer["metrics"][key] for key in metrics} == metrics
    return body


def test_a_customer_story_sends_each_campaign_once_in_order(store: Store, senders: Senders,
                                                             receiver: Receiver) -> None:
    rules = make_rules(receiver.url, first_run="baseline", campaigns=LIFECYCLE, timezone="Europe/Berlin")
    story = Story(store, rules, senders, receiver)
    assert story.step(FIRST_ORDER_AT - timedelta(days=1)) == []  # the store's first run: an empty baseline

    ingest(store, [order_json("C1", "C1-ORD-1", FIRST_ORDER_AT, "100.00")], FIRST_ORDER_AT)
    (welcome,) = story.step(FIRST_ORDER_AT + timedelta(hours=1))
    assert_event(welcome, rules, campaign="welcome", kind="segment.entered", occurred_at=FIRST_ORDER_AT,
                 detected_at=FIRST_ORDER_AT + timedelta(hours=1), moved=(None, "New"), metrics={
                     "orderCount": 1, "totalSpend": "100.00", "lastOrderDate": "2025-01-10T10:00:00.000Z",
                     "lastOrderReference": "C1-ORD-1", "segment": "New", "lastOrderDaysAgo": 0,
                     "purchaseFrequency": "One-time"})

    # New -> Active on day 31 is a move no campaign listens to: recorded, nothing sent.
    assert story.step(berlin(40)) == []
    assert [(t.from_segment, t.to_segment, t.occurred_at) for t in store.transitions_for("C1")][-1] == \
        ("New", "Active", berlin_midnight(31))

    (at_risk,) = story.step(berlin(75))
    body = assert_event(at_risk, rules, campaign="at-risk", kind="milestone.reached",
                        occurred_at=berlin_midnight(75), detected_at=berlin(75), moved=("Active", "Active"),
                        metrics={"segment": "Active", "lastOrderDaysAgo": 75, "orderCount": 1})
    assert body["milestone"] == {"metric": "lastOrderDaysAgo", "days": 75}

    # The worker was down on day 91; the event still says when the customer became Dormant.
    (win_back,) = story.step(berlin(93, hour=8))
    assert berlin_midnight(91) == datetime(2025, 4, 10, 22, 0, tzinfo=UTC)  # midnight in Berlin, summer time
    assert_event(win_back, rules, campaign="win-back", kind="segment.entered", occurred_at=berlin_midnight(91),
                 detected_at=berlin(93, hour=8), moved=("Active", "Dormant"),
                 metrics={"segment": "Dormant", "lastOrderDaysAgo": 93, "totalSpend": "100.00"})

    second_order_at = datetime(2025, 4, 20, 9, 0, tzinfo=UTC)
    ingest(store, [order_json("C1", "C1-ORD-2", second_order_at, "200.00")], second_order_at)
    (reactivated,) = story.step(second_order_at + timedelta(hours=1))
    assert_event(reactivated, rules, campaign="reactivated", kind="segment.left", occurred_at=second_order_at,
                 detected_at=second_order_at + timedelta(hours=1), moved=("Dormant", "Active"), metrics={
                     "orderCount": 2, "totalSpend": "300.00", "lastOrderDate": "2025-04-20T09:00:00.000Z",
                     "lastOrderReference": "C1-ORD-2", "segment": "Active", "lastOrderDaysAgo": 0,
                     "purchaseFrequency": "Occasional"})

    big_order_at = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)
    ingest(store, [order_json("C1", "C1-ORD-3", big_order_at, "4800.50")], big_order_at)
    (vip,) = story.step(big_order_at + timedelta(minutes=30))
    assert_event(vip, rules, campaign="vip", kind="segment.entered", occurred_at=big_order_at,
                 detected_at=big_order_at + timedelta(minutes=30), moved=("Active", "VIP"), metrics={
                     "orderCount": 3, "totalSpend": "5100.50", "lastOrderDate": "2025-05-01T09:00:00.000Z",
                     "lastOrderReference": "C1-ORD-3", "segment": "VIP", "lastOrderDaysAgo": 0,
                     "purchaseFrequency": "Quarterly"})

    ids = receiver.delivered_ids()
    assert [request.json["campaign"] for request in receiver.requests] == \
        ["welcome", "at-risk", "win-back", "reactivated", "vip"]
    assert len(set(ids)) == len(ids) == 5
    assert all(store.get_event(i).status == "delivered" for i in ids)
    assert [len(store.attempts_for(i)) for i in ids] == [1] * 5


def three_customers() -> list[dict[str, Any]]:
    """A newcomer, a big spender and one quiet for 120 days, as seen at T0."""
    return [
        order_json("NEW1", "NEW1-ORD-1", T0 - timedelta(days=3)),
        order_json("VIP1", "VIP1-ORD-1", T0 - timedelta(days=50), "6000.00"),
        order_json("DOR1", "DOR1-ORD-1", T0 - timedelta(days=120)),
    ]


def test_first_run_baseline_sends_nothing_and_later_newcomers_are_welcomed(store: Store, senders: Senders,
                                                                            receiver: Receiver) -> None:
    rules = make_rules(receiver.url, first_run="baseline", campaigns=LIFECYCLE)
    ingest(store, three_customers())
    first = evaluate_due(store, rules, T0)
    assert first.baseline and first.customers == 3 and first.events == 0
    assert deliver_due(store, rules, senders, T0, "story").attempted == 0
    assert store.get_customer("VIP1").segment == "VIP"

    later = T0 + timedelta(days=1)
    ingest(store, [order_json("NEW2", "NEW2-ORD-1", later - timedelta(hours=2))], later)
    run = evaluate_due(store, rules, later)
    assert not run.baseline and run.events == 1
    assert deliver_due(store, rules, senders, later, "story") == DeliveryRun(delivered=1)
    (request,) = receiver.wait_for(1)
    assert request.signature_valid
    assert (request.json["campaign"], request.json["customer"]["contactID"]) == ("welcome", "NEW2")
    assert request.json["transition"] == {"from": None, "to": "New"}
    assert len(receiver.requests) == 1


def test_first_run_emit_announces_everyone(store: Store, senders: Senders, receiver: Receiver) -> None:
    rules = make_rules(receiver.url, first_run="emit", campaigns=LIFECYCLE)
    ingest(store, three_customers())
    first = evaluate_due(store, rules, T0)
    assert not first.baseline and first.events == 3
    assert deliver_due(store, rules, senders, T0, "story") == DeliveryRun(delivered=3)
    announced = {r.json["customer"]["contactID"]: r.json for r in receiver.wait_for(3)}
    assert {cid: (body["campaign"], body["transition"]["to"]) for cid, body in announced.items()} == {
        "NEW1": ("welcome", "New"), "VIP1": ("vip", "VIP"), "DOR1": ("win-back", "Dormant")}
    assert all(body["transition"]["from"] is None for body in announced.values())
    assert announced["DOR1"]["occurredAt"] == iso(datetime.combine((T0 - timedelta(days=120 - 91)).date(),
                                                                   datetime.min.time(), tzinfo=UTC))
    assert all(r.signature_valid for r in receiver.requests)
    assert evaluate_due(store, rules, T0).events == 0
