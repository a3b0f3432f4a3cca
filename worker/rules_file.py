"""Reads rules.yaml from disk and keeps the last good rules in force when a newer file is refused."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

from rules import Rules, RulesError, parse_rules

log = logging.getLogger(__name__)


def load_rules_file(path: str | Path, env: Mapping[str, str] | None = None) -> Rules:
    """Parse a rules file; RulesError names the file, line and field of every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise RulesError([f"{path}: not UTF-8 text"]) from None
    return parse_rules(text, source=path.name, env=os.environ if env is None else env)


class RulesSource:
    """The rules in force. `current()` reloads when the file changes; a bad file is refused and reported."""

    def __init__(self, path: str | Path, env: Mapping[str, str] | None = None):
        self.path = Path(path)
        self.env = env
        self.error: str | None = None
        self.loaded_at: datetime | None = None
        self._lock = threading.Lock()
        self._stamp: tuple[float, int] | None = None
        self._rules = load_rules_file(self.path, env)  # the first load must succeed: nothing to fall back on
        self._stamp = self._file_stamp()
        self.loaded_at = datetime.now(timezone.utc)

    def current(self) -> Rules:
        with self._lock:
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._stamp = stamp
                self._reload()
            return self._rules

    def _reload(self) -> None:
        try:
            rules = load_rules_file(self.path, self.env)
        except RulesError as exc:
            self.error = str(exc)
            log.error("refused changed rules file, keeping rules %s in force: %s",
                      self._rules.rules_version, exc)
            return
        if rules.rules_version != self._rules.rules_version:
            log.info("loaded rules %s from %s", rules.rules_version, self.path)
        self._rules, self.error = rules, None
        self.loaded_at = datetime.now(timezone.utc)

    def _file_stamp(self) -> tuple[float, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_mtime, stat.st_size)
