"""Autotask client: zone lookup and its host rule, auth, paging, chunking, get/create, limits."""

from __future__ import annotations

import json
import threading
import time
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from conftest import API_URL, BASE, CODE, SECRET, USERNAME

from infima_autotask.autotask import (
    DEFAULT_ZONE_URL,
    MAX_IN_FLIGHT,
    AutotaskApi,
    Threshold,
    Zone,
    chunks,
    format_date,
    lookup_zone,
    parse_date,
    parse_datetime,
    rest_base,
)
from infima_autotask.credentials import AutotaskCredentials
from infima_autotask.errors import (
    ApiRejected,
    ApiUnavailable,
    AuthenticationError,
    BadResponseError,
    UnsafeUrlError,
)
from infima_autotask.http import HttpClient
from infima_autotask.runtime import Runtime

ZONE_ANSWER = {"zoneName": "AE02", "url": API_URL, "webUrl": "https://ww5.autotask.net/", "ci": 5}
CREDS = AutotaskCredentials(USERNAME, CODE, SECRET)


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def http(sleeps):
    with HttpClient("Autotask", sleep=sleeps.append) as client:
        yield client


@pytest.fixture
def client(http):
    return AutotaskApi(http, API_URL, CREDS)


def carries_credentials(request) -> bool:
    return any(name in request.headers for name in ("Secret", "UserName", "ApiIntegrationCode"))


# --- zone lookup -----------------------------------------------------------------------


def test_zone_lookup_success(http, requests_mock):
    requests_mock.get(DEFAULT_ZONE_URL, json=ZONE_ANSWER)
    zone = lookup_zone(http, USERNAME)
    assert zone == Zone(name="AE02", url=API_URL)
    assert requests_mock.last_request.qs == {"user": [USERNAME.lower()]}
    assert not carries_credentials(requests_mock.last_request)
    assert rest_base(zone.url) == BASE


@pytest.mark.parametrize(
    ("api_url", "base"),
    [
        ("https://webservices5.autotask.net/ATServicesRest/", BASE),
        ("https://webservices5.autotask.net/ATServicesRest", BASE),
        ("https://webservices5.autotask.net/ATServicesRest/V1.0/", API_URL + "V1.0/"),
    ],
)
def test_rest_base_appends_the_version_once(api_url, base):
    assert rest_base(api_url) == base


def test_zone_lookup_unknown_user_is_rejected_naming_the_user(http, sleeps, requests_mock):
    requests_mock.get(
        DEFAULT_ZONE_URL,
        status_code=500,
        json={"errors": ["Zone information could not be determined"]},
    )
    with pytest.raises(ApiRejected) as caught:
        lookup_zone(http, "nobody@example.com")
    error = caught.value
    assert error.exit_code == 3
    assert str(error) == (
        "Autotask could not find the zone of API user 'nobody@example.com': Zone information "
        "could not be determined. Check the username (it is the API user's e-mail-style login), "
        "or set INFIMA_AUTOTASK_API_URL to your zone's URL."
    )
    assert sleeps == [] and requests_mock.call_count == 1


def test_zone_lookup_without_url_is_a_bad_response(http, requests_mock):
    requests_mock.get(DEFAULT_ZONE_URL, json={"zoneName": "AE02"})
    with pytest.raises(BadResponseError, match="without a URL"):
        lookup_zone(http, USERNAME)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/",
        "http://webservices5.autotask.net/ATServicesRest/",
        "https://autotask.net.evil.example.com/",
        "https://127.0.0.1/ATServicesRest/",
    ],
)
def test_zone_answer_pointing_to_a_foreign_host_is_refused(http, requests_mock, url):
    requests_mock.get(DEFAULT_ZONE_URL, json={"zoneName": "X", "url": url})
    with pytest.raises(UnsafeUrlError) as caught:
        lookup_zone(http, USERNAME)
    assert caught.value.exit_code == 3
    assert "nothing was sent there" in str(caught.value)


