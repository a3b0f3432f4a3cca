"""`python -m worker demo`: a generated sample of customers and orders, evaluated and served."""

from __future__ import annotations

import base64
import os
import secrets

import click

from rules import RulesError
from worker.cli import Context, pass_context
from worker.clock import utc_now
from worker.evaluate import evaluate_due
from worker.ingest import ingest_orders
from worker.rfm_boundaries import refresh_rfm
from worker.rules_file import RulesSource
from worker.settings import Settings
from worker.store import open_store


@click.command()
@click.option("--customers", "count", default=400, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--no-serve", is_flag=True, help="Load the sample and stop.")
@pass_context
def demo(ctx: Context, count: int, no_serve: bool) -> None:
    """Load generated sample customers and orders, evaluate them, then serve."""
    from worker.demo import generate_orders

    env = dict(ctx.settings.env)
    if not env.get("API_KEYS"):
        env["API_KEYS"] = "demo-" + secrets.token_urlsafe(12)
    if not env.get("WEBHOOK_SECRET"):
        env["WEBHOOK_SECRET"] = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    if "DATABASE_URL" not in ctx.settings.env:
        env["DATABASE_URL"] = "sqlite:///data/demo.db"
    os.environ.update({k: env[k] for k in ("API_KEYS", "WEBHOOK_SECRET", "DATABASE_URL")})
    settings = Settings.from_env(env)
    store = open_store(settings.database_url)
    try:
        rules_source = RulesSource(settings.rules_file, settings.env)
    except RulesError as exc:
        raise click.ClickException(f"the rules were refused:\n{exc}") from None
    now = utc_now()
    orders = list(generate_orders(count, now))
    result = ingest_orders(store, orders, now, rules_source.current().orders)
    refresh_rfm(store, rules_source.current(), now)
    run = evaluate_due(store, rules_source.current(), now)
    click.echo(f"sample: {count} customers, {len(orders)} orders ({result.inserted} new); "
               f"evaluated {run.customers} customers in {run.seconds:.2f}s")
    for summary in store.segment_summary():
        click.echo(f"  {summary.segment:<8} {summary.customers:>5} customers")
    key = settings.api_keys[0]
    click.echo(f"\nAPI key: {key}\nTry:  curl -H 'Authorization: Bearer {key}' "
               f"http://127.0.0.1:{settings.port}/api/segments\n"
               f"      curl -H 'Authorization: Bearer {key}' "
               f"'http://127.0.0.1:{settings.port}/api/customers?segment=VIP&limit=5'\n")
    if not no_serve:
        from worker.server import serve_api

        serve_api(settings, workers=1, with_scheduler=True)
