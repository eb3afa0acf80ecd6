"""HaloPSA client over requests-mock: authinfo and token (tenant, expiry, 401 renewal),
paging by record_count, pacing, 429, error texts, the one write and its refusals, defensive
parsing and redaction."""

from __future__ import annotations

import inspect
import json
import logging
from datetime import date
from urllib.parse import parse_qs, urlsplit

import pytest

from infima_autotask import halo
from infima_autotask.errors import (
    ApiRejected,
    ApiUnavailable,
    AuthenticationError,
    BadResponseError,
    UnsafeUrlError,
    UsageError,
)
from infima_autotask.halo import HaloApi, HaloCredentials, Licence, count_body, halo_base
from infima_autotask.http import HttpClient, RollingLimit

URL = "https://acme.halopsa.com"
API = URL + "/api/"
AUTHINFO = API + "authinfo"
TOKEN_URL = URL + "/auth/token"
SECRET = "Halo-s3cret-9f8e7d6c5b4a"
TOKEN = "tok-AAAA-1111"
CREDS = HaloCredentials(URL, "app-client-id-42", SECRET)

CLIENT = {"id": 45, "name": "Kestrel Law LLP", "inactive": False, "toplevel_id": 1}
LICENCE = {
    "id": 9127,
    "client_id": 45,
    "client_name": "Kestrel Law LLP",
    "name": "INFIMA Security Awareness",
    "type": 1,
    "count": 12,
    "status": "Active",
    "is_active": True,
    "deleted": False,
    "start_date": "2026-01-01T00:00:00",
    "end_date": None,
    "billing_cycle": "Monthly",
    "price": 3.5,
    "monthly_cost": 1.25,
}


class FakeTime:
    """A monotonic clock that only the fake sleep moves."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake():
    return FakeTime()


@pytest.fixture
def http(fake):
    with HttpClient("HaloPSA", sleep=fake.sleep) as client:
        yield client


def token_answer(value: str = TOKEN, expires_in: int = 3600, scope: str | None = None):
    body = {"access_token": value, "token_type": "Bearer", "expires_in": expires_in}
    if scope is not None:
        body["scope"] = scope
    return {"json": body}


@pytest.fixture
def mocked(requests_mock):
    requests_mock.get(AUTHINFO, json={"auth_url": URL + "/auth", "tenant_id": None})
    requests_mock.post(TOKEN_URL, **token_answer())
    return requests_mock


def make_api(http, fake, creds=CREDS):
    return HaloApi(http, creds, pacer=RollingLimit(clock=fake.clock, sleep=fake.sleep))


@pytest.fixture
def api(http, fake, mocked):
    return make_api(http, fake)


def api_requests(requests_mock):
    return [
        r for r in requests_mock.request_history if "/api/" in r.url and "authinfo" not in r.url
    ]


def query(request) -> dict[str, list[str]]:
    """The query exactly as sent (requests-mock's ``qs`` lower-cases values)."""
    return parse_qs(urlsplit(request.url).query, keep_blank_values=True)


def token_requests(requests_mock):
    return [r for r in requests_mock.request_history if r.url.split("?")[0] == TOKEN_URL]


# --- URL, authinfo and token ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "base"),
    [
        ("acme.halopsa.com", "https://acme.halopsa.com"),
        ("https://acme.halopsa.com/", "https://acme.halopsa.com"),
        ("https://ACME.halopsa.com/api", "https://acme.halopsa.com"),
        ("https://halo.example-msp.com:8443/halo/", "https://halo.example-msp.com:8443/halo"),
        ("http://127.0.0.1:8124", "http://127.0.0.1:8124"),
    ],
)
def test_the_url_typed_becomes_the_instance_base(typed, base):
    assert halo_base(typed) == base


def test_plain_http_off_this_machine_and_an_empty_url_are_refused():
    with pytest.raises(UnsafeUrlError):
        halo_base("http://acme.halopsa.com")
    with pytest.raises(UsageError):
        halo_base("  ")


