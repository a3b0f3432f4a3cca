"""The command line (`python -m worker ...`): parse, call a use case, format. Exit 1 on user errors, with why."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

import click
from tqdm import tqdm

from rules import Classifier, RulesError
from worker import __version__
from worker.clock import utc_now
from worker.delivery import Senders, deliver_due
from worker.evaluate import DryRun, EvaluationRefused, check_as_of, evaluate_due
from worker.evaluate import dry_run as plan_run
from worker.ingest import ImportInterrupted, import_order_file
from worker.prediction import refresh_model_safely, summarize_after_evaluation
from worker.rfm_boundaries import load_cutoffs, refresh_rfm
from worker.rules_file import SHIPPED_RULES, RulesSource, load_order_rules, load_rules_file
from worker.serialize import customer_json, event_json, parse_instant
from worker.settings import Settings, SettingsError
from worker.shards import EVALUATION_LEASE_SECONDS, ShardLeases
from worker.store import open_store
from worker.store.base import EVENT_STATUSES, HELD_OUT, HELD_OUT_NOT_REPLAYED, SHARDS, SUPERSEDED, Store

SHOWN_ERRORS = 20


class ConfigurationError(click.ClickException):
    """A setting, the rules or the store is not usable: one line naming it and the fix, exit code 2."""

    exit_code = 2


class Context:
    """Lazily opened settings, store and rules, so `rules check` works without a database and vice versa."""

    def __init__(self) -> None:
        try:
            self.settings = Settings.from_env()
        except SettingsError as exc:
            raise ConfigurationError(str(exc)) from None
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        """The store, which must exist already: reading an unset or mistyped DATABASE_URL creates nothing."""
        return self._open_store(create=False)

    @property
    def writable_store(self) -> Store:
        """The store, created if it is a SQLite file that does not exist yet (importing, serving)."""
        return self._open_store(create=True)

    def _open_store(self, create: bool) -> Store:
        if self._store is None:
            try:
                self._store = open_store(self.settings.database_url, create=create)
            except ValueError as exc:  # StoreUnavailable and malformed URLs, each naming DATABASE_URL
                raise ConfigurationError(str(exc)) from None
            # The store lives as long as the command: its connections close when the command ends.
            click.get_current_context().call_on_close(self._store.close)
        return self._store

    def rules_source(self) -> RulesSource:
        try:
            return RulesSource(self.settings.rules_file, self.settings.env)
        except RulesError as exc:
            raise ConfigurationError(f"the rules were refused:\n{exc}") from None

    def ready_to_serve(self) -> RulesSource:
        """Check the rules and the store before a server binds its port or a scheduler starts: a problem is one
        line and exit code 2, never a traceback from inside a running server. Delivery settings are not needed."""
        source = self.rules_source()
        store = self.writable_store
        try:
            store.ping()
        except Exception as exc:  # whatever the backend raises, said in one line
            raise ConfigurationError(f"DATABASE_URL: the store does not answer: {exc}") from None
        return source


pass_context = click.make_pass_decorator(Context, ensure=True)


def _as_of(value: str | None) -> datetime:
    if value is None:
        return utc_now()
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--as-of") from None


@click.group()
@click.version_option(__version__, "--version", "-V", prog_name="segment-worker", message="%(prog)s %(version)s")
@click.pass_context
def main(ctx: click.Context) -> None:
    """segment-worker: lifecycle segments, transitions and n8n campaign events for every customer."""
    ctx.obj = Context()
    from worker.logs import configure_logging

    settings = ctx.obj.settings
    configure_logging(settings.log_level, settings.log_format, settings.env)
    # APScheduler logs every job run at INFO; our jobs log what they did themselves.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.getLogger().level))
    logging.getLogger("botocore").setLevel(max(logging.WARNING, logging.getLogger().level))  # "Found credentials"


# evaluation and delivery -----------------------------------------------------------------------------------

@main.command()
@click.option("--as-of", help="Evaluate at this ISO date/datetime instead of now (not ahead of the clock, not "
                              "before the last run).")
@click.option("--dry-run", is_flag=True, help="Print what a run would do (at any --as-of) and write nothing.")
@pass_context
def evaluate(ctx: Context, as_of: str | None, dry_run: bool) -> None:
    """Run one evaluation now: customers due or changed get their segment; moves become events."""
    rules = ctx.rules_source().current()
    moment = _as_of(as_of)
    if dry_run:
        _print_dry_run(plan_run(ctx.store, rules, moment), moment)
        return
    try:
        check_as_of(ctx.writable_store, moment, utc_now())
    except EvaluationRefused as exc:
        raise click.ClickException(f"--as-of {exc}") from None
    refresh_rfm(ctx.writable_store, rules, moment)
    fitted = refresh_model_safely(ctx.writable_store, rules, moment)
    # Beside running schedulers: the shards none of them holds, each under its lease for the whole run.
    leases = ShardLeases(ctx.writable_store, "evaluate", f"cli:{socket.gethostname()}:{os.getpid()}", utc_now,
                         EVALUATION_LEASE_SECONDS)
    held = leases.take_free()
    try:
        result = evaluate_due(ctx.writable_store, rules, moment, leases=leases, together=True)
    finally:
        leases.release_all()
    summarize_after_evaluation(ctx.writable_store, rules, fitted, moment)
    mode = " (first run: baseline recorded silently)" if result.baseline else ""
    click.echo(f"customers evaluated: {result.customers}\ntransitions: {result.transitions}\n"
               f"events queued: {result.events}\nskipped (changed meanwhile): {result.skipped}\n"
               f"errors: {result.errors}\nseconds: {result.seconds:.3f}{mode}")
    if len(held) < SHARDS:
        click.echo(f"{SHARDS - len(held)} of {SHARDS} shards were being evaluated by a running scheduler: left to it")


def _print_dry_run(plan: DryRun, moment: datetime) -> None:
    scope = "every customer (first run or changed rules)" if plan.everyone else "customers due or changed"
    click.echo(f"dry run at {moment.isoformat()}: nothing was written\n"
               f"customers that would be evaluated: {plan.customers} ({scope}) in {plan.seconds:.2f}s")
    if plan.baseline:
        click.echo("first run with first_run: baseline: segments would be recorded silently, nothing announced")
    if plan.recount_statuses:
        click.echo("orders.exclude_statuses changed: a real run first counts the affected orders again "
                   "(not reflected here)")
    click.echo(f"moves: {sum(plan.moves.values())}")
    for (before, after), count in plan.moves.most_common():
        sample = ", ".join(plan.samples[(before, after)])
        click.echo(f"  {before or '(new)':>10} -> {after:<10} {count:>7}   e.g. {sample}")
    click.echo(f"events that would be queued: {sum(plan.campaigns.values())}")
    for campaign, count in plan.campaigns.most_common():
        click.echo(f"  campaign {campaign}: {count}")
    if plan.errors:
        click.echo(f"customers that could not be evaluated: {plan.errors} (see the log)")


@main.command()
@pass_context
def deliver(ctx: Context) -> None:
    """Deliver the events that are due, once."""
    rules = ctx.rules_source().current()
    if rules.delivery_problem is not None:
        raise click.ClickException(rules.delivery_problem)
    senders = Senders()
    total = None
    try:
        while True:
            run = deliver_due(ctx.store, rules, senders, utc_now(), f"cli:{os.getpid()}")
            total = run if total is None else total + run
            if run.attempted == 0:
                break
    finally:
        senders.close()
    click.echo(f"delivered: {total.delivered}\nretrying later: {total.retrying}\ndead: {total.dead}\n"
               f"superseded (move undone, not sent): {total.superseded}")


# ingest ----------------------------------------------------------------------------------------------------

@main.command("import-orders")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--skip-invalid", is_flag=True, help="Import the valid records even if some are invalid (it still "
                                                  "fails when none is valid).")
@pass_context
def import_orders(ctx: Context, file: Path, skip_invalid: bool) -> None:
    """Record orders from a CSV or JSON Lines file (upsert by orderReference); the next evaluation decides.

    The whole file is checked first: one invalid record means nothing is stored (unless --skip-invalid). The
    orders are then stored in batches of a few thousand, each its own short transaction, so the API and the
    scheduler never wait on a long import for more than one batch (a fraction of a second). An interrupted import
    (killed, a full disk, a busy store) keeps the batches it stored, and running the same file again resumes after
    them. Running a finished import again re-applies the file: orders already as it says stay unchanged.
    """
    started = time.perf_counter()
    try:
        order_rules = load_order_rules(ctx.settings.rules_file, ctx.settings.env)
    except RulesError as exc:
        raise click.ClickException(f"the rules were refused:\n{exc}") from None
    with file.open("rb") as counting:
        lines = sum(1 for _ in counting)
    try:
        with tqdm(total=lines, unit="orders", disable=None, file=sys.stderr) as bar:
            result = import_order_file(ctx.writable_store, file, utc_now(), skip_invalid, bar.update,
                                       order_rules=order_rules)
    except (ValueError, ImportInterrupted) as exc:  # each names the file (and line)
        raise click.ClickException(str(exc)) from None
    for error in result.rejected[:SHOWN_ERRORS]:
        click.echo(f"rejected {error}", err=True)
    if len(result.rejected) > SHOWN_ERRORS:
        click.echo(f"... and {len(result.rejected) - SHOWN_ERRORS} more rejected records", err=True)
    if not result.stored and skip_invalid:
        raise click.ClickException(f"all {len(result.rejected)} record(s) were invalid; nothing was imported.")
    if not result.stored:
        raise click.ClickException(f"{len(result.rejected)} invalid record(s); nothing was imported. "
                                   "Fix them, or pass --skip-invalid to import the valid ones.")
    if result.resumed_after:
        click.echo(f"resumed at record {result.resumed_after + 1}: an earlier, interrupted run of this file had "
                   f"stored the {result.resumed_after} before it")
    click.echo(f"imported: {result.inserted}\nupdated: {result.updated}\nunchanged: {result.unchanged}\n"
               f"rejected: {len(result.rejected)}\ncustomers changed: {len(result.customers)}\n"
               f"seconds: {time.perf_counter() - started:.2f}")


# reads -----------------------------------------------------------------------------------------------------

@main.group()
def customers() -> None:
    """Look at customers."""


@customers.command("show")
@click.argument("contact_id")
@click.option("--as-of", help="Evaluate at this ISO date/datetime instead of now.")
@pass_context
def customers_show(ctx: Context, contact_id: str, as_of: str | None) -> None:
    """The API's JSON for one customer."""
    record = ctx.store.get_customer(contact_id)
    if record is None:
        raise click.ClickException(f"customer '{contact_id}' not found")
    classifier = Classifier(ctx.rules_source().current(), load_cutoffs(ctx.store))
    click.echo(json.dumps({"data": customer_json(record, classifier.classify(record.facts, _as_of(as_of)))},
                          indent=2))


