"""ConnectWise client over requests-mock: site and codebase, auth, conditions, paging, 429,
errors, the one PATCH, defensive parsing and redaction."""

from __future__ import annotations

import base64
import inspect
import json
import logging
import math
from datetime import date
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from infima_autotask import connectwise
from infima_autotask.connectwise import (
    Addition,
    ConnectWiseApi,
    ConnectWiseCredentials,
    lookup_codebase,
    patch_body,
    quote_condition,
    site_origin,
)
from infima_autotask.errors import (
    ApiRejected,
    ApiUnavailable,
    AuthenticationError,
    BadResponseError,
    UnsafeUrlError,
    UsageError,
)
from infima_autotask.http import HttpClient

SITE = "na.myconnectwise.net"
ORIGIN = "https://api-na.myconnectwise.net"
INFO = ORIGIN + "/login/companyinfo/acme"
BASE = ORIGIN + "/v2025_1/apis/3.0/"
MOVED = ORIGIN + "/v2025_2/apis/3.0/"
PRIVATE = "Pr1vate-CW-key-4e2f9a"
CLIENT_ID = "5b1c6f7e-8d2a-4c3b-9e10-1f2a3b4c5d6e"
CREDS = ConnectWiseCredentials(SITE, "acme", "PubKey1234567890", PRIVATE, CLIENT_ID)
TOKEN = base64.b64encode(f"acme+PubKey1234567890:{PRIVATE}".encode()).decode()

COMPANY = {"id": 250, "identifier": "JuniperDental", "name": "Juniper Dental", "deletedFlag": False}
AGREEMENT = {
    "id": 3311,
    "name": "Managed Services 2026",
    "type": {"id": 5, "name": "Managed Services"},
    "company": {"id": 250, "identifier": "JuniperDental", "name": "Juniper Dental"},
    "startDate": "2025-03-01T00:00:00Z",
    "endDate": "2027-02-28T00:00:00Z",
    "noEndingDateFlag": False,
    "cancelledFlag": False,
    "agreementStatus": "Active",
    "billingCycle": {"id": 2, "name": "Monthly"},
    "nextInvoiceDate": "2026-04-01T00:00:00Z",
    "parentAgreement": None,
}
ADDITION = {
    "id": 88412,
    "product": {"id": 7001, "identifier": "INFIMA-SAT"},
    "agreementId": 3311,
    "quantity": 35.0,
    "unitPrice": 4.5,
    "unitCost": 2.25,
    "billCustomer": "Billable",
    "effectiveDate": "2025-03-01T00:00:00Z",
    "cancelledDate": None,
    "description": "INFIMA Security Awareness Training",
    "agreementStatus": "Active",
    "_info": {"lastUpdated": "2026-03-01T10:00:00Z"},
}


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def http(sleeps):
    with HttpClient("ConnectWise", sleep=sleeps.append) as client:
        yield client


@pytest.fixture
def api(http, requests_mock):
    requests_mock.get(INFO, json={"Codebase": "v2025_1/", "CompanyID": "acme"})
    return ConnectWiseApi(http, CREDS)


def api_requests(requests_mock):
    return [r for r in requests_mock.request_history if "/apis/3.0/" in r.url]


def query(request) -> dict[str, list[str]]:
    """The query exactly as sent (requests-mock's ``qs`` lower-cases values)."""
    return parse_qs(urlsplit(request.url).query, keep_blank_values=True)


# --- site and codebase ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("site", "origin"),
    [
        ("na.myconnectwise.net", "https://api-na.myconnectwise.net"),
        ("EU.myconnectwise.net", "https://api-eu.myconnectwise.net"),
        (
            "https://au.myconnectwise.net/v4_6_release/ConnectWise.aspx",
            "https://api-au.myconnectwise.net",
        ),
        ("aus.myconnectwise.net", "https://api-aus.myconnectwise.net"),
        ("za.myconnectwise.net/", "https://api-za.myconnectwise.net"),
        ("api-na.myconnectwise.net", "https://api-na.myconnectwise.net"),
        ("staging.connectwisedev.com", "https://api-staging.connectwisedev.com"),
        ("  cw.example-msp.com ", "https://cw.example-msp.com"),
        ("https://cw.example-msp.com:8443/", "https://cw.example-msp.com:8443"),
        ("http://127.0.0.1:8123", "http://127.0.0.1:8123"),
        ("http://[::1]:8123", "http://[::1]:8123"),
    ],
)
def test_site_maps_to_the_api_origin(site, origin):
    assert site_origin(site) == origin