def test_authinfo_then_a_form_token_request_then_bearer_calls(api, mocked):
    mocked.get(API + "Client/45", json=CLIENT)
    assert api.client(45) == halo.HaloClient(45, "Kestrel Law LLP", False)
    first, second, third = mocked.request_history
    assert (first.method, first.url) == ("GET", AUTHINFO)
    assert "Authorization" not in first.headers
    assert (second.method, second.url) == ("POST", TOKEN_URL)
    assert second.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(second.text) == {
        "grant_type": ["client_credentials"],
        "client_id": ["app-client-id-42"],
        "client_secret": [SECRET],
        "scope": ["read:customers read:invoices edit:softwarelicensing"],
    }
    assert third.headers["Authorization"] == f"Bearer {TOKEN}"


def test_the_tenant_travels_on_the_token_request_only(http, fake, mocked):
    api = make_api(http, fake, HaloCredentials(URL, "app-client-id-42", SECRET, "acme"))
    mocked.get(API + "Client/45", json=CLIENT)
    api.client(45)
    token = token_requests(mocked)[0]
    assert query(token) == {"tenant": ["acme"]}
    assert "tenant" not in query(api_requests(mocked)[0])


def test_the_auth_url_from_authinfo_is_used(http, fake, requests_mock):
    requests_mock.get(AUTHINFO, json={"auth_url": "https://auth.example-msp.com/auth/"})
    requests_mock.post("https://auth.example-msp.com/auth/token", **token_answer())
    requests_mock.get(API + "Client/45", json=CLIENT)
    make_api(http, fake).client(45)
    assert requests_mock.request_history[1].url == "https://auth.example-msp.com/auth/token"


@pytest.mark.parametrize(
    "answer", [{"status_code": 404}, {"text": "<html>no</html>"}, {"json": []}]
)
def test_an_unreadable_authinfo_falls_back_to_url_auth(http, fake, requests_mock, answer):
    requests_mock.get(AUTHINFO, **answer)
    requests_mock.post(TOKEN_URL, **token_answer())
    requests_mock.get(API + "Client/45", json=CLIENT)
    make_api(http, fake).client(45)
    assert token_requests(requests_mock)


def test_an_auth_url_over_plain_http_is_refused_before_the_secret_is_sent(
    http, fake, requests_mock
):
    requests_mock.get(AUTHINFO, json={"auth_url": "http://evil.example.com/auth"})
    with pytest.raises(UnsafeUrlError):
        make_api(http, fake).connect()
    assert [r.method for r in requests_mock.request_history] == ["GET"]


def test_the_token_is_reused_then_renewed_within_60s_of_expiry(api, mocked, fake):
    mocked.post(TOKEN_URL, [token_answer("tok-one-1", 600), token_answer("tok-two-2", 600)])
    mocked.get(API + "Client/45", json=CLIENT)
    api.client(45)
    fake.now += 539  # 61 s left: still used
    api.client(45)
    fake.now += 2  # 59 s left: renewed first
    api.client(45)
    sent = [r.headers["Authorization"] for r in api_requests(mocked)]
    assert sent == ["Bearer tok-one-1", "Bearer tok-one-1", "Bearer tok-two-2"]
    assert len(token_requests(mocked)) == 2


def test_a_401_renews_the_token_once_and_sends_the_same_request_again(api, mocked):
    mocked.post(TOKEN_URL, [token_answer("tok-one-1"), token_answer("tok-two-2")])
    mocked.post(API + "SoftwareLicence", [{"status_code": 401}, {"json": {**LICENCE, "count": 14}}])
    saved = api.set_count(9127, 45, 14)
    assert saved is not None and saved.count == 14
    posts = [r for r in api_requests(mocked) if r.method == "POST"]
    assert [p.headers["Authorization"] for p in posts] == ["Bearer tok-one-1", "Bearer tok-two-2"]
    assert [p.json() for p in posts] == [[{"id": 9127, "client_id": 45, "count": 14}]] * 2


