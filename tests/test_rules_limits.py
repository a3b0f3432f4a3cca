"""Limits on a rules file (size, values, nesting, schedule) checked before anything is built, a changed file
checked off the request path, and the preview API's limits: a huge or hostile file costs a fraction of a second and
a few MB, never the API's attention."""

from __future__ import annotations

import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rules import RulesError, parse_rules
from rules.schema import MAX_NESTING, MAX_RULES_BYTES, MAX_RULES_VALUES, MIN_INTERVAL_SECONDS
from tests.factories import DEFAULT_SEGMENTS, ENV, rules_text
from worker import rules_preview
from worker.rules_file import RELOAD_WAIT_SECONDS, RulesSource, load_rules_file

BASE = rules_text()
MB = 1024 * 1024


def slow_rules(words: int = 500_000, refused: bool = False) -> str:
    """Good rules but for one plain scalar of `words` words: the slowest kind of file the limits let through (half
    a million words, 1 MB, take some 3 s to check here); `refused` adds an unknown setting at the end."""
    name = "Active" + " w" * words
    text = rules_text(segments=DEFAULT_SEGMENTS.replace("  - {name: Active}\n", f"  - name: {name}\n"))
    return text + "colour: blue\n" if refused else text


def measure(action: Callable[[], Any]) -> tuple[float, int, BaseException | None]:
    """Seconds taken, peak bytes allocated meanwhile, and what it raised."""
    tracemalloc.start()
    started = time.perf_counter()
    raised = None
    try:
        action()
    except Exception as exc:  # returned for the test to inspect
        raised = exc
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return elapsed, peak, raised


def replace_file(path: Path, text: str) -> None:
    # RulesSource notices a change by mtime and size; move the mtime on so a same-size edit is seen too.
    stamp = path.stat().st_mtime
    path.write_text(text, encoding="utf-8")
    os.utime(path, (stamp + 1, stamp + 1))


