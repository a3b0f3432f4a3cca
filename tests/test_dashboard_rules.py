"""The dashboard's rules page through Flask's test client: the rules in force in plain words, the file's state, and
the preview of an uploaded candidate (move matrix, campaigns, the two rule sets side by side, or the file's
problems), guarded by an admin key and the CSRF token, bounded in size, and writing nothing."""

from __future__ import annotations

import html
import io
import re
import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from rules import RulesError, parse_rules
from rules.reader import MAX_RULES_BYTES
from tests.conftest import ADMIN_KEY, NOW, READ_KEY, RULES_YAML
from tests.dashboard_helpers import csrf_from, sign_in
from worker import rules_preview
from worker.api import create_app
from worker.api.dashboard import CONTENT_SECURITY_POLICY
from worker.logs import masked_env
from worker.rules_file import RulesSource

CORPUS = sorted((Path(__file__).parent / "rules_corpus").glob("*.yaml"))
VIP_800 = RULES_YAML.replace("totalSpend: {gt: 5000}", "totalSpend: {gt: 800}")


def text(fragment: str) -> str:
    """What a person reads of some HTML: tags dropped, entities decoded, whitespace folded."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", fragment)).split())


def element(page: str, element_id: str) -> str:
    """The inner HTML of the element with id="element_id" (an element not nested in one of its own kind)."""
    match = re.search(rf'<(\w+)[^>]* id="{element_id}"[^>]*>(.*?)</\1>', page, re.S)
    assert match, f"no element #{element_id}"
    return match.group(2)


def listed(page: str, section: str) -> list[str]:
    """The plain-words lines of the rules in force under <ul data-section="section">."""
    match = re.search(rf'<ul data-section="{section}">(.*?)</ul>', page, re.S)
    assert match, f"no section {section}"
    return [text(item) for item in re.findall(r"<li>(.*?)</li>", match.group(1), re.S)]


def cell(page: str, before: str, after: str) -> str:
    """The move matrix's count for customers in `before` now and `after` under the candidate."""
    row = re.search(rf'<tr data-from="{before}">(.*?)</tr>', element(page, "move-matrix"), re.S)
    assert row, f"no matrix row {before}"
    found = re.search(rf'<td class="([^"]*)" data-to="{after}">(.*?)</td>', row.group(1), re.S)
    assert found, f"no matrix cell {before} -> {after}"
    return text(found.group(2))


def cell_class(page: str, before: str, after: str) -> str:
    row = re.search(rf'<tr data-from="{before}">(.*?)</tr>', element(page, "move-matrix"), re.S)
    assert row
    found = re.search(rf'<td class="([^"]*)" data-to="{after}">', row.group(1))
    assert found
    return found.group(1)


def figure(page: str, name: str) -> str:
    match = re.search(rf'<div data-figure="{name}"><dt>[^<]*</dt><dd>(.*?)</dd>', page, re.S)
    assert match, f"no figure {name}"
    return text(match.group(1))


def upload(client: FlaskClient, content: bytes | str, name: str = "candidate.yaml",
           token: str | None = None) -> TestResponse:
    """Post a candidate file through the page's form, with the session's CSRF token unless one is given."""
    if token is None:
        token = csrf_from(client.get("/rules").text)
    body = content.encode("utf-8") if isinstance(content, str) else content
    return client.post("/rules/preview", data={"csrf_token": token, "candidate": (io.BytesIO(body), name)},
                       content_type="multipart/form-data")


def dump(database_url: str) -> list[str]:
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
        return list(conn.iterdump())




@pytest.fixture
def shop(post_orders, make_orders) -> None:
    """Seven customers, evaluated as the API stores them: one VIP ($6,000), three Active at $900 and one at $300,
    one Dormant at $1,000 and one New. A VIP threshold of $800 moves the three and the Dormant one to VIP."""
    batches = [
        make_orders("C-VIP", 3, first=NOW - timedelta(days=60), every_days=20, total="2000.00"),
        *(make_orders(f"C-ACT{n}", 3, first=NOW - timedelta(days=80), every_days=25, total="300.00")
          for n in (1, 2, 3)),
        make_orders("C-ACT4", 3, first=NOW - timedelta(days=80), every_days=25, total="100.00"),
        make_orders("C-OLD", 2, first=NOW - timedelta(days=200), every_days=60, total="500.00"),
        make_orders("C-NEW", 1, first=NOW - timedelta(days=3), total="120.00"),
    ]
    for batch in batches:
        assert post_orders(batch).status_code == 200


