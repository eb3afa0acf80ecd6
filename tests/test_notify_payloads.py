"""What each notification says (SPEC §11): the generic JSON document, the Slack and Teams
messages and the e-mail, built from a finished sync's report, parsed back and checked for the
run's summary and every held and failed client."""

from __future__ import annotations

import json
from email import message_from_string, policy

import pytest

from infima_autotask.config import EmailSettings
from infima_autotask.notify import (
    MAX_LISTED,
    RunMessage,
    email_message,
    error_message,
    generic_payload,
    message_for_test,
    ping_url,
    report_message,
    slack_payload,
    teams_payload,
    text_body,
    webhook_format,
)
from infima_autotask.runner import SyncReport
from infima_autotask.statuses import FAILED, HELD, UNCHANGED, UPDATED
from infima_autotask.sync import PlanItem

HELD_MESSAGE = "drop of 60% (40 -> 16) is over max_decrease_percent 50; run with --yes"
FAILED_MESSAGE = "contract 29684004 ended on 2026-11-30; renewal: map 104 --account 29683504"


def item(client_id: int, name: str, status: str, message: str = "", **values) -> PlanItem:
    fields = {
        "client_id": client_id,
        "client_name": name,
        "contract_id": 6000 + client_id,
        "contract_service_id": 7000 + client_id,
        "service_id": 30012,
        "users": 16,
        "target": 16,
        "before": 40,
        "after": 40,
        "change": 0,
        "unit_price": 4.5,
        "unit_cost": 2.25,
        "new_unit_cost": 2.25,
        "status": status,
        "message": message,
    }
    fields.update(values)
    return PlanItem(**fields)


def report(*, dry_run: bool = False, extra: tuple[PlanItem, ...] = ()) -> SyncReport:
    items = [
        item(101, "Acme Dental", UPDATED, before=10, target=12, after=12, change=2),
        item(102, "Birch & Co <Legal>", UNCHANGED, before=25, target=25),
        item(103, "Cobalt Logistics", HELD, HELD_MESSAGE),
        item(104, "Delta Veterinary", FAILED, FAILED_MESSAGE, target=None, users=None),
        *extra,
    ]
    result = SyncReport(period="2026-12", dry_run=dry_run, items=items, run_id=7)
    result.warnings.append("a warning of the run")
    return result


@pytest.fixture
def message() -> RunMessage:
    return report_message(report(), 1)


def test_generic_json_carries_summary_exit_code_and_held_and_failed_items(message):
    document = json.loads(json.dumps(generic_payload(message)))
    assert document["event"] == "sync"
    assert document["period"] == "2026-12" and document["dry_run"] is False
    assert document["exit_code"] == 1 and document["outcome"] == "failed"
    assert document["run_id"] == 7
    assert document["summary"] == {
        "updated": 1,
        "unchanged": 1,
        "planned": 0,
        "skipped": 0,
        "held": 1,
        "failed": 1,
    }
    assert document["text"] == (
        "Period 2026-12: 1 updated, 1 unchanged, 0 skipped, 1 held, 1 failed"
    )
    # The item objects of `sync --json` (SPEC §8), only for held and failed clients.
    (held,) = document["held"]
    assert held["client_id"] == 103 and held["client_name"] == "Cobalt Logistics"
    assert held["status"] == "held" and held["message"] == HELD_MESSAGE
    assert held["contract_service_id"] == 7103 and held["before"] == 40
    (failed,) = document["failed"]
    assert failed["client_id"] == 104 and failed["message"] == FAILED_MESSAGE
    assert document["warnings"] == ["a warning of the run"]
    assert document["error"] is None


def test_slack_message_has_fallback_text_and_blocks_naming_held_and_failed(message):
    payload = json.loads(json.dumps(slack_payload(message)))
    assert payload["text"] == (
        "infima-autotask: Period 2026-12: 1 updated, 1 unchanged, 0 skipped, 1 held, 1 failed"
    )
    texts = [
        block["text"]["text"] if block["type"] == "section" else block["elements"][0]["text"]
        for block in payload["blocks"]
    ]
    joined = "\n".join(texts)
    assert "*Held (1)*" in joined and "Cobalt Logistics (client 103" in joined
    assert HELD_MESSAGE.replace(">", "&gt;") in joined
    assert "*Failed (1)*" in joined and "Delta Veterinary (client 104" in joined
    assert "*Exit code:* 1 (a client was held or failed)" in joined
    assert all(len(text) <= 3000 for text in texts)
    # Unchanged and updated clients are in the summary line only.
    assert "Acme Dental" not in joined


def test_slack_escapes_its_control_characters():
    held = item(109, "Birch & Co <Legal>", HELD, "a <b> & c")
    text = json.dumps(slack_payload(report_message(report(extra=(held,)), 1)))
    assert "Birch &amp; Co &lt;Legal&gt;" in text and "a &lt;b&gt; &amp; c" in text
    assert "<Legal>" not in text


def test_slack_and_teams_list_a_long_run_within_their_limits():
    many = tuple(item(1000 + n, f"Client {n}", HELD, "held " * 40) for n in range(300))
    message = report_message(report(extra=many), 1)
    slack = slack_payload(message)
    assert len(slack["blocks"]) <= 50
    assert all(len(b["text"]["text"]) <= 3000 for b in slack["blocks"] if b["type"] == "section")
    assert f"and {301 - MAX_LISTED} more" in json.dumps(slack)
    card = teams_payload(message)["attachments"][0]["content"]
    assert f"and {301 - MAX_LISTED} more" in json.dumps(card)
    assert len(json.dumps(card)) < 28_000  # Teams' message size limit is about 28 KB
    # The e-mail and the generic document keep every client.
    assert all(f"Client {n} (client {1000 + n}" in text_body(message) for n in range(300))
    assert len(generic_payload(message)["held"]) == 301


