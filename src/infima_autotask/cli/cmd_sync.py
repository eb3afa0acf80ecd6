"""``sync`` and ``history``: thin commands over ``runner.py``."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import click
from tabulate import tabulate

from infima_autotask.cli import _common
from infima_autotask.cli._common import (
    ID,
    Command,
    emit_json,
    emit_rows,
    get_runtime,
    json_option,
    warn,
)
from infima_autotask.config import load_config_or_default
from infima_autotask.errors import UsageError
from infima_autotask.runner import (
    HISTORY_COLUMNS,
    SyncInterrupted,
    SyncOptions,
    SyncReport,
    history_rows,
    run_sync,
)
from infima_autotask.sync import UPDATED, parse_month, period_label, summary_line

SYNC_COLUMNS = (
    "Client",
    "Contract Service",
    "Effective",
    "Users",
    "Before",
    "After",
    "Change",
    "Status",
    "Detail",
)


def _month(ctx: click.Context, param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return parse_month(value)
    except UsageError as exc:
        raise click.BadParameter(exc.message) from None


def signed(value: int | None) -> str:
    """``+2``, ``-3``, ``0``; ``-`` when unknown."""
    return "-" if value is None else f"{value:+d}" if value else "0"


class _Bar:
    """A click progress bar on stderr per stage of the run."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._stage = ""
        self._done = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self.close()
            self._bar = click.progressbar(length=total, label=stage, file=sys.stderr)
            self._bar.__enter__()
            self._stage, self._done = stage, 0
        self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


@click.command(cls=Command)
@click.option("--dry-run", is_flag=True, help="Show the plan; write nothing to Autotask.")
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="With --dry-run: exit 4 when changes are pending (and nothing failed).",
)
@click.option(
    "--month",
    metavar="YYYY-MM",
    callback=_month,
    help="Period to sync. Default: this month in sync.timezone.",
)
@click.option(
    "--client",
    "clients",
    type=ID,
    multiple=True,
    metavar="ID",
    help="Only this INFIMA client (repeatable).",
)
@click.option(
    "--if-due",
    is_flag=True,
    help="Only clients without an updated/unchanged result for the period (catch-up runs).",
)
@click.option("--yes", is_flag=True, help="Apply drops to 0, big drops and big rises.")
@click.option(
    "--counts-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV client_id,active_users[,client_name] instead of the INFIMA API.",
)
@json_option
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="Print nothing when every client is updated, unchanged or skipped.",
)
def sync(
    dry_run: bool,
    detailed_exitcode: bool,
    month: date | None,
    clients: tuple[int, ...],
    if_due: bool,
    yes: bool,
    counts_file: Path | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Set each mapped Contract Service's units for the month to the client's active users.

    \b
    Example:
      infima-autotask sync --dry-run               # the plan; nothing written
      infima-autotask sync                         # write, then print the result
      infima-autotask sync --if-due --quiet        # daily catch-up line for cron
    """
    if detailed_exitcode and not dry_run:
        raise click.UsageError("--detailed-exitcode works only with --dry-run.")
    options = SyncOptions(month, clients, if_due, dry_run, yes, counts_file)
    try:
        with _Bar() as bar, _sigterm_as_interrupt():
            report = run_sync(
                get_runtime(),
                options,
                progress=bar if _common.show_progress() else None,
                notice=None if quiet else warn,
            )
    except SyncInterrupted as stop:
        if stop.writing:
            warn(
                "Interrupted: nothing more was sent; a write in flight may have landed. Run "
                "`infima-autotask sync` again: it reads Autotask before writing anything."
            )
        else:
            warn("Interrupted before any write: nothing was sent to Autotask.")
        raise click.exceptions.Exit(INTERRUPTED) from None
    except KeyboardInterrupt:
        warn("Interrupted before any write: nothing was sent to Autotask.")
        raise click.exceptions.Exit(INTERRUPTED) from None
    if report.interrupted:
        _render(report, as_json=as_json)
        written = report.summary[UPDATED]
        changes = sum(1 for item in report.items if item.change or item.cost_changes)
        warn(
            f"Interrupted: {written} of {changes} changes written; the rest not sent; run "
            "`infima-autotask sync` again to finish."
        )
        raise click.exceptions.Exit(INTERRUPTED)
    if not (quiet and not report.needs_attention):
        _render(report, as_json=as_json)
    code = report.exit_code(detailed=detailed_exitcode)
    if code:
        raise click.exceptions.Exit(code)


INTERRUPTED = 130  # SPEC §3: writes in flight finished and were recorded, nothing queued sent


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (systemd stopping the job, ``kill``) stops the writes as Ctrl-C does."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave the default
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _render(report: SyncReport, *, as_json: bool) -> None:
    for text in report.warnings:
        warn(f"Warning: {text}")
    if report.unmapped:
        warn(f"Warning: {report.unmapped_warning}")
    if as_json:
        emit_json(report.as_json())
    elif report.items:
        table = [
            [
                item.client_name or item.client_id,
                item.contract_service_id,
                item.effective.isoformat() if item.effective else "-",
                _cell(item.users),
                _cell(item.before),
                _cell(item.after),
                signed(item.change),
                item.status,
                item.message,
            ]
            for item in report.items
        ]
        click.echo(tabulate(table, headers=SYNC_COLUMNS, disable_numparse=True))
    if report.nothing_due:
        warn(f"Period {report.period}: nothing due.")
    else:
        warn(
            summary_line(
                report.period, report.summary, dry_run=report.dry_run, relation=report.relation
            )
        )


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


@click.command(cls=Command)
@click.option("--month", metavar="YYYY-MM", callback=_month, help="Only this period.")
@click.option("--client", "client_id", type=ID, metavar="ID", help="Only this INFIMA client.")
@click.option("--limit", type=ID, metavar="N", help="At most N rows.")
@json_option
def history(month: date | None, client_id: int | None, limit: int | None, as_json: bool) -> None:
    """Show past sync results, newest first: one row per client per run.

    \b
    Example:
      infima-autotask history --month 2026-12
      infima-autotask history --client 101 --limit 12 --json
    """
    runtime = get_runtime()
    state_dir = runtime.state_dir(load_config_or_default(runtime.config_path))
    rows = history_rows(
        state_dir,
        month=period_label(month) if month else None,
        client_id=client_id,
        limit=limit,
    )
    if not as_json:
        rows = [{**row, "Change": signed(row["Change"])} for row in rows]
    emit_rows(rows, HISTORY_COLUMNS, as_json=as_json)


COMMANDS = [sync, history]
