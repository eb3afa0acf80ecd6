"""Planning a monthly sync (SPEC §8): a pure function from inputs to one item per mapping.

No I/O and no clock here: the runner (``runner.py``) reads INFIMA and Autotask, passes
everything in, and carries out the items whose status is ``planned``.
"""

from __future__ import annotations

import collections.abc as cabc
import contextlib
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

from infima_autotask.billing import Rates, Schedule, same_rate, schedule, unit_rates
from infima_autotask.billing import money_change as billing_money_change
from infima_autotask.chain import (
    ChainRef,
    ChainVerdict,
    Successor,
    chain_text,
    check_chain,
    renewals_wanted,
)
from infima_autotask.config import AUTOTASK, ClientMapping, SyncSettings
from infima_autotask.errors import UsageError
from infima_autotask.model import Contract, ContractService, UnitsRow, choose_row
from infima_autotask.statuses import FAILED, HELD, PLANNED, SKIPPED, UNCHANGED, UPDATED
from infima_autotask.whole_number import WholeNumberError, parse_whole, strip_spaces

STATUSES = (UPDATED, UNCHANGED, PLANNED, SKIPPED, HELD, FAILED)

NO_COST_VISIBILITY = "the API user cannot see costs: grant cost visibility"

# [0-9], not \d: \d also matches other scripts' digits (٢٠٢٦), which int() then reads.
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")


def parse_month(text: str) -> date:
    """``YYYY-MM`` -> the first day of that month.

    Raises:
        UsageError: not a ``YYYY-MM`` month.
    """
    match = _MONTH.fullmatch(strip_spaces(text))
    with contextlib.suppress(WholeNumberError):
        if match:
            return date(parse_whole(match[1], low=1), parse_whole(match[2], low=1, high=12), 1)
    raise UsageError(f"expected a month like 2026-12 (YYYY-MM), got {text!r}.")


def local_date(now: datetime, zone: str | None) -> date:
    """The date ``now`` (timezone-aware) falls on in ``zone`` (the system's when None)."""
    return (now.astimezone(ZoneInfo(zone)) if zone else now.astimezone()).date()


def current_month(now: datetime, zone: str | None) -> date:
    """The first day of the month ``now`` falls in, in ``zone`` (the system's when None)."""
    return local_date(now, zone).replace(day=1)


def period_label(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def exact(value: float) -> Fraction:
    """A configured percentage as the decimal the operator wrote (57 stays 57, 93.6 is 936/10).

    Limits are compared in exact arithmetic: in floats 57 / 100 * 10000 is 5699.999..., which
    would count a value exactly at the limit as over it.
    """
    return Fraction(repr(value)) if isinstance(value, float) else Fraction(value)


def money(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def clamp_target(users: int, mapping: ClientMapping) -> int:
    """users - exclude_users, kept within min_units/max_units, never below 0."""
    target = users - mapping.exclude_users
    if mapping.min_units is not None:
        target = max(target, mapping.min_units)
    if mapping.max_units is not None:
        target = min(target, mapping.max_units)
    return max(target, 0)


@dataclass(frozen=True)
class UserCount:
    """A client's active users as INFIMA (or the counts file) gave them, or why not."""

    users: int | None
    error: str = ""
    name: str = ""


@dataclass(frozen=True)
class PlanItem:
    """One mapping's plan, and later its outcome (the runner replaces status and message).

    Money is per unit throughout (``billing.unit_rates``): ``unit_price``/``unit_cost`` are the
    line's current rates, ``new_unit_cost`` the cost to write (the current one, or the
    mapping's unit_cost when overwrite_cost applies). ``effective`` is E, the day the write is
    dated; ``day_before`` is the row covering E - 1 as planned (verification compares it).
    """

    client_id: int
    client_name: str
    contract_id: int
    contract_service_id: int
    service_id: int
    users: int | None
    target: int | None
    before: int | None
    after: int | None
    change: int | None
    unit_price: float | None
    unit_cost: float | None
    new_unit_cost: float | None
    status: str
    message: str = ""
    adjustment_id: int | None = None
    effective: date | None = None
    day_before: UnitsRow | None = None
    account_name: str = ""
    service_name: str = ""
    psa: str = AUTOTASK
    account_id: int = 0  # the PSA's account (set where a write names it: a Halo client)

    @property
    def cost_changes(self) -> bool:
        return not same_rate(self.unit_cost, self.new_unit_cost)

    @property
    def writes(self) -> bool:
        """Planned or written: the rates are those the write sends."""
        return self.status in (PLANNED, UPDATED)

    @property
    def rates(self) -> Rates:
        """The per-unit rates the line shows after this item (the written ones for a write)."""
        return Rates(self.unit_price, self.new_unit_cost if self.writes else self.unit_cost)

    @property
    def before_rates(self) -> Rates:
        return Rates(self.unit_price, self.unit_cost)

    @property
    def money_change(self) -> float | None:
        """change x unit price for a write; 0 for everything else; None for a write whose
        line carries no unit price (a Halo subscription: its price is on the invoice line)."""
        if not self.writes:
            return 0.0
        amount = billing_money_change(self.change, self.unit_price)
        return None if amount is None else float(amount)

    def as_json(self) -> dict[str, object]:
        """The item object of SPEC §8's ``--json`` document."""
        return {
            "client_id": self.client_id,
            "client_name": self.client_name,
            "psa": self.psa,
            "account_name": self.account_name or None,
            "contract_id": self.contract_id,
            "contract_service_id": self.contract_service_id,
            "service_name": self.service_name or None,
            "effective_date": self.effective.isoformat() if self.effective else None,
            "users": self.users,
            "target": self.target,
            "before": self.before,
            "after": self.after,
            "change": self.change,
            "unit_price": self.rates.price,
            "unit_cost": self.rates.cost,
            "money_change": self.money_change,
            "status": self.status,
            "message": self.message,
        }


def failed_item(mapping: ClientMapping, count: UserCount | None, message: str) -> PlanItem:
    """A mapping's item failed before anything was read of its line: no before, no target."""
    return PlanItem(
        client_id=mapping.client_id,
        client_name=(count.name if count is not None else "") or mapping.client_name or "",
        contract_id=mapping.contract_id,
        contract_service_id=mapping.contract_service_id,
        service_id=mapping.service_id,
        users=count.users if count is not None else None,
        target=None,
        before=None,
        after=None,
        change=None,
        unit_price=None,
        unit_cost=None,
        new_unit_cost=None,
        status=FAILED,
        message=message,
        account_name=mapping.account_name or "",
        service_name=mapping.service_name or "",
        psa=mapping.psa,
    )


def _remap(mapping: ClientMapping) -> str:
    return f"infima-autotask map {mapping.client_id} --account {mapping.account_id}"


def _service_of(mapping: ClientMapping, cs: ContractService | None) -> int:
    return cs.service_id if cs is not None else mapping.service_id


def chain_verdict(
    mapping: ClientMapping,
    contract: Contract | None,
    cs: ContractService | None,
    day: date,
    active_statuses: cabc.Collection[int],
    successors: cabc.Mapping[tuple[int, int], Successor] | None = None,
) -> ChainVerdict:
    """The chain rule as ``sync`` and ``doctor`` apply it for ``day``: they read no account, so
    the account is not checked; ``successors`` (looked up) name an ended contract's renewal."""
    verdict = check_chain(
        ChainRef.of(mapping),
        day=day,
        active_statuses=active_statuses,
        contract=contract,
        contract_service=cs,
    )
    return verdict if successors is None else verdict.sought(successors)


def ended_contracts(
    mappings: cabc.Iterable[ClientMapping],
    contracts: cabc.Mapping[int, Contract],
    contract_services: cabc.Mapping[int, ContractService],
    day: date,
    active_statuses: cabc.Collection[int],
) -> list[tuple[Contract, int]]:
    """The (ended contract, service id) pairs whose renewal the failure message should name."""
    return renewals_wanted(
        chain_verdict(
            mapping,
            contracts.get(mapping.contract_id),
            contract_services.get(mapping.contract_service_id),
            day,
            active_statuses,
        )
        for mapping in mappings
    )


def _percent(value: float) -> str:
    return f"{value:g}%"


def _share(part: int, whole: int) -> str:
    """``part`` of ``whole`` in percent, cut (not rounded) to two decimals: a drop of 22.5%
    over a 22% limit reads 22.5%, not 22% (the limit itself), and 1/3 over 33.3% reads 33.33%."""
    hundredths = part * 10_000 // whole
    return f"{float(Fraction(hundredths, 100)):g}%"


def units_guard(before: int, target: int, settings: SyncSettings, client_id: int) -> str | None:
    """The liftable hold (SPEC §8) of a units change, or None."""
    lift = f"if it is right, run `infima-autotask sync --client {client_id} --yes`"
    if target == 0 and before > 0 and not settings.allow_zero:
        return f"drop from {before} to 0 units (allow_zero is off); {lift}"
    # Exact arithmetic so "exactly the limit" is never held by rounding (93.6 * 1375 in floats
    # is 128699.99999999999, so a drop of exactly 93.6% was held).
    if target < before and (before - target) * 100 > exact(settings.max_decrease_percent) * before:
        return (
            f"drop of {_share(before - target, before)} ({before} -> {target}) is over "
            "max_decrease_percent "
            f"{_percent(settings.max_decrease_percent)}; {lift}"
        )
    rise_limit = settings.max_increase_percent
    if (
        rise_limit is not None
        and target > before
        and (target - before) * 100 > exact(rise_limit) * before
    ):
        rise = _share(target - before, before) if before else "from 0"
        return (
            f"rise {rise} ({before} -> {target}) is over max_increase_percent "
            f"{_percent(rise_limit)}; {lift}"
        )
    return None


def mapping_schedule(
    mapping: ClientMapping,
    contract: Contract | None,
    day: date,
    settings: SyncSettings,
    period_months: cabc.Mapping[int, int],
) -> Schedule:
    """When the mapping's write for the month starting ``day`` is dated (``billing.schedule``)."""
    months = None
    if contract is not None and contract.period_type is not None:
        months = period_months.get(contract.period_type)
    start = contract.start if contract is not None else None
    return schedule(start, months, day, prorate=mapping.effective_prorate(settings))


def override_guard(
    mapping: ClientMapping, users: int | None, target: int, settings: SyncSettings
) -> str | None:
    """The liftable hold of a target raised above INFIMA's count by min_units by more than
    max_increase_percent of that count (by more than the count itself when that is unset):
    a `--min-units 999999` typo must not bill 999,999 seats unseen."""
    if users is None or target <= users or mapping.min_units is None:
        return None
    excess = target - users
    limit = settings.max_increase_percent
    if limit is not None and excess * 100 <= exact(limit) * users:
        return None
    if limit is None and excess <= users:
        return None
    allowed = f"max_increase_percent {_percent(limit)}" if limit is not None else "the count"
    return (
        f"min_units {mapping.min_units} raises the target to {target}, {excess} above INFIMA's "
        f"{users} active users (more than {allowed}); if it is right, run "
        f"`infima-autotask sync --client {mapping.client_id} --yes`"
    )


def plan_one(
    mapping: ClientMapping,
    *,
    day: date,
    settings: SyncSettings,
    count: UserCount | None,
    contract: Contract | None,
    cs: ContractService | None,
    rows: cabc.Sequence[UnitsRow],
    active_statuses: cabc.Collection[int],
    period_months: cabc.Mapping[int, int],
    successors: cabc.Mapping[tuple[int, int], Successor],
    yes: bool = False,
) -> PlanItem:
    """Plan one mapping; see :func:`plan`."""
    users = count.users if count is not None else None
    target = clamp_target(users, mapping) if users is not None else None
    usable_cs = cs if cs is not None and cs.contract_id == mapping.contract_id else None
    when = mapping_schedule(mapping, contract, day, settings, period_months)
    effective = when.effective
    # A skipped item shows the row covering D; every other the row covering E.
    row = choose_row(rows, effective or day) if usable_cs is not None else None
    before = row.units if row is not None else None
    rates = unit_rates(row, usable_cs) if row is not None else Rates(None, None)
    overwrite = mapping.effective_overwrite_cost(settings)
    configured = mapping.effective_unit_cost(settings)
    new_cost = configured if overwrite and configured is not None else rates.cost
    change = target - before if target is not None and before is not None else None
    day_before = (
        choose_row(rows, effective - timedelta(days=1))
        if effective is not None and usable_cs is not None
        else None
    )

    def item(status: str, message: str = "") -> PlanItem:
        return PlanItem(
            client_id=mapping.client_id,
            client_name=(count.name if count is not None else "") or mapping.client_name or "",
            contract_id=mapping.contract_id,
            contract_service_id=mapping.contract_service_id,
            service_id=_service_of(mapping, cs),
            users=users,
            target=target,
            before=before,
            after=target if status == PLANNED else before,
            change=change if status != SKIPPED else None,
            unit_price=rates.price,
            unit_cost=rates.cost,
            new_unit_cost=new_cost,
            status=status,
            message=message,
            effective=effective if status != SKIPPED else None,
            day_before=day_before,
            account_name=mapping.account_name or "",
            service_name=mapping.service_name or "",
        )

    if count is None or count.users is None:
        return item(FAILED, (count.error if count is not None else "") or "no user count")
    verdict = chain_verdict(mapping, contract, cs, day, active_statuses, successors)
    if not verdict.ok or contract is None:
        return item(FAILED, chain_text(verdict))
    if effective is None:
        return item(*no_effective_date(mapping, contract, when))
    if contract.ended_before(effective) and contract.end is not None:
        return item(
            FAILED,
            f"contract {contract.id} ends {contract.end.isoformat()}, before its billing period "
            f"starts on {effective.isoformat()}; map the client to its renewal with "
            f"`{_remap(mapping)}`",
        )
    row_problem = units_row_problem(mapping.contract_service_id, rows, effective, when)
    if row_problem is not None or row is None:
        return item(FAILED, row_problem or "no units row")
    if rates.price is None or rates.cost is None:
        return item(FAILED, NO_COST_VISIBILITY)
    if target is None or before is None:  # unreachable: users and row were checked above
        return item(FAILED, "no user count")
    later = next((r for r in rows if r.start > effective and r.units != before), None)
    if later is not None and target != before:
        return item(
            FAILED,
            f"the billing period from {later.start.isoformat()} already shows {later.units} "
            f"units: Autotask adds a change dated {effective.isoformat()} to every later period "
            f"too, so it would show {later.units + (target - before)}; make this change in "
            "Autotask by hand",
        )
    planned = item(PLANNED)
    cost_note = (
        f"unit cost {money(rates.cost)} -> {money(new_cost)}" if planned.cost_changes else ""
    )
    if target == before and not cost_note:
        return item(UNCHANGED)
    if target == before == 0:
        # A line of 0 units has no cost to show: a write could never be verified and, since
        # it leaves the contract service's own unit cost as it is, would be sent every month.
        return item(UNCHANGED, f"{cost_note} not written: the line has 0 units")
    # Not lifted by --yes: a write would land in a billed period.
    if row.posted:
        return item(
            HELD,
            f"the billing period from {row.start.isoformat()} is already approved and posted; "
            "change it in Autotask by hand",
        )
    hold = units_guard(before, target, settings, mapping.client_id) or override_guard(
        mapping, users, target, settings
    )
    if hold is not None and not yes:
        return item(HELD, hold)
    notes = [cost_note] if cost_note else []
    if when.prorated:
        notes.append(
            f"prorated from {effective.isoformat()}: Autotask splits the period from "
            f"{row.start.isoformat()}"
        )
    if hold is not None:
        notes.append("guard lifted by --yes: " + hold.split(";")[0])
    return item(PLANNED, "; ".join(notes))


def units_row_problem(
    cs_id: int, rows: cabc.Sequence[UnitsRow], effective: date, when: Schedule
) -> str | None:
    """Why the rows cannot take a write dated E, or None when they can (sync fails the item;
    doctor fails its units row):

    - no row covers E, or (without prorate) the one covering E does not start on E, so a
      write would split a period into a proration;
    - a one-day change on E - 1 (a write that landed a day early) is still there;
    - a change after E that no billing period explains (a late landing, an edit by hand),
      which a write dated E would add to.
    """
    row = choose_row(rows, effective)
    if row is None:
        return (
            f"no units row of contract service {cs_id} covers {effective.isoformat()}; check "
            "the contract's dates and services in Autotask"
        )
    if not when.prorate and row.start != effective:
        return (
            f"Autotask shows no billing period of contract service {cs_id} starting on "
            f"{effective.isoformat()} (the row covering it starts {row.start.isoformat()}); "
            "check the contract's billing period in Autotask, or set `prorate: true` on the "
            "mapping to write on the 1st (Autotask then prorates)"
        )
    early = earlier_change(rows, effective, when)
    if early is not None:
        return (
            f"Autotask shows a one-day change of contract service {cs_id} on "
            f"{early.isoformat()}, the day before {effective.isoformat()} (a write that landed "
            "a day early, or one made by hand): reverse it by hand in Autotask, and set "
            "autotask.timezone to the tenant's time zone (`infima-autotask doctor` shows it)"
        )
    split = later_change(rows, effective, when)
    if split is not None:
        return (
            f"Autotask shows a change of contract service {cs_id} dated {split.isoformat()}, "
            f"after {effective.isoformat()} and not a billing period's start (a write that "
            "landed a day late, or one made by hand): a write now would add to it; correct it "
            "in Autotask, then run sync again"
        )
    return None


def earlier_change(rows: cabc.Sequence[UnitsRow], effective: date, when: Schedule) -> date | None:
    """E - 1 when a row starts there, no billing period does, and it bills another count than
    the row before it: the one-day charge a write dated a day early leaves (reversed, the
    counts agree again and the check is quiet)."""
    day = effective - timedelta(days=1)
    split = choose_row(rows, day)
    if split is None or split.start != day or when.starts_period(day) is not False:
        return None
    prior = choose_row([r for r in rows if r.id != split.id], day - timedelta(days=1))
    return day if prior is None or prior.units != split.units else None


def later_change(rows: cabc.Sequence[UnitsRow], effective: date, when: Schedule) -> date | None:
    """The start of a row after E that no billing period explains: a split by an adjustment
    dated after E (a late landing, or someone's edit), which a write dated E would add to."""
    splits = [
        row.start
        for row in rows
        if row.start > effective and when.starts_period(row.start) is False
    ]
    return min(splits, default=None)


def no_effective_date(
    mapping: ClientMapping, contract: Contract, when: Schedule
) -> tuple[str, str]:
    """Status and message of a mapping with no write date in the month."""
    if when.next_start is not None:
        return SKIPPED, (
            f"no billing period of contract service {mapping.contract_service_id} starts in "
            f"this month ({when.describe()}); the next starts {when.next_start.isoformat()}"
        )
    if contract.start is None:
        return FAILED, f"contract {contract.id} has no start date in Autotask; check it there"
    return FAILED, (
        f"contract {contract.id} has a billing period type ({contract.period_type}) this tool "
        "does not know; set `prorate: true` on the mapping to write on the 1st, or report it"
    )


def plan(
    mappings: cabc.Sequence[ClientMapping],
    *,
    day: date,
    settings: SyncSettings,
    counts: cabc.Mapping[int, UserCount],
    contracts: cabc.Mapping[int, Contract],
    contract_services: cabc.Mapping[int, ContractService],
    rows: cabc.Mapping[int, cabc.Sequence[UnitsRow]],
    active_statuses: cabc.Collection[int],
    period_months: cabc.Mapping[int, int],
    successors: cabc.Mapping[tuple[int, int], Successor] | None = None,
    yes: bool = False,
) -> list[PlanItem]:
    """One item per mapping, in mapping order: planned/unchanged/skipped/held/failed.

    ``day`` is the period's first day (D); ``rows`` are each contract service's units rows
    overlapping D - 1 through the month's last day; ``period_months`` maps
    ``contractPeriodType`` values to months per period (``billing.period_labels``);
    ``successors`` (from ``find_successors``) name renewals of ended contracts; ``yes`` lifts
    the liftable holds.
    """
    return [
        plan_one(
            mapping,
            day=day,
            settings=settings,
            count=counts.get(mapping.client_id),
            contract=contracts.get(mapping.contract_id),
            cs=contract_services.get(mapping.contract_service_id),
            rows=rows.get(mapping.contract_service_id, ()),
            active_statuses=active_statuses,
            period_months=period_months,
            successors=successors or {},
            yes=yes,
        )
        for mapping in mappings
    ]


def summary(items: cabc.Iterable[PlanItem]) -> dict[str, int]:
    """Items per status, every status present."""
    counts = dict.fromkeys(STATUSES, 0)
    for entry in items:
        counts[entry.status] = counts.get(entry.status, 0) + 1
    return counts


def summary_line(
    period: str,
    counts: cabc.Mapping[str, int],
    *,
    dry_run: bool,
    relation: str = "",
    reverts: int | None = None,
) -> str:
    """``Period 2026-12: 12 updated, 30 unchanged, 2 skipped, 1 held, 0 failed``; an explicit
    past or future month says so (``Period 2026-11 (a past month): ...``), and a revert names
    the run it undoes (``Revert of run 7, period 2026-12: ...``)."""
    named = f" (a {relation} month)" if relation else ""
    head = (
        f"Period {period}{named}"
        if reverts is None
        else f"Revert of run {reverts}, period {period}"
    )
    text = f"{head}: {summary_text(counts, dry_run=dry_run)}"
    return text + (" (dry run: nothing written)" if dry_run else "")


def summary_text(counts: cabc.Mapping[str, int], *, dry_run: bool = False) -> str:
    """``12 updated, 30 unchanged, 2 skipped, 1 held, 0 failed`` (``planned`` for a dry run)."""
    first = PLANNED if dry_run else UPDATED
    return (
        f"{counts.get(first, 0)} {first}, {counts.get(UNCHANGED, 0)} unchanged, "
        f"{counts.get(SKIPPED, 0)} skipped, {counts.get(HELD, 0)} held, "
        f"{counts.get(FAILED, 0)} failed"
    )
