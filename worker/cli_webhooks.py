"""`python -m worker webhooks ...`: look at the webhooks of the rules and send them test events."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click

from rules import Rules
from rules.schema import Webhook
from worker.cli import ConfigurationError, Context, pass_context
from worker.clock import utc_now
from worker.logs import redact, secret_values
from worker.sample_events import SampleEvent, SampleUnavailable, run_contact_id, sample_event
from worker.subscriptions import webhook_name
from worker.transport import DeliveryError, SendResult, WebhookSender

NO_ANSWER_HINT = ("is n8n running, and is the workflow active? (a test URL /webhook-test/... answers only after "
                  "'Listen for test event' in the editor)")
STATUS_HINTS = {
    401: "check that N8N_HEADER_TOKEN matches the n8n credential 'segment-worker header auth'",
    403: "check that N8N_HEADER_TOKEN matches the n8n credential 'segment-worker header auth'",
    404: "a production URL answers only while the workflow is active; a test URL /webhook-test/... only after "
         "'Listen for test event' in the editor",
}


@click.group()
def webhooks() -> None:
    """The webhooks in the rules."""


@webhooks.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_context
def webhooks_list(ctx: Context, as_json: bool) -> None:
    """Each webhook of the rules: its URL (never its secret or headers), the campaigns sending to it, and whether
    it is configured (every ${VAR} it needs is set); then each subscription made through the API (n8n's trigger
    node), named subscription:<id>."""
    rules = ctx.rules_source().current()
    rows = [_row(rules, name, ctx.settings.env) for name in _webhook_names(rules)]
    try:
        subscriptions = ctx.store.subscriptions()
    except ConfigurationError:  # no store yet: no subscriptions either, and the rules' webhooks are still worth a look
        subscriptions = []
    rows += [{"name": webhook_name(s.id), "url": shown_url(s.url, ctx.settings.env), "campaigns": list(s.campaigns),
              "configured": True, "unset": [], "description": s.description} for s in subscriptions]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = [("webhook", "campaigns", "url")] + [
        (row["name"], ", ".join(row["campaigns"]) or "-",
         row["url"] if row["configured"] else f"not configured: {_unset_words(row['unset'])}")
        for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(2)]
    for name, campaigns, url in table:
        click.echo(f"{name:<{widths[0]}}  {campaigns:<{widths[1]}}  {url}")
    if rules.delivery_problem is not None:
        click.echo(rules.delivery_problem, err=True)


@webhooks.command("test")
@click.argument("name")
@click.option("--campaign", help="Send this campaign's sample (default: the first campaign using the webhook).")
@click.option("--json", "as_json", is_flag=True, help="Print what was sent and the answer as JSON.")
@pass_context
def webhooks_test(ctx: Context, name: str, campaign: str | None, as_json: bool) -> None:
    """Send one signed sample event to webhook NAME and print the answer; exit 1 unless it is a 2xx.

    The sample is a made-up customer (contactID sample-..., an address at example.com, "test": true) whose move
    fires the campaign, signed and sent as the worker sends real events. Nothing is stored: it is not an outbox
    event and is never retried.
    """
    rules = ctx.rules_source().current()
    campaign = _campaign_for(rules, name, campaign)
    webhook = _configured(rules, name)
    sent_at = utc_now()
    try:
        sample = sample_event(rules, campaign, sent_at, run_contact_id(sent_at))
    except SampleUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    msg_id, body = sample.message(webhook.batch_size)
    url = shown_url(webhook.url, ctx.settings.env)
    with WebhookSender(name, webhook) as sender:
        try:
            outcome: SendResult | DeliveryError = sender.send(msg_id, body.encode("utf-8"), utc_now())
        except DeliveryError as exc:
            outcome = exc
    if as_json:
        click.echo(json.dumps(_report(name, url, sample, msg_id, body, outcome), indent=2, ensure_ascii=False))
        if isinstance(outcome, DeliveryError):
            raise SystemExit(1)
        return
    batch = f" (as a batch of one: batch_size {webhook.batch_size})" if webhook.batch_size > 1 else ""
    click.echo(f"POST {url}\n"
               f"  webhook-id  {msg_id}{batch}\n"
               f"  campaign    {campaign} ({sample.move})\n"
               f"  customer    {sample.contact_id} (a sample: \"test\": true)")
    if isinstance(outcome, SendResult):
        said = f": {outcome.excerpt}" if outcome.excerpt else ""
        click.echo(f"answer: HTTP {outcome.status} in {outcome.duration_ms} ms{said}")
        return
    if outcome.status is not None:
        click.echo(f"answer: HTTP {outcome.status} in {outcome.duration_ms} ms")
    raise click.ClickException(_failure_line(outcome, url))


def shown_url(url: str, env: Mapping[str, str]) -> str:
    """A webhook URL fit to print: without `user:password@`, and with any secret of the environment masked."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return redact(urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)), secret_values(env))


