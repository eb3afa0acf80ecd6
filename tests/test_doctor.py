"""`doctor` through the real CLI against the loopback sandbox: every check, and nothing written."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from conftest import make_config, write_config

from infima_autotask.billing import wire_effective_date
from infima_autotask.cli import cli
from infima_autotask.sandbox import data

ZONE = data.DEFAULT_TENANT_TIMEZONE  # the sandbox tenant's zone (America/New_York)


def _config(config_path, sandbox, clients=data.SEED_MAPPED_CLIENT_IDS, **sections):
    mappings = [data.seed_mapping(client_id, sandbox.state.today) for client_id in clients]
    autotask = {"username": sandbox.username, "timezone": ZONE, **sections.pop("autotask", {})}
    doc = make_config(mappings, autotask=autotask, **sections)
    write_config(config_path, doc)
    return doc


@pytest.fixture
def doctor(invoke, sandbox_env):
    """Run `doctor --json` (plus arguments); returns (exit code, {check: (result, detail)}, run)."""

    def run(*args, env=None):
        result = invoke("doctor", "--json", *args, env={**sandbox_env, **(env or {})})
        rows = json.loads(result.stdout) if result.stdout.strip() else []
        assert all(list(row) == ["check", "client_id", "result", "detail"] for row in rows)
        for row in rows:  # a check about one client names it in the row and in its own field
            client_id = row["client_id"]
            assert client_id is None or row["check"].startswith(f"client {client_id}: ")
        checks = {row["check"]: (row["result"], row["detail"]) for row in rows}
        return result.exit_code, checks, result

    return run


def _row(sandbox, cs_id, day):
    with sandbox.state.lock:
        return sandbox.state.row_covering(cs_id, day)


def _autotask_requests(sandbox):
    return [r for r in sandbox.requests if r.service == "autotask"]


def test_all_ok_on_the_sandbox_and_nothing_written(
    doctor, config_path, sandbox, sandbox_env, tmp_path, memkeyring
):
    _config(config_path, sandbox)
    before = config_path.read_bytes()
    code, checks, result = doctor()
    assert code == 0, result.output
    assert {result for result, _ in checks.values()} == {"ok"}, checks
    assert result.stderr.strip().endswith("0 warn, 0 fail")
    for client_id in data.SEED_MAPPED_CLIENT_IDS:
        for what in (
            "chain",
            "billing period",
            "units row",
            "price basis",
            "write",
            "cost visibility",
            "INFIMA users",
        ):
            assert f"client {client_id}: {what}" in checks
    assert checks["client 101: price basis"][1].startswith("extended, as expected")
    assert "12 active of 15 listed" in checks["client 101: INFIMA users"][1]
    assert "1 of 10000 requests this hour" in checks["Autotask connection"][1]
    # Read-only: no adjustment, the config byte for byte, no history database, no state folder.
    assert sandbox.adjustments() == []
    assert config_path.read_bytes() == before
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / "state-home").exists()
    assert memkeyring._store == {}
    posts = [r.path for r in _autotask_requests(sandbox) if r.method != "GET"]
    assert posts and all(path.endswith("/query") for path in posts)  # queries only, no create
    # Batched like sync: threshold, zone, contracts, services, units, picklists.
    assert len(_autotask_requests(sandbox)) == 6


def test_json_rows_name_the_client_apart(invoke, config_path, sandbox, sandbox_env):
    _config(config_path, sandbox, clients=[data.ACME_CLIENT_ID])
    result = invoke("doctor", "--json", env=sandbox_env)
    assert result.exit_code == 0, result.output
    rows = {row["check"]: row for row in json.loads(result.stdout)}
    assert rows["Autotask connection"]["client_id"] is None
    assert rows["client 101: chain"]["client_id"] == data.ACME_CLIENT_ID
    assert rows["client 101: INFIMA users"]["client_id"] == data.ACME_CLIENT_ID


def test_table_output_and_help(invoke, config_path, sandbox, sandbox_env, runner):
    _config(config_path, sandbox, clients=[data.ACME_CLIENT_ID])
    result = invoke("doctor", env=sandbox_env)
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0].split()
    assert header == ["Check", "Result", "Detail"]
    assert "client 101: price basis" in result.stdout
    help_text = runner.invoke(cli, ["doctor", "--help"]).output
    assert [line.strip() for line in help_text.rstrip().splitlines()[-3:]] == [
        "Example:",
        "infima-autotask doctor",
        "infima-autotask doctor --client 101 --json",
    ]


def test_granite_billed_from_the_17th_is_dated_the_17th(doctor, config_path, sandbox):
    _config(config_path, sandbox, clients=[data.GRANITE_CLIENT_ID])
    code, checks, result = doctor()
    assert code == 0, result.output
    e = sandbox.state.this_month.replace(day=data.GRANITE_START_DAY)
    status, detail = checks["client 106: billing period"]
    assert status == "ok"
    assert detail.startswith("monthly from the 17th (1 month a period)")
    assert f"dated {e.isoformat()}" in detail
    assert detail.endswith("not approved and posted yet")
    assert f"from {e.isoformat()} to " in checks["client 106: units row"][1]
    write = checks["client 106: write"][1]
    assert f"effectiveDate {wire_effective_date(e, ZONE)} (for {ZONE})" in write
    assert "adjustedUnitPrice 4.50, adjustedUnitCost 2.25" in write


def test_a_quarterly_client_with_no_period_this_month_is_skipped(doctor, config_path, sandbox):
    _config(config_path, sandbox, clients=[data.HARBOR_CLIENT_ID, data.IRIS_CLIENT_ID])
    code, checks, result = doctor()
    assert code == 0, result.output
    status, detail = checks["client 107: billing period"]
    assert status == "ok"
    this = sandbox.state.this_month
    next_start = data.add_months(this, 2)  # quarterly from the 1st of month -13
    assert detail.startswith(f"skipped in {this:%Y-%m}: no billing period starts this month")
    assert f"the next starts {next_start.isoformat()}" in detail
    assert "quarterly" in detail
    assert "client 107: write" not in checks  # nothing is written this month
    assert checks["client 107: units row"][0] == "ok"
    assert checks["client 107: price basis"][0] == "ok"
    assert checks["client 108: billing period"][1].startswith("skipped")
    assert "yearly" in checks["client 108: billing period"][1]


@pytest.mark.parametrize(
    ("configured", "tenant", "result", "text"),
    [
        ("Europe/Berlin", None, "fail", f"writes would be dated for Europe/Berlin but the "
         f"tenant is {ZONE}: set autotask.timezone: {ZONE}"),
        ("America/Detroit", None, "ok", "autotask.timezone is America/Detroit"),  # same offsets
        (ZONE, "Eastern Standard Time", "ok", f"Eastern Standard Time ({ZONE})"),
        (None, None, "warn", f"autotask.timezone is not set; the tenant's zone is {ZONE}: set "
         f"autotask.timezone: {ZONE}"),
        (ZONE, "", "warn", "Autotask shows no time zone on the default InternalLocations"),
        (None, "", "warn", "within 11 hours of UTC"),
        (ZONE, "Mars Standard Time", "warn", "'Mars Standard Time' is not one this tool knows"),
    ],
)  # fmt: skip
def test_tenant_time_zone(doctor, config_path, sandbox, configured, tenant, result, text):
    _config(config_path, sandbox, clients=[data.ACME_CLIENT_ID], autotask={"timezone": configured})
    if tenant is not None:
        sandbox.state.internal_locations[data.HEAD_OFFICE_LOCATION_ID]["timeZone"] = tenant or None
    code, checks, run = doctor()
    status, detail = checks["Tenant time zone"]
    assert (status, code) == (result, 1 if result == "fail" else 0), detail
    assert text in detail


def test_a_refused_internal_locations_read_is_a_warning(doctor, config_path, sandbox):
    _config(config_path, sandbox, clients=[data.ACME_CLIENT_ID])
    sandbox.faults.add("InternalLocations", "500-errors")
    code, checks, result = doctor()
    assert code == 0, result.output
    status, detail = checks["Tenant time zone"]
    assert status == "warn"
    assert "could not read the default InternalLocations record (HTTP 500: Simulated" in detail
    assert f"make sure autotask.timezone ({ZONE})" in detail
    assert "Traceback" not in result.output


def test_a_row_holding_a_per_unit_price_fails_the_price_basis(doctor, config_path, sandbox):
    _config(config_path, sandbox, clients=[data.ACME_CLIENT_ID])
    this = sandbox.state.this_month
    with sandbox.state.lock:  # every row of the window per-unit: 4.50 for 10 units
        for row in sandbox.state.units.of_service(data.ACME_CONTRACT_SERVICE_ID):
            row.update(price=data.SERVICE_UNIT_PRICE, cost=data.SERVICE_UNIT_COST)
    code, checks, result = doctor()
    assert code == 1, result.output
    status, detail = checks["client 101: price basis"]
    assert status == "fail"
    row = _row(sandbox, data.ACME_CONTRACT_SERVICE_ID, this)
    assert detail.startswith(f"per-unit: row {row['id']} shows 4.50 for 10 units")
    assert "a write would set a wrong price" in detail
    assert result.stderr.strip().endswith("1 fail")
    assert sandbox.adjustments() == []


@pytest.mark.parametrize(
    ("units", "price", "text"),
    [
        (1, 4.5, "not decidable at 1 unit: row"),
        (0, 0.0, "not decidable at 0 units: row"),
        (10, 60.0, "(6.00 a unit), neither 10 x the contract service's unit price 4.50"),
    ],
)
def test_an_undecidable_price_basis_is_a_warning(doctor, config_path, sandbox, units, price, text):
    _config(config_path, sandbox, clients=[data.ACME_CLIENT_ID])
    with sandbox.state.lock:
        for row in sandbox.state.units.of_service(data.ACME_CONTRACT_SERVICE_ID):
            row.update(units=units, price=price)
    code, checks, result = doctor()
    assert code == 0, result.output
    status, detail = checks["client 101: price basis"]
    assert status == "warn"
    assert text in detail


def test_one_extended_row_in_the_window_decides(doctor, config_path, sandbox):
    """The row covering E at 1 unit cannot tell; the previous month's 10-unit row can."""
    _config(config_path, sandbox, clients=[data.ACME_CLIENT_ID])
    this = sandbox.state.this_month
    with sandbox.state.lock:
        sandbox.state.row_covering(data.ACME_CONTRACT_SERVICE_ID, this).update(units=1, price=4.5)
    code, checks, _ = doctor()
    previous = _row(sandbox, data.ACME_CONTRACT_SERVICE_ID, this - timedelta(days=1))
    assert checks["client 101: price basis"] == (
        "ok",
        f"extended, as expected: row {previous['id']} shows 45.00 for 10 units = 10 x 4.50 "
        "(the contract service's unit price)",
    )


