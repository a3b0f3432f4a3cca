"""A corpus of broken rules files (tests/rules_corpus/*.yaml, the expected refusal on each file's first line):
each is refused naming file, line and field in words a marketer understands, a running worker keeps its last
good rules meanwhile, and the preview API answers 400, never 500."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from rules import RulesError
from tests.factories import ENV, SECRET, rules_text
from worker.rules_file import RulesSource, load_rules_file

CORPUS = sorted((Path(__file__).parent / "rules_corpus").glob("*.yaml"))
EXPECT = b"# expect: "
# Words that would mean a programmer's message leaked through to the marketer.
JARGON = ("pydantic", "Traceback", "Input should", "tuple", "dict", "NoneType", "<class", "Value error", "Decimal(",
          "errors.pydantic.dev", "object at 0x")


def expected_refusal(path: Path) -> str:
    first_line = path.read_bytes().split(b"\n", 1)[0]
    assert first_line.startswith(EXPECT), f"{path.name}: the first line must be '# expect: <message>'"
    return first_line.removeprefix(EXPECT).decode("utf-8")


def refusal(path: Path) -> list[str]:
    with pytest.raises(RulesError) as caught:
        load_rules_file(path, ENV)
    return caught.value.problems


def replace_file(path: Path, content: bytes) -> None:
    # RulesSource notices a change by mtime and size; move the mtime on so a same-size edit is seen too.
    stamp = path.stat().st_mtime
    path.write_bytes(content)
    os.utime(path, (stamp + 1, stamp + 1))


def test_the_corpus_is_there():
    assert len(CORPUS) >= 40


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_a_broken_rules_file_is_refused_with_file_line_and_a_plain_message(path: Path):
    problems = refusal(path)

    assert problems[0] == expected_refusal(path)
    for problem in problems:
        assert re.match(rf"{re.escape(path.name)}:\d+[ :]", problem), f"no file and line in: {problem}"
        assert not [word for word in JARGON if word in problem], problem
        assert SECRET not in problem


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_a_running_worker_keeps_its_last_good_rules(tmp_path: Path, path: Path):
    live = tmp_path / "rules.yaml"
    good_text = rules_text().encode()
    live.write_bytes(good_text)
    source = RulesSource(live, ENV)
    good = source.current()

    replace_file(live, path.read_bytes())

    assert source.current() is good
    assert expected_refusal(path).replace(path.name, "rules.yaml", 1) in source.error

    replace_file(live, good_text)

    assert source.current().rules_version == good.rules_version
    assert source.error is None


def test_the_preview_api_answers_400_for_every_broken_candidate(client, admin_headers):
    for path in CORPUS:
        response = client.post("/api/rules/preview", data=path.read_bytes(),
                               headers={**admin_headers, "Content-Type": "application/yaml"})

        assert response.status_code == 400, (path.name, response.get_data(as_text=True))
        assert response.get_json()["error"]
