"""INFIMA client (paging, the active-user rule) and the counts-file source."""

from __future__ import annotations

import logging

import pytest
from conftest import API_KEY, INFIMA

from infima_autotask.errors import (
    ApiUnavailable,
    AuthenticationError,
    BadResponseError,
    UnsafeUrlError,
    UsageError,
)
from infima_autotask.http import HttpClient
from infima_autotask.infima import (
    PAGE_LIMIT,
    CountsFile,
    InfimaApi,
    InfimaClientInfo,
    count_active_users,
)

NO_STATUS = (
    "INFIMA returned no user status; set infima.count_users_without_status: true "
    "to count every listed user."
)


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def client(sleeps):
    with HttpClient("INFIMA", sleep=sleeps.append) as http:
        yield InfimaApi(http, INFIMA, API_KEY)


def clients_page(start, count):
    return {"items": [{"id": i, "client_name": f"Client {i}"} for i in range(start, start + count)]}


def users(*statuses):
    return [
        {"id": n, "email": f"u{n}@example.com", **({} if s is None else {"status": s})}
        for n, s in enumerate(statuses)
    ]


# --- the API client --------------------------------------------------------------------


def test_partner_name_with_the_api_key_header(client, requests_mock):
    requests_mock.get(INFIMA + "/v1/partner", json={"partner_name": "Partner Co", "admins": []})
    assert client.partner_name() == "Partner Co"
    request = requests_mock.last_request
    assert request.headers["X-API-Key"] == API_KEY
    assert request.timeout is not None
    assert request.headers["User-Agent"].startswith("infima-autotask/")


def test_partner_without_name_is_a_bad_response(client, requests_mock):
    requests_mock.get(INFIMA + "/v1/partner", json={"admins": []})
    with pytest.raises(BadResponseError, match="partner_name"):
        client.partner_name()


def test_rejected_key_is_an_authentication_error(client, requests_mock):
    requests_mock.get(INFIMA + "/v1/partner", status_code=401, json={"message": "Unauthorized"})
    with pytest.raises(AuthenticationError) as caught:
        client.partner_name()
    assert caught.value.exit_code == 3
    assert str(caught.value).startswith("INFIMA rejected the API key (HTTP 401")
    assert API_KEY not in str(caught.value)


def test_clients_are_paged_by_50_until_a_short_page(client, requests_mock):
    requests_mock.get(
        INFIMA + "/v1/clients",
        [
            {"json": clients_page(1, 50)},
            {"json": clients_page(51, 50)},
            {"json": clients_page(101, 20)},
        ],
    )
    found = client.clients()
    assert len(found) == 120
    assert found[0] == InfimaClientInfo(1, "Client 1")
    assert found[-1] == InfimaClientInfo(120, "Client 120")
    history = requests_mock.request_history
    assert [r.qs for r in history] == [
        {"limit": ["50"], "offset": ["0"]},
        {"limit": ["50"], "offset": ["50"]},
        {"limit": ["50"], "offset": ["100"]},
    ]
    assert all(r.headers["X-API-Key"] == API_KEY for r in history)
    assert PAGE_LIMIT == 50


def test_exactly_50_clients_costs_a_full_then_an_empty_page(client, requests_mock):
    requests_mock.get(
        INFIMA + "/v1/clients", [{"json": clients_page(1, 50)}, {"json": {"items": []}}]
    )
    assert len(client.clients()) == 50
    assert requests_mock.call_count == 2
    assert requests_mock.last_request.qs["offset"] == ["50"]


def test_client_without_numeric_id_is_a_bad_response(client, requests_mock):
    requests_mock.get(INFIMA + "/v1/clients", json={"items": [{"id": "7", "client_name": "x"}]})
    with pytest.raises(BadResponseError, match="numeric id"):
        client.clients()


def test_page_without_items_is_a_bad_response(client, requests_mock):
    requests_mock.get(INFIMA + "/v1/clients", json=[{"id": 1}])
    with pytest.raises(BadResponseError, match="without an item list"):
        client.clients()


def test_users_are_paged(client, requests_mock):
    page1 = {"items": users(*["active"] * 50)}
    page2 = {"items": users("active", "Inactive", "ACTIVE")}
    requests_mock.get(INFIMA + "/v1/clients/7/users", [{"json": page1}, {"json": page2}])
    assert client.active_users(7) == 52
    assert requests_mock.call_count == 2
    assert requests_mock.request_history[1].qs == {"limit": ["50"], "offset": ["50"]}


def test_reads_are_retried(client, sleeps, requests_mock):
    requests_mock.get(INFIMA + "/v1/clients", [{"status_code": 502}, {"json": clients_page(1, 2)}])
    assert len(client.clients()) == 2
    assert len(sleeps) == 1


def test_a_bare_500_is_unavailable(client, requests_mock):
    requests_mock.get(INFIMA + "/v1/partner", status_code=500, text="<html>oops</html>")
    with pytest.raises(ApiUnavailable):
        client.partner_name()


def test_plain_http_base_url_is_refused(sleeps):
    with pytest.raises(UnsafeUrlError):
        InfimaApi(HttpClient("INFIMA"), "http://app.infimasecapis.com", API_KEY)


