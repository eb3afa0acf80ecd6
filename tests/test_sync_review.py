"""Review before write: a saved plan written exactly as reviewed, and the question a terminal
asks before writing (a real pseudo-terminal, with the console script as a subprocess)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from datetime import date

import pytest
import yaml
from conftest import make_config, write_config
from fake_autotask import PERIOD, mapping, write_counts, writes
from sandbox_cli import EXE, env_for, subprocess_env

from infima_autotask.sandbox import Sandbox, data

pytestmark = pytest.mark.usefixtures("no_backoff")


def test_a_saved_plan_is_written_exactly_as_reviewed(
    invoke, setup, fake, requests_mock, tmp_path, config_path, counts
):
    for client_id in (101, 102, 103):
        fake.add_client(client_id, 10)
    setup({101: 12, 102: 10, 103: 10})
    plan = tmp_path / "plan.json"

    dry = invoke("sync", "--month", PERIOD, "--dry-run", "--plan-out", str(plan))

    assert dry.exit_code == 0, dry.output
    assert f"Plan saved to {plan}: 1 change." in dry.stderr
    document = json.loads(plan.read_text(encoding="utf-8"))
    assert document["period"] == PERIOD
    by_client = {item["client_id"]: item for item in document["items"]}
    assert by_client[101]["request"]["unitChange"] == 2
    assert by_client[102]["request"] is None
    assert writes(requests_mock) == []

    # Since the review: 101 gained a user, 103 changed; 102 is as reviewed (unchanged).
    write_counts(tmp_path / "counts.csv", {101: 13, 102: 10, 103: 11})
    result = invoke("sync", "--plan", str(plan), "--json")

    assert result.exit_code == 1  # held items need a person
    items = {item["client_id"]: item for item in json.loads(result.stdout)["items"]}
    assert items[101]["status"] == "held"
    assert (
        "changed since the reviewed plan (users 12 -> 13; target 12 -> 13)"
        in (items[101]["message"])
    )
    assert items[103]["status"] == "held"
    assert "not a change in the reviewed plan" in items[103]["message"]
    assert writes(requests_mock) == []

    # Unchanged since the review: written exactly so.
    write_counts(tmp_path / "counts.csv", {101: 12, 102: 10, 103: 10})
    again = invoke("sync", "--plan", str(plan))
    assert again.exit_code == 0, again.output
    assert [(w["contractServiceID"], w["unitChange"]) for w in writes(requests_mock)] == [
        (mapping(101)["contract_service_id"], 2)
    ]


def test_plan_options_are_checked(invoke, setup, fake, tmp_path):
    fake.add_client(101, 10)
    setup({101: 12})
    refused = invoke("sync", "--month", PERIOD, "--plan-out", str(tmp_path / "p.json"))
    assert refused.exit_code == 2 and "--plan-out works only with --dry-run" in refused.stderr
    junk = tmp_path / "junk.json"
    junk.write_text("{}", encoding="utf-8")
    bad = invoke("sync", "--plan", str(junk))
    assert bad.exit_code == 2
    assert bad.stderr.startswith(f"Error: {junk} is not a plan written by")
    other = tmp_path / "other.json"
    other.write_text(
        json.dumps({"plan_version": 1, "period": "2026-11", "items": []}), encoding="utf-8"
    )
    mismatch = invoke("sync", "--plan", str(other), "--month", PERIOD)
    assert mismatch.exit_code == 2 and "is for 2026-11" in mismatch.stderr


def test_a_long_table_shows_what_needs_reading(invoke, setup, fake, requests_mock):
    for client_id in range(101, 131):
        fake.add_client(client_id, 10)
    setup({client_id: 12 if client_id == 101 else 10 for client_id in range(101, 131)})

    short = invoke("sync", "--month", PERIOD, "--dry-run")
    everything = invoke("sync", "--month", PERIOD, "--dry-run", "--all")

    assert len(short.stdout.splitlines()) == 3  # header, rule, the one change
    assert "29 unchanged or skipped rows not shown; --all shows every row." in short.stderr
    assert len(everything.stdout.splitlines()) == 32
    assert len(json.loads(invoke("sync", "--month", PERIOD, "--json").stdout)["items"]) == 30


# -- a real terminal -----------------------------------------------------------------------


def _converse(env: dict[str, str], answer: str, *args: str) -> str:
    """Run `sync` (or ``args``) on a pseudo-terminal, answer its question, return everything
    it printed."""
    month = date.today().strftime("%Y-%m")
    main, secondary = pty.openpty()
    proc = subprocess.Popen(
        [str(EXE), *(args or ("sync", "--month", month))],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=env,
        close_fds=True,
    )
    os.close(secondary)
    seen = b""
    answered = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the other end closed: the process is done
                    break
                if not chunk:
                    break
                seen += chunk
            if not answered and b"to Autotask? [y/N]" in seen:
                os.write(main, answer.encode() + b"\n")
                answered = True
            if proc.poll() is not None and not ready:
                break
        proc.wait(timeout=30)
    finally:
        os.close(main)
    assert answered, seen.decode(errors="replace")
    return seen.decode(errors="replace")


@pytest.fixture
def terminal_env(tmp_path):
    with Sandbox() as sandbox:
        config = tmp_path / "config.yaml"
        write_config(
            config,
            make_config([data.seed_mapping(data.ACME_CLIENT_ID)], autotask={"api_url": None}),
        )
        doc = yaml.safe_load(config.read_text(encoding="utf-8"))
        doc["autotask"] = {"timezone": "America/New_York"}
        config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        env = {
            **subprocess_env(tmp_path / "home"),
            **env_for(sandbox, tmp_path / "state"),
            "INFIMA_AUTOTASK_CONFIG": str(config),
        }
        yield sandbox, env


def test_on_a_terminal_sync_shows_the_plan_and_asks_first(terminal_env):
    sandbox, env = terminal_env

    declined = _converse(env, "n")

    assert "Acme Dental" in declined and "planned" in declined
    assert "Write this 1 change to Autotask? [y/N]" in declined
    assert "Nothing was written." in declined
    assert sandbox.adjustments() == []

    accepted = _converse(env, "y")

    assert "updated" in accepted
    assert len(sandbox.adjustments()) == 1


def test_on_a_terminal_revert_shows_its_plan_and_asks_first(terminal_env):
    """The revert question on a real pseudo-terminal: no writes the first time, the
    compensating adjustment the second."""
    sandbox, env = terminal_env
    month = date.today().strftime("%Y-%m")
    synced = subprocess.run(
        [str(EXE), "sync", "--month", month], env=env, capture_output=True, text=True, timeout=60
    )  # no terminal: written at once
    assert synced.returncode == 0, synced.stderr
    runs = subprocess.run(
        [str(EXE), "history", "--runs", "--json"], env=env, capture_output=True, text=True
    )
    run_id = str(json.loads(runs.stdout)[0]["run_id"])

    declined = _converse(env, "n", "revert", run_id)

    assert "revert of run" in declined and "planned" in declined
    assert "Write this 1 compensating change to Autotask? [y/N]" in declined
    assert "Nothing was written." in declined
    assert len(sandbox.adjustments()) == 1

    accepted = _converse(env, "y", "revert", run_id)

    assert "Revert of run" in accepted and "1 updated" in accepted
    adjustments = sandbox.adjustments()
    assert len(adjustments) == 2 and adjustments[1]["unitChange"] == -adjustments[0]["unitChange"]


def test_what_is_written_after_the_question_is_only_what_was_shown(
    invoke, setup, fake, requests_mock, monkeypatch, tmp_path
):
    """The preview showed nothing to write; a count that changes before the real run must be
    held, not written unasked."""
    from infima_autotask.cli import cmd_sync

    monkeypatch.setattr("infima_autotask.cli._common.can_prompt", lambda: True)
    fake.add_client(101, 10)
    setup({101: 10})
    real_run = cmd_sync.run_sync

    def counts_change_after_the_preview(runtime, options, **kwargs):
        report = real_run(runtime, options, **kwargs)
        if options.dry_run:
            write_counts(tmp_path / "counts.csv", {101: 11})
        return report

    monkeypatch.setattr(cmd_sync, "run_sync", counts_change_after_the_preview)
    result = invoke("sync", "--month", PERIOD, "--json")

    assert writes(requests_mock) == []
    [item] = json.loads(result.stdout)["items"]
    assert item["status"] == "held" and "not a change in the reviewed plan" in item["message"]


def test_ctrl_c_at_the_question_writes_nothing_and_exits_130(
    invoke, setup, fake, requests_mock, monkeypatch
):
    monkeypatch.setattr("infima_autotask.cli._common.can_prompt", lambda: True)
    fake.add_client(101, 10)
    setup({101: 12})
    result = invoke("sync", "--month", PERIOD, input="")  # end of input, as Ctrl-C ends it
    assert result.exit_code == 130
    assert "Nothing was written." in result.stderr
    assert writes(requests_mock) == []


def test_a_plan_is_held_when_the_date_it_would_send_changed_since(
    invoke, setup, fake, requests_mock, tmp_path, config_path
):
    """autotask.timezone changed after the review: the same day, sent at another hour."""
    fake.add_client(101, 10)
    setup({101: 12})
    plan = tmp_path / "plan.json"
    invoke("sync", "--month", PERIOD, "--dry-run", "--plan-out", str(plan))
    setup({101: 12}, autotask={"timezone": "America/New_York"})

    result = invoke("sync", "--plan", str(plan), "--json")

    [item] = json.loads(result.stdout)["items"]
    assert item["status"] == "held"
    assert "sent date 2026-12-01T12:00:00Z -> 2026-12-01T14:30:00Z" in item["message"]
    assert writes(requests_mock) == []


def test_a_plan_that_cannot_be_used_is_refused_with_nothing_written(
    invoke, setup, fake, requests_mock, tmp_path
):
    fake.add_client(101, 10)
    setup({101: 12})
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("a file where the plan's folder should be", encoding="utf-8")
    unwritable = not_a_folder / "plan.json"
    refused = invoke("sync", "--month", PERIOD, "--dry-run", "--plan-out", str(unwritable))
    assert refused.exit_code == 2
    assert refused.stderr.splitlines()[-1] == (
        f"Error: Cannot write the plan to {unwritable}: Not a directory. Choose a writable path."
    )
    plan = tmp_path / "plan.json"
    assert invoke("sync", "--month", PERIOD, "--dry-run", "--plan-out", str(plan)).exit_code == 0
    reviewed = json.loads(plan.read_text(encoding="utf-8"))
    bad = f"Error: {plan} is not a plan written by `infima-autotask sync --dry-run --plan-out`"

    price_as_text = json.loads(json.dumps(reviewed))
    price_as_text["items"][0]["unit_price"] = str(price_as_text["items"][0]["unit_price"])
    cases = [
        (json.dumps(price_as_text), f"{bad}: an item is missing a value or has a wrong one.\n"),
        ('{"plan_version": 1, "items": [', f"{bad}: it is not JSON.\n"),
        (None, f"Error: Cannot read the plan {plan}: No such file or directory.\n"),
    ]
    for text, message in cases:
        if text is None:
            plan.unlink()
        else:
            plan.write_text(text, encoding="utf-8")
        result = invoke("sync", "--plan", str(plan))
        assert (result.exit_code, result.stderr) == (2, message)
    assert writes(requests_mock) == []
