"""billing.py: per-unit rates, billing periods and E, the date sent, the tenant's zone."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infima_autotask.billing import (
    add_months,
    iana_zone,
    period_months,
    period_start_on_or_after,
    period_start_on_or_before,
    schedule,
    shows,
    unit_rates,
    wire_effective_date,
)
from infima_autotask.model import ContractService, UnitsRow

D = date(2026, 12, 1)
CS = ContractService(id=5, contract_id=4, service_id=3, unit_price=23.1, unit_cost=10.0)


def row(units: int, price: float | None, cost: float | None) -> UnitsRow:
    return UnitsRow(1, 4, 5, 3, D, date(2026, 12, 31), units, price, cost, posted=False)


# -- rates ----------------------------------------------------------------------------------


def test_rates_of_a_row_are_its_amounts_divided_by_its_units():
    rates = unit_rates(row(11, 254.10, 110.0), CS)
    assert (rates.price, rates.cost) == (23.1, 10.0)


def test_rates_at_zero_units_are_the_contract_services():
    assert unit_rates(row(0, 0.0, 0.0), CS) == unit_rates(None, CS)
    assert (unit_rates(row(0, 0.0, 0.0), CS).price, unit_rates(None, CS).cost) == (23.1, 10.0)


def test_an_invisible_cost_stays_unknown():
    assert unit_rates(row(4, 18.0, None), CS).cost is None
    assert unit_rates(row(0, 0.0, None), ContractService(5, 4, 3, 4.5, None)).cost is None


def test_shows_compares_extended_amounts_within_a_cent():
    rates = unit_rates(row(11, 254.10, 110.0), CS)
    assert shows(row(12, 277.20, 120.0), 12, rates)
    assert shows(row(12, 277.21, 120.0), 12, rates)
    assert not shows(row(12, 277.22, 120.0), 12, rates)
    assert not shows(row(12, 23.10, 10.0), 12, rates)  # a per-unit figure is not a line total
    assert not shows(row(11, 254.10, 110.0), 12, rates)


def _cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@given(
    rate=st.integers(min_value=0, max_value=99_999_999).map(lambda n: Decimal(n) / 10_000),
    units=st.integers(min_value=1, max_value=100_000),
    rounded=st.booleans(),
)
def test_a_recovered_rate_moves_the_unit_price_by_at_most_half_a_cent(rate, units, rounded):
    """Any 4-decimal rate, any units, a row stored to the cent or exactly: the rate read back
    and written again differs from the line's by no more than the rounding of one cent."""
    amount = units * rate
    stored = _cents(amount) if rounded else amount
    unlisted = ContractService(id=5, contract_id=4, service_id=3)
    recovered = unit_rates(row(units, float(stored), float(stored)), unlisted)
    assert recovered.price is not None
    assert abs(Decimal(repr(recovered.price)) - rate) <= Decimal("0.005")
    if not rounded or units > 100:
        # Exact rows, and rows of more than 100 units even at cents, give the rate back exactly.
        assert Decimal(repr(recovered.price)) == rate
    # With the contract service at the line's rate, the rate comes back exactly, always.
    listed = ContractService(5, 4, 3, unit_price=float(rate), unit_cost=float(rate))
    assert unit_rates(row(units, float(stored), float(stored)), listed).price == float(rate)


STARTS = st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 12, 31))
MONTHS = st.sampled_from([1, 3, 6, 12])
DAYS = st.dates(min_value=date(2000, 1, 1), max_value=date(2041, 12, 31))


