"""Delivery in a hostile world, against real receivers on 127.0.0.1: a slow webhook never holds up another, claims
live as long as their sends (two senders never send one event twice), a run ends soon after shutdown begins, a
customer's events stay in order across webhooks, and a restart after kill -9 resumes within two claim lifetimes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import worker.delivery as delivery
from rules import Rules, parse_rules
from tests.factories import DEFAULT_SEGMENTS, FREQUENCY_BANDS
from tests.hostile_receiver import HostileReceiver, drip_body
from tests.outbox_helpers import ENV, SECRET, T0, ingest, order_json
from tests.receiver import Receiver
from tests.server_process import ROOT
from worker.delivery import CLAIM_SECONDS, DeliveryRun, Senders, deliver_due
from worker.evaluate import evaluate_due
from worker.store import open_store
from worker.store.base import Store

TWO_WEBHOOKS = """\
version: 1
timezone: UTC
segments:
""" + DEFAULT_SEGMENTS.replace("@VIP@", "5000") + "no_orders_segment: New\n" + FREQUENCY_BANDS + """\
campaigns:
  welcome: {on: {entered: New}, webhook: slow}
  vip:     {on: {entered: VIP}, webhook: fast}
webhooks:
  slow: {url: "@SLOW@", secret: "${WEBHOOK_SECRET}", timeout_seconds: 5, max_concurrency: 2,
         retry_schedule_seconds: [60]}
  fast: {url: "@FAST@", secret: "${WEBHOOK_SECRET}", timeout_seconds: 5, retry_schedule_seconds: [60]}
