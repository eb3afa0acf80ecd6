"""``revert RUN_ID``: undo what one run wrote, through the same write path as ``sync``.

For each line the run ``updated``, the plan is the change back to the item's ``before`` (and
the unit cost in force before it), dated like the original write. A line is reverted only
while it still shows what the run wrote; a line already back at ``before`` is ``unchanged``
(a second revert writes nothing), and a line changed since is held, saying what it shows.
In Autotask a revert is a compensating adjustment: both adjustments stay in its records; on a
PSA whose line holds one count (``psa.CountPsa``) it sets the count back, taking effect now.
A revert is a run of its own in the history (kind ``revert``), with intents, the first write
verified alone, unknown outcomes re-read and nothing sent twice, as in a sync.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta

from infima_autotask.autotask import AutotaskApi
from infima_autotask.billing import Rates, same_rate, shows, unit_rates
from infima_autotask.config import AUTOTASK
from infima_autotask.errors import ThresholdError, UsageError
from infima_autotask.history import History, HistoryItem, ItemRecord, SyncLock
from infima_autotask.landing import describe_row
from infima_autotask.model import (
    ContractService,
    UnitsRow,
    choose_row,
    read_contract_services,
    read_units_rows,
)
from infima_autotask.psa import CountPsa, LineBackend
from infima_autotask.psa.autotask import AutotaskLines, threshold_problem
from infima_autotask.runner import SyncReport, not_sent, recorded_run
from infima_autotask.runtime import Runtime
from infima_autotask.statuses import FAILED, HELD, PLANNED, UNCHANGED, UPDATED
from infima_autotask.sync import PlanItem, parse_month
from infima_autotask.writer import Progress, Writer

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RevertOptions:
    """Which run to undo; ``dry_run`` plans without writing."""

    run_id: int
    dry_run: bool = False


def run_revert(
    runtime: Runtime,
    options: RevertOptions,
    *,
    progress: Progress | None = None,
    notice: Callable[[str], None] | None = None,
) -> SyncReport:
    """Revert (or plan the revert of) one run; the report reads like a sync's.

    Raises:
        UsageError: no such run, a dry run, or writes of an interrupted run still open (exit 2).
        LockHeldError, ThresholdError, ApiError: before any write (exit 3).
    """
    config = runtime.config
    state_dir = runtime.state_dir()
    with SyncLock(state_dir), History(state_dir) as history:
        original = history.run(options.run_id)
        if original is None:
            raise UsageError(
                f"There is no run {options.run_id} in the history; "
                "`infima-autotask history --runs` lists the runs and their ids."
            )
        if original.dry_run:
            raise UsageError(
                f"Run {options.run_id} was a dry run: it wrote nothing, so there is nothing to "
                "revert. `infima-autotask history --runs` lists the real runs."
            )
        report = SyncReport(period=original.period, dry_run=options.dry_run, reverts=options.run_id)
        written = [
            item
            for item in history.run_items(options.run_id)
            # Every updated item wrote something: units, or (change 0) only the unit cost.
            if item.status == UPDATED and item.contract_service_id is not None
        ]
        if not written:
            report.nothing_due = True
            report.warnings.append(f"Run {options.run_id} changed no PSA line: nothing to revert.")
            return report
        if not options.dry_run and history.pending_intents(original.period):
            raise UsageError(
                f"A run for {original.period} stopped while writing; its last writes are not "
                "settled yet. Run `infima-autotask sync` first (it reads Autotask and settles "
                "them), then revert."
            )
        with recorded_run(history, report, reverts=options.run_id) as run_id:
            first_day = parse_month(original.period)
            items: list[PlanItem] = []
            backends: list[tuple[str, LineBackend]] = []
            at_written = [item for item in written if item.psa == AUTOTASK]
            autotask = runtime.autotask() if at_written else None
            if autotask is not None:
                items += plan_revert(
                    read_contract_services(
                        autotask, [i.contract_service_id or 0 for i in at_written]
                    ),
                    _read_rows(autotask, at_written, first_day),
                    at_written,
                    run_id=options.run_id,
                    first_day=first_day,
                )
                window = _window(at_written, first_day)
                backends.append(
                    (
                        AUTOTASK,
                        AutotaskLines(
                            autotask, zone=config.autotask.timezone, window=lambda _items: window
                        ),
                    )
                )
            for key in dict.fromkeys(item.psa for item in written if item.psa != AUTOTASK):
                theirs = [item for item in written if item.psa == key]
                psa = runtime.count_psa(key)
                psa.read([], [(i.contract_id or 0, i.contract_service_id or 0) for i in theirs])
                items += [plan_count_revert(psa, item, run_id=options.run_id) for item in theirs]
                backends.append((key, psa.lines()))
            order = {item.client_id: n for n, item in enumerate(written)}
            items.sort(key=lambda item: order[item.client_id])
            to_write = [item for item in items if item.status == PLANNED]
            if autotask is not None:
                k = sum(1 for item in to_write if item.psa == AUTOTASK)
                problem = threshold_problem(autotask, k, config.sync.max_api_usage_percent)
                if problem is not None and options.dry_run:
                    report.warnings.append(f"{problem} A real revert now would write nothing.")
                elif problem is not None:
                    raise ThresholdError(f"{problem} Nothing was written; run again later.")
            if options.dry_run:
                history.record_items(run_id, [ItemRecord.of(item) for item in items])
                report.items = items
                return report
            history.record_items(
                run_id, [ItemRecord.of(item) for item in items if item.status != PLANNED]
            )
            report.writing = bool(to_write)
            report.writes_planned = len(to_write)
            finals: dict[int, PlanItem] = {}
            for key, backend in backends:
                writes = [item for item in to_write if item.psa == key]
                if not writes:
                    continue
                if report.interrupted:
                    finals.update(not_sent(history, run_id, writes, f"revert {options.run_id}"))
                    continue
                writer = Writer(
                    backend,
                    history,
                    run_id=run_id,
                    wait=runtime.seams.sleep,
                    progress=progress,
                    notice=notice,
                    abort=runtime.stopping,
                )
                result = writer.write_all(writes)
                finals.update(result.finals)
                report.interrupted = result.interrupted
            report.items = [finals.get(item.client_id, item) for item in items]
        return report


def plan_revert(
    services: dict[int, ContractService],
    rows: dict[int, list[UnitsRow]],
    written: Sequence[HistoryItem],
    *,
    run_id: int,
    first_day: date,
) -> list[PlanItem]:
    """Per line the run updated: the change back to its ``before``, or why not (pure)."""
    return [
        _plan_one(item, services.get(item.contract_service_id or 0), rows, run_id, first_day)
        for item in written
    ]


def _plan_one(
    item: HistoryItem,
    cs: ContractService | None,
    rows: dict[int, list[UnitsRow]],
    run_id: int,
    first_day: date,
) -> PlanItem:
    effective = _effective(item, first_day)
    found = rows.get(item.contract_service_id or 0, [])
    row = choose_row(found, effective)
    rates = unit_rates(row, cs)
    plan = PlanItem(
        client_id=item.client_id,
        client_name=item.client_name or "",
        contract_id=item.contract_id or 0,
        contract_service_id=item.contract_service_id or 0,
        service_id=cs.service_id if cs else 0,
        users=None,
        target=item.before,
        before=row.units if row else None,
        after=row.units if row else None,
        change=None,
        unit_price=rates.price,
        unit_cost=rates.cost,
        new_unit_cost=rates.cost,
        status=HELD,
        effective=effective,
        day_before=choose_row(found, effective - timedelta(days=1)),
    )
    if cs is None or row is None:
        shown = "contract service gone" if cs is None else describe_row(row, effective)
        return _with(plan, FAILED, f"not reverted: {shown}; check Autotask")
    written = Rates(item.price, item.cost)
    earlier = Rates(item.price, item.before_cost if item.before_cost is not None else item.cost)
    if row.units == item.before and (item.before_cost is None or shows(row, item.before, earlier)):
        return _with(plan, UNCHANGED, f"already back at {item.before} units")
    if not shows(row, item.after, written):
        return _with(
            plan,
            HELD,
            f"not reverted: the line changed since run {run_id} wrote {item.after} units "
            f"({describe_row(row, effective)}); change it by hand in Autotask if it is wrong",
        )
    if row.posted:
        return _with(
            plan,
            HELD,
            f"not reverted: the period from {row.start.isoformat()} is approved and posted; "
            "reverse it by hand in Autotask",
        )
    target = item.before or 0
    return replace(
        plan,
        after=target,
        change=target - row.units,
        new_unit_cost=earlier.cost,
        status=PLANNED,
        message=f"revert of run {run_id}",
    )


def plan_count_revert(psa: CountPsa, item: HistoryItem, *, run_id: int) -> PlanItem:
    """The count back to ``before`` on a PSA whose line holds one count, or why not (pure
    over what ``psa`` read). The write is absolute, so it takes effect now, whatever month
    the run wrote."""
    shown = psa.shown(item.contract_id or 0, item.contract_service_id or 0)
    count = shown.count if shown is not None else None
    cost = shown.unit_cost if shown is not None else None
    plan = PlanItem(
        client_id=item.client_id,
        client_name=item.client_name or "",
        contract_id=item.contract_id or 0,
        contract_service_id=item.contract_service_id or 0,
        service_id=0,
        users=None,
        target=item.before,
        before=count,
        after=count,
        change=None,
        unit_price=item.price,
        unit_cost=cost,
        new_unit_cost=cost,
        status=HELD,
        psa=item.psa,
    )
    line = f"line {item.contract_service_id}"
    if shown is None:
        return _with(
            plan, FAILED, f"not reverted: {psa.name} has no {line} any more; check it there"
        )
    earlier = item.before_cost if item.before_cost is not None else item.cost
    if count == item.before and same_rate(cost, earlier):
        return _with(plan, UNCHANGED, f"already back at {item.before}")
    if count != item.after or not same_rate(cost, item.cost):
        shows_now = "no whole count" if count is None else f"{count}"
        return _with(
            plan,
            HELD,
            f"not reverted: the line changed since run {run_id} wrote {item.after} (it shows "
            f"{shows_now}); change it by hand in {psa.name} if it is wrong",
        )
    target = item.before or 0
    return replace(
        plan,
        after=target,
        change=target - (count or 0),
        new_unit_cost=earlier,
        status=PLANNED,
        message=f"revert of run {run_id}",
    )


def _with(item: PlanItem, status: str, message: str) -> PlanItem:
    return replace(item, status=status, message=message)


def _effective(item: HistoryItem, first_day: date) -> date:
    """The original write's date (the 1st for items from before effective dates were kept)."""
    return date.fromisoformat(item.effective_date) if item.effective_date else first_day


def _window(items: Sequence[HistoryItem], first_day: date) -> tuple[date, date]:
    """One units read covering every item's E - 1 to E + 1."""
    days = [_effective(item, first_day) for item in items]
    return min(days) - timedelta(days=1), max(days) + timedelta(days=1)


def _read_rows(
    autotask: AutotaskApi, items: Sequence[HistoryItem], first_day: date
) -> dict[int, list[UnitsRow]]:
    ids = sorted({item.contract_service_id for item in items if item.contract_service_id})
    return read_units_rows(autotask, ids, *_window(items, first_day))
