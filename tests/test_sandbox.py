"""The sandbox answers as AUTOTASK_API.md and INFIMA_API.md describe, over real loopback HTTP."""

from __future__ import annotations

import sys
import threading
import time
from datetime import date

import pytest
import requests

from infima_autotask.sandbox import Sandbox, data

TODAY = date(2026, 3, 10)
THIS = "2026-03-01T00:00:00"
T = 5  # seconds: client timeout for every request


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

    def post(self, path, body, **kwargs):
        url = path if path.startswith("http") else self.base + path
        return self.session.post(url, json=body, timeout=T, **kwargs)

    def query(self, entity, *filters, **extra):
        return self.post(f"{entity}/query", {"filter": list(filters), **extra})

    def ids(self, entity, *filters):
        response = self.query(entity, *filters)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]


@pytest.fixture
def at(sb):
    return At(sb)


def infima(sb, path, **params):
    return requests.get(
        sb.infima_url + path, params=params, headers={"X-API-Key": sb.api_key}, timeout=T
    )


def adjustment(day, change, *, cs=data.ACME_CONTRACT_SERVICE_ID, contract=data.ACME_CONTRACT_ID):
    return {
        "contractID": contract,
        "contractServiceID": cs,
        "serviceID": data.SERVICE_ID,
        # Noon UTC moved back by half New York's offset: that date under either date rule.
        "effectiveDate": f"{day.isoformat()}T14:30:00Z",
        "unitChange": change,
        "adjustedUnitPrice": 4.5,
        "adjustedUnitCost": 2.25,
    }


# --- zone, auth, threshold -------------------------------------------------------------


def test_zone_lookup_needs_no_credentials_and_names_the_base_url(sb):
    response = requests.get(sb.zone_url, params={"user": sb.username}, timeout=T)
    assert response.status_code == 200
    body = response.json()
    assert body["url"] == sb.autotask_url
    assert body["url"].endswith("/atservicesrest/")
    assert body["zoneName"] == "Sandbox" and body["ci"] == 0
    # Paths are case-insensitive, as on the real hosts.
    upper = sb.zone_url.replace(
        "atservicesrest/v1.0/zoneInformation", "ATServicesRest/V1.0/ZoneInformation"
    )
    assert requests.get(upper, params={"user": sb.username}, timeout=T).json() == body


@pytest.mark.parametrize("user", ["someone@else.example", ""])
def test_zone_lookup_unknown_or_blank_user_is_500_with_errors(sb, user):
    response = requests.get(sb.zone_url, params={"user": user}, timeout=T)
    assert response.status_code == 500
    assert response.json() == {"errors": ["Zone information could not be determined"]}


def test_wrong_or_missing_credentials_get_401_with_empty_body(sb, at):
    at.session.headers["Secret"] = "wrong"
    response = at.query("Companies", {"op": "gt", "field": "id", "value": 0})
    assert response.status_code == 401 and response.content == b""
    response = requests.get(at.base + "ThresholdInformation", timeout=T)
    assert response.status_code == 401 and response.content == b""


def test_header_names_are_case_insensitive(sb):
    headers = {
        "apiintegrationcode": sb.integration_code,
        "USERNAME": sb.username,
        "secret": sb.secret,
    }
    response = requests.get(
        sb.autotask_url + "v1.0/ThresholdInformation", headers=headers, timeout=T
    )
    assert response.status_code == 200


def test_threshold_counts_authenticated_requests_plus_offset(sb, at):
    first = at.get("ThresholdInformation").json()
    assert first["externalRequestThreshold"] == 10000
    assert first["requestThresholdTimeframe"] == 60
    at.ids("Companies", {"op": "gt", "field": "id", "value": 0})
    requests.get(sb.zone_url, params={"user": sb.username}, timeout=T)  # not counted
    requests.get(at.base + "ThresholdInformation", timeout=T)  # 401: not counted
    sb.state.threshold_used_offset = 4000
    second = at.get("ThresholdInformation").json()
    assert (
        second["currentTimeframeRequestCount"] == first["currentTimeframeRequestCount"] + 2 + 4000
    )