# --- the rules in force ------------------------------------------------------------------------------------------

def test_the_page_lists_the_segments_in_plain_words_in_priority_order(reader):
    page = reader.get("/rules")

    assert page.status_code == 200
    assert listed(page.text, "segments") == [
        "VIP: lifetime spend over $5,000",
        "Dormant: no order for more than 90 days",
        "New: first order in the last 30 days",
        "Active: everyone else",
        "Customers with no order that counts (none yet, or all cancelled): New",
    ]


def test_the_page_describes_frequency_campaigns_orders_and_schedule(reader):
    page = reader.get("/rules").text

    assert listed(page, "frequency")[0] == "Weekly: on average at most 7 days between orders"
    assert listed(page, "frequency")[-2:] == ["One-time: a single order", "None: no order that counts"]
    assert "vip: when a customer enters VIP → webhook n8n" in listed(page, "campaigns")
    assert listed(page, "orders")[0].startswith("Orders with status cancelled, canceled, refunded or void")
    assert listed(page, "timing") == [
        "Day counts are calendar days in UTC",
        "Segments are evaluated every minute; events are delivered every 5 seconds",
        "The very first evaluation records everyone's segment silently (first_run: baseline)",
    ]


@pytest.mark.parametrize("rules_text", [RULES_YAML + "currency: EUR\n"])
def test_money_is_written_in_the_rules_currency(reader):
    page = reader.get("/rules").text

    assert listed(page, "segments")[0] == "VIP: lifetime spend over €5,000"
    assert "Amounts are in EUR" in listed(page, "orders")


def test_the_page_shows_the_version_when_loaded_and_the_file_name_only(reader, rules, rules_source, rules_file):
    page = reader.get("/rules").text

    assert text(element(page, "rules-file")) == "rules.yaml"
    assert f'title="{rules.rules_version}"' in page
    assert text(element(page, "rules-version")) == rules.rules_version[:19]
    assert text(element(page, "rules-loaded")) == rules_source.loaded_at.strftime("%Y-%m-%d %H:%M UTC")
    assert str(rules_file.parent) not in page
    assert 'id="rules-refused"' not in page and 'id="delivery-disabled"' not in page


def test_a_refused_rules_file_is_shown_and_the_last_good_rules_stay_listed(reader, rules_file):
    rules_file.write_text(RULES_YAML.replace("totalSpend: {gt: 5000}", "totalSpend: {gtt: 1}"), encoding="utf-8")

    page = reader.get("/rules").text

    refused = text(element(page, "rules-refused"))
    assert refused.startswith("The changed rules.yaml was refused. The rules below are the last good ones")
    assert "rules.yaml:4 segments[0].when.totalSpend: unknown operator 'gtt'" in refused
    assert listed(page, "segments")[0] == "VIP: lifetime spend over $5,000"


def test_disabled_delivery_is_shown(settings, store, rules_file, clock):
    # Without WEBHOOK_SECRET and N8N_WEBHOOK_URL the rules are used for everything but delivery.
    app = create_app(replace(settings, env={}), store=store, rules_source=RulesSource(rules_file, {}), clock=clock)
    client = app.test_client()
    assert sign_in(client, READ_KEY).status_code == 302

    page = client.get("/rules").text

    assert text(element(page, "delivery-disabled")).startswith(
        "delivery is disabled: N8N_WEBHOOK_URL, WEBHOOK_SECRET are not set (needed by webhook n8n)")


def test_the_page_forbids_inline_scripts_and_styles(reader):
    page = reader.get("/rules")

    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "<script" not in page.text and " style=" not in page.text and "<style" not in page.text


@pytest.mark.parametrize("method, path", [("get", "/rules"), ("post", "/rules/preview")])
def test_signed_out_visitors_go_to_sign_in(client, method, path):
    response = getattr(client, method)(path)

    assert response.status_code == 302
    assert response.headers["Location"] == "/signin"


# --- who may preview ------------------------------------------------------------------------------------------------