def starts_of(start: date, months: int) -> list[date]:
    """Every period start of a contract, counted from its start, for 45 years."""
    return [add_months(start, k * months) for k in range(0, 12 * 45 // months)]


# -- billing periods ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "months"),
    [
        ("Monthly", 1),
        ("Quarterly", 3),
        ("Semi-Annual", 6),
        ("semi annual", 6),
        ("Yearly", 12),
        ("Annually", 12),
        ("Weekly", None),
        ("", None),
        (None, None),
    ],
)
def test_period_labels(label, months):
    assert period_months(label) == months


def test_adding_months_clamps_without_drifting():
    start = date(2026, 1, 31)
    assert [add_months(start, k) for k in range(4)] == [
        date(2026, 1, 31),
        date(2026, 2, 28),
        date(2026, 3, 31),
        date(2026, 4, 30),
    ]
    assert add_months(date(2027, 11, 29), 3) == date(2028, 2, 29)


@pytest.mark.parametrize(
    ("start", "months", "first", "effective", "next_start"),
    [
        (date(2026, 1, 1), 1, D, D, None),  # monthly from the 1st: E = D
        (date(2025, 10, 17), 1, D, date(2026, 12, 17), None),  # from the 17th
        (date(2025, 1, 31), 1, date(2027, 2, 1), date(2027, 2, 28), None),  # 31st in February
        (date(2025, 1, 31), 1, date(2027, 3, 1), date(2027, 3, 31), None),  # ...then the 31st
        (date(2026, 2, 1), 3, D, None, date(2027, 2, 1)),  # quarterly: not this month
        (date(2026, 3, 1), 3, D, D, None),  # quarterly: Dec is a period start
        (date(2025, 11, 1), 12, D, None, date(2026, 11, 1) + timedelta(days=365)),
        (date(2024, 12, 15), 12, D, date(2026, 12, 15), None),  # yearly from 15 December
        (date(2027, 1, 10), 1, D, None, date(2027, 1, 10)),  # starts next month
        (date(2026, 12, 10), 1, D, date(2026, 12, 10), None),  # starts this month
    ],
)
def test_effective_date(start, months, first, effective, next_start):
    when = schedule(start, months, first, prorate=False)
    assert (when.effective, when.next_start) == (effective, next_start)


def test_prorate_writes_on_the_first_and_says_when_it_splits():
    when = schedule(date(2025, 10, 17), 1, D, prorate=True)
    assert (when.effective, when.prorated) == (D, True)
    assert not schedule(date(2026, 1, 1), 1, D, prorate=True).prorated


def test_prorate_never_dates_a_write_before_the_contract_starts():
    """A contract starting on the 15th is written on the 15th; next year's is skipped."""
    mid = schedule(date(2026, 12, 15), 1, D, prorate=True)
    assert (mid.effective, mid.next_start, mid.prorated) == (date(2026, 12, 15), None, False)
    later = schedule(date(2027, 3, 1), 3, D, prorate=True)
    assert (later.effective, later.next_start) == (None, date(2027, 3, 1))


def test_a_rounded_row_keeps_the_contract_services_exact_rate():
    """3 x 0.995 shows 2.98; read back alone that is 0.9933, a new price on the next write."""
    cs = ContractService(id=5, contract_id=4, service_id=3, unit_price=0.995, unit_cost=0.4)
    assert unit_rates(row(3, 2.98, 1.2), cs) == unit_rates(None, cs)
    assert unit_rates(row(3, 2.98, 1.2), CS).price == 0.9933  # the list rate does not explain it
    assert unit_rates(row(3, 3.30, 1.2), cs).price == 1.1  # a line priced apart keeps its own


def test_unknown_period_or_start_has_no_date():
    assert schedule(None, 1, D, prorate=False).effective is None
    assert schedule(date(2026, 1, 1), None, D, prorate=False).effective is None


@given(start=STARTS, months=MONTHS, day=DAYS)
def test_period_start_on_or_after_is_the_first_such_start(start, months, day):
    found = period_start_on_or_after(start, months, day)
    assert found == next(s for s in starts_of(start, months) if s >= day)


@pytest.mark.parametrize(
    ("start", "text"),
    [
        (date(2026, 1, 1), "monthly from the 1st"),
        (date(2026, 1, 17), "monthly from the 17th"),
        (date(2026, 1, 22), "monthly from the 22nd"),
        (date(2026, 1, 11), "monthly from the 11th"),
    ],
)
def test_describe(start, text):
    assert schedule(start, 1, D, prorate=False).describe() == text
    assert schedule(start, 3, D, prorate=False).describe() == f"quarterly from {start}"


def landing_dates(sent: str, zone: str) -> tuple[date, date]:
    """The UTC date and the date in ``zone`` of a value ``wire_effective_date`` made: the two
    readings of a date-only value (AUTOTASK_API.md §8)."""
    when = datetime.strptime(sent, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return when.date(), when.astimezone(ZoneInfo(zone)).date()


# -- the date sent ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "sent"),
    [
        (None, "2026-12-01T12:00:00Z"),
        ("America/New_York", "2026-12-01T14:30:00Z"),
        ("Europe/London", "2026-12-01T12:00:00Z"),
        ("Australia/Sydney", "2026-12-01T06:30:00Z"),
        ("Pacific/Auckland", "2026-12-01T05:30:00Z"),
        ("Asia/Kathmandu", "2026-12-01T09:07:30Z"),
    ],
)
def test_wire_date(zone, sent):
    assert wire_effective_date(D, zone) == sent


@pytest.mark.parametrize("zone", sorted(available_timezones()))
def test_the_date_sent_lands_on_e_in_every_zone_under_both_readings(zone):
    """UTC date and the tenant-zone date are both E, on a winter and a summer day."""
    for day in (date(2026, 1, 1), date(2026, 7, 1), date(2026, 3, 29), date(2026, 10, 25)):
        offset = datetime.combine(day, datetime.min.time(), ZoneInfo(zone)).utcoffset()
        if offset is None or abs(offset) > timedelta(hours=14):  # outside UTC-12..UTC+14
            continue
        assert landing_dates(wire_effective_date(day, zone), zone) == (day, day), zone


def test_with_no_zone_the_date_holds_within_eleven_hours_of_utc():
    sent = wire_effective_date(D, None)
    assert landing_dates(sent, "Pacific/Honolulu") == (D, D)  # UTC-10
    assert landing_dates(sent, "Asia/Magadan") == (D, D)  # UTC+11
    assert landing_dates(sent, "Pacific/Auckland")[1] == D + timedelta(days=1)  # UTC+13: no


def test_the_old_midnight_date_lands_a_day_early_west_of_utc():
    """Why 0.1's ``YYYY-MM-01T00:00:00`` billed the previous month's last day in New York."""
    midnight = datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert midnight.astimezone(ZoneInfo("America/New_York")).date() == date(2026, 11, 30)


# -- the tenant's zone -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "zone"),
    [
        ("America/New_York", "America/New_York"),
        ("Eastern Standard Time", "America/New_York"),
        ("  AUS Eastern Standard Time ", "Australia/Sydney"),
        ("GMT Standard Time", "Europe/London"),
        ("(GMT-05:00) Eastern Time (US & Canada)", None),
        ("../../etc/passwd", None),
        ("", None),
        (None, None),
    ],
)
def test_iana_zone(text, zone):
    assert iana_zone(text) == zone


