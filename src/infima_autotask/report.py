"""The monthly report for finance (SPEC §11), from the run history alone: no API call.

Per client, the month's row says where the month's real runs left the line: ``before`` is
the units the first run found, ``after`` what the latest run left (a revert run's item
included: it is a real change), so a repeated run that found nothing left to do does not
hide the month's change. The rows are data here; CSV and the JSON document are built here,
the HTML page in ``report_html.py`` and the table in ``cli/``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from infima_autotask.billing import add_months, money_change
from infima_autotask.errors import UsageError
from infima_autotask.fsutil import write_atomically
from infima_autotask.history import (
    REVERT_RUN,
    SYNC_RUN,
    HistoryItem,
    RunRecord,
    display_time,
    read_span,
)
from infima_autotask.statuses import UNCHANGED, UPDATED, WRITING
from infima_autotask.sync import STATUSES, parse_month, period_label, summary_text
from infima_autotask.writer import join

CHART_MONTHS = 12
CENT = Decimal("0.01")
ZERO = Decimal("0.00")

COLUMNS = (
    "Client ID",
    "Client",
    "Users",
    "Before",
    "After",
    "Change",
    "Unit price",
    "Money change",
    "Status",
    "Effective",
    "Detail",
)
TOTAL = "Total"  # the first cell of the totals row (table, CSV, HTML)
# Every status a row can show, in the order the totals count them.
REPORT_STATUSES = (*STATUSES, WRITING)
DRY_RUN_MARK = "dry run: not written"


@dataclass(frozen=True, kw_only=True)
class ReportRow:
    """One client's line for the month.

    ``after`` is None when the latest run's write has an unknown outcome (``writing``);
    ``change`` is ``after - before``; ``money_change`` is that change at ``unit_price``.
    ``run_kind`` is the kind of the run whose item stands (``revert`` for an undone run).
    """

    client_id: int
    client_name: str | None
    contract_service_id: int | None
    users: int | None
    before: int | None
    after: int | None
    change: int | None
    unit_price: Decimal | None
    money_change: Decimal | None
    status: str
    effective_date: str | None
    detail: str
    run_id: int
    run_kind: str


@dataclass(frozen=True, kw_only=True)
class Totals:
    """Column sums over the rows' known values (an unknown cell counts as nothing)."""

    clients: int
    users: int
    before: int
    after: int
    change: int
    money_change: Decimal
    statuses: dict[str, int]
    unpriced: int = 0  # rows that changed without a unit price (a Halo subscription has none)


@dataclass(frozen=True)
class Series:
    """A client's seats (``after`` of each month's row) over the chart's months; None: no run."""

    client_id: int
    client_name: str | None
    seats: tuple[int | None, ...]


@dataclass(frozen=True, kw_only=True)
class Report:
    """The month's rows and totals, and the twelve months of seats ending with it."""

    period: str
    generated_at: datetime
    dry_run: bool  # the month has only dry runs: the rows are a plan, nothing was written
    rows: tuple[ReportRow, ...]
    totals: Totals
    months: tuple[str, ...]
    series: tuple[Series, ...]

    @property
    def notes(self) -> list[str]:
        """What a reader must know before trusting the figures (stderr, the HTML page)."""
        notes = []
        if self.dry_run:
            notes.append(
                f"{self.period} has only dry runs: nothing was written to Autotask. The rows "
                f"show their plan, each marked '{DRY_RUN_MARK}'."
            )
        unknown = self.totals.statuses.get(WRITING, 0)
        if unknown:
            notes.append(
                f"{unknown} client{'s' if unknown != 1 else ''} with a write whose outcome is "
                "unknown (a run stopped mid-write): After, Change and Money change are left "
                "blank and out of the totals. The next `infima-autotask sync` re-reads Autotask."
            )
        return notes


def chart_months(period: str) -> tuple[str, ...]:
    """The twelve periods ending with ``period``, oldest first."""
    last = parse_month(period)
    return tuple(period_label(add_months(last, k - CHART_MONTHS + 1)) for k in range(CHART_MONTHS))