def test_a_read_key_sees_the_rules_but_no_preview_form(reader):
    page = reader.get("/rules").text

    assert 'id="preview-form"' not in page
    assert "needs an admin key (ADMIN_API_KEYS)" in text(element(page, "preview-needs-admin"))


def test_a_read_key_cannot_post_a_preview(reader, shop):
    response = upload(reader, VIP_800)

    assert response.status_code == 403
    assert "needs a key from ADMIN_API_KEYS" in text(response.text)
    assert 'id="move-matrix"' not in response.text


def test_an_admin_key_gets_the_form_with_its_csrf_token(admin):
    page = admin.get("/rules").text
    form = element(page, "preview-form")

    assert 'enctype="multipart/form-data"' in page
    assert f'name="csrf_token" value="{csrf_from(page)}"' in form
    assert 'type="file" name="candidate"' in form


@pytest.mark.parametrize("token", ["", "forged-token"])
def test_a_preview_without_the_sessions_csrf_token_is_refused(admin, shop, token):
    response = upload(admin, VIP_800, token=token)

    assert response.status_code == 400
    assert "This form has expired or did not come from this dashboard" in text(response.text)
    assert 'id="move-matrix"' not in response.text


# --- the preview of a candidate -------------------------------------------------------------------------------------

def test_a_lower_vip_threshold_shows_the_move_matrix(admin, shop):
    response = upload(admin, VIP_800)
    page = response.text

    assert response.status_code == 200
    assert (figure(page, "customers"), figure(page, "moved"), figure(page, "events")) == ("7", "4", "4")
    expected = {("VIP", "VIP"): "1", ("Dormant", "VIP"): "1", ("Dormant", "Dormant"): "0", ("New", "New"): "1",
                ("Active", "VIP"): "3", ("Active", "Active"): "1", ("Active", "New"): "0", ("VIP", "Active"): "0"}
    assert {move: cell(page, *move) for move in expected} == expected
    assert [cell(page, "all", column) for column in ("VIP", "Dormant", "New", "Active")] == ["5", "0", "1", "1"]
    now = dict(re.findall(r'<span class="muted" data-now="([^"]+)">\((\d+)\)</span>', page))
    assert now == {"VIP": "1", "Dormant": "1", "New": "1", "Active": "4", "all": "7"}


def test_the_matrix_greys_the_diagonal_and_empty_cells_and_stresses_moves(admin, shop):
    page = upload(admin, VIP_800).text

    assert cell_class(page, "Active", "Active") == "num muted"
    assert cell_class(page, "Active", "New") == "num muted"
    assert cell_class(page, "Active", "VIP") == "num"


def test_the_moves_name_sample_customers_linking_to_their_pages(admin, shop):
    page = upload(admin, VIP_800).text

    moves = element(page, "moves")
    row = re.search(r'<tr data-move="Active → VIP">(.*?)</tr>', moves, re.S)
    assert row and text(row.group(1)) == "Active → VIP 3 C-ACT1, C-ACT2, C-ACT3"
    for contact_id in ("C-ACT1", "C-ACT2", "C-ACT3"):
        assert f'<a href="/customers/{contact_id}">{contact_id}</a>' in row.group(1)
    assert 'data-move="Dormant → VIP"' in moves


def test_the_preview_names_the_campaigns_that_would_fire(admin, shop):
    page = upload(admin, VIP_800).text

    rows = re.findall(r'<tr data-campaign="([^"]+)"><td>[^<]*</td><td class="num">(\d+)</td>', page)
    assert rows == [("vip", "4")]


def test_the_candidate_is_shown_beside_the_rules_in_force_with_the_changed_line_marked(admin, shop):
    page = upload(admin, VIP_800).text

    compared = element(page, "compare")
    changed = re.findall(r'<tr data-change="changed"[^>]*>(.*?)</tr>', compared, re.S)
    assert [text(row) for row in changed] == [
        "VIP: lifetime spend over $5,000 changed VIP: lifetime spend over $800"]
    assert "<del>VIP: lifetime spend over $5,000</del>" in changed[0]
    assert "<ins>VIP: lifetime spend over $800</ins>" in changed[0]
    assert len(re.findall(r'data-change="same"', compared)) > 10
    assert '<details data-section="segments" open>' in compared
    assert '<details data-section="campaigns">' in compared  # unchanged sections are folded
    assert 'id="reads-the-same"' not in page