def _webhook_names(rules: Rules) -> list[str]:
    return list(dict.fromkeys([*rules.webhooks, *rules.undeliverable]))


def _campaigns_using(rules: Rules, name: str) -> list[str]:
    return [campaign for campaign, settings in rules.campaigns.items() if settings.webhook == name]


def _campaign_for(rules: Rules, name: str, campaign: str | None) -> str:
    """The campaign to sample for webhook `name`; usage errors name the valid choices."""
    names = _webhook_names(rules)
    if name not in names:
        raise click.BadParameter(f"'{name}' is not a webhook of the rules; use one of: {', '.join(names)}",
                                 param_hint="NAME")
    using = _campaigns_using(rules, name)
    if campaign is None:
        if not using:
            raise click.ClickException(f"no campaign sends to webhook '{name}', so there is no event to sample; "
                                       f"campaigns: {', '.join(rules.campaigns) or 'none'}")
        return using[0]
    if campaign not in rules.campaigns:
        raise click.BadParameter(f"'{campaign}' is not a campaign of the rules; campaigns using webhook '{name}': "
                                 f"{', '.join(using) or 'none'}", param_hint="--campaign")
    if campaign not in using:
        raise click.BadParameter(f"campaign '{campaign}' sends to webhook '{rules.campaigns[campaign].webhook}', "
                                 f"not '{name}'; campaigns using '{name}': {', '.join(using) or 'none'}",
                                 param_hint="--campaign")
    return campaign


def _configured(rules: Rules, name: str) -> Webhook:
    unset = rules.undeliverable.get(name)
    if unset:
        raise click.ClickException(f"webhook '{name}' is not configured: {_unset_words(unset)}; set "
                                   f"{'it' if len(unset) == 1 else 'them'} in the environment")
    return rules.webhooks[name]


def _unset_words(names: tuple[str, ...] | list[str]) -> str:
    return f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} not set"


def _row(rules: Rules, name: str, env: Mapping[str, str]) -> dict[str, Any]:
    webhook = rules.webhooks.get(name)
    return {"name": name, "url": None if webhook is None else shown_url(webhook.url, env),
            "campaigns": _campaigns_using(rules, name), "configured": webhook is not None,
            "unset": list(rules.undeliverable.get(name, ()))}


def _failure_line(failure: DeliveryError, url: str) -> str:
    if failure.status is None:
        return f"no answer from {url}: {failure.message}; {NO_ANSWER_HINT}"
    hint = STATUS_HINTS.get(failure.status)
    return f"{failure.message}{'; ' + hint if hint else ''}"


def _report(name: str, url: str, sample: SampleEvent, msg_id: str, body: str,
            outcome: SendResult | DeliveryError) -> dict[str, Any]:
    answer = None
    if isinstance(outcome, SendResult) or outcome.status is not None:
        answer = {"status": outcome.status, "ms": outcome.duration_ms}
        if isinstance(outcome, SendResult):
            answer["body"] = outcome.excerpt
    return {"webhook": name, "url": url, "campaign": sample.campaign, "webhookId": msg_id, "body": json.loads(body),
            "ok": isinstance(outcome, SendResult), "answer": answer,
            "error": None if isinstance(outcome, SendResult) else _failure_line(outcome, url)}