def build_report(state_dir: Path, period: str, *, now: datetime) -> Report:
    """The report of ``period`` (``YYYY-MM``) from the history in ``state_dir``.

    Raises:
        UsageError: there is no history file yet, or nothing recorded for the month.
    """
    months = chart_months(period)
    span = read_span(state_dir, months[0], months[-1])
    if span is None:
        raise UsageError(
            f"No run history in {state_dir} yet: run `infima-autotask sync` first. (Under cron, "
            "check that INFIMA_AUTOTASK_STATE_DIR or state_dir names the folder sync uses.)"
        )
    runs = {run.id: run for run in span.runs}
    written = {month: _rows(span.items, runs, month, dry_run=False) for month in months}
    rows = written[period] or _rows(span.items, runs, period, dry_run=True)
    if not rows:
        raise UsageError(_nothing_for(period, [run for run in span.runs if run.period == period]))
    ordered = tuple(sorted(rows.values(), key=_order))
    return Report(
        period=period,
        generated_at=now,
        dry_run=not written[period],
        rows=ordered,
        totals=_totals(ordered),
        months=months,
        series=_series(written, months, ordered),
    )


def _nothing_for(period: str, runs: Sequence[RunRecord]) -> str:
    if not runs:
        return (
            f"No run is recorded for {period}. Pick a month that has one "
            f"(`infima-autotask history --runs` lists them), or run "
            f"`infima-autotask sync --month {period}`."
        )
    count = f"{len(runs)} run{'s' if len(runs) != 1 else ''}"
    return (
        f"The {count} recorded for {period} stopped before any client's result "
        f"(`infima-autotask history --runs --month {period}` shows their outcome). Run "
        f"`infima-autotask sync --month {period}`, then the report again."
    )


def _rows(
    items: Iterable[HistoryItem], runs: Mapping[int, RunRecord], period: str, *, dry_run: bool
) -> dict[int, ReportRow]:
    """Per client, the row of ``period`` from its real (or only its dry-run) items."""
    by_client: dict[int, list[HistoryItem]] = {}
    for item in items:  # oldest first
        if item.period == period and item.dry_run == dry_run:
            by_client.setdefault(item.client_id, []).append(item)
    return {client: _row(found, runs, dry_run=dry_run) for client, found in by_client.items()}


def _row(
    items: Sequence[HistoryItem], runs: Mapping[int, RunRecord], *, dry_run: bool
) -> ReportRow:
    """One client's row from its items of the month, oldest first; the latest that speaks
    for the line stands: a sync's, or a revert's that wrote (a revert that left the line as
    it was, held or refused, changed nothing, and is only named).

    Only the items of the latest one's contract service count: a client re-mapped during the
    month starts afresh on its new line.
    """
    line = [item for item in items if item.contract_service_id == items[-1].contract_service_id]
    speaking = [item for item in line if _speaks_for_line(item, runs)]
    latest = speaking[-1] if speaking else line[-1]
    before = next((item.before for item in line if item.before is not None), None)
    unknown = latest.status == WRITING
    after = None if unknown else latest.after
    change = after - before if after is not None and before is not None else None
    price = None if latest.price is None else Decimal(repr(latest.price))
    status = latest.status
    notes = [DRY_RUN_MARK] if dry_run else []
    writes = [item for item in line if item.status == UPDATED]
    if status in (UNCHANGED, UPDATED) and writes:
        # The month's change is what the writes left: a later run that found the line already
        # right does not hide an earlier write, and a revert back to before is no change.
        status = UPDATED if change else UNCHANGED
        if latest.status == UNCHANGED and change:
            notes.append(f"written by run {writes[-1].run_id}")
    notes += _revert_notes(line, runs)
    # A revert run counts no users: the month's count is the latest sync's.
    users = next((item.users for item in reversed(line) if item.users is not None), None)
    if unknown:
        notes.append(
            f"outcome unknown: run {latest.run_id} stopped while writing a change of "
            f"{_signed(latest.change)} unit{'' if latest.change in (1, -1) else 's'}; the next "
            "sync re-reads Autotask"
        )
    standing = runs.get(latest.run_id)
    return ReportRow(
        client_id=latest.client_id,
        client_name=latest.client_name,
        contract_service_id=latest.contract_service_id,
        users=users,
        before=before,
        after=after,
        change=change,
        unit_price=price,
        money_change=money_change(change, price),
        status=status,
        effective_date=latest.effective_date,
        detail=join(*notes, latest.message),
        run_id=latest.run_id,
        run_kind=standing.kind if standing is not None else SYNC_RUN,
    )


def _speaks_for_line(item: HistoryItem, runs: Mapping[int, RunRecord]) -> bool:
    run = runs.get(item.run_id)
    return run is None or run.kind != REVERT_RUN or item.status in (UPDATED, WRITING)


