"""The rules page: the rules in force in plain words (version, file, whether a changed file is refused), and a
preview of an uploaded candidate file: its problems, or the move matrix, the campaigns it would fire and its rules
beside the live ones. rules.yaml stays the source of truth: nothing here is stored or sent."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from flask import g, render_template, request
from werkzeug.exceptions import Forbidden, RequestEntityTooLarge

from rules import Rules, RulesError, parse_rules
from rules.describe import SectionChanges, compare, describe_rules
from rules.preview import Preview
from rules.reader import MAX_RULES_BYTES, refuse_if_too_large
from rules.schema import RFM_METRICS
from worker import rules_preview as previews
from worker.api.context import context
from worker.api.dashboard.blueprint import bp, error_page
from worker.logs import masked_env
from worker.rules_file import check_webhook_hosts
from worker.rules_preview import PreviewOutOfTime, preview_store

log = logging.getLogger(__name__)

CANDIDATE_FIELD = "candidate"
DEFAULT_CANDIDATE_NAME = "candidate.yaml"
MAX_NAME_CHARS = 100  # of the uploaded file's name, as problems quote it


@dataclass(frozen=True)
class Matrix:
    """Customers per (segment now, segment under the candidate); `rows` are the rules in force's segments,
    `columns` the candidate's, both in priority order."""

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    counts: dict[tuple[str, str], int]
    row_totals: dict[str, int]
    column_totals: dict[str, int]

    def count(self, row: str, column: str) -> int:
        return self.counts.get((row, column), 0)


@dataclass(frozen=True)
class CandidatePreview:
    """What the page shows of an uploaded candidate: its problems, or what it would change."""

    name: str
    problems: tuple[str, ...] = ()
    result: Preview | None = None
    matrix: Matrix | None = None
    candidate: Rules | None = None
    as_of: datetime | None = None
    changes: tuple[SectionChanges, ...] = ()
    refused_on_load: tuple[str, ...] = ()  # why the running worker would refuse it as rules.yaml, though it parses
    out_of_time: str | None = None  # the comparison was stopped at the API's time limit

    @property
    def events(self) -> int:
        return sum(self.result.campaigns.values()) if self.result is not None else 0

    @property
    def moves(self) -> list[tuple[str, str, int, list[str]]]:
        """(from, to, customers, sample contact ids), the largest move first."""
        if self.result is None:
            return []
        return [(before, after, count, self.result.samples[(before, after)])
                for (before, after), count in self.result.moves.most_common()]

    @property
    def arms(self) -> list[tuple[str, str, str, int, list[tuple[str, str, int]]]]:
        """Per arm of the candidate's running experiments: (experiment, arm, its value, customers, moves)."""
        if self.result is None or self.candidate is None:
            return []
        return [(name, arm, f"{settings.value.normalize():f}", self.result.arm_customers.get((name, arm), 0),
                 [(before, after, n) for (before, after), n in self.result.arm_moves[(name, arm)].most_common()])
                for name in self.candidate.running_experiments
                for arm, settings in self.candidate.experiments[name].arms.items()]

    @property
    def reads_the_same(self) -> bool:
        return not any(section.changed for section in self.changes)


@bp.get("/rules")
def rules() -> str:
    return _page()


@bp.post("/rules/preview")
def rules_preview() -> tuple[str, int]:
    # A write key, as for POST /api/rules/preview: the candidate's ${VAR}s read this server's environment, and
    # comparing reads every customer; a read key sees the rules in force.
    if g.access != "write":
        raise Forbidden("Previewing a candidate rules file needs a key from ADMIN_API_KEYS, as POST "
                        "/api/rules/preview does; this session signed in with a read key.")
    upload = request.files.get(CANDIDATE_FIELD)
    if upload is None or not upload.filename:
        return _page(CandidatePreview(DEFAULT_CANDIDATE_NAME, ("Choose a rules file to preview.",))), 400
    name = _file_name(upload.filename)
    raw = upload.read()  # at most MAX_REQUEST_BYTES: the request is refused before the view above that
    try:
        refuse_if_too_large(len(raw), name)
    except RulesError as exc:
        return _page(CandidatePreview(name, tuple(exc.problems))), 413
    try:
        text = _text(raw, name)
    except RulesError as exc:
        return _page(CandidatePreview(name, tuple(exc.problems))), 400
    shown = _preview(text, name)
    return _page(shown), 400 if shown.problems else 503 if shown.out_of_time else 200