schedule: {evaluate_every_seconds: 60, deliver_every_seconds: 1}
first_run: emit
"""


def two_webhooks(slow: Receiver, fast: Receiver) -> str:
    return TWO_WEBHOOKS.replace("@SLOW@", slow.url).replace("@FAST@", fast.url)


@pytest.fixture
def slow() -> Iterator[Receiver]:
    with Receiver(SECRET) as running:
        yield running


@pytest.fixture
def fast() -> Iterator[Receiver]:
    with Receiver(SECRET) as running:
        yield running


@pytest.fixture
def rules(slow: Receiver, fast: Receiver) -> Rules:
    return parse_rules(two_webhooks(slow, fast), env=ENV)


@pytest.fixture
def senders() -> Iterator[Senders]:
    built = Senders()
    yield built
    built.close()


def queue(store: Store, rules: Rules, newcomers: int, vips: int) -> None:
    """Welcomes (to the slow webhook) for `newcomers` customers, then VIP events (fast) for `vips` others."""
    ingest(store, [order_json(f"N{n:03d}", f"N{n:03d}-1", T0 - timedelta(days=2)) for n in range(newcomers)]
           + [order_json(f"V{n:03d}", f"V{n:03d}-1", T0 - timedelta(days=50), "6000.00") for n in range(vips)])
    assert evaluate_due(store, rules, T0).events == newcomers + vips


def test_a_slow_webhook_never_holds_up_another(store, rules, senders, slow, fast):
    slow.respond_with(200, times=100, delay=1.0)
    queue(store, rules, newcomers=8, vips=3)
    started = time.monotonic()

    run = deliver_due(store, rules, senders, T0, "sender")

    assert run == DeliveryRun(delivered=11)
    fast_done = max(r.received_at for r in fast.requests)
    slow_done = max(r.received_at for r in slow.requests)
    assert (slow_done - fast_done).total_seconds() > 2, "the fast webhook finished long before the slow one"
    assert time.monotonic() - started >= 3.5, "the slow one really was slow (8 sends, 2 at a time, 1 s each)"


def test_two_senders_never_send_one_event_twice_even_when_sends_outlast_a_claim(
        store, rules, slow, fast, database_url, monkeypatch):
    monkeypatch.setattr(delivery, "CLAIM_SECONDS", 1.5)  # claims that would lapse mid-run without the heartbeat
    monkeypatch.setattr(delivery, "HEARTBEAT_SECONDS", 0.3)
    slow.respond_with(200, times=100, delay=0.5)
    queue(store, rules, newcomers=12, vips=0)
    stores = [open_store(database_url), open_store(database_url)]
    senders = [Senders(), Senders()]
    results: list[DeliveryRun] = []

    def sender(n: int) -> None:
        # The senders' clock runs with the wall clock, so that claims really lapse unless renewed.
        for _ in range(40):
            now = T0 + timedelta(seconds=time.monotonic() - began)
            run = deliver_due(stores[n], rules, senders[n], now, f"sender-{n}")
            results.append(run)
            if run.attempted == 0 and not stores[n].list_events("pending", 1):
                return
            time.sleep(0.1)

    began = time.monotonic()
    threads = [threading.Thread(target=sender, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for built in senders:
        built.close()

    ids = slow.delivered_ids()
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 12, "each event sent exactly once"
    assert time.monotonic() - began > 2 * delivery.CLAIM_SECONDS, "the sends outlasted a claim's life"


def test_a_customers_later_event_to_another_webhook_waits_for_the_earlier_ones_retry(store, senders, slow, fast):
    # One move, two campaigns on two webhooks: the welcome mail (slow) is queued before the CRM entry (fast).
    rules = parse_rules(two_webhooks(slow, fast).replace("  vip:     {on: {entered: VIP}, webhook: fast}",
                                                         "  crm:     {on: {entered: New}, webhook: fast}"), env=ENV)
    ingest(store, [order_json("C-1", "C-1-1", T0 - timedelta(days=2))])
    assert [e.campaign for e in store.list_events(None, 10)] == [] and evaluate_due(store, rules, T0).events == 2
    slow.respond_with(500)

    first = deliver_due(store, rules, senders, T0 + timedelta(seconds=2), "sender")
    meanwhile = deliver_due(store, rules, senders, T0 + timedelta(seconds=30), "sender")

    assert (first, meanwhile) == (DeliveryRun(retrying=1), DeliveryRun()), "the CRM event waits for the welcome"
    assert fast.requests == []
    assert deliver_due(store, rules, senders, T0 + timedelta(minutes=2), "sender") == DeliveryRun(delivered=1)
    assert deliver_due(store, rules, senders, T0 + timedelta(minutes=2), "sender") == DeliveryRun(delivered=1)
    assert [r.json["campaign"] for r in slow.requests + fast.requests] == ["welcome", "welcome", "crm"]
    assert fast.requests[0].received_at >= slow.requests[-1].received_at


# Real scheduler processes ----------------------------------------------------------------------------------------

def scheduler(tmp_path: Path, env: dict[str, str], name: str) -> subprocess.Popen:
    with (tmp_path / f"{name}.log").open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "worker", "scheduler"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)


@pytest.fixture
def process_env(tmp_path: Path, slow: Receiver, fast: Receiver, database_url: str) -> dict[str, str]:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(two_webhooks(slow, fast).replace("retry_schedule_seconds: [60]", "retry_schedule_seconds: "
                                                           "[1]"), encoding="utf-8")
    return {**os.environ, "DATABASE_URL": database_url, "RULES_FILE": str(rules_file), "WEBHOOK_SECRET": SECRET,
            "LOG_FORMAT": "text"}


def live_welcomes(store: Store, rules_text: str, count: int) -> None:
    """Welcome events for customers who ordered just now, so the scheduler's real clock sees them still New."""
    rules = parse_rules(rules_text, env=ENV)
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    ingest(store, [order_json(f"L{n:03d}", f"L{n:03d}-1", now - timedelta(hours=1)) for n in range(count)], now)
    assert evaluate_due(store, rules, now).events == count