def test_the_page_says_rules_yaml_stays_the_source_of_truth_and_how_to_apply(admin, shop):
    page = upload(admin, VIP_800, name="lower-vip.yaml").text

    how = text(element(page, "how-to-apply"))
    assert "Nothing was stored or sent, and rules.yaml stays the source of truth" in how
    assert "python -m worker rules check lower-vip.yaml, then replace rules.yaml with it" in how


def test_the_same_rules_move_nobody_and_read_the_same(admin, shop):
    page = upload(admin, RULES_YAML).text

    assert figure(page, "moved") == "0"
    assert 'id="nobody-moves"' in page and 'id="no-campaigns"' in page
    assert 'id="reads-the-same"' in page
    assert 'data-change="changed"' not in page


def test_the_preview_writes_nothing(admin, shop, database_url, rules_file, store):
    before = dump(database_url)
    rules_before = rules_file.read_bytes()
    events_before = store.event_counts(NOW)

    assert upload(admin, VIP_800).status_code == 200

    assert dump(database_url) == before
    assert store.event_counts(NOW) == events_before
    assert rules_file.read_bytes() == rules_before


def test_a_candidate_the_running_worker_would_refuse_says_so(admin, shop, env, monkeypatch):
    env["WEBHOOK_ALLOWED_HOSTS"] = "127.0.0.1"
    candidate = VIP_800.replace('url: "${N8N_WEBHOOK_URL}"', 'url: "https://elsewhere.example/hook"')

    page = upload(admin, candidate).text

    assert "webhooks.n8n: host 'elsewhere.example' is not allowed" in text(element(page, "refused-on-load"))
    assert cell(page, "Active", "VIP") == "3"


def test_rfm_conditions_come_with_a_note_that_the_preview_has_no_scores(admin, shop):
    candidate = RULES_YAML.replace("totalSpend: {gt: 5000}", "rfmMonetary: {gte: 5}")

    page = upload(admin, candidate).text

    assert "VIP: RFM monetary score 5 or higher" in text(element(page, "compare"))
    assert 'id="rfm-note"' in page


def test_everything_from_the_candidate_is_escaped(admin, shop):
    candidate = RULES_YAML.replace("name: Active", 'name: "<script>alert(1)</script>"')

    page = upload(admin, candidate, name="<b>x</b>.yaml").text

    assert "<script>alert(1)" not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# --- refused candidates -----------------------------------------------------------------------------------------------

def test_a_broken_candidate_shows_every_problem_with_file_and_line(admin, shop):
    broken = VIP_800.replace("{gt: 90}", "{gtt: 90}") + "surprise: true\n"
    with pytest.raises(RulesError) as refused:
        parse_rules(broken, source="broken.yaml", env=masked_env({}))

    response = upload(admin, broken, name="broken.yaml")

    assert response.status_code == 400
    problems = [text(item) for item in re.findall(r"<li>(.*?)</li>", element(response.text, "candidate-problems"),
                                                   re.S)]
    assert problems == refused.value.problems
    assert problems[0] == ("broken.yaml:5 segments[1].when.lastOrderDaysAgo: unknown operator 'gtt' "
                           "(use one of: gt, gte, lt, lte, eq)")
    assert any(problem.startswith("broken.yaml:22 surprise:") for problem in problems)
    assert 'id="move-matrix"' not in response.text
    assert "Traceback" not in response.text


@pytest.mark.parametrize("path", CORPUS, ids=[path.stem for path in CORPUS])
def test_every_broken_file_of_the_corpus_is_a_400_page_naming_it(admin, path):
    response = upload(admin, path.read_bytes(), name=path.name)

    assert response.status_code == 400
    problems = re.findall(r"<li>(.*?)</li>", element(response.text, "candidate-problems"), re.S)
    assert problems and all(text(problem).startswith(path.name) for problem in problems)
    assert "Traceback" not in response.text


def test_no_file_chosen_is_a_400_page_saying_so(admin):
    token = csrf_from(admin.get("/rules").text)

    response = admin.post("/rules/preview", data={"csrf_token": token}, content_type="multipart/form-data")

    assert response.status_code == 400
    assert "Choose a rules file to preview." in text(element(response.text, "candidate-problems"))


