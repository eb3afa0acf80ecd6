"""A month's sync against the loopback sandbox in each tenant mode of a real Autotask tenant.

The sandbox stores an adjustment's date either converted to the tenant's zone (Autotask's own
example) or as its UTC date; the tool cannot know which, so every case runs under both
readings, in New York, London and Sydney. Each checks what lands where: the write on E, the
day before E untouched, what is not due skipped, and nothing written twice.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from sandbox_cli import env_for

from infima_autotask.cli import cli
from infima_autotask.sandbox import Sandbox, data

THIS_MONTH = date.today().replace(day=1)
MONTH = THIS_MONTH.strftime("%Y-%m")
GRANITE_E = THIS_MONTH.replace(day=data.GRANITE_START_DAY)
DAY = timedelta(days=1)

ACME, GRANITE, HARBOR, IRIS = (
    data.ACME_CLIENT_ID,
    data.GRANITE_CLIENT_ID,
    data.HARBOR_CLIENT_ID,
    data.IRIS_CLIENT_ID,
)
CS = {
    ACME: data.ACME_CONTRACT_SERVICE_ID,
    GRANITE: data.GRANITE_CONTRACT_SERVICE_ID,
    HARBOR: data.HARBOR_CONTRACT_SERVICE_ID,
    IRIS: data.IRIS_CONTRACT_SERVICE_ID,
    data.COBALT_CLIENT_ID: data.COBALT_CONTRACT_SERVICE_ID,
}


class Tenant:
    """A sandbox tenant, a config mapping some seeded clients, and the CLI run in-process."""

    def __init__(self, sandbox: Sandbox, tmp: Path) -> None:
        self.sandbox = sandbox
        self.config = tmp / "config.yaml"
        self.env = {**env_for(sandbox, tmp / "state"), "INFIMA_AUTOTASK_CONFIG": str(self.config)}

    def configure(
        self, clients: tuple[int, ...], *, zone: str | None, **mapping_overrides: Any
    ) -> None:
        mappings = [{**data.seed_mapping(c), **mapping_overrides} for c in clients]
        doc = {"version": 1, "autotask": {"timezone": zone}, "mappings": mappings}
        self.config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    def sync(self, *args: str) -> Result:
        result = CliRunner().invoke(
            cli, ["sync", "--month", MONTH, "--json", *args], env=self.env, catch_exceptions=False
        )
        assert "Traceback" not in result.output
        return result

    def units(self, client: int, day: date) -> int | None:
        return self.sandbox.units_on(CS[client], day)

    def stored_dates(self) -> list[str]:
        return [a["storedDate"] for a in self.sandbox.adjustments()]


@pytest.fixture
def tenant(tmp_path):
    with Sandbox() as sandbox:
        yield Tenant(sandbox, tmp_path)


def items(result: Result) -> dict[int, dict[str, Any]]:
    return {item["client_id"]: item for item in json.loads(result.stdout)["items"]}


ZONES = ("America/New_York", "Europe/London", "Australia/Sydney")
RULES = ("convert", "utc")


@pytest.fixture(params=[(z, r) for z in ZONES for r in RULES], ids="-".join)
def mode(request, tenant):
    """Each tenant mode in turn (zone x date reading); the config names the tenant's zone."""
    zone, rule = request.param
    tenant.sandbox.state.tenant_timezone, tenant.sandbox.state.date_rule = zone, rule
    return zone


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("zone", ZONES)
def test_a_month_lands_on_e_under_both_date_readings(tenant, zone, rule):
    state = tenant.sandbox.state
    state.tenant_timezone, state.date_rule = zone, rule
    tenant.configure((ACME, GRANITE, HARBOR, IRIS), zone=zone)
    before = {c: tenant.units(c, d) for c, d in ((ACME, THIS_MONTH), (GRANITE, GRANITE_E))}
    day_before = {
        ACME: tenant.units(ACME, THIS_MONTH - DAY),
        GRANITE: tenant.units(GRANITE, GRANITE_E - DAY),
    }

    first = tenant.sync()

    assert first.exit_code == 0, first.output
    found = items(first)
    assert {c: found[c]["status"] for c in found} == {
        ACME: "updated",
        GRANITE: "updated",
        HARBOR: "skipped",
        IRIS: "skipped",
    }
    assert (found[ACME]["effective_date"], found[GRANITE]["effective_date"]) == (
        THIS_MONTH.isoformat(),
        GRANITE_E.isoformat(),
    )
    assert found[HARBOR]["effective_date"] is None and "the next starts" in found[HARBOR]["message"]
    assert sorted(tenant.stored_dates()) == [THIS_MONTH.isoformat(), GRANITE_E.isoformat()]
    assert (tenant.units(ACME, THIS_MONTH), tenant.units(GRANITE, GRANITE_E)) == (12, 14)
    # The day before each E is exactly as it was: no one-day charge anywhere.
    assert tenant.units(ACME, THIS_MONTH - DAY) == day_before[ACME]
    assert tenant.units(GRANITE, GRANITE_E - DAY) == day_before[GRANITE] == before[GRANITE]
    # Rates: the written rows show the target at the unchanged per-unit price.
    assert found[GRANITE]["unit_price"] == data.SERVICE_UNIT_PRICE

    again = tenant.sync()
    assert again.exit_code == 0, again.output
    assert [i["status"] for i in items(again).values()] == [
        "unchanged",
        "unchanged",
        "skipped",
        "skipped",
    ]
    assert len(tenant.stored_dates()) == 2  # nothing written twice


