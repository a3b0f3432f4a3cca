"""Delivery settings are needed only to deliver: with WEBHOOK_SECRET unset every command that does not deliver
works (checking, previewing, importing, evaluating, reading, exporting), `rules check` warns in one line, `deliver`
refuses in one, the scheduler keeps the events waiting in order and says so once, and a running worker refuses a
changed file whose webhooks would need a variable its environment lacks."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tests.conftest import READ_KEY, Runner
from tests.outbox_helpers import ENV, T0, StillClock, ingest, order_json, rules_text
from tests.receiver import Receiver
from worker.api import create_app
from worker.rules_file import RulesSource
from worker.scheduler import Jobs
from worker.settings import Settings
from worker.store import open_store

CSV = """contactID,orderReference,orderDate,total,email,name
C-1,ORD-1,2026-01-10T09:00:00Z,6100.00,ann@example.com,Ann
C-2,ORD-2,2026-02-20T09:00:00Z,80.00,bo@example.com,Bo
"""

WELCOME_AND_VIP = "  welcome: {on: {entered: New}, webhook: n8n}\n  vip: {on: {entered: VIP}, webhook: n8n}\n"
AS_OF = "2026-02-21T12:00:00Z"  # C-2 is New then (first order a day before), C-1 VIP: two events


@pytest.fixture
def no_secret(tmp_path: Path, receiver: Receiver) -> Runner:
    """The CLI with rules whose webhook needs ${WEBHOOK_SECRET}, and an environment without it."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text(receiver.url, first_run="emit", campaigns=WELCOME_AND_VIP), encoding="utf-8")
    return Runner({"DATABASE_URL": f"sqlite:///{tmp_path}/segments.db", "RULES_FILE": str(rules)})


def test_rules_check_passes_and_warns_once_about_the_unset_variable(no_secret):
    result = no_secret.invoke("rules", "check")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: WEBHOOK_SECRET is not set: webhooks n8n cannot deliver until then (checking, "
                        "evaluating and the API work without)"]
    assert ": ok (sha256:" in result.stdout


def test_every_command_that_does_not_deliver_works_without_the_secret(no_secret, tmp_path):
    orders = tmp_path / "orders.csv"
    orders.write_text(CSV, encoding="utf-8")
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text((tmp_path / "rules.yaml").read_text().replace("gt: 5000", "gt: 50"), encoding="utf-8")

    for args in (["import-orders", str(orders)], ["evaluate", "--as-of", AS_OF], ["customers", "show", "C-1"],
                 ["customers", "export", "--segment", "VIP"], ["rules", "preview", str(candidate)],
                 ["evaluate", "--dry-run"], ["events", "list"]):
        result = no_secret.invoke(*args)
        assert result.exit_code == 0, (args, result.output)
        assert "WEBHOOK_SECRET" not in result.stdout, (args, result.output)

    assert '"segment": "VIP"' in no_secret.invoke("customers", "show", "C-1").stdout
    assert "C-1" in no_secret.invoke("customers", "export", "--segment", "VIP").stdout
    assert "2 event(s)" in no_secret.invoke("events", "list").stderr  # queued, waiting for delivery settings


def test_deliver_refuses_in_one_line_and_the_events_keep_waiting(no_secret, tmp_path, receiver):
    orders = tmp_path / "orders.csv"
    orders.write_text(CSV, encoding="utf-8")
    no_secret.invoke("import-orders", str(orders))
    assert "events queued: 2" in no_secret.invoke("evaluate", "--as-of", AS_OF).stdout

    result = no_secret.invoke("deliver")

    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "Error: delivery is disabled: WEBHOOK_SECRET is not set (needed by webhook n8n); set it in the environment "
        "and restart. Evaluation goes on, and events wait in the outbox"]
    store = open_store(f"sqlite:///{tmp_path}/segments.db")
    waiting = store.list_events("pending", 10)
    assert len(waiting) == 2 and all(event.attempts == 0 for event in waiting)
    assert receiver.requests == []
    store.close()


def test_the_scheduler_keeps_events_waiting_says_so_once_and_delivers_once_the_secret_is_there(
        tmp_path, receiver, caplog):
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text(receiver.url), encoding="utf-8")
    store = open_store(f"sqlite:///{tmp_path}/segments.db")
    ingest(store, [order_json("C-1", "ORD-1", T0)])
    clock = StillClock(T0)
    disabled = Jobs(store, RulesSource(rules, {}), clock=clock)
    with caplog.at_level(logging.INFO, logger="worker.scheduler"):
        disabled.evaluate_once()
        assert disabled.deliver_once() is None
        assert disabled.deliver_once() is None
    said = [r.getMessage() for r in caplog.records if "delivery is disabled" in r.getMessage()]
    assert len(said) == 1 and "WEBHOOK_SECRET" in said[0]
    assert [e.attempts for e in store.list_events("pending", 10)] == [0]
    assert receiver.requests == []
    disabled.close()

    enabled = Jobs(store, RulesSource(rules, ENV), clock=clock)  # restarted with the secret set
    run = enabled.deliver_once()
    assert run.delivered == 1 and len(receiver.requests) == 1
    enabled.close()
    store.close()


def test_a_running_worker_refuses_a_changed_file_that_would_stop_its_delivery(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(rules_text("http://127.0.0.1:9/hook"), encoding="utf-8")
    source = RulesSource(path, ENV, wait_seconds=5)
    assert source.current().delivery_problem is None

    needs_token = rules_text("http://127.0.0.1:9/hook", headers={"X-Token": "${N8N_TOKEN}"})
    path.write_text(needs_token, encoding="utf-8")
    stamp = path.stat().st_mtime
    os.utime(path, (stamp + 1, stamp + 1))
    rules = source.current()

    assert rules.delivery_problem is None and "n8n" in rules.webhooks  # the rules in force go on delivering
    assert source.error.startswith("rules.yaml: refused, the rules in force go on delivering: N8N_TOKEN is not set")
    # The same file in a fresh process (started without the variable) loads, with delivery disabled.
    assert RulesSource(path, ENV).current().unset_variables == ("N8N_TOKEN",)


def test_the_api_shows_delivery_as_the_scheduler_found_it_not_as_its_own_environment_sees_it(tmp_path, receiver):
    """The Procfile's web process needs no webhook secret; the worker process has it. /healthz and the dashboard
    say what the scheduler found, and only fall back on their own view before any scheduler has run."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text(receiver.url), encoding="utf-8")
    database_url = f"sqlite:///{tmp_path}/segments.db"
    store = open_store(database_url)
    web = create_app(Settings(database_url=database_url, rules_file=str(rules), api_keys=(READ_KEY,), env={}),
                     store=store, rules_source=RulesSource(rules, {})).test_client()

    before = web.get("/healthz").get_json()
    assert (before["status"], before["delivery"]) == ("degraded", "disabled")  # nothing said yet: its own view

    with_secret = Jobs(open_store(database_url), RulesSource(rules, ENV), clock=StillClock(T0))
    with_secret.deliver_once()
    after = web.get("/healthz").get_json()
    assert (after["status"], after["delivery"], after["deliveryProblem"]) == ("ok", "ok", None)
    with_secret.close()

    without = Jobs(open_store(database_url), RulesSource(rules, {}), clock=StillClock(T0))  # a worker lacking it
    without.deliver_once()
    said = web.get("/healthz").get_json()
    assert said["delivery"] == "disabled" and "WEBHOOK_SECRET is not set" in said["deliveryProblem"]
    without.close()
    store.close()
