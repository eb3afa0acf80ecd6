"""The HaloPSA simulator over real loopback HTTP with plain ``requests`` (the protocol the
tool's client speaks): authinfo and the token (tenant, secret, scopes, expiry), paging,
search, the POST's update and create semantics, count validation, the rolling rate window,
faults, the concurrent writer, recurring-invoice lines and the request log."""

from __future__ import annotations

import logging
import threading
from datetime import date
from typing import Any

import pytest
import requests

from infima_autotask.sandbox import Sandbox, data, halo_data

TODAY = date(2026, 3, 10)
T = 5  # seconds: timeout of every request
SCOPE = "read:customers read:invoices edit:softwarelicensing"


@pytest.fixture
def sb():
    with Sandbox(today=TODAY) as sandbox:
        yield sandbox


class Clock:
    """A clock the tests move instead of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(sb):
    fake = Clock()
    sb.halo.clock = fake
    return fake


class Halo:
    """Hand-made requests to the simulator."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self._token: str | None = None

    def token(self, *, query: str = "", **form: Any) -> requests.Response:
        fields = {
            "grant_type": "client_credentials",
            "client_id": self.sb.halo_client_id,
            "client_secret": self.sb.halo_client_secret,
            "scope": SCOPE,
            **form,
        }
        fields = {k: v for k, v in fields.items() if v is not None}
        return requests.post(f"{self.sb.halo_url}/auth/token{query}", data=fields, timeout=T)

    def login(self, scope: str = SCOPE) -> str:
        response = self.token(scope=scope)
        assert response.status_code == 200, response.text
        self._token = response.json()["access_token"]
        return self._token

    def headers(self, token: str | None) -> dict[str, str]:
        token = token if token is not None else self._token or self.login()
        return {"Authorization": f"Bearer {token}"}

    def get(self, path: str, *, token: str | None = None, **params: Any) -> requests.Response:
        return requests.get(
            f"{self.sb.halo_url}/api/{path}",
            params=params,
            headers=self.headers(token),
            timeout=T,
        )

    def post(self, body: Any, *, token: str | None = None, **kwargs: Any) -> requests.Response:
        return requests.post(
            f"{self.sb.halo_url}/api/SoftwareLicence",
            json=body,
            headers=self.headers(token),
            timeout=T,
            **kwargs,
        )


@pytest.fixture
def halo(sb):
    return Halo(sb)


def halo_requests(sb: Sandbox):
    return [r for r in sb.requests if r.service == "halo"]


def ids(response: requests.Response, key: str) -> list[int]:
    assert response.status_code == 200, response.text
    return [record["id"] for record in response.json()[key]]


# --- authinfo and the token ----------------------------------------------------------------


def test_authinfo_then_a_form_token_then_a_bearer_read(sb, halo):
    info = requests.get(f"{sb.halo_url}/api/authinfo", timeout=T)
    assert info.json() == {"auth_url": f"{sb.halo_url}/auth", "tenant_id": None}
    answer = halo.token()
    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["scope"].split() == sorted(SCOPE.split())
    response = halo.get("Client/45", token=body["access_token"])
    assert response.json() == {
        "id": 45,
        "name": "Kestrel Law LLP",
        "inactive": False,
        "toplevel_id": 1,
    }
    token_request = halo_requests(sb)[1]
    assert token_request.path == "/auth/token" and token_request.method == "POST"
    assert token_request.headers["Content-Type"] == "application/x-www-form-urlencoded"


def test_the_token_request_must_be_a_form(sb, halo):
    fields = {
        "grant_type": "client_credentials",
        "client_id": sb.halo_client_id,
        "client_secret": sb.halo_client_secret,
        "scope": SCOPE,
    }
    response = requests.post(f"{sb.halo_url}/auth/token", json=fields, timeout=T)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    assert "x-www-form-urlencoded" in response.json()["error_description"]
    assert sb.halo_client_secret not in response.text
    # Logged with the secret masked, even when sent as JSON.
    assert halo_requests(sb)[-1].body["client_secret"] == "********"
    got = requests.get(f"{sb.halo_url}/auth/token", timeout=T)
    assert got.status_code == 405