def _revert_notes(line: Sequence[HistoryItem], runs: Mapping[int, RunRecord]) -> list[str]:
    """``run 9 reverted run 7`` for each revert that wrote on the line, and ``then run 12
    wrote it again`` when a sync wrote it after; the latest item's revert run is named even
    when it wrote nothing there (its message says why)."""
    notes: list[str] = []
    again: int | None = None  # a sync that wrote the line after the last revert that did
    for item in line:
        run = runs.get(item.run_id)
        if run is None or run.kind != REVERT_RUN:
            if notes and item.status == UPDATED:
                again = item.run_id
            continue
        undone = f"run {run.reverts}" if run.reverts is not None else "an earlier run"
        if item.status == UPDATED:
            note = f"run {run.id} reverted {undone}"
            again = None
        elif item is line[-1]:
            note = f"run {run.id}, a revert of {undone}, left it as it was ({item.message})"
        else:
            continue
        if note not in notes:
            notes.append(note)
    if again is not None:  # the revert no longer stands: say which run wrote the line since
        notes.append(f"then run {again} wrote it again")
    return notes


def _order(row: ReportRow) -> tuple[str, int]:
    return ((row.client_name or "").casefold(), row.client_id)


def _totals(rows: Sequence[ReportRow]) -> Totals:
    statuses = dict.fromkeys(REPORT_STATUSES, 0)
    for row in rows:
        statuses[row.status] = statuses.get(row.status, 0) + 1
    return Totals(
        clients=len(rows),
        users=sum(row.users for row in rows if row.users is not None),
        before=sum(row.before for row in rows if row.before is not None),
        after=sum(row.after for row in rows if row.after is not None),
        change=sum(row.change for row in rows if row.change is not None),
        money_change=sum(
            (row.money_change for row in rows if row.money_change is not None), start=ZERO
        ),
        statuses=statuses,
        unpriced=sum(1 for row in rows if row.change and row.money_change is None),
    )


def _series(
    written: Mapping[str, Mapping[int, ReportRow]],
    months: Sequence[str],
    rows: Sequence[ReportRow],
) -> tuple[Series, ...]:
    """Seats per client per month: the report's clients in its order, then any client seen
    only in earlier months."""
    names: dict[int, str | None] = {}
    for month in months:  # oldest first: the latest name wins
        for client, row in written[month].items():
            names[client] = row.client_name
    ordered = [row.client_id for row in rows if row.client_id in names]
    shown = set(ordered)
    ordered += sorted(
        (client for client in names if client not in shown),
        key=lambda client: ((names[client] or "").casefold(), client),
    )
    return tuple(
        Series(client, names[client], tuple(_seats(written[month], client) for month in months))
        for client in ordered
    )


def _seats(rows: Mapping[int, ReportRow], client: int) -> int | None:
    row = rows.get(client)
    return row.after if row is not None else None


# -- text of cells, shared by the table, CSV and HTML ------------------------------------------


def _signed(value: int | None) -> str:
    return "?" if value is None else f"{value:+d}" if value else "0"


def price_text(value: Decimal | None) -> str:
    """A unit price with at least two decimals (``4.50``, ``0.9933``); empty when unknown."""
    if value is None:
        return ""
    return f"{value:.2f}" if value == value.quantize(CENT) else str(value.normalize())


def money_text(value: Decimal | None, *, signed: bool = False) -> str:
    """``+9.00``/``-13.50``/``0.00`` (or unsigned, for CSV); empty when unknown."""
    if value is None:
        return ""
    return f"{value:+.2f}" if signed and value else f"{value:.2f}"


def cell_text(header: str, value: Any) -> str:
    """A cell as the table and the HTML page show it: signed changes, ``-`` when unknown."""
    if value is None:
        return "" if header == "Detail" else "-"
    if header == "Unit price":
        return price_text(value)
    if header == "Money change":
        return money_text(value, signed=True)
    if header == "Change" and isinstance(value, int):
        return _signed(value)
    return str(value)


def summary(report: Report) -> str:
    """``Report for 2026-12: 3 clients, change +2 units, money change +9.00``."""
    totals = report.totals
    plan = " (dry run: nothing written)" if report.dry_run else ""
    return (
        f"Report for {report.period}{plan}: {totals.clients} client"
        f"{'s' if totals.clients != 1 else ''}, change {_signed(totals.change)} units, "
        f"money change {money_text(totals.money_change, signed=True)}"
        + (
            f" (not counting {totals.unpriced} changed line{'s' if totals.unpriced != 1 else ''}"
            " without a unit price)"
            if totals.unpriced
            else ""
        )
    )