# --- queries ---------------------------------------------------------------------------

COMPANY = {
    "own": data.OWN_COMPANY_ID,
    "acme": data.ACME_ACCOUNT_ID,
    "birch": data.BIRCH_ACCOUNT_ID,
    "cobalt": data.COBALT_ACCOUNT_ID,
    "delta": data.DELTA_ACCOUNT_ID,
    "evergreen": data.EVERGREEN_ACCOUNT_ID,
    "holdings": data.ACME_HOLDINGS_ACCOUNT_ID,
    "foxtrot": data.FOXTROT_VENDOR_ACCOUNT_ID,
    "granite": data.GRANITE_ACCOUNT_ID,
    "harbor": data.HARBOR_ACCOUNT_ID,
    "iris": data.IRIS_ACCOUNT_ID,
}


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"op": "eq", "field": "companyName", "value": "ACME DENTAL LLC"}, ["acme"]),
        ({"op": "noteq", "field": "companyType", "value": 1}, ["foxtrot"]),
        ({"op": "eq", "field": "isActive", "value": False}, ["holdings"]),
        ({"op": "gt", "field": "id", "value": data.DELTA_ACCOUNT_ID},
         ["evergreen", "holdings", "foxtrot", "granite", "harbor", "iris"]),
        ({"op": "gte", "field": "id", "value": data.ACME_HOLDINGS_ACCOUNT_ID},
         ["holdings", "foxtrot", "granite", "harbor", "iris"]),
        ({"op": "lt", "field": "id", "value": data.BIRCH_ACCOUNT_ID}, ["own", "acme"]),
        ({"op": "lte", "field": "id", "value": data.BIRCH_ACCOUNT_ID}, ["own", "acme", "birch"]),
        ({"op": "contains", "field": "companyName", "value": "acme"}, ["acme", "holdings"]),
        ({"op": "beginsWith", "field": "companyName", "value": "birch"}, ["birch"]),
        ({"op": "in", "field": "id", "value": [data.COBALT_ACCOUNT_ID, data.DELTA_ACCOUNT_ID, 1]},
         ["cobalt", "delta"]),
        (
            {"op": "or", "items": [
                {"op": "eq", "field": "id", "value": data.ACME_ACCOUNT_ID},
                {"op": "and", "items": [
                    {"op": "contains", "field": "CompanyName", "value": "e"},
                    {"op": "eq", "field": "companyType", "value": 6},
                ]},
            ]},
            ["acme", "foxtrot"],
        ),
    ],
)  # fmt: skip
def test_filter_operators(at, flt, expected):
    assert at.ids("Companies", flt) == sorted(COMPANY[name] for name in expected)


def test_date_filters_compare_as_datetimes_with_or_without_z(at):
    ended = {"op": "lt", "field": "endDate", "value": "2026-03-01T00:00:00Z"}
    assert at.ids("Contracts", ended) == [data.DELTA_OLD_CONTRACT_ID]
    covering = [
        {"op": "eq", "field": "contractServiceID", "value": data.ACME_CONTRACT_SERVICE_ID},
        {"op": "lte", "field": "startDate", "value": "2026-03-01T00:00:00.0000000"},
        {"op": "gte", "field": "endDate", "value": THIS},
    ]
    rows = at.query("ContractServiceUnits", *covering).json()["items"]
    assert [(r["startDate"], r["units"], r["approveAndPostDate"]) for r in rows] == [
        (THIS, 10, None)
    ]
    assert (rows[0]["price"], rows[0]["cost"]) == (45.0, 22.5)  # extended: 10 x 4.5, 10 x 2.25


