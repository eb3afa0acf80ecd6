"""``sync``: a thin command over ``runner.py``."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import click
from tabulate import tabulate

from infima_autotask import notify
from infima_autotask.cli import _common
from infima_autotask.cli._common import (
    ID,
    Command,
    emit_json,
    get_runtime,
    json_option,
    month_callback,
    signed,
    warn,
)
from infima_autotask.config import AUTOTASK, PSA_NAMES, PSAS, Config
from infima_autotask.errors import InfimaAutotaskError, UsageError
from infima_autotask.plan_file import ReviewedPlan, load_plan, save_plan
from infima_autotask.runner import (
    SyncInterrupted,
    SyncOptions,
    SyncReport,
    run_sync,
)
from infima_autotask.runtime import Runtime
from infima_autotask.statuses import PLANNED, SKIPPED, UNCHANGED, UPDATED
from infima_autotask.sync import (
    PlanItem,
    parse_month,
    summary_line,
    summary_text,
)
from infima_autotask.writer import Progress

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


def _clients_on(config: Config, psa: str, given: tuple[int, ...]) -> tuple[int, ...]:
    """``--psa``: the clients mapped on that PSA (of ``given``, when given). When every
    mapping is on that PSA, ``--psa`` selects nothing: the run stays a full one (so INFIMA
    clients without a mapping are still named on a single-PSA shop's nightly line)."""
    if not given and config.mappings and all(m.psa == psa for m in config.mappings):
        return ()
    found = tuple(
        m.client_id
        for m in config.mappings
        if m.psa == psa and m.enabled and (not given or m.client_id in given)
    )
    if not found:
        raise UsageError(
            f"No enabled {PSA_NAMES[psa]} mapping{' among the given clients' if given else ''}. "
            f"Map one with `infima-autotask map CLIENT_ID --psa {psa} --account ID`."
        )
    return found


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
    callback=month_callback,
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
@click.option(
    "--plan-out",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="With --dry-run: save the plan (JSON, with each request) for review.",
)
@click.option(
    "--plan",
    "plan_file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write exactly the reviewed plan FILE; whatever changed since is held, not written.",
)
@click.option(
    "--all", "show_all", is_flag=True, help="Show every row of a long table (unchanged too)."
)
@click.option(
    "--psa",
    type=click.Choice(PSAS),
    default=None,
    help="Only the clients mapped on this PSA (default: every mapping, whatever its PSA).",
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
    plan_out: Path | None,
    plan_file: Path | None,
    show_all: bool,
    as_json: bool,
    quiet: bool,
    psa: str | None = None,
) -> None:
    """Set each mapped Contract Service's units for the month to the client's active users.

    On a terminal, without --plan or --yes, the plan is shown and written only when you
    agree; without a terminal (cron) it is written at once.

    \b
    Example:
      infima-autotask sync --dry-run               # the plan; nothing written
      infima-autotask sync                         # write, then print the result
      infima-autotask sync --dry-run --plan-out plan.json && infima-autotask sync --plan plan.json
      infima-autotask sync --if-due --quiet        # daily catch-up line for cron
      infima-autotask sync --psa connectwise --quiet  # nightly line for ConnectWise
      infima-autotask sync --psa halo --quiet      # nightly line for HaloPSA
    """
    if detailed_exitcode and not dry_run:
        raise click.UsageError("--detailed-exitcode works only with --dry-run.")
    if plan_out is not None and not dry_run:
        raise click.UsageError("--plan-out works only with --dry-run.")
    runtime = get_runtime()
    if psa is not None:
        clients = _clients_on(runtime.config, psa, clients)
    reviewed = load_plan(plan_file) if plan_file is not None else None
    options = SyncOptions(
        month=month,
        clients=clients,
        if_due=if_due,
        dry_run=dry_run,
        yes=yes,
        counts_file=counts_file,
    )
    ask = not (dry_run or reviewed or yes) and _common.can_prompt()
    if ask:
        preview = _run(runtime, replace(options, dry_run=True), quiet)
        planned = preview.summary[PLANNED]
        if planned:
            # With --json, stdout keeps its one document: the plan goes to the terminal.
            render_report(preview, as_json=False, show_all=show_all, to_stderr=as_json)
            question = write_question(preview)
            try:
                agreed = click.confirm(question, default=False, err=True)
            except click.Abort:  # Ctrl-C or end of input at the question
                warn("Nothing was written.")
                raise click.exceptions.Exit(INTERRUPTED) from None
            if not agreed:
                warn("Nothing was written.")
                return
        # Exactly what was shown: with nothing planned, anything found since is held.
        reviewed = ReviewedPlan.of(
            preview.items,
            parse_month(preview.period),
            "the plan shown above",
            runtime.config.autotask.timezone,
        )
    options = replace(options, plan=reviewed)
    notifications = Notifications.of(runtime, dry_run=dry_run)
    report = notifications.run(
        lambda: _run(runtime, options, quiet),
        period=lambda: notify.expected_period(runtime, options),
        dry_run=dry_run,
    )
    if report.interrupted:
        render_report(report, as_json=as_json, show_all=show_all)
        written = report.summary[UPDATED]
        changes = report.writes_planned
        warn(
            f"Interrupted: {written} of {changes} changes written; the rest not sent; run "
            "`infima-autotask sync` again to finish."
        )
        notifications.finish(notify.report_message(report, INTERRUPTED))
        raise click.exceptions.Exit(INTERRUPTED)
    if not (quiet and not report.needs_attention):
        render_report(report, as_json=as_json, show_all=show_all)
    if plan_out is not None:
        count = save_plan(plan_out, report.period, report.items, runtime.config.autotask.timezone)
        warn(
            f"Plan saved to {plan_out}: {count} change{'s' if count != 1 else ''}. Write exactly "
            f"these with `infima-autotask sync --plan {plan_out}`."
        )
    code = report.exit_code(detailed=detailed_exitcode)
    notifications.finish(notify.report_message(report, code))
    if code:
        raise click.exceptions.Exit(code)


class _Interrupted(click.exceptions.Exit):
    """Exit 130 from a run stopped by Ctrl-C or SIGTERM, with what the operator was told."""

    def __init__(self, text: str, run_id: int | None = None) -> None:
        super().__init__(INTERRUPTED)
        self.text = text
        self.run_id = run_id


class Notifications:
    """A sync's or a revert's notifications (``notify.py``) around its real run: a failed
    delivery is a ``Warning:`` line on stderr (even with -q: it needs a person) kept with the
    run in the history, never a changed exit code."""

    def __init__(self, runtime: Runtime, notifier: notify.Notifier | None) -> None:
        self.runtime = runtime
        self.notifier = notifier
        self.started: list[notify.Delivery] = []

    @classmethod
    def of(cls, runtime: Runtime, *, dry_run: bool) -> Notifications:
        return cls(runtime, notify.notifier_for(runtime, dry_run=dry_run))

    def run(
        self, run: Callable[[], SyncReport], *, period: Callable[[], str], dry_run: bool
    ) -> SyncReport:
        """``run()`` between the start and, when it stops with an error, the failure notices
        (naming ``period()``, as the run could not say it)."""
        if self.notifier is None:
            return run()
        self.started = self._send(self.notifier.start, before_run=True)
        try:
            return run()
        except InfimaAutotaskError as exc:
            self._stopped(period(), dry_run, exc.exit_code, exc.message, exc.run_id)
            raise
        except _Interrupted as stop:
            self._stopped(period(), dry_run, INTERRUPTED, stop.text, stop.run_id)
            raise

    def _stopped(
        self, period: str, dry_run: bool, code: int, text: str, run_id: int | None
    ) -> None:
        self.finish(
            notify.error_message(
                period=period, dry_run=dry_run, exit_code=code, error=text, run_id=run_id
            )
        )

    def finish(self, message: notify.RunMessage) -> None:
        if self.notifier is None:
            return
        notifier = self.notifier
        done = self._send(lambda: notifier.finish(message))
        notify.keep_warnings(self.runtime, message.run_id, [*self.started, *done])

    @staticmethod
    def _send(
        send: Callable[[], list[notify.Delivery]], *, before_run: bool = False
    ) -> list[notify.Delivery]:
        try:
            done = send()
        except KeyboardInterrupt:
            if before_run:  # Ctrl-C while the start ping hangs: the run does not start
                text = "Interrupted before any write: nothing was sent to Autotask."
                warn(text)
                raise _Interrupted(text) from None
            warn("Warning: notifications interrupted; the rest were not sent.")
            return []  # the run is over: its exit code stands
        for delivery in done:
            if not delivery.delivered:
                warn(f"Warning: {delivery.warning}")
        return done


def _run(runtime: Runtime, options: SyncOptions, quiet: bool) -> SyncReport:
    """One run of the library's sync, with Ctrl-C and SIGTERM turned into exit 130."""
    return interruptible(
        lambda progress, notice: run_sync(runtime, options, progress=progress, notice=notice),
        quiet=quiet,
    )


def interruptible(
    call: Callable[[Progress | None, Callable[[str], None] | None], SyncReport], *, quiet: bool
) -> SyncReport:
    """Run a sync or a revert with its progress bar, Ctrl-C and SIGTERM turned into exit 130."""
    try:
        with _Bar() as bar, _sigterm_as_interrupt():
            return call(bar if _common.show_progress() else None, None if quiet else warn)
    except SyncInterrupted as stop:
        if stop.writing:
            text = (
                "Interrupted: nothing more was sent; a write in flight may have landed. Run "
                "`infima-autotask sync` again: it reads Autotask before writing anything."
            )
        else:
            text = "Interrupted before any write: nothing was sent to Autotask."
        warn(text)
        raise _Interrupted(text, stop.run_id) from None
    except KeyboardInterrupt:
        text = "Interrupted before any write: nothing was sent to Autotask."
        warn(text)
        raise _Interrupted(text) from None


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


LONG_TABLE = 20  # rows; a longer table shows only what needs reading (--all: every row)


def render_report(
    report: SyncReport, *, as_json: bool, show_all: bool = False, to_stderr: bool = False
) -> None:
    for text in report.warnings:
        warn(f"Warning: {text}")
    if report.unmapped:
        warn(f"Warning: {report.unmapped_warning}")
    quiet_rows = (UNCHANGED, SKIPPED)
    shown = report.items
    if not show_all and len(shown) > LONG_TABLE:
        shown = [item for item in report.items if item.status not in quiet_rows]
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
                _detail(item),
            ]
            for item in shown
        ]
        click.echo(tabulate(table, headers=SYNC_COLUMNS, disable_numparse=True), err=to_stderr)
        hidden = len(report.items) - len(shown)
        if hidden:
            rows = f"{hidden} unchanged or skipped row{'s' if hidden != 1 else ''}"
            warn(f"{rows} not shown; --all shows every row.")
    if report.nothing_due:
        if report.reverts is None:
            warn(f"Period {report.period}: nothing due.")
    else:
        warn(
            summary_line(
                report.period,
                report.summary,
                dry_run=report.dry_run,
                relation=report.relation,
                reverts=report.reverts,
            )
        )
        by_psa = report.by_psa
        if len(by_psa) > 1:  # a mixed run: each PSA's share, under the SPEC'd line
            for psa, counts in by_psa.items():
                warn(f"  {PSA_NAMES[psa]}: {summary_text(counts, dry_run=report.dry_run)}")
        # Only lines with a unit price move money here (a Halo subscription carries none).
        moving = [
            money
            for item in report.items
            if item.writes and item.change and (money := item.money_change) is not None
        ]
        if moving and not as_json:
            total = sum(moving)
            done = "planned" if report.dry_run else "written"
            warn(f"Money change {done}: {total:+.2f} a period at the unit prices.")


