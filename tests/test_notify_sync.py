"""Notifications around a real `sync` (SPEC §11), through the CLI against the loopback sandbox,
with real receivers started here on 127.0.0.1: a webhook that records what it is sent, one
that hangs, one that refuses, one that answers 500, and a healthcheck endpoint.

A delivery that fails is a `Warning:` line (even with -q) kept with the run in the history; the
exit code and the run itself never change.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from notify_receivers import Receiver, refusing_url
from sandbox_cli import env_for

from infima_autotask.cli import cli
from infima_autotask.history import read_runs
from infima_autotask.http import HttpClient, RetryPolicy
from infima_autotask.runtime import Seams
from infima_autotask.sandbox import Sandbox, data

SEED = {mapping["client_id"]: mapping for mapping in data.seed_mappings()}
DELTA_ENDED = {  # Delta on its ended contract: failed, naming the renewal
    **SEED[data.DELTA_CLIENT_ID],
    "contract_id": data.DELTA_OLD_CONTRACT_ID,
    "contract_service_id": data.DELTA_OLD_CONTRACT_SERVICE_ID,
}
CLEAN = [SEED[data.ACME_CLIENT_ID], SEED[data.BIRCH_CLIENT_ID]]  # 1 updated, 1 unchanged
# Cobalt drops 40 -> 31 (22%): held under max_decrease_percent 10; Delta fails.
TROUBLED = [*CLEAN, SEED[data.COBALT_CLIENT_ID], DELTA_ENDED]
HOOK_PATH = "/services/T0NOTIFY/B0NOTIFY/hookToken1234567890"
PING_PATH = "/ping/0f3b2c4d-aaaa-4bbb-8ccc-123456789abc"


class Tool:
    """The CLI in-process against the sandbox; ``seams`` go in as click's ``obj``."""

    def __init__(self, sb: Sandbox, tmp: Path) -> None:
        self.sb = sb
        self.state = tmp / "state"
        self.env = env_for(sb, self.state)
        self.config = tmp / "config.yaml"
        self.seams: dict[str, Any] = {}

    def write(self, notify: dict[str, Any], mappings=CLEAN, **sync: Any) -> None:
        doc = {
            "version": 1,
            "sync": {"max_decrease_percent": 10, **sync},
            "notify": notify,
            "mappings": mappings,
        }
        self.config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    def run(self, *args: str, **env: str):
        result = CliRunner().invoke(
            cli,
            ["--config", str(self.config), *args],
            env={**self.env, **env},
            obj=Seams(**self.seams),
            catch_exceptions=False,
        )
        assert "Traceback" not in result.stderr
        return result

    def runs(self):
        return read_runs(self.state)


@pytest.fixture
def tool(sandbox, tmp_path):
    return Tool(sandbox, tmp_path)


@pytest.fixture
def hook():
    with Receiver() as receiver:
        yield receiver


@pytest.fixture
def hc():
    with Receiver(answer=b"OK") as receiver:
        yield receiver


def test_held_and_failed_clients_reach_the_webhook_and_the_healthcheck_fails(tool, hook, hc):
    tool.write(
        {"webhook_url": hook.url(HOOK_PATH), "healthcheck_url": hc.url(PING_PATH)},
        mappings=TROUBLED,
    )
    result = tool.run("sync")
    assert result.exit_code == 1
    assert "notification" not in result.stderr  # all delivered: no warning

    assert hc.paths() == [f"{PING_PATH}/start", f"{PING_PATH}/fail"]
    assert all(request.method == "POST" for request in hc.received)
    assert "sync started" in hc.received[0].text
    assert "Held (1):\n- Cobalt Logistics (client 103" in hc.received[1].text

    (request,) = hook.received
    assert request.method == "POST" and request.path == HOOK_PATH
    assert request.headers["Content-Type"] == "application/json"
    document = request.json()
    (run,) = tool.runs()
    assert document["run_id"] == run.id and document["exit_code"] == 1
    assert document["summary"]["updated"] == 1 and document["summary"]["held"] == 1
    assert [item["client_id"] for item in document["held"]] == [data.COBALT_CLIENT_ID]
    assert [item["client_id"] for item in document["failed"]] == [data.DELTA_CLIENT_ID]
    assert "renewal" in document["failed"][0]["message"]
    assert run.warnings == ()


@pytest.mark.parametrize("kind", ["slack", "teams"])
def test_slack_and_teams_formats_on_the_wire(tool, hook, kind):
    tool.write({"webhook_url": hook.url(HOOK_PATH), "webhook_format": kind}, mappings=TROUBLED)
    assert tool.run("sync").exit_code == 1
    (request,) = hook.received
    payload = request.json()
    if kind == "slack":
        assert payload["text"].startswith("infima-autotask: Period ")
        text = "\n".join(b["text"]["text"] for b in payload["blocks"] if b["type"] == "section")
    else:
        (attachment,) = payload["attachments"]
        assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
        text = "\n".join(b.get("text", "") for b in attachment["content"]["body"])
    assert "Cobalt Logistics (client 103" in text and "Delta Vets (client 104" in text