def test_query_body_keys_are_case_insensitive_and_include_fields_trim_items(at):
    body = {
        "MaxRecords": 10,
        "IncludeFields": ["contractName", "ContractType"],
        "Filter": [{"op": "eq", "field": "companyID", "value": data.ACME_ACCOUNT_ID}],
    }
    items = at.post("Contracts/query", body).json()["items"]
    assert items == [
        {"id": data.ACME_CONTRACT_ID, "contractName": "Managed Services 2026", "contractType": 7},
        {
            "id": data.ACME_BLOCK_HOURS_CONTRACT_ID,
            "contractName": "Block Hours 2026",
            "contractType": 3,
        },
    ]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"filter": [{"op": "endsWith", "field": "companyName", "value": "x"}]}, "endsWith"),
        ({"filter": [{"op": "exist", "field": "companyName"}]}, "exist"),
        ({"filter": [{"op": "eq", "field": "nickname", "value": "x"}]}, "nickname"),
        ({"filter": []}, "filter"),
        ({"maxRecords": 501, "filter": [{"op": "gt", "field": "id", "value": 0}]}, "MaxRecords"),
        ({"filter": [{"op": "in", "field": "id", "value": list(range(501))}]}, "500"),
        ({"filter": [{"op": "eq", "field": "isActive", "value": "yes"}]}, "isActive"),
        ({"filter": [{"op": "gt", "field": "id", "value": 0}], "sort": "id"}, "sort"),
    ],
)
def test_unsupported_queries_answer_500_errors_naming_the_problem(at, body, named):
    response = at.post("Companies/query", body)
    assert response.status_code == 500
    errors = response.json()["errors"]
    assert len(errors) == 1 and named in errors[0]


def test_paging_beyond_500_posts_next_page_with_the_same_body(sb, at):
    mappings = sb.generate(600)
    cs_ids = [m["contract_service_id"] for m in mappings[:500]]
    body = {"filter": [{"op": "in", "field": "contractServiceID", "value": cs_ids}]}
    first = at.post("ContractServiceUnits/query", body).json()
    assert first["pageDetails"]["count"] == 500 and first["pageDetails"]["requestCount"] == 500
    next_url = first["pageDetails"]["nextPageUrl"]
    assert next_url.startswith(sb.autotask_url + "v1.0/ContractServiceUnits/query/next?paging=")

    got = at.session.get(next_url, timeout=T)
    assert got.status_code == 405
    assert got.json() == {"Message": "The requested resource does not support http method 'GET'."}
    changed = at.post(
        next_url, {"filter": [{"op": "in", "field": "contractServiceID", "value": cs_ids[:10]}]}
    )
    assert changed.status_code == 500 and "same query body" in changed.json()["errors"][0]

    ids = [item["id"] for item in first["items"]]
    while next_url:
        page = at.post(next_url, body).json()
        ids += [item["id"] for item in page["items"]]
        next_url = page["pageDetails"]["nextPageUrl"]
    assert len(ids) == 1500 == len(set(ids)) and ids == sorted(ids)


def test_small_max_records_pages_and_get_search_has_the_same_semantics(at):
    import json

    body = {"maxRecords": 2, "filter": [{"op": "gt", "field": "id", "value": 0}]}
    searched = at.get("Companies/query", params={"search": json.dumps(body)}).json()
    posted = at.post("Companies/query", body).json()
    assert searched == posted
    assert [i["id"] for i in posted["items"]] == [data.ACME_ACCOUNT_ID, data.BIRCH_ACCOUNT_ID]
    assert posted["pageDetails"]["requestCount"] == 2
    second = at.post(posted["pageDetails"]["nextPageUrl"], body).json()
    assert [i["id"] for i in second["items"]] == [data.COBALT_ACCOUNT_ID, data.DELTA_ACCOUNT_ID]


def test_get_by_id_answers_item_or_null(at):
    found = at.get(f"Contracts/{data.DELTA_OLD_CONTRACT_ID}")
    assert found.status_code == 200
    item = found.json()["item"]
    assert item["endDate"] == "2026-02-28T00:00:00" and item["status"] == 1
    assert item["renewedContractID"] == data.DELTA_RENEWAL_CONTRACT_ID
    missing = at.get("Contracts/123")
    assert missing.status_code == 200 and missing.json() == {"item": None}