def test_foreign_zone_answer_sends_no_credentials_there(stored_creds, config_path, requests_mock):
    """Through the runtime as every command uses it: api_url empty, so it looks the zone up."""
    config_path.write_text(
        f"version: 1\nautotask:\n  username: {USERNAME}\n  integration_code: {CODE}\n",
        encoding="utf-8",
    )
    requests_mock.get(DEFAULT_ZONE_URL, json={"zoneName": "X", "url": "https://evil.example.com/"})
    evil = requests_mock.get("https://evil.example.com/v1.0/ThresholdInformation", json={})
    runtime = Runtime(config_path)
    with pytest.raises(UnsafeUrlError):
        runtime.autotask().threshold()
    assert not evil.called
    assert all(r.hostname == "webservices.autotask.net" for r in requests_mock.request_history)
    assert not any(carries_credentials(r) for r in requests_mock.request_history)


def test_zone_override_on_loopback_accepts_the_same_host(http, requests_mock):
    zone_url = "http://127.0.0.1:8999/atservicesrest/v1.0/zoneInformation"
    requests_mock.get(
        zone_url, json={"zoneName": "SB", "url": "http://127.0.0.1:8999/ATServicesRest/"}
    )
    zone = lookup_zone(http, USERNAME, zone_url)
    assert zone.url == "http://127.0.0.1:8999/ATServicesRest/"


def test_zone_override_localhost_and_127_are_different_names(http, requests_mock):
    zone_url = "http://127.0.0.1:8999/atservicesrest/v1.0/zoneInformation"
    requests_mock.get(
        zone_url, json={"zoneName": "SB", "url": "http://localhost:8999/ATServicesRest/"}
    )
    with pytest.raises(UnsafeUrlError, match="localhost"):
        lookup_zone(http, USERNAME, zone_url)


def test_zone_override_still_accepts_autotask_hosts(http, requests_mock):
    zone_url = "https://zones.example.org/zoneInformation"
    requests_mock.get(zone_url, json=ZONE_ANSWER)
    assert lookup_zone(http, USERNAME, zone_url).url == API_URL


def test_default_zone_url_does_not_trust_its_own_host_for_plain_answers(http, requests_mock):
    requests_mock.get(DEFAULT_ZONE_URL, json={"url": "https://webservices.autotask.net.evil.io/"})
    with pytest.raises(UnsafeUrlError):
        lookup_zone(http, USERNAME)


def test_zone_lookup_through_the_runtime_uses_the_env_override(
    stored_creds, config_path, requests_mock
):
    config_path.write_text(
        f"version: 1\nautotask:\n  username: {USERNAME}\n  integration_code: {CODE}\n",
        encoding="utf-8",
    )
    zone_url = "http://127.0.0.1:8999/zoneInformation"
    requests_mock.get(zone_url, json={"url": "http://127.0.0.1:8999/ATServicesRest/"})
    requests_mock.get(
        "http://127.0.0.1:8999/ATServicesRest/v1.0/ThresholdInformation",
        json={"externalRequestThreshold": 10000, "currentTimeframeRequestCount": 3},
    )
    runtime = Runtime(config_path, env={"INFIMA_AUTOTASK_ZONE_URL": zone_url})
    assert runtime.autotask().threshold().used == 3


def test_api_url_override_skips_the_zone_lookup(stored_creds, config_path, requests_mock):
    config_path.write_text(
        f"version: 1\nautotask:\n  username: {USERNAME}\n  integration_code: {CODE}\n",
        encoding="utf-8",
    )
    requests_mock.get(
        BASE + "ThresholdInformation",
        json={"externalRequestThreshold": 10000, "currentTimeframeRequestCount": 3},
    )
    runtime = Runtime(config_path, env={"INFIMA_AUTOTASK_API_URL": API_URL})
    assert runtime.autotask().threshold().limit == 10000
    assert requests_mock.call_count == 1


def test_client_refuses_an_unsafe_api_url(http):
    with pytest.raises(UnsafeUrlError):
        AutotaskApi(http, "http://webservices5.autotask.net/ATServicesRest/", CREDS)


# --- auth and errors -------------------------------------------------------------------