def test_a_tenant_that_moves_dates_a_day_early_is_caught_by_the_first_write(tenant):
    """The config says Auckland, the tenant converts to Honolulu: 05:30Z is the day before
    there. The first write lands a day early; it is reported and nothing more is sent."""
    state = tenant.sandbox.state
    state.tenant_timezone, state.date_rule = "Pacific/Honolulu", "convert"
    tenant.configure((GRANITE, ACME, data.COBALT_CLIENT_ID), zone="Pacific/Auckland")

    result = tenant.sync()

    assert result.exit_code == 1
    found = items(result)
    assert len(tenant.sandbox.adjustments()) == 1
    assert tenant.stored_dates() == [(GRANITE_E - DAY).isoformat()]
    assert found[GRANITE]["status"] == "failed"
    message = found[GRANITE]["message"]
    assert f"Autotask dated the change {(GRANITE_E - DAY).isoformat()}, a day before" in message
    assert "reversed by hand" in message and "autotask.timezone" in message
    for client in (ACME, data.COBALT_CLIENT_ID):
        assert found[client]["status"] == "held"
        assert (
            f"the first write of this run, client {GRANITE}, did not verify"
            in (found[client]["message"])
        )
    assert tenant.units(ACME, THIS_MONTH) == 10  # never sent


def test_a_tenant_that_moves_dates_a_day_late_is_caught_by_the_first_write(tenant):
    state = tenant.sandbox.state
    state.tenant_timezone, state.date_rule = "Pacific/Auckland", "convert"
    tenant.configure((GRANITE, ACME), zone="Pacific/Honolulu")

    result = tenant.sync()

    assert result.exit_code == 1
    found = items(result)
    assert tenant.stored_dates() == [(GRANITE_E + DAY).isoformat()]
    assert found[GRANITE]["status"] == "failed"
    assert f"a day after {GRANITE_E.isoformat()}" in found[GRANITE]["message"]
    assert found[ACME]["status"] == "held"


def test_with_no_zone_set_a_tenant_near_utc_still_lands_on_e(tenant):
    state = tenant.sandbox.state
    state.tenant_timezone, state.date_rule = "America/Los_Angeles", "convert"
    tenant.configure((ACME, GRANITE), zone=None)
    result = tenant.sync()
    assert result.exit_code == 0, result.output
    assert sorted(tenant.stored_dates()) == [THIS_MONTH.isoformat(), GRANITE_E.isoformat()]


def test_a_second_adjustment_on_the_same_day_refused_says_to_do_it_by_hand(tenant, mode):
    tenant.sandbox.state.refuse_duplicate_dates = True
    tenant.configure((ACME,), zone=mode)
    assert tenant.sync().exit_code == 0
    tenant.sandbox.state.infima_clients[ACME].active = 15

    result = tenant.sync()

    assert result.exit_code == 1
    item = items(result)[ACME]
    assert item["status"] == "failed"
    assert "takes no second one" in item["message"] and "by hand in Autotask" in item["message"]
    assert "duplicate data into contract_service_period" in item["message"]
    assert len(tenant.sandbox.adjustments()) == 1  # refused: never re-sent
    assert tenant.units(ACME, THIS_MONTH) == 12


def test_a_create_answered_with_a_null_item_id_is_verified_and_updated(tenant, mode):
    tenant.sandbox.state.null_item_id = True
    tenant.configure((ACME, GRANITE), zone=mode)
    result = tenant.sync()
    assert result.exit_code == 0, result.output
    assert {i["status"] for i in items(result).values()} == {"updated"}
    assert len(tenant.sandbox.adjustments()) == 2


def test_prorate_writes_on_the_first_inside_a_period_and_verifies(tenant, mode):
    tenant.configure((GRANITE,), zone=mode, prorate=True)
    result = tenant.sync()
    assert result.exit_code == 0, result.output
    item = items(result)[GRANITE]
    assert (item["status"], item["effective_date"]) == ("updated", THIS_MONTH.isoformat())
    assert "prorated from" in item["message"]
    assert tenant.stored_dates() == [THIS_MONTH.isoformat()]
    assert tenant.units(GRANITE, THIS_MONTH) == 14
    assert tenant.units(GRANITE, THIS_MONTH - DAY) == 12


