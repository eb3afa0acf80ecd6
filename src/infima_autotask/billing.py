"""How Autotask bills a contract service (SPEC §8): per-unit rates, billing periods, the
effective date of a write and the form that date travels in.

Every rule here was learned from live tenants, not from the documents (AUTOTASK_API.md):
a units row's ``price`` and ``cost`` are extended amounts, periods start on the contract's
own start day, and a date-only value may be converted to the tenant's zone before it is
truncated. Each rule is written once, here; planning, verification, ``map``, ``doctor`` and
the output all ask this module.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from infima_autotask.model import ContractService, UnitsRow

RATE_DECIMALS = 4
CENT = 0.01
# Labels of Contracts.contractPeriodType as tenants name them, in lower case without spaces,
# hyphens or underscores; the numeric values differ between tenants, so only labels are read.
_PERIOD_MONTHS = {
    "monthly": 1,
    "month": 1,
    "quarterly": 3,
    "quarter": 3,
    "semiannual": 6,
    "semiannually": 6,
    "halfyearly": 6,
    "biannual": 6,
    "yearly": 12,
    "annual": 12,
    "annually": 12,
    "year": 12,
}
_PERIOD_NAMES = {1: "monthly", 3: "quarterly", 6: "semi-annual", 12: "yearly"}


# --- rates ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rates:
    """Per-unit price and cost of a contract service's line; ``None`` when not visible."""

    price: float | None
    cost: float | None


def unit_rates(row: UnitsRow | None, cs: ContractService | None) -> Rates:
    """The line's current per-unit rates (SPEC §8 "Rates").

    A units row carries extended amounts (units x rate), so the rate is ``price / units``
    (4 decimals). At 0 units the row says nothing about the rate: the contract service's own
    ``unitPrice``/``unitCost`` are used.
    """
    if row is not None and row.units > 0:
        return Rates(
            _per_unit(row.price, row.units, cs.unit_price if cs else None),
            _per_unit(row.cost, row.units, cs.unit_cost if cs else None),
        )
    if cs is None:
        return Rates(None, None)
    return Rates(cs.unit_price, cs.unit_cost)


def _per_unit(amount: float | None, units: int, listed: float | None) -> float | None:
    """``amount / units``; the contract service's own rate when the row shows exactly it.

    A row rounded to the cent loses the rate's last digits (3 x 0.995 shows 2.98, read back as
    0.9933); the contract service keeps them, so it wins whenever it explains the row.
    """
    if amount is None:
        return None
    if listed is not None and abs(units * listed - amount) <= CENT / 2 + 1e-9:
        return listed
    return round(amount / units, RATE_DECIMALS)


def extended(units: int, rate: float | None) -> float | None:
    """The amount a row of ``units`` at ``rate`` shows (what Autotask stores)."""
    return None if rate is None else units * rate


def same_rate(a: float | None, b: float | None) -> bool:
    """Two per-unit rates equal to within half a cent (what a units row can tell apart)."""
    if a is None or b is None:
        return a is b
    return abs(a - b) <= CENT / 2 + 1e-9


def within_cent(amount: float | None, expected: float | None) -> bool:
    """An extended amount equal to the expected one within a cent."""
    if amount is None or expected is None:
        return amount is expected
    return abs(amount - expected) <= CENT + 1e-9


def shows(row: UnitsRow | None, units: int | None, rates: Rates) -> bool:
    """The row shows ``units`` at these per-unit rates (amounts within a cent)."""
    return (
        row is not None
        and units is not None
        and row.units == units
        and within_cent(row.price, extended(units, rates.price))
        and within_cent(row.cost, extended(units, rates.cost))
    )


# --- billing periods -----------------------------------------------------------------------


def period_months(label: str | None) -> int | None:
    """Months per billing period of a ``contractPeriodType`` label; ``None`` if unknown."""
    if not label:
        return None
    key = "".join(ch for ch in label.lower() if ch.isalpha())
    return _PERIOD_MONTHS.get(key)