@pytest.mark.parametrize(
    "site", ["", "   ", "https://", "user:pw@cw.example.com", "https://[broken"]
)
def test_a_site_that_is_no_host_is_a_usage_error(site):
    with pytest.raises(UsageError, match="ConnectWise site"):
        site_origin(site)


def test_plain_http_off_this_machine_is_refused():
    with pytest.raises(UnsafeUrlError, match="only https"):
        site_origin("http://cw.example-msp.com")


def test_codebase_lookup_is_unauthenticated_and_builds_the_base(api, requests_mock):
    requests_mock.get(BASE + "system/info", json={"version": "v2025.1.104217", "isCloud": True})
    info = api.system_info()
    assert info.version == "v2025.1.104217" and info.is_cloud is True
    assert api.codebase == "v2025_1/" and api.base == BASE
    lookup, call = requests_mock.request_history
    assert lookup.url == INFO and lookup.method == "GET"
    assert "Authorization" not in lookup.headers and "clientId" not in lookup.headers
    assert call.url == BASE + "system/info"


def test_an_unknown_company_answers_null_and_says_what_to_type(http, requests_mock):
    requests_mock.get(ORIGIN + "/login/companyinfo/nobody", text="null")
    with pytest.raises(ApiRejected, match="does not know the company id 'nobody'.*Company box"):
        lookup_codebase(http, ORIGIN, "nobody")


@pytest.mark.parametrize(
    "answer", [{}, {"Codebase": ""}, {"Codebase": "../etc/"}, {"Codebase": "a b/"}, [], "x"]
)
def test_a_companyinfo_answer_without_a_usable_codebase(http, requests_mock, answer):
    requests_mock.get(INFO, json=answer)
    with pytest.raises(BadResponseError, match="without a usable Codebase"):
        lookup_codebase(http, ORIGIN, "acme")


def test_company_id_is_escaped_in_the_lookup_path(http, requests_mock):
    requests_mock.get(ORIGIN + "/login/companyinfo/a%2Fb%20c", json={"Codebase": "v4_6_release"})
    assert lookup_codebase(http, ORIGIN, "a/b c") == "v4_6_release/"


def test_a_404_refetches_the_codebase_once_and_sends_again(http, requests_mock):
    requests_mock.get(
        INFO, [{"json": {"Codebase": "v2025_1/"}}, {"json": {"Codebase": "v2025_2/"}}]
    )
    requests_mock.get(BASE + "system/info", status_code=404, text="<html>Not Found</html>")
    requests_mock.get(MOVED + "system/info", json={"version": "v2025.2"})
    api = ConnectWiseApi(http, CREDS)
    assert api.system_info().version == "v2025.2"
    assert [r.url for r in requests_mock.request_history] == [
        INFO,
        BASE + "system/info",
        INFO,
        MOVED + "system/info",
    ]
    assert api.base == MOVED


def test_a_404_with_the_same_codebase_is_not_sent_again_and_refetches_only_once(api, requests_mock):
    requests_mock.get(BASE + "company/companies/999", status_code=404, json={"code": "NotFound"})
    assert api.company(999) is None
    assert api.company(999) is None
    urls = [r.url for r in requests_mock.request_history]
    assert urls.count(INFO) == 2  # the first look-up and one refetch, never more
    assert urls.count(BASE + "company/companies/999") == 2


def test_a_stored_codebase_skips_the_lookup(http, requests_mock):
    requests_mock.get(BASE + "system/info", json={"version": "v1"})
    ConnectWiseApi(http, CREDS, codebase="v2025_1").system_info()
    assert [r.url for r in requests_mock.request_history] == [BASE + "system/info"]


