"""The commands about the store itself: `init-db` (create DynamoDB's tables; SQLite makes its own) and
`sync-orders` (read another system's DynamoDB orders table). Click commands that worker.cli registers."""

from __future__ import annotations

import sys
import time

import click
from tqdm import tqdm

from rules import RulesError
from worker.clock import utc_now
from worker.rules_file import load_order_rules
from worker.settings import Settings, SettingsError
from worker.store import open_store
from worker.sync import DEFAULT_SEGMENTS, SyncError, parse_attribute_map
from worker.sync import sync_orders as run_sync


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("init-db")
def init_db() -> None:
    """Create the store's tables if they are missing (DynamoDB: on-demand billing); says what it created."""
    url = _settings().database_url
    if not url.startswith("dynamodb:"):
        try:
            open_store(url).close()  # the SQLite store creates its schema when opened
        except (ValueError, RuntimeError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"SQLite database ready: {url}")
        return
    from worker.store.dynamodb import DynamoConfig, create_tables

    try:
        report = create_tables(DynamoConfig.from_url(url))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for name, created in report:
        click.echo(f"{'created' if created else 'exists '}  {name}")
    click.echo(f"{sum(created for _, created in report)} table(s) created, "
               f"{sum(not created for _, created in report)} already there")


@click.command("sync-orders")
@click.option("--table", required=True, help="The other system's DynamoDB orders table.")
@click.option("--attributes", envvar="SYNC_ATTRIBUTES", default="", show_envvar=True,
              help="Their attribute names: contactID=customer_id,orderReference=order_id,orderDate=created_at,"
                   "total=amount,status=state (unnamed fields keep our names).")
@click.option("--segments", envvar="SYNC_SEGMENTS", default=DEFAULT_SEGMENTS, show_default=True, show_envvar=True,
              type=click.IntRange(1, 1000), help="Parallel scan segments, one thread each.")
@click.option("--page-size", type=click.IntRange(1, 10_000), default=None,
              help="Items per scan request (default: DynamoDB's 1 MB pages).")
@click.option("--region", envvar="SYNC_REGION", show_envvar=True,
              help="The table's region (default: DATABASE_URL's, else the AWS default).")
@click.option("--endpoint-url", envvar="SYNC_ENDPOINT_URL", show_envvar=True,
              help="A DynamoDB-compatible endpoint (default: DATABASE_URL's, else AWS).")
@click.option("--restart", is_flag=True, help="Ignore an interrupted sync's checkpoint and read from the start.")
def sync_orders(table: str, attributes: str, segments: int, page_size: int | None, region: str | None,
                        endpoint_url: str | None, restart: bool) -> None:
    """Import orders from another system's DynamoDB table; an interrupted sync resumes where it stopped."""
    from worker.store.dynamodb import DynamoConfig, SourceTable

    settings = _settings()
    try:
        mapping = parse_attribute_map(attributes)
        store = open_store(settings.database_url)
    except (ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    if settings.database_url.startswith("dynamodb:"):
        own = DynamoConfig.from_url(settings.database_url)
        region, endpoint_url = region or own.region, endpoint_url or own.endpoint_url
    source = SourceTable(table, region, endpoint_url)
    try:
        order_rules = load_order_rules(settings.rules_file, settings.env)
    except RulesError as exc:
        raise click.ClickException(f"the rules were refused:\n{exc}") from None
    try:
        total = source.approximate_items()
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    started = time.perf_counter()
    try:
        with tqdm(total=total, unit="items", disable=None, file=sys.stderr) as bar:
            result = run_sync(store, source, mapping, utc_now(), segments, page_size, restart,
                                 on_page=bar.update, order_rules=order_rules)
    except SyncError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        raise click.ClickException("interrupted: run the same command again to resume where it stopped") from None
    finally:
        store.close()
    for error in result.errors:
        click.echo(f"rejected {error}", err=True)
    if result.rejected > len(result.errors):
        click.echo(f"... and {result.rejected - len(result.errors)} more rejected items", err=True)
    click.echo(f"table: {result.table} ({result.segments} segments{', resumed' if result.resumed else ''})\n"
               f"items read: {result.items}\nimported: {result.inserted}\nupdated: {result.updated}\n"
               f"unchanged: {result.unchanged}\nrejected: {result.rejected}\n"
               f"customers changed: {len(result.customers)}\nseconds: {time.perf_counter() - started:.2f}")