@customers.command("export")
@click.option("--segment", help="Only customers in this segment.")
@click.option("--frequency", "purchase_frequency", help="Only customers with this purchase frequency.")
@click.option("--as-of", help="Classify at this ISO date/datetime instead of now.")
@click.option("-o", "--output", type=click.File("w", encoding="utf-8", lazy=True), default="-",
              help="File to write (default: standard output).")
@pass_context
def customers_export(ctx: Context, segment: str | None, purchase_frequency: str | None, as_of: str | None,
                     output) -> None:
    """Customers as CSV (one row each, with segment, frequency, spend and RFM)."""
    from worker.export import csv_chunks, export_rows

    rules = ctx.rules_source().current()
    _check_choice(segment, rules.segment_names, "--segment", "a segment")
    _check_choice(purchase_frequency, rules.frequency_names, "--frequency", "a purchase frequency")
    classifier = Classifier(rules, load_cutoffs(ctx.store))
    rows = export_rows(ctx.store, classifier, _as_of(as_of), segment, purchase_frequency, use_stored=as_of is None)
    for chunk in csv_chunks(rows):
        output.write(chunk)


def _check_choice(value: str | None, valid: list[str], option: str, what: str) -> None:
    """The API's check of a filter value (exact names, as the API compares them), as a usage error."""
    if value is not None and value not in valid:
        raise click.BadParameter(f"'{value}' is not {what}; use one of: {', '.join(valid)}", param_hint=option)


