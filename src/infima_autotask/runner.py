"""The monthly sync around the pure planner: lock, history, reads, guard, writes, verification.

Order of a run (SPEC §8, §9): refuse a month that has not begun in sync.timezone; take the
lock and open the history (both refuse before anything is sent); list INFIMA clients; start
counting users in the background while contracts, contract services, the contract picklists
and units rows (D - 1 to the month's end) are read in batches; close intents left open by a
killed run; wait for the counts; plan; read ThresholdInformation; send the first write alone
and read it back; write the rest once each (at most three in flight), recording an intent
before and the outcome after; then verify every written item in one batched read. Where a
write landed is judged by one rule (:func:`landing`) everywhere; Ctrl-C or SIGTERM stops
before anything queued is sent.

Mappings are split by PSA (SPEC §10): the above is the Autotask path, taken only when a
mapping (or an open intent) is Autotask. The PSAs whose line holds one count (ConnectWise,
HaloPSA: :class:`~infima_autotask.psa.CountPsa`) are read alongside, planned by their
backend's pure planner and written after the Autotask writes through the same
:class:`Writer`. A PSA that cannot be read fails its own items while the others are written.
All items end in one report, one history run and one exit code, in config order.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from infima_autotask import __version__
from infima_autotask.autotask import AutotaskApi
from infima_autotask.billing import (
    Rates,
    next_month,
    period_labels,
    same_rate,
    shows,
)
from infima_autotask.chain import Successor, find_successors
from infima_autotask.config import AUTOTASK, COUNT_PSAS, PSA_NAMES, ClientMapping
from infima_autotask.errors import (
    ApiError,
    InfimaAutotaskError,
    ThresholdError,
    UsageError,
)
from infima_autotask.history import (
    REVERT_RUN,
    SYNC_RUN,
    History,
    HistoryItem,
    ItemRecord,
    SyncLock,
)
from infima_autotask.infima import INFIMA_THREADS, CountsFile, CountSource, InfimaClientInfo
from infima_autotask.landing import Landing, describe_row, landing, moved_message
from infima_autotask.model import (
    Contract,
    ContractService,
    UnitsRow,
    choose_row,
    read_contract_picklists,
    read_contract_services,
    read_contracts,
    read_units_rows,
)
from infima_autotask.plan_file import PlannedWrite, ReviewedPlan
from infima_autotask.psa import CountPsa, LineBackend, PlanContext
from infima_autotask.psa.autotask import AutotaskLines, settle_ceiling, threshold_problem
from infima_autotask.runtime import Runtime
from infima_autotask.statuses import FAILED, HELD, PLANNED, UNCHANGED, UPDATED
from infima_autotask.sync import (
    PlanItem,
    UserCount,
    current_month,
    ended_contracts,
    failed_item,
    local_date,
    mapping_schedule,
    period_label,
    plan,
    summary,
)
from infima_autotask.writer import Progress, Writer, join

log = logging.getLogger(__name__)

MAX_LISTED_UNMAPPED = 20


@dataclass(frozen=True, kw_only=True)
class SyncOptions:
    """What the operator asked for."""

    month: date | None = None
    clients: tuple[int, ...] = ()
    if_due: bool = False
    dry_run: bool = False
    yes: bool = False
    counts_file: Path | None = None
    plan: ReviewedPlan | None = None  # write only what this reviewed dry run planned


@dataclass
class SyncReport:
    """The outcome of one ``sync``: one item per synced mapping, in config order."""

    period: str
    dry_run: bool
    items: list[PlanItem] = field(default_factory=list)
    unmapped: list[InfimaClientInfo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    nothing_due: bool = False
    relation: str = ""  # "past" or "future" for an explicit --month other than this one
    interrupted: bool = False  # Ctrl-C or SIGTERM stopped the writes (exit 130)
    writing: bool = False  # the write phase began: a create may have been sent
    writes_planned: int = 0  # the changes this run set out to write
    run_id: int | None = None  # its run in the history, once started
    reverts: int | None = None  # a revert: the run it undoes
    # A PSA whose batched reads failed in a run of several PSAs, with the error: its items
    # failed, the other PSAs' were written, and the run exits 3 (SPEC §3: a PSA not reached).
    unreachable: dict[str, str] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, int]:
        return summary(self.items)

    @property
    def by_psa(self) -> dict[str, dict[str, int]]:
        """The summary per PSA, for the PSAs the items are on (config order)."""
        psas = dict.fromkeys(item.psa for item in self.items)
        return {psa: summary(i for i in self.items if i.psa == psa) for psa in psas}

    @property
    def needs_attention(self) -> bool:
        """Something a person must look at: a held or failed item, or a dry run's plan."""
        return any(item.status in (HELD, FAILED, PLANNED) for item in self.items)

    @property
    def outcome(self) -> str:
        counts = self.summary
        return FAILED if counts[FAILED] else HELD if counts[HELD] else "ok"

    def exit_code(self, *, detailed: bool = False) -> int:
        """SPEC §3: 3 when a PSA could not be read; 1 for any failed or held item; 4 for
        pending changes of a detailed dry run."""
        counts = self.summary
        if self.unreachable:
            return 3
        if counts[FAILED] or counts[HELD]:
            return 1
        if detailed and self.dry_run and counts[PLANNED]:
            return 4
        return 0

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "period": self.period,
            "dry_run": self.dry_run,
            "items": [item.as_json() for item in self.items],
            "summary": self.summary,
            "warnings": [*self.warnings, *([self.unmapped_warning] if self.unmapped else [])],
        }
        by_psa = self.by_psa
        if len(by_psa) > 1:  # a mixed run; a run of one PSA keeps SPEC §8's document as is
            doc["by_psa"] = by_psa
        return doc

    @property
    def unmapped_warning(self) -> str:
        """One line naming the INFIMA clients with no mapping (the first 20)."""
        shown = [f"{client.name or '?'} ({client.id})" for client in self.unmapped]
        more = len(shown) - MAX_LISTED_UNMAPPED
        listed = ", ".join(shown[:MAX_LISTED_UNMAPPED]) + (f" and {more} more" if more > 0 else "")
        return f"INFIMA clients without a mapping (not synced): {listed}"


class SyncInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM outside the writes' own handling (before them, or a second one)."""

    def __init__(self, *, writing: bool, run_id: int | None = None) -> None:
        super().__init__()
        self.writing = writing
        self.run_id = run_id


def requested_month(options: SyncOptions) -> date | None:
    """The month asked for: ``--month``, else the reviewed plan's; None: this month."""
    return options.month or (options.plan.period if options.plan else None)


def month_boundary(now: datetime, zone: str | None) -> str | None:
    """Why a run without --month must not write now, or None.

    The period is this month in ``sync.timezone``; when that is not the month of this server's
    own date, cron started the job on the wrong side of midnight there (a UTC server at 06:00
    on the 1st is still the 30th in Los Angeles) and would write the previous month.
    """
    ours, server = current_month(now, zone), current_month(now, None)
    # Ahead of the server (Sydney on a UTC server), the month has begun there: it is right.
    if zone is None or ours >= server:
        return None
    local = now.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")
    return (
        f"It is {local} in sync.timezone {zone}, so this month is {period_label(ours)} there, "
        f"but {period_label(server)} on this server: a sync now would write "
        f"{period_label(ours)}. Nothing was written. Run it after midnight in {zone} (a "
        f"crontab line after CRON_TZ={zone} where cron supports it, or a later hour), or pass "
        f"--month {period_label(ours)} to sync that month on purpose."
    )


def select_mappings(
    mappings: Sequence[ClientMapping], clients: Sequence[int]
) -> list[ClientMapping]:
    """The enabled mappings, restricted to ``clients`` when given.

    Raises:
        UsageError: a requested client has no mapping, or its mapping is disabled.
    """
    if not clients:
        return [mapping for mapping in mappings if mapping.enabled]
    by_client = {mapping.client_id: mapping for mapping in mappings}
    missing = [client for client in dict.fromkeys(clients) if client not in by_client]
    if missing:
        raise UsageError(
            f"Client {', '.join(map(str, missing))} is not mapped; map it with "
            "`infima-autotask map CLIENT_ID --account ID`, or see `infima-autotask list-mappings`."
        )
    disabled = [client for client in dict.fromkeys(clients) if not by_client[client].enabled]
    if disabled:
        raise UsageError(
            f"The mapping of client {', '.join(map(str, disabled))} is disabled "
            "(enabled: false in the config); enable it to sync it."
        )
    wanted = set(clients)
    return [mapping for mapping in mappings if mapping.client_id in wanted]