def write_question(preview: SyncReport, *, revert: bool = False) -> str:
    """``Write these 3 changes to Autotask?``, naming each PSA the planned writes go to (a
    revert on Autotask writes compensating adjustments, on the others the count back)."""
    planned = [item for item in preview.items if item.status == PLANNED]
    psas = Counter(item.psa for item in planned)
    n = len(planned)
    kind = "compensating " if revert and set(psas) == {AUTOTASK} else ""
    head = f"Write {'this' if n == 1 else 'these'} {n} {kind}change{'s' if n != 1 else ''}"
    if len(psas) == 1:
        return f"{head} to {PSA_NAMES[next(iter(psas))]}?"
    shares = ", ".join(f"{count} to {PSA_NAMES[psa]}" for psa, count in psas.items())
    return f"{head} ({shares})?"


def _detail(item: PlanItem) -> str:
    """The item's message, then the money a write moves and the line's account and service."""
    parts = [item.message] if item.message else []
    money = item.money_change
    if item.writes and item.change and item.unit_price is not None and money is not None:
        parts.append(f"{money:+.2f} at {item.unit_price:.2f} a unit")
    names = " / ".join(name for name in (item.account_name, item.service_name) if name)
    if names:
        parts.append(names)
    return "; ".join(parts)


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


COMMANDS = [sync]