@main.group()
def rules() -> None:
    """Check rules files."""


@rules.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@pass_context
def rules_check(ctx: Context, file: Path | None) -> None:
    """Validate a rules file (default: RULES_FILE); exit 1 naming file, line and field of each problem."""
    path = file or Path(ctx.settings.rules_file)
    try:
        loaded = load_rules_file(path, ctx.settings.env)
    except RulesError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1) from None
    segments = " > ".join(loaded.segment_names)
    click.echo(f"{path}: ok ({loaded.rules_version})\nsegments: {segments}\n"
               f"campaigns: {', '.join(loaded.campaigns) or 'none'}\ntimezone: {loaded.timezone}")
    if loaded.unset_variables:
        names = ", ".join(loaded.unset_variables)
        click.echo(f"warning: {names} {'is' if len(loaded.unset_variables) == 1 else 'are'} not set: webhooks "
                   f"{', '.join(loaded.undeliverable)} cannot deliver until then (checking, evaluating and the API "
                   "work without)", err=True)


@rules.command("init")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace the file if it exists.")
@pass_context
def rules_init(ctx: Context, file: Path | None, force: bool) -> None:
    """Write the shipped rules (four segments, four campaigns, commented) to FILE (default: RULES_FILE)."""
    path = file or Path(ctx.settings.rules_file)
    if path.exists() and not force:
        raise click.ClickException(f"{path} exists already; edit it, or pass --force to replace it")
    try:
        path.write_bytes(SHIPPED_RULES.read_bytes())
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from None
    click.echo(f"wrote {path}: edit the thresholds and campaigns, then `segment-worker rules check {path}`")