def test_auth_headers_on_every_call(client, requests_mock):
    requests_mock.get(
        BASE + "ThresholdInformation",
        json={
            "externalRequestThreshold": 10000,
            "currentTimeframeRequestCount": 124,
            "requestThresholdTimeframe": 60,
        },
    )
    requests_mock.post(BASE + "Companies/query", json={"items": [], "pageDetails": {}})
    requests_mock.get(BASE + "Companies/5", json={"item": {"id": 5}})
    requests_mock.post(BASE + "ContractServiceUnits", json={"itemId": 9})
    client.threshold()
    client.query("Companies", [{"op": "eq", "field": "id", "value": 5}])
    client.get("Companies", 5)
    client.create("ContractServiceUnits", {"units": 3})
    assert requests_mock.call_count == 4
    for request in requests_mock.request_history:
        assert request.headers["ApiIntegrationCode"] == CODE
        assert request.headers["UserName"] == USERNAME
        assert request.headers["Secret"] == SECRET
        assert request.timeout is not None


def test_401_says_the_credentials_were_rejected(client, requests_mock):
    requests_mock.get(BASE + "ThresholdInformation", status_code=401, text="")
    with pytest.raises(AuthenticationError) as caught:
        client.threshold()
    assert caught.value.exit_code == 3
    assert str(caught.value) == (
        "Autotask rejected the API username, secret or integration code (HTTP 401). "
        "Check them, then run `infima-autotask connect` again."
    )
    assert SECRET not in str(caught.value)


def test_500_errors_text_is_shown(client, requests_mock):
    requests_mock.post(
        BASE + "Contracts/query", status_code=500, json={"errors": ["Invalid query syntax."]}
    )
    with pytest.raises(ApiRejected) as caught:
        client.query("Contracts", [])
    assert caught.value.errors == ["Invalid query syntax."]
    assert "Invalid query syntax." in str(caught.value)


# --- threshold -------------------------------------------------------------------------


def test_threshold_parsing(client, requests_mock):
    requests_mock.get(
        BASE + "ThresholdInformation",
        json={
            "externalRequestThreshold": 10000,
            "requestThresholdTimeframe": 60,
            "currentTimeframeRequestCount": 124,
        },
    )
    assert client.threshold() == Threshold(used=124, limit=10000, timeframe_minutes=60)


def test_threshold_without_timeframe_defaults_to_an_hour(client, requests_mock):
    requests_mock.get(
        BASE + "ThresholdInformation",
        json={
            "externalRequestThreshold": "10000",
            "currentTimeframeRequestCount": "7",
        },
    )
    assert client.threshold() == Threshold(used=7, limit=10000, timeframe_minutes=60)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"externalRequestThreshold": 10000},
        {"externalRequestThreshold": "x", "currentTimeframeRequestCount": 1},
        [],
    ],
)
def test_threshold_missing_counts_is_a_bad_response(client, requests_mock, body):
    requests_mock.get(BASE + "ThresholdInformation", json=body)
    with pytest.raises(BadResponseError, match="ThresholdInformation"):
        client.threshold()


# --- query and paging ------------------------------------------------------------------


def test_paging_across_three_pages_posts_the_same_body(client, requests_mock):
    page2 = BASE + 'Companies/query/next?paging={"pageSize":500,"nextIds":[3]}'
    page3 = BASE + 'Companies/query/next?paging={"pageSize":500,"nextIds":[5]}'
    requests_mock.post(
        BASE + "Companies/query",
        json={"items": [{"id": 1}, {"id": 2}], "pageDetails": {"count": 2, "nextPageUrl": page2}},
    )
    requests_mock.post(
        page2,
        json={"items": [{"id": 3}, {"id": 4}], "pageDetails": {"count": 2, "nextPageUrl": page3}},
    )
    requests_mock.post(
        page3, json={"items": [{"id": 5}], "pageDetails": {"count": 1, "nextPageUrl": None}}
    )
    filters = [{"op": "contains", "field": "companyName", "value": "acme"}]
    found = client.query("Companies", filters, fields=["companyName"])
    assert [item["id"] for item in found] == [1, 2, 3, 4, 5]
    history = requests_mock.request_history
    assert len(history) == 3
    assert all(r.method == "POST" for r in history)
    expected = {"maxRecords": 500, "filter": filters, "includeFields": ["companyName", "id"]}
    assert [r.json() for r in history] == [expected] * 3
    assert history[1].url.startswith(BASE + "Companies/query/next")