def test_a_second_401_is_an_authentication_error_and_not_sent_a_third_time(api, mocked):
    mocked.get(API + "Client/45", status_code=401)
    with pytest.raises(AuthenticationError) as e:
        api.client(45)
    assert e.value.status == 401 and "new access token" in e.value.message
    assert len(api_requests(mocked)) == 2 and len(token_requests(mocked)) == 2


def test_a_rejected_client_secret_shows_halos_description_and_what_to_check(api, mocked):
    mocked.post(
        TOKEN_URL,
        status_code=401,
        json={"error": "invalid_client", "error_description": "Client authentication failed"},
    )
    with pytest.raises(AuthenticationError) as e:
        api.connect()
    text = e.value.message
    assert "Client authentication failed" in text
    assert "client id and secret" in text and "Authentication method" in text
    assert "--tenant" in text and "connect --psa halo" in text


def test_a_missing_tenant_is_a_token_error_naming_the_tenant(api, mocked):
    mocked.post(
        TOKEN_URL,
        status_code=400,
        json={"error": "invalid_request", "error_description": "tenant is required"},
    )
    with pytest.raises(AuthenticationError) as e:
        api.connect()
    assert e.value.status == 400
    assert "tenant is required" in e.value.message and "TENANT.halopsa.com" in e.value.message


def test_connect_returns_the_granted_scopes(api, mocked):
    mocked.post(TOKEN_URL, **token_answer(scope="read:customers read:invoices"))
    assert api.connect() == frozenset({"read:customers", "read:invoices"})


def test_a_token_answer_without_a_token_is_a_bad_response(api, mocked):
    mocked.post(TOKEN_URL, json={"token_type": "Bearer"})
    with pytest.raises(BadResponseError):
        api.connect()


# --- reads and paging ----------------------------------------------------------------------


def licence(i: int, **changes):
    return {**LICENCE, "id": i, **changes}


def test_paging_asks_1000_a_page_from_page_1_until_record_count(api, mocked):
    pages = [
        {"json": {"record_count": 2500, "licences": [licence(i) for i in range(1, 1001)]}},
        {"json": {"record_count": 2500, "licences": [licence(i) for i in range(1001, 2001)]}},
        {"json": {"record_count": 2500, "licences": [licence(i) for i in range(2001, 2501)]}},
    ]
    mocked.get(API + "SoftwareLicence", pages)
    found = api.licences()
    assert [f.id for f in found] == list(range(1, 2501))
    sent = [query(r) for r in api_requests(mocked)]
    assert [q["page_no"] for q in sent] == [["1"], ["2"], ["3"]]
    assert all(q["page_size"] == ["1000"] and q["pageinate"] == ["true"] for q in sent)
    assert all(q["includeinactive"] == ["true"] for q in sent)


def test_paging_stops_when_record_count_is_reached_even_on_a_full_page(api, mocked):
    page = {"record_count": 1000, "licences": [licence(i) for i in range(1, 1001)]}
    mocked.get(API + "SoftwareLicence", json=page)
    assert len(api.licences()) == 1000
    assert len(api_requests(mocked)) == 1


def test_paging_stops_on_a_short_page_without_record_count(api, mocked):
    mocked.get(
        API + "SoftwareLicence",
        [
            {"json": {"licences": [licence(i) for i in range(1, 1001)]}},
            {"json": {"licences": [licence(1001)]}},
        ],
    )
    assert len(api.licences()) == 1001
    assert len(api_requests(mocked)) == 2


def test_a_server_that_never_stops_paging_is_stopped(api, mocked, monkeypatch):
    monkeypatch.setattr(halo.client, "MAX_PAGES", 3)
    page = {"record_count": 10**9, "licences": [licence(i) for i in range(1, 1001)]}
    mocked.get(API + "SoftwareLicence", json=page)
    with pytest.raises(BadResponseError, match="kept paging"):
        api.licences()
    assert len(api_requests(mocked)) == 3