def test_a_wrong_secret_or_client_id_is_401_invalid_client_without_echo(sb, halo):
    wrong = "Not-The-Halo-Secret-0042"
    for form in ({"client_secret": wrong}, {"client_id": "00000000-0000-0000-0000-000000000000"}):
        response = halo.token(**form)
        assert response.status_code == 401
        assert response.json() == {
            "error": "invalid_client",
            "error_description": "The client id or client secret is not valid.",
        }
        assert wrong not in response.text
    assert halo.token(client_secret=None).status_code == 401
    assert not sb.halo.tokens


@pytest.mark.parametrize(
    ("form", "error", "fragment"),
    [
        ({"grant_type": "password"}, "unsupported_grant_type", "client_credentials"),
        ({"scope": None}, "invalid_request", "scope is required"),
        ({"scope": "read:customer"}, "invalid_scope", "read:customer"),
        ({"audience": "x"}, "invalid_request", "audience"),
    ],
)
def test_bad_token_forms_are_400_naming_what_is_wrong(halo, form, error, fragment):
    response = halo.token(**form)
    assert response.status_code == 400
    assert response.json()["error"] == error and fragment in response.json()["error_description"]


def test_a_hosted_tenant_needs_its_name_on_the_token_url(sb, halo):
    sb.halo.hosted = True
    info = requests.get(f"{sb.halo_url}/api/authinfo", timeout=T).json()
    assert info["tenant_id"] == sb.halo_tenant == halo_data.TENANT
    missing = halo.token()
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    assert "tenant" in missing.json()["error_description"]
    assert halo.token(query="?tenant=someoneelse").status_code == 400
    assert halo.token(query="?tenant=x&other=1").status_code == 400
    assert halo.token(query=f"?tenant={sb.halo_tenant}").status_code == 200
    sb.halo.hosted = False  # on-premises: the tenant is not needed, and not refused
    assert halo.token(query=f"?tenant={sb.halo_tenant}").status_code == 200


def test_missing_unknown_and_expired_tokens_are_401(sb, halo, clock):
    no_auth = requests.get(f"{sb.halo_url}/api/Client", timeout=T)
    assert no_auth.status_code == 401 and no_auth.content == b""
    assert halo.get("Client", token="not-a-token").status_code == 401
    basic = requests.get(
        f"{sb.halo_url}/api/Client", headers={"Authorization": "Basic abc"}, timeout=T
    )
    assert basic.status_code == 401
    sb.halo.token_lifetime = 120
    token = halo.login()
    clock.now += 119
    assert halo.get("Client", token=token).status_code == 200
    clock.now += 1
    assert halo.get("Client", token=token).status_code == 401
    fresh = halo.login()
    sb.halo.expire_tokens()
    assert halo.get("Client", token=fresh).status_code == 401


def test_scopes_the_application_lacks_are_not_granted_and_calls_need_theirs(sb, halo):
    sb.halo.scopes = frozenset({"read:customers", "read:invoices"})
    answer = halo.token(scope=SCOPE + " all").json()
    assert answer["scope"] == "read:customers read:invoices"
    token = answer["access_token"]
    assert halo.get("Client", token=token).status_code == 200
    assert halo.get("RecurringInvoice", token=token).status_code == 200
    refused = halo.get("SoftwareLicence", token=token)
    assert refused.status_code == 403 and "read:softwarelicensing" in refused.json()["errors"][0]
    write = halo.post([{"id": 9127, "count": 13}], token=token)
    assert write.status_code == 403 and "edit:softwarelicensing" in write.json()["errors"][0]
    assert sb.halo.count(9127) == 12
    # edit: includes read:, and a token asked only for reading customers cannot read invoices.
    sb.halo.scopes = halo_data.APPLICATION_SCOPES
    assert halo.get("SoftwareLicence/9127", token=halo.login()).status_code == 200
    narrow = halo.login("read:customers")
    assert halo.get("RecurringInvoice", token=narrow).status_code == 403
    sb.halo.scopes = frozenset({"all"})
    everything = halo.login("all")
    assert halo.post([{"id": 9127, "count": 13}], token=everything).status_code == 200


# --- reads -----------------------------------------------------------------------------------