def status_text(statuses: Mapping[str, int], *, dry_run: bool) -> str:
    """``2 updated, 1 unchanged, 0 skipped, 1 held, 0 failed`` (plus unknown outcomes)."""
    text = summary_text(statuses, dry_run=dry_run)
    unknown = statuses.get(WRITING, 0)
    return text + (f", {unknown} outcome unknown" if unknown else "")


def totals_cells(report: Report) -> dict[str, Any]:
    """The totals row by column header (``Total`` first; status counts in Detail)."""
    totals = report.totals
    return {
        "Client ID": TOTAL,
        "Client": f"{totals.clients} client{'s' if totals.clients != 1 else ''}",
        "Users": totals.users,
        "Before": totals.before,
        "After": totals.after,
        "Change": totals.change,
        "Unit price": None,
        "Money change": totals.money_change,
        "Status": None,
        "Effective": None,
        "Detail": status_text(totals.statuses, dry_run=report.dry_run),
    }


def row_cells(row: ReportRow) -> dict[str, Any]:
    """A row's values by column header (raw: numbers, Decimal, None when unknown)."""
    return {
        "Client ID": row.client_id,
        "Client": row.client_name,
        "Users": row.users,
        "Before": row.before,
        "After": row.after,
        "Change": row.change,
        "Unit price": row.unit_price,
        "Money change": row.money_change,
        "Status": row.status,
        "Effective": row.effective_date,
        "Detail": row.detail,
    }


# -- CSV and JSON ------------------------------------------------------------------------------

# A spreadsheet runs a cell starting with one of these as a formula; client names come from
# INFIMA, so a text cell that starts with one is prefixed with an apostrophe (OWASP's advice).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_text(value: str | None) -> str:
    text = value or ""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_cells(cells: Mapping[str, Any]) -> list[str]:
    out = []
    for header in COLUMNS:
        value = cells[header]
        if header == "Unit price":
            out.append(price_text(value))
        elif header == "Money change":
            out.append(money_text(value))
        elif isinstance(value, int) or value is None:
            out.append("" if value is None else str(value))
        else:
            out.append(_csv_text(str(value)))
    return out


def to_csv(report: Report) -> str:
    """A header line, one line per client, then the totals line (first cell ``Total``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for row in report.rows:
        writer.writerow(_csv_cells(row_cells(row)))
    writer.writerow(_csv_cells(totals_cells(report)))
    return buffer.getvalue()


def _number(value: Decimal | None) -> float | None:
    # float(Decimal) keeps the digits: JSON shows 9.0 for 9.00 and 0.9933 as such.
    return None if value is None else float(value)


def to_json(report: Report) -> dict[str, Any]:
    """``{"period", "generated_at", "dry_run", "rows", "totals"}`` with raw values."""
    totals = report.totals
    return {
        "period": report.period,
        "generated_at": display_time(report.generated_at.isoformat()),
        "dry_run": report.dry_run,
        "rows": [
            {
                "client_id": row.client_id,
                "client": row.client_name,
                "contract_service_id": row.contract_service_id,
                "users": row.users,
                "before": row.before,
                "after": row.after,
                "change": row.change,
                "unit_price": _number(row.unit_price),
                "money_change": _number(row.money_change),
                "status": row.status,
                "effective": row.effective_date,
                "detail": row.detail,
                "run_id": row.run_id,
                "run_kind": row.run_kind,
            }
            for row in report.rows
        ],
        "totals": {
            "clients": totals.clients,
            "users": totals.users,
            "before": totals.before,
            "after": totals.after,
            "change": totals.change,
            "money_change": _number(totals.money_change),
            "statuses": totals.statuses,
        },
    }


def save_report(path: Path, text: str) -> None:
    """Write the report to ``path`` atomically (mode 0600: it names clients and money).

    Raises:
        UsageError: the folder does not exist, or the file cannot be written.
    """
    folder = path.expanduser().parent
    if not folder.is_dir():
        # A mistyped path must not quietly become a new folder nobody looks in.
        raise UsageError(
            f"Cannot write the report to {path}: the folder {folder} does not exist. "
            "Create it first, or choose another --output."
        )
    try:
        write_atomically(path, text.encode("utf-8"))
    except OSError as exc:
        raise UsageError(
            f"Cannot write the report to {path}: {exc.strerror or exc}. Choose a writable path."
        ) from None