def test_cost_invisible_fails(doctor, config_path, sandbox):
    _config(config_path, sandbox, clients=[data.ACME_CLIENT_ID, data.BIRCH_CLIENT_ID])
    with sandbox.state.lock:
        sandbox.state.row_covering(data.ACME_CONTRACT_SERVICE_ID, sandbox.state.this_month)[
            "cost"
        ] = None
    code, checks, result = doctor()
    assert code == 1
    status, detail = checks["client 101: cost visibility"]
    assert status == "fail"
    assert detail.endswith("the API user cannot see costs: grant cost visibility")
    assert checks["client 101: write"][0] == "warn"
    assert checks["client 102: cost visibility"][0] == "ok"


def test_a_posted_period_and_a_missing_row_fail(doctor, config_path, sandbox):
    _config(config_path, sandbox, clients=[data.ACME_CLIENT_ID, data.BIRCH_CLIENT_ID])
    this = sandbox.state.this_month
    with sandbox.state.lock:
        sandbox.state.row_covering(data.ACME_CONTRACT_SERVICE_ID, this)["approveAndPostDate"] = (
            data.wire_date(this)
        )
        birch = sandbox.state.row_covering(data.BIRCH_CONTRACT_SERVICE_ID, this)
        del sandbox.state.units[birch["id"]]
    code, checks, _ = doctor()
    assert code == 1
    status, detail = checks["client 101: billing period"]
    assert status == "fail"
    assert "is already approved and posted: the sync holds any change to it" in detail
    status, detail = checks["client 102: units row"]
    assert status == "fail"
    assert detail.startswith(
        f"no units row of contract service {data.BIRCH_CONTRACT_SERVICE_ID} covers {this}"
    )