def test_skipped_counts_as_done_for_if_due(tenant):
    tenant.configure((HARBOR,), zone=None)
    first = tenant.sync()
    assert first.exit_code == 0, first.output
    assert "0 skipped" not in first.stderr and "1 skipped" in first.stderr
    due = CliRunner().invoke(
        cli, ["sync", "--month", MONTH, "--if-due"], env=tenant.env, catch_exceptions=False
    )
    assert due.exit_code == 0 and "nothing due" in due.stderr
    assert tenant.sandbox.adjustments() == []


def test_a_write_refused_as_landing_in_a_posted_period_stops_the_run(tenant):
    """Los Angeles tenant, config says Auckland: the write dated the 1st lands on the 30th,
    in last month's posted period, and is refused. That refusal means the date moved: the
    other writes are held, so Granite's never lands a day early."""
    state = tenant.sandbox.state
    state.tenant_timezone, state.date_rule = "America/Los_Angeles", "convert"
    tenant.configure((ACME, data.COBALT_CLIENT_ID, GRANITE), zone="Pacific/Auckland")

    result = tenant.sync()

    assert result.exit_code == 1
    found = items(result)
    assert tenant.sandbox.adjustments() == []
    assert found[ACME]["status"] == "failed"
    assert "Autotask moved the date of the change" in found[ACME]["message"]
    assert "autotask.timezone" in found[ACME]["message"]
    assert {found[c]["status"] for c in (data.COBALT_CLIENT_ID, GRANITE)} == {"held"}


def test_a_write_that_would_change_a_later_period_too_fails(tenant, mode):
    """Granite was written on the 17th; switching it to prorate would date a write on the
    1st, which Autotask would add to the period from the 17th as well."""
    tenant.configure((GRANITE,), zone=mode)
    assert tenant.sync().exit_code == 0
    assert tenant.units(GRANITE, GRANITE_E) == 14

    tenant.configure((GRANITE,), zone=mode, prorate=True)
    result = tenant.sync()

    assert result.exit_code == 1
    item = items(result)[GRANITE]
    assert item["status"] == "failed"
    assert (
        f"the billing period from {GRANITE_E.isoformat()} already shows 14 units"
        in (item["message"])
    )
    assert len(tenant.sandbox.adjustments()) == 1
    assert tenant.units(GRANITE, GRANITE_E) == 14


def test_if_due_syncs_a_client_again_after_it_is_mapped_to_another_line(tenant):
    tenant.configure((ACME,), zone="America/New_York")
    assert tenant.sync().exit_code == 0
    moved = {**data.seed_mapping(ACME), "contract_service_id": CS[data.COBALT_CLIENT_ID]}
    moved["contract_id"] = data.COBALT_CONTRACT_ID
    doc = {"version": 1, "autotask": {"timezone": "America/New_York"}, "mappings": [moved]}
    tenant.config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    due = tenant.sync("--if-due", "--dry-run")

    assert "nothing due" not in due.stderr
    item = items(due)[ACME]  # planned on the new line: 40 -> 12 is held as a big drop
    assert (item["contract_service_id"], item["status"]) == (CS[data.COBALT_CLIENT_ID], "held")


def test_json_names_the_unmapped_clients(tenant):
    tenant.configure((ACME,), zone="America/New_York")
    warnings = json.loads(tenant.sync("--dry-run").stdout)["warnings"]
    assert any("without a mapping" in w and "Evergreen Realty (105)" in w for w in warnings)


def test_the_next_run_keeps_reporting_a_one_day_charge_until_it_is_reversed(tenant):
    """After a write landed a day early, the row on E shows the target: without this check
    the next run would say `unchanged` and the daily mail would stop."""
    state = tenant.sandbox.state
    state.tenant_timezone, state.date_rule = "America/Los_Angeles", "convert"
    tenant.configure((GRANITE,), zone="Pacific/Auckland")
    assert items(tenant.sync())[GRANITE]["status"] == "failed"  # landed on the 16th
    tenant.configure((GRANITE,), zone="America/Los_Angeles")

    again = tenant.sync()

    item = items(again)[GRANITE]
    assert (again.exit_code, item["status"]) == (1, "failed")
    assert f"one-day change of contract service {CS[GRANITE]}" in item["message"]
    assert f"on {(GRANITE_E - DAY).isoformat()}" in item["message"]
    assert len(tenant.sandbox.adjustments()) == 1

    # Reversed by hand (the day back at 12 units): the check is quiet again.
    with state.lock:
        charge = state.row_covering(CS[GRANITE], GRANITE_E - DAY)
        charge.update(units=12, price=charge["price"] / 14 * 12, cost=charge["cost"] / 14 * 12)
    fixed = tenant.sync()
    assert (fixed.exit_code, items(fixed)[GRANITE]["status"]) == (0, "unchanged")
