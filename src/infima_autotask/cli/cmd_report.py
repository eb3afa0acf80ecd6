"""``report``: the month for finance, from the history alone (SPEC §11)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import click
from tabulate import SEPARATING_LINE, tabulate

from infima_autotask.cli._common import Command, get_runtime, month_callback, warn
from infima_autotask.config import load_config_or_default
from infima_autotask.report import (
    COLUMNS,
    Report,
    build_report,
    cell_text,
    row_cells,
    save_report,
    summary,
    to_csv,
    to_json,
    totals_cells,
)
from infima_autotask.report_html import to_html
from infima_autotask.sync import current_month, period_label

FORMATS = ("table", "csv", "json", "html")


@click.command(cls=Command)
@click.option(
    "--month",
    metavar="YYYY-MM",
    callback=month_callback,
    help="The month to report.  [default: this month in sync.timezone]",
)
@click.option(
    "--format", "fmt", type=click.Choice(FORMATS), help="Output format.  [default: table]"
)
@click.option("--json", "as_json", is_flag=True, help="The same as --format json.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the report to FILE (atomically, mode 0600) instead of stdout.",
)
def report(month: date | None, fmt: str | None, as_json: bool, output: Path | None) -> None:
    """Report a month for finance: per client what the month's runs left on the line.

    Per client: active users, units before the month's first run and after its last, the
    change and the money it moves at the unit price, the status and the day the change is
    dated, then totals. Reads only the run history: no request to Autotask or INFIMA. The
    HTML page stands alone (no external files; it opens from a mail attachment) and charts
    seats per client over twelve months. A month with only dry runs shows their plan,
    marked as not written.

    \b
    Example:
      infima-autotask report
      infima-autotask report --month 2026-12 --format csv > 2026-12.csv
      infima-autotask report --month 2026-12 --format html --output report-2026-12.html
    """
    if as_json and fmt not in (None, "json"):
        raise click.UsageError("--json is the same as --format json: give only one of them.")
    chosen = "json" if as_json else fmt or "table"
    runtime = get_runtime()
    config = load_config_or_default(runtime.config_path)
    now = runtime.clock()
    day = month or current_month(now, config.sync.timezone)
    found = build_report(runtime.state_dir(config), period_label(day), now=now)
    text = _render(found, chosen)
    for note in found.notes:
        warn(note)
    if output is None:
        click.echo(text, nl=False)
        warn(summary(found))
        return
    save_report(output, text)
    warn(f"Report for {found.period} ({chosen}) written to {output}")


def _render(found: Report, fmt: str) -> str:
    if fmt == "csv":
        return to_csv(found)
    if fmt == "json":
        return json.dumps(to_json(found), indent=2, ensure_ascii=False) + "\n"
    if fmt == "html":
        return to_html(found)
    return _table(found)


def _table(found: Report) -> str:
    rows: list[Any] = [
        [cell_text(header, row_cells(row)[header]) for header in COLUMNS] for row in found.rows
    ]
    totals = totals_cells(found)
    rows += [SEPARATING_LINE, [cell_text(header, totals[header]) for header in COLUMNS]]
    table = tabulate(rows, headers=list(COLUMNS), disable_numparse=True)
    return table + "\n"


COMMANDS: list[Any] = [report]
