"""Sample events: a made-up customer whose move fires a campaign, put through the real evaluation (`decide`) so the
body is exactly what the worker would send; for `webhooks test` and the pinned data of the n8n workflows.

`python -m worker.sample_events --write-n8n` writes each n8n/*.json workflow's pinned data from the shipped
rules.yaml; tests/test_n8n_kit.py fails when a workflow's pinned data differs from what this produces.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from math import floor
from pathlib import Path
from typing import Any

from rules import Classifier, CustomerFacts, Rules
from rules.metrics import local_date
from rules.rfm import RfmCutoffs
from worker.evaluate import decide
from worker.rules_file import load_rules_file
from worker.serialize import batch_message
from worker.store.base import CustomerRecord
from worker.transport import USER_AGENT

# Every sample says so three times: this field, a contactID starting "sample-", an address at example.com (RFC 2606:
# reserved, never anyone's mailbox). Real events never carry "test", so a workflow can branch on `$json.test`.
TEST_FIELD = "test"
SAMPLE_CONTACT_ID = "sample-0001"
SAMPLE_NAME = "Sample Customer"
SAMPLE_EMAIL_DOMAIN = "example.com"
# The moment the pinned samples are dated: fixed, so the n8n files change only when the wire format or the rules do.
SAMPLE_AS_OF = datetime(2026, 2, 21, 9, 30, tzinfo=timezone.utc)
# A made-up base's RFM quintile boundaries, so a sample carries `metrics.rfm` as real events do once the scheduler
# has computed the base's own.
SAMPLE_RFM_CUTOFFS = RfmCutoffs(recency_days=(14, 30, 60, 120), frequency=(1, 2, 4, 8),
                                monetary_cents=(20_000, 60_000, 150_000, 400_000))
# The published CDNOW estimates (Fader, Hardie & Lee 2005) as a made-up base's churn model, so a sample carries
# `metrics.predicted` as real events do once the scheduler has fitted the base's own.
SAMPLE_MODEL_PARAMS = {"bgnbd": {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426},
                       "gammaGamma": {"p": 6.25, "q": 3.74, "v": 15.44}}
ORDER_TIME = time(10, 15)  # local time of the sample's past orders
NEW_ORDER_AGO = timedelta(minutes=47)  # the order that just came in, in stories where one does
N8N_DIR = Path(__file__).resolve().parent.parent / "n8n"
SHIPPED_RULES = N8N_DIR.parent / "rules.yaml"
WEBHOOK_NODE_TYPE = "n8n-nodes-base.webhook"

# The customer's history, tried in this order until the evaluation fires the campaign: regulars first, so a VIP
# sample is an Active regular whose order just took them over the threshold, not a first order of $5,000.
_ORDER_COUNTS = (5, 11, 3, 1)
_LAST_ORDER_DAYS = (24, 12, 120, 45)
_FIRST_ORDER_GAPS = (176, 30, 400)  # days between the first and the last order
_SPEND = (Decimal("1840.00"), Decimal("620.00"))
_ORDER_AMOUNT = Decimal("320.00")


class SampleUnavailable(ValueError):
    """No sample customer's move fires the campaign under these rules; the message says which campaign."""


@dataclass(frozen=True)
class SampleEvent:
    """One sample event: `body` is the event's JSON as the worker sends it, plus `"test": true`."""

    campaign: str
    webhook: str
    event_id: str
    kind: str
    from_segment: str | None
    to_segment: str
    contact_id: str
    body: str

    def message(self, batch_size: int = 1) -> tuple[str, str]:
        """webhook-id and body of the POST that delivers this event to a webhook with `batch_size`.

        Batched webhooks get `{"events": [...]}` under a batch id, as delivery sends a batch of one.
        """
        if batch_size > 1:
            return batch_message([(self.event_id, self.body)])
        return self.event_id, self.body

    @property
    def move(self) -> str:
        """The move in words, e.g. 'segment.entered: Active -> VIP'."""
        body = json.loads(self.body)
        if "milestone" in body:
            milestone = body["milestone"]
            reached = milestone.get("days", milestone.get("band"))
            return f"{self.kind}: {milestone['metric']} {reached} in {self.to_segment}"
        return f"{self.kind}: {self.from_segment or '(new customer)'} -> {self.to_segment}"