def test_a_404_after_a_move_resends_the_patch_once(http, requests_mock):
    requests_mock.get(INFO, json={"Codebase": "v2025_2/"})
    path = "finance/agreements/3311/additions/88412"
    requests_mock.patch(BASE + path, status_code=404, json={"code": "NotFound"})
    requests_mock.patch(MOVED + path, json={**ADDITION, "quantity": 37.0})
    api = ConnectWiseApi(http, CREDS, codebase="v2025_1/")
    assert api.patch_addition(3311, 88412, 37).quantity == 37.0
    assert [r.method for r in requests_mock.request_history] == ["PATCH", "GET", "PATCH"]


# --- auth and headers ----------------------------------------------------------------------


def test_every_api_call_carries_basic_auth_and_the_client_id(api, requests_mock):
    requests_mock.get(BASE + "system/info", json={"version": "v1"})
    requests_mock.get(BASE + "finance/agreements/3311/additions", json=[ADDITION])
    requests_mock.patch(BASE + "finance/agreements/3311/additions/88412", json=ADDITION)
    api.system_info()
    api.additions(3311)
    api.patch_addition(3311, 88412, 35)
    sent = api_requests(requests_mock)
    assert len(sent) == 3
    for request in sent:
        assert request.headers["Authorization"] == f"Basic {TOKEN}"
        assert request.headers["clientId"] == CLIENT_ID
    login = base64.b64decode(TOKEN).decode()
    assert login == f"acme+PubKey1234567890:{PRIVATE}"


def test_401_is_an_authentication_error_naming_the_keys(api, requests_mock):
    requests_mock.get(
        BASE + "system/info", status_code=401, json={"code": "Unauthorized", "message": "x"}
    )
    with pytest.raises(AuthenticationError, match="company id, public key or private key") as e:
        api.system_info()
    assert e.value.status == 401 and "connect --psa connectwise" in e.value.message
    assert e.value.exit_code == 3


def test_403_names_the_security_role(api, requests_mock):
    requests_mock.get(BASE + "finance/agreements", status_code=403, json={"code": "Forbidden"})
    with pytest.raises(AuthenticationError, match="security role.*Agreements: Inquire and Edit"):
        api.agreements(250)


def test_400_about_the_client_id_is_an_authentication_error(api, requests_mock):
    requests_mock.get(
        BASE + "system/info",
        status_code=400,
        json={"code": "InvalidClientId", "message": "A valid clientId header is required."},
    )
    with pytest.raises(AuthenticationError, match="refused the clientId.*developer.connectwise"):
        api.system_info()


# --- conditions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("acme", '"acme"'),
        ('Bob "The" Builder', r'"Bob \"The\" Builder"'),
        ("back\\slash", r'"back\\slash"'),
        ('tail\\"', r'"tail\\\""'),
        ("50% & co + more", '"50% & co + more"'),
    ],
)
def test_condition_strings_are_double_quoted_and_escaped(text, quoted):
    assert quote_condition(text) == quoted


def test_the_search_condition_travels_escaped_and_url_encoded(api, requests_mock):
    requests_mock.get(BASE + "company/companies", json=[COMPANY])
    assert [c.id for c in api.find_companies(' O"Brien & Sons + Co ')] == [250]
    sent = api_requests(requests_mock)[0]
    assert query(sent) == {
        "conditions": [r'name contains "O\"Brien & Sons + Co"'],
        "pageSize": ["1000"],
        "page": ["1"],
    }
    assert "%2B" in sent.url and "%26" in sent.url  # "+" and "&" cannot cut the condition


@pytest.mark.parametrize("text", ["line\nbreak", "tab\there", "nul\x00"])
def test_control_characters_in_a_search_are_refused_before_sending(api, requests_mock, text):
    with pytest.raises(UsageError, match="line breaks"):
        api.find_companies(text)
    assert api_requests(requests_mock) == []


def test_the_agreements_of_a_company_use_the_company_condition(api, requests_mock):
    requests_mock.get(BASE + "finance/agreements", json=[AGREEMENT])
    (agreement,) = api.agreements(250)
    assert query(api_requests(requests_mock)[0])["conditions"] == ["company/id=250"]
    assert agreement.id == 3311 and agreement.company_id == 250
    assert agreement.next_invoice == date(2026, 4, 1)


