"""rules.yaml: the shipped file, `${VAR}` interpolation, refusals that name file, line and field, rules_version."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from rules import Rules, RulesError, parse_rules
from rules.money import format_cents, format_money
from rules.schema import Condition, parse_order_rules
from tests.factories import ENV, SECRET, make_rules, rules_text

SHIPPED = Path(__file__).resolve().parent.parent / "rules.yaml"
BASE = rules_text()


def refusal(text: str, env: dict[str, str] | None = None, source: str = "rules.yaml") -> list[str]:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, source=source, env=ENV if env is None else env)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def line_of(text: str, marker: str) -> int:
    """1-based number of the only line containing `marker`."""
    lines = [n for n, line in enumerate(text.splitlines(), start=1) if marker in line]
    assert len(lines) == 1, f"marker {marker!r} must appear on exactly one line"
    return lines[0]


def edit(old: str, new: str, text: str = BASE) -> str:
    assert text.count(old) == 1, f"{old!r} must appear once in the rules text"
    return text.replace(old, new)


# --- the shipped file ---------------------------------------------------------------------------------------

def shipped() -> Rules:
    return parse_rules(SHIPPED.read_text(encoding="utf-8"), env={"WEBHOOK_SECRET": "s"})


def test_shipped_rules_parse_with_only_the_webhook_secret_in_env():
    rules = shipped()
    assert rules.webhooks and all(w.secret == "s" for w in rules.webhooks.values())
    assert all(w.url.startswith("http://localhost:5678/") for w in rules.webhooks.values())


def test_shipped_rules_reproduce_the_original_defaults():
    rules = shipped()
    assert rules.timezone == "UTC"
    assert [(s.name, s.conditions) for s in rules.segments] == [
        ("VIP", (Condition("totalSpend", "gt", Decimal(5000)),)),
        ("Dormant", (Condition("lastOrderDaysAgo", "gt", Decimal(90)),)),
        ("New", (Condition("firstOrderDaysAgo", "lte", Decimal(30)),)),
        ("Active", ()),
    ]
    assert rules.no_orders_segment == "New"
    assert [(b.name, b.max_avg_days) for b in rules.purchase_frequency] == [
        ("Weekly", 7), ("Monthly", 30), ("Quarterly", 90), ("Occasional", None)]
    entered = {k: c.on.entered for k, c in rules.campaigns.items() if c.on.entered is not None}
    assert entered == {"welcome": "New", "vip": "VIP", "win-back": "Dormant"}
    assert (rules.schedule.evaluate_every_seconds, rules.schedule.deliver_every_seconds) == (60, 5)
    assert rules.first_run == "baseline"


def test_shipped_rules_segment_exactly_like_the_design_seed():
    fields = {"timezone", "segments", "no_orders_segment", "purchase_frequency"}
    assert shipped().model_dump(include=fields) == make_rules().model_dump(include=fields)


# --- ${VAR} interpolation -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "env", "expected"), [
    ("${HOOK}", {"HOOK": "https://n8n.example.com/webhook/a"}, "https://n8n.example.com/webhook/a"),
    ("${HOOK:-http://localhost:5678/x}", {}, "http://localhost:5678/x"),
    ("${HOOK:-http://localhost:5678/x}", {"HOOK": "https://n8n.example.com/y"}, "https://n8n.example.com/y"),
    ("${HOOK:-http://localhost:5678/x}", {"HOOK": ""}, "http://localhost:5678/x"),
    ("https://${HOST}:${PORT:-443}/webhook", {"HOST": "n8n.internal"}, "https://n8n.internal:443/webhook"),
])
def test_env_interpolation(url, env, expected):
    text = edit('url: "${N8N_WEBHOOK_URL}"', f'url: "{url}"')
    rules = parse_rules(text, env={**env, "WEBHOOK_SECRET": SECRET})
    assert rules.webhooks["n8n"].url == expected
    assert rules.webhooks["n8n"].secret == SECRET


@pytest.mark.parametrize(("env", "threshold"), [({}, Decimal("5000")), ({"VIP_OVER": "3000.50"}, Decimal("3000.50"))])
def test_interpolated_threshold_is_a_number(env, threshold):
    block_style = ("  - name: VIP\n    when:\n      totalSpend:\n        gt: ${VIP_OVER:-5000}\n"
                   "  - {name: Dormant, when: {lastOrderDaysAgo: {gt: 90}}}\n"
                   "  - {name: New, when: {firstOrderDaysAgo: {lte: 30}}}\n"
                   "  - {name: Active}\n")
    rules = parse_rules(rules_text(segments=block_style), env={**env, **ENV})
    assert rules.segments[0].when == {"totalSpend": {"gt": threshold}}


def test_unset_webhook_variables_leave_the_rules_usable_with_delivery_disabled():
    rules = parse_rules(BASE, env={"WEBHOOK_SECRET": SECRET})
    assert rules.webhooks == {} and dict(rules.undeliverable) == {"n8n": ("N8N_WEBHOOK_URL",)}
    assert rules.campaigns  # the campaigns still decide what is queued
    assert rules.delivery_problem.startswith("delivery is disabled: N8N_WEBHOOK_URL is not set (needed by webhook n8n)")
    assert SECRET not in rules.delivery_problem


def test_unset_secret_disables_delivery_naming_the_variable():
    rules = parse_rules(BASE, env={"N8N_WEBHOOK_URL": "http://127.0.0.1/x"})
    assert rules.unset_variables == ("WEBHOOK_SECRET",) and rules.webhooks == {}
    assert parse_rules(BASE, env=ENV).delivery_problem is None


def test_a_webhook_with_an_unset_variable_is_still_checked_in_its_other_settings():
    text = BASE.replace("timeout_seconds: 10", "timeout_seconds: 500")
    problems = refusal(text, env={"N8N_WEBHOOK_URL": "http://127.0.0.1/x"})
    assert len(problems) == 1 and "webhooks.n8n.timeout_seconds" in problems[0]


def test_an_unset_variable_in_a_webhook_setting_other_than_url_secret_or_headers_is_refused():
    text = BASE.replace("timeout_seconds: 10", 'timeout_seconds: "${HOOK_TIMEOUT}"')
    problems = refusal(text, env=ENV)
    assert problems[0] == (f"rules.yaml:{line_of(text, 'HOOK_TIMEOUT')} webhooks.n8n.timeout_seconds: "
                           "environment variable HOOK_TIMEOUT is not set")


def test_unset_variables_outside_webhooks_are_still_refused():
    block_style = ("  - name: VIP\n    when:\n      totalSpend:\n        gt: ${VIP_OVER}\n"
                   "  - {name: Active}\n")
    problems = refusal(rules_text(segments=block_style), env=ENV)
    assert problems[0] == (f"rules.yaml:{line_of(rules_text(segments=block_style), 'VIP_OVER')} "
                           "segments[0].when.totalSpend.gt: environment variable VIP_OVER is not set")


def test_currency_is_a_three_letter_code():
    assert parse_rules(BASE, env=ENV).currency == "USD"
    assert parse_rules(BASE + "currency: EUR\n", env=ENV).currency == "EUR"
    problems = refusal(BASE + "currency: euro\n", env=ENV)
    assert len(problems) == 1 and "currency" in problems[0] and "ISO 4217" in problems[0]


def test_refusal_of_a_bad_url_does_not_echo_the_secret_or_url():
    url = f"ftp://user:{SECRET}@files.example.com/x"
    problems = refusal(BASE, env={"WEBHOOK_SECRET": SECRET, "N8N_WEBHOOK_URL": url})
    assert len(problems) == 1 and "webhooks.n8n.url" in problems[0]
    assert SECRET not in problems[0]


# --- broken files: each refused with file:line path: message ------------------------------------------------

BROKEN = [
    # (case, broken text, marker on the line named, path named, words in the message)
    ("yaml_syntax_error", edit("no_orders_segment: New", "no_orders_segment: New: Old"),
     "New: Old", None, "not valid YAML"),
    ("unknown_metric", edit("lastOrderDaysAgo: {gt: 90}", "lastOrderDays: {gt: 90}"),
     "lastOrderDays:", "segments[1].when.lastOrderDays", "unknown metric 'lastOrderDays'"),
    ("unknown_operator", edit("lastOrderDaysAgo: {gt: 90}", "lastOrderDaysAgo: {gtt: 90}"),
     "gtt", "segments[1].when.lastOrderDaysAgo", "unknown operator 'gtt'"),
    ("negative_threshold", edit("{gt: 90}", "{gt: -90}"),
     "-90", "segments[1].when.lastOrderDaysAgo", "negative"),
    ("non_numeric_threshold", edit("{gt: 90}", "{gt: ninety}"),
     "ninety", "segments[1].when.lastOrderDaysAgo", "needs a number"),
    ("quoted_threshold", edit("{gt: 90}", "{gt: '90'}"),
     "'90'", "segments[1].when.lastOrderDaysAgo", "needs a number"),
    ("duplicate_segment_names", edit("{name: New,", "{name: VIP,"),
     "{name: VIP, when: {firstOrderDaysAgo", "segments[2].name", "repeated: VIP"),
    ("no_default_segment", edit("{name: Active}", "{name: Active, when: {orderCount: {gt: 0}}}"),
     "Active", "segments[3].when", "last segment must have no `when`"),
    ("default_segment_not_last", edit("{name: New, when: {firstOrderDaysAgo: {lte: 30}}}", "{name: New}"),
     "{name: New}", "segments[2]", "segments after it can never match"),
    ("unknown_top_level_setting", BASE + "colour: blue\n",
     "colour", "colour", "unknown setting 'colour'"),
    ("duplicate_key", BASE + "first_run: emit\n",
     "first_run: emit", "first_run", "appears twice"),
    ("campaign_names_unknown_webhook", edit("{entered: VIP}, webhook: n8n}", "{entered: VIP}, webhook: slack}"),
     "slack", "campaigns.vip.webhook", "webhook 'slack' is not defined"),
    ("campaign_names_unknown_segment", edit("{entered: VIP}", "{entered: Gold}"),
     "Gold", "campaigns.vip.on.entered", "unknown segment 'Gold'"),
    ("campaign_from_names_unknown_segment",
     edit("  vip:", "  demote: {on: {from: Platinum, to: Active}, webhook: n8n}\n  vip:"),
     "Platinum", "campaigns.demote.on.from", "unknown segment 'Platinum'"),
    ("ftp_webhook_url", edit('"${N8N_WEBHOOK_URL}"', '"ftp://files.example.com/x"'),
     "ftp://", "webhooks.n8n.url", "http:// or https://"),
    ("file_webhook_url", edit('"${N8N_WEBHOOK_URL}"', '"file:///etc/passwd"'),
     "file://", "webhooks.n8n.url", "http:// or https://"),
    ("bad_timezone", edit("timezone: UTC", "timezone: Mars/Olympus_Mons"),
     "Mars", "timezone", "unknown timezone 'Mars/Olympus_Mons'"),
    ("frequency_bands_not_ascending", edit("{name: Monthly, max_avg_days: 30}", "{name: Monthly, max_avg_days: 5}"),
     "Monthly", "purchase_frequency[1].max_avg_days", "ascending"),
    ("no_orders_segment_unknown", edit("no_orders_segment: New", "no_orders_segment: Fresh"),
     "Fresh", "no_orders_segment", "'Fresh' is not one of the segments"),
    ("first_run_unknown_mode", edit("first_run: baseline", "first_run: shout"),
     "shout", "first_run", "'baseline' or 'emit'"),
]


@pytest.mark.parametrize(("text", "marker", "path", "words"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_rules_are_refused_naming_file_line_and_field(text, marker, path, words):
    problems = refusal(text)
    assert len(problems) == 1, problems
    where = f"rules.yaml:{line_of(text, marker)}"
    assert problems[0].startswith(f"{where} {path}: " if path else f"{where}: "), problems[0]
    assert words in problems[0]


def test_unknown_operator_message_names_the_field_and_its_line():
    text = edit("lastOrderDaysAgo: {gt: 90}", "lastOrderDaysAgo: {gtt: 90}")
    assert refusal(text) == [
        "rules.yaml:5 segments[1].when.lastOrderDaysAgo: unknown operator 'gtt' (use one of: gt, gte, lt, lte, eq)"]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file_is_refused(text):
    assert refusal(text, source="marketing.yaml") == ["marketing.yaml: the file is empty"]


def test_top_level_that_is_not_a_mapping_is_refused():
    assert refusal("- VIP\n- Active\n") == ["rules.yaml:1: the top level must be a mapping of settings"]


def test_every_problem_is_reported_not_just_the_first():
    text = edit("timezone: UTC", "timezone: Nowhere/City", edit("{gt: 90}", "{gtt: 90}"))
    problems = refusal(text)
    assert [p.split(": ", 1)[0] for p in problems] == [
        f"rules.yaml:{line_of(text, 'gtt')} segments[1].when.lastOrderDaysAgo",
        f"rules.yaml:{line_of(text, 'Nowhere')} timezone",
    ]


def test_refusal_names_the_source_file():
    problems = refusal(edit("timezone: UTC", "timezone: Nowhere/City"), source="staging-rules.yaml")
    assert problems[0].startswith("staging-rules.yaml:2 timezone: ")


# --- rules_version ------------------------------------------------------------------------------------------

def version(text: str, env: dict[str, str] | None = None) -> str:
    return parse_rules(text, env=ENV if env is None else env).rules_version


def test_rules_version_is_a_sha256():
    assert version(BASE).startswith("sha256:") and len(version(BASE)) == len("sha256:") + 64


@pytest.mark.parametrize(("case", "text"), [
    ("comments", "# tuned by marketing\n" + edit("first_run: baseline", "first_run: baseline   # quiet start")),
    ("blank_lines_and_spaces", edit("segments:\n", "\n\nsegments:   \n").replace("{name: VIP,", "{name:   VIP,")),
    ("flow_to_block_style", edit("  - {name: Weekly, max_avg_days: 7}\n", "  - name: Weekly\n    max_avg_days: 7\n")),
    ("webhook_url_and_timeout", edit("timeout_seconds: 10", "timeout_seconds: 30")),
    ("schedule", edit("evaluate_every_seconds: 60", "evaluate_every_seconds: 15")),
])
def test_rules_version_is_stable_across_edits_that_change_no_decision(case, text):
    assert version(text) == version(BASE)


def test_rules_version_ignores_secret_and_url_changes():
    other = {"WEBHOOK_SECRET": "another-secret", "N8N_WEBHOOK_URL": "https://n8n.example.com/hook"}
    assert version(BASE, other) == version(BASE)


@pytest.mark.parametrize(("case", "text"), [
    ("vip_threshold", rules_text(vip="6000")),
    ("dormant_threshold", edit("{gt: 90}", "{gt: 60}")),
    ("operator", edit("{lte: 30}", "{lt: 30}")),
    ("timezone", rules_text(timezone="Europe/Berlin")),
    ("segment_order", edit("  - {name: VIP, when: {totalSpend: {gt: 5000}}}\n  - {name: Dormant, when: "
                           "{lastOrderDaysAgo: {gt: 90}}}\n", "  - {name: Dormant, when: {lastOrderDaysAgo: "
                           "{gt: 90}}}\n  - {name: VIP, when: {totalSpend: {gt: 5000}}}\n")),
    ("frequency_band", edit("max_avg_days: 7}", "max_avg_days: 8}")),
    ("campaign", edit("{entered: Dormant}", "{entered: Active}")),
])
def test_rules_version_changes_when_a_decision_changes(case, text):
    assert version(text) != version(BASE)


def test_orders_settings_default_to_the_usual_non_revenue_statuses_and_one_day_ahead():
    orders = make_rules().orders
    assert orders.excluded == frozenset({"cancelled", "canceled", "refunded", "void"})
    assert orders.max_future_days == 1


def test_orders_settings_are_read_and_compared_without_case_or_spaces():
    text = BASE + "orders:\n  exclude_statuses: [Cancelled, ' Returned ']\n  max_future_days: 0\n"
    orders = parse_rules(text, env=ENV).orders
    assert (orders.excluded, orders.max_future_days) == (frozenset({"cancelled", "returned"}), 0)


def test_the_orders_settings_alone_need_no_webhook_secret():
    text = BASE + "orders:\n  exclude_statuses: [cancelled]\n"
    assert parse_rules(text, env={}).delivery_problem  # the whole file loads, without delivery
    assert parse_order_rules(text, env={}).excluded == frozenset({"cancelled"})
    with pytest.raises(RulesError, match=r"rules.yaml:\d+ orders.max_future_days: must be at most 366"):
        parse_order_rules(BASE + "orders:\n  max_future_days: 400\n", env={})


def test_campaigns_recheck_before_sending_unless_told_not_to():
    rules = make_rules(campaigns="  welcome: {on: {entered: New}, webhook: n8n}\n"
                                 "  vip: {on: {entered: VIP}, webhook: n8n, recheck: false}\n")
    assert (rules.campaigns["welcome"].recheck, rules.campaigns["vip"].recheck) == (True, False)


@pytest.mark.parametrize(("amount", "currency", "cents", "shown"), [
    (Decimal("5000"), "USD", False, "$5,000"), (Decimal("5000"), "USD", True, "$5,000.00"),
    (Decimal("1250.5"), "EUR", False, "€1,250.50"), (Decimal("-12.5"), "GBP", True, "-£12.50"),
    (Decimal("1250"), "CHF", True, "1,250.00 CHF"), (Decimal("98000"), "JPY", True, "¥98,000")])
def test_money_is_shown_with_the_rules_currency(amount, currency, cents, shown):
    assert format_money(amount, currency, cents=cents) == shown
    assert format_cents(int(amount * 100), currency) == format_money(amount, currency)
