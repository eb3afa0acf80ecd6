"""The sandbox models what live Autotask tenants do (AUTOTASK_API.md, SPEC §8): extended units
amounts, per-unit adjustments, the tenant's date rule, billing periods, InternalLocations,
company 0 and the duplicate-date and null-itemId reports. Real HTTP to the loopback sandbox."""

from __future__ import annotations

import subprocess
import sys
from datetime import date

import pytest
import requests

from infima_autotask.sandbox import Sandbox, data

TODAY = date(2026, 3, 10)
T = 5  # seconds: client timeout for every request
ACME_CS = data.ACME_CONTRACT_SERVICE_ID


@pytest.fixture
def sb():
    with Sandbox(today=TODAY) as sandbox:
        yield sandbox


class At:
    """A tiny authenticated Autotask client for the tests."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.base = sandbox.autotask_url + "v1.0/"
        self.session = requests.Session()
        self.session.headers.update(
            {
                "ApiIntegrationCode": sandbox.integration_code,
                "UserName": sandbox.username,
                "Secret": sandbox.secret,
            }
        )

    def get(self, path, **kwargs):
        return self.session.get(self.base + path, timeout=T, **kwargs)

    def post(self, path, body):
        url = path if path.startswith("http") else self.base + path
        return self.session.post(url, json=body, timeout=T)

    def items(self, entity, *filters, **extra):
        response = self.post(f"{entity}/query", {"filter": list(filters), **extra})
        assert response.status_code == 200, response.text
        return response.json()["items"]

    def adjust(self, body):
        return self.post("ContractServiceAdjustments", body)


@pytest.fixture
def at(sb):
    return At(sb)


def adjustment(effective, change, *, cs=ACME_CS, contract=data.ACME_CONTRACT_ID, **rates):
    """An adjustment body; ``rates`` adds adjustedUnitPrice/adjustedUnitCost when given."""
    return {
        "contractID": contract,
        "contractServiceID": cs,
        "serviceID": data.SERVICE_ID,
        "effectiveDate": effective,
        "unitChange": change,
        **rates,
    }


def rows_of(sb, cs):
    return [
        (r["startDate"][:10], r["endDate"][:10], r["units"], r["price"], r["cost"])
        for r in sb.state.units_rows(cs)
    ]


def periods_of(sb, cs):
    return [
        (r["startDate"][:10], r["endDate"][:10], bool(r["approveAndPostDate"]))
        for r in sb.state.units_rows(cs)
    ]


def eq(field, value):
    return {"op": "eq", "field": field, "value": value}


# --- extended amounts ------------------------------------------------------------------


def test_units_rows_hold_extended_amounts_and_contract_services_per_unit_rates(at):
    cs_ids = [ACME_CS, data.ACME_BACKUP_CONTRACT_SERVICE_ID, data.COBALT_CONTRACT_SERVICE_ID]
    services = at.items(
        "ContractServices",
        {"op": "in", "field": "id", "value": cs_ids},
        includeFields=["unitPrice", "unitCost"],
    )
    assert services == [
        {"id": ACME_CS, "unitPrice": 4.5, "unitCost": 2.25},
        {"id": data.ACME_BACKUP_CONTRACT_SERVICE_ID, "unitPrice": 3.0, "unitCost": 1.0},
        {"id": data.COBALT_CONTRACT_SERVICE_ID, "unitPrice": 4.5, "unitCost": 2.25},
    ]
    rows = at.items(
        "ContractServiceUnits",
        {"op": "in", "field": "contractServiceID", "value": cs_ids},
        eq("startDate", "2026-03-01T00:00:00"),
    )
    assert [(r["contractServiceID"], r["units"], r["price"], r["cost"]) for r in rows] == [
        (ACME_CS, 10, 45.0, 22.5),
        (data.COBALT_CONTRACT_SERVICE_ID, 40, 180.0, 90.0),
        (data.ACME_BACKUP_CONTRACT_SERVICE_ID, 10, 30.0, 10.0),
    ]


def test_extended_amount_rounds_to_cents_and_keeps_a_null_cost():
    assert data.extended_amount(11, 23.10) == 254.10
    assert data.extended_amount(3, 0.3333) == 1.0
    assert data.extended_amount(0, 4.5) == 0.0
    assert data.extended_amount(5, None) is None


def test_adjustment_rates_are_per_unit_and_reprice_the_split_and_later_rows(sb, at):
    body = adjustment("2026-03-15T14:30:00Z", 2, adjustedUnitPrice=5.0, adjustedUnitCost=2.5)
    assert at.adjust(body).status_code == 200
    assert rows_of(sb, ACME_CS) == [
        ("2026-02-01", "2026-02-28", 10, 45.0, 22.5),
        ("2026-03-01", "2026-03-15", 10, 45.0, 22.5),
        ("2026-03-15", "2026-03-31", 12, 60.0, 30.0),
        ("2026-04-01", "2026-04-30", 12, 60.0, 30.0),
    ]


def test_omitted_rates_keep_each_rows_own_per_unit_rate(sb, at):
    # A live row: 11 units at 23.10 a unit shows price 254.10 (AUTOTASK_API.md).
    march = sb.state.row_covering(ACME_CS, date(2026, 3, 1))
    march.update(units=11, price=254.10, cost=None)  # API user without cost visibility
    april = sb.state.row_covering(ACME_CS, date(2026, 4, 1))
    april.update(units=11, price=275.0, cost=24.75)  # 25.00 and 2.25 a unit from April
    assert at.adjust(adjustment("2026-03-01T14:30:00Z", 1)).status_code == 200
    assert rows_of(sb, ACME_CS)[1:] == [
        ("2026-03-01", "2026-03-31", 12, 277.2, None),
        ("2026-04-01", "2026-04-30", 12, 300.0, 27.0),
    ]


def test_at_zero_units_the_contract_services_rates_stand_in(sb, at):
    sb.state.contract_services[ACME_CS].update(unitPrice=6.0, unitCost=3.0)
    to_zero = adjustment("2026-03-01T14:30:00Z", -10, adjustedUnitPrice=4.5, adjustedUnitCost=2.25)
    assert at.adjust(to_zero).status_code == 200
    assert rows_of(sb, ACME_CS)[1][2:] == (0, 0.0, 0.0)
    assert at.adjust(adjustment("2026-03-01T14:30:00Z", 4)).status_code == 200
    assert rows_of(sb, ACME_CS)[1:] == [
        ("2026-03-01", "2026-03-31", 4, 24.0, 12.0),
        ("2026-04-01", "2026-04-30", 4, 24.0, 12.0),
    ]


def test_a_given_cost_fills_a_null_cost(sb, at):
    for row in sb.state.units_rows(ACME_CS):
        row["cost"] = None
    body = adjustment("2026-03-01T14:30:00Z", 0, adjustedUnitPrice=4.5, adjustedUnitCost=2.0)
    assert at.adjust(body).status_code == 200
    assert [r[4] for r in rows_of(sb, ACME_CS)] == [None, 20.0, 20.0]


# --- the tenant's date rule ------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "zone", "sent", "stored"),
    [
        ("convert", "America/New_York", "2026-12-01T00:00:00", date(2026, 11, 30)),
        ("utc", "America/New_York", "2026-12-01T00:00:00", date(2026, 12, 1)),
        ("convert", "America/New_York", "2026-12-01T14:30:00Z", date(2026, 12, 1)),
        ("utc", "America/New_York", "2026-12-01T14:30:00Z", date(2026, 12, 1)),
        ("convert", "Pacific/Auckland", "2026-12-01T05:30:00Z", date(2026, 12, 1)),
        ("utc", "Pacific/Auckland", "2026-12-01T05:30:00Z", date(2026, 12, 1)),
        ("convert", "Pacific/Auckland", "2026-11-30T12:00:00Z", date(2026, 12, 1)),
        ("convert", "America/New_York", "2026-12-01T03:00:00+05:00", date(2026, 11, 30)),
        ("convert", "America/New_York", "2026-12-01T12:00:00.1234567Z", date(2026, 12, 1)),
    ],
)
def test_effective_date_lands_on_the_date_of_the_rule(rule, zone, sent, stored):
    sandbox = Sandbox(today=date(2026, 12, 10))
    sandbox.state.date_rule = rule
    sandbox.state.tenant_timezone = zone
    # Unpost November so an adjustment dated the 30th is accepted and shows where it landed.
    for row in sandbox.state.units_rows(ACME_CS):
        row["approveAndPostDate"] = None
    with sandbox:
        response = At(sandbox).adjust(adjustment(sent, 2, adjustedUnitPrice=4.5))
        assert response.status_code == 200, response.text
    [applied] = sandbox.adjustments()
    assert applied["storedDate"] == stored.isoformat() and applied["effectiveDate"] == sent
    assert sandbox.units_on(ACME_CS, stored) == 12
    assert [r[0] for r in rows_of(sandbox, ACME_CS) if r[2] == 12][0] == stored.isoformat()


def test_autotasks_own_example_lands_a_day_early_under_convert():
    state = data.SandboxState(today=date(2023, 10, 9))
    assert state.stored_date("2023-10-09T02:00:00") == date(2023, 10, 8)
    state.date_rule = "utc"
    assert state.stored_date("2023-10-09T02:00:00") == date(2023, 10, 9)
    with pytest.raises(ValueError, match="date_rule"):
        data.SandboxState(today=TODAY, date_rule="local")


def test_midnight_of_the_first_under_convert_hits_the_posted_previous_month(sb, at):
    response = at.adjust(adjustment("2026-03-01T00:00:00", 1, adjustedUnitPrice=4.5))
    assert response.status_code == 500
    assert "already approved and posted" in response.json()["errors"][0]
    sb.state.date_rule = "utc"
    assert at.adjust(adjustment("2026-03-01T00:00:00", 1, adjustedUnitPrice=4.5)).ok
    assert sb.units_on(ACME_CS, date(2026, 3, 1)) == 11


# --- InternalLocations -----------------------------------------------------------------


def test_default_internal_location_shows_the_tenant_time_zone(sb, at):
    default = eq("isDefault", True)
    assert at.items("InternalLocations", default) == [
        {"id": 1, "name": "Head Office", "isDefault": True, "timeZone": "America/New_York"}
    ]
    sb.state.tenant_timezone = "Australia/Sydney"
    assert at.items("InternalLocations", default)[0]["timeZone"] == "Australia/Sydney"
    assert at.get("InternalLocations/1").json()["item"]["timeZone"] == "Australia/Sydney"
    sb.state.internal_locations[1]["timeZone"] = "Eastern Standard Time"
    assert at.items("InternalLocations", default)[0]["timeZone"] == "Eastern Standard Time"
    sb.state.internal_locations[1]["timeZone"] = None
    assert at.items("InternalLocations", default)[0]["timeZone"] is None
    assert at.items("InternalLocations", eq("isDefault", False)) == []


def test_internal_locations_have_field_information_and_faults(sb, at):
    fields = at.get("InternalLocations/entityInformation/fields").json()["fields"]
    assert {f["name"]: f["dataType"] for f in fields} == {
        "id": "long",
        "name": "string",
        "isDefault": "boolean",
        "timeZone": "string",
    }
    sb.faults.add("InternalLocations", "503")
    body = {"filter": [eq("isDefault", True)]}
    assert at.post("InternalLocations/query", body).status_code == 503
    assert at.post("InternalLocations/query", body).status_code == 200


# --- billing periods -------------------------------------------------------------------


def test_contract_period_type_is_a_picklist_read_by_label(at):
    fields = at.get("Contracts/entityInformation/fields").json()["fields"]
    [period] = [f for f in fields if f["name"] == "contractPeriodType"]
    labels = {v["value"]: v["label"] for v in period["picklistValues"]}
    assert period["isPickList"] and period["dataType"] == "integer"
    assert labels == {"3": "Monthly", "4": "Quarterly", "5": "Semi-Annual", "6": "Yearly"}
    contracts = at.items(
        "Contracts",
        {"op": "in", "field": "id", "value": [data.ACME_CONTRACT_ID, data.GRANITE_CONTRACT_ID,
                                              data.HARBOR_CONTRACT_ID, data.IRIS_CONTRACT_ID]},
        includeFields=["startDate", "contractPeriodType"],
    )  # fmt: skip
    assert [(c["startDate"], labels[str(c["contractPeriodType"])]) for c in contracts] == [
        ("2025-03-01T00:00:00", "Monthly"),
        ("2025-03-17T00:00:00", "Monthly"),
        ("2025-02-01T00:00:00", "Quarterly"),
        ("2025-10-01T00:00:00", "Yearly"),
    ]


def test_granite_is_billed_monthly_from_the_17th(sb, at):
    assert periods_of(sb, data.GRANITE_CONTRACT_SERVICE_ID) == [
        ("2026-01-17", "2026-02-16", True),  # ended before this month: posted
        ("2026-02-17", "2026-03-16", False),
        ("2026-03-17", "2026-04-16", False),
        ("2026-04-17", "2026-05-16", False),
    ]
    # The tool's batched units read for March: rows overlapping 28 February to 31 March.
    rows = at.items(
        "ContractServiceUnits",
        {"op": "in", "field": "contractServiceID", "value": [data.GRANITE_CONTRACT_SERVICE_ID]},
        {"op": "lte", "field": "startDate", "value": "2026-03-31T00:00:00"},
        {"op": "gte", "field": "endDate", "value": "2026-02-28T00:00:00"},
    )
    assert [(r["startDate"][:10], r["units"], r["price"], r["cost"]) for r in rows] == [
        ("2026-02-17", 12, 54.0, 27.0),
        ("2026-03-17", 12, 54.0, 27.0),
    ]
    assert sb.state.infima_clients[data.GRANITE_CLIENT_ID].active == 14
    assert data.seed_mapping(data.GRANITE_CLIENT_ID, TODAY) in data.seed_mappings(TODAY)


def test_granite_written_on_the_17th_changes_that_period_on(sb, at):
    body = adjustment(
        "2026-03-17T14:30:00Z",
        2,
        cs=data.GRANITE_CONTRACT_SERVICE_ID,
        contract=data.GRANITE_CONTRACT_ID,
        adjustedUnitPrice=4.5,
        adjustedUnitCost=2.25,
    )
    assert at.adjust(body).status_code == 200
    assert [r[2] for r in rows_of(sb, data.GRANITE_CONTRACT_SERVICE_ID)] == [12, 12, 14, 14]


def test_quarterly_and_yearly_clients_have_no_period_starting_this_month(sb):
    assert periods_of(sb, data.HARBOR_CONTRACT_SERVICE_ID) == [("2026-02-01", "2026-04-30", False)]
    assert periods_of(sb, data.IRIS_CONTRACT_SERVICE_ID) == [("2025-10-01", "2026-09-30", False)]
    assert sb.units_on(data.HARBOR_CONTRACT_SERVICE_ID, date(2026, 3, 1)) == 9
    assert sb.units_on(data.IRIS_CONTRACT_SERVICE_ID, date(2026, 3, 1)) == 18
    mapped = {m["client_id"] for m in data.seed_mappings(TODAY)}
    assert data.HARBOR_CLIENT_ID not in mapped and data.IRIS_CLIENT_ID not in mapped
    harbor = data.seed_mapping(data.HARBOR_CLIENT_ID, TODAY)
    assert harbor["contract_service_id"] == data.HARBOR_CONTRACT_SERVICE_ID
    assert data.map_args(harbor)[:2] == ["map", "107"]


@pytest.mark.parametrize(
    ("start", "period_type", "k", "expected"),
    [
        (date(2028, 1, 31), data.MONTHLY, 1, date(2028, 2, 29)),
        (date(2028, 1, 31), data.MONTHLY, 2, date(2028, 3, 31)),
        (date(2027, 1, 31), data.MONTHLY, 1, date(2027, 2, 28)),
        (date(2026, 11, 30), data.QUARTERLY, 1, date(2027, 2, 28)),
        (date(2026, 8, 31), data.SEMI_ANNUAL, 1, date(2027, 2, 28)),
        (date(2028, 2, 29), data.YEARLY, 1, date(2029, 2, 28)),
        (date(2028, 2, 29), data.YEARLY, 4, date(2032, 2, 29)),
    ],
)
def test_period_starts_clamp_without_drifting(start, period_type, k, expected):
    assert data.period_start(start, period_type, k) == expected


def test_generate_monthly_from_the_31st_clamps_then_returns_to_the_31st():
    sandbox = Sandbox(today=TODAY, seed=False)
    [mapping] = sandbox.generate(1, changed_fraction=0, start_day=31)
    contract = sandbox.state.contracts[mapping["contract_id"]]
    assert contract["startDate"] == "2025-03-31T00:00:00"
    assert periods_of(sandbox, mapping["contract_service_id"]) == [
        ("2026-01-31", "2026-02-27", True),
        ("2026-02-28", "2026-03-30", False),
        ("2026-03-31", "2026-04-29", False),
        ("2026-04-30", "2026-05-30", False),
    ]
    units = sandbox.state.row_covering(mapping["contract_service_id"], date(2026, 3, 1))["units"]
    assert sandbox.state.infima_clients[mapping["client_id"]].active == units


def test_generate_quarterly_and_period_rows_with_a_wider_window():
    sandbox = Sandbox(today=TODAY, seed=False)
    [mapping] = sandbox.generate(1, period_type=data.QUARTERLY)
    assert periods_of(sandbox, mapping["contract_service_id"]) == [
        ("2025-12-01", "2026-02-28", True),
        ("2026-03-01", "2026-05-31", False),
    ]
    state = sandbox.state
    cs = mapping["contract_service_id"]
    for row in state.units_rows(cs):
        del state.units[row["id"]]
    rows = state.add_period_rows(
        cs, 3, unit_price=1.0, unit_cost=None, since=date(2025, 3, 1), until=date(2027, 12, 31)
    )
    # From the contract's start to its end (two years), never past it.
    assert [r["startDate"][:10] for r in rows] == [
        "2025-03-01", "2025-06-01", "2025-09-01", "2025-12-01", "2026-03-01", "2026-06-01",
        "2026-09-01", "2026-12-01",
    ]  # fmt: skip
    assert rows[-1]["endDate"][:10] == "2027-02-28"
    assert {(r["price"], r["cost"]) for r in rows} == {(3.0, None)}
    with pytest.raises(ValueError, match="contractPeriodType"):
        sandbox.generate(1, period_type=1, first_client_id=5000)
    with pytest.raises(ValueError, match="day"):
        sandbox.generate(1, start_day=32, first_client_id=5000)


# --- company 0 -------------------------------------------------------------------------


def test_company_0_is_the_tenants_own_active_organization(at):
    [own] = at.items("Companies", eq("id", 0))
    assert own == {
        "id": 0,
        "companyName": "Sandbox MSP (own organization)",
        "companyType": data.CUSTOMER,
        "isActive": True,
    }
    assert at.get("Companies/0").json()["item"] == own
    # Paging starts before id 0, so a first page of one item is company 0.
    body = {"maxRecords": 1, "filter": [{"op": "gte", "field": "id", "value": 0}]}
    first = at.post("Companies/query", body).json()
    assert [c["id"] for c in first["items"]] == [0]
    second = at.post(first["pageDetails"]["nextPageUrl"], body).json()
    assert [c["id"] for c in second["items"]] == [data.ACME_ACCOUNT_ID]
    named = {"op": "contains", "field": "companyName", "value": "own organization"}
    assert [c["id"] for c in at.items("Companies", named)] == [0]


# --- switches --------------------------------------------------------------------------


def test_refuse_duplicate_dates_refuses_a_second_adjustment_on_one_stored_date(sb, at):
    sb.state.refuse_duplicate_dates = True
    first = adjustment("2026-03-15T14:30:00Z", 2, adjustedUnitPrice=4.5)
    assert at.adjust(first).status_code == 200
    before = rows_of(sb, ACME_CS)
    # Another instant of the same stored date (New York) is the same period row.
    second = adjustment("2026-03-16T01:00:00Z", 1, adjustedUnitPrice=4.5)
    response = at.adjust(second)
    assert response.status_code == 500
    assert response.json() == {
        "errors": ["Attempt to insert duplicate data into contract_service_period."]
    }
    assert rows_of(sb, ACME_CS) == before and len(sb.adjustments()) == 1
    # Another date, or another contract service on the same date, is fine.
    assert at.adjust(adjustment("2026-03-20T14:30:00Z", 1, adjustedUnitPrice=4.5)).ok
    birch = adjustment(
        "2026-03-15T14:30:00Z",
        1,
        cs=data.BIRCH_CONTRACT_SERVICE_ID,
        contract=data.BIRCH_CONTRACT_ID,
        adjustedUnitPrice=4.5,
    )
    assert at.adjust(birch).ok


def test_without_the_switch_a_second_adjustment_on_one_date_applies(sb, at):
    for change in (2, 1):
        assert at.adjust(adjustment("2026-03-15T14:30:00Z", change)).ok
    assert sb.units_on(ACME_CS, date(2026, 3, 15)) == 13


def test_null_item_id_answers_null_but_applies(sb, at):
    sb.state.null_item_id = True
    response = at.adjust(adjustment("2026-03-01T14:30:00Z", 3))
    assert response.status_code == 200 and response.json() == {"itemId": None}
    assert sb.units_on(ACME_CS, date(2026, 3, 1)) == 13 and len(sb.adjustments()) == 1


# --- the standalone sandbox ------------------------------------------------------------


def test_the_standalone_sandbox_answers_help_without_starting():
    done = subprocess.run(
        [sys.executable, "-m", "infima_autotask.sandbox", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and "takes no options" in done.stdout
    assert "export" not in done.stdout