def test_licences_of_one_client_active_only(api, mocked):
    mocked.get(
        API + "SoftwareLicence",
        json={"record_count": 2, "licences": [licence(1), licence(2, is_active=False)]},
    )
    assert [f.id for f in api.licences(45, include_inactive=False)] == [1]
    assert query(api_requests(mocked)[0]) == {
        "client_id": ["45"],
        "pageinate": ["true"],
        "page_size": ["1000"],
        "page_no": ["1"],
    }


def test_licences_of_another_client_are_refused(api, mocked):
    mocked.get(
        API + "SoftwareLicence", json={"record_count": 1, "licences": [licence(1, client_id=46)]}
    )
    with pytest.raises(BadResponseError, match="client 46"):
        api.licences(45)


def test_clients_search_and_inactive(api, mocked):
    inactive = {**CLIENT, "id": 46, "inactive": True}
    mocked.get(API + "Client", json={"record_count": 2, "clients": [CLIENT, inactive]})
    assert [c.id for c in api.clients("  Kestrel ")] == [45]
    assert [c.id for c in api.clients("", include_inactive=True)] == [45, 46]
    first, second = (query(r) for r in api_requests(mocked))
    assert first["search"] == ["Kestrel"] and "includeinactive" not in first
    assert "search" not in second and second["includeinactive"] == ["true"]


def test_a_list_without_its_key_is_a_bad_response(api, mocked):
    mocked.get(API + "Client", json=[CLIENT])
    with pytest.raises(BadResponseError, match="'clients'"):
        api.clients("x")


def test_a_missing_record_reads_as_none(api, mocked):
    mocked.get(API + "Client/45", status_code=404, text="")
    mocked.get(API + "SoftwareLicence/9127", status_code=404, json={"message": "not found"})
    assert api.client(45) is None and api.licence(9127) is None


def test_a_licence_parses_and_knows_whether_it_is_active():
    found = halo.parse_licence({**LICENCE, "count": 12.0, "end_date": "2026-03-31T00:00:00"})
    assert found == Licence(
        9127, 45, "Kestrel Law LLP", "INFIMA Security Awareness", 12.0, "Active", True, False,
        date(2026, 3, 31), 3.5, 1.25,
    )  # fmt: skip
    assert found.whole_count == 12
    assert found.active_on(date(2026, 3, 31)) and not found.active_on(date(2026, 4, 1))
    assert halo.parse_licence({**LICENCE, "count": 12.5}).whole_count is None
    assert halo.parse_licence({**LICENCE, "count": None}).whole_count is None
    for changed in ({"status": "Cancelled"}, {"status": "expired"}, {"deleted": True},
                    {"is_active": False}):  # fmt: skip
        assert not halo.parse_licence({**LICENCE, **changed}).active_on(date(2026, 3, 1))


@pytest.mark.parametrize(
    "changes",
    [{"id": None}, {"id": "9127"}, {"client_id": 0}, {"count": "12"}, {"count": True},
     {"end_date": "soon"}, {"is_active": "yes"}, {"status": 3}],
)  # fmt: skip
def test_a_malformed_licence_is_a_bad_response(changes):
    with pytest.raises(BadResponseError):
        halo.parse_licence({**LICENCE, **changes})


def test_recurring_lines_name_the_licences_they_take_their_quantity_from(api, mocked):
    line = {
        "id": 501,
        "item_code": "INFIMA-SAT",
        "qty_order": 12,
        "isinactive": False,
        "quantity_subscriptions": [
            {"id": 7001, "invoice_line_id": 501, "kind": 0, "type_id": 9127}
        ],
        "quantity_licences": [{"id": 7002, "invoice_line_id": 501, "kind": 1, "type_id": 9130}],
    }
    other = {"id": 502, "item_code": "OTHER", "isinactive": True}
    invoice = {"id": -94, "client_id": 45, "lines": [line, other]}
    mocked.get(API + "RecurringInvoice", json={"record_count": 1, "invoices": [invoice]})
    assert api.recurring_lines(45) == [
        halo.RecurringLine(-94, 501, "INFIMA-SAT", frozenset({9127, 9130}), False),
        halo.RecurringLine(-94, 502, "OTHER", frozenset(), True),
    ]
    sent = query(api_requests(mocked)[0])
    assert sent["client_id"] == ["45"] and sent["includelines"] == ["true"]