def test_client_paging_with_record_count(sb, halo):
    sb.generate_halo(5)
    first = halo.get("Client", pageinate="true", page_size=4, page_no=1)
    assert first.json()["record_count"] == 9  # 4 active seeded + 5
    assert ids(first, "clients") == [45, 46, 47, 48]
    second = halo.get("Client", pageinate="true", page_size=4, page_no=3)
    assert ids(second, "clients") == [800_004]
    beyond = halo.get("Client", pageinate="true", page_size=4, page_no=9)
    assert ids(beyond, "clients") == [] and beyond.json()["record_count"] == 9
    default = halo.get("Client", pageinate="true")
    assert len(ids(default, "clients")) == 9
    everything = halo.get("Client")
    assert everything.json()["record_count"] == 9 and len(ids(everything, "clients")) == 9


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"pageinate": "true", "page_size": 1001}, "page_size cannot be more than 1000"),
        ({"pageinate": "true", "page_size": 0}, "page_size"),
        ({"pageinate": "true", "page_no": "x"}, "page_no"),
        ({"page_size": 10}, "need pageinate=true"),
        ({"pageinate": "yes"}, "pageinate must be true or false"),
        ({"toplevel_id": 1}, "toplevel_id"),
        ({"includeinactive": "1"}, "includeinactive"),
    ],
)
def test_bad_paging_and_unknown_parameters_are_400(halo, params, fragment):
    response = halo.get("Client", **params)
    assert response.status_code == 400 and fragment in response.json()


def test_a_parameter_given_twice_is_400(sb, halo):
    response = requests.get(
        f"{sb.halo_url}/api/Client?search=a&search=b", headers=halo.headers(None), timeout=T
    )
    assert response.status_code == 400 and "more than once" in response.json()


def test_search_is_a_case_insensitive_substring_and_inactive_clients_need_asking(halo):
    assert ids(halo.get("Client", search="KESTREL"), "clients") == [45]
    both = halo.get("Client", search="kestrel law", includeinactive="true")
    assert ids(both, "clients") == [45, 49]
    assert both.json()["clients"][1]["inactive"] is True
    assert ids(halo.get("Client", search="nobody"), "clients") == []
    assert halo.get("Client/49").json()["name"] == "Kestrel Law LLP (old)"


def test_unknown_records_paths_and_methods(sb, halo):
    assert halo.get("Client/999").status_code == 404
    assert halo.get("SoftwareLicence/1").status_code == 404
    assert halo.get("SoftwareLicence/abc").status_code == 404
    assert halo.get("Client/45", includedetails="true").status_code == 400
    assert halo.get("ClientContract", client_id=45).status_code == 404
    assert halo.get("RecurringInvoice/-94").status_code == 404
    not_api = requests.get(f"{sb.halo_url}/nothing", timeout=T)
    assert not_api.status_code == 404 and "text/html" in not_api.headers["Content-Type"]
    put = requests.put(
        f"{sb.halo_url}/api/SoftwareLicence", json=[], headers=halo.headers(None), timeout=T
    )
    assert put.status_code == 405
    assert requests.post(f"{sb.halo_url}/api/authinfo", timeout=T).status_code == 405
    assert requests.get(f"{sb.halo_url}/api/authinfo?x=1", timeout=T).status_code == 400


def test_licences_leave_inactive_and_deleted_out_unless_asked(sb, halo):
    pelican = halo.get("SoftwareLicence", client_id=47, pageinate="true", page_size=1000)
    assert ids(pelican, "licences") == [halo_data.PELICAN_LICENCE_ID]
    both = halo.get("SoftwareLicence", client_id=47, includeinactive="true")
    assert ids(both, "licences") == [9140, 9141]
    old = both.json()["licences"][0]
    assert old["is_active"] is False and old["status"] == "Inactive"
    assert old["end_date"] == "2026-02-28T00:00:00" and old["name"] == "INFIMA Security Awareness"
    assert both.json()["licences"][1]["start_date"] == "2026-03-01T00:00:00"
    assert halo.get("SoftwareLicence/9140").json()["is_active"] is False
    sb.halo.licences[9150]["deleted"] = True
    assert ids(halo.get("SoftwareLicence", client_id=48), "licences") == [9151]
    everything = halo.get("SoftwareLicence", pageinate="true", page_size=3, page_no=2)
    assert everything.json()["record_count"] == 6
    assert ids(everything, "licences") == [9131, 9141, 9151]
    assert halo.get("SoftwareLicence", search="INFIMA").status_code == 400


