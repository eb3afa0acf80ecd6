"""The ConnectWise simulator over real loopback HTTP, mostly through the tool's own client:
companyinfo, auth and clientId, conditions, both paging styles, PATCH/PUT/POST/DELETE,
the seed's awkward cases, faults and the request log."""

from __future__ import annotations

import base64
import logging
import threading
from datetime import date

import pytest
import requests

from infima_autotask.connectwise import ConnectWiseApi, ConnectWiseCredentials
from infima_autotask.errors import (
    ApiRejected,
    ApiUnavailable,
    AuthenticationError,
    BadResponseError,
)
from infima_autotask.http import HttpClient, RetryPolicy
from infima_autotask.sandbox import Sandbox, cw_data, data

TODAY = date(2026, 3, 10)
T = 5  # seconds: timeout of every raw request
ADDITION_PATH = "finance/agreements/3311/additions/88412"


@pytest.fixture
def sb():
    with Sandbox(today=TODAY) as sandbox:
        yield sandbox


@pytest.fixture
def sleeps():
    return []


def creds(sb: Sandbox, **changes: str) -> ConnectWiseCredentials:
    values = {
        "site": sb.cw_site,
        "company_id": sb.cw_company_id,
        "public_key": sb.cw_public_key,
        "private_key": sb.cw_private_key,
        "client_id": sb.cw_client_id,
        **changes,
    }
    return ConnectWiseCredentials(**values)


@pytest.fixture
def http(sleeps):
    with HttpClient("ConnectWise", timeout=(2.0, 2.0), sleep=sleeps.append) as client:
        yield client


@pytest.fixture
def api(sb, http):
    return ConnectWiseApi(http, creds(sb))