def test_recurring_invoices_of_another_client_are_refused(api, mocked):
    invoice = {"id": 3, "client_id": 46, "lines": []}
    mocked.get(API + "RecurringInvoice", json={"record_count": 1, "invoices": [invoice]})
    with pytest.raises(BadResponseError):
        api.recurring_lines(45)


def test_the_connection_test_is_one_cheap_read(api, mocked):
    mocked.get(API + "Client", json={"record_count": 37, "clients": [CLIENT]})
    assert api.test() == 37
    assert query(api_requests(mocked)[0]) == {
        "pageinate": ["true"],
        "page_size": ["1"],
        "page_no": ["1"],
    }


# --- the one write -------------------------------------------------------------------------


def test_the_write_is_exactly_one_post_of_id_client_and_count(api, mocked):
    mocked.post(API + "SoftwareLicence", json={**LICENCE, "count": 0})
    saved = api.set_count(9127, 45, 0)
    assert saved is not None and saved.whole_count == 0
    (post,) = [r for r in api_requests(mocked) if r.method == "POST"]
    assert post.text == json.dumps([{"id": 9127, "client_id": 45, "count": 0}])
    assert post.headers["Content-Type"] == "application/json"


def test_an_array_answer_gives_the_entry_with_our_id(api, mocked):
    mocked.post(API + "SoftwareLicence", json=[licence(1), {**LICENCE, "count": 14}])
    saved = api.set_count(9127, 45, 14)
    assert saved is not None and saved.id == 9127 and saved.count == 14


@pytest.mark.parametrize(
    "answer",
    [{"text": ""}, {"json": []}, {"json": [licence(1)]}, {"json": "ok"}, {"text": "<html>"},
     {"json": {**LICENCE, "count": "x"}}, {"json": licence(1)}],
)  # fmt: skip
def test_an_unreadable_answer_to_the_write_is_none(api, mocked, answer):
    mocked.post(API + "SoftwareLicence", **answer)
    assert api.set_count(9127, 45, 14) is None
    assert len([r for r in api_requests(mocked) if r.method == "POST"]) == 1


@pytest.mark.parametrize(
    ("licence_id", "client_id", "count"),
    [(None, 45, 3), (0, 45, 3), (-1, 45, 3), (True, 45, 3), ("9127", 45, 3), (9127, None, 3),
     (9127, 45, -1), (9127, 45, 2.0), (9127, 45, True), (9127, 45, "3"), (9127, 45, None)],
)  # fmt: skip
def test_a_write_without_an_id_or_with_a_bad_count_is_refused_before_sending(
    api, mocked, licence_id, client_id, count
):
    with pytest.raises(UsageError, match="Refusing"):
        api.set_count(licence_id, client_id, count)
    assert mocked.request_history == []


def test_the_count_body_is_the_only_body_the_client_can_post():
    assert count_body(1, 2, 3) == [{"id": 1, "client_id": 2, "count": 3}]
    source = inspect.getsource(halo.client)
    assert source.count('"POST"') == 2  # the token request and set_count
    assert '"DELETE"' not in source and '"PUT"' not in source and '"PATCH"' not in source
    assert [n for n in dir(HaloApi) if not n.startswith("_")] == [
        "auth_url", "client", "clients", "connect", "licence", "licences", "recurring_lines",
        "scopes", "set_count", "test",
    ]  # fmt: skip


