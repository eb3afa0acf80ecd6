"""Billing periods and per-unit rates in the mapping workflow (SPEC §7, §8), through the real
CLI against the loopback sandbox: ``map`` prints the billing period and when writes are dated,
``map --prorate/--no-prorate``, ``list-mappings`` shows "Writes dated", ``search-accounts
--contracts`` shows per-unit rates, never a row's extended amounts."""

from __future__ import annotations

import json
from datetime import date

import pytest
import yaml
from conftest import make_config, write_config

from infima_autotask.billing import add_months, schedule
from infima_autotask.cli import mapping_view as view
from infima_autotask.mapping import Billing
from infima_autotask.sandbox import data


def _autotask(sandbox, since=0):
    return [r for r in sandbox.requests[since:] if r.service == "autotask"]


def _month(day):
    return f"{day.year:04d}-{day.month:02d}"


@pytest.fixture
def cfg(config_path, sandbox):
    """An empty config pointing at the sandbox's Autotask user."""
    write_config(config_path, make_config(autotask={"username": sandbox.username}))
    return config_path


def _mapping(config_path, client_id):
    doc = yaml.safe_load(config_path.read_text())
    return next(m for m in doc["mappings"] if m["client_id"] == client_id)


def _full_chain(client_id):
    mapping = data.seed_mapping(client_id)
    return data.map_args(mapping)


# --- map prints the billing period ---------------------------------------------------------


def test_map_monthly_from_the_1st_says_only_the_period(invoke, cfg, sandbox, sandbox_env):
    result = invoke(*_full_chain(data.ACME_CLIENT_ID), env=sandbox_env)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:] == ["  Billing period: monthly from the 1st"]


def test_map_monthly_from_the_17th_dates_writes_the_17th(invoke, cfg, sandbox, sandbox_env):
    this = sandbox.state.this_month
    result = invoke(*_full_chain(data.GRANITE_CLIENT_ID), env=sandbox_env)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:] == [
        "  Billing period: monthly from the 17th",
        f"  Writes for {_month(this)} are dated {this.replace(day=17)} (the start of its "
        "billing period).",
    ]
    # the status and billing-period picklists come in one request: map costs no extra one
    paths = [r.path.split("/v1.0/")[1] for r in _autotask(sandbox)]
    assert paths == [
        f"Companies/{data.GRANITE_ACCOUNT_ID}",
        "Contracts/entityInformation/fields",
        f"Contracts/{data.GRANITE_CONTRACT_ID}",
        f"ContractServices/{data.GRANITE_CONTRACT_SERVICE_ID}",
        f"Services/{data.SERVICE_ID}",
    ]
    assert _mapping(cfg, data.GRANITE_CLIENT_ID).get("prorate") is None


def test_map_json_carries_the_schedule(invoke, cfg, sandbox, sandbox_env):
    this = sandbox.state.this_month
    result = invoke(*_full_chain(data.GRANITE_CLIENT_ID), "--json", env=sandbox_env)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert {key: row[key] for key in list(row)[9:]} == {
        "writes_dated": this.replace(day=17).isoformat(),
        "billing_period": "monthly from the 17th",
        "next_period_start": None,
        "prorate": False,
        "prorated": False,
        "effective_date": this.replace(day=17).isoformat(),
        "previous": None,
    }


