"""The HTTP choke point: retries with recorded sleeps, error mapping, URL safety, redaction."""

from __future__ import annotations

import json
import logging

import pytest
import requests

from infima_autotask import __version__
from infima_autotask.errors import (
    ApiRejected,
    ApiUnavailable,
    AuthenticationError,
    BadResponseError,
    UnsafeUrlError,
)
from infima_autotask.http import (
    DEFAULT_TIMEOUT,
    HttpClient,
    RedactSecrets,
    RetryPolicy,
    check_url_safe,
    redact,
    register_secret,
)

URL = "https://api.example.test/v1/things"
LOOP = "http://127.0.0.1:8765/v1/things"


class HeaderAuth(requests.auth.AuthBase):
    def __call__(self, request):
        request.headers["X-Token"] = "t0ken-value"
        return request


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def http(sleeps):
    with HttpClient("Autotask", sleep=sleeps.append) as client:
        yield client


# --- retries ---------------------------------------------------------------------------


def test_429_with_retry_after_then_success_sleeps_exactly_that(http, sleeps, requests_mock):
    requests_mock.get(
        URL,
        [
            {"status_code": 429, "headers": {"Retry-After": "7"}},
            {"status_code": 429, "headers": {"Retry-After": "2"}},
            {"json": {"ok": True}},
        ],
    )
    assert http.request("GET", URL, retry=True) == {"ok": True}
    assert sleeps == [7.0, 2.0]
    assert requests_mock.call_count == 3


def test_429_without_retry_after_backs_off_exponentially_with_jitter(http, sleeps, requests_mock):
    requests_mock.get(URL, [{"status_code": 429}] * 3 + [{"json": [1, 2]}])
    assert http.request("GET", URL, retry=True) == [1, 2]
    assert len(sleeps) == 3
    # base 1 s, doubled each attempt, jittered within [ceiling/2, ceiling]
    for attempt, delay in enumerate(sleeps, start=1):
        ceiling = 2 ** (attempt - 1)
        assert ceiling / 2 <= delay <= ceiling


def test_retry_after_as_http_date_in_the_past_means_no_wait(http, sleeps, requests_mock):
    requests_mock.get(
        URL,
        [
            {"status_code": 429, "headers": {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}},
            {"json": {}},
        ],
    )
    assert http.request("GET", URL, retry=True) == {}
    assert sleeps == [0.0]


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_are_retried_for_reads(http, sleeps, requests_mock, status):
    requests_mock.get(
        URL,
        [{"status_code": status, "text": "<html>bad gateway</html>"}] * 2 + [{"json": {"n": 1}}],
    )
    assert http.request("GET", URL, retry=True) == {"n": 1}
    assert len(sleeps) == 2


@pytest.mark.parametrize("exc", [requests.exceptions.ConnectionError, requests.exceptions.Timeout])
def test_connection_errors_and_timeouts_are_retried_for_reads(http, sleeps, requests_mock, exc):
    requests_mock.post(URL, [{"exc": exc}, {"json": {"items": []}}])
    assert http.request("POST", URL, json_body={"filter": []}, retry=True) == {"items": []}
    assert len(sleeps) == 1
    assert requests_mock.call_count == 2


def test_attempts_are_bounded(sleeps, requests_mock):
    http = HttpClient("INFIMA", retry=RetryPolicy(max_attempts=4), sleep=sleeps.append)
    requests_mock.get(URL, status_code=503)
    with pytest.raises(ApiUnavailable) as caught:
        http.request("GET", URL, retry=True)
    assert requests_mock.call_count == 4
    assert len(sleeps) == 3
    assert caught.value.status == 503
    assert caught.value.exit_code == 3
    assert str(caught.value) == (f"INFIMA is unavailable (HTTP 503, GET {URL}). Try again later.")


def test_total_wait_is_bounded_even_with_an_injected_sleep(sleeps, requests_mock):
    policy = RetryPolicy(max_attempts=50, max_total_wait=100.0)
    http = HttpClient("Autotask", retry=policy, sleep=sleeps.append)
    requests_mock.get(URL, status_code=429, headers={"Retry-After": "30"})
    with pytest.raises(ApiUnavailable) as caught:
        http.request("GET", URL, retry=True)
    assert sum(sleeps) <= 100.0
    assert sleeps == [30.0, 30.0, 30.0]
    assert requests_mock.call_count == 4
    assert caught.value.retry_after == 30.0


