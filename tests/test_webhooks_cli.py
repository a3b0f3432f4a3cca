"""`webhooks test NAME [--campaign C]` and `webhooks list`, against a real receiver on 127.0.0.1 that checks the
Standard Webhooks signature; the sample sent is the one worker/sample_events.py builds, and nothing is stored."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from rules import parse_rules
from tests.conftest import WEBHOOK_SECRET, Runner
from tests.factories import DEFAULT_SEGMENTS, FREQUENCY_BANDS
from tests.outbox_helpers import free_port
from tests.receiver import Receiver
from worker.cli_webhooks import shown_url
from worker.clock import utc_now
from worker.sample_events import sample_event
from worker.serialize import parse_instant
from worker.store.base import Store
from worker.subscriptions import new_subscription

HEADER_TOKEN = "header-token-0123456789"
RULES = f"""\
version: 1
timezone: UTC
segments:
{DEFAULT_SEGMENTS.replace("@VIP@", "5000")}no_orders_segment: New
{FREQUENCY_BANDS}campaigns:
  welcome:  {{on: {{entered: New}}, webhook: welcome}}
  vip:      {{on: {{entered: VIP}}, webhook: vip}}
  win-back: {{on: {{entered: Dormant}}, webhook: lapsed}}
  at-risk:  {{on: {{reached: {{lastOrderDaysAgo: 75}}}}, segment: Active, webhook: lapsed}}
webhooks:
  welcome: {{url: "${{N8N_WEBHOOK_URL}}/segment-welcome", secret: "${{WEBHOOK_SECRET}}",
             headers: {{X-Segment-Token: "${{N8N_HEADER_TOKEN:-}}"}}}}
  vip:     {{url: "${{N8N_WEBHOOK_URL}}/segment-vip", secret: "${{WEBHOOK_SECRET}}",
             headers: {{X-Segment-Token: "${{N8N_HEADER_TOKEN:-}}"}}}}
  lapsed:  {{url: "${{N8N_WEBHOOK_URL}}/segment-lapsed", secret: "${{WEBHOOK_SECRET}}",
             headers: {{X-Segment-Token: "${{N8N_HEADER_TOKEN:-}}"}}, batch_size: 50}}
  spare:   {{url: "${{N8N_WEBHOOK_URL}}/segment-spare", secret: "${{WEBHOOK_SECRET}}",
             headers: {{X-Segment-Token: "${{N8N_HEADER_TOKEN:-}}"}}}}
"""


@pytest.fixture
def n8n() -> Iterator[Receiver]:
    """Plays n8n: checks WEBHOOK_SECRET's signature and wants the Header Auth token."""
    with Receiver(WEBHOOK_SECRET, path="/webhook") as running:
        running.require_header("X-Segment-Token", HEADER_TOKEN)
        yield running


@pytest.fixture
def rules_text() -> str:
    return RULES


@pytest.fixture
def env(n8n: Receiver) -> dict[str, str]:
    return {"WEBHOOK_SECRET": WEBHOOK_SECRET, "N8N_WEBHOOK_URL": n8n.url, "N8N_HEADER_TOKEN": HEADER_TOKEN}


def without(runner: Runner, *names: str) -> Runner:
    return Runner({k: v for k, v in runner.environment.items() if k not in names})


def with_env(runner: Runner, **values: str) -> Runner:
    return Runner({**runner.environment, **values})


def test_sends_one_signed_sample_event_and_prints_the_answer(runner: Runner, n8n: Receiver) -> None:
    result = runner.invoke("webhooks", "test", "vip")

    assert result.exit_code == 0, result.output
    [request] = n8n.requests
    assert request.path == "/webhook/segment-vip"
    assert request.signature_valid
    assert request.headers["X-Segment-Token"] == HEADER_TOKEN
    body = request.json
    assert request.headers["webhook-id"] == body["id"]
    assert (body["campaign"], body["type"], body["transition"]) == (
        "vip", "segment.entered", {"from": "Active", "to": "VIP"})
    assert body["test"] is True
    assert body["customer"]["contactID"].startswith("sample-")
    assert body["customer"]["email"].endswith("@example.com")
    assert f"POST {n8n.url}/segment-vip" in result.output
    assert f"webhook-id  {body['id']}" in result.output
    assert "campaign    vip (segment.entered: Active -> VIP)" in result.output
    assert "answer: HTTP 200 in " in result.output


def test_the_answer_of_n8n_is_printed_as_it_said_it(runner: Runner, n8n: Receiver) -> None:
    n8n.respond_with(200, body='{"message":"Workflow was started"}')
    result = runner.invoke("webhooks", "test", "vip")
    assert result.exit_code == 0, result.output
    assert re.search(r'answer: HTTP 200 in \d+ ms: {"message":"Workflow was started"}\n', result.output)