@pytest.mark.parametrize(
    ("client_id", "name", "first_period", "months"),
    [
        (data.HARBOR_CLIENT_ID, "quarterly", -13, 3),
        (data.IRIS_CLIENT_ID, "yearly", -5, 12),
    ],
)
def test_map_when_no_period_starts_this_month_names_the_next(
    invoke, cfg, sandbox, sandbox_env, client_id, name, first_period, months
):
    this = sandbox.state.this_month
    start = add_months(this, first_period)
    following = add_months(start, months * (-first_period // months + 1))
    result = invoke(*_full_chain(client_id), env=sandbox_env)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:] == [
        f"  Billing period: {name} from {start}",
        f"  No billing period starts in {_month(this)}: sync skips this client this month; "
        f"the next period starts {following}.",
    ]
    listed = invoke("list-mappings", "--check", "--json", env=sandbox_env)
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    assert (row["writes_dated"], row["next_period_start"], row["billing_period"]) == (
        None,
        following.isoformat(),
        f"{name} from {start}",
    )
    table = invoke("list-mappings", "--check", env=sandbox_env)
    assert f"{following} ({name})" in table.stdout.splitlines()[2]


def test_map_prorate_names_the_proration_and_is_kept_on_remap(invoke, cfg, sandbox, sandbox_env):
    this = sandbox.state.this_month
    granite = _full_chain(data.GRANITE_CLIENT_ID)
    result = invoke(*granite, "--prorate", env=sandbox_env)
    assert result.exit_code == 0, result.output
    covering = add_months(this, -1).replace(day=17)
    assert result.stdout.splitlines()[1:] == [
        "  Billing period: monthly from the 17th",
        f"  Writes are dated the 1st: Autotask will prorate the period from {covering}, a "
        "proration it cannot delete.",
    ]
    assert _mapping(cfg, data.GRANITE_CLIENT_ID)["prorate"] is True

    listed = invoke("list-mappings", "--check", "--json", env=sandbox_env)
    (row,) = json.loads(listed.stdout)
    assert (row["writes_dated"], row["prorate"], row["prorated"]) == (this.isoformat(), True, True)
    table = invoke("list-mappings", "--check", env=sandbox_env)
    assert "the 1st, prorated" in table.stdout.splitlines()[2]

    # absent: the mapping keeps its choice on a re-map
    again = invoke(*granite, "--exclude-users", "1", env=sandbox_env)
    assert again.exit_code == 0, again.output
    assert "Autotask will prorate the period from" in again.stdout
    assert _mapping(cfg, data.GRANITE_CLIENT_ID)["prorate"] is True

    off = invoke(*granite, "--no-prorate", env=sandbox_env)
    assert off.exit_code == 0, off.output
    assert f"are dated {this.replace(day=17)}" in off.stdout
    mapping = _mapping(cfg, data.GRANITE_CLIENT_ID)
    assert (mapping["prorate"], mapping["exclude_users"]) == (False, 1)


def test_map_prorate_from_the_sync_default(invoke, config_path, sandbox, sandbox_env):
    doc = make_config(autotask={"username": sandbox.username}, sync={"prorate": True})
    write_config(config_path, doc)
    result = invoke(*_full_chain(data.GRANITE_CLIENT_ID), env=sandbox_env)
    assert result.exit_code == 0, result.output
    assert "Writes are dated the 1st: Autotask will prorate the period" in result.stdout
    assert _mapping(config_path, data.GRANITE_CLIENT_ID).get("prorate") is None


def test_map_prorate_on_a_monthly_from_the_1st_contract_prorates_nothing(
    invoke, cfg, sandbox, sandbox_env
):
    result = invoke(*_full_chain(data.BIRCH_CLIENT_ID), "--prorate", env=sandbox_env)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:] == ["  Billing period: monthly from the 1st"]


def test_map_from_csv_prints_each_billing_period(invoke, cfg, sandbox, sandbox_env, tmp_path):
    rows = [data.seed_mapping(c) for c in (data.ACME_CLIENT_ID, data.GRANITE_CLIENT_ID)]
    path = tmp_path / "map.csv"
    path.write_text(
        "client_id,account_id,contract_id,contract_service_id\n"
        + "".join(
            f"{m['client_id']},{m['account_id']},{m['contract_id']},{m['contract_service_id']}\n"
            for m in rows
        )
    )
    result = invoke("map", "--from-csv", str(path), env=sandbox_env)
    assert result.exit_code == 0, result.output
    assert "  Billing period: monthly from the 1st" in result.stdout.splitlines()
    assert "  Billing period: monthly from the 17th" in result.stdout.splitlines()
    # the picklists are read once, with the statuses
    fields = [r for r in _autotask(sandbox) if r.path.endswith("entityInformation/fields")]
    assert len(fields) == 1


# --- list-mappings: Writes dated -----------------------------------------------------------