def test_entity_information_picklists_are_strings(at):
    fields = {f["name"]: f for f in at.get("Companies/entityInformation/fields").json()["fields"]}
    company_types = {v["value"]: v["label"] for v in fields["companyType"]["picklistValues"]}
    assert company_types["1"] == "Customer" and company_types["7"] == "Partner"
    assert fields["companyType"]["isPickList"] and not fields["companyName"]["isPickList"]
    fields = {f["name"]: f for f in at.get("contracts/entityinformation/fields").json()["fields"]}
    contract_types = {v["value"]: v["label"] for v in fields["contractType"]["picklistValues"]}
    assert contract_types["7"] == "Recurring Service" and contract_types["3"] == "Block Hours"
    statuses = {v["value"]: v["label"] for v in fields["status"]["picklistValues"]}
    assert statuses == {"0": "Inactive", "1": "Active"}
    value = fields["status"]["picklistValues"][1]
    assert set(value) >= {"isActive", "isDefaultValue", "sortOrder", "parentValue", "isSystem"}


# --- adjustments -----------------------------------------------------------------------


def rows_of(sb, cs):
    return [(r["startDate"][:10], r["endDate"][:10], r["units"], r["price"], r["cost"])
            for r in sb.state.units_rows(cs)]  # fmt: skip


def test_adjustment_mid_month_splits_the_row_and_updates_later_rows(sb, at):
    body = adjustment(date(2026, 3, 15), 3) | {"adjustedUnitCost": 2.0}
    response = at.post("ContractServiceAdjustments", body)
    assert response.status_code == 200
    assert rows_of(sb, data.ACME_CONTRACT_SERVICE_ID) == [
        ("2026-02-01", "2026-02-28", 10, 45.0, 22.5),
        ("2026-03-01", "2026-03-15", 10, 45.0, 22.5),  # ends ON the effective date
        ("2026-03-15", "2026-03-31", 13, 58.5, 26.0),
        ("2026-04-01", "2026-04-30", 13, 58.5, 26.0),
    ]
    assert sb.units_on(data.ACME_CONTRACT_SERVICE_ID, date(2026, 3, 14)) == 10
    # Both rows cover the 15th; SPEC §8's rule takes the later start.
    assert sb.units_on(data.ACME_CONTRACT_SERVICE_ID, date(2026, 3, 15)) == 13
    assert sb.units_on(data.ACME_CONTRACT_SERVICE_ID, date(2026, 3, 20)) == 13
    [applied] = sb.adjustments()
    assert applied["id"] == response.json()["itemId"]
    assert applied["unitChange"] == 3 and applied["body"] == body


def test_adjustment_on_the_first_changes_the_row_in_place(sb, at):
    body = {k[0].upper() + k[1:]: v for k, v in adjustment(date(2026, 3, 1), 2).items()}
    del body["ServiceID"]  # contractServiceID alone identifies the service
    assert at.post("ContractServiceAdjustments", body).status_code == 200
    assert (
        at.post("ContractServiceAdjustments", adjustment(date(2026, 3, 1), -5)).status_code == 200
    )
    assert rows_of(sb, data.ACME_CONTRACT_SERVICE_ID) == [
        ("2026-02-01", "2026-02-28", 10, 45.0, 22.5),
        ("2026-03-01", "2026-03-31", 7, 31.5, 15.75),
        ("2026-04-01", "2026-04-30", 7, 31.5, 15.75),
    ]
    assert [a["unitChange"] for a in sb.adjustments()] == [2, -5]


def test_adjustment_with_zero_change_only_sets_the_cost(sb, at):
    body = adjustment(date(2026, 3, 1), 0) | {"adjustedUnitCost": 1.75}
    assert at.post("ContractServiceAdjustments", body).status_code == 200
    assert rows_of(sb, data.ACME_CONTRACT_SERVICE_ID)[1:] == [
        ("2026-03-01", "2026-03-31", 10, 45.0, 17.5),
        ("2026-04-01", "2026-04-30", 10, 45.0, 17.5),
    ]


