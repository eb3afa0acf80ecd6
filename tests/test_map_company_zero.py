"""Company 0, the tenant's own organization (AUTOTASK_API.md), through the mapping commands
against the loopback sandbox: found by search-accounts, mapped with ``--account 0`` and from a
CSV, checked by list-mappings --check. Every other id stays positive."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import make_config, write_config

from infima_autotask.billing import add_months
from infima_autotask.sandbox import data

OWN_CONTRACT, OWN_CS = 29699001, 29699101


@pytest.fixture
def own_contract(sandbox):
    """A Recurring Service contract of company 0 carrying the INFIMA service (the MSP's own
    staff trained like a client's)."""
    state = sandbox.state
    this = state.this_month
    state.add_contract(
        OWN_CONTRACT,
        data.OWN_COMPANY_ID,
        "Internal Training",
        start=add_months(this, -2),
        end=add_months(this, 10),
    )
    state.add_contract_service(OWN_CS, OWN_CONTRACT, data.SERVICE_ID)
    state.add_monthly_rows(OWN_CS, 7)


@pytest.fixture
def cfg(config_path, sandbox):
    write_config(config_path, make_config(autotask={"username": sandbox.username}))
    return config_path


def _mappings(config_path):
    return {m["client_id"]: m for m in yaml.safe_load(config_path.read_text())["mappings"]}


def test_search_accounts_lists_company_0(invoke, cfg, sandbox_env, own_contract):
    result = invoke("search-accounts", "sandbox msp", "--json", env=sandbox_env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {
            "account_id": 0,
            "account": data.OWN_COMPANY_NAME,
            "type": "Customer",
            "active": True,
        }
    ]
    table = invoke("search-accounts", "sandbox msp", "--contracts", env=sandbox_env)
    assert table.exit_code == 0, table.output
    row = table.stdout.splitlines()[2].split()
    assert row[0] == "0"  # an id, not a missing value
    assert row[-3:] == ["7", "4.50", "2.25"] and str(OWN_CS) in row


def test_map_account_0(invoke, cfg, sandbox, sandbox_env, own_contract):
    result = invoke("map", str(data.EVERGREEN_CLIENT_ID), "--account", "0", env=sandbox_env)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        f"Mapped client {data.EVERGREEN_CLIENT_ID} (Evergreen Realty) to account 0 "
        f"{data.OWN_COMPANY_NAME}, contract {OWN_CONTRACT} Internal Training, contract service "
        f"{OWN_CS} "
    )
    mapping = _mappings(cfg)[data.EVERGREEN_CLIENT_ID]
    assert (mapping["account_id"], mapping["contract_service_id"]) == (0, OWN_CS)
    assert invoke("validate").exit_code == 0
    check = invoke("list-mappings", "--check", "--json", env=sandbox_env)
    assert check.exit_code == 0, check.output
    (row,) = json.loads(check.stdout)
    assert (row["account_id"], row["account"], row["status"]) == (0, data.OWN_COMPANY_NAME, "ok")


def test_map_account_0_without_a_contract_says_so(invoke, cfg, sandbox_env):
    result = invoke("map", str(data.EVERGREEN_CLIENT_ID), "--account", "0", env=sandbox_env)
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: Account 0 ({data.OWN_COMPANY_NAME}) has no active Recurring Service contract. "
        "Create one in Autotask with the INFIMA service on it, then run map again.\n"
    )


def test_map_from_csv_accepts_account_0(invoke, cfg, sandbox_env, own_contract, tmp_path):
    path = tmp_path / "map.csv"
    path.write_text(
        "client_id,account_id,contract_id,contract_service_id\n"
        f"{data.EVERGREEN_CLIENT_ID},0,{OWN_CONTRACT},{OWN_CS}\n"
    )
    result = invoke("map", "--from-csv", str(path), env=sandbox_env)
    assert result.exit_code == 0, result.output
    assert _mappings(cfg)[data.EVERGREEN_CLIENT_ID]["account_id"] == 0


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("105,-1,1,1", "account_id must be 0 or a positive integer, got '-1'"),
        ("0,1,1,1", "client_id must be a positive integer, got '0'"),
        ("105,1,0,1", "contract_id must be a positive integer, got '0'"),
        ("105,1,1,0", "contract_service_id must be a positive integer, got '0'"),
    ],
)
def test_map_from_csv_keeps_other_ids_positive(invoke, cfg, sandbox_env, tmp_path, row, problem):
    path = tmp_path / "map.csv"
    path.write_text(f"client_id,account_id,contract_id,contract_service_id\n{row}\n")
    result = invoke("map", "--from-csv", str(path), env=sandbox_env)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[1] == f"  line 2: {problem}"


def test_map_account_0_refuses_a_contract_of_another_company(invoke, cfg, sandbox_env):
    result = invoke(
        "map", str(data.EVERGREEN_CLIENT_ID), "--account", "0",
        "--contract", str(data.EVERGREEN_CONTRACT_ID), env=sandbox_env,
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"Error: Contract {data.EVERGREEN_CONTRACT_ID} (Managed Services "
    )
    assert f"belongs to account {data.EVERGREEN_ACCOUNT_ID}, not to account 0 (" in result.stderr