def test_check_shows_when_writes_are_dated_at_no_extra_cost(
    invoke, config_path, sandbox, sandbox_env
):
    doc = make_config(data.seed_mappings(sandbox.state.today))
    doc["autotask"] = {"username": sandbox.username}
    write_config(config_path, doc)
    result = invoke("list-mappings", "--check", "--json", env=sandbox_env)
    assert result.exit_code == 0, result.output
    dated = {row["client_id"]: row["writes_dated"] for row in json.loads(result.stdout)}
    first = sandbox.state.this_month
    assert dated == {
        data.ACME_CLIENT_ID: first.isoformat(),
        data.BIRCH_CLIENT_ID: first.isoformat(),
        data.COBALT_CLIENT_ID: first.isoformat(),
        data.DELTA_CLIENT_ID: first.isoformat(),
        data.GRANITE_CLIENT_ID: first.replace(day=17).isoformat(),
    }
    assert len(_autotask(sandbox)) == 5  # picklists + 4 batched reads, as before

    table = invoke("list-mappings", "--check", env=sandbox_env)
    header = table.stdout.splitlines()[0]
    assert header.index("Writes dated") < header.index("Last sync") < header.index("Status")
    granite = next(line for line in table.stdout.splitlines() if line.startswith("106 "))
    assert "the 17th (monthly from the 17th)" in granite


def test_plain_list_mappings_stays_offline(invoke, config_path, sandbox, sandbox_env):
    mappings = data.seed_mappings(sandbox.state.today)
    mappings[-1]["prorate"] = True  # Granite
    doc = make_config(mappings, sync={"prorate": False})
    doc["autotask"] = {"username": sandbox.username}
    write_config(config_path, doc)
    result = invoke("list-mappings", "--json", env=sandbox_env)
    assert result.exit_code == 0, result.output
    rows = {row["client_id"]: row for row in json.loads(result.stdout)}
    # Offline: the config says only whether writes are dated the 1st; no date is read.
    assert {client_id: row["prorate"] for client_id, row in rows.items()} == {
        client_id: client_id == data.GRANITE_CLIENT_ID for client_id in rows
    }
    assert {row["writes_dated"] for row in rows.values()} == {None}
    table = invoke("list-mappings", env=sandbox_env).stdout.splitlines()
    granite = next(line for line in table if line.startswith(f"{data.GRANITE_CLIENT_ID} "))
    acme = next(line for line in table if line.startswith(f"{data.ACME_CLIENT_ID} "))
    assert "the 1st (prorate)" in granite and "billing period start" in acme
    assert _autotask(sandbox) == []


def test_check_of_a_broken_chain_leaves_writes_dated_empty(invoke, config_path, sandbox_env):
    mapping = {**data.seed_mapping(data.ACME_CLIENT_ID), "contract_id": 29689999}
    doc = make_config([mapping])
    doc["autotask"] = {"username": "x"}
    write_config(config_path, doc)
    result = invoke("list-mappings", "--check", "--json", env=sandbox_env)
    assert result.exit_code == 1
    (row,) = json.loads(result.stdout)
    assert row["writes_dated"] is None and row["status"].startswith("contract 29689999 not found")


# --- search-accounts --contracts: per-unit rates -------------------------------------------