def test_adjustment_by_service_id_finds_the_contract_service(sb, at):
    body = adjustment(date(2026, 3, 1), 1)
    del body["contractServiceID"]
    assert at.post("ContractServiceAdjustments", body).status_code == 200
    assert sb.units_on(data.ACME_CONTRACT_SERVICE_ID, date(2026, 3, 1)) == 11
    assert sb.adjustments()[0]["contractServiceID"] == data.ACME_CONTRACT_SERVICE_ID


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"effectiveDate": "2026-02-01T14:30:00Z"}, "already approved and posted"),
        ({"contractID": data.ACME_BLOCK_HOURS_CONTRACT_ID}, "Recurring Service"),
        ({"contractID": 1}, "existing entity"),
        ({"unitChange": -11}, "negative"),
        ({"units": 12}, "units"),
        ({"unitChange": 1.0}, "unitChange"),
        ({"unitChange": True}, "unitChange"),
        ({"unitChange": None}, "unitChange"),
        ({"effectiveDate": None}, "effectiveDate"),
        ({"contractServiceID": data.BIRCH_CONTRACT_SERVICE_ID}, "does not belong"),
        ({"effectiveDate": "2030-01-01T00:00:00"}, "covers"),
    ],
)
def test_adjustment_refusals_are_500_errors_and_change_nothing(sb, at, change, named):
    before = rows_of(sb, data.ACME_CONTRACT_SERVICE_ID)
    body = adjustment(date(2026, 3, 1), 2) | change
    body = {k: v for k, v in body.items() if v is not None}
    response = at.post("ContractServiceAdjustments", body)
    assert response.status_code == 500
    assert named in response.json()["errors"][0]
    assert rows_of(sb, data.ACME_CONTRACT_SERVICE_ID) == before and sb.adjustments() == []


def test_adjustments_cannot_be_read(at):
    assert at.get("ContractServiceAdjustments").status_code == 405
    response = at.post(
        "ContractServiceAdjustments/query", {"filter": [{"op": "gt", "field": "id", "value": 0}]}
    )
    assert response.status_code == 405


# --- thread limit and latency ----------------------------------------------------------


def run_concurrently(calls):
    results = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def worker(i):
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_fourth_concurrent_request_on_one_endpoint_gets_429(sb):
    sb.latency = 0.4
    clients = [At(sb) for _ in range(4)]
    flt = {"op": "gt", "field": "id", "value": 0}
    started = time.monotonic()
    statuses = run_concurrently(
        [lambda c=c: c.query("Companies", flt).status_code for c in clients]
    )
    assert sorted(statuses) == [200, 200, 200, 429]
    assert time.monotonic() - started >= 0.4  # latency is spent in flight
    [limited] = [r for r in sb.requests if r.status == 429]
    assert limited.path.endswith("/Companies/query")

    entities = ["Companies", "Contracts", "ContractServices", "Services"]
    statuses = run_concurrently(
        [
            lambda c=c, e=e: c.query(e, flt).status_code
            for c, e in zip(clients, entities, strict=True)
        ]
    )
    assert statuses == [200, 200, 200, 200]


# --- faults ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "check"),
    [
        ("429", 429, lambda r: "Retry-After" not in r.headers),
        ("500-errors", 500, lambda r: r.json() == {"errors": ["Simulated failure"]}),
        ("500-bare", 500, lambda r: r.text == "<html>Server Error</html>"),
        ("503", 503, lambda r: "errors" not in r.text),
        ("502", 502, lambda r: "errors" not in r.text),
    ],
)
def test_plain_faults_answer_once_then_recover(sb, at, kind, status, check):
    sb.faults.add("contractserviceunits", kind)
    flt = {"op": "eq", "field": "contractServiceID", "value": data.ACME_CONTRACT_SERVICE_ID}
    response = at.query("ContractServiceUnits", flt)
    assert response.status_code == status and check(response)
    assert at.query("ContractServiceUnits", flt).status_code == 200
    assert sb.faults.pending() == []


def test_429_fault_with_retry_after_repeats_times(sb, at):
    sb.faults.add("Contracts", "429", times=2, retry_after=7)
    flt = {"op": "gt", "field": "id", "value": 0}
    for _ in range(2):
        response = at.query("Contracts", flt)
        assert response.status_code == 429 and response.headers["Retry-After"] == "7"
    assert at.query("Contracts", flt).status_code == 200