@rules.command("preview")
@click.argument("candidate", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--as-of", help="Compare at this ISO date/datetime instead of now.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of a table.")
@pass_context
def rules_preview(ctx: Context, candidate: Path, as_of: str | None, as_json: bool) -> None:
    """Who would move, and which campaigns would fire, if CANDIDATE replaced the rules in force. Writes nothing."""
    from worker.rules_preview import preview_json, preview_store

    try:
        proposed = load_rules_file(candidate, ctx.settings.env)
    except RulesError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1) from None
    current = ctx.rules_source().current()
    moment = _as_of(as_of)
    started = time.perf_counter()
    result = preview_store(ctx.store, current, proposed, moment)
    seconds = time.perf_counter() - started
    if as_json:
        click.echo(json.dumps(preview_json(result, current, proposed, moment), indent=2))
        return
    click.echo(f"{result.customers} customers compared at {moment.isoformat()} in {seconds:.2f}s; "
               f"{result.moved} would move")
    for (before, after), count in result.moves.most_common():
        sample = ", ".join(result.samples[(before, after)])
        click.echo(f"  {before:>10} -> {after:<10} {count:>7}   e.g. {sample}")
    for campaign, count in result.campaigns.most_common():
        click.echo(f"  campaign {campaign}: {count} event(s) would be sent")
    for name in proposed.running_experiments:
        click.echo(f"experiment {name}, per arm:")
        for arm, settings in proposed.experiments[name].arms.items():
            moves = result.arm_moves[(name, arm)]
            shown = ", ".join(f"{before} -> {after} {count}" for (before, after), count in moves.most_common())
            click.echo(f"  {arm} ({settings.value}): {result.arm_customers.get((name, arm), 0)} customers, "
                       f"{sum(moves.values())} would move{': ' + shown if shown else ''}")


@main.group()
def events() -> None:
    """The webhook event outbox."""


@events.command("list")
@click.option("--status", type=click.Choice(EVENT_STATUSES))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@pass_context
def events_list(ctx: Context, status: str | None, limit: int) -> None:
    """List events, oldest first."""
    found = ctx.store.list_events(status, limit)
    for event in found:
        view = event_json(event)
        click.echo(f"{view['id']}  {view['status']:<9} {view['campaign']:<10} {view['contactID']:<14} "
                   f"attempts={view['attempts']} {view['lastError'] or ''}".rstrip())
    click.echo(f"{len(found)} event(s)", err=True)