def add_months(start: date, months: int) -> date:
    """``start`` plus ``months``, the day clamped to the month's last day (31 Jan + 1: 28 Feb)."""
    years, month0 = divmod(start.month - 1 + months, 12)
    year, month = start.year + years, month0 + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def next_month(day: date) -> date:
    """The first day of the month after ``day``'s."""
    return add_months(day.replace(day=1), 1)


def period_start_on_or_after(contract_start: date, months: int, day: date) -> date:
    """The first period start on or after ``day``; period k starts ``contract_start + k*months``.

    Always counted from the contract's start, so a 31st start never drifts to the 28th.
    """
    if day <= contract_start:
        return contract_start
    elapsed = (day.year - contract_start.year) * 12 + day.month - contract_start.month
    k = max(elapsed // months - 1, 0)
    while add_months(contract_start, k * months) < day:
        k += 1
    return add_months(contract_start, k * months)


def period_start_on_or_before(contract_start: date, months: int, day: date) -> date | None:
    """The start of the period covering ``day``; None before the contract starts."""
    if day < contract_start:
        return None
    following = period_start_on_or_after(contract_start, months, day)
    if following == day:
        return day
    # Counted from the contract's start, like every period start, so the day never drifts.
    k = (following.year - contract_start.year) * 12 + following.month - contract_start.month
    return add_months(contract_start, (k // months - 1) * months)


@dataclass(frozen=True)
class Schedule:
    """When one mapping's write for a month is dated (SPEC §8 "Billing periods").

    ``effective`` is E, or ``None`` when no period starts in the month (``next_start`` then
    says when one does). ``prorated`` means E is the 1st inside a period (``prorate: true``).
    """

    months: int | None
    contract_start: date | None
    effective: date | None
    next_start: date | None
    prorate: bool

    @property
    def prorated(self) -> bool:
        return (
            self.prorate
            and self.effective is not None
            and self.months is not None
            and self.contract_start is not None
            and period_start_on_or_after(self.contract_start, self.months, self.effective)
            != self.effective
        )

    @property
    def name(self) -> str:
        """``monthly``, ``quarterly``, ``semi-annual``, ``yearly``."""
        if self.months is None:
            return "unknown"
        return _PERIOD_NAMES.get(self.months, f"every {self.months} months")

    def starts_period(self, day: date) -> bool | None:
        """Whether a billing period starts on ``day``; None when the period is unknown."""
        if self.contract_start is None or self.months is None:
            return None
        return period_start_on_or_after(self.contract_start, self.months, day) == day

    def covering_start(self, day: date) -> date | None:
        """The start of the billing period covering ``day``; None when unknown."""
        if self.contract_start is None or self.months is None:
            return None
        return period_start_on_or_before(self.contract_start, self.months, day)

    def describe(self) -> str:
        """``monthly from the 17th``, ``quarterly from 2026-11-17``, ``unknown period``."""
        if self.months is None or self.contract_start is None:
            return "billing period unknown"
        if self.months == 1:
            return f"{self.name} from the {ordinal(self.contract_start.day)}"
        return f"{self.name} from {self.contract_start.isoformat()}"


def schedule(
    contract_start: date | None, months: int | None, first: date, *, prorate: bool
) -> Schedule:
    """E for the month starting ``first`` (D): the 1st with ``prorate``, else the first period
    start on or after D within the month."""
    if prorate and contract_start is not None and contract_start > first:
        # Nothing to prorate before the contract starts: its start is E, or next month's.
        if contract_start < next_month(first):
            return Schedule(months, contract_start, contract_start, None, prorate=True)
        return Schedule(months, contract_start, None, contract_start, prorate=True)
    if prorate:
        return Schedule(months, contract_start, first, None, prorate=True)
    if contract_start is None or months is None:
        return Schedule(months, contract_start, None, None, prorate=False)
    start = period_start_on_or_after(contract_start, months, first)
    if start < next_month(first):
        return Schedule(months, contract_start, start, None, prorate=False)
    return Schedule(months, contract_start, None, start, prorate=False)


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def period_labels(picklist: Mapping[int, str]) -> dict[int, int]:
    """``contractPeriodType`` value -> months per period, for the labels this module knows."""
    found: dict[int, int] = {}
    for value, label in picklist.items():
        months = period_months(label)
        if months is not None:
            found[value] = months
    return found


# --- the tenant's zone ---------------------------------------------------------------------

# Windows zone names (what an InternalLocations record may hold) of the zones MSPs bill from.
_WINDOWS_ZONES = {
    "utc": "UTC",
    "gmt standard time": "Europe/London",
    "greenwich standard time": "Atlantic/Reykjavik",
    "w. europe standard time": "Europe/Berlin",
    "romance standard time": "Europe/Paris",
    "central europe standard time": "Europe/Budapest",
    "central european standard time": "Europe/Warsaw",
    "e. europe standard time": "Europe/Chisinau",
    "fle standard time": "Europe/Kiev",
    "south africa standard time": "Africa/Johannesburg",
    "eastern standard time": "America/New_York",
    "central standard time": "America/Chicago",
    "mountain standard time": "America/Denver",
    "us mountain standard time": "America/Phoenix",
    "pacific standard time": "America/Los_Angeles",
    "alaskan standard time": "America/Anchorage",
    "hawaiian standard time": "Pacific/Honolulu",
    "atlantic standard time": "America/Halifax",
    "newfoundland standard time": "America/St_Johns",
    "canada central standard time": "America/Regina",
    "india standard time": "Asia/Kolkata",
    "singapore standard time": "Asia/Singapore",
    "tokyo standard time": "Asia/Tokyo",
    "aus eastern standard time": "Australia/Sydney",
    "e. australia standard time": "Australia/Brisbane",
    "cen. australia standard time": "Australia/Adelaide",
    "w. australia standard time": "Australia/Perth",
    "new zealand standard time": "Pacific/Auckland",
}


def iana_zone(text: str | None) -> str | None:
    """An IANA zone name for a tenant's ``timeZone`` text (IANA or a Windows name), or None."""
    if not text:
        return None
    name = text.strip()
    windows = _WINDOWS_ZONES.get(name.lower())
    if windows is not None:
        return windows
    try:
        ZoneInfo(name)
    except (ValueError, OSError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        return None
    return name


def same_offsets(a: str, b: str, start: date) -> bool:
    """Two zones that date writes alike: the same UTC offset at noon (the moment
    :func:`wire_effective_date` reads it) on every day of the year from ``start``."""
    if a == b:
        return True
    za, zb = ZoneInfo(a), ZoneInfo(b)
    for n in range(366):
        day = start + timedelta(days=n)
        if (
            datetime.combine(day, time(12), tzinfo=za).utcoffset()
            != datetime.combine(day, time(12), tzinfo=zb).utcoffset()
        ):
            return False
    return True


# --- the date sent -------------------------------------------------------------------------


def wire_effective_date(day: date, zone: str | None) -> str:
    """``effectiveDate`` for a write dated ``day`` in a tenant whose zone is ``zone``.

    Noon UTC moved back by half the zone's UTC offset on that day (SPEC §8): its UTC date and
    its date in the zone are both ``day`` for every offset from UTC-12 to UTC+14, so it lands
    on ``day`` whether Autotask keeps the UTC date or converts to its own zone first.
    """
    noon = datetime.combine(day, time(12), tzinfo=timezone.utc)
    if zone:
        offset = datetime.combine(day, time(12), tzinfo=ZoneInfo(zone)).utcoffset()
        noon -= (offset or timedelta(0)) / 2
    return noon.strftime("%Y-%m-%dT%H:%M:%SZ")


_CENT = Decimal("0.01")


def money_change(change: int | None, unit_price: Decimal | float | None) -> Decimal | None:
    """``change`` units at ``unit_price``, to the cent (half up: 3 x 0.995 is 2.99, where float
    rounding gives 2.98); 0.00 when nothing changed, None when either is unknown."""
    if change == 0:
        return Decimal("0.00")
    if change is None or unit_price is None:
        return None
    # repr: the shortest text of a float (4.5, 0.995), not its binary expansion.
    price = unit_price if isinstance(unit_price, Decimal) else Decimal(repr(unit_price))
    return (change * price).quantize(_CENT, rounding=ROUND_HALF_UP)