class Raw:
    """Hand-made requests, for what the tool's client would never send."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        login = f"{sb.cw_company_id}+{sb.cw_public_key}:{sb.cw_private_key}"
        self.headers = {
            "Authorization": "Basic " + base64.b64encode(login.encode()).decode(),
            "clientId": sb.cw_client_id,
        }

    def __call__(self, method, path, *, headers=None, **kwargs) -> requests.Response:
        url = path if path.startswith("http") else self.sb.cw_url + path
        merged = {**self.headers, **(headers or {})}
        return requests.request(method, url, headers=merged, timeout=T, **kwargs)


@pytest.fixture
def raw(sb):
    return Raw(sb)


def cw_requests(sb: Sandbox):
    return [r for r in sb.requests if r.service == "connectwise"]


def api_requests(sb: Sandbox):
    return [r for r in cw_requests(sb) if "/apis/3.0/" in r.path]


# --- companyinfo, auth, clientId -----------------------------------------------------------


def test_connect_looks_up_the_codebase_then_reads_system_info(sb, api):
    info = api.system_info()
    assert info.version == cw_data.SYSTEM_VERSION and api.codebase == cw_data.CODEBASE
    assert api.base == sb.cw_url
    lookup, call = cw_requests(sb)
    assert lookup.path == f"/login/companyinfo/{cw_data.COMPANY_ID}"
    assert "Authorization" not in lookup.headers and "clientId" not in lookup.headers
    assert call.path == f"/{cw_data.CODEBASE}apis/3.0/system/info" and call.status == 200
    assert call.headers["clientId"] == sb.cw_client_id


def test_companyinfo_answers_null_for_an_unknown_company(sb, http):
    response = requests.get(f"{sb.cw_site}/login/companyinfo/SandboxMSP", timeout=T)
    assert response.status_code == 200 and response.text == "null"  # the id is case-sensitive
    with pytest.raises(ApiRejected, match="does not know the company id 'nobody'"):
        ConnectWiseApi(http, creds(sb, company_id="nobody")).system_info()


def test_a_wrong_private_key_is_401(sb, http):
    api = ConnectWiseApi(http, creds(sb, private_key="not-the-key"))
    with pytest.raises(AuthenticationError, match="company id, public key or private key") as e:
        api.system_info()
    assert e.value.status == 401
    body = cw_requests(sb)[-1]
    assert body.status == 401


def test_without_client_id_the_answer_is_400_naming_it(sb, raw, http):
    response = raw("GET", "system/info", headers={"clientId": ""})
    assert response.status_code == 400 and "clientId" in response.json()["message"]
    api = ConnectWiseApi(http, creds(sb, client_id="00000000-0000-0000-0000-000000000000"))
    with pytest.raises(AuthenticationError, match="refused the clientId"):
        api.system_info()


def test_the_api_is_served_only_under_the_codebase(sb, raw):
    assert raw("GET", f"{sb.cw_site}/v4_6_release/apis/3.0/system/info").status_code == 404
    assert raw("GET", f"{sb.cw_site}/apis/3.0/system/info").status_code == 404
    assert raw("GET", "system/nothing").status_code == 404


def test_a_moved_codebase_is_refetched_once(sb, http):
    api = ConnectWiseApi(http, creds(sb), codebase=cw_data.CODEBASE)
    sb.cw.move_codebase()
    assert api.agreement(cw_data.JUNIPER_AGREEMENT_ID).name.startswith("Managed Services")
    assert api.codebase == cw_data.MOVED_CODEBASE
    assert [(r.path.split("?")[0], r.status) for r in cw_requests(sb)] == [
        (f"/{cw_data.CODEBASE}apis/3.0/finance/agreements/3311", 404),
        (f"/login/companyinfo/{cw_data.COMPANY_ID}", 200),
        (f"/{cw_data.MOVED_CODEBASE}apis/3.0/finance/agreements/3311", 200),
    ]


def test_security_role_knob(sb, api):
    sb.cw.role = "read-only"
    assert api.addition(3311, 88412).whole_quantity == 18
    with pytest.raises(AuthenticationError, match="security role"):
        api.patch_addition(3311, 88412, 20)
    assert sb.cw.quantity(88412) == 18.0
    sb.cw.role = "none"
    with pytest.raises(AuthenticationError, match="HTTP 403"):
        api.system_info()


# --- the seed ------------------------------------------------------------------------------


def test_search_leaves_the_recycle_bin_duplicate_out(api):
    assert [c.id for c in api.find_companies("juniper")] == [cw_data.JUNIPER_COMPANY_ID]
    both = api.find_companies("JUNIPER", include_deleted=True)
    assert [(c.id, c.deleted) for c in both] == [(250, False), (255, True)]
    assert api.find_companies("no such company") == []


def test_juniper_is_the_demo_mapping_with_an_infima_client(sb, api):
    mapping = cw_data.seed_mapping(TODAY)
    assert mapping["client_id"] == data.JUNIPER_CLIENT_ID == 109
    client = sb.state.infima_clients[data.JUNIPER_CLIENT_ID]
    assert (client.client_name, client.active, client.inactive) == ("Juniper Dental", 20, 1)
    (agreement,) = api.agreements(mapping["account_id"])
    assert agreement.id == mapping["agreement_id"] and agreement.status == "Active"
    assert agreement.next_invoice == date(2026, 3, 1)  # this month not invoiced yet
    additions = {a.id: a for a in api.additions(agreement.id)}
    line = additions[mapping["addition_id"]]
    assert (line.product_id, line.whole_quantity, line.unit_price, line.unit_cost) == (
        mapping["product_id"],
        18,
        4.5,
        2.25,
    )
    assert additions[cw_data.JUNIPER_BACKUP_ADDITION_ID].product_id == cw_data.BACKUP_PRODUCT_ID


def test_seed_has_the_awkward_cases(api):
    kestrel = api.agreement(cw_data.KESTREL_AGREEMENT_ID)
    assert kestrel.next_invoice == date(2026, 4, 1)  # the March invoice already exists
    lumen = api.additions(cw_data.LUMEN_AGREEMENT_ID)
    assert [(a.product_id, a.whole_quantity) for a in lumen] == [(7001, 5), (7001, 7)]
    old, renewal = api.agreements(cw_data.MAPLE_COMPANY_ID)
    assert (old.status, old.end) == ("Expired", date(2026, 2, 28))
    assert old.ended_before(date(2026, 3, 1))
    assert (renewal.status, renewal.start) == ("Active", date(2026, 3, 1))
    assert [a.product_id for a in api.additions(renewal.id)] == [7001]
    cancelled, active = api.agreements(cw_data.NIMBUS_COMPANY_ID)
    assert cancelled.cancelled and cancelled.status == "Cancelled"
    assert active.no_end and active.end is None and not active.ended_before(date(2030, 1, 1))
    gone, kept = api.additions(active.id)
    assert gone.cancelled == date(2026, 2, 28) and gone.cancelled_on(date(2026, 3, 1))
    assert kept.cancelled is None and kept.effective == date(2026, 3, 1)
    assert api.agreements(cw_data.ONYX_COMPANY_ID) == []


def test_missing_records_read_as_none(api):
    assert api.company(9999) is None
    assert api.agreement(9999) is None
    assert api.addition(3311, 88430) is None  # an addition of another agreement


# --- conditions ----------------------------------------------------------------------------


def test_quotes_and_backslashes_survive_the_round_trip(sb, api):
    sb.cw.add_company(300, "QuoteCo", 'Bob "The" Builder \\ Sons')
    sb.cw.add_company(301, "Plain", "Bob The Builder Sons")
    assert [c.id for c in api.find_companies('"The" Builder \\')] == [300]
    assert [c.id for c in api.find_companies("The Builder")] == [301]


@pytest.mark.parametrize(
    "conditions",
    [
        'name contains "a" or name contains "b"',
        "id in (250, 251)",
        "id > 250",
        'not name contains "a"',
        "name = 'Juniper Dental'",
        'nickname = "x"',
        "deletedFlag = null",
        "id = 250 and",
        '(name contains "a"',
        'name contains "a\\q"',
        "name contains 250",
        "id contains 250",
        'name contains "a" name',
        "",
    ],
)
def test_conditions_outside_the_subset_are_400(raw, conditions):
    response = raw("GET", "company/companies", params={"conditions": conditions})
    assert response.status_code == 400, conditions
    assert response.json()["code"] == "InvalidObject"


@pytest.mark.parametrize(
    ("conditions", "ids"),
    [
        ('name contains "dental"', [250, 255]),
        ('(name contains "dental") and deletedFlag = false', [250]),
        ('name like "ma*"', [253]),
        ('name like "%labs"', [252]),
        ('identifier = "JuniperDental"', [250]),
        ("id != 250 and id != 251 and deletedFlag=false", [252, 253, 254, 256]),
    ],
)
def test_the_supported_subset(raw, conditions, ids):
    response = raw("GET", "company/companies", params={"conditions": conditions})
    assert response.status_code == 200, response.text
    assert [c["id"] for c in response.json()] == ids


def test_addition_and_agreement_conditions(raw):
    response = raw(
        "GET",
        "finance/agreements",
        params={"conditions": 'company/id=254 and agreementStatus="Active"'},
    )
    assert [a["id"] for a in response.json()] == [cw_data.NIMBUS_AGREEMENT_ID]
    response = raw(
        "GET",
        "finance/agreements/3317/additions",
        params={"conditions": "product/id=7001 and cancelledDate=[2026-02-28T00:00:00Z]"},
    )
    assert [a["id"] for a in response.json()] == [cw_data.NIMBUS_CANCELLED_ADDITION_ID]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"pageSize": "1001"}, "pageSize"),
        ({"pageSize": "0"}, "pageSize"),
        ({"page": "0"}, "page"),
        ({"page": "x"}, "page"),
        ({"orderBy": "name"}, "orderby"),
        ({"fields": "id"}, "fields"),
        ({"pageId": "5"}, "forward-only"),
    ],
)
def test_bad_paging_and_unsupported_parameters_are_400(raw, params, fragment):
    response = raw("GET", "company/companies", params=params)
    assert response.status_code == 400 and fragment in response.json()["message"]


# --- paging --------------------------------------------------------------------------------


def test_the_client_follows_link_headers_through_capped_pages(sb, api):
    sb.cw.page_cap = 2
    assert [c.id for c in api.find_companies("")] == [250, 251, 252, 253, 254, 256]
    pages = [r for r in api_requests(sb) if "company/companies" in r.path]
    assert len(pages) == 4  # 7 companies, 2 a page; the deleted one is dropped afterwards
    assert all("pageSize=1000" in r.path for r in pages)


def test_navigable_pages_carry_first_prev_next_last(sb, raw):
    response = raw("GET", "company/companies", params={"pageSize": 3, "page": 2})
    assert [c["id"] for c in response.json()] == [253, 254, 255]
    links = response.links
    assert set(links) == {"first", "prev", "next", "last"}
    assert "page=3" in links["next"]["url"] and "page=3" in links["last"]["url"]
    last = raw("GET", links["last"]["url"])
    assert [c["id"] for c in last.json()] == [256] and "next" not in last.links
    assert raw("GET", "company/companies", params={"page": 9}).json() == []


def test_forward_only_pages_by_page_id_with_only_a_next_link(sb, raw):
    headers = {"pagination-type": "forward-only"}
    first = raw("GET", "company/companies", params={"pageSize": 4}, headers=headers)
    assert [c["id"] for c in first.json()] == [250, 251, 252, 253]
    assert set(first.links) == {"next"} and "pageId=253" in first.links["next"]["url"]
    second = raw("GET", first.links["next"]["url"], headers=headers)
    assert [c["id"] for c in second.json()] == [254, 255, 256]
    assert "Link" not in second.headers
    bad = raw("GET", "company/companies", params={"page": 2}, headers=headers)
    assert bad.status_code == 400


# --- writes --------------------------------------------------------------------------------


def test_the_client_patch_sets_an_absolute_quantity(sb, api):
    """before=18, target=20: the request carries 20; sending it twice leaves 20."""
    updated = api.patch_addition(3311, 88412, 20)
    assert updated.whole_quantity == 20 and sb.cw.quantity(88412) == 20.0
    assert api.patch_addition(3311, 88412, 20).whole_quantity == 20
    patch = api_requests(sb)[-1]
    assert patch.method == "PATCH" and patch.path.endswith(ADDITION_PATH)
    assert patch.body == [{"op": "replace", "path": "quantity", "value": 20}]
    assert [p["before"]["quantity"] for p in sb.cw.patches] == [18.0, 20.0]
    assert updated.last_updated != "2025-01-15T10:00:00Z"
    assert {e["enteredBy"] for e in sb.cw.audit} == {"api"}


def test_patch_with_unit_cost_reprices_the_line(sb, api):
    updated = api.patch_addition(3311, 88412, 10, unit_cost=2.0)
    assert (updated.whole_quantity, updated.unit_cost, updated.unit_price) == (10, 2.0, 4.5)
    record = sb.cw.additions[88412]
    assert (record["extPrice"], record["extCost"], record["margin"]) == (45.0, 20.0, 25.0)


@pytest.mark.parametrize("path", ["quantity", "/quantity"])
def test_patch_takes_both_path_forms(sb, raw, path):
    response = raw("PATCH", ADDITION_PATH, json=[{"op": "replace", "path": path, "value": 21}])
    assert response.status_code == 200 and response.json()["quantity"] == 21.0
    assert sb.cw.quantity(88412) == 21.0


@pytest.mark.parametrize(
    "body",
    [
        [{"op": "replace", "path": "quantity", "value": -1}],
        [{"op": "replace", "path": "quantity", "value": 2.5}],
        [{"op": "replace", "path": "quantity", "value": "3"}],
        [{"op": "replace", "path": "quantity", "value": True}],
        [{"op": "replace", "path": "quantity"}],
        [{"op": "replace", "path": "unitCost", "value": -0.5}],
        [{"op": "add", "path": "quantity", "value": 3}],
        [{"op": "remove", "path": "quantity"}],
        [{"op": "replace", "path": "description", "value": "x"}],
        [{"op": "replace", "path": "/product/id", "value": 7002}],
        [{"op": "replace", "path": "quantity", "value": 3, "from": "x"}],
        {"op": "replace", "path": "quantity", "value": 3},
        [],
        None,
        # one bad operation refuses the whole patch
        [
            {"op": "replace", "path": "quantity", "value": 30},
            {"op": "replace", "path": "x", "value": 1},
        ],
    ],
)
def test_patch_refuses_bad_shapes_with_400_and_changes_nothing(sb, raw, body):
    response = raw("PATCH", ADDITION_PATH, json=body)
    assert response.status_code == 400 and response.json()["code"] == "InvalidObject"
    assert sb.cw.quantity(88412) == 18.0 and sb.cw.patches == []


def test_put_wipes_every_field_it_was_not_sent(sb, raw):
    """Why the tool never PUTs: a PUT carrying only what it changes loses the cost,
    the price and the descriptions."""
    response = raw(
        "PUT",
        ADDITION_PATH,
        json={"product": {"id": 7001}, "billCustomer": "Billable", "quantity": 20},
    )
    assert response.status_code == 200
    after = sb.cw.additions[88412]
    assert after["quantity"] == 20.0
    assert after["unitCost"] is None and after["unitPrice"] is None
    assert after["invoiceDescription"] is None and after["effectiveDate"] is None
    assert len(sb.cw.replaced) == 1 and sb.cw.replaced[0]["before"]["unitCost"] == 2.25
    assert raw("PUT", ADDITION_PATH, json={"quantity": 20}).status_code == 400


def test_post_and_delete_are_simulated_and_recorded(sb, raw):
    created = raw(
        "POST",
        "finance/agreements/3311/additions",
        json={"product": {"id": 7001}, "billCustomer": "Billable", "quantity": 3},
    )
    assert created.status_code == 201
    new_id = created.json()["id"]
    assert [a["id"] for a in sb.cw.created] == [new_id]
    assert raw("DELETE", f"finance/agreements/3311/additions/{new_id}").status_code == 204
    assert [a["id"] for a in sb.cw.deleted] == [new_id] and new_id not in sb.cw.additions
    assert raw("DELETE", "finance/agreements/3311").status_code == 405


def test_a_whole_client_session_never_puts_posts_or_deletes(sb, api):
    api.system_info()
    for company in api.find_companies("", include_deleted=True):
        api.company(company.id)
        for agreement in api.agreements(company.id):
            api.agreement(agreement.id)
            for addition in api.additions(agreement.id):
                api.addition(agreement.id, addition.id)
    api.patch_addition(3311, 88412, 19, unit_cost=2.25)
    assert {r.method for r in cw_requests(sb)} == {"GET", "PATCH"}
    assert sb.cw.created == [] and sb.cw.replaced == [] and sb.cw.deleted == []
    assert all(r.status == 200 for r in cw_requests(sb))
    # info, 1 page of companies, 7 companies, 7 agreement lists, 7 agreements, 7 addition
    # lists, 10 additions, 1 PATCH: one page each, every list under 1,000 records.
    assert len(api_requests(sb)) == 1 + 1 + 7 + 7 + 7 + 7 + 10 + 1


# --- faults --------------------------------------------------------------------------------


def test_429_with_retry_after_is_waited_out(sb, api, sleeps):
    sb.faults.add("cw:companies", "429", retry_after=3)
    assert [c.id for c in api.find_companies("juniper")] == [250]
    assert sleeps == [3.0]
    assert [r.status for r in api_requests(sb)] == [429, 200]


def test_429_without_retry_after_backs_off(sb, api, sleeps):
    sb.faults.add("cw:agreements", "429", times=2)
    assert len(api.agreements(250)) == 1
    assert len(sleeps) == 2 and 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0


def test_an_html_429_body_is_a_wait_not_a_crash(sb, api, sleeps):
    sb.faults.add("cw:additions", "429-html", retry_after=4)
    assert len(api.additions(3311)) == 2 and sleeps == [4.0]
    sb.faults.add("cw:system", "429-html")
    assert api.system_info().version and len(sleeps) == 2


def test_a_429_on_the_patch_leaves_the_outcome_to_the_caller(sb, api, sleeps):
    sb.faults.add("cw:write", "429", retry_after=1)
    with pytest.raises(ApiUnavailable):
        api.patch_addition(3311, 88412, 20)
    assert sleeps == [] and sb.cw.quantity(88412) == 18.0
    assert [r.method for r in api_requests(sb)] == ["PATCH"]


def test_a_patch_applied_then_dropped_is_unknown_but_applied(sb, api):
    sb.faults.add("cw:write", "apply-then-drop")
    with pytest.raises(ApiUnavailable):
        api.patch_addition(3311, 88412, 20)
    assert sb.cw.quantity(88412) == 20.0
    # Re-reading shows the target: the absolute value makes a resend harmless too.
    assert api.addition(3311, 88412).whole_quantity == 20
    assert api.patch_addition(3311, 88412, 20).whole_quantity == 20
    assert len(sb.cw.patches) == 2


def test_a_held_patch_is_applied_before_it_answers(sb, api):
    sb.faults.add("cw:write", "apply-then-hold")
    results = []
    worker = threading.Thread(target=lambda: results.append(api.patch_addition(3311, 88412, 22)))
    worker.start()
    assert sb.faults.held.wait(5)
    assert sb.cw.quantity(88412) == 22.0  # applied, the tool still waiting
    sb.faults.release()
    worker.join(5)
    assert results[0].whole_quantity == 22


def test_a_bare_500_after_applying_is_unknown(sb, api):
    sb.faults.add("cw:write", "apply-then-500-bare")
    with pytest.raises(ApiUnavailable):
        api.patch_addition(3311, 88412, 23)
    assert sb.cw.quantity(88412) == 23.0


def test_a_500_with_errors_is_a_refusal(sb, api):
    sb.faults.add("cw:write", "500-errors")
    with pytest.raises(ApiRejected, match="Simulated failure"):
        api.patch_addition(3311, 88412, 20)
    assert sb.cw.quantity(88412) == 18.0


def test_a_concurrent_writer_between_the_read_and_the_write(sb, api):
    """INFIMA's nightly sync sets 19 right after the tool read 18; the tool's absolute 20
    wins, and the audit trail shows both writers."""
    sb.cw.concurrent_write(88412, 19, "after-get")
    assert api.addition(3311, 88412).whole_quantity == 18
    assert sb.cw.quantity(88412) == 19.0
    assert api.patch_addition(3311, 88412, 20).whole_quantity == 20
    assert [(e["enteredBy"], e["before"], e["after"]) for e in sb.cw.audit] == [
        ("INFIMA", 18.0, 19),
        ("api", 19.0, 20.0),
    ]


def test_a_concurrent_writer_after_the_patch_shows_on_the_next_read(sb, api):
    sb.cw.concurrent_write(88412, 25, "after-patch")
    assert api.patch_addition(3311, 88412, 20).whole_quantity == 20
    assert api.addition(3311, 88412).whole_quantity == 25


def test_a_concurrent_writer_just_before_the_patch_is_overwritten(sb, api):
    sb.cw.concurrent_write(88412, 30, "before-patch")
    assert api.patch_addition(3311, 88412, 20).whole_quantity == 20
    assert sb.cw.patches[0]["before"]["quantity"] == 30.0


def test_fault_and_knob_validation(sb):
    with pytest.raises(ValueError, match="unknown fault endpoint"):
        sb.faults.add("cw:nothing", "429")
    with pytest.raises(ValueError, match="cw:write only"):
        sb.faults.add("cw:additions", "apply-then-drop")
    with pytest.raises(ValueError, match="moment"):
        sb.cw.concurrent_write(88412, 1, "sometime")
    with pytest.raises(ValueError, match="no addition"):
        sb.cw.concurrent_write(1, 1, "after-get")


def test_a_companyinfo_outage_is_retried(sb, api, sleeps):
    sb.faults.add("cw:companyinfo", "503")
    assert api.codebase == cw_data.CODEBASE and len(sleeps) == 1


def test_a_timeout_on_a_read_is_retried(sb, sleeps):
    with HttpClient(
        "ConnectWise", timeout=(1.0, 0.5), retry=RetryPolicy(max_attempts=2), sleep=sleeps.append
    ) as http:
        api = ConnectWiseApi(http, creds(sb))
        sb.faults.add("cw:system", "timeout", retry_after=1.0)
        assert api.system_info().version and len(sleeps) == 1


# --- request log and secrets ---------------------------------------------------------------


def test_the_request_log_names_the_service_and_what_was_sent(sb, api):
    api.find_companies("juniper")
    api.patch_addition(3311, 88412, 20)
    log = cw_requests(sb)
    assert {r.service for r in sb.requests} == {"connectwise"}
    assert [r.method for r in log] == ["GET", "GET", "PATCH"]
    assert log[1].path.startswith(f"/{cw_data.CODEBASE}apis/3.0/company/companies?conditions=")
    assert all(r.host.startswith("127.0.0.1:") for r in log)
    assert log[2].body == [{"op": "replace", "path": "quantity", "value": 20}]
    assert all(r.finished >= r.started for r in log)


def test_client_logs_at_debug_never_carry_the_private_key(sb, http, caplog):
    caplog.set_level(logging.DEBUG)
    api = ConnectWiseApi(http, creds(sb))
    token = base64.b64encode(
        f"{sb.cw_company_id}+{sb.cw_public_key}:{sb.cw_private_key}".encode()
    ).decode()
    api.find_companies("juniper")
    api.patch_addition(3311, 88412, 20, unit_cost=2.0)
    sb.faults.add("cw:write", "apply-then-drop")
    with pytest.raises(ApiUnavailable) as e:
        api.patch_addition(3311, 88412, 21)
    with pytest.raises(AuthenticationError) as bad:
        ConnectWiseApi(http, creds(sb, private_key=sb.cw_private_key + "x")).system_info()
    texts = [r.getMessage() for r in caplog.records] + [str(e.value), str(bad.value)]
    assert any("PATCH" in t for t in texts)
    for text in texts:
        assert sb.cw_private_key not in text and token not in text


def test_a_bad_answer_from_the_simulator_would_be_caught(sb, api):
    sb.cw.additions[88412]["quantity"] = "eighteen"
    with pytest.raises(BadResponseError, match="quantity"):
        api.additions(3311)


def test_generate_connectwise_adds_mapped_lines_with_a_share_changed():
    with Sandbox(today=TODAY) as sandbox:
        before = dict(sandbox.cw.additions)
        mappings = sandbox.generate_connectwise(10, changed_fraction=0.3, first_client_id=7000)
        more = sandbox.generate_connectwise(2, first_client_id=7010)
        assert {k: v for k, v in sandbox.cw.additions.items() if k in before} == before
        changed = 0
        for m in [*mappings, *more]:
            assert m["psa"] == "connectwise"
            agreement = sandbox.cw.agreements[m["agreement_id"]]
            addition = sandbox.cw.additions[m["addition_id"]]
            assert agreement["company"]["id"] == m["account_id"]
            assert agreement["agreementStatus"] == "Active"
            assert addition["agreementId"] == m["agreement_id"]
            assert addition["product"]["id"] == m["product_id"]
            active = sandbox.state.infima_clients[m["client_id"]].active
            changed += active != sandbox.cw.quantity(m["addition_id"])
        assert changed == 3 + 1  # round(10 * 0.3), round(2 * 0.3)
        assert len({m["addition_id"] for m in [*mappings, *more]}) == 12
        with pytest.raises(ValueError, match="already used"):
            sandbox.generate_connectwise(1, first_client_id=7000)