def test_a_broken_chain_reuses_the_sync_rule(doctor, config_path, sandbox):
    doc = _config(config_path, sandbox, clients=[data.DELTA_CLIENT_ID])
    doc["mappings"][0].update(
        contract_id=data.DELTA_OLD_CONTRACT_ID,
        contract_service_id=data.DELTA_OLD_CONTRACT_SERVICE_ID,
    )
    write_config(config_path, doc)
    code, checks, _ = doctor()
    assert code == 1
    status, detail = checks["client 104: chain"]
    assert status == "fail"
    assert f"--contract {data.DELTA_RENEWAL_CONTRACT_ID}" in detail  # the renewal, as in sync
    assert "client 104: billing period" not in checks


def test_infima_users_without_status(doctor, config_path, sandbox):
    _config(config_path, sandbox, clients=[data.ACME_CLIENT_ID])
    sandbox.state.infima_clients[data.ACME_CLIENT_ID].no_status = True
    code, checks, _ = doctor()
    assert code == 1
    status, detail = checks["client 101: INFIMA users"]
    assert status == "fail"
    assert "set infima.count_users_without_status: true" in detail

    _config(
        config_path,
        sandbox,
        clients=[data.ACME_CLIENT_ID],
        infima={"count_users_without_status": True},
    )
    code, checks, _ = doctor()
    assert code == 0
    status, detail = checks["client 101: INFIMA users"]
    assert status == "warn"
    assert "no user carries a status field; all 15 listed users count" in detail


