"""The units-row rule and the renewal look-up shared by mapping, --check and sync."""

from __future__ import annotations

from datetime import date

import pytest
from conftest import API_URL, BASE, CODE, SECRET, USERNAME

from infima_autotask.autotask import AutotaskApi
from infima_autotask.chain import find_successors
from infima_autotask.credentials import AutotaskCredentials
from infima_autotask.errors import BadResponseError
from infima_autotask.http import HttpClient
from infima_autotask.model import (
    Contract,
    UnitsRow,
    choose_row,
    parse_account,
    parse_contract,
    parse_contract_service,
)

D = date(2026, 12, 1)


def row(row_id, start, end, units=5):
    return UnitsRow(row_id, 1, 2, 3, start, end, units, 4.5, 2.25, posted=False)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([], None),
        ([row(1, date(2026, 11, 1), date(2026, 11, 30))], None),  # ends before D
        ([row(1, date(2026, 12, 2), date(2026, 12, 31))], None),  # starts after D
        ([row(1, D, date(2026, 12, 31))], 1),
        ([row(1, date(2026, 12, 1), D)], 1),  # D on the end date still covers
        # Two rows cover D: the later start wins.
        ([row(1, date(2026, 11, 15), date(2026, 12, 31)), row(2, D, date(2026, 12, 31))], 2),
        ([row(9, D, date(2026, 12, 31)), row(1, date(2026, 11, 15), date(2026, 12, 31))], 9),
        # Same start: the highest id wins, whatever the order.
        ([row(7, D, date(2026, 12, 31)), row(8, D, date(2026, 12, 31))], 8),
        ([row(8, D, date(2026, 12, 31)), row(7, D, date(2026, 12, 31))], 8),
    ],
)
def test_choose_row(rows, expected):
    chosen = choose_row(rows, D)
    assert (chosen.id if chosen else None) == expected


def contract(contract_id, account, start, end, status=1):
    return {
        "id": contract_id,
        "companyID": account,
        "contractName": f"C{contract_id}",
        "contractType": 7,
        "status": status,
        "startDate": f"{start}T00:00:00",
        "endDate": f"{end}T00:00:00",
    }


def test_find_successors_keys_by_contract_and_service(requests_mock):
    """Two services on one ended contract each get the renewal that carries them."""
    client = AutotaskApi(
        HttpClient("Autotask"), API_URL, AutotaskCredentials(USERNAME, CODE, SECRET)
    )
    ended = Contract(10, 500, "old", 7, 1, date(2025, 12, 1), date(2026, 11, 30))
    requests_mock.post(
        BASE + "Contracts/query",
        json={
            "items": [
                contract(20, 500, "2026-12-01", "2027-11-30"),
                contract(21, 500, "2026-12-01", "2027-11-30"),
                contract(22, 500, "2026-12-01", "2027-11-30", status=0),  # inactive
            ],
            "pageDetails": {"nextPageUrl": None},
        },
    )
    requests_mock.post(
        BASE + "ContractServices/query",
        json={
            "items": [
                {"id": 200, "contractID": 20, "serviceID": 30012},
                {"id": 211, "contractID": 21, "serviceID": 30020},
                {"id": 221, "contractID": 22, "serviceID": 30012},
            ],
            "pageDetails": {"nextPageUrl": None},
        },
    )
    found = find_successors(client, [(ended, 30012), (ended, 30020)], D, {1})
    assert {key: (s.contract.id, s.contract_service.id) for key, s in found.items()} == {
        (10, 30012): (20, 200),
        (10, 30020): (21, 211),
    }
    assert requests_mock.call_count == 2  # one query per entity for all of them
    contracts_query = requests_mock.request_history[0].json()
    assert {"op": "in", "field": "companyID", "value": [500]} in contracts_query["filter"]


@pytest.mark.parametrize(
    ("parse", "record", "ok"),
    [
        (parse_account, {"id": 0, "companyName": "Own org", "isActive": True}, True),
        (parse_contract, {"id": 5, "companyID": 0, "endDate": "2027-01-31T00:00:00"}, True),
        (parse_contract, {"id": 0, "companyID": 1, "endDate": "2027-01-31T00:00:00"}, False),
        (parse_contract_service, {"id": 0, "contractID": 1, "serviceID": 1}, False),
        (parse_contract_service, {"id": 1, "contractID": 0, "serviceID": 1}, False),
        (parse_account, {"id": -1, "companyName": "x"}, False),
    ],
)
def test_company_ids_may_be_0_and_no_other(parse, record, ok):
    """Company 0 is the tenant's own organization; every other id is positive."""
    if ok:
        parse(record)
    else:
        with pytest.raises(BadResponseError):
            parse(record)