def test_deleted_companies_are_left_out_unless_asked_for(api, requests_mock):
    deleted = {**COMPANY, "id": 255, "identifier": "JuniperDental1", "deletedFlag": True}
    requests_mock.get(BASE + "company/companies", json=[COMPANY, deleted])
    assert [c.id for c in api.find_companies("juniper")] == [250]
    assert [c.id for c in api.find_companies("juniper", include_deleted=True)] == [250, 255]


def test_an_empty_search_lists_every_company_without_conditions(api, requests_mock):
    requests_mock.get(BASE + "company/companies", json=[COMPANY])
    api.find_companies("  ")
    assert "conditions" not in query(api_requests(requests_mock)[0])


# --- paging --------------------------------------------------------------------------------


def test_paging_follows_link_next_until_there_is_none(api, requests_mock):
    url = BASE + "company/companies"
    page2 = f'<{url}?pageSize=1000&page=2>; rel="next", <{url}?pageSize=1000&page=3>; rel="last"'
    page3 = f'<{url}?pageSize=1000&page=1>; rel="first", <{url}?pageSize=1000&page=2>; rel="prev"'
    requests_mock.get(
        url,
        [
            {"json": [COMPANY, {**COMPANY, "id": 251}], "headers": {"Link": page2}},
            {"json": [{**COMPANY, "id": 252}], "headers": {"Link": f'<{url}?page=3>; rel="next"'}},
            {"json": [{**COMPANY, "id": 253}], "headers": {"Link": page3}},
        ],
    )
    assert [c.id for c in api.find_companies("a")] == [250, 251, 252, 253]
    pages = [query(r) for r in api_requests(requests_mock)]
    assert [p["page"] for p in pages] == [["1"], ["2"], ["3"]]
    # A link without the conditions keeps the tool's own; the page size never exceeds 1,000.
    assert all(p["conditions"] == ['name contains "a"'] for p in pages)
    assert all(p["pageSize"] == ["1000"] for p in pages)


def test_a_next_link_to_another_host_is_not_followed(api, requests_mock):
    link = '<https://evil.example/v2025_1/apis/3.0/company/companies?page=2>; rel="next"'
    requests_mock.get(BASE + "company/companies", json=[COMPANY], headers={"Link": link})
    with pytest.raises(UnsafeUrlError, match="another host"):
        api.find_companies("a")
    assert len(api_requests(requests_mock)) == 1


def test_a_next_link_back_to_the_same_page_stops(api, requests_mock):
    link = f'<{BASE}company/companies?page=1&pageSize=1000>; rel="next"'
    requests_mock.get(BASE + "company/companies", json=[COMPANY], headers={"Link": link})
    with pytest.raises(BadResponseError, match="already read"):
        api.find_companies("a")


def test_a_next_link_to_another_resource_is_refused(api, requests_mock):
    link = f'<{BASE}finance/agreements?page=2>; rel="next"'
    requests_mock.get(BASE + "company/companies", json=[COMPANY], headers={"Link": link})
    with pytest.raises(BadResponseError, match="next-page link"):
        api.find_companies("a")


def test_a_list_answered_with_an_object_is_a_bad_response(api, requests_mock):
    requests_mock.get(BASE + "finance/agreements", json={"items": []})
    with pytest.raises(BadResponseError, match="without a list"):
        api.agreements(250)


# --- 429, 5xx, errors ----------------------------------------------------------------------


def test_429_retry_after_is_honoured_with_the_injected_sleep(api, requests_mock, sleeps):
    requests_mock.get(
        BASE + "finance/agreements",
        [
            {"status_code": 429, "headers": {"Retry-After": "7"}, "json": {"code": "x"}},
            {
                "status_code": 429,
                "headers": {"Retry-After": "2", "Content-Type": "text/html"},
                "text": "<html><title>Error 1015</title>You are being rate limited</html>",
            },
            {"json": [AGREEMENT]},
        ],
    )
    assert [a.id for a in api.agreements(250)] == [3311]
    assert sleeps == [7.0, 2.0]


