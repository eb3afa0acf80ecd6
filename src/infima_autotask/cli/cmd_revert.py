"""``revert RUN_ID``: a thin command over ``revert.py``."""

from __future__ import annotations

import click

from infima_autotask import notify
from infima_autotask.cli import _common
from infima_autotask.cli._common import ID, Command, get_runtime, json_option, warn
from infima_autotask.cli.cmd_sync import (
    INTERRUPTED,
    Notifications,
    interruptible,
    render_report,
    write_question,
)
from infima_autotask.revert import RevertOptions, run_revert
from infima_autotask.runner import SyncReport
from infima_autotask.runtime import Runtime
from infima_autotask.statuses import PLANNED, UPDATED


@click.command(cls=Command)
@click.argument("run_id", type=ID)
@click.option("--dry-run", is_flag=True, help="Show what the revert would write; write nothing.")
@click.option("--yes", is_flag=True, help="Write without asking (needed without a terminal).")
@json_option
def revert(run_id: int, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Undo what one sync run wrote: each line it updated goes back to its value before.

    Only lines that still show what that run wrote are changed; the others are listed with
    what they show now. In Autotask a revert is a second, compensating adjustment, dated like
    the first: both stay in Autotask's records. `history --runs` lists the runs and their ids.

    \b
    Example:
      infima-autotask history --runs --limit 5
      infima-autotask revert 42 --dry-run
      infima-autotask revert 42
    """
    runtime = get_runtime()
    if not (dry_run or yes):
        if not _common.can_prompt():
            raise click.UsageError(
                "revert asks before writing, and there is no terminal to ask on: pass --yes "
                "(or --dry-run to see the plan)."
            )
        preview = _run(runtime, run_id, dry_run=True)
        planned = preview.summary[PLANNED]
        render_report(preview, as_json=False, to_stderr=as_json)
        if not planned:
            _exit(preview)
            return
        question = write_question(preview, revert=True)
        try:
            agreed = click.confirm(question, default=False, err=True)
        except click.Abort:
            warn("Nothing was written.")
            raise click.exceptions.Exit(INTERRUPTED) from None
        if not agreed:
            warn("Nothing was written.")
            return
    # A revert writes to Autotask like a sync: the same notifications tell the same people.
    notifications = Notifications.of(runtime, dry_run=dry_run)
    report = notifications.run(
        lambda: _run(runtime, run_id, dry_run=dry_run),
        period=lambda: f"revert of run {run_id}",
        dry_run=dry_run,
    )
    render_report(report, as_json=as_json)
    if report.interrupted:
        warn(
            f"Interrupted: {report.summary[UPDATED]} of {report.writes_planned} changes "
            f"written; the rest not sent; run `infima-autotask revert {run_id}` again to finish."
        )
        notifications.finish(notify.report_message(report, INTERRUPTED))
        raise click.exceptions.Exit(INTERRUPTED)
    code = report.exit_code()
    notifications.finish(notify.report_message(report, code))
    if code:
        raise click.exceptions.Exit(code)


def _run(runtime: Runtime, run_id: int, *, dry_run: bool) -> SyncReport:
    options = RevertOptions(run_id=run_id, dry_run=dry_run)
    return interruptible(
        lambda progress, notice: run_revert(runtime, options, progress=progress, notice=notice),
        quiet=False,
    )


def _exit(report: SyncReport) -> None:
    code = report.exit_code()
    if code:
        raise click.exceptions.Exit(code)


COMMANDS = [revert]