def test_the_body_sent_is_the_sample_of_its_moment(runner: Runner, n8n: Receiver, rules_file: Path,
                                                   env: dict[str, str]) -> None:
    runner.invoke("webhooks", "test", "vip")

    [request] = n8n.requests
    sent = request.json
    sample = sample_event(parse_rules(rules_file.read_text(), env=env), "vip", parse_instant(sent["detectedAt"]),
                          sent["customer"]["contactID"])
    # The event id hashes the moment to the microsecond, which the body's millisecond times do not carry.
    assert {**json.loads(sample.body), "id": sent["id"]} == sent


def test_campaign_option_picks_another_campaign_of_the_webhook(runner: Runner, n8n: Receiver) -> None:
    result = runner.invoke("webhooks", "test", "lapsed", "--campaign", "at-risk")

    assert result.exit_code == 0, result.output
    [request] = n8n.requests
    [event] = request.json["events"]
    assert (event["campaign"], event["type"], event["milestone"]) == (
        "at-risk", "milestone.reached", {"metric": "lastOrderDaysAgo", "days": 75})
    assert event["customer"]["metrics"]["lastOrderDaysAgo"] == 75


def test_the_default_campaign_is_the_first_using_the_webhook(runner: Runner, n8n: Receiver) -> None:
    result = runner.invoke("webhooks", "test", "lapsed")

    assert result.exit_code == 0, result.output
    [event] = n8n.requests[0].json["events"]
    assert (event["campaign"], event["transition"]) == ("win-back", {"from": "Active", "to": "Dormant"})


def test_a_batched_webhook_gets_the_sample_as_a_batch_of_one(runner: Runner, n8n: Receiver) -> None:
    result = runner.invoke("webhooks", "test", "lapsed")

    [request] = n8n.requests
    assert request.signature_valid
    assert request.headers["webhook-id"].startswith("bat_")
    assert list(request.json) == ["events"] and len(request.json["events"]) == 1
    assert "(as a batch of one: batch_size 50)" in result.output


def test_json_output_has_what_was_sent_and_the_answer(runner: Runner, n8n: Receiver) -> None:
    result = runner.invoke("webhooks", "test", "welcome", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    [request] = n8n.requests
    assert report["ok"] is True and report["error"] is None
    assert report["answer"]["status"] == 200
    assert (report["webhook"], report["campaign"]) == ("welcome", "welcome")
    assert report["url"] == f"{n8n.url}/segment-welcome"
    assert report["webhookId"] == request.headers["webhook-id"]
    assert report["body"] == request.json
    assert report["body"]["transition"] == {"from": None, "to": "New"}


def test_a_non_2xx_answer_exits_1_with_the_status_and_is_not_retried(runner: Runner, n8n: Receiver) -> None:
    n8n.respond_with(500, body='{"message":"Workflow could not be started"}')

    result = runner.invoke("webhooks", "test", "vip")

    assert result.exit_code == 1
    assert "answer: HTTP 500 in " in result.stdout
    [error] = result.stderr.splitlines()
    assert error.startswith("Error: HTTP 500 from vip") and "Workflow could not be started" in error
    assert len(n8n.requests) == 1


def test_a_wrong_header_token_is_named_as_the_cause_without_showing_it(runner: Runner, n8n: Receiver) -> None:
    result = with_env(runner, N8N_HEADER_TOKEN="a-wrong-token-0123456789").invoke("webhooks", "test", "vip")

    assert result.exit_code == 1
    [error] = result.stderr.splitlines()
    assert "HTTP 403 from vip" in error and "N8N_HEADER_TOKEN" in error
    assert "a-wrong-token-0123456789" not in result.output and HEADER_TOKEN not in result.output


def test_no_answer_is_one_line_that_names_the_url(runner: Runner) -> None:
    base = f"http://127.0.0.1:{free_port()}/webhook"  # nothing listens there

    result = with_env(runner, N8N_WEBHOOK_URL=base).invoke("webhooks", "test", "vip")

    assert result.exit_code == 1
    [error] = result.stderr.splitlines()
    assert error.startswith(f"Error: no answer from {base}/segment-vip: connection refused")
    assert "is n8n running" in error and "Listen for test event" in error
    assert "Traceback" not in result.output


def test_a_timeout_is_one_line_that_names_the_url(runner: Runner, n8n: Receiver, rules_file: Path) -> None:
    rules_file.write_text(RULES.replace('/segment-vip", secret', '/segment-vip", timeout_seconds: 0.3, secret'))
    n8n.respond_with(200, delay=1.5)

    result = runner.invoke("webhooks", "test", "vip")

    assert result.exit_code == 1
    [error] = result.stderr.splitlines()
    assert error.startswith(f"Error: no answer from {n8n.url}/segment-vip: no complete answer from vip within 0.3s")
    assert len(n8n.requests) == 1


@pytest.mark.parametrize(("args", "message"), [
    (("nope",), "'nope' is not a webhook of the rules; use one of: welcome, vip, lapsed, spare"),
    (("vip", "--campaign", "nope"), "'nope' is not a campaign of the rules; campaigns using webhook 'vip': vip"),
    (("welcome", "--campaign", "vip"),
     "campaign 'vip' sends to webhook 'vip', not 'welcome'; campaigns using 'welcome': welcome"),
])
def test_an_unknown_webhook_or_campaign_is_a_usage_error_naming_the_choices(runner: Runner, n8n: Receiver,
                                                                            args: tuple[str, ...],
                                                                            message: str) -> None:
    result = runner.invoke("webhooks", "test", *args)

    assert result.exit_code == 2
    assert message in result.stderr
    assert n8n.requests == []


def test_a_webhook_no_campaign_uses_has_nothing_to_sample(runner: Runner, n8n: Receiver) -> None:
    result = runner.invoke("webhooks", "test", "spare")

    assert result.exit_code == 1
    assert "no campaign sends to webhook 'spare'" in result.stderr
    assert n8n.requests == []


def test_an_unset_secret_is_one_line_naming_the_variable(runner: Runner, n8n: Receiver) -> None:
    result = without(runner, "WEBHOOK_SECRET").invoke("webhooks", "test", "vip")

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "Error: webhook 'vip' is not configured: WEBHOOK_SECRET is not set; set it in the environment"]
    assert n8n.requests == []


