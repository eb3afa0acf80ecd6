"""``history``: past sync items, newest first, from the history database."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from conftest import make_config, write_config

from infima_autotask.history import History, ItemRecord


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 6, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def configured(config_path):
    write_config(config_path, make_config())


def record(client_id, status, *, before=10, after=10, change=0, message="", day="2026-12-01"):
    return ItemRecord(
        client_id=client_id,
        client_name=f"Client {client_id}",
        contract_id=29684001,
        contract_service_id=29685000 + client_id,
        users=before + change,
        target=before + change,
        before=before,
        after=after,
        change=change,
        price=4.5,
        cost=2.25,
        status=status,
        message=message,
        effective_date=day,
    )


@pytest.fixture
def filled(state_dir, configured):
    with History(state_dir, clock=Clock()) as history:
        dry = history.start_run(period="2026-11", dry_run=True, version="0.1.0")
        history.record_items(
            dry,
            [
                record(101, "planned", after=12, change=2, day="2026-11-01"),
                record(102, "held", change=-10, day="2026-11-17"),
            ],
        )
        real = history.start_run(period="2026-12", dry_run=False, version="0.1.0")
        history.record_items(real, [record(102, "unchanged")])
        intent = history.record_intent(real, record(101, "planned", after=12, change=2))
        history.complete_item(intent, status="updated", after=12, message="", adjustment_id=7)
        history.record_intent(real, record(103, "planned", before=5, after=2, change=-3))
    return state_dir


def test_history_table_newest_first(invoke, filled):
    result = invoke("history")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "Time",
        "Period",
        "Effective",
        "Client",
        "ID",
        "Client",
        "PSA",
        "Before",
        "After",
        "Change",
        "Status",
        "Detail",
    ]
    rows = [line.split() for line in lines[2:]]
    assert {row[6] for row in rows} == {"autotask"}
    rows = [row[:6] + row[7:] for row in rows]  # as before the PSA column
    day = "2026-12-01"
    assert [row[:5] + row[6:10] for row in rows] == [
        ["2026-12-01T06:00:08Z", "2026-12", day, "103", "Client", "5", "2", "-3", "writing"],
        ["2026-12-01T06:00:06Z", "2026-12", day, "101", "Client", "10", "12", "+2", "updated"],
        ["2026-12-01T06:00:05Z", "2026-12", day, "102", "Client", "10", "10", "0", "unchanged"],
        [
            "2026-12-01T06:00:03Z",
            "2026-11",
            "2026-11-17",
            "102",
            "Client",
            "10",
            "10",
            "-10",
            "held",
        ],
        [
            "2026-12-01T06:00:02Z",
            "2026-11",
            "2026-11-01",
            "101",
            "Client",
            "10",
            "12",
            "+2",
            "planned",
        ],
    ]
    assert "write outcome not yet known: the next sync re-reads Autotask" in lines[2]
    assert lines[5].split()[-3:] == ["held", "dry", "run"]  # a dry run's held item is marked
    assert lines[6].endswith("planned    dry run")  # every dry-run row is marked alike


def test_history_filters_and_json(invoke, filled):
    result = invoke("history", "--month", "2026-12", "--client", "101", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == [
        {
            "time": "2026-12-01T06:00:06Z",
            "period": "2026-12",
            "effective": "2026-12-01",
            "client_id": 101,
            "client": "Client 101",
            "psa": "autotask",
            "before": 10,
            "after": 12,
            "change": 2,
            "status": "updated",
            "detail": "",
        }
    ]
    limited = invoke("history", "--limit", "2", "--json")
    assert [row["client_id"] for row in json.loads(limited.stdout)] == [103, 101]


def test_history_without_a_database_is_empty_and_creates_nothing(invoke, configured, state_dir):
    result = invoke("history")
    assert (result.exit_code, result.output) == (0, "")
    as_json = invoke("history", "--json")
    assert (as_json.exit_code, json.loads(as_json.stdout)) == (0, [])
    assert not state_dir.exists()


def test_history_works_without_a_config_file(invoke, tmp_path, monkeypatch):
    state = tmp_path / "elsewhere"
    monkeypatch.setenv("INFIMA_AUTOTASK_STATE_DIR", str(state))
    with History(state) as history:
        run = history.start_run(period="2026-12", dry_run=False, version="0.1.0")
        history.record_items(run, [record(101, "unchanged")])
    result = invoke("history", "--json")
    assert result.exit_code == 0
    assert [row["status"] for row in json.loads(result.stdout)] == ["unchanged"]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--month", "12-2026"], "expected a month like"), (["--limit", "0"], "--limit")],
)
def test_history_bad_options(invoke, configured, args, message):
    result = invoke("history", *args)
    assert result.exit_code == 2 and message in result.stderr


def test_history_runs_lists_each_run_with_its_id_newest_first(invoke, filled, state_dir):
    with History(state_dir, clock=Clock()) as history:
        real = next(run for run in history.runs() if not run.dry_run)
        history.finish_run(real.id, outcome="ok", summary={"updated": 1, "unchanged": 1})
        history.add_run_warning(real.id, "webhook: not delivered (timed out)")
    result = invoke("history", "--runs")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["Run", "ID", "Time"]
    assert lines[2].split()[:5] == [str(real.id), "2026-12-01T06:00:04Z", "2026-12", "no", "sync"]
    assert "1 updated, 1 unchanged, 0 skipped, 0 held, 0 failed" in lines[2]
    assert "webhook: not delivered (timed out)" in lines[2]
    assert "unfinished" in lines[3]  # the dry run never finished

    document = json.loads(invoke("history", "--runs", "--json").stdout)
    assert [run["run_id"] for run in document] == [real.id, real.id - 1]
    assert document[0] == {
        "run_id": real.id,
        "time": document[0]["time"],
        "period": "2026-12",
        "dry_run": False,
        "kind": "sync",
        "reverts": None,
        "outcome": "ok",
        "summary": {"updated": 1, "unchanged": 1},
        "warnings": ["webhook: not delivered (timed out)"],
    }
    assert document[1]["dry_run"] is True and document[1]["outcome"] is None

    only = json.loads(invoke("history", "--runs", "--month", "2026-11", "--json").stdout)
    assert [run["period"] for run in only] == ["2026-11"]
    assert len(json.loads(invoke("history", "--runs", "--limit", "1", "--json").stdout)) == 1


def test_history_runs_refuses_client_filter(invoke, filled):
    result = invoke("history", "--runs", "--client", "101")
    assert result.exit_code == 2
    assert "--client does not apply to --runs" in result.output


def test_history_runs_without_a_history_file_is_empty(invoke, configured):
    result = invoke("history", "--runs", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []
