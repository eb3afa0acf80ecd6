"""Where a write landed: the one rule that judges a units row read back (SPEC §8).

Verification, the first write's read-back, the re-read after an unknown outcome and the
intents a killed run left open all ask the same question of the rows Autotask shows: did the
change of ``before`` -> ``target`` dated E land on E, a day early, a day late, not at all, or is
something else there? :func:`landing` answers it once, as a :class:`Landing`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import date, timedelta

from infima_autotask.billing import Rates, extended, shows, within_cent
from infima_autotask.model import UnitsRow, choose_row
from infima_autotask.sync import PlanItem, money


class Landing(enum.Enum):
    """Where a write shows in the rows read back."""

    LANDED = "landed"  # the row covering E shows the target at the written rates
    EARLY = "early"  # the row covering E - 1 changed: Autotask dated it a day early
    LATE = "late"  # E still shows before; a row from E + 1 shows the target
    BEFORE = "before"  # nothing of the write is there
    OTHER = "other"  # anything else (someone else's change, a missing row)


_UNSEEN = UnitsRow(0, 0, 0, None, date.min, date.min, 0, None, None, posted=False)


def landing(
    rows: Sequence[UnitsRow],
    effective: date,
    *,
    before: int | None,
    target: int | None,
    rates: Rates,
    before_rates: Rates | None = None,
    day_before: UnitsRow | None = _UNSEEN,
) -> Landing:
    """Where a write of ``before`` -> ``target`` dated E shows in the rows read back.

    ``early``: the row covering E - 1 is not the one planning saw (``day_before``) or, when
    that is not known (an interrupted run's intent), a row starts on E - 1, a day this tool
    never dates a write. ``landed``: the row covering E shows the target at the written rates.
    ``late``: it still shows ``before`` and a row starting E + 1 shows the target. ``before``:
    nothing of the write is there (at ``before_rates`` when given). ``other``: anything else.
    """
    day = timedelta(days=1)
    early = choose_row(rows, effective - day)
    if day_before is _UNSEEN:
        moved = early is not None and early.start == effective - day
    else:
        moved = not _unchanged(early, day_before, effective)
    if moved:
        return Landing.EARLY
    row = choose_row(rows, effective)
    if shows(row, target, rates):
        return Landing.LANDED
    if row is None or row.units != before:
        return Landing.OTHER
    if any(r.start == effective + day and shows(r, target, rates) for r in rows):
        return Landing.LATE
    if before_rates is None or shows(row, before, before_rates):
        return Landing.BEFORE
    return Landing.OTHER


def landing_problem(item: PlanItem, rows: Sequence[UnitsRow]) -> str | None:
    """Why the rows read back do not show the item's write landed on E, or None when it did.

    Landed means: the row covering E shows the target at the written rates, and the row
    covering E - 1 is the one planning saw (its end may shorten to E - 1 or E when a
    prorated write splits it). A change on E - 1 or E + 1 is named with the one-day charge
    it left and the fix.
    """
    state = item_landing(item, rows)
    return None if state == Landing.LANDED else landing_message(state, rows, item)


def item_landing(item: PlanItem, rows: Sequence[UnitsRow]) -> Landing:
    """:func:`landing` of a planned write (``other`` when it has no E or target)."""
    if item.effective is None or item.target is None:
        return Landing.OTHER
    return landing(
        rows,
        item.effective,
        before=item.before,
        target=item.target,
        rates=item.rates,
        before_rates=item.before_rates,
        day_before=item.day_before,
    )


def landing_message(state: Landing, rows: Sequence[UnitsRow], item: PlanItem) -> str:
    effective = item.effective
    if effective is None:
        return "nothing to verify: no effective date"
    shown = describe_row(choose_row(rows, effective), effective)
    moved = moved_message(state, rows, effective, item.before)
    return moved or f"{shown}, expected {_expected(item)}"


def moved_message(
    state: Landing, rows: Sequence[UnitsRow], effective: date | None, before: int | None
) -> str:
    """The message of a write Autotask dated a day early or late ("" for other states)."""
    if effective is None or state not in (Landing.EARLY, Landing.LATE):
        return ""
    day = timedelta(days=1)
    fix = "then set autotask.timezone to the tenant's time zone (`infima-autotask doctor` shows it)"
    if state == Landing.EARLY:
        early = choose_row(rows, effective - day)
        return (
            f"Autotask dated the change {(effective - day).isoformat()}, a day before "
            f"{effective.isoformat()}: the one-day charge on {(effective - day).isoformat()} "
            f"({describe_row(early)}) must be reversed by hand in Autotask; {fix}"
        )
    return (
        f"Autotask dated the change {(effective + day).isoformat()}, a day after "
        f"{effective.isoformat()}: {effective.isoformat()} is still billed at {before} "
        f"units, a one-day charge to correct by hand in Autotask; {fix}"
    )


def _unchanged(now: UnitsRow | None, planned: UnitsRow | None, effective: date) -> bool:
    """The row covering E - 1 is the one planning saw (its end may move back to E - 1 or E)."""
    if now is None or planned is None:
        return now is None and planned is None
    return (
        now.id == planned.id
        and now.start == planned.start
        and now.units == planned.units
        and effective - timedelta(days=1) <= now.end <= max(planned.end, effective)
        and within_cent(now.price, planned.price)
        and within_cent(now.cost, planned.cost)
    )


def describe_row(row: UnitsRow | None, day: date | None = None) -> str:
    if row is None:
        covering = f" covering {day.isoformat()}" if day else ""
        return f"Autotask shows no units row{covering}"
    return (
        f"Autotask shows {row.units} units at {money(row.price)}/{money(row.cost)} "
        f"from {row.start.isoformat()}"
    )


def _expected(item: PlanItem) -> str:
    target = item.target or 0
    rates = item.rates
    return (
        f"{item.target} at {money(extended(target, rates.price))}/"
        f"{money(extended(target, rates.cost))}"
    )