def test_teams_message_is_one_adaptive_card(message):
    payload = json.loads(json.dumps(teams_payload(message)))
    assert payload["type"] == "message"
    (attachment,) = payload["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    title, facts, *rest = card["body"]
    assert title["text"].startswith("infima-autotask: Period 2026-12: 1 updated")
    assert title["color"] == "Attention"
    assert {"title": "Exit code", "value": "1 (a client was held or failed)"} in facts["facts"]
    assert {"title": "Period", "value": "2026-12"} in facts["facts"]
    texts = [block["text"] for block in rest]
    assert "Held (1)" in texts and "Failed (1)" in texts
    assert any("Cobalt Logistics (client 103" in t and HELD_MESSAGE in t for t in texts)
    assert any("Delta Veterinary (client 104" in t and FAILED_MESSAGE in t for t in texts)
    assert all(block["type"] == "TextBlock" and block["wrap"] for block in rest)


def test_error_message_names_the_period_exit_code_and_error():
    message = error_message(
        period="2026-12", dry_run=False, exit_code=3, error="Autotask is unavailable", run_id=9
    )
    document = generic_payload(message)
    assert document["outcome"] == "error" and document["exit_code"] == 3
    assert document["error"] == "Autotask is unavailable" and document["run_id"] == 9
    assert document["text"] == "Sync of 2026-12 failed (exit 3)"
    assert "Error:\n- Autotask is unavailable" in text_body(message)
    assert "Autotask is unavailable" in json.dumps(teams_payload(message))
    assert "Autotask is unavailable" in json.dumps(slack_payload(message))


def test_test_message_says_it_is_a_test():
    document = generic_payload(message_for_test())
    assert document["event"] == "test" and document["outcome"] == "test"
    assert "test message" in document["text"]
    assert "A test from infima-autotask" in text_body(message_for_test())


@pytest.mark.parametrize(
    "url,configured,expected",
    [
        ("https://hooks.slack.com/services/T0/B0/XYZ", None, "slack"),
        ("https://HOOKS.SLACK.COM/services/T0/B0/XYZ", None, "slack"),
        ("https://contoso.webhook.office.com/webhookb2/abc/IncomingWebhook/def", None, "teams"),
        (
            "https://prod-23.westeurope.logic.azure.com:443/workflows/1/triggers/manual/paths/"
            "invoke?api-version=2016-06-01&sig=abc",
            None,
            "teams",
        ),
        ("https://example.com/hook", None, "generic"),
        ("https://hooks.slack.com.evil.example/x", None, "generic"),
        ("https://example.com/hook", "teams", "teams"),
        ("https://hooks.slack.com/services/T0/B0/XYZ", "teams", "teams"),
        ("http://127.0.0.1:8080/x", "slack", "slack"),
    ],
)
def test_webhook_format_by_host_or_setting(url, configured, expected):
    assert webhook_format(url, configured) == expected


@pytest.mark.parametrize(
    "url,suffix,expected",
    [
        ("https://hc-ping.com/uuid", "/start", "https://hc-ping.com/uuid/start"),
        ("https://hc-ping.com/uuid/", "/fail", "https://hc-ping.com/uuid/fail"),
        (
            "https://hc-ping.com/key/slug?create=1",
            "/fail",
            "https://hc-ping.com/key/slug/fail?create=1",
        ),
        ("https://hc-ping.com/uuid", "", "https://hc-ping.com/uuid"),
    ],
)
def test_healthcheck_ping_urls(url, suffix, expected):
    assert ping_url(url, suffix) == expected


def test_email_is_plain_text_with_every_held_and_failed_client(message):
    settings = EmailSettings(
        host="smtp.example.com",
        port=587,
        sender="billing-bot@example.com",
        to=("billing@example.com", "ops@example.com"),
    )
    mail = message_from_string(email_message(settings, message).as_string(), policy=policy.default)
    assert mail["Subject"] == (
        "infima-autotask: Period 2026-12: 1 updated, 1 unchanged, 0 skipped, 1 held, 1 failed"
    )
    assert mail["From"] == "billing-bot@example.com"
    assert mail["To"] == "billing@example.com, ops@example.com"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail.get_content_type() == "text/plain"
    body = mail.get_content()
    assert (
        "Held (1):\n- Cobalt Logistics (client 103, contract service 7103): 40 -> 16 units" in body
    )
    assert HELD_MESSAGE in body and FAILED_MESSAGE in body
    assert "Exit code: 1 (a client was held or failed)" in body
    assert "Run: 7" in body


def test_nothing_due_and_interrupted_runs():
    idle = SyncReport(period="2026-12", dry_run=False, nothing_due=True)
    assert report_message(idle, 0).nothing_due
    stopped = report()
    stopped.interrupted = True
    message = report_message(stopped, 130)
    assert message.outcome == "interrupted"
    assert message.headline.endswith("; interrupted: the rest was not sent")
    assert "130 (interrupted)" in text_body(message)