def test_fault_forever_and_next_page_share_the_entity(sb, at):
    body = {"maxRecords": 1, "filter": [{"op": "gt", "field": "id", "value": 0}]}
    next_url = at.post("Services/query", body).json()["pageDetails"]["nextPageUrl"]
    sb.faults.add("Services", "503", times=-1)
    assert at.post(next_url, body).status_code == 503
    assert at.post(next_url, body).status_code == 503
    sb.faults.clear()
    assert at.post(next_url, body).status_code == 200


def test_drop_fault_closes_the_connection(sb, at):
    sb.faults.add("ThresholdInformation", "drop")
    with pytest.raises(requests.ConnectionError):
        at.get("ThresholdInformation")
    assert at.get("ThresholdInformation").status_code == 200
    assert [r.status for r in sb.requests[-2:]] == [0, 200]


def test_timeout_fault_holds_the_answer(sb, at):
    sb.faults.add("zoneInformation", "timeout", retry_after=0.5)
    with pytest.raises(requests.Timeout):
        requests.get(sb.zone_url, params={"user": sb.username}, timeout=0.1)
    assert requests.get(sb.zone_url, params={"user": sb.username}, timeout=T).status_code == 200


def test_apply_then_drop_applies_the_write_but_gives_no_answer(sb, at):
    sb.faults.add("ContractServiceAdjustments", "apply-then-drop")
    with pytest.raises(requests.ConnectionError):
        at.post("ContractServiceAdjustments", adjustment(date(2026, 3, 1), 2))
    assert sb.units_on(data.ACME_CONTRACT_SERVICE_ID, date(2026, 3, 1)) == 12
    assert len(sb.adjustments()) == 1


def test_apply_then_500_bare_applies_the_write(sb, at):
    sb.faults.add("ContractServiceAdjustments", "apply-then-500-bare")
    response = at.post("ContractServiceAdjustments", adjustment(date(2026, 3, 1), -1))
    assert response.status_code == 500 and response.text == "<html>Server Error</html>"
    assert sb.units_on(data.ACME_CONTRACT_SERVICE_ID, date(2026, 3, 1)) == 9


def test_apply_then_fault_fires_only_on_an_applied_write(sb, at):
    sb.faults.add("ContractServiceAdjustments", "apply-then-drop")
    refused = at.post("ContractServiceAdjustments", adjustment(date(2026, 3, 1), -50))
    assert refused.status_code == 500
    assert len(sb.faults.pending()) == 1


def test_apply_then_hold_waits_for_release(sb, at):
    sb.faults.add("ContractServiceAdjustments", "apply-then-hold")
    answers = []
    writer = threading.Thread(
        target=lambda: answers.append(
            at.post("ContractServiceAdjustments", adjustment(date(2026, 3, 1), 5))
        )
    )
    writer.start()
    assert sb.faults.held.wait(T)
    assert sb.units_on(data.ACME_CONTRACT_SERVICE_ID, date(2026, 3, 1)) == 15
    assert answers == []
    sb.faults.release()
    writer.join(T)
    assert answers[0].status_code == 200 and "itemId" in answers[0].json()


def test_fault_add_validates_its_arguments(sb):
    with pytest.raises(ValueError, match="endpoint"):
        sb.faults.add("Tickets", "503")
    with pytest.raises(ValueError, match="kind"):
        sb.faults.add("Contracts", "418")
    with pytest.raises(ValueError, match="ContractServiceAdjustments"):
        sb.faults.add("Contracts", "apply-then-drop")
    with pytest.raises(ValueError, match="client_id"):
        sb.faults.add("infima:clients", "503", client_id=101)


# --- INFIMA ----------------------------------------------------------------------------