def test_a_patch_answered_429_is_never_sent_again(api, requests_mock, sleeps):
    requests_mock.patch(
        BASE + "finance/agreements/3311/additions/88412",
        status_code=429,
        headers={"Retry-After": "1"},
    )
    with pytest.raises(ApiUnavailable) as e:
        api.patch_addition(3311, 88412, 37)
    assert e.value.status == 429 and sleeps == []
    assert [r.method for r in api_requests(requests_mock)] == ["PATCH"]


def test_the_error_body_is_shown_to_the_user(api, requests_mock):
    requests_mock.patch(
        BASE + "finance/agreements/3311/additions/88412",
        status_code=400,
        json={
            "code": "InvalidObject",
            "message": "addition object is invalid",
            "errors": [
                {
                    "code": "InvalidField",
                    "message": "quantity cannot be more than the agreement allows.",
                    "resource": "addition",
                    "field": "quantity",
                }
            ],
        },
    )
    with pytest.raises(ApiRejected, match="quantity cannot be more than the agreement allows"):
        api.patch_addition(3311, 88412, 37)


def test_an_error_with_only_a_message_shows_the_message(api, requests_mock):
    requests_mock.get(
        BASE + "finance/agreements/3311",
        status_code=409,
        json={"code": "Conflict", "message": "Record is in use by another member."},
    )
    with pytest.raises(ApiRejected, match="HTTP 409.*Record is in use"):
        api.agreement(3311)


def test_a_bare_500_on_a_read_is_retried(api, requests_mock, sleeps):
    requests_mock.get(
        BASE + "finance/agreements/3311",
        [{"status_code": 503, "text": "<html>busy</html>"}, {"json": AGREEMENT}],
    )
    assert api.agreement(3311).name == "Managed Services 2026"
    assert len(sleeps) == 1


# --- the one write -------------------------------------------------------------------------


def test_patch_body_is_exactly_a_replace_of_the_target_quantity(api, requests_mock):
    """The trap (issue 14): before=35, target=37 sends quantity 37, never the difference 2."""
    requests_mock.patch(
        BASE + "finance/agreements/3311/additions/88412", json={**ADDITION, "quantity": 37.0}
    )
    updated = api.patch_addition(3311, 88412, 37)
    sent = api_requests(requests_mock)[-1]
    assert sent.method == "PATCH"
    assert sent.headers["Content-Type"] == "application/json"
    assert json.loads(sent.body) == [{"op": "replace", "path": "quantity", "value": 37}]
    assert isinstance(updated, Addition) and updated.whole_quantity == 37


def test_patch_body_with_the_unit_cost(api, requests_mock):
    requests_mock.patch(BASE + "finance/agreements/3311/additions/88412", json=ADDITION)
    api.patch_addition(3311, 88412, 37, unit_cost=2.5)
    assert json.loads(api_requests(requests_mock)[-1].body) == [
        {"op": "replace", "path": "quantity", "value": 37},
        {"op": "replace", "path": "unitCost", "value": 2.5},
    ]


@pytest.mark.parametrize(
    ("quantity", "unit_cost"),
    [(-1, None), (2.5, None), (37.0, None), (True, None), ("37", None), (None, None),
     (37, -0.01), (37, math.nan), (37, math.inf), (37, "2.5"), (37, False)],
)  # fmt: skip
def test_a_bad_quantity_or_cost_is_refused_before_sending(api, requests_mock, quantity, unit_cost):
    with pytest.raises(UsageError, match="Refusing to send"):
        api.patch_addition(3311, 88412, quantity, unit_cost=unit_cost)
    assert requests_mock.request_history == []


def test_zero_is_a_quantity(api, requests_mock):
    requests_mock.patch(BASE + "finance/agreements/3311/additions/88412", json=ADDITION)
    api.patch_addition(3311, 88412, 0)
    assert json.loads(api_requests(requests_mock)[-1].body)[0]["value"] == 0
    assert patch_body(0) == [{"op": "replace", "path": "quantity", "value": 0}]


