"""Regression tests for the corrupting cases of extended row amounts (AUTOTASK_API.md §5.5).

A live tenant's ``ContractServiceUnits.price``/``.cost`` are units x rate; an adjustment's
``adjustedUnitPrice``/``adjustedUnitCost`` are per unit. Written first against the code of
0.1, each of these failed there: it sent a line total back as a unit price.
"""

from __future__ import annotations

import json

import pytest
from fake_autotask import PERIOD, cs_id, mapping, writes

pytestmark = pytest.mark.usefixtures("no_backoff")


def test_a_units_change_keeps_the_per_unit_price(invoke, setup, fake, requests_mock):
    """11 -> 12 users at $23.10: the row shows 254.10; the write must say 23.10, not 254.10."""
    fake.add_client(101, 11, price=23.10, cost=10.0)
    assert fake.row_of(101)["price"] == 254.10
    setup({101: 12})

    result = invoke("sync", "--month", PERIOD, "--json")

    assert result.exit_code == 0, result.output
    [sent] = writes(requests_mock)
    assert (sent["unitChange"], sent["adjustedUnitPrice"], sent["adjustedUnitCost"]) == (
        1,
        23.1,
        10.0,
    )
    assert fake.row_of(101)["price"] == 277.20  # 12 x 23.10
    item = json.loads(result.stdout)["items"][0]
    assert (item["status"], item["unit_price"], item["money_change"]) == ("updated", 23.1, 23.1)


def test_a_line_at_zero_units_takes_the_contract_services_rates(invoke, setup, fake, requests_mock):
    """At 0 units the row's amounts are 0 whatever the rate: the contract service has it."""
    fake.add_client(101, 0, price=23.10, cost=10.0)
    setup({101: 3})

    result = invoke("sync", "--month", PERIOD)

    assert result.exit_code == 0, result.output
    [sent] = writes(requests_mock)
    assert (sent["unitChange"], sent["adjustedUnitPrice"], sent["adjustedUnitCost"]) == (
        3,
        23.1,
        10.0,
    )
    assert (fake.row_of(101)["price"], fake.row_of(101)["cost"]) == (69.3, 30.0)


def test_overwrite_cost_equal_to_the_current_unit_cost_writes_nothing(
    invoke, setup, fake, requests_mock
):
    """The configured unit cost is per unit; the row's cost is 10 x 2.25 = 22.50."""
    fake.add_client(101, 10, price=4.5, cost=2.25)
    setup({101: 10}, mappings=[mapping(101, overwrite_cost=True, unit_cost=2.25)])

    result = invoke("sync", "--month", PERIOD)

    assert result.exit_code == 0, result.output
    assert writes(requests_mock) == []
    assert "unchanged" in result.stdout


def test_the_next_run_sends_the_same_unit_price(invoke, setup, fake, requests_mock):
    """What one run wrote must not become the next run's unit price (a growing total)."""
    fake.add_client(101, 11, price=23.10, cost=10.0)
    setup({101: 12})
    assert invoke("sync", "--month", PERIOD).exit_code == 0
    setup({101: 14})
    assert invoke("sync", "--month", PERIOD).exit_code == 0

    assert [(w["unitChange"], w["adjustedUnitPrice"]) for w in writes(requests_mock)] == [
        (1, 23.1),
        (2, 23.1),
    ]
    assert fake.row_of(101)["price"] == round(14 * 23.10, 2)


def test_a_cost_write_is_verified_against_the_extended_cost(invoke, setup, fake, requests_mock):
    """unit_cost 3.10 on 10 units: Autotask shows 31.00, which is what verification expects."""
    fake.add_client(101, 10, price=4.5, cost=2.25)
    setup({101: 10}, mappings=[mapping(101, overwrite_cost=True, unit_cost=3.1)])

    result = invoke("sync", "--month", PERIOD, "--json")

    assert result.exit_code == 0, result.output
    assert [w["adjustedUnitCost"] for w in writes(requests_mock)] == [3.1]
    item = json.loads(result.stdout)["items"][0]
    assert (item["status"], item["unit_cost"], item["change"]) == ("updated", 3.1, 0)
    assert fake.row_of(101)["cost"] == 31.0
    assert cs_id(101) == item["contract_service_id"]