@events.command("replay")
@click.argument("event_id", required=False)
@click.option("--dead", "all_dead", is_flag=True, help="Every dead event (of --campaign, if given), oldest first.")
@click.option("--campaign", help="With --dead: only this campaign's dead events.")
@pass_context
def events_replay(ctx: Context, event_id: str | None, all_dead: bool, campaign: str | None) -> None:
    """Queue an event (typically a dead one) for delivery again now; or every dead event with --dead."""
    if all_dead == (event_id is not None):
        raise click.UsageError("give one EVENT_ID, or --dead (with --campaign C for one campaign's)")
    if campaign is not None and not all_dead:
        raise click.UsageError("--campaign goes with --dead")
    if all_dead:
        _check_choice(campaign, list(ctx.rules_source().current().campaigns), "--campaign", "a campaign")
        dead, total = ctx.store.count_events("dead", campaign), 0
        # Bounded by the count at the start: a delivery that kills them again as fast cannot keep this going.
        while total < dead and (replayed := ctx.store.replay_dead_events(utc_now(), campaign)):
            total += replayed
        which = f" of campaign {campaign}" if campaign else ""
        click.echo(f"{total} dead event(s){which} queued for delivery; each is checked again just before it is sent")
        return
    event = ctx.store.get_event(event_id)
    if event is not None and event.status == HELD_OUT:
        raise click.ClickException(f"event '{event_id}' is not replayed: {HELD_OUT_NOT_REPLAYED}")
    if event is None or not ctx.store.replay_event(event_id, utc_now()):
        raise click.ClickException(f"event '{event_id}' not found")
    how = ("it will be sent as it is, without the re-check that superseded it" if event.status == SUPERSEDED
           else "it is checked again just before it is sent")
    click.echo(f"{event_id} queued for delivery; {how}")


# serving ---------------------------------------------------------------------------------------------------

@main.command()
@pass_context
def scheduler(ctx: Context) -> None:
    """Run evaluation and delivery on the schedule in rules.yaml until SIGTERM (the Procfile's worker)."""
    from worker.scheduler import Jobs, run_forever

    source = ctx.ready_to_serve()
    run_forever(Jobs(ctx.writable_store, source))


HOST_OPTION = click.option("--host", envvar="HOST", default="0.0.0.0", show_default=True,
                           help="Address to listen on (HOST); 127.0.0.1 keeps it to this machine.")


@main.command()
@click.option("--workers", default=None, type=click.IntRange(1, 64),
              help="Request threads, in eights (default WEB_CONCURRENCY or 2: 16 threads).")
@HOST_OPTION
@pass_context
def api(ctx: Context, workers: int | None, host: str) -> None:
    """Serve the customer API alone (the Procfile's web), on waitress: slow clients hold no thread."""
    try:
        workers = workers or int(os.environ.get("WEB_CONCURRENCY", "2"))
    except ValueError:
        raise ConfigurationError(f"WEB_CONCURRENCY must be a whole number, got {os.environ['WEB_CONCURRENCY']!r}") \
            from None
    _serve(ctx, workers=workers, with_scheduler=False, host=host)


@main.command()
@HOST_OPTION
@pass_context
def serve(ctx: Context, host: str) -> None:
    """Serve the API and run the scheduler in one process (the embedded default)."""
    _serve(ctx, workers=1, with_scheduler=True, host=host)


def _serve(ctx: Context, workers: int, with_scheduler: bool, host: str) -> None:
    from worker.server import CannotListen, serve_api

    source = ctx.ready_to_serve()
    try:
        serve_api(ctx.settings, workers=workers, with_scheduler=with_scheduler, host=host, store=ctx.writable_store,
                  rules_source=source)
    except CannotListen as exc:
        raise ConfigurationError(str(exc)) from None


from worker.cli_campaigns import campaigns  # noqa: E402, I001
from worker.cli_demo import demo  # noqa: E402
from worker.cli_model import model  # noqa: E402
from worker.cli_store import init_db, sync_orders  # noqa: E402
from worker.cli_webhooks import webhooks  # noqa: E402

for command in (campaigns, demo, init_db, model, sync_orders, webhooks):
    main.add_command(command)