def _search(invoke, sandbox_env, query):
    result = invoke("search-accounts", query, "--contracts", "--json", env=sandbox_env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_search_shows_per_unit_rates_not_extended_amounts(invoke, cfg, sandbox, sandbox_env):
    (granite,) = _search(invoke, sandbox_env, "granite")
    assert granite["units"] == 12
    # the row shows 12 x 4.50 = 54.00: the rate is the row's price / units
    row = sandbox.state.row_covering(data.GRANITE_CONTRACT_SERVICE_ID, date.today())
    assert row["price"] == 54.0
    assert (granite["unit_price"], granite["unit_cost"]) == (
        data.SERVICE_UNIT_PRICE,
        data.SERVICE_UNIT_COST,
    )


def test_search_rates_follow_the_row_and_the_contract_service_at_0_units(
    invoke, cfg, sandbox, sandbox_env
):
    this = sandbox.state.this_month
    state = sandbox.state
    cs = data.GRANITE_CONTRACT_SERVICE_ID
    # This month's period is split: 11 units at 23.10 (extended 254.10) from the 17th on.
    state.add_units_row(
        contract_service_id=cs,
        start=this.replace(day=17),
        end=add_months(this, 1).replace(day=16),
        units=11,
        unit_price=23.1,
        unit_cost=None,  # the API user cannot see costs
    )
    (granite,) = _search(invoke, sandbox_env, "granite")
    assert (granite["units"], granite["unit_price"], granite["unit_cost"]) == (11, 23.1, None)
    table = invoke("search-accounts", "granite", "--contracts", env=sandbox_env)
    assert table.stdout.splitlines()[2].split()[-3:] == ["11", "23.10", "-"]

    state.add_units_row(
        contract_service_id=cs,
        start=this.replace(day=17),
        end=add_months(this, 1).replace(day=16),
        units=0,
        unit_price=23.1,
        unit_cost=9.0,
    )
    (granite,) = _search(invoke, sandbox_env, "granite")
    # 0 units: the row says nothing about the rate; the contract service's own is shown
    assert (granite["units"], granite["unit_price"], granite["unit_cost"]) == (
        0,
        data.SERVICE_UNIT_PRICE,
        data.SERVICE_UNIT_COST,
    )


def test_search_units_of_a_quarterly_contract_are_the_current_periods(
    invoke, cfg, sandbox, sandbox_env
):
    (harbor,) = _search(invoke, sandbox_env, "harbor")
    assert (harbor["units"], harbor["unit_price"]) == (9, data.SERVICE_UNIT_PRICE)


def test_search_table_shows_rate_columns(invoke, cfg, sandbox, sandbox_env):
    result = invoke("search-accounts", "acme dental", "--contracts", env=sandbox_env)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[-6:] == ["Service", "Units", "Unit", "price", "Unit", "cost"]
    assert lines[2].split()[-3:] == ["10", "4.50", "2.25"]


# --- Billing: what is said for every kind of period ----------------------------------------


@pytest.mark.parametrize(
    ("start", "months", "prorate", "dated"),
    [
        (date(2026, 1, 1), 1, False, "the 1st"),
        (date(2026, 1, 1), 1, True, "the 1st"),
        (date(2025, 12, 17), 1, False, "the 17th (monthly from the 17th)"),
        (date(2025, 12, 31), 1, False, "the 28th (monthly from the 31st)"),
        (date(2025, 12, 17), 1, True, "the 1st, prorated"),
        (date(2025, 11, 17), 3, False, "2026-02-17 (quarterly)"),
        (date(2025, 11, 1), 3, False, "2026-02-01 (quarterly)"),
        (date(2025, 11, 1), 3, True, "the 1st (prorate)"),
        (date(2025, 12, 1), 3, True, "the 1st, prorated"),
        (date(2025, 6, 1), 6, False, "2026-06-01 (semi-annual)"),
        (date(2025, 2, 17), 12, False, "2026-02-17 (yearly)"),
        (date(2025, 3, 10), 12, False, "2026-03-10 (yearly)"),
        (None, 1, False, "unknown billing period"),
        (date(2026, 1, 1), None, False, "unknown billing period"),
        (date(2026, 1, 1), None, True, "the 1st (prorate)"),
    ],
)
def test_writes_dated_for_february(start, months, prorate, dated):
    first = date(2026, 2, 1)
    billing = Billing(schedule(start, months, first, prorate=prorate), first, 9)
    assert view.writes_dated(billing) == dated


def test_proration_names_the_period_it_splits_without_drift():
    first = date(2026, 3, 1)
    billing = Billing(schedule(date(2025, 10, 31), 1, first, prorate=True), first, 3)
    assert billing.schedule.covering_start(billing.first) == date(2026, 2, 28)
    assert view.billing_lines(billing)[1] == (
        "Writes are dated the 1st: Autotask will prorate the period from 2026-02-28, a "
        "proration it cannot delete."
    )
    quarterly = Billing(schedule(date(2025, 11, 17), 3, first, prorate=True), first, 4)
    assert quarterly.schedule.covering_start(quarterly.first) == date(2026, 2, 17)


def test_unknown_period_lines_say_what_to_do():
    first = date(2026, 2, 1)
    unknown = Billing(schedule(date(2026, 1, 1), None, first, prorate=False), first, 9)
    assert view.billing_lines(unknown) == [
        "Billing period: unknown (contractPeriodType 9 has no label this tool reads)",
        "sync cannot date this client's writes: fix the contract in Autotask, or run map again "
        "with --prorate to write on the 1st (Autotask then prorates).",
    ]
    assert view.billing_fields(unknown, prorate=False)["billing_period"] is None
    started = Billing(schedule(date(2026, 5, 1), 3, first, prorate=True), first, 4)
    # the contract has not started yet
    assert started.schedule.covering_start(started.first) is None
    assert view.billing_lines(started)[1].startswith(
        "The contract starts 2026-05-01: writes are dated from 2026-05-01, then the 1st"
    )
