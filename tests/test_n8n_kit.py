"""The n8n kit: the sample event of each campaign (a plausible move, obviously a test, the real wire format), the
workflows in n8n/ (pinned data equal to what the generator makes now, sample events routed away from the real
steps)."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from rules import Announced
from tests.factories import T0, days_ago, ingest, make_rules, order
from worker.evaluate import evaluate_due
from worker.sample_events import (
    N8N_DIR,
    SAMPLE_AS_OF,
    SampleUnavailable,
    pinned_item,
    sample_event,
    shipped_rules,
    with_pinned_sample,
    workflow_text,
)
from worker.store.base import Store

SHIPPED = shipped_rules()
WORKFLOWS = sorted(N8N_DIR.glob("*.json"))
REGENERATE = "the pinned data is stale: run `python -m worker.sample_events --write-n8n` and commit n8n/*.json"


def body(campaign: str, **kwargs: Any) -> dict[str, Any]:
    return json.loads(sample_event(SHIPPED, campaign, **kwargs).body)


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def node(workflow: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in workflow["nodes"] if n["name"] == name)


def targets(workflow: dict[str, Any], name: str) -> list[list[str]]:
    """The nodes each output of node `name` leads to."""
    return [[link["node"] for link in output] for output in workflow["connections"][name]["main"]]


# --- the samples -----------------------------------------------------------------------------------------------

def test_the_vip_sample_is_an_active_customer_whose_order_crossed_the_threshold() -> None:
    event = body("vip")
    metrics = event["customer"]["metrics"]
    assert (event["type"], event["transition"]) == ("segment.entered", {"from": "Active", "to": "VIP"})
    assert Decimal(metrics["totalSpend"]) > 5000
    assert metrics["orderCount"] > 1 and metrics["lastOrderDaysAgo"] == 0
    assert event["occurredAt"] == metrics["lastOrderDate"]  # the order that made them VIP


def test_the_win_back_sample_went_dormant_at_the_midnight_of_day_91() -> None:
    event = body("win-back")
    assert (event["type"], event["transition"]) == ("segment.entered", {"from": "Active", "to": "Dormant"})
    assert event["customer"]["metrics"]["lastOrderDaysAgo"] == 91
    assert event["occurredAt"] == "2026-02-21T00:00:00.000Z"


def test_the_at_risk_sample_reached_75_days_while_active() -> None:
    event = body("at-risk")
    assert event["type"] == "milestone.reached"
    assert event["milestone"] == {"metric": "lastOrderDaysAgo", "days": 75}
    assert event["transition"] == {"from": "Active", "to": "Active"}
    assert event["customer"]["metrics"]["lastOrderDaysAgo"] == 75


def test_the_welcome_sample_is_a_first_order() -> None:
    event = body("welcome")
    assert (event["type"], event["transition"]) == ("segment.entered", {"from": None, "to": "New"})
    assert event["customer"]["metrics"]["orderCount"] == 1


@pytest.mark.parametrize("campaign", list(SHIPPED.campaigns))
def test_every_sample_says_it_is_a_test_three_times(campaign: str) -> None:
    event = body(campaign)
    assert event["test"] is True
    assert event["customer"]["contactID"] == "sample-0001"
    assert event["customer"]["email"] == "sample-0001@example.com"


def test_samples_follow_the_rules_in_force() -> None:
    rules = make_rules(vip="12000", timezone="America/New_York")

    vip = json.loads(sample_event(rules, "vip").body)
    win_back = json.loads(sample_event(rules, "win-back").body)

    assert vip["transition"] == {"from": "Active", "to": "VIP"}
    assert 12000 < Decimal(vip["customer"]["metrics"]["totalSpend"]) < 13000
    assert vip["rulesVersion"] == rules.rules_version
    assert win_back["customer"]["metrics"]["lastOrderDaysAgo"] == 91
    assert win_back["occurredAt"] == "2026-02-21T05:00:00.000Z"  # local midnight in New York


def test_a_sample_has_the_fields_of_a_real_event_and_only_adds_test(store: Store) -> None:
    rules = make_rules()
    ingest(store, [order("C-1", "O-1", days_ago(200), 100_000, email="a@example.org", name="A"),
                   order("C-1", "O-2", days_ago(10), 100_000)])
    evaluate_due(store, rules, T0)
    evaluate_due(store, rules, T0 + timedelta(days=81))  # 91 days after the last order: Dormant
    [real] = [json.loads(e.body) for e in store.list_events(None, 10)]
    sample = json.loads(sample_event(rules, "win-back").body)

    assert real["campaign"] == "win-back"
    assert set(sample) == set(real) | {"test"}
    assert set(sample["customer"]) == set(real["customer"])
    assert set(sample["customer"]["metrics"]) == set(real["customer"]["metrics"])
    assert Announced.from_body(sample) == Announced.from_body(real)


def test_the_same_moment_gives_the_same_sample_and_another_customer_another_id() -> None:
    first = sample_event(SHIPPED, "win-back")
    assert sample_event(SHIPPED, "win-back") == first
    assert sample_event(SHIPPED, "win-back", contact_id="sample-0002").event_id != first.event_id


def test_a_batched_webhook_gets_the_sample_as_a_batch_of_one() -> None:
    sample = sample_event(SHIPPED, "vip")
    assert sample.message() == (sample.event_id, sample.body)
    batch_id, batch = sample.message(batch_size=50)
    assert batch_id.startswith("bat_")
    assert json.loads(batch) == {"events": [json.loads(sample.body)]}


GHOST_SEGMENTS = ("  - {name: VIP, when: {totalSpend: {gt: 5000}}}\n"
                  "  - {name: Ghost, when: {totalSpend: {lt: 0}}}\n"  # no spend is below 0
                  "  - {name: New, when: {firstOrderDaysAgo: {lte: 30}}}\n"
                  "  - {name: Active}\n")


def test_a_left_vip_sample_is_a_cancelled_order() -> None:
    rules = make_rules(campaigns="  downgrade: {on: {left: VIP}, webhook: n8n}\n")

    event = json.loads(sample_event(rules, "downgrade").body)

    assert (event["type"], event["transition"]) == ("segment.left", {"from": "VIP", "to": "Active"})
    assert Decimal(event["customer"]["metrics"]["totalSpend"]) <= 5000


def test_a_campaign_nothing_can_fire_has_no_sample() -> None:
    rules = make_rules(campaigns="  odd: {on: {entered: Ghost}, webhook: n8n}\n", segments=GHOST_SEGMENTS)

    with pytest.raises(SampleUnavailable, match="campaign 'odd'"):
        sample_event(rules, "odd")
    with pytest.raises(SampleUnavailable, match="'nope' is not a campaign"):
        sample_event(rules, "nope")


def test_the_pinned_item_is_what_the_webhook_node_outputs_without_a_signature() -> None:
    sample = sample_event(SHIPPED, "vip")
    item = pinned_item(sample)

    assert list(item) == ["json"]
    assert set(item["json"]) == {"headers", "params", "query", "body"}
    assert item["json"]["body"] == json.loads(sample.body)
    headers = item["json"]["headers"]
    assert headers["webhook-id"] == sample.event_id
    assert headers["webhook-timestamp"] == str(int(SAMPLE_AS_OF.timestamp()))
    assert "webhook-signature" not in headers and "x-segment-token" not in headers


# --- the workflows ---------------------------------------------------------------------------------------------

def test_there_is_one_workflow_per_shipped_campaign() -> None:
    assert sorted(path.stem for path in WORKFLOWS) == sorted(SHIPPED.campaigns)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_the_pinned_data_is_what_the_generator_makes_now(path: Path) -> None:
    workflow = load(path)
    assert workflow.get("pinData") == with_pinned_sample(workflow, SHIPPED, path.stem)["pinData"], REGENERATE
    assert path.read_text(encoding="utf-8") == workflow_text(workflow), "write n8n/*.json with workflow_text"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_the_pinned_sample_is_the_campaigns_and_pinned_on_the_webhook_node(path: Path) -> None:
    workflow = load(path)
    [item] = workflow["pinData"]["Webhook"]
    assert node(workflow, "Webhook")["type"] == "n8n-nodes-base.webhook"
    assert item["json"]["body"]["campaign"] == path.stem
    assert item["json"]["body"]["test"] is True


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_sample_events_end_before_the_campaigns_steps(path: Path) -> None:
    workflow = load(path)
    check = node(workflow, "Sample event?")
    [condition] = check["parameters"]["conditions"]["conditions"]

    assert targets(workflow, f"Only {path.stem} events") == [["Sample event?"]]
    assert condition["leftValue"] == "={{ $json.test === true }}"
    assert condition["operator"] == {"type": "boolean", "operation": "true", "singleValue": True}
    [on_true], [on_false] = targets(workflow, "Sample event?")
    assert on_true == "Sample: nothing sent" and node(workflow, on_true)["type"] == "n8n-nodes-base.noOp"
    assert on_false.endswith("(replace me)")