@given(start=STARTS, months=MONTHS, day=DAYS)
def test_the_period_covering_a_day_is_the_last_start_on_or_before_it(start, months, day):
    found = period_start_on_or_before(start, months, day)
    earlier = [s for s in starts_of(start, months) if s <= day]
    assert found == (earlier[-1] if earlier else None)


def test_money_change_rounds_half_up_to_the_cent_everywhere():
    """One rule for sync's --json, its table and the report: 3 x 0.995 is 2.99 (float
    rounding of 2.985 gave 2.98 in sync while the report said 2.99)."""
    from decimal import Decimal

    from infima_autotask.billing import money_change
    from infima_autotask.statuses import PLANNED
    from infima_autotask.sync import PlanItem

    assert money_change(3, 0.995) == Decimal("2.99")
    assert money_change(-3, 0.995) == Decimal("-2.99")
    assert money_change(0, None) == Decimal("0.00")
    assert money_change(None, 4.5) is None and money_change(2, None) is None
    item = PlanItem(
        client_id=1,
        client_name="A",
        contract_id=1,
        contract_service_id=1,
        service_id=1,
        users=13,
        target=13,
        before=10,
        after=13,
        change=3,
        unit_price=0.995,
        unit_cost=0.5,
        new_unit_cost=0.5,
        status=PLANNED,
    )
    assert item.money_change == 2.99