def sample_event(rules: Rules, campaign: str, as_of: datetime = SAMPLE_AS_OF,
                 contact_id: str = SAMPLE_CONTACT_ID) -> SampleEvent:
    """The event campaign `campaign` sends for a sample customer whose move, evaluated at `as_of`, fires it.

    Raises SampleUnavailable when no history tried fires the campaign (e.g. it needs a segment nobody can reach).
    """
    if campaign not in rules.campaigns:
        raise SampleUnavailable(f"'{campaign}' is not a campaign of the rules")
    classifier = Classifier(rules, SAMPLE_RFM_CUTOFFS, _sample_model(rules, as_of))
    for record in _stories(rules, classifier, contact_id, as_of):
        for event in decide(record, classifier, as_of, announce=True).events:
            if event.campaign != campaign:
                continue
            body = json.loads(event.body)
            marked = json.dumps({**body, TEST_FIELD: True}, separators=(",", ":"), ensure_ascii=False)
            return SampleEvent(campaign, event.webhook, event.id, event.type, body["transition"]["from"],
                               body["transition"]["to"], contact_id, marked)
    raise SampleUnavailable(f"no sample customer's move fires campaign '{campaign}' under these rules "
                            "(its trigger may need a segment that no order history reaches)")


def run_contact_id(as_of: datetime) -> str:
    """The sample customer of a test sent at `as_of`: a new one each second, so a workflow that drops repeated
    event ids (as at-least-once delivery asks it to) still lets the next test through."""
    return f"sample-{as_of.astimezone(timezone.utc):%Y%m%d%H%M%S}"


def pinned_item(sample: SampleEvent, as_of: datetime = SAMPLE_AS_OF) -> dict[str, Any]:
    """The item n8n's Webhook node would output for `sample`, as pinned data.

    No webhook-signature and no X-Segment-Token: pinned data never came over HTTP, and a signature here could only
    be made with a made-up secret.
    """
    msg_id, body = sample.message()
    headers = {"content-type": "application/json", "user-agent": USER_AGENT, "webhook-id": msg_id,
               "webhook-timestamp": str(int(as_of.timestamp()))}
    return {"json": {"headers": headers, "params": {}, "query": {}, "body": json.loads(body)}}


def with_pinned_sample(workflow: Mapping[str, Any], rules: Rules, campaign: str) -> dict[str, Any]:
    """`workflow` (an n8n workflow's JSON) with the campaign's sample event pinned to its Webhook node."""
    webhook_nodes = [n["name"] for n in workflow.get("nodes", []) if n.get("type") == WEBHOOK_NODE_TYPE]
    if len(webhook_nodes) != 1:
        raise ValueError(f"the workflow for campaign '{campaign}' needs exactly one Webhook node, "
                         f"found {len(webhook_nodes)}")
    sample = sample_event(rules, campaign)
    return {**workflow, "pinData": {webhook_nodes[0]: [pinned_item(sample)]}}


def workflow_text(workflow: Mapping[str, Any]) -> str:
    """How the n8n/*.json files are written: two-space indents, UTF-8, a final newline."""
    return json.dumps(workflow, indent=2, ensure_ascii=False) + "\n"


def shipped_rules() -> Rules:
    """The shipped rules.yaml, read without the environment: the samples depend on segments and campaigns only."""
    return load_rules_file(SHIPPED_RULES, env={})


def write_n8n(directory: Path = N8N_DIR, rules: Rules | None = None) -> list[Path]:
    """Pin each workflow's sample (the campaign is the file name: vip.json -> vip); returns the files changed."""
    rules = rules or shipped_rules()
    changed = []
    for path in sorted(directory.glob("*.json")):
        text = path.read_text(encoding="utf-8")
        updated = workflow_text(with_pinned_sample(json.loads(text), rules, path.stem))
        if updated != text:
            path.write_text(updated, encoding="utf-8")
            changed.append(path)
    return changed


def _stories(rules: Rules, classifier: Classifier, contact_id: str, as_of: datetime) -> Iterator[CustomerRecord]:
    """Sample customers as the evaluation at `as_of` finds them, most ordinary first: an order just came in, a
    first order, a day went by (a day threshold or milestone was crossed), an order was cancelled."""
    orders = _order_candidates(rules)
    histories = [(count, last, first) for count in _counts(rules, _ORDER_COUNTS)
                 for last, first in _day_pairs(rules, count)]
    for count, last, first in histories:
        for spend, amount in orders:
            before = _facts(rules, as_of, count, spend, last, first)
            yield _after_new_order(classifier, contact_id, as_of, before, amount)
    for amount in dict.fromkeys(amount for _, amount in orders):
        yield _first_seen(contact_id, as_of, amount)
    # a day later: the totals before an order, then after it (a VIP whose churn risk rises, say)
    totals = dict.fromkeys([spend for spend, _ in orders] + [spend + amount for spend, amount in orders])
    for count, last, first in histories:
        for spend in totals:
            yield _a_day_later(classifier, contact_id, as_of, _facts(rules, as_of, count, spend, last, first))
    for count, last, first in histories:
        for spend, amount in orders:
            yield _after_cancellation(classifier, contact_id, as_of, rules, count, spend, last, first, amount)


