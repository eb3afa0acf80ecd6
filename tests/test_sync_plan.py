"""The pure planner of SPEC §8: every clamp, guard, cost rule, row choice and broken chain."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timezone

import pytest

from infima_autotask.chain import Successor
from infima_autotask.config import ClientMapping, SyncSettings
from infima_autotask.errors import UsageError
from infima_autotask.model import Contract, ContractService, UnitsRow
from infima_autotask.sync import (
    NO_COST_VISIBILITY,
    PlanItem,
    UserCount,
    clamp_target,
    current_month,
    ended_contracts,
    parse_month,
    plan,
    summary,
    summary_line,
)

D = date(2026, 12, 1)
ACTIVE = {1}
DEFAULTS = SyncSettings()
MAPPING = ClientMapping(
    client_id=101,
    account_id=29683501,
    contract_id=29684001,
    contract_service_id=29685100,
    service_id=30012,
    client_name="Acme Dental (config)",
)
CONTRACT = Contract(
    id=29684001,
    account_id=29683501,
    name="Managed Services 2026",
    contract_type=7,
    status=1,
    start=date(2026, 1, 1),
    end=date(2027, 12, 31),
    period_type=3,
)
MONTHS = {3: 1, 4: 3, 6: 12}  # contractPeriodType value -> months per period
CS = ContractService(
    id=29685100, contract_id=29684001, service_id=30012, unit_price=4.5, unit_cost=2.25
)


def row(units=10, *, start=D, end=date(2026, 12, 31), price=4.5, cost=2.25, posted=False, id=1):
    """A units row at these PER-UNIT rates: it holds the extended amounts, as Autotask does."""
    return UnitsRow(
        id=id,
        contract_id=CONTRACT.id,
        contract_service_id=CS.id,
        service_id=CS.service_id,
        start=start,
        end=end,
        units=units,
        price=None if price is None else round(units * price, 2),
        cost=None if cost is None else round(units * cost, 2),
        posted=posted,
    )


def plan_for(
    users=10,
    *,
    rows=None,
    mapping=MAPPING,
    settings=DEFAULTS,
    contract=CONTRACT,
    cs=CS,
    count=None,
    successors=None,
    yes=False,
) -> PlanItem:
    counts = {mapping.client_id: count or UserCount(users, name="Acme Dental")}
    items = plan(
        [mapping],
        day=D,
        settings=settings,
        counts=counts,
        contracts={contract.id: contract} if contract else {},
        contract_services={cs.id: cs} if cs else {},
        rows={CS.id: [row()] if rows is None else rows},
        active_statuses=ACTIVE,
        period_months=MONTHS,
        successors=successors,
        yes=yes,
    )
    assert len(items) == 1
    return items[0]


# -- target: users - exclude_users, min/max, never below 0 --------------------------------


@pytest.mark.parametrize(
    ("users", "overrides", "target"),
    [
        (10, {}, 10),
        (10, {"exclude_users": 2}, 8),
        (1, {"exclude_users": 3}, 0),  # never below 0
        (3, {"min_units": 5}, 5),
        (30, {"max_units": 25}, 25),
        (12, {"min_units": 5, "max_units": 25}, 12),
        (7, {"exclude_users": 4, "min_units": 5}, 5),  # exclusion first, then min
        (40, {"exclude_users": 4, "max_units": 30}, 30),
        (0, {}, 0),
        (5, {"min_units": 0, "max_units": 0}, 0),
    ],
)
def test_clamp_target(users, overrides, target):
    assert clamp_target(users, replace(MAPPING, **overrides)) == target


# -- statuses and guards ------------------------------------------------------------------

LIMITS = SyncSettings(max_decrease_percent=50, max_increase_percent=100)


@pytest.mark.parametrize(
    ("users", "before", "settings", "yes", "status", "after", "message_part"),
    [
        # unchanged / simple changes
        (10, 10, SyncSettings(), False, "unchanged", 10, ""),
        (12, 10, SyncSettings(), False, "planned", 12, ""),
        (8, 10, SyncSettings(), False, "planned", 8, ""),
        # drop to 0: held unless allow_zero, whatever max_decrease_percent says
        (0, 10, SyncSettings(max_decrease_percent=100), False, "held", 10, "to 0 units"),
        (0, 1, SyncSettings(max_decrease_percent=100), False, "held", 1, "allow_zero"),
        (0, 10, SyncSettings(max_decrease_percent=100, allow_zero=True), False, "planned", 0, ""),
        (0, 10, SyncSettings(), True, "planned", 0, "lifted by --yes"),
        (0, 0, SyncSettings(), False, "unchanged", 0, ""),  # already 0: nothing to hold
        # allow_zero does not bypass max_decrease_percent
        (0, 10, SyncSettings(allow_zero=True), False, "held", 10, "max_decrease_percent 50%"),
        # decrease: exactly the limit is not held, one more is
        (5, 10, LIMITS, False, "planned", 5, ""),
        (4, 10, LIMITS, False, "held", 10, "drop of 60% (10 -> 4)"),
        (4, 10, LIMITS, True, "planned", 4, "lifted by --yes"),
        (75, 100, SyncSettings(max_decrease_percent=25), False, "planned", 75, ""),
        (74, 100, SyncSettings(max_decrease_percent=25), False, "held", 100, "drop of 26%"),
        (2, 3, SyncSettings(max_decrease_percent=33.3), False, "held", 3, "drop of 33.33%"),
        # 22.5% over a 22% limit once read "drop of 22% ... over 22%" (rounded to the limit)
        (31, 40, SyncSettings(max_decrease_percent=22), False, "held", 40, "drop of 22.5% (40"),
        (2, 3, SyncSettings(max_decrease_percent=33.34), False, "planned", 2, ""),
        # increase: only when set; exactly the limit is not held
        (1000, 10, SyncSettings(), False, "planned", 1000, ""),
        (20, 10, LIMITS, False, "planned", 20, ""),
        (21, 10, LIMITS, False, "held", 10, "rise 110% (10 -> 21)"),
        (21, 10, LIMITS, True, "planned", 21, "lifted by --yes"),
        (5, 0, LIMITS, False, "held", 0, "rise from 0 (0 -> 5)"),
        (5, 0, SyncSettings(), False, "planned", 5, ""),
    ],
)
def test_guards(users, before, settings, yes, status, after, message_part):
    item = plan_for(users, rows=[row(before)], settings=settings, yes=yes)
    assert (item.status, item.before, item.target, item.after) == (status, before, users, after)
    assert item.change == users - before
    assert message_part in item.message
    if status == "held":
        assert "--yes" in item.message


@pytest.mark.parametrize("yes", [False, True])
def test_a_posted_period_is_held_even_with_yes(yes):
    item = plan_for(12, rows=[row(10, posted=True)], yes=yes)
    assert (item.status, item.after, item.change) == ("held", 10, 2)
    assert "already approved and posted" in item.message and "--yes" not in item.message


def test_a_posted_period_does_not_touch_unchanged_items():
    assert plan_for(10, rows=[row(10, posted=True)]).status == "unchanged"


@pytest.mark.parametrize("yes", [False, True])
def test_no_row_starting_on_e_fails_without_prorate(yes):
    """A row starting before E is a split or another period: a write would prorate it."""
    item = plan_for(12, rows=[row(10, start=date(2026, 11, 15))], yes=yes)
    assert (item.status, item.after, item.change) == ("failed", 10, 2)
    assert "no billing period of contract service 29685100 starting on 2026-12-01" in item.message
    assert "starts 2026-11-15" in item.message and "prorate: true" in item.message


# -- cost -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping_kw", "settings", "users", "status", "new_cost", "message_part"),
    [
        ({}, SyncSettings(), 10, "unchanged", 2.25, ""),
        # cost-only difference is a change with unitChange 0
        ({"overwrite_cost": True, "unit_cost": 3.0}, SyncSettings(), 10, "planned", 3.0, "2.25"),
        # the sync default applies when the mapping says nothing
        ({}, SyncSettings(overwrite_cost=True, unit_cost=3.0), 10, "planned", 3.0, "-> 3.00"),
        # the mapping's override wins over the default, both ways
        (
            {"overwrite_cost": False},
            SyncSettings(overwrite_cost=True, unit_cost=3.0),
            10,
            "unchanged",
            2.25,
            "",
        ),
        (
            {"unit_cost": 4.0},
            SyncSettings(overwrite_cost=True, unit_cost=3.0),
            12,
            "planned",
            4.0,
            "cost 2.25 -> 4.00",
        ),
        # unit_cost without overwrite_cost is not applied
        ({"unit_cost": 4.0}, SyncSettings(), 10, "unchanged", 2.25, ""),
        # within tolerance: not a change
        ({"overwrite_cost": True, "unit_cost": 2.2501}, DEFAULTS, 10, "unchanged", 2.2501, ""),
    ],
)
def test_cost(mapping_kw, settings, users, status, new_cost, message_part):
    item = plan_for(users, mapping=replace(MAPPING, **mapping_kw), settings=settings)
    assert item.status == status
    assert item.new_unit_cost == pytest.approx(new_cost)
    assert item.unit_cost == 2.25 and item.unit_price == 4.5
    assert message_part in item.message
    assert item.change == users - 10


def test_cost_only_change_is_still_held_in_a_posted_period():
    mapping = replace(MAPPING, overwrite_cost=True, unit_cost=3.0)
    item = plan_for(10, mapping=mapping, rows=[row(10, posted=True)])
    assert (item.status, item.change) == ("held", 0)


@pytest.mark.parametrize(("price", "cost"), [(None, 2.25), (4.5, None), (None, None)])
def test_null_price_or_cost_fails(price, cost):
    item = plan_for(12, rows=[row(10, price=price, cost=cost)])
    assert (item.status, item.message, item.before, item.after) == (
        "failed",
        NO_COST_VISIBILITY,
        10,
        10,
    )


# -- the units row ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "before"),
    [
        # two rows covering D: the latest start wins
        ([row(7, start=date(2026, 11, 1), id=5), row(9, start=D, id=4)], 9),
        # same start: the highest id wins
        ([row(7, id=5), row(9, id=4)], 7),
        ([row(7, id=4), row(9, id=5)], 9),
        # a row not covering D is ignored
        ([row(3, start=date(2027, 1, 1), end=date(2027, 1, 31), id=9), row(9, id=2)], 9),
    ],
)
def test_units_row_choice(rows, before):
    item = plan_for(12, rows=rows)
    assert item.before == before and item.change == 12 - before


def test_no_row_covering_d_fails():
    item = plan_for(12, rows=[row(3, start=date(2027, 1, 1), end=date(2027, 1, 31))])
    assert item.status == "failed" and item.before is None and item.after is None
    assert "no units row of contract service 29685100 covers 2026-12-01" in item.message


# -- broken chains ------------------------------------------------------------------------

CHOOSE = (
    "choose one of the account's active Recurring Service contracts with "
    "`infima-autotask map 101 --account 29683501`"
)
RENEWAL = Successor(
    contract=replace(CONTRACT, id=29690011, start=date(2026, 11, 1), end=date(2027, 10, 31)),
    contract_service=ContractService(id=29690450, contract_id=29690011, service_id=30012),
)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"contract": None},
            f"contract 29684001 not found in Autotask; {CHOOSE}",
        ),
        (
            {"contract": replace(CONTRACT, contract_type=1)},
            "contract 29684001 (Managed Services 2026) is not a Recurring Service contract "
            f"(contractType 1); the INFIMA service must be on one; {CHOOSE}",
        ),
        (
            {"contract": replace(CONTRACT, status=0)},
            "contract 29684001 (Managed Services 2026) is not active in Autotask (status 0); "
            f"activate it in Autotask, or {CHOOSE}",
        ),
        (
            {"contract": replace(CONTRACT, end=date(2026, 10, 31)), "successors": {}},
            "contract 29684001 (Managed Services 2026) ended on 2026-10-31; no renewal carrying "
            f"service 30012 was found: renew it in Autotask, then {CHOOSE}",
        ),
        (
            {
                "contract": replace(CONTRACT, end=date(2026, 10, 31), status=0),
                "successors": {(CONTRACT.id, RENEWAL.contract_service.service_id): RENEWAL},
            },
            "contract 29684001 (Managed Services 2026) ended on 2026-10-31; re-map to its "
            "renewal with `infima-autotask map 101 --account 29683501 --contract 29690011 "
            "--contract-service 29690450`",
        ),
        (
            {"cs": None},
            "contract service 29685100 not found in Autotask; choose one of the contract's "
            "services with `infima-autotask map 101 --account 29683501 --contract 29684001`",
        ),
        (
            {"cs": replace(CS, contract_id=29699999)},
            "contract service 29685100 belongs to contract 29699999, not to contract 29684001 "
            "(Managed Services 2026); choose one of the contract's services with "
            "`infima-autotask map 101 --account 29683501 --contract 29684001`",
        ),
        ({"count": UserCount(None, "INFIMA has no client 101")}, "INFIMA has no client 101"),
    ],
)
def test_broken_chain_fails_with_fix(kwargs, message):
    item = plan_for(12, **kwargs)
    assert (item.status, item.message) == ("failed", message)
    assert item.after == item.before


def test_a_contract_ending_between_d_and_e_names_the_fix():
    seventeenth = replace(CONTRACT, start=date(2026, 1, 17), end=date(2026, 12, 10))
    item = plan_for(12, contract=seventeenth, rows=[row(10, start=date(2026, 12, 17))])
    assert item.status == "failed"
    assert item.message.startswith(
        "contract 29684001 ends 2026-12-10, before its billing period starts on 2026-12-17"
    )
    assert "infima-autotask map 101 --account 29683501" in item.message


def test_contract_ending_on_d_is_still_valid():
    assert plan_for(12, contract=replace(CONTRACT, end=D)).status == "planned"


def test_one_failure_does_not_stop_the_others():
    other = replace(MAPPING, client_id=102, contract_service_id=29685200, client_name="Bravo")
    cs2 = ContractService(id=29685200, contract_id=CONTRACT.id, service_id=30012)
    items = plan(
        [MAPPING, other],
        day=D,
        settings=SyncSettings(),
        counts={101: UserCount(None, "INFIMA: timed out"), 102: UserCount(7)},
        contracts={CONTRACT.id: CONTRACT},
        contract_services={CS.id: CS, cs2.id: cs2},
        rows={CS.id: [row(10)], cs2.id: [replace(row(5), contract_service_id=cs2.id)]},
        active_statuses=ACTIVE,
        period_months=MONTHS,
    )
    assert [(i.client_id, i.status, i.change) for i in items] == [
        (101, "failed", None),
        (102, "planned", 2),
    ]
    assert items[1].client_name == "Bravo"
    assert items[0].before == 10 and items[0].after == 10


def test_ended_contracts_lists_each_contract_once():
    ended = replace(CONTRACT, end=date(2026, 10, 31))
    other = replace(MAPPING, client_id=102, contract_service_id=29685200)
    found = ended_contracts(
        [MAPPING, other, replace(MAPPING, client_id=103, contract_id=1)],
        {ended.id: ended, 1: replace(CONTRACT, id=1)},
        {CS.id: CS},
        D,
        ACTIVE,
    )
    assert found == [(ended, 30012)]


def test_client_name_prefers_infima_then_config():
    assert plan_for(10).client_name == "Acme Dental"
    assert plan_for(10, count=UserCount(10)).client_name == "Acme Dental (config)"


def test_json_item_shape():
    item = plan_for(12)
    assert item.as_json() == {
        "client_id": 101,
        "client_name": "Acme Dental",
        "psa": "autotask",
        "account_name": None,
        "contract_id": 29684001,
        "contract_service_id": 29685100,
        "service_name": None,
        "effective_date": "2026-12-01",
        "users": 12,
        "target": 12,
        "before": 10,
        "after": 12,
        "change": 2,
        "unit_price": 4.5,
        "unit_cost": 2.25,
        "money_change": 9.0,
        "status": "planned",
        "message": "",
    }


# -- periods and helpers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "day"), [("2026-12", date(2026, 12, 1)), ("2027-01", date(2027, 1, 1))]
)
def test_parse_month(text, day):
    assert parse_month(text) == day


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "2026-1", "26-12", "2026-12-01", "x"])
def test_parse_month_rejects(text):
    with pytest.raises(UsageError, match="YYYY-MM"):
        parse_month(text)


def test_current_month_uses_the_zone():
    now = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)  # still November in New York
    assert current_month(now, "America/New_York") == date(2026, 11, 1)
    assert current_month(now, "Europe/Berlin") == date(2026, 12, 1)


def test_summary_and_line():
    items = [plan_for(10), plan_for(12), plan_for(0, rows=[row(10)])]
    counts = summary(items)
    assert counts == {
        "updated": 0,
        "unchanged": 1,
        "planned": 1,
        "skipped": 0,
        "held": 1,
        "failed": 0,
    }
    assert (
        summary_line("2026-12", counts, dry_run=True)
        == "Period 2026-12: 1 planned, 1 unchanged, 0 skipped, 1 held, 0 failed "
        "(dry run: nothing written)"
    )
    assert (
        summary_line("2026-12", {"updated": 12, "unchanged": 30, "held": 1}, dry_run=False)
        == "Period 2026-12: 12 updated, 30 unchanged, 0 skipped, 1 held, 0 failed"
    )


@pytest.mark.parametrize(
    ("users", "before", "overrides", "settings", "status"),
    [
        (11, 10, {"min_units": 999999}, SyncSettings(), "held"),  # a typo: +999,989 seats
        (3, 3, {"min_units": 10}, SyncSettings(), "held"),  # 7 above 3: more than the count
        (8, 8, {"min_units": 10}, SyncSettings(), "planned"),  # 2 above 8
        (3, 3, {"min_units": 10}, SyncSettings(max_increase_percent=300), "planned"),
        (3, 9, {"min_units": 10}, SyncSettings(max_increase_percent=200), "held"),  # 7 > 200%
        (3, 10, {"min_units": 10}, SyncSettings(), "unchanged"),  # already so: nothing to hold
    ],
)
def test_a_target_raised_far_above_the_count_by_min_units_is_held(
    users, before, overrides, settings, status
):
    item = plan_for(
        users, rows=[row(before)], mapping=replace(MAPPING, **overrides), settings=settings
    )
    assert item.status == status
    if status == "held":
        assert "min_units" in item.message and "above INFIMA's" in item.message
        assert "--yes" in item.message
        lifted = plan_for(
            users,
            rows=[row(before)],
            mapping=replace(MAPPING, **overrides),
            settings=settings,
            yes=True,
        )
        assert lifted.status == "planned" and "lifted by --yes" in lifted.message