@pytest.mark.parametrize(
    "answer",
    [{"text": ""}, {"text": "not json"}, {"json": {"id": 88412}}, {"json": {**ADDITION, "id": 9}}],
)
def test_an_accepted_patch_with_an_unusable_answer_returns_none(api, requests_mock, answer):
    requests_mock.patch(BASE + "finance/agreements/3311/additions/88412", **answer)
    assert api.patch_addition(3311, 88412, 37) is None
    assert [r.method for r in api_requests(requests_mock)] == ["PATCH"]


def test_the_client_never_sends_put_post_or_delete(api, requests_mock):
    """Every public method against a server that answers anything: only GET and PATCH go out."""
    requests_mock.get(BASE + "system/info", json={"version": "v1"})
    requests_mock.get(BASE + "company/companies", json=[COMPANY])
    requests_mock.get(BASE + "company/companies/250", json=COMPANY)
    requests_mock.get(BASE + "finance/agreements", json=[AGREEMENT])
    requests_mock.get(BASE + "finance/agreements/3311", json=AGREEMENT)
    requests_mock.get(BASE + "finance/agreements/3311/additions", json=[ADDITION])
    requests_mock.get(BASE + "finance/agreements/3311/additions/88412", json=ADDITION)
    requests_mock.patch(BASE + "finance/agreements/3311/additions/88412", json=ADDITION)
    public = [name for name, _ in inspect.getmembers(ConnectWiseApi) if not name.startswith("_")]
    assert sorted(public) == [
        "addition", "additions", "agreement", "agreements", "base", "codebase", "company",
        "find_companies", "patch_addition", "system_info",
    ]  # fmt: skip
    api.system_info()
    api.find_companies("j")
    api.company(250)
    api.agreements(250)
    api.agreement(3311)
    api.additions(3311)
    api.addition(3311, 88412)
    api.patch_addition(3311, 88412, 35, unit_cost=2.25)
    assert {r.method for r in requests_mock.request_history} == {"GET", "PATCH"}
    source = Path(connectwise.__file__).parent
    for path in source.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        for verb in ('"PUT"', '"POST"', '"DELETE"', ".put(", ".post(", ".delete("):
            assert verb not in text, (path.name, verb)


# --- parsing -------------------------------------------------------------------------------


def test_records_parse_with_the_openapi_field_names(api, requests_mock):
    requests_mock.get(BASE + "finance/agreements/3311", json=AGREEMENT)
    requests_mock.get(
        BASE + "finance/agreements/3311/additions",
        json=[ADDITION, {**ADDITION, "id": 88413, "cancelledDate": "2026-02-28T00:00:00Z"}],
    )
    agreement = api.agreement(3311)
    assert (agreement.name, agreement.type_name, agreement.status) == (
        "Managed Services 2026",
        "Managed Services",
        "Active",
    )
    assert (agreement.start, agreement.end) == (date(2025, 3, 1), date(2027, 2, 28))
    assert agreement.billing_cycle == "Monthly" and agreement.cancelled is False
    assert not agreement.ended_before(date(2026, 3, 1))
    first, second = api.additions(3311)
    assert (first.product_id, first.product_identifier, first.quantity) == (
        7001,
        "INFIMA-SAT",
        35.0,
    )
    assert (first.unit_price, first.unit_cost, first.bill_customer) == (4.5, 2.25, "Billable")
    assert first.effective == date(2025, 3, 1) and first.cancelled is None
    assert first.last_updated == "2026-03-01T10:00:00Z"
    assert second.cancelled_on(date(2026, 3, 1)) and not first.cancelled_on(date(2026, 3, 1))


def test_a_hidden_cost_reads_as_none_and_a_fractional_quantity_is_not_whole(api, requests_mock):
    requests_mock.get(
        BASE + "finance/agreements/3311/additions/88412",
        json={**ADDITION, "unitCost": None, "quantity": 2.5},
    )
    addition = api.addition(3311, 88412)
    assert addition.unit_cost is None and addition.whole_quantity is None