def run_sync(
    runtime: Runtime,
    options: SyncOptions,
    *,
    progress: Progress | None = None,
    notice: Callable[[str], None] | None = None,
) -> SyncReport:
    """Run one sync (or dry run) for one period; ``notice`` hears what the run waits for.

    Raises:
        UsageError: unmapped ``--client``, bad counts file, config or state folder (exit 2).
        LockHeldError, ThresholdError, ApiError: before per-client work (exit 3).
    """
    config = runtime.config
    now = runtime.clock()
    current = current_month(now, config.sync.timezone)
    if options.plan is not None and options.month not in (None, options.plan.period):
        raise UsageError(
            f"The plan {options.plan.source} is for {period_label(options.plan.period)}; "
            "leave out --month, or make a new plan for that month."
        )
    day = requested_month(options) or current
    period = period_label(day)
    # A plan's month is checked like a default one: it was a default when it was made.
    boundary = None if options.month else month_boundary(now, config.sync.timezone)
    if boundary is not None and not options.dry_run:
        raise UsageError(boundary)
    mappings = select_mappings(config.mappings, options.clients)
    state_dir = runtime.state_dir()
    # Both refuse (exit 2/3) before anything is sent to Autotask.
    with SyncLock(state_dir), History(state_dir) as history:
        report = SyncReport(period=period, dry_run=options.dry_run)
        report.relation = "" if day == current else "past" if day < current else "future"
        if boundary is not None:
            report.warnings.append(f"{boundary} A real run now would refuse (exit 2).")
        if not config.mappings:
            report.warnings.append(
                "No mappings in the config yet: map a client with `infima-autotask map` first."
            )
        if options.if_due:
            done = history.successful_lines(period)
            mappings = [
                mapping
                for mapping in mappings
                if (mapping.client_id, mapping.contract_service_id) not in done
            ]
        if not mappings:
            report.nothing_due = True
            return report
        with recorded_run(history, report) as run_id:
            run = _Run(runtime, history, run_id, day, mappings, options, report, progress)
            run.notice = notice
            run.execute()
        return report


@contextlib.contextmanager
def recorded_run(
    history: History, report: SyncReport, *, reverts: int | None = None
) -> Iterator[int]:
    """A run in the history from start to outcome (a sync, or a revert of run ``reverts``).

    Whatever stops it is its outcome; Ctrl-C or SIGTERM becomes :class:`SyncInterrupted`,
    saying whether a write may have been sent.
    """
    run_id = history.start_run(
        period=report.period,
        dry_run=report.dry_run,
        version=__version__,
        kind=SYNC_RUN if reverts is None else REVERT_RUN,
        reverts=reverts,
    )
    report.run_id = run_id
    try:
        yield run_id
    except BaseException as exc:
        outcome = f"error: {exc.message}" if isinstance(exc, InfimaAutotaskError) else "aborted"
        with contextlib.suppress(InfimaAutotaskError, ValueError):
            history.finish_run(run_id, outcome=outcome[:500], summary=report.summary)
        if isinstance(exc, KeyboardInterrupt):
            raise SyncInterrupted(writing=report.writing, run_id=run_id) from None
        if isinstance(exc, InfimaAutotaskError):
            exc.run_id = run_id
        raise
    outcome = "interrupted" if report.interrupted else report.outcome
    history.finish_run(run_id, outcome=outcome, summary=report.summary)


def not_sent(
    history: History, run_id: int, items: list[PlanItem], command: str = "sync"
) -> dict[int, PlanItem]:
    """Writes of another PSA never started after Ctrl-C: held, said so (exit 130)."""
    message = f"not sent: the run was interrupted; run `{command}` again to finish"
    held = [replace(item, status=HELD, message=message, after=item.before) for item in items]
    history.record_items(run_id, [ItemRecord.of(item) for item in held])
    return {item.client_id: item for item in held}


