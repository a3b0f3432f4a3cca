"""Reads rules.yaml from disk and keeps the last good rules in force while a newer file is checked, and when it
is refused."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from rules import Rules, RulesError, parse_rules
from rules.reader import MAX_RULES_BYTES, refuse_if_too_large
from rules.schema import OrderRules, parse_order_rules
from worker.clock import utc_now
from worker.logs import redact, secret_values
from worker.settings import SettingsError, allowed_hosts

log = logging.getLogger(__name__)

# How long a request waits for the check of a changed rules file before it goes on with the last good rules. A
# real rules file (a few KB) is checked in milliseconds, well within it, so a file written just before a request is
# in force for that request; a file the limits allow but that takes seconds to check (up to 1 MiB) goes on being
# checked in the background while every request is answered at once.
RELOAD_WAIT_SECONDS = 0.25
# The shipped rules (the repository's rules.yaml), installed with the package for `rules init` and the demo.
SHIPPED_RULES = Path(__file__).with_name("default_rules.yaml")


def load_rules_file(path: str | Path, env: Mapping[str, str] | None = None) -> Rules:
    """Parse a rules file; RulesError names the file, line and field of every problem, and never a secret.

    With WEBHOOK_ALLOWED_HOSTS set, a webhook pointing at any other host is refused as well.
    """
    path = Path(path)
    env = os.environ if env is None else env
    text = _read_text(path)
    secrets = secret_values(env)
    try:
        rules = parse_rules(text, source=path.name, env=env)
        check_webhook_hosts(rules, env)
    except RulesError as exc:
        # `${VAR}` puts environment values into the file, so a message quoting a value could quote a secret.
        raise RulesError([redact(problem, secrets) for problem in exc.problems]) from None
    return rules


def load_order_rules(path: str | Path, env: Mapping[str, str] | None = None) -> OrderRules:
    """Only the `orders` settings of a rules file (which statuses count, how far ahead an order may be dated): what
    importing orders needs, so that it works without the webhook secrets that only delivery needs."""
    path = Path(path)
    env = os.environ if env is None else env
    try:
        return parse_order_rules(_read_text(path), source=path.name, env=env)
    except RulesError as exc:
        raise RulesError([redact(problem, secret_values(env)) for problem in exc.problems]) from None


def _read_text(path: Path) -> str:
    try:
        with path.open("rb") as file:
            refuse_if_too_large(os.fstat(file.fileno()).st_size, path.name)  # before reading any of it
            raw = file.read(MAX_RULES_BYTES + 1)  # it may have grown since, or be a pipe
    except FileNotFoundError:
        raise RulesError([f"{path}: no such file (set RULES_FILE to your rules file, or write the shipped one here "
                          "with `segment-worker rules init`)"]) from None
    except OSError as exc:
        raise RulesError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    refuse_if_too_large(len(raw), path.name)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise RulesError([f"{path.name}:{line}: not UTF-8 text; save the file with UTF-8 encoding"]) from None


def check_webhook_hosts(rules: Rules, env: Mapping[str, str]) -> None:
    """Refuse webhooks to hosts outside WEBHOOK_ALLOWED_HOSTS (when set), so a changed rules file or environment
    variable cannot send customer data anywhere else."""
    try:
        allowed = allowed_hosts(env)
    except SettingsError as exc:
        raise RulesError([str(exc)]) from None
    if not allowed:
        return
    problems = [f"webhooks.{name}: {refusal}" for name, webhook in rules.webhooks.items()
                if (refusal := host_refusal(webhook.url, allowed)) is not None]
    if problems:
        raise RulesError(problems)


def host_refusal(url: str, allowed: tuple[str, ...]) -> str | None:
    """Why WEBHOOK_ALLOWED_HOSTS (`allowed`; empty: every host) refuses `url`, or None."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    if not allowed or host in allowed:
        return None
    return f"host '{host}' is not allowed; WEBHOOK_ALLOWED_HOSTS permits only {', '.join(allowed)}"


class RulesSource:
    """The rules in force. `current()` notices a changed file and has it checked in the background; a bad file is
    refused and reported in `error`, and the last good rules stay in force meanwhile."""

    def __init__(self, path: str | Path, env: Mapping[str, str] | None = None,
                 wait_seconds: float = RELOAD_WAIT_SECONDS):
        self.path = Path(path)
        self.env = env
        self.wait_seconds = wait_seconds
        self.error: str | None = None
        self.loaded_at: datetime | None = None
        self._lock = threading.Lock()  # guards the stamp, the running check, and the swap of rules and error
        self._stamp: tuple[float, int] | None = None
        self._check: threading.Thread | None = None
        self._wait_until = 0.0
        self._rules = load_rules_file(self.path, env)  # the first load must succeed: nothing to fall back on
        self._stamp = self._file_stamp()
        self.loaded_at = utc_now()

    def current(self) -> Rules:
        # The check runs in a thread, one at a time, and callers wait for it only until `wait_seconds` after it
        # started: never behind a lock held while parsing (which kept /healthz silent for minutes), and the same
        # bound whatever the file holds (its size says little: 1 MiB of comments is checked in 0.6 s, one 1 MiB line
        # of words in 2.7 s).
        with self._lock:
            check = self._check
            if check is None:
                stamp = self._file_stamp()
                if stamp != self._stamp:
                    self._stamp = stamp  # a change made during the check has a newer stamp: checked after this one
                    check = self._check = threading.Thread(target=self._run_check, name=f"check {self.path.name}",
                                                           daemon=True)
                    self._wait_until = time.monotonic() + self.wait_seconds
                    check.start()
        if check is not None:
            check.join(max(0.0, self._wait_until - time.monotonic()))
        return self._rules

    def _run_check(self) -> None:
        try:
            self._reload()
        finally:
            with self._lock:
                self._check = None

    def _reload(self) -> None:
        try:
            rules = load_rules_file(self.path, self.env)
        except RulesError as exc:
            self._finish_check(error=str(exc))
            log.error("refused changed rules file, keeping rules %s in force: %s",
                      self._rules.rules_version, exc)
            return
        except Exception as exc:  # a bug in the parser must not take the running worker's rules away either
            self._finish_check(error=f"{self.path.name}: could not be checked ({type(exc).__name__}); see the log")
            log.exception("could not check changed rules file, keeping rules %s in force", self._rules.rules_version)
            return
        if rules.delivery_problem is not None and self._rules.delivery_problem is None:
            # The environment of a running process cannot change: the new file names a variable it lacks.
            error = (f"{self.path.name}: refused, the rules in force go on delivering: "
                     f"{rules.delivery_problem.removeprefix('delivery is disabled: ')}")
            self._finish_check(error=error)
            log.error("refused changed rules file, keeping rules %s in force: %s", self._rules.rules_version, error)
            return
        if rules.rules_version != self._rules.rules_version:
            log.info("loaded rules %s from %s", rules.rules_version, self.path)
        self._finish_check(rules=rules)

    def _finish_check(self, rules: Rules | None = None, error: str | None = None) -> None:
        with self._lock:
            if rules is not None:
                self._rules = rules
                self.loaded_at = utc_now()
            self.error = error

    def _file_stamp(self) -> tuple[float, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_mtime, stat.st_size)