@bp.errorhandler(RequestEntityTooLarge)
def too_large(error: RequestEntityTooLarge) -> tuple[str, int]:
    """A body over MAX_REQUEST_BYTES is refused before the view runs: on the rules page, say so beside the form."""
    if request.endpoint != "dashboard.rules_preview" or g.get("access") is None:
        return error_page(error)
    limit = context().settings.max_request_bytes
    problem = (f"The upload is larger than this server takes in one request ({limit:,} bytes, MAX_REQUEST_BYTES); "
               f"a rules file may be at most {MAX_RULES_BYTES:,} bytes (1 MiB).")
    return _page(CandidatePreview(DEFAULT_CANDIDATE_NAME, (problem,))), 413


def _page(shown: CandidatePreview | None = None) -> str:
    ctx = context()
    live = ctx.rules()  # first: it notices a changed file, which sets or clears the error read below
    source = ctx.rules_source
    return render_template(
        "dashboard/rules.html", rules=live, sections=describe_rules(live), file_name=source.path.name,
        loaded_at=source.loaded_at, refused=source.error, shown=shown, max_bytes=MAX_RULES_BYTES,
        uses_rfm=_uses_rfm(live) or (shown is not None and shown.candidate is not None and _uses_rfm(shown.candidate)),
    )


def _file_name(raw: str) -> str:
    """The uploaded file's own name, as problems name it: no folders (some browsers send them), bounded."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:MAX_NAME_CHARS] or DEFAULT_CANDIDATE_NAME


def _text(raw: bytes, name: str) -> str:
    """The upload as text, refused as a rules file on disk is (worker/rules_file.py) when it is not UTF-8."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise RulesError([f"{name}:{line}: not UTF-8 text; save the file with UTF-8 encoding"]) from None
    if not text.strip():
        raise RulesError([f"{name}: the file is empty"])
    return text


def _preview(text: str, name: str) -> CandidatePreview:
    """The candidate checked as POST /api/rules/preview checks it, then compared over every customer at this
    moment, within the API's time limit."""
    ctx = context()
    try:
        # As in the API: secret-named variables interpolate as '***', so no secret can come back in the page.
        candidate = parse_rules(text, source=name, env=masked_env(ctx.settings.env))
    except RulesError as exc:
        return CandidatePreview(name, tuple(exc.problems))
    except Exception as exc:  # a parser bug must not become a 500 for the person who uploaded the file
        log.exception("dashboard: could not check an uploaded candidate rules file")
        return CandidatePreview(name, (f"{name}: could not be checked ({type(exc).__name__}); see the server log",))
    current = ctx.rules()
    as_of = ctx.clock()
    # The API's time limit and customer reader, so that a page holds a server thread no longer than the API does.
    deadline = time.monotonic() + previews.WEB_PREVIEW_SECONDS
    try:
        result = preview_store(ctx.store, current, candidate, as_of, deadline)
    except PreviewOutOfTime as exc:
        return CandidatePreview(name, out_of_time=(
            f"The preview was stopped after {previews.WEB_PREVIEW_SECONDS:g} seconds ({exc.customers:,} customers "
            f"compared); run python -m worker rules preview {name} on the server, which has no time limit."))
    log.info("dashboard: previewed %s: %d of %d customers would move", name, result.moved, result.customers)
    return CandidatePreview(name, result=result, matrix=_matrix(result, current, candidate), candidate=candidate,
                            as_of=as_of, changes=compare(describe_rules(current), describe_rules(candidate)),
                            refused_on_load=_refused_on_load(candidate, current, ctx.settings.env))


def _matrix(result: Preview, current: Rules, candidate: Rules) -> Matrix:
    rows = tuple(dict.fromkeys(current.segment_names + tuple(result.before)))
    columns = tuple(dict.fromkeys(candidate.segment_names + tuple(result.after)))
    counts = dict(result.moves)
    for segment in rows:
        stayed = result.before[segment] - sum(n for (before, _), n in result.moves.items() if before == segment)
        if stayed:
            counts[(segment, segment)] = stayed
    return Matrix(rows, columns, counts, {s: result.before.get(s, 0) for s in rows},
                  {s: result.after.get(s, 0) for s in columns})


def _refused_on_load(candidate: Rules, current: Rules, env: Mapping[str, str]) -> tuple[str, ...]:
    """What the running worker would refuse the candidate for as rules.yaml, although it parses: webhook hosts
    outside WEBHOOK_ALLOWED_HOSTS, or variables it needs that this server lacks (see RulesSource)."""
    problems = []
    try:
        check_webhook_hosts(candidate, env)
    except RulesError as exc:
        problems += exc.problems
    if candidate.delivery_problem is not None and current.delivery_problem is None:
        problems.append(candidate.delivery_problem.replace("delivery is disabled: ", "", 1))
    return tuple(problems)


def _uses_rfm(rules: Rules) -> bool:
    return any(c.metric in RFM_METRICS for segment in rules.segments for c in segment.conditions)