@pytest.mark.parametrize(
    ("path", "record", "message"),
    [
        ("company/companies/250", {**COMPANY, "id": "250x"}, "usable id"),
        ("company/companies/250", [COMPANY], "not a record"),
        ("finance/agreements/3311", {**AGREEMENT, "company": None}, "usable company"),
        ("finance/agreements/3311", {**AGREEMENT, "cancelledFlag": "no"}, "cancelledFlag"),
        ("finance/agreements/3311", {**AGREEMENT, "endDate": "someday"}, "endDate"),
        ("finance/agreements/3311", {**AGREEMENT, "nextInvoiceDate": 20260401}, "nextInvoiceDate"),
        ("finance/agreements/3311/additions/88412", {**ADDITION, "quantity": "35"}, "quantity"),
        ("finance/agreements/3311/additions/88412", {**ADDITION, "quantity": 1e400}, "quantity"),
        (
            "finance/agreements/3311/additions/88412",
            {**ADDITION, "cancelledDate": "x"},
            "cancelled",
        ),
        ("finance/agreements/3311/additions/88412", {**ADDITION, "product": {}}, "usable id"),
        ("finance/agreements/3311/additions/88412", {**ADDITION, "agreementId": 9}, "agreement 9"),
    ],
)
def test_a_malformed_record_is_a_bad_response_not_a_traceback(
    api, requests_mock, path, record, message
):
    requests_mock.get(BASE + path, text=json.dumps(record))
    read = {
        "company/companies/250": lambda: api.company(250),
        "finance/agreements/3311": lambda: api.agreement(3311),
        "finance/agreements/3311/additions/88412": lambda: api.addition(3311, 88412),
    }[path]
    with pytest.raises(BadResponseError, match=message) as e:
        read()
    assert e.value.exit_code == 3


def test_agreements_of_another_company_are_refused(api, requests_mock):
    stray = {**AGREEMENT, "id": 4000, "company": {"id": 999, "name": "Someone Else"}}
    requests_mock.get(BASE + "finance/agreements", json=[AGREEMENT, stray])
    with pytest.raises(BadResponseError, match="agreements of company 999"):
        api.agreements(250)


def test_a_missing_addition_or_agreement_reads_as_none(api, requests_mock):
    requests_mock.get(BASE + "finance/agreements/1", status_code=404, json={"code": "NotFound"})
    requests_mock.get(
        BASE + "finance/agreements/3311/additions/2", status_code=404, json={"code": "NotFound"}
    )
    assert api.agreement(1) is None and api.addition(3311, 2) is None


@pytest.mark.parametrize("bad", [0, -5, True, "7", 7.0])
def test_ids_must_be_positive_integers(api, requests_mock, bad):
    with pytest.raises(UsageError, match="not a ConnectWise record id"):
        api.agreement(bad)
    assert api_requests(requests_mock) == []


# --- secrets -------------------------------------------------------------------------------


def test_debug_logs_and_errors_never_carry_the_private_key_or_the_basic_header(
    api, requests_mock, caplog
):
    """At -vv (DEBUG) every record as emitted, before any redacting handler, and every error
    message stay free of the private key and the Basic header value, even when a server
    echoes them back."""
    caplog.set_level(logging.DEBUG)
    echo = f"bad login {PRIVATE} / Basic {TOKEN}"
    requests_mock.get(BASE + "system/info", status_code=401, json={"message": echo})
    requests_mock.get(
        BASE + "finance/agreements", status_code=400, json={"message": "x", "errors": [echo]}
    )
    requests_mock.get(BASE + "finance/agreements/3311", status_code=500, json={"message": echo})
    requests_mock.patch(BASE + "finance/agreements/3311/additions/88412", json=ADDITION)
    seen: list[str] = []
    for call in (
        api.system_info,
        lambda: api.agreements(250),
        lambda: api.agreement(3311),
        lambda: api.patch_addition(3311, 88412, 37, unit_cost=2.0),
    ):
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - every error's text is scanned
            seen += [str(exc), repr(exc), *getattr(exc, "errors", [])]
    seen += [record.getMessage() for record in caplog.records]
    assert any("PATCH" in line or "HTTP" in line for line in seen)
    for text in seen:
        assert PRIVATE not in text and TOKEN not in text, text
    assert PRIVATE not in repr(CREDS)