def test_a_retry_after_beyond_the_total_wait_is_not_slept(http, sleeps, requests_mock):
    requests_mock.get(URL, status_code=429, headers={"Retry-After": "3600"})
    with pytest.raises(ApiUnavailable) as caught:
        http.request("GET", URL, retry=True)
    assert sleeps == []
    assert requests_mock.call_count == 1
    assert caught.value.status == 429


def test_default_policy_bounds(http):
    assert http.retry.max_attempts >= 2
    assert http.retry.max_total_wait <= 600


@pytest.mark.parametrize(
    "response",
    [
        {"status_code": 429, "headers": {"Retry-After": "1"}},
        {"status_code": 502},
        {"status_code": 503},
        {"status_code": 504},
        {"exc": requests.exceptions.ConnectionError},
        {"exc": requests.exceptions.ReadTimeout},
    ],
)
def test_a_create_is_never_retried(http, sleeps, requests_mock, response):
    requests_mock.post(URL, [response, {"json": {"itemId": 1}}])
    with pytest.raises(ApiUnavailable):
        http.request("POST", URL, json_body={"name": "x"}, retry=False)
    assert requests_mock.call_count == 1
    assert sleeps == []


# --- error mapping ---------------------------------------------------------------------


def test_401_with_an_empty_body_is_an_authentication_error(http, sleeps, requests_mock):
    requests_mock.get(URL, status_code=401, text="")
    with pytest.raises(AuthenticationError) as caught:
        http.request("GET", URL, auth=HeaderAuth(), retry=True)
    assert caught.value.status == 401
    assert caught.value.exit_code == 3
    assert str(caught.value) == f"Autotask rejected the credentials (HTTP 401, GET {URL})."
    assert sleeps == [] and requests_mock.call_count == 1


@pytest.mark.parametrize("status", [400, 404, 405, 409, 422])
def test_4xx_is_rejected_and_not_retried(http, sleeps, requests_mock, status):
    requests_mock.get(URL, status_code=status, json={"errors": ["Bad filter field: foo"]})
    with pytest.raises(ApiRejected) as caught:
        http.request("GET", URL, retry=True)
    assert not isinstance(caught.value, AuthenticationError)
    assert caught.value.status == status
    assert caught.value.errors == ["Bad filter field: foo"]
    assert (
        str(caught.value) == f"Autotask refused GET {URL} (HTTP {status}): Bad filter field: foo."
    )
    assert sleeps == []


def test_500_with_errors_is_rejected_with_the_texts(http, sleeps, requests_mock):
    requests_mock.post(
        URL,
        status_code=500,
        json={"errors": ["Value does not reference an existing entity.", {"message": "Second"}]},
    )
    with pytest.raises(ApiRejected) as caught:
        http.request("POST", URL, json_body={}, retry=True)
    assert not isinstance(caught.value, ApiUnavailable)
    assert caught.value.errors == ["Value does not reference an existing entity.", "Second"]
    assert "Value does not reference an existing entity.; Second" in str(caught.value)
    assert sleeps == [] and requests_mock.call_count == 1


@pytest.mark.parametrize(
    "body", [{"text": ""}, {"text": "<html><body>Server Error</body></html>"}, {"json": {}}]
)
def test_500_without_errors_is_unavailable(http, requests_mock, body):
    requests_mock.post(URL, status_code=500, **body)
    with pytest.raises(ApiUnavailable) as caught:
        http.request("POST", URL, json_body={}, retry=False)
    assert caught.value.status == 500
    assert "<html>" not in str(caught.value)


def test_a_bare_500_read_is_retried_like_a_503(http, sleeps, requests_mock):
    """A 5xx without ``errors`` is "no usable answer" (ApiUnavailable), so reads wait for it."""
    requests_mock.get(URL, [{"status_code": 500, "text": ""}, {"json": {"ok": 1}}])
    assert http.request("GET", URL, retry=True) == {"ok": 1}
    assert requests_mock.call_count == 2
    assert len(sleeps) == 1


def test_2xx_that_is_not_json_is_a_bad_response(http, requests_mock):
    requests_mock.get(URL, text="<html>login page</html>")
    with pytest.raises(BadResponseError) as caught:
        http.request("GET", URL, retry=True)
    assert caught.value.exit_code == 3
    assert "not JSON" in str(caught.value)
    assert "login page" not in str(caught.value)


def test_2xx_empty_body_is_none(http, requests_mock):
    requests_mock.post(URL, status_code=204, text="")
    assert http.request("POST", URL, json_body={}, retry=False) is None