def test_the_seed_has_the_awkward_cases(halo):
    quail = halo.get("SoftwareLicence", client_id=48).json()["licences"]
    assert [(r["id"], r["name"]) for r in quail] == [
        (9150, "INFIMA Security Awareness"),
        (9151, "INFIMA Security Awareness"),
    ]
    kestrel = halo.get("SoftwareLicence/9127").json()
    assert kestrel == kestrel | {
        "client_id": 45,
        "client_name": "Kestrel Law LLP",
        "count": 12,
        "type": 1,
        "status": "Active",
        "is_active": True,
        "deleted": False,
        "end_date": None,
        "billing_cycle": "Monthly",
    }
    assert set(kestrel) == set(halo_data.LICENCE_FIELDS)
    osprey = halo.get("SoftwareLicence", client_id=46).json()["licences"]
    assert [r["name"] for r in osprey] == [
        "INFIMA Security Awareness",
        halo_data.OTHER_LICENCE_NAME,
    ]


def test_recurring_invoice_lines_reference_their_licences(sb, halo):
    def takes_from(client_id: int) -> dict[int, list[int]]:
        invoices = halo.get("RecurringInvoice", client_id=client_id, includelines="true").json()
        return {
            line["id"]: [
                q["type_id"] for q in line["quantity_subscriptions"] + line["quantity_licences"]
            ]
            for invoice in invoices["invoices"]
            for line in invoice["lines"]
        }

    assert takes_from(45) == {501: [9127], 502: [9128]}
    assert takes_from(46) == {511: [9131]}  # 9130 is billed by no line: the warning case
    assert takes_from(47) == {521: [9141]}
    assert takes_from(48) == {}
    kestrel = halo.get("RecurringInvoice", client_id=45, includelines="true").json()
    assert kestrel["record_count"] == 1
    invoice = kestrel["invoices"][0]
    assert invoice["id"] == halo_data.KESTREL_INVOICE_ID == -94
    line = invoice["lines"][0]
    assert line == line | {"item_code": "INFIMA-SAT", "qty_order": 12, "isinactive": False}
    assert line["quantity_subscriptions"] == [
        {
            "id": line["quantity_subscriptions"][0]["id"],
            "invoice_line_id": 501,
            "kind": 0,
            "type_id": 9127,
            "type_name": "INFIMA Security Awareness",
        }
    ]
    pelican = halo.get("RecurringInvoice", client_id=47, includelines="true").json()
    assert pelican["invoices"][0]["lines"][0]["quantity_subscriptions"] == []
    # The line's quantity follows the subscription's count.
    assert halo.post([{"id": 9127, "count": 15}]).status_code == 200
    again = halo.get("RecurringInvoice", client_id=45, includelines="true").json()
    assert again["invoices"][0]["lines"][0]["qty_order"] == 15
    without = halo.get("RecurringInvoice", client_id=45).json()["invoices"][0]
    assert "lines" not in without
    paged = halo.get("RecurringInvoice", pageinate="true", page_size=2, page_no=2).json()
    assert paged["record_count"] == 3 and [i["id"] for i in paged["invoices"]] == [-96]
    assert halo.get("RecurringInvoice", rinvoice_type="both").status_code == 400


# --- the write -------------------------------------------------------------------------------


def test_post_updates_only_the_fields_sent_and_answers_the_record(sb, halo):
    before = dict(sb.halo.licences[9127])
    response = halo.post([{"id": 9127, "client_id": 45, "count": 14}])
    assert response.status_code == 200
    assert response.json() == before | {"count": 14}
    assert sb.halo.licences[9127] == before | {"count": 14}
    assert sb.halo.updates == [
        {
            "licence_id": 9127,
            "body": {"id": 9127, "client_id": 45, "count": 14},
            "before": before,
            "after": before | {"count": 14},
        }
    ]
    assert sb.halo.creates == []
    both = halo.post([{"id": 9130, "count": 8}, {"id": 9141, "name": "INFIMA SAT"}])
    assert [(r["id"], r["count"], r["name"]) for r in both.json()] == [
        (9130, 8, "INFIMA Security Awareness"),
        (9141, 9, "INFIMA SAT"),
    ]
    logged = halo_requests(sb)[-1]
    assert logged.method == "POST" and logged.body == [
        {"id": 9130, "count": 8},
        {"id": 9141, "name": "INFIMA SAT"},
    ]


