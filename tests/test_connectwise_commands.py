"""The ConnectWise commands through the real CLI against the loopback sandbox (issue 14):
connect --psa connectwise, the --psa default, search-accounts, map, list-mappings [--check],
unmap and status."""

from __future__ import annotations

import json

import keyring
import pytest
import yaml

from infima_autotask.cli import _common
from infima_autotask.config import AutotaskSettings, Config, ConnectWiseSettings
from infima_autotask.credentials import KEYRING_SERVICE
from infima_autotask.sandbox import cw_data, data


@pytest.fixture
def infima_env(sandbox, tmp_path):
    """INFIMA (for map's client check) and a state folder; no Autotask credentials."""
    return {
        "INFIMA_API_URL": sandbox.infima_url,
        "INFIMA_API_KEY": sandbox.api_key,
        "INFIMA_AUTOTASK_STATE_DIR": str(tmp_path / "state"),
    }


def connect_args(sb, **changes):
    values = {
        "--site": sb.cw_site,
        "--company": sb.cw_company_id,
        "--public-key": sb.cw_public_key,
        "--client-id": sb.cw_client_id,
        **changes,
    }
    args = ["connect", "--psa", "connectwise"]
    for flag, value in values.items():
        if value is not None:
            args += [flag, value]
    return args


@pytest.fixture
def connected(invoke, sandbox, infima_env, memkeyring, config_path):
    """ConnectWise connected with the sandbox's API member (key in the keyring)."""
    result = invoke(
        *connect_args(sandbox),
        "--private-key-stdin",
        input=sandbox.cw_private_key + "\n",
        env=infima_env,
    )
    assert result.exit_code == 0, result.output

    def run(*args, input=None):
        return invoke(*args, input=input, env=infima_env)

    run.config_path = config_path
    return run


def stored(config_path):
    return yaml.safe_load(config_path.read_text())


# --- connect ---------------------------------------------------------------------------


def test_connect_stores_key_in_keyring_and_section_with_codebase(
    invoke, sandbox, config_path, memkeyring
):
    result = invoke(
        *connect_args(sandbox), "--private-key-stdin", input=sandbox.cw_private_key + "\n"
    )
    assert result.exit_code == 0, result.output
    assert (
        f"ConnectWise: Connected ({sandbox.cw_site}, codebase {cw_data.CODEBASE})" in result.stdout
    )
    doc = stored(config_path)
    assert doc["version"] == 2
    assert doc["connectwise"] == {
        "site": sandbox.cw_site,
        "company_id": sandbox.cw_company_id,
        "public_key": sandbox.cw_public_key,
        "client_id": sandbox.cw_client_id,
        "codebase": cw_data.CODEBASE,
    }
    name = f"connectwise:{sandbox.cw_company_id}+{sandbox.cw_public_key}"
    assert keyring.get_password(KEYRING_SERVICE, name) == sandbox.cw_private_key
    assert sandbox.cw_private_key not in config_path.read_text()