def deeply_nested(shape: str, size: int = 200_000) -> str:
    if shape == "flow":
        return BASE + "notes: " + "[" * (size // 2) + "]" * (size // 2) + "\n"
    if shape == "block_lists":
        return BASE + "notes:\n  " + "- " * (size // 2) + "x\n"
    lines, depth, written = ["notes:"], 1, 0
    while written < size:
        lines.append("  " * depth + "a:")
        written, depth = written + 2 * depth + 3, depth + 1
    return BASE + "\n".join(lines) + " x\n"


# --- before parsing -------------------------------------------------------------------------------------------

def test_a_50_mb_file_is_refused_from_its_size_without_being_read(tmp_path: Path):
    huge = tmp_path / "rules.yaml"
    with huge.open("w", encoding="utf-8") as file:
        file.write(BASE)
        file.write(("# a comment line of sixty-four characters, valid YAML all along\n") * (50 * MB // 64))

    elapsed, peak, raised = measure(lambda: load_rules_file(huge, ENV))

    assert isinstance(raised, RulesError)
    assert raised.problems == [f"rules.yaml: {huge.stat().st_size:,} bytes is too large for a rules file (at most "
                               "1,048,576 bytes, 1 MiB; a rules file is a few KB)"]
    assert elapsed < 2
    assert peak < 1 * MB


@pytest.mark.parametrize("text", ["#" * MAX_RULES_BYTES + "\n", "# " + "é" * (MAX_RULES_BYTES // 2)],
                         ids=["ascii", "multibyte"])
def test_text_over_1_mib_is_refused_before_parsing(text: str):
    with pytest.raises(RulesError, match=r"^candidate.yaml: [\d,]+ bytes is too large for a rules file"):
        parse_rules(text, source="candidate.yaml", env=ENV)


@pytest.mark.parametrize("shape", ["flow", "block_lists", "block_mappings"])
def test_a_200_kb_deeply_nested_file_is_refused_quickly_with_little_memory(tmp_path: Path, shape: str):
    path = tmp_path / "rules.yaml"
    path.write_text(deeply_nested(shape), encoding="utf-8")
    assert path.stat().st_size > 190_000

    elapsed, peak, raised = measure(lambda: load_rules_file(path, ENV))

    assert isinstance(raised, RulesError)
    (problem,) = raised.problems
    assert problem.startswith("rules.yaml:")
    assert f"nested more than {MAX_NESTING} levels deep" in problem
    assert elapsed < 2
    assert peak < 5 * MB  # the text itself is 0.2 MB


def test_a_file_of_half_a_million_tiny_values_is_refused_before_they_are_built():
    text = BASE + "orders:\n  exclude_statuses: [" + ",".join(["a"] * 500_000) + "]\n"
    assert len(text) < MAX_RULES_BYTES

    elapsed, peak, raised = measure(lambda: parse_rules(text, env=ENV))

    assert isinstance(raised, RulesError)
    assert raised.problems == [f"rules.yaml:{BASE.count(chr(10)) + 2}: more than {MAX_RULES_VALUES:,} values; a rules "
                               "file needs a few hundred"]
    # Building them took 23 s and 420 MB; the scan that refuses them takes about 1.5 s under tracemalloc, and over 2 s
    # on a busy 2-core machine, so the bound leaves room for that and still fails if the values were built.
    assert elapsed < 5
    assert peak < 10 * MB


def test_the_shipped_rules_are_far_inside_the_limits():
    shipped = Path(__file__).resolve().parent.parent / "rules.yaml"
    assert shipped.stat().st_size * 100 < MAX_RULES_BYTES
    assert load_rules_file(shipped, {"WEBHOOK_SECRET": "s"}).segments


# --- the schedule ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("setting", ["evaluate_every_seconds", "deliver_every_seconds"])
@pytest.mark.parametrize("seconds", ["0.001", "0.05", "0", "-1"])
def test_a_schedule_more_often_than_a_tenth_of_a_second_is_refused_on_its_line(setting: str, seconds: str):
    text = BASE.replace("schedule: {evaluate_every_seconds: 60, deliver_every_seconds: 5}",
                        f"schedule:\n  evaluate_every_seconds: 60\n  deliver_every_seconds: 5\n  {setting}: {seconds}")
    text = text.replace(f"  {setting}: {'60' if setting.startswith('evaluate') else '5'}\n", "", 1)
    line = next(n for n, row in enumerate(text.splitlines(), start=1) if row.strip().startswith(setting))

    with pytest.raises(RulesError) as refused:
        parse_rules(text, env=ENV)

    assert refused.value.problems == [f"rules.yaml:{line} schedule.{setting}: must be at least 0.1 seconds (more "
                                      "often only keeps a CPU busy; the defaults are 60 for evaluate and 5 for "
                                      "deliver)"]


@pytest.mark.parametrize(("evaluate", "deliver"), [(MIN_INTERVAL_SECONDS, MIN_INTERVAL_SECONDS), (1, 0.2)])
def test_the_fast_schedules_of_the_test_harnesses_are_still_allowed(evaluate: float, deliver: float):
    text = BASE.replace("evaluate_every_seconds: 60, deliver_every_seconds: 5",
                        f"evaluate_every_seconds: {evaluate}, deliver_every_seconds: {deliver}")
    schedule = parse_rules(text, env=ENV).schedule
    assert (schedule.evaluate_every_seconds, schedule.deliver_every_seconds) == (evaluate, deliver)


# --- reloading off the request path ---------------------------------------------------------------------------

def healthz_until(client, done: Callable[[dict[str, Any]], bool], timeout: float = 30) -> list[tuple[float, dict]]:
    """GET /healthz until `done(body)`; every answer with the seconds it took."""
    answers: list[tuple[float, dict]] = []
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        started = time.perf_counter()
        response = client.get("/healthz")
        answers.append((time.perf_counter() - started, response.get_json()))
        if done(answers[-1][1]):
            return answers
        time.sleep(0.05)
    raise AssertionError(f"/healthz never showed the outcome; last answer: {answers[-1][1]}")


def test_healthz_answers_at_once_with_the_last_good_rules_while_a_slow_file_is_checked(client, rules, rules_file):
    replace_file(rules_file, slow_rules(refused=True))

    answers = healthz_until(client, lambda body: body["rulesError"] is not None)

    first_seconds, first = answers[0]
    assert first_seconds < RELOAD_WAIT_SECONDS + 0.5
    assert (first["status"], first["rulesVersion"], first["rulesError"]) == ("ok", rules.rules_version, None)
    assert len(answers) > 2, "the check should have outlasted a few answers"
    assert max(seconds for seconds, _ in answers[1:]) < 0.5
    last = answers[-1][1]
    assert (last["status"], last["rulesVersion"]) == ("degraded", rules.rules_version)
    assert "rules.yaml:" in last["rulesError"] and "unknown setting 'colour'" in last["rulesError"]


def test_a_slow_good_file_comes_into_force_when_its_check_ends(client, rules, rules_file):
    replace_file(rules_file, slow_rules())

    answers = healthz_until(client, lambda body: body["rulesVersion"] != rules.rules_version)

    assert answers[0][1]["rulesVersion"] == rules.rules_version
    assert max(seconds for seconds, _ in answers) < RELOAD_WAIT_SECONDS + 0.5
    assert answers[-1][1]["rulesError"] is None


def test_a_file_changed_during_a_check_is_checked_after_it(rules_file: Path, env: dict[str, str], caplog):
    source = RulesSource(rules_file, env, wait_seconds=0)
    good = source.current()
    replace_file(rules_file, slow_rules(250_000, refused=True))
    assert source.current() is good  # the slow check goes on in the background
    time.sleep(0.2)  # long enough for the check to have read the slow file, not long enough to finish it
    cheaper_vip = rules_text(vip="4000")
    replace_file(rules_file, cheaper_vip)

    give_up = time.monotonic() + 30
    while source.current().rules_version == good.rules_version and time.monotonic() < give_up:
        time.sleep(0.05)

    assert "unknown setting 'colour'" in caplog.text  # the slow file was checked, and refused
    assert source.current().rules_version == parse_rules(cheaper_vip, env=env).rules_version
    assert source.error is None


def test_a_huge_file_over_the_live_one_is_refused_within_the_request_that_notices_it(rules_file: Path,
                                                                                    env: dict[str, str]):
    source = RulesSource(rules_file, env)
    good = source.current()
    with rules_file.open("a", encoding="utf-8") as file:
        file.truncate(50 * MB)  # a sparse file: its size alone is refused

    started = time.perf_counter()
    assert source.current() is good
    assert time.perf_counter() - started < RELOAD_WAIT_SECONDS + 0.5
    assert source.error and "too large for a rules file" in source.error


# --- the preview API ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("as_json", [False, True], ids=["yaml_body", "json_body"])
def test_preview_refuses_an_oversized_candidate_with_400(client, admin_headers, as_json: bool):
    text = BASE + "# padding\n" * (MAX_RULES_BYTES // 10)
    if as_json:
        response = client.post("/api/rules/preview", json={"rules": text}, headers=admin_headers)
    else:
        response = client.post("/api/rules/preview", data=text, headers={**admin_headers,
                                                                         "Content-Type": "application/yaml"})

    assert response.status_code == 400
    assert response.get_json()["errors"][0].startswith("candidate.yaml: ")
    assert "too large for a rules file" in response.get_json()["errors"][0]


@pytest.mark.parametrize("shape", ["flow", "block_lists"])
def test_preview_refuses_a_deeply_nested_candidate_with_400_quickly(client, admin_headers, shape: str):
    started = time.perf_counter()
    response = client.post("/api/rules/preview", data=deeply_nested(shape),
                           headers={**admin_headers, "Content-Type": "application/yaml"})

    assert time.perf_counter() - started < 2
    assert response.status_code == 400
    assert f"nested more than {MAX_NESTING} levels deep" in response.get_json()["errors"][0]


def test_preview_stops_with_503_when_it_runs_out_of_time(client, admin_headers, post_orders, make_orders,
                                                         monkeypatch):
    assert post_orders(make_orders("C1")).status_code == 200
    monkeypatch.setattr(rules_preview, "WEB_PREVIEW_SECONDS", 0)

    response = client.post("/api/rules/preview", data=rules_text(vip="3000"),
                           headers={**admin_headers, "Content-Type": "application/yaml"})

    assert response.status_code == 503
    assert response.get_json()["error"].startswith("the preview was stopped after 0 seconds (0 customers compared)")