def test_a_client_id_sent_moves_the_subscription(sb, halo):
    moved = halo.post([{"id": 9150, "client_id": 46}]).json()
    assert moved["client_id"] == 46 and moved["client_name"] == "Osprey Vets"
    assert sb.halo.updates[0]["before"]["client_id"] == 48


def test_post_without_id_creates_a_licence_and_records_it(sb, halo):
    response = halo.post([{"client_id": 46, "name": "INFIMA Security Awareness", "count": 3}])
    assert response.status_code == 200
    created = response.json()
    assert created["id"] not in (9130, 9131) and created["count"] == 3
    assert sb.halo.creates == [created]
    assert sb.halo.licences[created["id"]] == created
    assert halo.post([{"id": 0, "client_id": 45, "count": 1}]).status_code == 200
    assert halo.post([{"id": None, "client_id": 45}]).status_code == 200
    assert len(sb.halo.creates) == 3 and sb.halo.updates == []
    no_client = halo.post([{"count": 1}])
    assert no_client.status_code == 400 and "client_id is required" in no_client.json()


@pytest.mark.parametrize("count", [-1, 1.5, "3", True, None, 12.0])
def test_a_count_that_is_not_a_whole_number_from_0_is_400(sb, halo, count):
    response = halo.post([{"id": 9127, "count": count}])
    assert response.status_code == 400 and "count must be a whole number >= 0" in response.json()
    assert sb.halo.count(9127) == 12 and sb.halo.updates == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"id": 9127, "count": 13}, "non-empty JSON array"),
        ([], "non-empty JSON array"),
        ([9127], "JSON object"),
        ([{"id": 1, "count": 3}], "SoftwareLicence 1 does not exist"),
        ([{"id": "9127", "count": 3}], "id must be a whole number"),
        ([{"id": True, "count": 3}], "id must be a whole number"),
        ([{"id": 9127, "quantity": 3}], "Unknown licence field(s): quantity"),
        ([{"id": 9127, "client_id": 999}], "Client 999 does not exist"),
        ([{"id": 9127, "is_active": "yes"}], "is_active"),
        ([{"id": 9127, "client_id": True}], "client_id"),
        ([{"id": 9127, "count": 13}, {"id": 9130, "count": -2}], "count must be"),
    ],
)
def test_bad_post_bodies_are_400_and_change_nothing(sb, halo, body, fragment):
    response = halo.post(body)
    assert response.status_code == 400 and fragment in response.json()
    assert sb.halo.count(9127) == 12 and sb.halo.updates == [] and sb.halo.creates == []


def test_post_needs_a_json_body(sb, halo):
    response = requests.post(
        f"{sb.halo_url}/api/SoftwareLicence",
        data='[{"id": 9127, "count": 13}]',
        headers={**halo.headers(None), "Content-Type": "text/plain"},
        timeout=T,
    )
    assert response.status_code == 415 and sb.halo.count(9127) == 12
    response = requests.post(
        f"{sb.halo_url}/api/SoftwareLicence",
        data=b"not json",
        headers={**halo.headers(None), "Content-Type": "application/json"},
        timeout=T,
    )
    assert response.status_code == 400 and "JSON array" in response.json()
    assert halo.post([{"id": 9127, "count": 13}], params={"x": 1}).status_code == 400


# --- the rolling window ------------------------------------------------------------------


def test_300_requests_per_rolling_window_then_429_until_it_slides(sb, halo, clock):
    url = f"{sb.halo_url}/api/authinfo"
    with requests.Session() as session:
        halo.login()  # the token request counts too
        assert sb.halo.requests_in_window() == 1
        clock.now += 100
        for _ in range(299):
            assert session.get(url, timeout=T).status_code == 200
        assert sb.halo.requests_in_window() == 300
        limited = halo.get("Client")
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "200"
        assert "300 Requests per rolling 5 minute window" in limited.json()
        assert sb.halo.requests_in_window() == 300  # a 429 is not counted
        clock.now += 200  # the token request leaves the window: one slot
        assert halo.get("Client").status_code == 200
        assert session.get(url, timeout=T).status_code == 429
        clock.now += 100  # everything else leaves it
        assert sb.halo.requests_in_window() == 1
        assert session.get(url, timeout=T).status_code == 200