# --- errors as Halo sends them -------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        ({"json": "Count must be a whole number"}, "Count must be a whole number"),
        ({"json": {"errors": ["Bad id", "Bad count"]}}, "Bad id; Bad count"),
        ({"json": {"error_description": "nope"}}, "nope"),
        ({"json": {"message": "Licence 9127 not found."}}, "Licence 9127 not found"),
        ({"json": {"ClassName": "HaloException", "Message": "boom"}}, "HaloException: boom"),
        ({"text": "plain text\nsays  no"}, "plain text says no"),
    ],
)
def test_a_400_shows_halos_text(api, mocked, answer, shown):
    mocked.post(API + "SoftwareLicence", status_code=400, **answer)
    with pytest.raises(ApiRejected) as e:
        api.set_count(9127, 45, 3)
    assert not isinstance(e.value, AuthenticationError)
    assert e.value.message.endswith(f"(HTTP 400): {shown}.")
    assert len([r for r in api_requests(mocked) if r.method == "POST"]) == 1


def test_a_long_error_text_is_cut_to_300_characters(api, mocked):
    mocked.get(API + "Client/45", status_code=400, text="x" * 1000)
    with pytest.raises(ApiRejected) as e:
        api.client(45)
    assert "x" * 300 in e.value.message and "x" * 301 not in e.value.message


def test_a_403_names_the_missing_permission(api, mocked):
    mocked.post(API + "SoftwareLicence", status_code=403, json={"errors": ["Insufficient scope"]})
    with pytest.raises(AuthenticationError) as e:
        api.set_count(9127, 45, 3)
    text = e.value.message
    assert e.value.status == 403 and "Insufficient scope" in text
    assert "Software Licensing Read and Modify" in text and "edit:softwarelicensing" in text
    assert len(token_requests(mocked)) == 1  # a 403 does not renew the token


# --- 429 and pacing ------------------------------------------------------------------------


def test_a_read_answered_429_waits_for_retry_after(api, mocked, fake):
    mocked.get(
        API + "Client/45",
        [{"status_code": 429, "headers": {"Retry-After": "17"}}, {"json": CLIENT}],
    )
    assert api.client(45) is not None
    assert fake.sleeps == [17.0]


def test_a_write_answered_429_is_not_sent_again(api, mocked, fake):
    mocked.post(API + "SoftwareLicence", status_code=429, headers={"Retry-After": "5"})
    with pytest.raises(ApiUnavailable) as e:
        api.set_count(9127, 45, 3)
    assert e.value.status == 429 and e.value.retry_after == 5.0 and fake.sleeps == []
    assert len([r for r in api_requests(mocked) if r.method == "POST"]) == 1


def test_the_rolling_limit_never_lets_more_than_290_in_any_300s(fake):
    limit = RollingLimit(clock=fake.clock, sleep=fake.sleep)
    times = []
    for _ in range(600):
        limit.wait()
        times.append(fake.now)
    assert times[-1] - times[0] >= 300
    assert max(sum(1 for t in times if start <= t < start + 300) for start in times) == 290


def test_float_rounding_at_the_window_edge_does_not_spin(fake):
    """A sleep that ends a hair before the window does (float rounding) must not leave the
    limiter waiting zero seconds forever (these values spun once)."""

    def sleep(seconds):
        assert len(fake.sleeps) < 10, "the limiter is spinning"
        fake.sleep(seconds)

    limit = RollingLimit(1, 300.0, clock=fake.clock, sleep=sleep)
    fake.now = 1762.280082457942
    limit.wait()
    fake.now = 1762.911898463275
    limit.wait()
    assert 1762.280082457942 + 300 <= fake.now < 1762.280082457942 + 300.01