def test_a_campaign_no_history_can_fire_is_refused_in_one_line(runner: Runner, n8n: Receiver, rules_file: Path) -> None:
    rules_file.write_text(RULES.replace("  - {name: Active}", "  - {name: Ghost, when: {totalSpend: {lt: 0}}}\n"
                                                              "  - {name: Active}")
                          .replace("campaigns:\n", "campaigns:\n  haunt: {on: {entered: Ghost}, webhook: spare}\n"))

    result = runner.invoke("webhooks", "test", "spare")

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "Error: no sample customer's move fires campaign 'haunt' under these rules (its trigger may need a segment "
        "that no order history reaches)"]
    assert n8n.requests == []


def test_nothing_is_written_to_the_store(runner: Runner, n8n: Receiver, store: Store) -> None:
    assert runner.invoke("webhooks", "test", "vip").exit_code == 0
    assert runner.invoke("webhooks", "test", "lapsed").exit_code == 0

    assert len(n8n.requests) == 2
    assert store.list_events(None, 100) == []
    assert store.count_customers() == 0


def test_list_shows_each_webhook_its_url_and_campaigns_and_no_secret(runner: Runner, n8n: Receiver) -> None:
    result = runner.invoke("webhooks", "list")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "webhook  campaigns          url",
        f"welcome  welcome            {n8n.url}/segment-welcome",
        f"vip      vip                {n8n.url}/segment-vip",
        f"lapsed   win-back, at-risk  {n8n.url}/segment-lapsed",
        f"spare    -                  {n8n.url}/segment-spare",
    ]
    assert WEBHOOK_SECRET not in result.output and HEADER_TOKEN not in result.output
    assert n8n.requests == []


def test_list_shows_the_subscriptions_too_without_their_secrets(runner: Runner, store: Store) -> None:
    made = new_subscription("https://flows:pw-0123456789@n8n.example.com/webhook/abc", ["welcome", "vip"], "flow",
                            utc_now())
    store.add_subscription(made)
    result = runner.invoke("webhooks", "list")

    assert result.exit_code == 0, result.output
    last = result.stdout.splitlines()[-1].split()
    assert last == [f"subscription:{made.id}", "welcome,", "vip", "https://n8n.example.com/webhook/abc"]
    assert made.secret not in result.output and "pw-0123456789" not in result.output
    rows = json.loads(runner.invoke("webhooks", "list", "--json").stdout)
    assert rows[-1] == {"name": f"subscription:{made.id}", "url": "https://n8n.example.com/webhook/abc",
                        "campaigns": ["welcome", "vip"], "configured": True, "unset": [], "description": "flow"}


def test_list_shows_unconfigured_webhooks_and_why(runner: Runner) -> None:
    result = without(runner, "WEBHOOK_SECRET").invoke("webhooks", "list")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[2] == "vip      vip                not configured: WEBHOOK_SECRET is not set"
    assert all("not configured: WEBHOOK_SECRET is not set" in line for line in lines[1:])
    assert result.stderr.startswith("delivery is disabled: WEBHOOK_SECRET is not set")


def test_list_json(runner: Runner, n8n: Receiver) -> None:
    result = without(runner, "N8N_HEADER_TOKEN").invoke("webhooks", "list", "--json")

    rows = json.loads(result.stdout)
    assert rows[2] == {"name": "lapsed", "url": f"{n8n.url}/segment-lapsed", "campaigns": ["win-back", "at-risk"],
                       "configured": True, "unset": []}


def test_a_url_is_shown_without_its_password_or_any_secret() -> None:
    env = {"N8N_HEADER_TOKEN": "query-token-0123456789"}
    url = "https://marketing:hunter2-password@n8n.example.com/webhook/segment-vip?token=query-token-0123456789"

    assert shown_url(url, env) == "https://n8n.example.com/webhook/segment-vip?token=***"
