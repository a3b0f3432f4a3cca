"""`python -m worker demo`: a generated sample with 90 days of history, served on 127.0.0.1 with its events sent to
a built-in stand-in for n8n (or to a real n8n), and the lines that reach it all printed once it answers.

History events are not marked delivered: they go through delivery like any event, re-checked just before each
send, so a move undone since (a welcome for a customer who is no longer New) is superseded, not sent, and the rest
arrive late, dated when they happened.
"""

from __future__ import annotations

import base64
import logging
import secrets
import shlex
import socket
import string
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import click

from rules import Rules, RulesError
from worker.cli import Context, pass_context
from worker.clock import utc_now
from worker.demo import (
    API_KEY_KEY,
    HISTORY_DAYS,
    WEBHOOK_SECRET_KEY,
    Loaded,
    NotADemoStore,
    kept_secret,
    load_sample,
    sample_anchor,
)
from worker.demo_receiver import REPORT_EVERY_SECONDS, DemoReceiver
from worker.rules_file import SHIPPED_RULES, RulesSource
from worker.settings import DEFAULT_PORT, DEFAULT_RULES_FILE, MIN_API_KEY_CHARS, Settings, SettingsError
from worker.store import open_store
from worker.store.base import DEAD, DELIVERED, PENDING, SUPERSEDED, Store

log = logging.getLogger(__name__)

DEMO_DATABASE_URL = "sqlite:///data/demo.db"
DEFAULT_HOST = "127.0.0.1"
READY_WAIT_SECONDS = 30  # for the port to answer before the lines are printed anyway
KEY_ALPHABET = string.ascii_letters + string.digits
KEY_CHARS = 32  # 190 random bits, after the "demo-" that says where the key comes from
N8N_PROBE_SECONDS = 2  # how long --n8n's host may take to accept a connection before the demo says it is down
SAMPLE_CANDIDATES = 30  # customers looked at to pick the one the printed examples show
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


@dataclass(frozen=True)
class _Access:
    """The key the demo prints (None: it came from API_KEYS, not ours to print) and where it came from."""

    key: str | None
    origin: str


@click.command()
# 600: enough customers for the churn model's minimum base (500 with an order), so the demo shows predictions too.
@click.option("--customers", "count", default=600, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to listen on; 0.0.0.0 lets other machines reach the demo.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help=f"HTTP port [default: PORT or {DEFAULT_PORT}].")
@click.option("--key", help=f"The API key to sign in and call the API with (at least {MIN_API_KEY_CHARS} "
                            "characters) [default: API_KEYS, else one kept in the demo database].")
@click.option("--n8n", "n8n_url", metavar="URL",
              help="Send the events to this n8n (its webhook base URL, like N8N_WEBHOOK_URL: "
                   "http://localhost:5678/webhook) [default: a built-in receiver that prints them].")
@click.option("--no-serve", is_flag=True, help="Load the sample and stop.")
@pass_context
def demo(ctx: Context, count: int, host: str, port: int | None, key: str | None, n8n_url: str | None,
         no_serve: bool) -> None:
    """Load sample customers with 90 days of history, then serve the dashboard, the API and the scheduler.

    DATABASE_URL defaults to sqlite:///data/demo.db here. The API key and the webhook secret are made on the first
    run and kept in that database, so every run prints the same. Events go to a built-in receiver on 127.0.0.1
    that checks their signatures and prints what n8n would get, unless --n8n names a real n8n (N8N_WEBHOOK_URL in
    the environment is not used: only --n8n sends anything out of the demo).
    """
    key = _check_key(key)
    env = dict(ctx.settings.env)
    env["DATABASE_URL"] = env.get("DATABASE_URL") or DEMO_DATABASE_URL
    if not env.get("RULES_FILE") and not Path(DEFAULT_RULES_FILE).exists():
        # An installed `segment-worker demo` in a folder of its own: the shipped rules, said so.
        env["RULES_FILE"] = str(SHIPPED_RULES)
        click.echo(f"No {DEFAULT_RULES_FILE} here: the demo uses the shipped rules (`segment-worker rules init` "
                   "writes a copy to edit).")
    if port is not None:
        env["PORT"] = str(port)
    if not env.get("DASHBOARD_INSECURE_COOKIE"):
        env["DASHBOARD_INSECURE_COOKIE"] = "true"  # the demo serves plain HTTP, where a Secure cookie never comes back
    try:
        store = open_store(env["DATABASE_URL"])
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        _run(store, env, count, host, key, n8n_url, no_serve)
    finally:
        store.close()