def test_client_option_and_an_unmapped_client(doctor, config_path, sandbox):
    _config(config_path, sandbox)
    code, checks, _ = doctor("--client", "106")
    assert code == 0
    clients = {name.split(":")[0] for name in checks if name.startswith("client ")}
    assert clients == {"client 106"}
    code, checks, result = doctor("--client", "999")
    assert code == 2
    assert result.stderr.startswith("Error: Client 999 is not mapped")


def test_connection_failures_exit_3_and_still_report(doctor, config_path, sandbox):
    _config(config_path, sandbox, clients=[data.ACME_CLIENT_ID])
    code, checks, result = doctor(env={"INFIMA_AUTOTASK_SECRET": "wrong"})
    assert code == 3
    status, detail = checks["Autotask connection"]
    assert status == "fail"
    assert "Autotask rejected the API username, secret or integration code" in detail
    assert checks["INFIMA connection"][0] == "ok"
    assert checks["client 101: INFIMA users"][0] == "ok"  # INFIMA still checked
    assert "client 101: chain" not in checks
    assert "Error: A connection failed (shown above)" in result.stderr
    assert "wrong" not in result.output

    code, checks, result = doctor(env={"INFIMA_API_KEY": "not-the-key"})
    assert code == 3
    assert checks["INFIMA connection"][0] == "fail"
    assert "INFIMA rejected the API key" in checks["INFIMA connection"][1]
    assert checks["client 101: price basis"][0] == "ok"  # Autotask still checked


