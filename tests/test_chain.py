"""The one chain rule (issue 12): every verdict of ``check_chain`` and the words it renders to."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from infima_autotask.chain import (
    RECURRING_SERVICE,
    Broken,
    ChainRef,
    Successor,
    chain_text,
    check_chain,
    fix_text,
    problem_text,
    renewals_wanted,
    usable_contract,
    usable_contract_filters,
)
from infima_autotask.config import ClientMapping
from infima_autotask.model import Account, Contract, ContractService

DAY = date(2026, 12, 1)
ACTIVE = {1}
ACCOUNT = Account(id=500, name="Acme Dental LLC", company_type=1, active=True)
CONTRACT = Contract(
    id=600,
    account_id=500,
    name="Managed 2026",
    contract_type=RECURRING_SERVICE,
    status=1,
    start=date(2026, 1, 1),
    end=date(2026, 12, 31),
)
CS = ContractService(id=700, contract_id=600, service_id=30012)
MAPPING = ClientMapping(
    client_id=101, account_id=500, contract_id=600, contract_service_id=700, service_id=30012
)
REF = ChainRef.of(MAPPING)
RENEWAL = Successor(
    replace(CONTRACT, id=601, start=date(2027, 1, 1), end=date(2027, 12, 31)),
    ContractService(id=701, contract_id=601, service_id=30012),
)
CHOOSE = (
    "choose one of the account's active Recurring Service contracts with "
    "`infima-autotask map 101 --account 500`"
)
CHOOSE_SERVICE = (
    "choose one of the contract's services with `infima-autotask map 101 --account 500 "
    "--contract 600`"
)
FIND = "`infima-autotask search-accounts NAME`, then run `infima-autotask map 101 --account ID`"


def verdict(**records):
    chain = {"account": ACCOUNT, "contract": CONTRACT, "contract_service": CS, **records}
    return check_chain(REF, day=DAY, active_statuses=ACTIVE, **chain)


BROKEN = [
    (
        {"account": None},
        Broken.ACCOUNT_MISSING,
        "account 500 not found in Autotask",
        f"find the account ID with {FIND}",
    ),
    (
        {"account": replace(ACCOUNT, active=False)},
        Broken.ACCOUNT_INACTIVE,
        "account 500 (Acme Dental LLC) is inactive in Autotask",
        f"reactivate it in Autotask, or find an active account with {FIND}",
    ),
    (
        {"contract": None},
        Broken.CONTRACT_MISSING,
        "contract 600 not found in Autotask",
        CHOOSE,
    ),
    (
        {"contract": replace(CONTRACT, account_id=501)},
        Broken.CONTRACT_OF_OTHER_ACCOUNT,
        "contract 600 (Managed 2026) belongs to account 501, not to account 500 (Acme Dental LLC)",
        CHOOSE,
    ),
    (
        {"contract": replace(CONTRACT, contract_type=3)},
        Broken.CONTRACT_NOT_RECURRING,
        "contract 600 (Managed 2026) is not a Recurring Service contract (contractType 3); the "
        "INFIMA service must be on one",
        CHOOSE,
    ),
    (
        {"contract": replace(CONTRACT, end=date(2026, 11, 30))},
        Broken.CONTRACT_ENDED,
        "contract 600 (Managed 2026) ended on 2026-11-30",
        f"map its renewal: {CHOOSE}",  # no renewal looked up (map)
    ),
    (
        {"contract": replace(CONTRACT, status=0)},
        Broken.CONTRACT_INACTIVE,
        "contract 600 (Managed 2026) is not active in Autotask (status 0)",
        f"activate it in Autotask, or {CHOOSE}",
    ),
    (
        {"contract_service": None},
        Broken.SERVICE_MISSING,
        "contract service 700 not found in Autotask",
        CHOOSE_SERVICE,
    ),
    (
        {"contract_service": replace(CS, contract_id=602)},
        Broken.SERVICE_OF_OTHER_CONTRACT,
        "contract service 700 belongs to contract 602, not to contract 600 (Managed 2026)",
        CHOOSE_SERVICE,
    ),
]


@pytest.mark.parametrize(
    ("records", "broken", "problem", "fix"), BROKEN, ids=[case[1].name for case in BROKEN]
)
def test_every_broken_case_and_its_words(records, broken, problem, fix):
    found = verdict(**records)
    assert (found.ok, found.broken) == (False, broken)
    assert problem_text(found) == problem
    assert fix_text(found) == fix
    assert chain_text(found) == f"{problem}; {fix}"


def test_every_broken_case_is_covered():
    assert {case[1] for case in BROKEN} == set(Broken)


def test_a_usable_chain():
    found = verdict()
    assert found.ok and found.broken is None
    assert (found.account, found.contract, found.contract_service) == (ACCOUNT, CONTRACT, CS)
    assert chain_text(found) == (
        "contract 600 (Managed 2026): Recurring Service, active, ends 2026-12-31; "
        "contract service 700 (service 30012) is on it"
    )


@pytest.mark.parametrize(
    ("records", "broken"),
    [
        # Checked in this order: the first broken link wins.
        ({"account": None, "contract": None}, Broken.ACCOUNT_MISSING),
        (
            {"contract": replace(CONTRACT, account_id=501, status=0)},
            Broken.CONTRACT_OF_OTHER_ACCOUNT,
        ),
        ({"contract": replace(CONTRACT, contract_type=3, status=0)}, Broken.CONTRACT_NOT_RECURRING),
        (
            {"contract": replace(CONTRACT, end=date(2026, 1, 31), status=0)},
            Broken.CONTRACT_ENDED,
        ),
        (
            {"contract": replace(CONTRACT, status=0), "contract_service": None},
            Broken.CONTRACT_INACTIVE,
        ),
    ],
)
def test_the_first_broken_link_wins(records, broken):
    assert verdict(**records).broken is broken


def test_a_contract_ending_on_the_day_is_still_usable():
    assert verdict(contract=replace(CONTRACT, end=DAY)).ok


def test_unread_records_are_not_checked():
    """``map`` checks the chain as it reads it; sync and doctor read no account."""
    assert check_chain(REF, day=DAY, account=ACCOUNT).ok  # nothing else read yet
    assert check_chain(REF, day=DAY, active_statuses=ACTIVE, account=ACCOUNT, contract=CONTRACT).ok
    # No account read: neither it nor the contract's owner is checked.
    other = replace(CONTRACT, account_id=501)
    assert check_chain(REF, day=DAY, active_statuses=ACTIVE, contract=other, contract_service=CS).ok


def test_an_ended_contract_names_the_renewal_once_looked_up():
    ended = verdict(contract=replace(CONTRACT, end=date(2026, 11, 30)))
    assert ended.renewal_key == (600, 30012)
    assert renewals_wanted([ended, ended, verdict()]) == [(ended.contract, 30012)]

    found = ended.sought({(600, 30012): RENEWAL})
    assert found.renewal == RENEWAL and found.renewal_sought
    assert fix_text(found) == (
        "re-map to its renewal with `infima-autotask map 101 --account 500 --contract 601 "
        "--contract-service 701`"
    )
    none = ended.sought({})
    assert none.renewal is None and none.renewal_sought
    assert fix_text(none) == (
        f"no renewal carrying service 30012 was found: renew it in Autotask, then {CHOOSE}"
    )
    assert verdict().sought({(600, 30012): RENEWAL}) == verdict()  # only an ended one


def test_the_renewal_carries_the_service_the_line_bills():
    """The contract service's own service (what sync sends as serviceID), else the mapping's."""
    ended = replace(CONTRACT, end=date(2026, 11, 30))
    moved = replace(CS, service_id=30020)
    assert verdict(contract=ended, contract_service=moved).renewal_key == (600, 30020)
    assert verdict(contract=ended, contract_service=None).renewal_key == (600, 30012)


@pytest.mark.parametrize(
    ("contract", "usable"),
    [
        (CONTRACT, True),
        (replace(CONTRACT, end=DAY), True),
        (replace(CONTRACT, contract_type=3), False),
        (replace(CONTRACT, contract_type=None), False),
        (replace(CONTRACT, end=date(2026, 11, 30)), False),
        (replace(CONTRACT, status=0), False),
        (replace(CONTRACT, status=None), False),
    ],
)
def test_usable_contract_is_the_rule_search_accounts_offers(contract, usable):
    assert usable_contract(contract, ACTIVE, DAY) is usable
    assert verdict(contract=contract).ok is usable


def test_the_same_rule_as_query_filters():
    assert usable_contract_filters({2, 1}, DAY) == [
        {"op": "eq", "field": "contractType", "value": 7},
        {"op": "in", "field": "status", "value": [1, 2]},
        {"op": "gte", "field": "endDate", "value": "2026-12-01T00:00:00"},
    ]