def _run(store: Store, env: dict[str, str], count: int, host: str, key: str | None, n8n_url: str | None,
         no_serve: bool) -> None:
    now = utc_now()
    try:
        anchor = sample_anchor(store, now)
    except NotADemoStore as exc:
        raise click.ClickException(f"{env['DATABASE_URL']}: {exc}") from None
    access = _choose_key(store, env, key)
    secret_origin = _choose_secret(store, env)
    serve = not no_serve
    if serve:
        _refuse_taken_port(host, _settings(env).port)
    receiver = DemoReceiver(env["WEBHOOK_SECRET"]).start() if serve and n8n_url is None else None
    try:
        if receiver is not None:
            env["N8N_WEBHOOK_URL"] = receiver.url
        elif n8n_url is not None:
            env["N8N_WEBHOOK_URL"] = n8n_url.rstrip("/")
        settings = _settings(env)
        rules = _rules(settings)
        if receiver is not None:
            _refuse_elsewhere(rules, receiver.url, settings.rules_file)
        click.echo(f"Loading {count} sample customers" + ("" if store.has_run() else
                                                          f" with {HISTORY_DAYS} days of history") + " ...")
        loaded = load_sample(store, rules, count, anchor, now)
        lines = _loaded_lines(store, rules, loaded) + _access_lines(access, settings, host, serve)
        if serve:
            waiting = int(store.event_counts(now)[PENDING])
            lines += _delivery_lines(rules, receiver, env, secret_origin, waiting)
        lines += _try_lines(store, access, settings, host, serve)
        if not serve:
            click.echo("\n".join(lines))
            return
        _serve(store, settings, host, lines)
    finally:
        if receiver is not None:
            receiver.stop()


def _check_key(key: str | None) -> str | None:
    if key is None:
        return None
    if len(key) < MIN_API_KEY_CHARS or "," in key or key != key.strip():
        raise click.BadParameter(f"must be at least {MIN_API_KEY_CHARS} characters, without commas or surrounding "
                                 "spaces (e.g. the output of 'python -c \"import secrets; "
                                 "print(secrets.token_urlsafe(32))\"')", param_hint="--key")
    return key


def _choose_key(store: Store, env: dict[str, str], key: str | None) -> _Access:
    """--key, else API_KEYS from the environment, else the demo database's own key; the demo's key may write too
    (ADMIN_API_KEYS), so that replay works on the dashboard."""
    if key is None and env.get("API_KEYS", "").strip():
        return _Access(None, "one of API_KEYS (from the environment)")
    origin = "(from --key)"
    if key is None:
        key = kept_secret(store, API_KEY_KEY, _new_key)
        origin = "(kept in the demo database: the same on every run; --key to choose one)"
    env["API_KEYS"] = key
    env["ADMIN_API_KEYS"] = ",".join(part for part in (key, env.get("ADMIN_API_KEYS", "").strip()) if part)
    return _Access(key, origin)


def _new_key() -> str:
    # Letters and digits only: a double click selects the whole key in a terminal, which '-' or '_' would split.
    return "demo-" + "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_CHARS))