def test_connect_takes_values_from_the_config_section(invoke, sandbox, config_path, memkeyring):
    first = invoke(
        *connect_args(sandbox), "--private-key-stdin", input=sandbox.cw_private_key + "\n"
    )
    assert first.exit_code == 0, first.output
    again = invoke(
        "connect", "--psa", "connectwise", "--private-key-stdin",
        input=sandbox.cw_private_key + "\n",
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert "ConnectWise: Connected" in again.stdout


def test_connect_private_key_from_environment_is_not_stored(
    invoke, sandbox, config_path, memkeyring
):
    result = invoke(
        *connect_args(sandbox), env={"INFIMA_CONNECTWISE_PRIVATE_KEY": sandbox.cw_private_key}
    )
    assert result.exit_code == 0, result.output
    name = f"connectwise:{sandbox.cw_company_id}+{sandbox.cw_public_key}"
    assert keyring.get_password(KEYRING_SERVICE, name) is None


def test_connect_rejected_key_is_exit_3_and_stores_nothing(
    invoke, sandbox, config_path, memkeyring
):
    result = invoke(*connect_args(sandbox), "--private-key-stdin", input="not-the-key\n")
    assert result.exit_code == 3
    assert "ConnectWise rejected the company id, public key or private key" in result.stderr
    assert not config_path.exists()
    name = f"connectwise:{sandbox.cw_company_id}+{sandbox.cw_public_key}"
    assert keyring.get_password(KEYRING_SERVICE, name) is None


def test_connect_unknown_company_is_exit_3(invoke, sandbox, config_path):
    result = invoke(
        *connect_args(sandbox, **{"--company": "nosuchmsp"}),
        "--private-key-stdin",
        input=sandbox.cw_private_key + "\n",
    )
    assert result.exit_code == 3
    assert "does not know the company id 'nosuchmsp'" in result.stderr
    assert not config_path.exists()


def test_connect_missing_value_without_terminal_is_exit_2(invoke, sandbox, config_path):
    result = invoke(
        *connect_args(sandbox, **{"--client-id": None}),
        "--private-key-stdin",
        input=sandbox.cw_private_key + "\n",
    )
    assert result.exit_code == 2
    assert "clientId" in result.stderr and "Pass --client-id" in result.stderr
    assert not config_path.exists()


def test_connect_missing_private_key_without_terminal_is_exit_2(invoke, sandbox, config_path):
    result = invoke(*connect_args(sandbox))
    assert result.exit_code == 2
    assert "--private-key-stdin" in result.stderr
    assert "INFIMA_CONNECTWISE_PRIVATE_KEY" in result.stderr


def test_connect_refuses_autotask_flags_with_connectwise(invoke, sandbox):
    result = invoke(*connect_args(sandbox), "--username", "x@example.com")
    assert result.exit_code == 2
    assert "Autotask's" in result.stderr


def test_default_psa_is_the_only_connected_one_else_autotask():
    assert Config().default_psa() == "autotask"
    cw = ConnectWiseSettings(site="na.myconnectwise.net")
    assert Config(connectwise=cw).default_psa() == "connectwise"
    # Autotask connected through the environment only (cron.env) still counts.
    assert Config(connectwise=cw).default_psa(autotask_from_env=True) == "autotask"
    both = Config(autotask=AutotaskSettings(username="u@example.com"), connectwise=cw)
    assert both.default_psa() == "autotask"


def test_env_only_autotask_is_still_tested_beside_connectwise(connected, sandbox_env):
    """Autotask credentials only in the environment (cron.env) and ConnectWise connected:
    status tests both, and search-accounts without --psa stays on Autotask."""
    from click.testing import CliRunner

    from infima_autotask.cli import cli

    config = str(connected.config_path)
    result = CliRunner().invoke(cli, ["--config", config, "status"], env=sandbox_env)
    assert result.exit_code == 0, result.output
    assert "Autotask:         Connected" in result.stdout
    assert "ConnectWise:      Connected" in result.stdout
    search = CliRunner().invoke(
        cli, ["--config", config, "search-accounts", "acme"], env=sandbox_env
    )
    assert search.exit_code == 0, search.output
    assert "Acme" in search.stdout and "Juniper" not in search.stdout


# --- search-accounts ----------------------------------------------------------------------


def test_search_accounts_lists_companies_by_default_psa(connected):
    result = connected("search-accounts", "juniper")
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0].split()
    assert header[:5] == ["Account", "ID", "Account", "Type", "Active"]
    assert "250" in result.stdout and "Juniper Dental" in result.stdout
    assert "255" not in result.stdout  # in the recycle bin


