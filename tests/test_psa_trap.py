"""The trap of issue 14, pinned per backend: the engine hands every backend a TARGET.

Autotask takes a signed delta (37 users on a line of 35 is ``unitChange: 2``); ConnectWise
takes the absolute quantity (``quantity: 37``). Handing either the other's number would bill
2 users or add 37. Also the ConnectWise backend's outcomes and the pure ConnectWise planner.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date

import pytest
from conftest import API_URL, CODE, SECRET, USERNAME

from infima_autotask.autotask import AutotaskApi
from infima_autotask.config import ClientMapping, SyncSettings
from infima_autotask.connectwise import ConnectWiseApi, ConnectWiseCredentials, parse_addition
from infima_autotask.connectwise.model import parse_agreement
from infima_autotask.credentials import AutotaskCredentials
from infima_autotask.http import HttpClient, RetryPolicy
from infima_autotask.landing import Landing
from infima_autotask.plan_file import adjustment_body
from infima_autotask.psa.autotask import AutotaskLines
from infima_autotask.psa.connectwise import ConnectWiseLines
from infima_autotask.psa.connectwise_plan import plan_connectwise
from infima_autotask.statuses import FAILED, HELD, PLANNED, UNCHANGED, Outcome
from infima_autotask.sync import PlanItem, UserCount

E = date(2026, 12, 1)
ORIGIN = "https://api-na.myconnectwise.net"
BASE = ORIGIN + "/v2025_1/apis/3.0/"
LINE = BASE + "finance/agreements/3311/additions/88412"
CREDS = ConnectWiseCredentials(
    "na.myconnectwise.net", "acme", "PubKey1234567890", "Pr1vate-CW-key-4e2f9a", "client-guid"
)
ADDITION = {
    "id": 88412,
    "product": {"id": 7001, "identifier": "INFIMA-SAT"},
    "agreementId": 3311,
    "quantity": 35.0,
    "unitPrice": 4.5,
    "unitCost": 2.25,
    "description": "INFIMA Security Awareness Training",
    "agreementStatus": "Active",
}
AGREEMENT = {
    "id": 3311,
    "name": "Managed Services 2026",
    "company": {"id": 250, "identifier": "JuniperDental", "name": "Juniper Dental"},
    "startDate": "2025-03-01T00:00:00Z",
    "endDate": "2027-02-28T00:00:00Z",
    "noEndingDateFlag": False,
    "cancelledFlag": False,
    "agreementStatus": "Active",
    "nextInvoiceDate": "2026-12-01T00:00:00Z",
}


def item(psa: str = "autotask", **changes: object) -> PlanItem:
    at = psa == "autotask"
    base = PlanItem(
        client_id=101,
        client_name="Client 101",
        contract_id=29684001 if at else 3311,
        contract_service_id=29685101 if at else 88412,
        service_id=30012 if at else 7001,
        users=37,
        target=37,
        before=35,
        after=37,
        change=2,
        unit_price=4.5,
        unit_cost=2.25,
        new_unit_cost=2.25,
        status=PLANNED,
        effective=E if at else None,
        psa=psa,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def http():
    with HttpClient("test", retry=RetryPolicy(base_delay=0.0, max_delay=7.0)) as client:
        yield client


@pytest.fixture
def cw(http):
    return ConnectWiseApi(http, CREDS, codebase="v2025_1/")


# -- the trap -------------------------------------------------------------------------------


def test_autotask_gets_the_delta_from_35_to_37(http, requests_mock):
    assert adjustment_body(item(), None)["unitChange"] == 2
    url = API_URL + "v1.0/ContractServiceAdjustments"
    requests_mock.post(url, json={"itemId": 5001})
    api = AutotaskApi(http, API_URL, AutotaskCredentials(USERNAME, CODE, SECRET))
    sent = AutotaskLines(api, zone=None, window=lambda items: (E, E)).send(item())
    assert sent.outcome is Outcome.SENT
    (request,) = requests_mock.request_history
    assert request.method == "POST" and request.json()["unitChange"] == 2


def test_connectwise_gets_the_target_37_never_the_delta(cw, requests_mock):
    requests_mock.patch(LINE, json={**ADDITION, "quantity": 37.0})
    sent = ConnectWiseLines(cw).send(item("connectwise"))
    assert sent.outcome is Outcome.SENT
    (request,) = requests_mock.request_history
    assert request.method == "PATCH"
    assert json.loads(request.body) == [{"op": "replace", "path": "quantity", "value": 37}]


def test_connectwise_sends_the_unit_cost_only_when_it_changes(cw, requests_mock):
    requests_mock.patch(LINE, json={**ADDITION, "quantity": 37.0, "unitCost": 3.0})
    ConnectWiseLines(cw).send(item("connectwise", new_unit_cost=3.0))
    assert requests_mock.last_request.json() == [
        {"op": "replace", "path": "quantity", "value": 37},
        {"op": "replace", "path": "unitCost", "value": 3.0},
    ]


# -- the ConnectWise backend's outcomes ----------------------------------------------------


def test_a_refusal_is_rejected_with_connectwise_own_words(cw, requests_mock):
    requests_mock.patch(
        LINE,
        status_code=400,
        json={"code": "InvalidObject", "message": "addition object is invalid", "errors": []},
    )
    sent = ConnectWiseLines(cw).send(item("connectwise"))
    assert sent.outcome is Outcome.REJECTED
    assert "addition object is invalid" in sent.message
    assert sent.message.startswith("ConnectWise refused the change")
    assert len(requests_mock.request_history) == 1  # never retried


@pytest.mark.parametrize(
    ("answer", "settle"),
    [
        ({"status_code": 429, "headers": {"Retry-After": "3"}}, 3.0),
        ({"status_code": 429}, 0.0),
        ({"status_code": 503, "text": "busy"}, 7.0),
    ],
)
def test_no_answer_is_unknown_with_a_settle_wait(cw, requests_mock, answer, settle):
    requests_mock.patch(LINE, **answer)
    sent = ConnectWiseLines(cw).send(item("connectwise"))
    assert (sent.outcome, sent.settle) == (Outcome.UNKNOWN, settle)
    assert len(requests_mock.request_history) == 1


def test_the_patch_answer_is_the_verification_else_one_get(cw, requests_mock):
    backend = ConnectWiseLines(cw)
    requests_mock.patch(LINE, json={**ADDITION, "quantity": 37.0})
    backend.send(item("connectwise"))
    found = backend.read_back([item("connectwise")])
    assert backend.landing(item("connectwise"), found[88412]) is Landing.LANDED
    assert [r.method for r in requests_mock.request_history] == ["PATCH"]
    # The first write's second check with the batch costs no GET either (SPEC §10).
    found = backend.read_back([item("connectwise")])
    assert backend.landing(item("connectwise"), found[88412]) is Landing.LANDED
    assert [r.method for r in requests_mock.request_history] == ["PATCH"]
    # A send drops it: after an unknown outcome the re-read asks ConnectWise.
    requests_mock.patch(LINE, status_code=503, text="busy")
    backend.send(item("connectwise"))
    requests_mock.get(LINE, json={**ADDITION, "quantity": 35.0})
    found = backend.read_back([item("connectwise")])
    assert backend.landing(item("connectwise"), found[88412]) is Landing.BEFORE
    assert [r.method for r in requests_mock.request_history][-1] == "GET"


def test_landing_and_describe():
    backend = ConnectWiseLines(None)  # type: ignore[arg-type]
    it = item("connectwise")
    other = parse_addition({**ADDITION, "quantity": 25.0})
    assert backend.landing(it, other) is Landing.OTHER
    assert backend.landing(it, None) is Landing.OTHER
    assert backend.describe(it, other, Landing.OTHER).startswith(
        "ConnectWise shows 25 on addition 88412 (agreement 3311), expected 37"
    )
    cost = item("connectwise", new_unit_cost=3.0)
    assert backend.landing(cost, parse_addition({**ADDITION, "quantity": 37.0})) is Landing.OTHER


# -- the pure planner -----------------------------------------------------------------------

MAPPING = ClientMapping(
    client_id=109,
    account_id=250,
    contract_id=3311,
    contract_service_id=88412,
    service_id=7001,
    psa="connectwise",
)


def cw_plan(users: int = 37, *, day: date = E, yes: bool = False, **records: object) -> PlanItem:
    agreement = parse_agreement({**AGREEMENT, **records.pop("agreement", {})})  # type: ignore[dict-item]
    addition = parse_addition({**ADDITION, **records.pop("addition", {})})  # type: ignore[dict-item]
    settings = records.pop("settings", SyncSettings())
    return plan_connectwise(
        MAPPING,
        day=day,
        current=E,
        today=date(2026, 12, 2),
        settings=settings,  # type: ignore[arg-type]
        count=UserCount(users, name="Juniper Dental"),
        agreement=agreement,
        addition=addition,
        yes=yes,
    )


def test_a_change_is_planned_as_the_target_with_no_date():
    planned = cw_plan()
    assert (planned.status, planned.before, planned.target, planned.change) == (PLANNED, 35, 37, 2)
    assert (planned.effective, planned.psa, planned.service_id) == (None, "connectwise", 7001)
    assert cw_plan(35).status == UNCHANGED


def test_holds_not_lifted_by_yes():
    past = cw_plan(day=date(2026, 11, 1), yes=True)
    assert past.status == HELD and "ConnectWise cannot backdate a quantity" in past.message
    invoiced = cw_plan(yes=True, agreement={"nextInvoiceDate": "2027-01-01T00:00:00Z"})
    assert invoiced.status == HELD and "already invoiced for 2026-12" in invoiced.message


def test_guards_are_the_autotask_ones_and_yes_lifts_them():
    held = cw_plan(10)
    assert held.status == HELD and "max_decrease_percent" in held.message
    assert "--client 109 --yes" in held.message
    lifted = cw_plan(10, yes=True)
    assert lifted.status == PLANNED and "guard lifted by --yes" in lifted.message


@pytest.mark.parametrize(
    ("records", "text"),
    [
        ({"agreement": {"cancelledFlag": True}}, "agreement 3311 is cancelled"),
        ({"agreement": {"agreementStatus": "Expired"}}, "agreement 3311 is expired"),
        ({"addition": {"cancelledDate": "2026-11-30T00:00:00Z"}}, "was cancelled"),
        ({"addition": {"agreementId": 3312}}, "belongs to agreement 3312"),
        ({"addition": {"quantity": 2.5}}, "not a whole number"),
    ],
)
def test_lines_that_cannot_take_a_write_fail_with_the_fix(records, text):
    failed = cw_plan(**records)
    assert failed.status == FAILED and text in failed.message
    if "map" in failed.message:
        assert "infima-autotask map 109 --psa connectwise --account 250" in failed.message


def test_overwrite_cost_writes_the_configured_cost():
    settings = SyncSettings(overwrite_cost=True, unit_cost=3.0)
    planned = cw_plan(35, settings=settings)
    assert planned.status == PLANNED and planned.new_unit_cost == 3.0
    assert "unit cost 2.25 -> 3.00" in planned.message