def test_the_retry_after_knob(sb, halo, clock):
    sb.halo.limit = 1
    assert requests.get(f"{sb.halo_url}/api/authinfo", timeout=T).status_code == 200
    sb.halo.retry_after = None
    missing = requests.get(f"{sb.halo_url}/api/authinfo", timeout=T)
    assert missing.status_code == 429 and "Retry-After" not in missing.headers
    sb.halo.retry_after = 7
    assert requests.get(f"{sb.halo_url}/auth/token", timeout=T).headers["Retry-After"] == "7"
    sb.halo.retry_after = 2.5
    assert requests.get(f"{sb.halo_url}/api/Client", timeout=T).headers["Retry-After"] == "2.5"
    sb.halo.limit = None
    assert requests.get(f"{sb.halo_url}/api/authinfo", timeout=T).status_code == 200


# --- faults and the concurrent writer ----------------------------------------------------


def test_faults_in_halo_shapes(sb, halo):
    halo.login()
    sb.faults.add("halo:clients", "429", retry_after=3)
    limited = halo.get("Client")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    sb.faults.add("halo:clients", "429")
    assert "Retry-After" not in halo.get("Client").headers
    sb.faults.add("halo:licences", "429-html", retry_after=4)
    html = halo.get("SoftwareLicence")
    assert html.status_code == 429 and html.text.startswith("<html>")
    sb.faults.add("halo:invoices", "503")
    assert halo.get("RecurringInvoice").status_code == 503
    sb.faults.add("halo:invoices", "500-errors")
    assert halo.get("RecurringInvoice").json() == {"errors": ["Simulated failure"]}
    sb.faults.add("halo:auth", "502")
    assert halo.token().status_code == 502
    sb.faults.add("halo:auth", "500-bare")
    assert requests.get(f"{sb.halo_url}/api/authinfo", timeout=T).status_code == 500
    sb.faults.add("halo:write", "400")
    assert halo.post([{"id": 9127, "count": 13}]).status_code == 400
    assert sb.halo.count(9127) == 12
    sb.faults.add("halo:licences", "drop")
    with pytest.raises(requests.ConnectionError):
        halo.get("SoftwareLicence/9127")
    assert [r.status for r in halo_requests(sb)][-1] == 0
    assert halo.get("SoftwareLicence/9127").status_code == 200  # one fault, one request


def test_a_timeout_fault_holds_the_answer(sb, halo):
    halo.login()
    sb.faults.add("halo:clients", "timeout", retry_after=0.5)
    with pytest.raises(requests.ReadTimeout):
        requests.get(f"{sb.halo_url}/api/Client", headers=halo.headers(None), timeout=0.2)
    sb.faults.add("halo:auth", "timeout", retry_after=0.1)
    assert halo.token().status_code == 200  # answered, late


def test_a_write_applied_then_dropped(sb, halo):
    halo.login()
    sb.faults.add("halo:write", "apply-then-drop")
    with pytest.raises(requests.ConnectionError):
        halo.post([{"id": 9127, "count": 20}])
    assert sb.halo.count(9127) == 20
    assert halo.get("SoftwareLicence/9127").json()["count"] == 20
    sb.faults.add("halo:write", "apply-then-500-bare")
    assert halo.post([{"id": 9127, "count": 21}]).status_code == 500
    assert sb.halo.count(9127) == 21 and len(sb.halo.updates) == 2


def test_a_held_write_is_applied_before_it_answers(sb, halo):
    token = halo.login()
    sb.faults.add("halo:write", "apply-then-hold")
    answers: list[requests.Response] = []
    worker = threading.Thread(
        target=lambda: answers.append(halo.post([{"id": 9127, "count": 22}], token=token))
    )
    worker.start()
    assert sb.faults.held.wait(5)
    assert sb.halo.count(9127) == 22  # applied, the caller still waiting
    assert halo.get("SoftwareLicence/9127", token=token).json()["count"] == 22
    sb.faults.release()
    worker.join(5)
    assert answers[0].status_code == 200 and answers[0].json()["count"] == 22


