"""``history``: past sync items, or with ``--runs`` the runs themselves (SPEC §7, §11)."""

from __future__ import annotations

from datetime import date
from typing import Any

import click

from infima_autotask.cli._common import (
    ID,
    Command,
    emit_rows,
    get_runtime,
    json_option,
    month_callback,
    signed,
)
from infima_autotask.config import load_config_or_default
from infima_autotask.history import HistoryItem, RunRecord, display_time, read_items, read_runs
from infima_autotask.statuses import WRITING
from infima_autotask.sync import period_label, summary_text
from infima_autotask.writer import join

ITEM_COLUMNS = (
    "Time",
    "Period",
    "Effective",
    "Client ID",
    "Client",
    "PSA",
    "Before",
    "After",
    "Change",
    "Status",
    "Detail",
)
RUN_COLUMNS = (
    "Run ID",
    "Time",
    "Period",
    "Dry run",
    "Kind",
    "Reverts",
    "Outcome",
    "Summary",
    "Warnings",
)


@click.command(cls=Command)
@click.option("--month", metavar="YYYY-MM", callback=month_callback, help="Only this period.")
@click.option("--client", "client_id", type=ID, metavar="ID", help="Only this INFIMA client.")
@click.option("--limit", type=ID, metavar="N", help="At most N rows.")
@click.option("--runs", is_flag=True, help="List the runs (their ids, for `revert`) instead.")
@json_option
def history(
    month: date | None, client_id: int | None, limit: int | None, runs: bool, as_json: bool
) -> None:
    """Show past sync results, newest first: one row per client per run.

    \b
    Example:
      infima-autotask history --month 2026-12
      infima-autotask history --client 101 --limit 12 --json
      infima-autotask history --runs --limit 5
    """
    runtime = get_runtime()
    state_dir = runtime.state_dir(load_config_or_default(runtime.config_path))
    period = period_label(month) if month else None
    if runs:
        if client_id is not None:
            raise click.UsageError("--client does not apply to --runs.")
        found = read_runs(state_dir, month=period, limit=limit)
        emit_rows([_run_row(run, as_json=as_json) for run in found], RUN_COLUMNS, as_json=as_json)
        return
    items = read_items(state_dir, month=period, client_id=client_id, limit=limit)
    rows = [_item_row(item) for item in items]
    if not as_json:
        rows = [{**row, "Change": signed(row["Change"])} for row in rows]
    emit_rows(rows, ITEM_COLUMNS, as_json=as_json)


def _item_row(item: HistoryItem) -> dict[str, Any]:
    detail = item.message
    if item.status == WRITING:
        detail = join(detail, "write outcome not yet known: the next sync re-reads Autotask")
    if item.dry_run:
        detail = join("dry run", detail)
    return {
        "Time": display_time(item.created_at),
        "Period": item.period,
        "Effective": item.effective_date,
        "Client ID": item.client_id,
        "Client": item.client_name,
        "PSA": item.psa,
        "Before": item.before,
        "After": item.after,
        "Change": item.change,
        "Status": item.status,
        "Detail": detail,
    }


def _run_row(run: RunRecord, *, as_json: bool) -> dict[str, Any]:
    """Raw values for --json; words for the table."""
    if as_json:
        return {
            "Run ID": run.id,
            "Time": display_time(run.started_at),
            "Period": run.period,
            "Dry run": run.dry_run,
            "Kind": run.kind,
            "Reverts": run.reverts,
            "Outcome": run.outcome,
            "Summary": run.summary,
            "Warnings": list(run.warnings),
        }
    return {
        "Run ID": run.id,
        "Time": display_time(run.started_at),
        "Period": run.period,
        "Dry run": "yes" if run.dry_run else "no",
        "Kind": run.kind,
        "Reverts": run.reverts,
        "Outcome": run.outcome or "unfinished (running, or stopped)",
        "Summary": summary_text(run.summary, dry_run=run.dry_run) if run.summary else None,
        "Warnings": "; ".join(run.warnings) or None,
    }


COMMANDS = [history]