def test_paging_stops_on_an_empty_page_even_with_a_next_link(client, requests_mock):
    requests_mock.post(
        BASE + "Companies/query",
        json={"items": [], "pageDetails": {"nextPageUrl": BASE + "Companies/query/next?x=1"}},
    )
    assert client.query("Companies", []) == []
    assert requests_mock.call_count == 1


def test_a_next_page_on_another_host_is_refused(client, requests_mock):
    requests_mock.post(
        BASE + "Companies/query",
        json={
            "items": [{"id": 1}],
            "pageDetails": {"nextPageUrl": "https://evil.example.com/v1.0/Companies/query/next"},
        },
    )
    evil = requests_mock.post("https://evil.example.com/v1.0/Companies/query/next", json={})
    with pytest.raises(UnsafeUrlError, match="another host"):
        client.query("Companies", [])
    assert not evil.called


def test_query_without_items_is_a_bad_response(client, requests_mock):
    requests_mock.post(BASE + "Companies/query", json={"pageDetails": {}})
    with pytest.raises(BadResponseError, match="without an item list"):
        client.query("Companies", [])


def test_query_in_chunks_at_500(client, requests_mock):
    requests_mock.post(BASE + "Contracts/query", json={"items": [{"id": 1}], "pageDetails": {}})
    ids = list(range(1000, 2201))
    assert len(ids) == 1201
    extra = {"op": "eq", "field": "status", "value": 1}
    found = client.query_in("Contracts", "companyID", ids, filters=[extra])
    assert len(found) == 3
    bodies = [r.json() for r in requests_mock.request_history]
    assert [len(b["filter"][0]["value"]) for b in bodies] == [500, 500, 201]
    assert [v for b in bodies for v in b["filter"][0]["value"]] == ids
    assert all(
        b["filter"][0]["op"] == "in" and b["filter"][0]["field"] == "companyID" for b in bodies
    )
    assert all(b["filter"][1] == extra for b in bodies)


def test_query_in_with_no_values_sends_nothing(client, requests_mock):
    assert client.query_in("Contracts", "id", []) == []
    assert requests_mock.call_count == 0


def test_chunks_deduplicates_and_keeps_order():
    assert list(chunks([3, 1, 3, 2, 1], size=2)) == [[3, 1], [2]]


# --- get, create, picklists ------------------------------------------------------------


def test_get_returns_the_item(client, requests_mock):
    requests_mock.get(BASE + "Contracts/42", json={"item": {"id": 42, "status": 1}})
    assert client.get("Contracts", 42) == {"id": 42, "status": 1}


def test_get_item_null_is_none(client, requests_mock):
    requests_mock.get(BASE + "Contracts/42", json={"item": None})
    assert client.get("Contracts", 42) is None


def test_get_without_item_key_is_a_bad_response(client, requests_mock):
    requests_mock.get(BASE + "Contracts/42", json={"id": 42})
    with pytest.raises(BadResponseError):
        client.get("Contracts", 42)


def test_create_returns_the_item_id(client, requests_mock):
    requests_mock.post(BASE + "ContractServiceUnits", json={"itemId": 777})
    assert client.create("ContractServiceUnits", {"units": 5}) == 777
    assert requests_mock.last_request.json() == {"units": 5}


@pytest.mark.parametrize(
    "response",
    [
        {"status_code": 429, "headers": {"Retry-After": "1"}},
        {"status_code": 503},
        {"exc": requests.exceptions.ReadTimeout},
    ],
)
def test_create_is_never_retried(client, sleeps, requests_mock, response):
    requests_mock.post(BASE + "ContractServiceUnits", [response, {"json": {"itemId": 1}}])
    with pytest.raises(ApiUnavailable):
        client.create("ContractServiceUnits", {"units": 5})
    assert requests_mock.call_count == 1
    assert sleeps == []


def test_reads_are_retried(client, sleeps, requests_mock):
    requests_mock.get(BASE + "Contracts/1", [{"status_code": 503}, {"json": {"item": None}}])
    assert client.get("Contracts", 1) is None
    assert len(sleeps) == 1