def test_fault_and_knob_validation(sb):
    with pytest.raises(ValueError, match="unknown fault endpoint"):
        sb.faults.add("halo:nothing", "429")
    with pytest.raises(ValueError, match="halo:write"):
        sb.faults.add("halo:licences", "apply-then-drop")
    with pytest.raises(ValueError, match="moment"):
        sb.halo.concurrent_write(9127, 1, "sometime")
    with pytest.raises(ValueError, match="no licence"):
        sb.halo.concurrent_write(1, 1, "after-get")
    with pytest.raises(ValueError, match="via"):
        sb.halo.add_invoice_line(-94, 9127, via="users")
    with pytest.raises(KeyError):
        sb.halo.count(1)


def test_a_concurrent_writer_between_the_read_and_the_write(sb, halo):
    """INFIMA's nightly sync sets 13 right after the tool read 12; the tool's absolute 14
    wins."""
    sb.halo.concurrent_write(9127, 13, "after-get")
    listed = halo.get("SoftwareLicence", client_id=45, pageinate="true", page_size=1000)
    assert listed.json()["licences"][0]["count"] == 12
    assert sb.halo.count(9127) == 13
    assert halo.post([{"id": 9127, "count": 14}]).json()["count"] == 14
    assert sb.halo.updates[0]["before"]["count"] == 13


def test_concurrent_writers_around_the_post(sb, halo):
    sb.halo.concurrent_write(9127, 30, "before-post")
    assert halo.post([{"id": 9127, "count": 14}]).json()["count"] == 14
    assert sb.halo.updates[0]["before"]["count"] == 30
    sb.halo.concurrent_write(9127, 25, "after-post")
    assert halo.post([{"id": 9127, "count": 15}]).json()["count"] == 15
    assert halo.get("SoftwareLicence/9127").json()["count"] == 25


# --- request log and secrets -------------------------------------------------------------


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def sandbox_log():
    """Every message the package logs, however an earlier test left the logging set up (the
    CLI stops ``infima_autotask`` propagating to the root)."""
    logger = logging.getLogger("infima_autotask")
    records, level = Records(), logger.level
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    yield records.messages
    logger.removeHandler(records)
    logger.setLevel(level)


def test_the_request_log_never_holds_the_secret_and_no_log_line_a_token(sb, halo, sandbox_log):
    wrong = "Wr0ng-Halo-Secret-99"
    token = halo.login()
    halo.token(client_secret=wrong)
    halo.get("Client", search="kestrel")
    halo.post([{"id": 9127, "count": 13}])
    sb.faults.add("halo:write", "apply-then-drop")
    with pytest.raises(requests.ConnectionError):
        halo.post([{"id": 9127, "count": 14}])
    log = halo_requests(sb)
    assert {r.service for r in sb.requests} == {"halo"}
    assert [(r.method, r.status) for r in log] == [
        ("POST", 200),
        ("POST", 401),
        ("GET", 200),
        ("POST", 200),
        ("POST", 0),
    ]
    assert log[0].body == {
        "grant_type": "client_credentials",
        "client_id": sb.halo_client_id,
        "client_secret": "********",
        "scope": SCOPE,
    }
    assert log[1].body["client_secret"] == "********"
    assert log[2].body is None and log[3].body == [{"id": 9127, "count": 13}]
    # A secret sent somewhere else is masked too.
    requests.post(f"{sb.halo_url}/auth//token", data={"client_secret": wrong}, timeout=T)
    requests.post(f"{sb.halo_url}/api/Client", json={"client_secret": wrong}, timeout=T)
    assert [r.body for r in halo_requests(sb)[-2:]] == [{"client_secret": "********"}] * 2
    log = halo_requests(sb)
    assert all(r.host.startswith("127.0.0.1:") for r in log)
    assert all(r.finished >= r.started for r in log)
    for record in log:
        text = repr(record)  # headers are kept out of the repr
        assert sb.halo_client_secret not in text and wrong not in text and token not in text
        assert sb.halo_client_secret not in str(record.body) and wrong not in str(record.body)
    # The bearer token is kept in the headers (where the secret scan checks it went).
    assert log[2].headers["Authorization"] == f"Bearer {token}"
    assert "Authorization" not in log[0].headers
    messages = sandbox_log
    assert any("/auth/token" in m for m in messages)
    for message in messages:
        assert sb.halo_client_secret not in message and wrong not in message
        assert token not in message


