"""Edge cases of the sync path: each test pins a defect found in review (or a path
checked and found correct), through the real CLI against a requests-mock fake of Autotask.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import closing

import pytest
from fake_autotask import (
    CONTRACT,
    PERIOD,
    PICKLIST,
    autotask_calls,
    floor,
    mapping,
    record_intent,
    writes,
)

from infima_autotask.history import History
from infima_autotask.http import RetryPolicy

pytestmark = pytest.mark.usefixtures("no_backoff")


# -- writes: a create is sent once ----------------------------------------------------------


@pytest.mark.parametrize("applied", [False, True], ids=["not-applied", "applied"])
def test_create_answered_2xx_without_json_is_verified_never_sent_again(
    invoke, setup, fake, requests_mock, applied
):
    """Defect: a 2xx create whose body was not JSON counted as an unknown outcome, so a re-read
    that did not yet show it sent the adjustment a second time. A 2xx is an accepted create
    (SPEC §8 lists no 2xx among the unknown outcomes): it goes to the verification read."""
    fake.add_client(101, 10)
    setup({101: 12})
    fake.faults = ["2xx-applied" if applied else "2xx-not-json"]

    result = invoke("sync", "--month", PERIOD, "--json")

    assert [w["unitChange"] for w in writes(requests_mock)] == [2]
    item = json.loads(result.stdout)["items"][0]
    if applied:
        assert (result.exit_code, item["status"], item["after"]) == (0, "updated", 12)
    else:
        assert (result.exit_code, item["status"], item["after"]) == (1, "failed", 10)
        assert (
            item["message"]
            == "Autotask shows 10 units at 45.00/22.50 from 2026-12-01, expected 12 at 54.00/27.00"
        )
    assert "Traceback" not in result.output


# -- guards: exactly the limit is not over it -----------------------------------------------


def test_threshold_exactly_at_a_share_floats_round_down_is_allowed(
    invoke, setup, fake, requests_mock
):
    """Defect: 57 / 100 * 10000 is 5699.999... in floats, so a run reaching exactly 57% of the
    threshold (not over it) was refused with exit 3."""
    fake.add_client(101, 10)
    setup({101: 12}, sync={"max_api_usage_percent": 57})
    # 5,697 + 1 write + 1 verification + 1 (SPEC §8: the first write's read) = 57% of 10,000
    fake.used = 5_697

    at_limit = invoke("sync", "--month", PERIOD)

    assert at_limit.exit_code == 0, at_limit.output
    assert len(writes(requests_mock)) == 1

    fake.add_client(102, 10)
    setup({101: 12, 102: 12}, sync={"max_api_usage_percent": 57})
    requests_mock.reset_mock()
    fake.used = 5_698  # 102 alone changes: 5,698 + 1 + 1 + 1 = 5,701 is over 57%
    over = invoke("sync", "--month", PERIOD)
    assert over.exit_code == 3
    assert writes(requests_mock) == []


@pytest.mark.parametrize(
    ("key", "users"),
    [("max_decrease_percent", 88), ("max_increase_percent", 2_662)],
)
def test_change_of_exactly_a_fractional_percent_limit_is_not_held(
    invoke, setup, fake, requests_mock, key, users
):
    """Defect: 93.6 * 1375 is 128699.99999999999 in floats, so a change of exactly 93.6%
    (1375 -> 88, 1375 -> 2662) was held although SPEC §8 says exactly the limit is not."""
    fake.add_client(101, 1_375)
    setup({101: users}, sync={key: 93.6})

    at_limit = invoke("sync", "--month", PERIOD, "--json")

    assert at_limit.exit_code == 0, at_limit.output
    assert [w["unitChange"] for w in writes(requests_mock)] == [users - 1_375]

    fake.row_of(101)["units"] = 1_375
    requests_mock.reset_mock()
    setup({101: users - 1 if key == "max_decrease_percent" else users + 1}, sync={key: 93.6})
    over = invoke("sync", "--month", PERIOD, "--json")
    assert over.exit_code == 1
    assert json.loads(over.stdout)["items"][0]["status"] == "held"
    assert writes(requests_mock) == []


# -- output ----------------------------------------------------------------------------------


def test_quiet_is_silent_when_an_unknown_outcome_is_confirmed_updated(
    invoke, setup, fake, requests_mock
):
    """Defect: a create that timed out but was applied ends ``updated`` after the re-read, yet
    a WARNING log line reached stderr, so ``--quiet`` (cron) mailed a run needing nobody."""
    fake.add_client(101, 10)
    setup({101: 12})
    fake.faults = ["apply-then-timeout"]

    result = invoke("sync", "--month", PERIOD, "--quiet")

    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    assert len(writes(requests_mock)) == 1


# -- budget (SPEC §9) ------------------------------------------------------------------------


def test_budget_and_in_chunks_at_501_mappings_and_501_changes(invoke, setup, fake, requests_mock):
    """Checked correct: 1 + 3*ceil(N/500) + k + ceil(k/500) (+1 picklist) at N = k = 501, and
    no ``in`` list over 500 values in any batched read, the verification read included."""
    users = {}
    for cid in range(1, 502):
        fake.add_client(cid, 10, contract=CONTRACT + cid)
        users[cid] = 11
    setup(users, mappings=[mapping(cid, contract_id=CONTRACT + cid) for cid in users])

    result = invoke("sync", "--month", PERIOD)

    assert result.exit_code == 0, result.output[-2000:]
    assert len(writes(requests_mock)) == 501
    assert len(autotask_calls(requests_mock)) == floor(501, 501) + PICKLIST
    # contracts, contract services, units rows: 500 + 1 each; the first write's own read;
    # then the verification of all 501 written items: 500 + 1
    assert fake.in_sizes == [500, 1] * 3 + [1] + [500, 1]


# -- a killed run ----------------------------------------------------------------------------


def test_write_of_a_run_killed_moments_ago_is_given_time_to_land(
    invoke, setup, fake, requests_mock, state_dir, seams
):
    """Defect: a run killed mid-send (stopped while Autotask hung) and started again at once
    read the units row before Autotask had applied the killed run's create, called it "not
    applied" and sent it again: billed twice once the first create landed. A fresh intent now
    gets the same settle wait as an unknown outcome within a run before it is re-read."""
    seams["retry"] = lambda: RetryPolicy(base_delay=0.0, max_delay=3.0)
    fake.add_client(101, 10)
    setup({101: 12})
    intent = record_intent(state_dir, 101, before=10, target=12)
    # Autotask applies the killed run's +2 a moment after the new run starts.
    late = threading.Timer(0.25, lambda: fake.row_of(101).update(units=12, price=54.0, cost=27.0))
    late.start()

    result = invoke("sync", "--month", PERIOD, "--json")
    late.join()

    assert writes(requests_mock) == []
    assert fake.row_of(101)["units"] == 12
    assert result.exit_code == 0, result.output
    item = json.loads(result.stdout)["items"][0]
    assert (item["status"], item["before"], item["change"]) == ("updated", 10, 2)
    assert "written by an interrupted run; confirmed now" in item["message"]
    # What it waited for is said, before the wait.
    assert "stopped" in result.stderr and "before reading them, so none is sent twice" in (
        result.stderr
    )
    with History(state_dir) as history:
        resolved = next(i for i in history.items() if i.id == intent)
    assert (resolved.status, resolved.message) == ("updated", "confirmed after an interrupted run")


def test_old_intent_not_applied_is_resolved_without_waiting(
    invoke, setup, fake, requests_mock, state_dir, seams
):
    """Checked correct with the wait: an intent older than the settle time is read once, found
    not applied, and the current row is planned and written (once) in the same run."""
    seams["retry"] = lambda: RetryPolicy(base_delay=0.0, max_delay=30.0)
    fake.add_client(101, 10)
    setup({101: 12})
    record_intent(state_dir, 101, before=10, target=12)
    with closing(sqlite3.connect(state_dir / "history.sqlite3")) as conn, conn:
        conn.execute("UPDATE items SET created_at = '2026-01-01T00:00:00+00:00'")  # long ago

    started = time.monotonic()
    result = invoke("sync", "--month", PERIOD)

    assert time.monotonic() - started < 5
    assert result.exit_code == 0, result.output
    assert [w["unitChange"] for w in writes(requests_mock)] == [2]


def test_interrupt_during_the_writes_sends_no_queued_write(
    invoke, setup, fake, requests_mock, monkeypatch
):
    """Defect: Ctrl-C while writes were under way left the pool to send every queued create
    before stopping. Now only creates already in flight finish; the rest are never sent, and
    their clients stay due (no intent was recorded for them)."""
    for cid in range(101, 113):
        fake.add_client(cid, 10)
    setup({cid: 12 for cid in range(101, 113)})

    def progress(stage: str, done: int, total: int) -> None:
        if stage.startswith("Writing"):
            raise KeyboardInterrupt

    monkeypatch.setattr("infima_autotask.cli._common.show_progress", lambda: True)
    monkeypatch.setattr("infima_autotask.cli.cmd_sync._Bar.__call__", lambda self, *a: progress(*a))

    result = invoke("sync", "--month", PERIOD)

    # The real signal, in a real process, is in tests/test_interrupt.py.
    assert result.exit_code == 130
    assert len(writes(requests_mock)) == 1  # the first, sent alone; nothing queued after it
    assert "Interrupted: 1 of 12 changes written; the rest not sent" in result.stderr
    assert result.stdout.count("not sent: the run was interrupted") == 11