def _choose_secret(store: Store, env: dict[str, str]) -> str:
    """WEBHOOK_SECRET from the environment, else the demo database's own; says which."""
    if env.get("WEBHOOK_SECRET", "").strip():
        return "environment"
    env["WEBHOOK_SECRET"] = kept_secret(store, WEBHOOK_SECRET_KEY,
                                        lambda: "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode())
    return "demo"


def _settings(env: dict[str, str]) -> Settings:
    try:
        return Settings.from_env(env)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _rules(settings: Settings) -> Rules:
    try:
        return RulesSource(settings.rules_file, settings.env).current()
    except RulesError as exc:
        raise click.ClickException(f"the rules were refused:\n{exc}") from None


def _refuse_taken_port(host: str, port: int) -> None:
    """Fail before loading anything when the port is taken (another demo, say), not after."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no obstacle
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {host}:{port} ({exc.strerror or exc}); is another server "
                                       "using it? Choose another port with --port.") from None


# --- what is printed ------------------------------------------------------------------------------------------

def _loaded_lines(store: Store, rules: Rules, loaded: Loaded) -> list[str]:
    if loaded.history:
        done = (f"{HISTORY_DAYS} days of history ({loaded.runs} daily evaluation runs: {loaded.transitions} "
                f"transitions, {loaded.events} events)")
    else:
        done = (f"evaluated now ({loaded.transitions} transitions, {loaded.events} events; the history was loaded "
                "on the first run)")
    sizes = {s.segment: s.customers for s in store.segment_summary()}
    segments = " · ".join(f"{name} {sizes[name]}" for name in rules.segment_names if name in sizes)
    return [f"Demo data: {store.count_customers()} customers, {loaded.orders} orders ({loaded.inserted} new), "
            f"{done} in {loaded.seconds:.1f}s", f"Segments now: {segments}"]


def _access_lines(access: _Access, settings: Settings, host: str, serve: bool) -> list[str]:
    lines = []
    if serve:
        lines.append(f"Dashboard: {_base_url(host, settings.port)}/  (sign in with the API key)")
    lines.append(f"API key: {access.key} {access.origin}" if access.key else f"API key: {access.origin}")
    lines.append(f"Database: DATABASE_URL={shlex.quote(settings.database_url)} (the other commands need it too)")
    return lines


def _delivery_lines(rules: Rules, receiver: DemoReceiver | None, env: dict[str, str], secret_origin: str,
                    waiting: int) -> list[str]:
    if receiver is not None:
        lines = [f"Events: to a built-in receiver on {urlsplit(receiver.url).netloc} instead of n8n (--n8n URL for a "
                 "real one);", "  it checks each signature and logs what n8n would get."]
    else:
        secret = ("WEBHOOK_SECRET" if secret_origin == "environment"
                  else f"{env['WEBHOOK_SECRET']} (kept in the demo database)")
        unset = "" if env.get("N8N_HEADER_TOKEN") else " (unset: n8n's Header Auth would answer 403)"
        lines = [f"Events: to n8n at {_without_credentials(env['N8N_WEBHOOK_URL'])}/segment-<campaign>, signed with "
                 f"{secret}.",
                 f"  Set n8n up as n8n/README.md says: its Header Auth token goes in N8N_HEADER_TOKEN{unset}.",
                 *_unanswered(env["N8N_WEBHOOK_URL"])]
    lines += _off_course(rules, env["N8N_WEBHOOK_URL"])
    if waiting:
        lines.append(f"  The {waiting} events queued by the history go out now, each re-checked first: a move undone "
                     "since is superseded (not sent).")
    return lines


def _unanswered(url: str) -> list[str]:
    """A note when nothing listens where the events go: they wait and are retried, with a warning each time."""
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)),
                                 timeout=N8N_PROBE_SECONDS).close()
    except (OSError, ValueError) as exc:
        return [f"  Note: nothing answers at {_without_credentials(url)} ({getattr(exc, 'strerror', None) or exc}): "
                "the events wait and are retried until n8n is up."]
    return []


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _refuse_elsewhere(rules: Rules, receiver_url: str, rules_file: str) -> None:
    """Without --n8n the demo sends nothing off the machine: refuse rules whose webhooks would go elsewhere (a
    RULES_FILE whose URLs do not use N8N_WEBHOOK_URL), before anything is loaded or sent."""
    elsewhere = [name for name, webhook in rules.webhooks.items() if not webhook.url.startswith(receiver_url + "/")]
    if elsewhere:
        raise click.ClickException(
            f"{rules_file}: webhook(s) {', '.join(elsewhere)} send to their own URLs, not through N8N_WEBHOOK_URL, so "
            "the demo's events would leave this machine; run the demo with the shipped rules (RULES_FILE unset, "
            "where rules.yaml is the shipped one), or pass --n8n URL to send to an n8n on purpose")


def _off_course(rules: Rules, base_url: str) -> list[str]:
    """Warnings for rules that would deliver somewhere else (a RULES_FILE whose webhooks ignore N8N_WEBHOOK_URL)."""
    lines = []
    if rules.delivery_problem is not None:
        lines.append(f"  Note: {rules.delivery_problem}")
    for name, webhook in rules.webhooks.items():
        if not webhook.url.startswith(base_url + "/"):
            lines.append(f"  Note: webhook {name} sends to {urlsplit(webhook.url).hostname}, not to "
                         f"{_without_credentials(base_url)} "
                         "(its URL in the rules does not use N8N_WEBHOOK_URL)")
    return lines


def _try_lines(store: Store, access: _Access, settings: Settings, host: str, serve: bool) -> list[str]:
    cli = f"DATABASE_URL={shlex.quote(settings.database_url)} {_python()} -m worker"
    customer = _sample_customer(store)
    lines = ["Try:"]
    if serve:
        auth = shlex.quote(f"Authorization: Bearer {access.key or '<your API key>'}")
        base = _base_url(host, settings.port)
        history = shlex.quote(f"{base}/api/customers/{quote(customer, safe='')}/transitions")
        lines += [f"  curl -H {auth} {base}/api/segments", f"  curl -H {auth} {history}"]
    lines += [f"  {cli} customers show {shlex.quote(customer)}",
              f"  {cli} events list --status {SUPERSEDED if serve else PENDING}"]
    if serve:
        lines.append("Stop with Ctrl-C; run the demo again to go on with the same data and key.")
    else:
        lines.append(f"  {cli} demo   (serves it)")
    return lines


def _sample_customer(store: Store) -> str:
    """A customer worth looking at: of the first few VIPs (else anyone), the one with the most transitions."""
    found = store.list_customers("VIP", None, None, SAMPLE_CANDIDATES) or store.list_customers(None, None, None, 1)
    if not found:
        return "C-00001"
    return max(found, key=lambda c: len(store.transitions_for(c.contact_id))).contact_id


def _base_url(host: str, port: int) -> str:
    shown = _WILDCARDS.get(host, host)
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def _python() -> str:
    """This interpreter as the reader can call it from here: `.venv/bin/python` after scripts/demo."""
    try:
        return str(Path(sys.executable).relative_to(Path.cwd()))
    except ValueError:
        return "python"


# --- serving --------------------------------------------------------------------------------------------------

def _serve(store: Store, settings: Settings, host: str, lines: list[str]) -> None:
    from worker.server import serve_api

    served = threading.Event()
    hold_back = _HoldBackDeliveryLines()
    delivery_log = logging.getLogger("worker.delivery")
    delivery_log.addFilter(hold_back)
    threads = [threading.Thread(target=_print_when_listening, args=(host, settings.port, lines, served),
                                name="demo-ready", daemon=True),
               threading.Thread(target=_report_queue, args=(store, hold_back, served), name="demo-queue",
                                daemon=True)]
    for thread in threads:
        thread.start()
    try:
        serve_api(settings, workers=1, with_scheduler=True, host=host)
    except OSError as exc:  # taken since the check before loading
        raise click.ClickException(str(exc) if exc.strerror is None else
                                   f"cannot listen on {host}:{settings.port}: {exc.strerror}") from None
    finally:
        served.set()
        for thread in threads:
            thread.join(timeout=5)
        delivery_log.removeFilter(hold_back)


def _print_when_listening(host: str, port: int, lines: list[str], served: threading.Event) -> None:
    address = (_WILDCARDS.get(host, host), port)
    deadline = time.monotonic() + READY_WAIT_SECONDS
    while not served.is_set() and time.monotonic() < deadline:
        try:
            socket.create_connection(address, timeout=1).close()
            break
        except OSError:
            served.wait(0.05)
    if not served.is_set():
        click.echo("\n".join(lines))


class _HoldBackDeliveryLines(logging.Filter):
    """Holds back delivery's INFO lines (one per event) while the events queued before serving go out: the
    receiver's summaries and one line at the end say it shorter. Warnings always pass."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = True

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.holding or record.levelno > logging.INFO


def _report_queue(store: Store, hold_back: _HoldBackDeliveryLines, served: threading.Event) -> None:
    """Once nothing is pending any more: one line saying what became of the events queued before serving."""
    before = store.event_counts(utc_now())
    while before[PENDING] and not served.wait(1.0):
        counts = store.event_counts(utc_now())
        if counts[PENDING]:
            continue
        served.wait(REPORT_EVERY_SECONDS + 0.2)  # after the receiver's report of the last ones
        change = {status: int(counts[status] - before[status]) for status in (DELIVERED, SUPERSEDED, DEAD)}
        log.info("all %d queued events went through: %d delivered, %d superseded (the move was undone since, so "
                 "not sent: see them with `events list --status superseded`), %d dead", int(before[PENDING]),
                 change[DELIVERED], change[SUPERSEDED], change[DEAD])
        break
    hold_back.holding = False