def _after_new_order(classifier: Classifier, contact_id: str, as_of: datetime, before: CustomerFacts,
                     amount: Decimal) -> CustomerRecord:
    ordered_at = as_of - NEW_ORDER_AGO
    after = CustomerFacts(before.order_count + 1, before.total_cents + _cents(amount), before.first_order_at,
                          ordered_at, (before.purchase_days or 0) + 1, before.first_day_cents)
    return _record(classifier, contact_id, after, before, as_of - 2 * NEW_ORDER_AGO, changed=True)


def _first_seen(contact_id: str, as_of: datetime, amount: Decimal) -> CustomerRecord:
    ordered_at = as_of - NEW_ORDER_AGO
    facts = CustomerFacts(1, _cents(amount), ordered_at, ordered_at, 1, _cents(amount))
    return _customer(contact_id, facts, segment=None, frequency=None, evaluated_at=None, changed=True)


def _after_cancellation(classifier: Classifier, contact_id: str, as_of: datetime, rules: Rules, count: int,
                        spend: Decimal, last: int, first: int, amount: Decimal) -> CustomerRecord:
    """The customer's latest order (of `amount`, placed yesterday) was cancelled just now."""
    after = _facts(rules, as_of, count, spend, last, first)
    ordered_at = _at_day(rules, as_of, 1)
    before = CustomerFacts(count + 1, after.total_cents + _cents(amount), after.first_order_at, ordered_at,
                           count + 1, after.first_day_cents)
    return _record(classifier, contact_id, after, before, as_of - 2 * NEW_ORDER_AGO, changed=True)


def _a_day_later(classifier: Classifier, contact_id: str, as_of: datetime, facts: CustomerFacts) -> CustomerRecord:
    return _record(classifier, contact_id, facts, facts, as_of - timedelta(days=1), changed=False)


def _record(classifier: Classifier, contact_id: str, facts: CustomerFacts, seen: CustomerFacts,
            evaluated_at: datetime, changed: bool) -> CustomerRecord:
    """A customer with `facts` now, last evaluated at `evaluated_at` when their orders were `seen`."""
    previous = classifier.classify(seen, evaluated_at)
    return _customer(contact_id, facts, previous.segment, previous.purchase_frequency, evaluated_at, changed)


def _customer(contact_id: str, facts: CustomerFacts, segment: str | None, frequency: str | None,
              evaluated_at: datetime | None, changed: bool) -> CustomerRecord:
    return CustomerRecord(
        contact_id=contact_id, name=SAMPLE_NAME, email=f"{contact_id}@{SAMPLE_EMAIL_DOMAIN}", facts=facts,
        last_order_ref=f"ORD-{contact_id}-{facts.order_count:03d}", version=1, segment=segment,
        purchase_frequency=frequency, next_check_at=None, evaluated_at=evaluated_at, changed=changed,
    )