def test_a_redirect_is_never_followed(http, requests_mock):
    requests_mock.get(URL, status_code=302, headers={"Location": "https://elsewhere.test/steal"})
    elsewhere = requests_mock.get("https://elsewhere.test/steal", json={})
    with pytest.raises(ApiRejected) as caught:
        http.request("GET", URL, auth=HeaderAuth(), retry=True)
    assert caught.value.status == 302
    assert "redirect" in str(caught.value)
    assert not elsewhere.called
    assert [r.hostname for r in requests_mock.request_history] == ["api.example.test"]


def test_connection_error_message_names_the_service(http, requests_mock):
    requests_mock.get(URL, exc=requests.exceptions.ConnectTimeout)
    with pytest.raises(ApiUnavailable) as caught:
        HttpClient("INFIMA", retry=RetryPolicy(max_attempts=1)).request("GET", URL, retry=True)
    assert str(caught.value).startswith(f"INFIMA did not answer in time (GET {URL}).")


# --- URL safety ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://webservices5.autotask.net/ATServicesRest/",
        "http://127.0.0.1:9000/x",
        "http://127.5.6.7/x",
        "http://localhost:9000/x",
        "http://LOCALHOST/x",
        "http://[::1]:9000/x",
    ],
)
def test_safe_urls(url):
    check_url_safe(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/x",
        "http://10.0.0.1/x",
        "http://192.168.1.5/x",
        "http://127.0.0.1.evil.example/x",
        "ftp://127.0.0.1/x",
        "https:///nohost",
        "webservices5.autotask.net/x",
    ],
)
def test_unsafe_urls(url):
    with pytest.raises(UnsafeUrlError) as caught:
        check_url_safe(url)
    assert caught.value.exit_code == 3


@pytest.mark.parametrize("auth", [HeaderAuth(), None])
def test_plain_http_off_loopback_is_refused_before_any_request(http, requests_mock, auth):
    target = requests_mock.get("http://example.com/x", json={})
    with pytest.raises(UnsafeUrlError) as caught:
        http.request("GET", "http://example.com/x", auth=auth, retry=True)
    assert str(caught.value).startswith("Refusing to send credentials to http://example.com")
    assert not target.called
    assert requests_mock.call_count == 0


def test_http_to_loopback_is_allowed(http, requests_mock):
    requests_mock.get(LOOP, json={"ok": 1})
    assert http.request("GET", LOOP, auth=HeaderAuth(), retry=True) == {"ok": 1}
    assert requests_mock.last_request.headers["X-Token"] == "t0ken-value"


# --- request shape ---------------------------------------------------------------------


def test_every_request_has_a_timeout_and_the_user_agent(http, requests_mock):
    requests_mock.get(URL, json={})
    requests_mock.post(URL, json={})
    http.request("GET", URL, params={"a": "1"}, retry=True)
    assert requests_mock.last_request.timeout == DEFAULT_TIMEOUT
    assert requests_mock.last_request.qs == {"a": ["1"]}
    http.request("POST", URL, json_body={"b": 2}, retry=False)
    last = requests_mock.last_request
    assert last.timeout == DEFAULT_TIMEOUT
    assert last.json() == {"b": 2}
    for request in requests_mock.request_history:
        assert request.headers["User-Agent"] == f"infima-autotask/{__version__}"
        assert request.timeout is not None


def test_a_custom_timeout_is_used(requests_mock):
    requests_mock.get(URL, json={})
    HttpClient("INFIMA", timeout=(1.0, 2.0)).request("GET", URL, retry=True)
    assert requests_mock.last_request.timeout == (1.0, 2.0)


# --- redaction -------------------------------------------------------------------------


def test_redact_masks_registered_secrets_only():
    register_secret("hunter2-very-secret")
    register_secret("abc")  # too short to mask safely: ignored
    register_secret(None)
    assert redact("pw=hunter2-very-secret; abc") == "pw=***; abc"


def test_redact_secrets_filter_masks_log_records(caplog):
    register_secret("Zz-log-secret-123")
    logger = logging.getLogger("infima_autotask.test_http")
    logger.addFilter(RedactSecrets())
    try:
        with caplog.at_level(logging.DEBUG, logger="infima_autotask.test_http"):
            logger.debug("header Secret: %s and %d", "Zz-log-secret-123", 5)
    finally:
        logger.filters.clear()
    assert caplog.records[-1].getMessage() == "header Secret: *** and 5"
    assert "Zz-log-secret-123" not in caplog.text