def test_a_clean_quiet_run_pings_success_and_prints_nothing(tool, hook, hc):
    tool.write({"webhook_url": hook.url(HOOK_PATH), "healthcheck_url": hc.url(PING_PATH)})
    result = tool.run("sync", "--quiet")
    assert result.exit_code == 0
    assert result.stdout == "" and result.stderr == ""
    assert hc.paths() == [f"{PING_PATH}/start", PING_PATH]
    assert hook.received[0].json()["exit_code"] == 0
    assert len(tool.sb.adjustments()) == 1

    # The daily catch-up line: nothing due is a success ping, and no message.
    result = tool.run("sync", "--if-due", "--quiet")
    assert result.exit_code == 0 and result.output == ""
    assert hc.paths()[2:] == [f"{PING_PATH}/start", PING_PATH]
    assert len(hook.received) == 1


FAILING = {
    "hangs": "did not answer in time",
    "refuses": "Could not connect to Webhook",
    "answers 500": "Webhook is unavailable (HTTP 500",
}


@pytest.mark.parametrize("how", list(FAILING))
def test_an_undelivered_webhook_is_a_warning_kept_with_the_run(tool, hc, how):
    tool.seams["http"] = partial(HttpClient, timeout=(2.0, 1.0))
    receiver = Receiver(hang=how == "hangs", status=500 if how == "answers 500" else 200)
    with receiver:
        url = refusing_url(HOOK_PATH) if how == "refuses" else receiver.url(HOOK_PATH)
        tool.write({"webhook_url": url, "healthcheck_url": hc.url(PING_PATH)})
        started = time.monotonic()
        result = tool.run("sync", "--quiet")
        took = time.monotonic() - started
    assert result.exit_code == 0  # unchanged: the run itself went well
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()  # -q: the warning alone, because it needs a person
    assert line.startswith("Warning: webhook notification not delivered: ")
    assert FAILING[how] in line
    # Nothing to run again: the run stands, and the channel can be checked on its own.
    assert "run again" not in line and "Try again later" not in line
    assert line.endswith("The run is unaffected; `infima-autotask notify test` checks the channel.")
    assert "http://127.0.0.1:" in line and "/…" in line and "hookToken" not in line
    assert len(tool.sb.adjustments()) == 1  # the run wrote, and was not lost
    (run,) = tool.runs()
    assert run.outcome == "ok" and run.summary["updated"] == 1
    assert run.warnings == (line.removeprefix("Warning: "),)
    assert hc.paths()[-1] == PING_PATH  # the healthcheck still heard the success
    assert took < 20
    if how != "refuses":
        assert len(receiver.received) == 1  # a POST is never retried

    shown = tool.run("history", "--runs")
    assert "webhook notification not delivered" in shown.stdout


def test_a_failed_healthcheck_ping_is_a_warning_too(tool, hook):
    tool.write({"webhook_url": hook.url(HOOK_PATH), "healthcheck_url": refusing_url(PING_PATH)})
    result = tool.run("sync")
    assert result.exit_code == 0
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning: health")]
    assert len(warnings) == 2  # the start ping and the success ping
    assert all("Could not connect to Healthcheck" in line for line in warnings)
    assert "/…/start" in warnings[0] and "0f3b2c4d" not in result.output
    (run,) = tool.runs()
    assert len(run.warnings) == 2
    assert len(hook.received) == 1


def test_dry_runs_notify_only_when_asked(tool, hook, hc):
    notify = {"webhook_url": hook.url(HOOK_PATH), "healthcheck_url": hc.url(PING_PATH)}
    tool.write(notify)
    assert tool.run("sync", "--dry-run").exit_code == 0
    assert hook.received == [] and hc.received == []

    tool.write({**notify, "dry_runs": True})
    assert tool.run("sync", "--dry-run", "--detailed-exitcode").exit_code == 4
    assert hc.paths() == [f"{PING_PATH}/start", f"{PING_PATH}/fail"]  # SPEC: /fail unless 0
    document = hook.received[0].json()
    assert document["dry_run"] is True and document["summary"]["planned"] == 1
    assert tool.sb.adjustments() == []


def test_a_run_that_cannot_start_fails_the_healthcheck_and_says_why(tool, hook, hc):
    tool.seams["retry"] = lambda: RetryPolicy(base_delay=0.0, max_delay=0.0, max_attempts=2)
    tool.sb.faults.add("Contracts", "503", times=-1)
    tool.write({"webhook_url": hook.url(HOOK_PATH), "healthcheck_url": hc.url(PING_PATH)})
    result = tool.run("sync")
    assert result.exit_code == 3
    assert result.stderr.startswith("Error: Autotask is unavailable (HTTP 503")
    assert hc.paths() == [f"{PING_PATH}/start", f"{PING_PATH}/fail"]
    assert "Autotask is unavailable" in hc.received[1].text
    document = hook.received[0].json()
    (run,) = tool.runs()
    assert document["outcome"] == "error" and document["exit_code"] == 3
    assert document["run_id"] == run.id and document["period"] == run.period
    assert document["error"].startswith("Autotask is unavailable (HTTP 503")
    assert document["text"] == f"Sync of {run.period} failed (exit 3)"