def _facts(rules: Rules, as_of: datetime, count: int, spend: Decimal, last: int, first: int) -> CustomerFacts:
    """`count` orders on as many days (at most one a day between the first and the last), spend spread evenly."""
    days = min(count, first - last + 1)
    return CustomerFacts(count, _cents(spend), _at_day(rules, as_of, first), _at_day(rules, as_of, last), days,
                         _cents(spend) // count)


def _sample_model(rules: Rules, as_of: datetime):  # noqa: ANN202 (FittedModel | None; numpy only when asked)
    if not rules.prediction.enabled:
        return None
    from worker.prediction import SavedModel, fitted_model

    saved = SavedModel("fitted", as_of, None, "", as_of - timedelta(hours=6), SAMPLE_MODEL_PARAMS)
    return fitted_model(saved, rules.prediction)


def _at_day(rules: Rules, as_of: datetime, days_ago: int) -> datetime:
    """ORDER_TIME, local, `days_ago` calendar days before `as_of`'s local date."""
    day = local_date(as_of, rules.tz) - timedelta(days=days_ago)
    return datetime.combine(day, ORDER_TIME, tzinfo=rules.tz).astimezone(timezone.utc)


def _day_pairs(rules: Rules, count: int) -> list[tuple[int, int]]:
    """(days since the last order, days since the first) to try for a customer with `count` orders."""
    lasts = list(dict.fromkeys((*_LAST_ORDER_DAYS, *_flip_days(rules, "lastOrderDaysAgo"))))
    pairs = _band_pairs(rules, count)
    for last in lasts:
        if count == 1:
            pairs.append((last, last))
            continue
        firsts = [last + gap for gap in _FIRST_ORDER_GAPS]
        firsts += [day for day in _flip_days(rules, "firstOrderDaysAgo") if day > last]
        pairs += [(last, first) for first in dict.fromkeys(firsts)]
    return pairs


def _band_pairs(rules: Rules, count: int) -> list[tuple[int, int]]:
    """For band triggers: histories whose churn risk, under the sample model, reaches the band today.

    Shifting a history's first and last orders back by the same days leaves its purchases as they were and only
    ages it, so the days the risk needs to reach a band from an order placed today are the days since the last
    order at which it reaches the band on the sample's date."""
    bands = [c.on.band_milestone for c in rules.campaigns.values() if c.on.band_milestone is not None]
    if not bands or not rules.prediction.enabled:
        return []
    from rules.scores import Scorer

    cuts = rules.prediction.churn_bands
    thresholds = [float(cuts.high if band == "High" else cuts.medium) for band in dict.fromkeys(bands)]
    model = _sample_model(rules, SAMPLE_AS_OF)
    scorer = Scorer(model, rules.tz)
    gaps = (0,) if count == 1 else _FIRST_ORDER_GAPS
    pairs = []
    for gap in gaps:
        today = _facts(rules, SAMPLE_AS_OF, count, _SPEND[0], 0, gap)
        for threshold in thresholds:
            [days] = scorer.days_until([today], SAMPLE_AS_OF, [threshold])
            if days is not None:
                pairs.append((days, days + gap))
    return pairs


def _flip_days(rules: Rules, metric: str) -> list[int]:
    """The day counts of `metric` where a segment condition or a milestone changes its answer, and the day before."""
    values = [c.value for s in rules.segments for c in s.conditions if c.metric == metric]
    values += [c.on.day_milestone[1] for c in rules.campaigns.values()
               if c.on.day_milestone is not None and c.on.day_milestone[0] == metric]
    days = sorted({d for v in values for d in (floor(v), floor(v) + 1)})
    return [d for d in days if d > 0]


def _counts(rules: Rules, base: tuple[int, ...]) -> list[int]:
    values = [c.value for s in rules.segments for c in s.conditions if c.metric == "orderCount"]
    derived = [d for v in values for d in (floor(v), floor(v) + 1) if d >= 1]
    return list(dict.fromkeys((*base, *derived)))


def _order_candidates(rules: Rules) -> list[tuple[Decimal, Decimal]]:
    """(total spent before, amount of the latest order) pairs: ordinary ones, then the smallest orders that take a
    total under a spend threshold to some 5 % over it."""
    thresholds = sorted({c.value for s in rules.segments for c in s.conditions if c.metric == "totalSpend"})
    unders = [_dollars(t * share, ROUND_FLOOR) for t in thresholds for share in (Decimal("0.9"), Decimal("0.5"))]
    spends = [s for s in dict.fromkeys((*_SPEND, *unders)) if s > 0]
    overs = [_dollars(t * Decimal("1.05"), ROUND_CEILING, step=Decimal(50)) for t in thresholds]
    crossing = sorted(((spend, over - spend) for over in overs for spend in spends if over > spend),
                      key=lambda pair: pair[1])
    return list(dict.fromkeys([(spend, _ORDER_AMOUNT) for spend in spends] + crossing))


def _dollars(amount: Decimal, rounding: str, step: Decimal = Decimal(1)) -> Decimal:
    return ((amount / step).quantize(Decimal(1), rounding=rounding) * step).quantize(Decimal("0.01"))


def _cents(amount: Decimal) -> int:
    return int(amount * 100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.sample_events", description=__doc__)
    parser.add_argument("--write-n8n", action="store_true", required=True,
                        help="pin each n8n/*.json workflow's sample event (from the shipped rules.yaml)")
    parser.parse_args(argv)
    try:
        changed = write_n8n()
    except ValueError as exc:  # SampleUnavailable too: a workflow file named after no campaign of rules.yaml
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in changed:
        print(f"pinned a new sample in {path.relative_to(N8N_DIR.parent)}")
    if not changed:
        print(f"the pinned samples in {N8N_DIR.name}/ are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