class _Run:
    def __init__(
        self,
        runtime: Runtime,
        history: History,
        run_id: int,
        day: date,
        mappings: list[ClientMapping],
        options: SyncOptions,
        report: SyncReport,
        progress: Progress | None,
    ) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.history = history
        self.run_id = run_id
        self.day = day
        self.period = period_label(day)
        self.mappings = mappings
        # Only these go through Autotask: a run without any makes no Autotask request.
        self.autotask_mappings = [m for m in mappings if m.psa == AUTOTASK]
        self.options = options
        self.report = report
        self.progress = progress
        self.notice: Callable[[str], None] | None = None
        self.autotask: AutotaskApi | None = None
        self.zone = self.config.autotask.timezone
        self._landed: dict[int, HistoryItem] = {}  # intents of a killed run found written
        # Every units read covers D - 1 (the day before a write dated D) to the month's end.
        self.window = (day - timedelta(days=1), next_month(day) - timedelta(days=1))

    def _read_rows(
        self,
        autotask: AutotaskApi,
        contracts: dict[int, Contract],
        months: dict[int, int],
        cs_ids: list[int],
    ) -> dict[int, list[UnitsRow]]:
        """The batched units read (SPEC §8). Mappings whose E is the month's last day (billed
        from the 31st) are read on their own up to E + 1, where a late landing shows."""
        last = self.window[1]
        edge = {
            mapping.contract_service_id
            for mapping in self.autotask_mappings
            if (
                when := mapping_schedule(
                    mapping, contracts.get(mapping.contract_id), self.day, self.config.sync, months
                ).effective
            )
            is not None
            and when >= last
        }
        rows = read_units_rows(autotask, [i for i in cs_ids if i not in edge], *self.window)
        if edge:
            rows.update(
                read_units_rows(autotask, sorted(edge), self.window[0], last + timedelta(days=1))
            )
        return rows

    def _window(self, items: Sequence[PlanItem]) -> tuple[date, date]:
        """The planning window, reaching E + 1 when an item's E is the month's last day (a
        write landing a day late shows there)."""
        first, last = self.window
        latest = max((item.effective for item in items if item.effective), default=None)
        if latest is not None and latest >= last:
            last = latest + timedelta(days=1)
        return first, last

    def _client(self) -> AutotaskApi:
        if self.autotask is None:
            self.autotask = self.runtime.autotask()
        return self.autotask

    def _tick(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)

    def execute(self) -> None:
        options = self.options
        pending = [] if options.dry_run else self.history.pending_intents(self.period)
        # A missing section or secret of a PSA stops the run before any request (exit 2).
        psas = self._count_psas(pending)
        source = self.runtime.count_source(options.counts_file)
        # A failing client list stops the run (exit 3) before anything is sent to any PSA.
        infima_clients = {client.id: client for client in source.clients()}
        pool = ThreadPoolExecutor(INFIMA_THREADS, thread_name_prefix="infima-count")
        at_pending = [p for p in pending if p.psa == AUTOTASK]
        at_mappings = self.autotask_mappings
        uses_autotask = bool(at_mappings or at_pending)
        # A PSA that cannot be read fails its own items; the others are written (SPEC §3's
        # exit 3 stays). A run of one PSA has nothing else to do: the read error is the run's.
        several = len(({AUTOTASK} if uses_autotask else set()) | set(psas)) > 1
        contracts: dict[int, Contract] = {}
        services: dict[int, ContractService] = {}
        rows: dict[int, list[UnitsRow]] = {}
        active: frozenset[int] | set[int] = frozenset()
        months: dict[int, int] = {}
        try:
            counting = self._start_counts(pool, source, infima_clients)
            if uses_autotask:
                try:
                    autotask = self._client()
                    cs_ids = [mapping.contract_service_id for mapping in at_mappings]
                    contract_ids = [mapping.contract_id for mapping in at_mappings]
                    contracts = read_contracts(autotask, contract_ids)
                    services = read_contract_services(autotask, cs_ids)
                    # Pending intents of clients outside this selection are re-read in the
                    # same batch.
                    extra = [
                        p.contract_service_id
                        for p in at_pending
                        if p.contract_service_id is not None
                    ]
                    picklists = read_contract_picklists(autotask)
                    active = picklists.active_statuses
                    months = period_labels(picklists.period_labels)
                    rows = self._read_rows(autotask, contracts, months, [*cs_ids, *extra])
                    self._widen_for_intents(autotask, at_pending, rows)
                    self._settle_pending(autotask, at_pending, rows)
                    self._resolve_pending(at_pending, rows)
                except ApiError as exc:
                    if not several:
                        raise
                    self._unreachable(AUTOTASK, exc)
            for key, psa in psas.items():
                try:
                    self._read_count_psa(psa, [p for p in pending if p.psa == key])
                except ApiError as exc:
                    if not several:
                        raise
                    self._unreachable(key, exc)
            counts = self._collect_counts(counting)
        finally:
            # After a failed read, user lists not yet started are never sent.
            pool.shutdown(wait=True, cancel_futures=True)
        at_items: list[PlanItem] = []
        if at_mappings and AUTOTASK not in self.report.unreachable:
            autotask = self._client()
            ended = ended_contracts(at_mappings, contracts, services, self.day, active)
            successors: dict[tuple[int, int], Successor] = {}
            if ended:
                try:
                    successors = find_successors(autotask, ended, self.day, active)
                except ApiError as exc:  # only the failure message loses its hint
                    log.warning("renewal look-up failed: %s", exc)
            at_items = plan(
                at_mappings,
                day=self.day,
                settings=self.config.sync,
                counts=counts,
                contracts=contracts,
                contract_services=services,
                rows=rows,
                active_statuses=active,
                period_months=months,
                successors=successors,
                yes=options.yes,
            )
        items = self._in_config_order([*at_items, *self._plan_others(counts, psas)])
        items = [self._reviewed(self._confirmed(item)) for item in items]
        self.report.unmapped = self._unmapped(source, infima_clients)
        to_write = [item for item in items if item.status == PLANNED]
        if self.autotask is not None and AUTOTASK not in self.report.unreachable:
            self._check_threshold(
                self.autotask, sum(1 for item in to_write if item.psa == AUTOTASK)
            )
        if options.dry_run:
            self.history.record_items(self.run_id, [ItemRecord.of(item) for item in items])
            self.report.items = items
            return
        self.history.record_items(
            self.run_id, [ItemRecord.of(item) for item in items if item.status != PLANNED]
        )
        self.report.writing = bool(to_write)
        self.report.writes_planned = len(to_write)
        finals: dict[int, PlanItem] = {}
        interrupted = False
        backends: list[tuple[str, LineBackend]] = []
        if self.autotask is not None and AUTOTASK not in self.report.unreachable:
            backends.append(
                (AUTOTASK, AutotaskLines(self.autotask, zone=self.zone, window=self._window))
            )
        backends += [(key, psa.lines()) for key, psa in psas.items()]
        for key, backend in backends:
            writes = [item for item in to_write if item.psa == key]
            if not writes:
                continue
            if interrupted:  # Ctrl-C during one PSA's writes: no other PSA's is started
                finals.update(not_sent(self.history, self.run_id, writes))
                continue
            result = self._writer(backend).write_all(writes)
            finals.update(result.finals)
            interrupted = result.interrupted
        self.report.interrupted = interrupted
        self.report.items = [finals.get(item.client_id, item) for item in items]

    def _count_psas(self, pending: list[HistoryItem]) -> dict[str, CountPsa]:
        """A :class:`CountPsa` for each PSA other than Autotask with a mapping (or an open
        intent) in this run."""
        keys = dict.fromkeys(
            psa
            for psa in [*(m.psa for m in self.mappings), *(p.psa for p in pending)]
            if psa in COUNT_PSAS
        )
        return {key: self.runtime.count_psa(key) for key in keys}

    def _unreachable(self, key: str, exc: ApiError) -> None:
        """Remember that ``key`` could not be read: its items fail, the run goes on."""
        self.report.unreachable[key] = exc.message
        self.report.warnings.append(
            f"{PSA_NAMES[key]} could not be read ({exc.message}): nothing was sent to it; its "
            f"clients are failed. Run `infima-autotask sync --psa {key}` when it answers."
        )

    def _writer(self, backend: LineBackend) -> Writer:
        return Writer(
            backend,
            self.history,
            run_id=self.run_id,
            wait=self.runtime.seams.sleep,
            progress=self.progress,
            notice=self.notice,
            abort=self.runtime.stopping,
        )

    def _plan_others(
        self, counts: dict[int, UserCount], psas: dict[str, CountPsa]
    ) -> list[PlanItem]:
        """The items of the mappings of the PSAs other than Autotask."""
        now = self.runtime.clock()
        zone = self.config.sync.timezone
        ctx = PlanContext(
            day=self.day,
            current=current_month(now, zone),
            today=local_date(now, zone),
            settings=self.config.sync,
            yes=self.options.yes,
        )
        items = []
        for mapping in self.mappings:
            count = counts.get(mapping.client_id)
            if mapping.psa in self.report.unreachable:
                problem = self.report.unreachable[mapping.psa]
                message = (
                    f"{PSA_NAMES[mapping.psa]} could not be read ({problem}); nothing was sent"
                )
                items.append(failed_item(mapping, count, message))
            elif mapping.psa in psas:
                items.append(psas[mapping.psa].plan(mapping, count, ctx))
        return items

    def _in_config_order(self, items: list[PlanItem]) -> list[PlanItem]:
        by_client = {item.client_id: item for item in items}
        return [by_client[m.client_id] for m in self.mappings if m.client_id in by_client]

    def _read_count_psa(self, psa: CountPsa, pending: list[HistoryItem]) -> None:
        """The mappings' lines, then open intents of a killed run resolved from them (an
        intent's line outside this selection is read with them)."""
        mappings = [m for m in self.mappings if m.psa == psa.key]
        lines = [
            (p.contract_id or 0, p.contract_service_id)
            for p in pending
            if p.contract_service_id is not None
        ]
        psa.read(mappings, lines)
        for intent in pending:
            if intent.contract_service_id is not None:
                self._resolve_count_intent(psa, intent)

    def _resolve_count_intent(self, psa: CountPsa, intent: HistoryItem) -> None:
        """Close an open intent of a killed run from what its line shows now."""
        shown = psa.shown(intent.contract_id or 0, intent.contract_service_id or 0)
        count = shown.count if shown is not None else None
        if shown is not None and count == intent.target and same_rate(shown.unit_cost, intent.cost):
            status, message = UPDATED, "confirmed after an interrupted run"
            self._landed[intent.client_id] = intent
        elif count is not None and count == intent.before:
            status, message = FAILED, "not applied by the interrupted run"
        else:
            status = FAILED
            message = (
                f"{psa.name} shows {'nothing' if count is None else count} on line "
                f"{intent.contract_service_id} since an interrupted run; the count changed since"
            )
        log.info("intent %d of client %d: %s", intent.id, intent.client_id, message)
        self.history.resolve_intent(intent.id, status=status, message=message)

    # -- reads --------------------------------------------------------------------------

    def _start_counts(
        self,
        pool: ThreadPoolExecutor,
        source: CountSource,
        known: dict[int, InfimaClientInfo],
    ) -> dict[int, UserCount | Future[UserCount]]:
        """Start counting the active users of every synced client on ``pool``.

        Clients INFIMA (or the counts file) does not know get their failure at once.
        """
        counting: dict[int, UserCount | Future[UserCount]] = {}

        def count(client_id: int, name: str) -> UserCount:
            try:
                return UserCount(source.active_users(client_id), name=name)
            except InfimaAutotaskError as exc:
                return UserCount(None, f"INFIMA users: {exc.message}", name=name)

        for mapping in self.mappings:
            client = known.get(mapping.client_id)
            if client is not None:
                counting[mapping.client_id] = pool.submit(count, client.id, client.name)
            elif isinstance(source, CountsFile):
                counting[mapping.client_id] = UserCount(
                    None, f"client {mapping.client_id} is not in the counts file {source.path}"
                )
            else:
                counting[mapping.client_id] = UserCount(
                    None,
                    f"INFIMA has no client {mapping.client_id}; check it in INFIMA, or "
                    f"`infima-autotask unmap {mapping.client_id}`",
                )
        return counting

    def _collect_counts(
        self, counting: dict[int, UserCount | Future[UserCount]]
    ) -> dict[int, UserCount]:
        """Wait for every count started by :meth:`_start_counts`, in mapping order."""
        counts: dict[int, UserCount] = {}
        futures = sum(1 for value in counting.values() if isinstance(value, Future))
        stage = "Counting INFIMA users"
        done = 0
        for client_id, value in counting.items():
            if isinstance(value, Future):
                counts[client_id] = value.result()
                done += 1
                self._tick(stage, done, futures)
            else:
                counts[client_id] = value
        return counts

    def _reviewed(self, item: PlanItem) -> PlanItem:
        """With ``--plan``: a write goes out only as it was reviewed; anything else is held."""
        plan = self.options.plan
        if plan is None or item.status != PLANNED:
            return item
        reviewed = plan.writes.get(item.client_id)
        again = "review it with a new `infima-autotask sync --dry-run --plan-out FILE`"
        if reviewed is None:
            message = f"not written: not a change in the reviewed plan {plan.source}; {again}"
        else:
            changed = reviewed.differences(PlannedWrite.of(item, self.zone))
            if not changed:
                return item
            message = (
                f"not written: changed since the reviewed plan ({'; '.join(changed)}); {again}"
            )
        return replace(item, status=HELD, message=message, after=item.before)

    def _confirmed(self, item: PlanItem) -> PlanItem:
        """An interrupted run's write found in place shows as `updated` by this run's report,
        not `unchanged`: it is this month's change, and the killed run never said so."""
        intent = self._landed.get(item.client_id)
        if (
            intent is None
            or item.status != UNCHANGED
            or intent.contract_service_id != item.contract_service_id
        ):
            return item
        return replace(
            item,
            status=UPDATED,
            before=intent.before,
            change=intent.change,
            message=join(item.message, "written by an interrupted run; confirmed now"),
        )

    def _unmapped(
        self, source: CountSource, known: dict[int, InfimaClientInfo]
    ) -> list[InfimaClientInfo]:
        """INFIMA clients without any mapping (only on a full run).

        From the API they are listed without counts: fetching their users would break the
        INFIMA budget (one user list per synced client). From a counts file, only clients
        with active users are listed.
        """
        if self.options.clients:
            return []
        mapped = {mapping.client_id for mapping in self.config.mappings}
        unmapped = [client for cid, client in known.items() if cid not in mapped]
        if isinstance(source, CountsFile):
            unmapped = [client for client in unmapped if source.active_users(client.id) > 0]
        return unmapped

    def _widen_for_intents(
        self,
        autotask: AutotaskApi,
        pending: list[HistoryItem],
        rows: dict[int, list[UnitsRow]],
    ) -> None:
        """Re-read, up to E + 1, the rows of open intents dated the month's last day: a write
        that landed a day late shows only there, and must not read as "not applied"."""
        last = self.window[1]
        edge = [
            intent.contract_service_id
            for intent in pending
            if intent.contract_service_id is not None and _intent_day(intent, self.day) >= last
        ]
        if not edge:
            return
        fresh = read_units_rows(autotask, edge, self.window[0], last + timedelta(days=1))
        for cs_id in edge:
            rows[cs_id] = fresh.get(cs_id, [])

    def _settle_pending(
        self,
        autotask: AutotaskApi,
        pending: list[HistoryItem],
        rows: dict[int, list[UnitsRow]],
    ) -> None:
        """Give a just-killed run's last creates time to land before reading them as not applied.

        A run killed mid-send (an operator stopping a run that hangs on a slow Autotask, then
        starting it again) leaves a create that Autotask may still be applying; read at once it
        shows ``before`` and the new run would send it a second time. So, as after an unknown
        outcome within a run, wait until such an intent is :func:`_settle_ceiling` seconds old,
        then re-read those units rows (replacing them in ``rows``) before resolving.
        """
        ceiling = settle_ceiling(autotask)
        now = datetime.now(timezone.utc)  # elapsed time, not the billing clock
        wait = 0.0
        recent: list[int] = []
        for intent in pending:
            cs_id = intent.contract_service_id
            row = _intent_row(intent, rows, self.day)
            if cs_id is None or row is None or row.units != intent.before:
                continue
            if shows(row, intent.target, Rates(intent.price, intent.cost)):
                continue
            age = _age_seconds(intent.created_at, now)
            if age < ceiling:
                recent.append(cs_id)
                wait = max(wait, min(ceiling, ceiling - age))  # a clock set back: at most once
        if not recent:
            return
        log.info("waiting %.1fs for the writes of an interrupted run to settle", wait)
        if self.notice is not None:
            self.notice(
                f"A run stopped {_age_seconds(pending[0].created_at, now):.0f} s ago while "
                f"writing; waiting {wait:.0f} s for Autotask to finish its last writes before "
                "reading them, so none is sent twice."
            )
        (self.runtime.seams.sleep or time.sleep)(wait)
        fresh = read_units_rows(
            autotask, recent, self.window[0], self.window[1] + timedelta(days=1)
        )
        for cs_id in recent:
            rows[cs_id] = fresh.get(cs_id, [])

    def _resolve_pending(self, pending: list[HistoryItem], rows: dict[int, list[UnitsRow]]) -> None:
        """Close intents a killed run left open, from the rows just read (SPEC §8).

        Only an intent of which nothing shows is "not applied" (its client is then planned
        afresh); one that landed a day early or late is failed with the one-day charge named.
        """
        for intent in pending:
            effective = _intent_day(intent, self.day)
            found = rows.get(intent.contract_service_id or 0, [])
            state = landing(
                found,
                effective,
                before=intent.before,
                target=intent.target,
                rates=Rates(intent.price, intent.cost),
            )
            if state is Landing.LANDED:
                status, message = UPDATED, "confirmed after an interrupted run"
                self._landed[intent.client_id] = intent
            elif state is Landing.BEFORE:
                status, message = FAILED, "not applied by the interrupted run"
            elif state in (Landing.EARLY, Landing.LATE):
                status = FAILED
                message = "interrupted run: " + moved_message(
                    state, found, effective, intent.before
                )
            else:
                shown = describe_row(choose_row(found, effective), effective)
                status = FAILED
                message = f"{shown} since an interrupted run; units changed since"
            log.info("intent %d of client %d: %s", intent.id, intent.client_id, message)
            self.history.resolve_intent(intent.id, status=status, message=message)

    def _check_threshold(self, autotask: AutotaskApi, k: int) -> None:
        """SPEC §8: refuse to write when used + k + ceil(k/500) passes the configured share.

        Read on every run, even without writes, so the request count is the SPEC §9 floor.
        """
        text = threshold_problem(autotask, k, self.config.sync.max_api_usage_percent)
        if text is None:
            return
        if self.options.dry_run:
            self.report.warnings.append(f"{text} A real run now would write nothing.")
            return
        raise ThresholdError(
            f"{text} Nothing was written; run again later, or raise sync.max_api_usage_percent."
        )


def _intent_day(intent: HistoryItem, day: date) -> date:
    """An open intent's effective date (D for intents from before 0.2, which wrote on D)."""
    return date.fromisoformat(intent.effective_date) if intent.effective_date else day


def _intent_row(intent: HistoryItem, rows: dict[int, list[UnitsRow]], day: date) -> UnitsRow | None:
    """The row covering an open intent's effective date."""
    cs_id = intent.contract_service_id
    if cs_id is None:
        return None
    return choose_row(rows.get(cs_id, []), _intent_day(intent, day))


def _age_seconds(stamp: str, now: datetime) -> float:
    """Seconds since a history timestamp; unreadable stamps count as old."""
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return math.inf
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (now - when).total_seconds()