def test_every_halo_request_is_paced_authinfo_token_and_retries_included(http, fake, requests_mock):
    """The arrival time of each request at Halo: never more than 290 in any 300 s."""
    arrivals: list[float] = []
    answers = iter([503] + [200] * 400)

    def arrive(body):
        def answer(request, context):
            arrivals.append(fake.now)
            return body(context) if callable(body) else body

        return answer

    def client(context):
        context.status_code = next(answers)
        return CLIENT

    requests_mock.get(AUTHINFO, json=arrive({"auth_url": URL + "/auth"}))
    requests_mock.post(TOKEN_URL, json=arrive(token_answer()["json"]))
    requests_mock.get(API + "Client/45", json=arrive(client))
    api = make_api(http, fake)
    for _ in range(300):
        assert api.client(45) is not None
    assert len(arrivals) == 303  # authinfo, token, the 503's retry and 300 reads
    assert max(sum(1 for t in arrivals if start <= t < start + 300) for start in arrivals) == 290
    assert arrivals[-1] - arrivals[0] >= 300


def test_other_clients_are_not_paced(fake, requests_mock):
    requests_mock.get("https://example.com/x", json={})
    with HttpClient("Autotask", sleep=fake.sleep) as plain:
        for _ in range(400):
            plain.request("GET", "https://example.com/x", retry=True)
    assert fake.sleeps == []


# --- secrets -------------------------------------------------------------------------------


def test_debug_logs_and_errors_never_carry_the_secret_or_a_token(http, fake, requests_mock, caplog):
    """At -vv (DEBUG) every record as emitted and every error message stay free of the client
    secret and the access tokens, even when Halo echoes them back."""
    caplog.set_level(logging.DEBUG)
    second = "tok-BBBB-2222"
    echo = f"bad {SECRET} {TOKEN} {second}"
    requests_mock.get(AUTHINFO, json={"auth_url": URL + "/auth"})
    requests_mock.post(TOKEN_URL, [token_answer(TOKEN), token_answer(second)])
    requests_mock.get(API + "Client/45", status_code=401, json={"message": echo})
    requests_mock.get(API + "Client/46", status_code=400, json={"errors": [echo]})
    requests_mock.get(API + "Client/47", status_code=500, text=echo)
    requests_mock.post(API + "SoftwareLicence", status_code=403, json=echo)
    api = make_api(http, fake)
    seen: list[str] = []
    for call in (
        lambda: api.client(45),
        lambda: api.client(46),
        lambda: api.client(47),
        lambda: api.set_count(9127, 45, 3),
    ):
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - every error's text is scanned
            seen += [str(exc), repr(exc), *getattr(exc, "errors", [])]
    seen += [record.getMessage() for record in caplog.records]
    assert any("HTTP" in line for line in seen)
    for text in seen:
        for secret in (SECRET, TOKEN, second):
            assert secret not in text, text
    assert SECRET not in repr(CREDS)


# --- against the loopback simulator (the same protocol's other side) ----------------------


@pytest.mark.parametrize("hosted", [False, True])
def test_the_client_speaks_the_simulators_protocol(hosted):
    from infima_autotask.sandbox import Sandbox, halo_data

    with Sandbox(today=date(2026, 3, 10)) as sb, HttpClient("HaloPSA") as http:
        sb.halo.hosted = hosted
        tenant = sb.halo_tenant if hosted else None
        creds = HaloCredentials(sb.halo_url, sb.halo_client_id, sb.halo_client_secret, tenant)
        api = HaloApi(http, creds)
        assert api.connect() == frozenset(halo.SCOPES.split())
        assert api.test() is not None
        kestrel = halo_data.KESTREL_CLIENT_ID
        assert [c.id for c in api.clients("kestrel")] == [kestrel]
        licence_id = halo_data.KESTREL_LICENCE_ID
        assert licence_id in {lic.id for lic in api.licences(kestrel)}
        lines = api.recurring_lines(kestrel)
        assert any(licence_id in line.licence_ids for line in lines)
        saved = api.set_count(licence_id, kestrel, 21)
        assert saved is not None and saved.whole_count == 21
        again = api.licence(licence_id)
        assert again is not None and again.whole_count == 21
        with pytest.raises(ApiRejected, match="HTTP 400"):
            api.set_count(999_999, kestrel, 1)
        assert sb.halo.creates == []