def test_infima_requires_the_api_key(sb):
    for headers in ({}, {"X-API-Key": "nope"}):
        response = requests.get(sb.infima_url + "/v1/partner", headers=headers, timeout=T)
        assert response.status_code == 401 and response.json() == {"message": "Unauthorized"}
    response = requests.get(
        sb.infima_url + "/v1/partner", headers={"x-api-key": sb.api_key}, timeout=T
    )
    assert response.status_code == 200 and response.json()["partner_name"] == "Sandbox MSP"


def test_infima_clients_page_with_default_and_bounded_limit(sb):
    sb.generate(30, first_client_id=5000)
    first = infima(sb, "/v1/clients").json()
    assert len(first["items"]) == 20 and first["total"] == 40  # 10 seeded + 30
    assert first["items"][0] == first["items"][0] | {"id": 101, "client_name": "Acme Dental"}
    last = infima(sb, "/v1/clients", limit=50, offset=20).json()
    assert [c["id"] for c in last["items"]] == list(range(5010, 5030))
    for bad in (51, 0, "x"):
        response = infima(sb, "/v1/clients", limit=bad)
        assert response.status_code == 400 and "limit" in response.json()["message"]


def test_infima_users_page_and_carry_status(sb):
    seen = []
    offset = 0
    while True:
        page = infima(
            sb, f"/v1/clients/{data.ACME_CLIENT_ID}/users", limit=4, offset=offset
        ).json()["items"]
        seen += page
        if len(page) < 4:
            break
        offset += 4
    assert len(seen) == 15 == len({u["id"] for u in seen})
    assert sum(u["status"] == "active" for u in seen) == 12
    assert sum(u["status"] == "inactive" for u in seen) == 3
    assert {"email", "first_name", "last_name"} <= set(seen[0])
    sb.state.infima_clients[data.ACME_CLIENT_ID].no_status = True
    users = infima(sb, f"/v1/clients/{data.ACME_CLIENT_ID}/users", limit=50).json()["items"]
    assert len(users) == 15 and all("status" not in u for u in users)
    assert infima(sb, "/v1/clients/999/users").status_code == 404


def test_infima_down_and_per_client_users_fault(sb):
    sb.faults.add("infima:users", "503", times=-1, client_id=data.BIRCH_CLIENT_ID)
    assert infima(sb, f"/v1/clients/{data.BIRCH_CLIENT_ID}/users").status_code == 503
    assert infima(sb, f"/v1/clients/{data.BIRCH_CLIENT_ID}/users").status_code == 503
    assert infima(sb, f"/v1/clients/{data.COBALT_CLIENT_ID}/users").status_code == 200
    sb.faults.infima_down = True
    assert infima(sb, "/v1/partner").status_code == 503
    assert infima(sb, "/v1/clients").status_code == 503


def test_infima_plain_faults(sb):
    sb.faults.add("infima:clients", "500-bare")
    sb.faults.add("infima:partner", "429", retry_after=0.5)
    assert infima(sb, "/v1/clients").text == "<html>Server Error</html>"
    response = infima(sb, "/v1/partner")
    assert response.status_code == 429 and response.headers["Retry-After"] == "0.5"
    assert infima(sb, "/v1/clients").status_code == 200


# --- request log, seed, generator ------------------------------------------------------


def test_request_log_records_both_services(sb, at):
    at.query("Contracts", {"op": "eq", "field": "id", "value": data.ACME_CONTRACT_ID})
    infima(sb, "/v1/clients", limit=50, offset=0)
    autotask_record, infima_record = sb.requests
    assert autotask_record.service == "autotask" and autotask_record.method == "POST"
    assert autotask_record.path == "/atservicesrest/v1.0/Contracts/query"
    assert autotask_record.host == sb.autotask_url.split("/")[2]
    assert autotask_record.headers["UserName"] == sb.username
    assert autotask_record.body == {
        "filter": [{"op": "eq", "field": "id", "value": data.ACME_CONTRACT_ID}]
    }
    assert autotask_record.status == 200
    assert autotask_record.started <= autotask_record.finished
    assert sb.secret not in repr(autotask_record)
    assert infima_record.service == "infima" and infima_record.body is None
    assert infima_record.path == "/v1/clients?limit=50&offset=0"