def test_an_upload_over_the_rules_file_limit_is_refused_with_a_message(admin, shop):
    oversize = RULES_YAML + "#" * (MAX_RULES_BYTES + 1 - len(RULES_YAML) - 1) + "\n"
    assert len(oversize.encode()) == MAX_RULES_BYTES + 1

    response = upload(admin, oversize, name="big.yaml")

    assert response.status_code == 413
    assert text(element(response.text, "candidate-problems")) == (
        "big.yaml: 1,048,577 bytes is too large for a rules file (at most 1,048,576 bytes, 1 MiB; "
        "a rules file is a few KB)")
    assert 'id="move-matrix"' not in response.text


def test_an_upload_over_the_request_limit_gets_the_rules_page_with_a_message(settings, store, rules_source, clock):
    app = create_app(replace(settings, max_request_bytes=64 * 1024), store=store, rules_source=rules_source,
                     clock=clock)
    client = app.test_client()
    assert sign_in(client, ADMIN_KEY).status_code == 302

    response = upload(client, RULES_YAML + "#" * 100_000 + "\n")

    assert response.status_code == 413
    assert response.content_type.startswith("text/html")
    assert text(element(response.text, "candidate-problems")).startswith(
        "The upload is larger than this server takes in one request (65,536 bytes, MAX_REQUEST_BYTES)")
    assert 'id="preview-form"' in response.text


def test_a_file_that_is_not_utf8_names_its_line(admin):
    response = upload(admin, RULES_YAML.encode() + b"# caf\xe9\n", name="latin1.yaml")

    assert response.status_code == 400
    lines = RULES_YAML.count("\n") + 1
    assert text(element(response.text, "candidate-problems")) == (
        f"latin1.yaml:{lines}: not UTF-8 text; save the file with UTF-8 encoding")


def test_a_preview_out_of_time_says_so_and_points_to_the_command_line(admin, shop, monkeypatch):
    monkeypatch.setattr(rules_preview, "WEB_PREVIEW_SECONDS", 0)

    response = upload(admin, VIP_800)

    assert response.status_code == 503
    assert "python -m worker rules preview candidate.yaml on the server" in text(
        element(response.text, "candidate-unfinished"))


def test_the_uploaded_name_loses_its_folders(admin):
    response = upload(admin, "segments: [", name="home/me/Users/rules.yaml")

    assert response.status_code == 400
    assert text(element(response.text, "candidate-problems")).startswith("rules.yaml:1: not valid YAML")
    assert "Users" not in response.text


def test_the_preview_of_an_experiment_counts_each_arms_customers_and_moves(admin, shop):
    from decimal import Decimal

    from rules.holdouts import experiment_arm
    experiment = ("experiments:\n  vip-threshold:\n    segment: VIP\n    arms:\n"
                  "      control: {value: 5000, share: 50}\n      low: {value: 800, share: 50}\n")
    page = upload(admin, RULES_YAML + experiment).text

    halves = (("control", Decimal(50)), ("low", Decimal(50)))
    arm = {c: experiment_arm("segment-worker", "vip-threshold", c, halves)
           for c in ("C-VIP", "C-ACT1", "C-ACT2", "C-ACT3", "C-ACT4", "C-OLD", "C-NEW")}
    cells = {key: [text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
             for key, row in re.findall(r'<tr data-arm="([^"]+)">(.*?)</tr>', element(page, "arms"), re.S)}
    # at 800 the three Active customers at $900 and the Dormant one at $1,000 are VIP: those of the low arm move
    active = sum(arm[c] == "low" for c in ("C-ACT1", "C-ACT2", "C-ACT3"))
    expected = {f"Active → VIP {active}"} if active else set()
    if arm["C-OLD"] == "low":
        expected.add("Dormant → VIP 1")
    assert cells["vip-threshold/control"][1:] == [str(list(arm.values()).count("control")), "nobody"]
    assert cells["vip-threshold/low"][0] == "vip-threshold · low (800)"
    assert cells["vip-threshold/low"][1] == str(list(arm.values()).count("low"))
    assert set(cells["vip-threshold/low"][2].split(", ")) == (expected or {"nobody"})