def test_debug_logging_redacts_request_bodies(http, requests_mock, caplog):
    register_secret("body-secret-xyz-789")
    requests_mock.post(URL, json={})
    with caplog.at_level(logging.DEBUG, logger="infima_autotask"):
        http.request("POST", URL, json_body={"password": "body-secret-xyz-789"}, retry=False)
    assert "request body" in caplog.text
    assert "body-secret-xyz-789" not in caplog.text


def test_error_texts_from_the_server_are_redacted(http, requests_mock):
    register_secret("echoed-secret-4567")
    requests_mock.get(URL, status_code=400, json={"errors": ["bad secret echoed-secret-4567"]})
    with pytest.raises(ApiRejected) as caught:
        http.request("GET", URL, retry=True)
    assert "echoed-secret-4567" not in str(caught.value)
    assert caught.value.errors == ["bad secret ***"]


def test_proxies_and_ca_bundle_come_from_the_environment_once_per_host(
    monkeypatch, requests_mock, tmp_path
):
    """Operators behind a proxy or with a private CA keep working; verification stays on."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not used by requests-mock")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "app.infimasecapis.com")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    requests_mock.get("https://webservices5.autotask.net/x", json={})
    requests_mock.get("https://app.infimasecapis.com/y", json={})
    client = HttpClient("Autotask")
    for _ in range(2):
        client.request("GET", "https://webservices5.autotask.net/x", retry=True)
    client.request("GET", "https://app.infimasecapis.com/y", retry=True)
    autotask, _, infima = requests_mock.request_history
    assert autotask.proxies.get("https") == "http://proxy.internal:3128"
    assert not infima.proxies.get("https")  # NO_PROXY honoured per host
    assert autotask.verify == str(bundle) and infima.verify == str(bundle)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "")
    monkeypatch.setenv("CURL_CA_BUNDLE", "")
    fresh = HttpClient("Autotask")
    fresh.request("GET", "https://webservices5.autotask.net/x", retry=True)
    assert requests_mock.last_request.verify is True


@pytest.mark.parametrize(
    ("raised", "shown"),
    [
        (
            "HTTPSConnectionPool(host='acme.halopsa.cmo', port=443): Max retries exceeded with "
            'url: /api/authinfo (Caused by NameResolutionError("<urllib3.connection.'
            "HTTPSConnection object at 0x7f>: Failed to resolve 'acme.halopsa.cmo' ([Errno -2] "
            'Name or service not known)"))',
            "Failed to resolve 'acme.halopsa.cmo' ([Errno -2] Name or service not known)",
        ),
        (
            "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: / "
            "(Caused by NewConnectionError('<urllib3.connection.HTTPConnection object at "
            "0x7f>: Failed to establish a new connection: [Errno 111] Connection refused'))",
            "[Errno 111] Connection refused",
        ),
    ],
)
def test_a_connection_error_keeps_its_cause_whole(raised, shown):
    """The cause's own brackets stay balanced (they were cut with the wrappers' before)."""
    from infima_autotask.http import _reason

    assert _reason(requests.ConnectionError(raised)) == shown


def test_a_rolling_limit_keeps_its_window_for_the_next_command(tmp_path):
    """The window outlives the command: a rerun right after a full window (Ctrl-C, then
    `sync` again) waits its turn instead of meeting the server's 429s. Stamps from another
    boot (later than now) and an unreadable file count as none."""
    from infima_autotask.http import RollingLimit

    now = [1000.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    ledger = tmp_path / "state" / "halo-requests.json"
    first = RollingLimit(3, 300.0, clock=lambda: now[0], sleep=sleep, ledger=ledger)
    for _ in range(3):
        first.wait()
        now[0] += 1.0
    assert slept == [] and len(json.loads(ledger.read_text())) == 3
    second = RollingLimit(3, 300.0, clock=lambda: now[0], sleep=sleep, ledger=ledger)
    second.wait()  # a new command: the three of the last one are still in the window
    assert slept == [pytest.approx(297.0)]
    ledger.write_text(json.dumps([now[0] + 5000.0] * 3))  # stamps of an earlier boot
    third = RollingLimit(3, 300.0, clock=lambda: now[0], sleep=sleep, ledger=ledger)
    third.wait()
    assert len(slept) == 1
    ledger.write_text("not json")
    RollingLimit(3, 300.0, clock=lambda: now[0], sleep=sleep, ledger=ledger).wait()
    assert len(slept) == 1