def test_picklist_parsing(client, requests_mock):
    requests_mock.get(
        BASE + "Contracts/entityInformation/fields",
        json={
            "fields": [
                {
                    "name": "status",
                    "isPickList": True,
                    "picklistValues": [
                        {"value": "0", "label": "Inactive"},
                        {"value": "1", "label": "Active"},
                        {"value": "x", "label": "Broken"},
                        {"label": "no value"},
                    ],
                },
                {
                    "name": "contractType",
                    "isPickList": True,
                    "picklistValues": [{"value": "7", "label": "Recurring Service"}],
                },
            ]
        },
    )
    assert client.picklist("Contracts", "ContractType") == {7: "Recurring Service"}
    assert client.picklist("Contracts", "status") == {0: "Inactive", 1: "Active"}
    assert client.picklist("Contracts", "missing") == {}


# --- concurrency -----------------------------------------------------------------------


class _SlowHandler(BaseHTTPRequestHandler):
    """Answers every query after a pause, counting how many requests overlap."""

    def do_POST(self):  # noqa: N802 - the stdlib's name
        server = self.server
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with server.lock:
            server.now += 1
            server.max = max(server.max, server.now)
        time.sleep(0.08)
        with server.lock:
            server.now -= 1
        body = json.dumps({"items": [{"id": 1}], "pageDetails": {}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    server.daemon_threads = True
    server.lock, server.now, server.max = threading.Lock(), 0, 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_at_most_three_requests_in_flight(slow_server):
    """requests-mock serialises every send, so this runs against a real loopback server."""
    port = slow_server.server_address[1]
    with HttpClient("Autotask") as http:
        client = AutotaskApi(http, f"http://127.0.0.1:{port}/ATServicesRest/", CREDS)
        results = []
        threads = [
            threading.Thread(target=lambda: results.append(client.query("Companies", [])))
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [[{"id": 1}]] * 8
    assert slow_server.max == MAX_IN_FLIGHT == 3


# --- dates -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T00:00:00", datetime(2026, 3, 1, tzinfo=timezone.utc)),
        ("2026-03-01T00:00:00Z", datetime(2026, 3, 1, tzinfo=timezone.utc)),
        ("2026-03-01T12:34:56.1Z", datetime(2026, 3, 1, 12, 34, 56, 100000, timezone.utc)),
        ("2026-03-01T12:34:56.12", datetime(2026, 3, 1, 12, 34, 56, 120000, timezone.utc)),
        ("2026-03-01T12:34:56.123Z", datetime(2026, 3, 1, 12, 34, 56, 123000, timezone.utc)),
        ("2026-03-01T12:34:56.1234", datetime(2026, 3, 1, 12, 34, 56, 123400, timezone.utc)),
        ("2026-03-01T12:34:56.12345Z", datetime(2026, 3, 1, 12, 34, 56, 123450, timezone.utc)),
        ("2026-03-01T12:34:56.123456", datetime(2026, 3, 1, 12, 34, 56, 123456, timezone.utc)),
        ("2026-03-01T12:34:56.1234567Z", datetime(2026, 3, 1, 12, 34, 56, 123456, timezone.utc)),
        ("2026-03-01T12:34:56.1234567", datetime(2026, 3, 1, 12, 34, 56, 123456, timezone.utc)),
        ("2026-03-01T12:34:56.", datetime(2026, 3, 1, 12, 34, 56, tzinfo=timezone.utc)),
        (
            "2026-03-01T12:34:56.5-05:00",
            datetime(2026, 3, 1, 12, 34, 56, 500000, timezone(timedelta(hours=-5))),
        ),
        ("2026-03-01T12:34:56z", datetime(2026, 3, 1, 12, 34, 56, tzinfo=timezone.utc)),
    ],
)
def test_parse_datetime(text, expected):
    parsed = parse_datetime(text)
    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize(
    "value", [None, "", "garbage", "2026-13-01T00:00:00", 20260301, "2026-03-01T25:00"]
)
def test_parse_datetime_garbage_is_none(value):
    assert parse_datetime(value) is None


def test_parse_date_and_format_date():
    assert parse_date("2026-07-01T00:00:00Z") == date(2026, 7, 1)
    assert parse_date("nope") is None
    assert format_date(date(2026, 7, 1)) == "2026-07-01T00:00:00"