def test_search_accounts_contracts_shows_active_agreements_and_additions(connected):
    result = connected("search-accounts", "--psa", "connectwise", "a", "--contracts", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    juniper = next(r for r in rows if r["addition_id"] == cw_data.JUNIPER_ADDITION_ID)
    assert juniper["account_id"] == 250 and juniper["agreement_id"] == 3311
    assert juniper["quantity"] == 18
    assert juniper["unit_price"] == cw_data.INFIMA_UNIT_PRICE
    assert juniper["unit_cost"] == cw_data.INFIMA_UNIT_COST
    assert juniper["active"] is True
    additions = {r["addition_id"] for r in rows}
    agreements = {r["agreement_id"] for r in rows}
    assert cw_data.NIMBUS_CANCELLED_ADDITION_ID not in additions  # cancelled addition
    assert cw_data.NIMBUS_CANCELLED_AGREEMENT_ID not in agreements  # cancelled agreement
    assert cw_data.MAPLE_OLD_AGREEMENT_ID not in agreements  # expired
    onyx = next(r for r in rows if r["account_id"] == cw_data.ONYX_COMPANY_ID)
    assert onyx["agreement_id"] is None  # a company without agreements keeps its row


# --- map ------------------------------------------------------------------------------------


def test_map_writes_the_connectwise_mapping(connected, config_path):
    result = connected(
        "map", "109", "--psa", "connectwise", "--account", "250", "--addition", "88412"
    )
    assert result.exit_code == 0, result.output
    assert "Taking the only agreement: 3311" in result.stderr
    assert "addition 88412" in result.stdout
    mapping = stored(config_path)["mappings"][0]
    assert mapping == {
        **cw_data.seed_mapping(),
        "exclude_users": 0,
        "min_units": None,
        "max_units": None,
        "unit_cost": None,
        "overwrite_cost": None,
        "enabled": True,
        "note": None,
    } | {"product_name": mapping["product_name"]}
    assert mapping["product_name"] == cw_data.INFIMA_PRODUCT_DESCRIPTION


def test_map_several_additions_without_terminal_lists_them(connected, config_path):
    result = connected("map", "109", "--psa", "connectwise", "--account", "250")
    assert result.exit_code == 2
    assert "pass --addition with one of these IDs" in result.stderr
    assert "88412" in result.stderr and "88413" in result.stderr
    assert stored(config_path)["mappings"] == []


def test_map_picks_from_a_numbered_list_on_a_terminal(connected, config_path, monkeypatch):
    monkeypatch.setattr(_common, "can_prompt", lambda: True)
    result = connected("map", "109", "--psa", "connectwise", "--account", "250", input="1\n")
    assert result.exit_code == 0, result.output
    assert "Choose the addition:" in result.stderr
    assert stored(config_path)["mappings"][0]["addition_id"] == 88412


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--account", "252", "--addition", "88430"], "another active addition of product"),
        (["--account", "253", "--agreement", "3314"], "Agreement 3314 ended on"),
        (["--account", "254", "--agreement", "3316"], "Agreement 3316 is cancelled"),
        (["--account", "254", "--agreement", "3317", "--addition", "88470"], "was cancelled"),
        (["--account", "250", "--agreement", "3312"], "belongs to company 251, not 250"),
        (["--account", "250", "--agreement", "3311", "--addition", "88420"], "is not on"),
        (["--account", "255"], "recycle bin"),
        (["--account", "999"], "Company 999 not found"),
        (["--account", "256"], "has no active agreement"),
    ],
)
def test_map_refuses_a_broken_chain(connected, config_path, args, message):
    result = connected("map", "109", "--psa", "connectwise", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert stored(config_path)["mappings"] == []


def test_map_unknown_infima_client_and_taken_addition(connected, config_path):
    unknown = connected("map", "4242", "--psa", "connectwise", "--account", "250")
    assert unknown.exit_code == 2
    assert "INFIMA does not know client 4242" in unknown.stderr
    first = connected(
        "map", "109", "--psa", "connectwise", "--account", "250", "--addition", "88412"
    )
    assert first.exit_code == 0, first.output
    taken = connected(
        "map", "101", "--psa", "connectwise", "--account", "250", "--addition", "88412"
    )
    assert taken.exit_code == 2
    assert "Addition 88412 is already mapped to client 109" in taken.stderr
    assert "unmap 109" in taken.stderr


def test_map_refuses_prorate_and_autotask_ids(connected):
    prorate = connected("map", "109", "--psa", "connectwise", "--account", "250", "--prorate")
    assert prorate.exit_code == 2
    assert "--prorate does not apply to ConnectWise" in prorate.stderr
    contract = connected(
        "map", "109", "--psa", "connectwise", "--account", "250", "--contract", "1"
    )
    assert contract.exit_code == 2
    assert "ConnectWise takes --agreement" in contract.stderr


def test_remap_keeps_overrides(connected, config_path):
    args = ("map", "109", "--psa", "connectwise", "--account", "250", "--addition", "88412")
    assert connected(*args, "--min-units", "3", "--unit-cost", "2.5").exit_code == 0
    again = connected(*args)
    assert again.exit_code == 0, again.output
    mapping = stored(config_path)["mappings"][0]
    assert (mapping["min_units"], mapping["unit_cost"], mapping["overwrite_cost"]) == (
        3,
        2.5,
        True,
    )
    assert "Nothing changed" in again.stderr


# --- list-mappings, unmap ------------------------------------------------------------------


def _add_mapping(config_path, mapping):
    doc = stored(config_path)
    doc["mappings"].append(mapping)
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_list_mappings_shows_the_psa(connected, config_path):
    _add_mapping(config_path, cw_data.seed_mapping())
    table = connected("list-mappings")
    assert table.exit_code == 0, table.output
    assert "PSA" in table.stdout.splitlines()[0]
    assert "connectwise" in table.stdout
    rows = json.loads(connected("list-mappings", "--json").stdout)
    assert rows[0]["psa"] == "connectwise"


def test_check_names_the_successor_with_the_exact_map_command(connected, config_path):
    _add_mapping(config_path, cw_data.seed_mapping())
    _add_mapping(
        config_path,
        {
            "client_id": data.ACME_CLIENT_ID,
            "psa": "connectwise",
            "account_id": cw_data.MAPLE_COMPANY_ID,
            "agreement_id": cw_data.MAPLE_OLD_AGREEMENT_ID,
            "addition_id": cw_data.MAPLE_OLD_ADDITION_ID,
            "product_id": cw_data.INFIMA_PRODUCT_ID,
        },
    )
    result = connected("list-mappings", "--check", "--json")
    assert result.exit_code == 1, result.output
    status = {row["client_id"]: row["status"] for row in json.loads(result.stdout)}
    assert status[109] == "ok"
    assert (
        "successor: agreement 3315, addition 88450: run `infima-autotask map 101 --psa "
        "connectwise --account 253 --agreement 3315 --addition 88450`"
    ) in status[101]
    assert "1 ok, 1 broken" in result.stderr
    # The successor command it names maps the client.
    fixed = connected(
        "map", "101", "--psa", "connectwise", "--account", "253",
        "--agreement", "3315", "--addition", "88450",
    )  # fmt: skip
    assert fixed.exit_code == 0, fixed.output
    assert connected("list-mappings", "--check").exit_code == 0


def test_check_reports_a_cancelled_addition_and_two_of_one_product(connected, config_path):
    for client_id, company, agreement, addition in (
        (101, 254, 3317, 88470),
        (102, 252, 3313, 88430),
    ):
        _add_mapping(
            config_path,
            {
                "client_id": client_id,
                "psa": "connectwise",
                "account_id": company,
                "agreement_id": agreement,
                "addition_id": addition,
                "product_id": cw_data.INFIMA_PRODUCT_ID,
            },
        )
    result = connected("list-mappings", "--check", "--json")
    assert result.exit_code == 1
    status = {row["client_id"]: row["status"] for row in json.loads(result.stdout)}
    assert "--agreement 3317 --addition 88471" not in status[101]  # same agreement: no successor
    assert "addition 88470 was cancelled" in status[101]
    assert "another active addition of product" in status[102]


def test_unmap_a_connectwise_mapping(connected, config_path):
    _add_mapping(config_path, cw_data.seed_mapping())
    result = connected("unmap", "109")
    assert result.exit_code == 0, result.output
    assert "was ConnectWise company 250 Juniper Dental, agreement 3311" in result.stdout
    assert stored(config_path)["mappings"] == []


# --- status ----------------------------------------------------------------------------


def test_status_tests_connectwise(connected, sandbox):
    result = connected("status")
    assert result.exit_code == 0, result.output
    assert f"ConnectWise:      Connected ({sandbox.cw_site}, {cw_data.CODEBASE})" in result.stdout
    document = json.loads(connected("status", "--json").stdout)
    assert document["connectwise"]["connected"] is True


def test_status_fails_when_connectwise_rejects_the_key(connected, memkeyring, sandbox):
    name = f"connectwise:{sandbox.cw_company_id}+{sandbox.cw_public_key}"
    keyring.set_password(KEYRING_SERVICE, name, "a-wrong-key")
    result = connected("status")
    assert result.exit_code == 3
    assert "ConnectWise:      not connected: ConnectWise rejected" in result.stdout


# --- doctor ----------------------------------------------------------------------------


def _doctor_rows(connected):
    result = connected("doctor", "--json")
    return result, {row["check"]: row for row in json.loads(result.stdout)}


def test_doctor_checks_each_connectwise_mapping(connected, config_path):
    _add_mapping(config_path, cw_data.seed_mapping())
    result, rows = _doctor_rows(connected)
    assert result.exit_code == 0, result.output
    assert rows["ConnectWise connection"]["result"] == "ok"
    assert "Autotask connection" not in rows  # never connected: nothing to test
    assert rows["client 109: chain"]["result"] == "ok"
    assert "18 units" in rows["client 109: quantity"]["detail"]
    assert rows["client 109: invoice"]["result"] == "ok"
    assert rows["client 109: cost visibility"]["result"] == "ok"


def test_doctor_warns_of_an_invoiced_period_and_hidden_costs(connected, config_path, sandbox):
    _add_mapping(
        config_path,
        {
            "client_id": 101,
            "psa": "connectwise",
            "account_id": cw_data.KESTREL_COMPANY_ID,
            "agreement_id": cw_data.KESTREL_AGREEMENT_ID,
            "addition_id": cw_data.KESTREL_ADDITION_ID,
            "product_id": cw_data.INFIMA_PRODUCT_ID,
        },
    )
    with sandbox.cw.lock:
        sandbox.cw.additions[cw_data.KESTREL_ADDITION_ID]["unitCost"] = None
    result, rows = _doctor_rows(connected)
    assert result.exit_code == 0, result.output
    assert rows["client 101: invoice"]["result"] == "warn"
    assert "already exists" in rows["client 101: invoice"]["detail"]
    assert rows["client 101: cost visibility"]["result"] == "warn"


def test_doctor_fails_a_broken_connectwise_chain(connected, config_path):
    _add_mapping(
        config_path,
        {
            "client_id": 101,
            "psa": "connectwise",
            "account_id": cw_data.NIMBUS_COMPANY_ID,
            "agreement_id": cw_data.NIMBUS_CANCELLED_AGREEMENT_ID,
            "addition_id": cw_data.NIMBUS_CANCELLED_AGREEMENT_ADDITION_ID,
            "product_id": cw_data.INFIMA_PRODUCT_ID,
        },
    )
    result, rows = _doctor_rows(connected)
    assert result.exit_code == 1
    assert "agreement 3316 is cancelled" in rows["client 101: chain"]["detail"]


def test_doctor_connection_failure_is_exit_3(connected, memkeyring, sandbox):
    name = f"connectwise:{sandbox.cw_company_id}+{sandbox.cw_public_key}"
    keyring.set_password(KEYRING_SERVICE, name, "a-wrong-key")
    result, rows = _doctor_rows(connected)
    assert result.exit_code == 3
    assert rows["ConnectWise connection"]["result"] == "fail"


# --- sync --psa --------------------------------------------------------------------------


def test_sync_psa_restricts_the_run_to_that_psas_mappings(setup, invoke):
    setup({101: 12})
    autotask = invoke("sync", "--dry-run", "--psa", "autotask")
    assert "Client 101" in autotask.stdout  # the Autotask mapping was planned
    assert autotask.exit_code != 2
    none = invoke("sync", "--dry-run", "--psa", "connectwise")
    assert none.exit_code == 2
    assert "No enabled ConnectWise mapping" in none.stderr
    assert "map CLIENT_ID --psa connectwise" in none.stderr


def test_search_accounts_inactive_adds_the_recycle_bin(connected):
    result = connected("search-accounts", "--psa", "connectwise", "juniper", "--inactive", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["account_id"]: row for row in json.loads(result.stdout)}
    assert rows[cw_data.JUNIPER_DELETED_COMPANY_ID]["active"] is False
    assert rows[cw_data.JUNIPER_COMPANY_ID]["active"] is True


# --- Autotask unchanged beside ConnectWise -------------------------------------------------


def _autotask_requests(sandbox, start):
    return [
        (r.method, r.path, json.dumps(r.body, sort_keys=True))
        for r in sandbox.requests[start:]
        if r.service == "autotask"
    ]


def test_check_sends_the_same_autotask_requests_beside_connectwise(
    connected, config_path, sandbox, sandbox_env, runner
):
    """A ConnectWise mapping in the file changes no Autotask request of list-mappings --check."""
    from infima_autotask.cli import cli

    doc = stored(config_path)
    doc["mappings"] = data.seed_mappings()
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    args = ["--config", str(config_path), "list-mappings", "--check", "--json"]

    start = len(sandbox.requests)
    alone = runner.invoke(cli, args, env=sandbox_env)
    assert alone.exit_code == 0, alone.output
    autotask_alone = _autotask_requests(sandbox, start)

    _add_mapping(config_path, cw_data.seed_mapping())
    start = len(sandbox.requests)
    mixed = runner.invoke(cli, args, env=sandbox_env)
    assert mixed.exit_code == 0, mixed.output
    assert _autotask_requests(sandbox, start) == autotask_alone
    rows = {row["client_id"]: row for row in json.loads(mixed.stdout)}
    before = {row["client_id"]: row for row in json.loads(alone.stdout)}
    assert {k: v for k, v in rows.items() if k != 109} == before  # Autotask rows unchanged
    assert rows[109]["psa"] == "connectwise" and rows[109]["status"] == "ok"