def test_seed_has_an_ended_contract_with_a_renewal_and_posted_last_month(sb):
    state = sb.state
    old = state.contracts[data.DELTA_OLD_CONTRACT_ID]
    new = state.contracts[data.DELTA_RENEWAL_CONTRACT_ID]
    assert old["endDate"] == "2026-02-28T00:00:00" and new["startDate"] == THIS
    assert (
        state.contract_services[data.DELTA_RENEWAL_CONTRACT_SERVICE_ID]["serviceID"]
        == data.SERVICE_ID
    )
    assert sb.units_on(data.DELTA_OLD_CONTRACT_SERVICE_ID, date(2026, 3, 1)) is None
    assert sb.units_on(data.DELTA_RENEWAL_CONTRACT_SERVICE_ID, date(2026, 3, 1)) == 8
    rows = state.units_rows(data.COBALT_CONTRACT_SERVICE_ID)
    assert [bool(r["approveAndPostDate"]) for r in rows] == [True, False, False]
    assert [m["contract_service_id"] for m in data.seed_mappings(TODAY)] == [
        data.ACME_CONTRACT_SERVICE_ID,
        data.BIRCH_CONTRACT_SERVICE_ID,
        data.COBALT_CONTRACT_SERVICE_ID,
        data.DELTA_RENEWAL_CONTRACT_SERVICE_ID,
        data.GRANITE_CONTRACT_SERVICE_ID,
    ]


def test_seed_in_january_ends_the_old_contract_in_december():
    sandbox = Sandbox(today=date(2027, 1, 5))  # not started: the data alone
    assert sandbox.state.contracts[data.DELTA_OLD_CONTRACT_ID]["endDate"] == "2026-12-31T00:00:00"
    assert sandbox.units_on(data.ACME_CONTRACT_SERVICE_ID, date(2026, 12, 31)) == 10
    assert Sandbox(seed=False).state.contracts == {}


def test_units_index_follows_rows_added_replaced_and_deleted(sb):
    cs = data.BIRCH_CONTRACT_SERVICE_ID
    row = sb.state.row_covering(cs, date(2026, 3, 1))
    sb.state.units[row["id"]] = row | {"units": 30}
    assert sb.units_on(cs, date(2026, 3, 1)) == 30
    del sb.state.units[row["id"]]
    assert sb.units_on(cs, date(2026, 3, 1)) is None
    sb.state.add_units_row(
        contract_service_id=cs, start=date(2026, 3, 1), end=date(2026, 3, 31), units=3,
        unit_price=4.5, unit_cost=None,
    )  # fmt: skip
    assert sb.units_on(cs, date(2026, 3, 31)) == 3
    assert sb.state.row_covering(cs, date(2026, 3, 31))["price"] == 13.5
    assert len(sb.state.units_rows(cs)) == 3


def test_generate_5000_is_quick_and_consistent():
    sandbox = Sandbox(today=TODAY, seed=False)
    started = time.monotonic()
    mappings = sandbox.generate(5000, changed_fraction=0.3)
    # The same bound for the code, whether or not coverage's tracer (on in the default
    # `pytest`) slows it down, about fourfold.
    budget = 3 if sys.gettrace() is None else 12
    assert time.monotonic() - started < budget
    assert len(mappings) == 5000
    assert set(mappings[0]) == {
        "client_id", "client_name", "account_id", "account_name", "contract_id",
        "contract_name", "contract_service_id", "service_id", "service_name",
    }  # fmt: skip
    changed = 0
    for mapping in mappings:
        client = sandbox.state.infima_clients[mapping["client_id"]]
        units = sandbox.units_on(mapping["contract_service_id"], date(2026, 3, 1))
        changed += client.active != units
        assert client.active >= 1 and units is not None
    assert changed == 1500
    more = sandbox.generate(10, changed_fraction=0, first_client_id=9000)
    assert {m["contract_service_id"] for m in more}.isdisjoint(
        m["contract_service_id"] for m in mappings
    )
    with pytest.raises(ValueError, match="already used"):
        sandbox.generate(1, first_client_id=9000)