def test_an_undelivered_notice_of_a_failed_run_is_kept_with_that_run(tool, hc):
    tool.seams["retry"] = lambda: RetryPolicy(base_delay=0.0, max_delay=0.0, max_attempts=2)
    tool.sb.faults.add("Contracts", "503", times=-1)
    with Receiver(status=500) as broken:
        tool.write({"webhook_url": broken.url(HOOK_PATH), "healthcheck_url": hc.url(PING_PATH)})
        result = tool.run("sync")
    assert result.exit_code == 3
    assert "Warning: webhook notification not delivered" in result.stderr
    (run,) = tool.runs()
    assert run.outcome.startswith("error: Autotask is unavailable")
    assert len(run.warnings) == 1 and "HTTP 500" in run.warnings[0]


def test_a_refused_run_before_the_history_fails_the_healthcheck(tool, hook, hc):
    tool.write({"webhook_url": hook.url(HOOK_PATH), "healthcheck_url": hc.url(PING_PATH)})
    result = tool.run("sync", "--client", "424242")
    assert result.exit_code == 2
    assert hc.paths() == [f"{PING_PATH}/start", f"{PING_PATH}/fail"]
    document = hook.received[0].json()
    assert document["exit_code"] == 2 and document["run_id"] is None
    assert "Client 424242 is not mapped" in document["error"]
    assert tool.runs() == []


def test_the_run_is_mailed(tool, tmp_path):
    from notify_receivers import SmtpRecorder, SmtpServer

    recorder = SmtpRecorder()
    with SmtpServer(recorder) as server:
        email = {
            "host": "127.0.0.1",
            "port": server.port,
            "from": "billing-bot@example.com",
            "to": ["billing@example.com", "ops@example.com"],
        }
        tool.write({"email": email}, mappings=TROUBLED)
        result = tool.run("sync")
    assert result.exit_code == 1
    assert "Warning" not in result.stderr.replace("Warning: INFIMA clients", "")
    (mail,) = recorder.messages
    assert mail.mail_from == "billing-bot@example.com"
    assert mail.rcpt_tos == ["billing@example.com", "ops@example.com"]
    assert "Subject: infima-autotask: Period " in mail.content
    assert "Held (1):" in mail.content and "Cobalt Logistics (client 103" in mail.content
    assert "Failed (1):" in mail.content and "Delta Vets (client 104" in mail.content
    assert recorder.logins == []  # no username: no login


class _CtrlC(HttpClient):
    """Ctrl-C while one request to the healthcheck is under way."""

    def __init__(self, service, *, at: str, **kwargs):
        super().__init__(service, **kwargs)
        self.at = at

    def request(self, method, url, **kwargs):
        if self.service == "Healthcheck" and url.endswith(self.at):
            raise KeyboardInterrupt
        return super().request(method, url, **kwargs)


def test_ctrl_c_during_the_start_ping_starts_nothing(tool, hook, hc):
    tool.seams["http"] = partial(_CtrlC, at="/start")
    tool.write({"webhook_url": hook.url(HOOK_PATH), "healthcheck_url": hc.url(PING_PATH)})
    result = tool.run("sync")
    assert result.exit_code == 130
    assert result.stderr == "Interrupted before any write: nothing was sent to Autotask.\n"
    assert tool.runs() == [] and tool.sb.adjustments() == []


def test_ctrl_c_during_the_end_notifications_keeps_the_exit_code(tool, hook, hc):
    tool.seams["http"] = partial(_CtrlC, at=PING_PATH)
    tool.write({"webhook_url": hook.url(HOOK_PATH), "healthcheck_url": hc.url(PING_PATH)})
    result = tool.run("sync", "--quiet")
    assert result.exit_code == 0
    assert result.stderr == "Warning: notifications interrupted; the rest were not sent.\n"
    assert len(tool.sb.adjustments()) == 1 and tool.runs()[0].outcome == "ok"
    assert hook.received == []  # the webhook comes after the ping, and was not sent


def test_a_revert_notifies_like_a_sync(tool, hook, hc):
    """A revert writes billing changes too: the webhook hears it and the healthcheck pings."""
    tool.write({"webhook_url": hook.url(HOOK_PATH), "healthcheck_url": hc.url(PING_PATH)})
    assert tool.run("sync").exit_code == 0
    (synced,) = tool.runs()
    hook.received.clear()
    hc.received.clear()

    result = tool.run("revert", str(synced.id), "--yes")
    assert result.exit_code == 0, result.output
    assert hc.paths() == [f"{PING_PATH}/start", PING_PATH]
    (request,) = hook.received
    document = request.json()
    reverting = tool.runs()[0]
    assert document["run_id"] == reverting.id and document["exit_code"] == 0
    assert document["text"].startswith(f"Revert of run {synced.id}, period ")
    assert document["summary"]["updated"] == 1