def test_an_unreachable_autotask_exits_3(doctor, config_path, sandbox, no_backoff):
    _config(config_path, sandbox, clients=[data.ACME_CLIENT_ID])
    code, checks, result = doctor(env={"INFIMA_AUTOTASK_API_URL": "http://127.0.0.1:9/x/"})
    assert code == 3
    assert checks["Autotask connection"][0] == "fail"
    assert "Traceback" not in result.output


def test_doctor_from_the_counts_file(doctor, config_path, sandbox, tmp_path):
    counts = tmp_path / "counts.csv"
    counts.write_text("client_id,active_users\n101,12\n", encoding="utf-8")
    _config(
        config_path,
        sandbox,
        clients=[data.ACME_CLIENT_ID, data.BIRCH_CLIENT_ID],
        infima={"counts_file": str(counts)},
    )
    code, checks, _ = doctor()
    assert code == 1
    assert checks["INFIMA connection"] == ("ok", f"counts file {counts} (INFIMA API not used)")
    assert checks["client 101: INFIMA users"][0] == "ok"
    assert checks["client 102: INFIMA users"][0] == "fail"


def test_no_mappings_is_a_warning(doctor, config_path, sandbox):
    _config(config_path, sandbox, clients=[])
    code, checks, _ = doctor()
    assert code == 0
    assert checks["Mappings"][0] == "warn"


def test_a_forbidden_internal_locations_read_is_a_warning_too():
    """Autotask may answer a missing entity permission with 403: still only a warning."""
    from infima_autotask.doctor import tenant_zone
    from infima_autotask.errors import AuthenticationError

    class Forbidden:
        def query(self, *args, **kwargs):
            raise AuthenticationError("rejected", status=403)

    check = tenant_zone(Forbidden(), None, today=date.today())
    assert check.result == "warn"
    assert "could not read the default InternalLocations record (HTTP 403)" in check.detail
    assert "within 11 hours of UTC" in check.detail


def test_a_change_dated_after_e_fails_the_units_row(doctor, config_path, sandbox):
    """A write that landed a day late left a split on the 2nd: sync will not add to it."""
    _config(config_path, sandbox, clients=[data.ACME_CLIENT_ID])
    this = sandbox.state.this_month
    second = this + timedelta(days=1)
    with sandbox.state.lock:
        row = _row(sandbox, data.ACME_CONTRACT_SERVICE_ID, this)
        end = row["endDate"]
        row["endDate"] = f"{second.isoformat()}T00:00:00"
    sandbox.state.add_units_row(
        contract_service_id=data.ACME_CONTRACT_SERVICE_ID,
        start=second,
        end=date.fromisoformat(end[:10]),
        units=12,
        unit_price=data.SERVICE_UNIT_PRICE,
        unit_cost=data.SERVICE_UNIT_COST,
    )
    code, checks, result = doctor()
    assert code == 1, result.output
    status, detail = checks["client 101: units row"]
    assert status == "fail"
    assert f"dated {second.isoformat()}, after {this.isoformat()}" in detail
    assert "client 101: write" not in checks


def test_a_one_day_charge_the_day_before_e_fails_the_units_row(doctor, config_path, sandbox):
    """A write that landed a day early left 12 units on the 30th of last month alone."""
    _config(config_path, sandbox, clients=[data.ACME_CLIENT_ID])
    eve = sandbox.state.this_month - timedelta(days=1)
    sandbox.state.add_units_row(
        contract_service_id=data.ACME_CONTRACT_SERVICE_ID,
        start=eve,
        end=eve,
        units=12,
        unit_price=data.SERVICE_UNIT_PRICE,
        unit_cost=data.SERVICE_UNIT_COST,
    )
    code, checks, result = doctor()
    assert code == 1, result.output
    status, detail = checks["client 101: units row"]
    assert status == "fail"
    assert f"one-day change of contract service {data.ACME_CONTRACT_SERVICE_ID} on " in detail
    assert f"on {eve.isoformat()}, the day before" in detail