def test_sigterm_ends_a_delivery_run_within_one_attempt(tmp_path, store, slow, process_env):
    slow.respond_with(200, times=100, delay=2.0)
    live_welcomes(store, Path(process_env["RULES_FILE"]).read_text(), 20)
    process = scheduler(tmp_path, process_env, "scheduler")
    try:
        slow.wait_for(2, timeout=20)
        asked = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        took = time.monotonic() - asked
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert took < 5 + 2, f"exited {took:.1f}s after SIGTERM: more than one attempt's deadline (5 s) and slack"
    statuses = [e.status for e in store.list_events(None, 100)]
    assert statuses.count("pending") + statuses.count("delivered") == 20, "nothing lost, the rest handed back"
    assert statuses.count("pending") > 0


def test_after_kill_9_a_restarted_scheduler_resumes_within_two_claim_lifetimes(tmp_path, store, slow,
                                                                               process_env):
    slow.respond_with(200, times=200, delay=1.0)
    live_welcomes(store, Path(process_env["RULES_FILE"]).read_text(), 30)
    first = scheduler(tmp_path, process_env, "first")
    try:
        slow.wait_for(2, timeout=20)
        first.kill()
        first.wait()
        killed_at = time.monotonic()
        seen = len(slow.requests)
        second = scheduler(tmp_path, process_env, "second")
        try:
            slow.wait_for(seen + 3, timeout=2 * CLAIM_SECONDS + 10)
            resumed = time.monotonic() - killed_at
        finally:
            second.kill()
            second.wait()
    finally:
        if first.poll() is None:
            first.kill()
    print(f"\nresumed {resumed:.1f}s after the kill")
    assert resumed < 2 * CLAIM_SECONDS + 5, f"resumed {resumed:.1f}s after the kill"


def test_an_unordered_campaign_is_sent_while_the_customers_earlier_event_is_retried(store, senders, slow, fast):
    rules = parse_rules(two_webhooks(slow, fast).replace(
        "  vip:     {on: {entered: VIP}, webhook: fast}",
        "  crm:     {on: {entered: New}, webhook: fast, ordered: false}"), env=ENV)
    ingest(store, [order_json("C-1", "C-1-1", T0 - timedelta(days=2))])
    assert evaluate_due(store, rules, T0).events == 2
    slow.respond_with(500)

    run = deliver_due(store, rules, senders, T0 + timedelta(seconds=2), "sender")

    assert run == DeliveryRun(delivered=1, retrying=1)
    assert [r.json["campaign"] for r in fast.requests] == ["crm"]


def test_a_receiver_that_drips_its_answer_neither_hangs_deliver_nor_starves_the_other_webhook(tmp_path, store, fast):
    with HostileReceiver() as dripping:
        dripping.play(*[drip_body() for _ in range(4)])
        text = (TWO_WEBHOOKS.replace("@SLOW@", dripping.url).replace("@FAST@", fast.url)
                .replace("timeout_seconds: 5, max_concurrency: 2", "timeout_seconds: 2, max_concurrency: 2")
                # queued at T0, sent at the real clock: not re-checked (the drip is this test's subject)
                .replace("{entered: New}, webhook: slow}", "{entered: New}, webhook: slow, recheck: false}"))
        rules_file = tmp_path / "rules.yaml"
        rules_file.write_text(text, encoding="utf-8")
        rules = parse_rules(text, env=ENV)
        queue(store, rules, newcomers=4, vips=3)
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/segments.db", "RULES_FILE": str(rules_file),
               "WEBHOOK_SECRET": SECRET}
        began = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "worker", "deliver"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)
        took = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    assert "delivered: 3" in done.stdout and "retrying later: 4" in done.stdout
    assert took < 2 * 2 + 6, f"deliver took {took:.1f}s: two rounds of 2 s attempts, plus start-up"
    assert len(fast.requests) == 3
    assert {e.last_error for e in store.list_events("pending", 10)} == {"no complete answer from slow within 2s"}