# --- seed and generator ------------------------------------------------------------------


def test_the_demo_mapping_has_an_infima_client_and_a_billed_subscription(sb, halo):
    mapping = halo_data.seed_mapping(TODAY)
    assert mapping["psa"] == "halo" and mapping["client_id"] == data.KESTREL_LAW_CLIENT_ID
    infima = sb.state.infima_clients[mapping["client_id"]]
    assert (infima.client_name, infima.active, infima.inactive) == ("Kestrel Law", 14, 1)
    assert mapping["client_id"] not in {m["client_id"] for m in data.seed_mappings(TODAY)}
    licence = halo.get(f"SoftwareLicence/{mapping['subscription_id']}").json()
    assert licence["client_id"] == mapping["account_id"]
    assert licence["client_name"] == mapping["account_name"]
    assert licence["name"] == mapping["subscription_name"]


def test_an_unseeded_sandbox_is_empty():
    with Sandbox(today=TODAY, seed=False) as empty:
        other = Halo(empty)
        assert other.get("Client").json() == {"record_count": 0, "clients": []}
        assert "halo_url='http://127.0.0.1:" in repr(empty)


def test_generate_halo_adds_billed_subscriptions_with_a_share_changed():
    with Sandbox(today=TODAY) as sandbox:
        before = dict(sandbox.halo.licences)
        mappings = sandbox.generate_halo(10, changes=4, first_client_id=8000)
        more = sandbox.generate_halo(2, first_client_id=8010)
        assert {k: v for k, v in sandbox.halo.licences.items() if k in before} == before
        halo = Halo(sandbox)
        changed = 0
        for m in [*mappings, *more]:
            assert m["psa"] == "halo"
            licence = sandbox.halo.licences[m["subscription_id"]]
            assert licence["client_id"] == m["account_id"] and licence["is_active"]
            assert sandbox.halo.clients[m["account_id"]]["name"] == m["account_name"]
            active = sandbox.state.infima_clients[m["client_id"]].active
            changed += active != sandbox.halo.count(m["subscription_id"])
        assert changed == 4 + 1  # as asked, then round(2 * 0.3)
        assert len({m["subscription_id"] for m in [*mappings, *more]}) == 12
        invoices = halo.get(
            "RecurringInvoice", client_id=more[0]["account_id"], includelines="true"
        )
        line = invoices.json()["invoices"][0]["lines"][0]
        assert line["quantity_subscriptions"][0]["type_id"] == more[0]["subscription_id"]
        with pytest.raises(ValueError, match="already used"):
            sandbox.generate_halo(1, first_client_id=8000)
        with pytest.raises(ValueError, match="changes between 0 and n"):
            sandbox.generate_halo(1, changes=2)


def test_invoices_built_by_hand_number_their_lines_and_keep_a_fixed_quantity(sb, halo):
    invoice = sb.halo.add_recurring_invoice(48, 9150, 9151)
    assert invoice["id"] == -101
    sb.halo.add_invoice_line(-101, None, qty=4)
    lines = halo.get("RecurringInvoice", client_id=48, includelines="true").json()
    got = lines["invoices"][0]["lines"]
    assert [(line["item_code"], line["qty_order"]) for line in got] == [
        ("INFIMA-SAT", 5),
        ("INFIMA-SAT", 6),
        ("SERVICE", 4),
    ]
    assert len({line["id"] for line in got}) == 3 and got[2]["quantity_subscriptions"] == []


def test_a_token_form_field_given_twice_is_400(sb):
    form = "grant_type=client_credentials&grant_type=client_credentials&scope=all"
    response = requests.post(
        f"{sb.halo_url}/auth/token",
        data=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=T,
    )
    assert response.status_code == 400 and "more than once" in response.json()["error_description"]