def test_users_without_status_fail_unless_allowed(sleeps, requests_mock):
    requests_mock.get(INFIMA + "/v1/clients/3/users", json={"items": users(None, None)})
    http = HttpClient("INFIMA", sleep=sleeps.append)
    with pytest.raises(BadResponseError) as caught:
        InfimaApi(http, INFIMA, API_KEY).active_users(3)
    assert str(caught.value) == NO_STATUS
    assert InfimaApi(http, INFIMA, API_KEY, count_without_status=True).active_users(3) == 2


# --- the active-user rule --------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["active", "Active", "ACTIVE", "inactive"], 3),
        (["inactive", "Inactive", "deleted", ""], 0),
        ([], 0),
        (["active", None], 1),  # a user without status never counts when others carry one
        (["active ", "actived", "in-active"], 0),
    ],
)
def test_active_user_rule(statuses, expected):
    assert count_active_users(users(*statuses), count_without_status=False) == expected


def test_status_null_counts_as_inactive():
    listed = [{"id": 1, "status": None}, {"id": 2, "status": "active"}]
    assert count_active_users(listed, count_without_status=False) == 1


def test_no_status_field_at_all_raises_the_spec_text():
    with pytest.raises(BadResponseError) as caught:
        count_active_users(users(None, None, None), count_without_status=False)
    assert str(caught.value) == NO_STATUS
    assert caught.value.exit_code == 3


def test_no_status_field_with_the_setting_counts_every_user():
    assert count_active_users(users(None, None, None), count_without_status=True) == 3


def test_the_fields_seen_are_logged(caplog):
    with caplog.at_level(logging.INFO, logger="infima_autotask"):
        count_active_users(users("active"), count_without_status=False)
    assert "INFIMA user fields seen: email, id, status" in caplog.text


# --- the counts file -------------------------------------------------------------------


def write(tmp_path, text, name="counts.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_counts_file_good_rows(tmp_path):
    path = write(
        tmp_path, "client_id,active_users,client_name\n101,25,Acme Dental\n\n117, 8 ,Bright\n"
    )
    source = CountsFile(path)
    assert source.clients() == [
        InfimaClientInfo(101, "Acme Dental"),
        InfimaClientInfo(117, "Bright"),
    ]
    assert source.active_users(101) == 25
    assert source.active_users(117) == 8


def test_counts_file_two_columns_and_a_bom(tmp_path):
    path = tmp_path / "counts.csv"
    path.write_bytes("\ufeffClient_ID,Active_Users\r\n5,0\r\n".encode())
    source = CountsFile(path)
    assert source.clients() == [InfimaClientInfo(5, "")]
    assert source.active_users(5) == 0


def test_counts_file_unknown_client(tmp_path):
    source = CountsFile(write(tmp_path, "client_id,active_users\n1,2\n"))
    with pytest.raises(UsageError) as caught:
        source.active_users(9)
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        f"Client 9 is not in the counts file {tmp_path / 'counts.csv'}; add a row for it."
    )


def test_counts_file_bad_rows_are_all_listed_with_line_numbers(tmp_path):
    path = write(
        tmp_path,
        "client_id,active_users\n1,5\nabc,3\n2,-1\n0,4\n3,2.5\n4\n1,7\n5,6,extra\n6,²\n²,1\n",
    )
    with pytest.raises(UsageError) as caught:
        CountsFile(path)
    error = caught.value
    assert error.exit_code == 2
    assert str(error) == f"Counts file {path} has 9 bad row(s); fix them and run again."
    assert error.details == [
        "line 3: client_id must be a positive integer, got 'abc'",
        "line 4: active_users must be a whole number >= 0, got '-1'",
        "line 5: client_id must be a positive integer, got '0'",
        "line 6: active_users must be a whole number >= 0, got '2.5'",
        "line 7: expected 2 columns, got 1",
        "line 8: client_id 1 appears twice",
        "line 9: expected 2 columns, got 3",
        "line 10: active_users must be a whole number >= 0, got '²'",
        "line 11: client_id must be a positive integer, got '²'",
    ]


def test_counts_file_missing(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(UsageError) as caught:
        CountsFile(path)
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        f"Cannot read the counts file {path}: FileNotFoundError. "
        "Check the path (infima.counts_file or --counts-file)."
    )


@pytest.mark.parametrize(
    "header",
    [
        "id,users",
        "client_id",
        "active_users,client_id",
        "client_id,active_users,name",
        "client_id,active_users,client_name,extra",
    ],
)
def test_counts_file_bad_header(tmp_path, header):
    path = write(tmp_path, f"{header}\n1,2\n")
    with pytest.raises(UsageError) as caught:
        CountsFile(path)
    assert str(caught.value) == (
        f"Counts file {path}: the first line must be client_id,active_users[,client_name]."
    )


def test_counts_file_empty(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(UsageError, match="is empty"):
        CountsFile(path)


def test_counts_file_not_utf8(tmp_path):
    path = tmp_path / "counts.csv"
    path.write_bytes(b"client_id,active_users,client_name\n1,2,Caf\xe9\n")
    with pytest.raises(UsageError, match="UnicodeDecodeError"):
        CountsFile(path)
