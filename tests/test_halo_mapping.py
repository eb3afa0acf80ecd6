"""The HaloPSA mapping commands through the real CLI against the loopback sandbox (issue 15):
search-accounts --psa halo, map --psa halo, list-mappings [--check], unmap and doctor. None
of them ever sends a POST to Halo."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from infima_autotask.cli import _common
from infima_autotask.halo.chain import NOT_BILLED
from infima_autotask.sandbox import halo_data

KESTREL, OSPREY, PELICAN, QUAIL, OLD = 45, 46, 47, 48, 49


@pytest.fixture
def halo_env(sandbox, tmp_path):
    """INFIMA (map's client check), the Halo client secret and a state folder; no Autotask."""
    return {
        "INFIMA_API_URL": sandbox.infima_url,
        "INFIMA_API_KEY": sandbox.api_key,
        "INFIMA_HALO_CLIENT_SECRET": sandbox.halo_client_secret,
        "INFIMA_AUTOTASK_STATE_DIR": str(tmp_path / "state"),
    }


@pytest.fixture
def halo(invoke, sandbox, halo_env, memkeyring, config_path):
    """A config with the sandbox's `halo` section only; ``halo(*args)`` runs the CLI."""
    doc = {
        "version": 2,
        "infima": {"api_url": sandbox.infima_url},
        "halo": {"url": sandbox.halo_url, "tenant": None, "client_id": sandbox.halo_client_id},
        "mappings": [],
    }
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    def run(*args, input=None):
        return invoke(*args, input=input, env=halo_env)

    return run


@pytest.fixture(autouse=True)
def never_posts(sandbox):
    """Whatever a test here runs, Halo never sees a POST to its API (nor a created licence)."""
    yield
    assert sandbox.halo.creates == []
    posts = [r.path for r in sandbox.requests if r.service == "halo" and r.method == "POST"]
    assert [p for p in posts if p.lower().startswith("/api/")] == []


def stored(config_path):
    return yaml.safe_load(config_path.read_text(encoding="utf-8"))


def halo_reads(sandbox, start=0):
    """The API reads sent to Halo since ``start`` (the token requests left out)."""
    return [
        (r.method, r.path.split("?")[0].lower())
        for r in sandbox.requests[start:]
        if r.service == "halo" and r.path.lower().startswith("/api/")
        and not r.path.lower().startswith("/api/authinfo")
    ]  # fmt: skip


def add_mapping(config_path, mapping):
    doc = stored(config_path)
    doc["mappings"].append(mapping)
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def halo_mapping(client_id, account_id, subscription_id, name=halo_data.INFIMA_LICENCE_NAME):
    return {
        "client_id": client_id,
        "psa": "halo",
        "account_id": account_id,
        "subscription_id": subscription_id,
        "subscription_name": name,
    }


# --- search-accounts ----------------------------------------------------------------------


def test_search_accounts_lists_halo_clients_by_default_psa(halo, sandbox):
    result = halo("search-accounts", "kestrel")
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0].split()
    assert header == ["Account", "ID", "Account", "Active"]
    assert "Kestrel Law LLP" in result.stdout and "(old)" not in result.stdout
    assert halo_reads(sandbox) == [("GET", "/api/client")]


def test_search_accounts_inactive_adds_inactive_clients(halo):
    result = halo("search-accounts", "--psa", "halo", "kestrel", "--inactive", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["account_id"]: row for row in json.loads(result.stdout)}
    assert rows[OLD]["active"] is False
    assert rows[KESTREL]["active"] is True


def test_search_accounts_contracts_lists_subscriptions_and_billing(halo, sandbox):
    start = len(sandbox.requests)
    result = halo("search-accounts", "--psa", "halo", "e", "--contracts", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["subscription_id"]: row for row in json.loads(result.stdout)}
    kestrel = rows[halo_data.KESTREL_LICENCE_ID]
    assert kestrel["account_id"] == KESTREL and kestrel["account"] == "Kestrel Law LLP"
    assert kestrel["subscription"] == halo_data.INFIMA_LICENCE_NAME
    assert kestrel["count"] == 12
    assert kestrel["subscription_active"] is True and kestrel["billed"] is True
    assert rows[halo_data.OSPREY_LICENCE_ID]["billed"] is False  # on no invoice line
    assert rows[halo_data.PELICAN_OLD_LICENCE_ID]["subscription_active"] is False
    assert rows[halo_data.PELICAN_LICENCE_ID]["billed"] is True  # via quantity_licences
    # Kestrel, Osprey, Pelican, Quail (not the inactive client): one client search, then per
    # client its subscriptions and its recurring invoices.
    assert {row["account_id"] for row in rows.values()} == {KESTREL, OSPREY, PELICAN, QUAIL}
    reads = halo_reads(sandbox, start)
    assert reads[0] == ("GET", "/api/client")
    assert reads.count(("GET", "/api/softwarelicence")) == 4
    assert reads.count(("GET", "/api/recurringinvoice")) == 4
    assert len(reads) == 9


def test_search_accounts_contracts_table_uses_the_operators_words(halo):
    result = halo("search-accounts", "--psa", "halo", "osprey", "--contracts")
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0]
    for word in ("Subscription ID", "Subscription", "Count", "Billed by invoice line"):
        assert word in header
    osprey = next(
        line for line in result.stdout.splitlines() if str(halo_data.OSPREY_LICENCE_ID) in line
    )
    assert osprey.split()[-1] == "no"


def test_search_accounts_nothing_found_and_empty_query(halo):
    none = halo("search-accounts", "--psa", "halo", "zzz")
    assert none.exit_code == 0
    assert "No active HaloPSA client name contains 'zzz'" in none.stderr
    empty = halo("search-accounts", "--psa", "halo", " ")
    assert empty.exit_code == 2
    assert "QUERY is empty" in empty.stderr


# --- map --------------------------------------------------------------------------------------


def test_map_writes_the_halo_mapping(halo, config_path, sandbox):
    start = len(sandbox.requests)
    result = halo("map", "110", "--psa", "halo", "--account", "45")
    assert result.exit_code == 0, result.output
    assert "Taking the only subscription: 9127" in result.stderr
    assert "(9128 left out: pass --subscription" in result.stderr  # Microsoft 365, not INFIMA
    assert "HaloPSA client 45 Kestrel Law LLP, subscription 9127" in result.stdout
    assert "not be billed" not in result.stderr
    mapping = stored(config_path)["mappings"][0]
    assert {k: v for k, v in mapping.items() if k in halo_data.seed_mapping()} == (
        halo_data.seed_mapping()
    )
    for key in ("unit_cost", "overwrite_cost", "prorate", "agreement_id", "contract_id"):
        assert key not in mapping
    # The client, its subscriptions, its recurring invoices: three reads.
    assert halo_reads(sandbox, start) == [
        ("GET", "/api/client/45"),
        ("GET", "/api/softwarelicence"),
        ("GET", "/api/recurringinvoice"),
    ]


def test_map_warns_when_no_invoice_line_bills_the_subscription(halo, config_path):
    result = halo("map", "104", "--psa", "halo", "--account", "46", "--json")
    assert result.exit_code == 0, result.output
    assert f"Warning: subscription 9130: {NOT_BILLED}." in result.stderr
    doc = json.loads(result.stdout)[0]
    assert doc["psa"] == "halo" and doc["subscription_id"] == 9130
    assert NOT_BILLED in doc["warnings"]
    # A warning, never a refusal: the mapping is saved.
    assert stored(config_path)["mappings"][0]["subscription_id"] == 9130


def test_map_two_subscriptions_without_terminal_lists_them(halo, config_path):
    result = halo("map", "108", "--psa", "halo", "--account", "48")
    assert result.exit_code == 2
    assert "Client 48 (Quail Architects) has 2 active INFIMA subscriptions" in result.stderr
    assert "pass --subscription with one of these IDs" in result.stderr
    assert "9150" in result.stderr and "9151" in result.stderr
    assert stored(config_path)["mappings"] == []


def test_map_picks_a_subscription_from_a_numbered_list(halo, config_path, monkeypatch):
    monkeypatch.setattr(_common, "can_prompt", lambda: True)
    # "no" to the not-billed question would not apply: that warning is never asked about.
    result = halo("map", "108", "--psa", "halo", "--account", "48", input="2\n")
    assert result.exit_code == 0, result.output
    assert "Choose the subscription:" in result.stderr
    assert "9151  INFIMA Security Awareness (count 6)" in result.stderr
    assert stored(config_path)["mappings"][0]["subscription_id"] == 9151


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--account", "49"], "Client 49 is inactive in HaloPSA"),
        (["--account", "999"], "Client 999 not found in HaloPSA"),
        (["--account", "47", "--subscription", "9140"], "Subscription 9140 ended on"),
        (["--account", "45", "--subscription", "9130"], "belongs to client 46, not 45"),
        (["--account", "45", "--subscription", "424242"], "Subscription 424242 not found"),
    ],
)
def test_map_refuses_a_broken_line(halo, config_path, args, message):
    result = halo("map", "110", "--psa", "halo", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert stored(config_path)["mappings"] == []


def test_map_client_without_active_subscription(halo, sandbox, config_path):
    with sandbox.halo.lock:
        sandbox.halo.licences[halo_data.OSPREY_LICENCE_ID]["is_active"] = False
        sandbox.halo.licences[halo_data.OSPREY_M365_LICENCE_ID]["is_active"] = False
    result = halo("map", "104", "--psa", "halo", "--account", "46")
    assert result.exit_code == 2
    assert "Client 46 (Osprey Vets) has no active subscription" in result.stderr


def test_map_unknown_infima_client_and_taken_subscription(halo, config_path):
    unknown = halo("map", "4242", "--psa", "halo", "--account", "45")
    assert unknown.exit_code == 2
    assert "INFIMA does not know client 4242" in unknown.stderr
    assert halo("map", "110", "--psa", "halo", "--account", "45").exit_code == 0
    taken = halo("map", "101", "--psa", "halo", "--account", "45", "--subscription", "9127")
    assert taken.exit_code == 2
    assert "Subscription 9127 is already mapped to client 110" in taken.stderr
    assert "unmap 110" in taken.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--unit-cost", "2.5"], "--unit-cost does not apply to HaloPSA"),
        (["--prorate"], "--prorate does not apply to HaloPSA"),
        (["--no-prorate"], "--prorate does not apply to HaloPSA"),
        (["--contract", "1"], "HaloPSA takes --subscription"),
        (["--agreement", "1"], "HaloPSA takes --subscription"),
    ],
)
def test_map_refuses_options_that_mean_nothing_on_halo(halo, config_path, extra, message):
    result = halo("map", "110", "--psa", "halo", "--account", "45", *extra)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert stored(config_path)["mappings"] == []


def test_map_from_csv_and_subscription_elsewhere_are_refused(halo, tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("client_id,account_id,contract_id,contract_service_id\n", encoding="utf-8")
    from_csv = halo("map", "--psa", "halo", "--from-csv", str(csv))
    assert from_csv.exit_code == 2
    assert "map HaloPSA clients one by one" in from_csv.stderr
    other = halo("map", "110", "--psa", "autotask", "--account", "1", "--subscription", "9127")
    assert other.exit_code == 2
    assert "--subscription is HaloPSA's" in other.stderr


def test_remap_keeps_overrides_and_says_nothing_changed(halo, config_path):
    args = ("map", "110", "--psa", "halo", "--account", "45")
    first = halo(*args, "--min-units", "3", "--exclude-users", "1")
    assert first.exit_code == 0, first.output
    again = halo(*args)
    assert again.exit_code == 0, again.output
    assert "Nothing changed" in again.stderr
    mapping = stored(config_path)["mappings"][0]
    assert (mapping["min_units"], mapping["exclude_users"]) == (3, 1)


def test_remap_from_another_psa_drops_what_halo_refuses(halo, config_path):
    doc = stored(config_path)
    doc["mappings"] = [
        {
            "client_id": 110,
            "account_id": 29683501,
            "contract_id": 1,
            "contract_service_id": 2,
            "service_id": 3,
            "unit_cost": 2.5,
            "overwrite_cost": True,
            "prorate": True,
            "max_units": 40,
        }
    ]
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    result = halo("map", "110", "--psa", "halo", "--account", "45")
    assert result.exit_code == 0, result.output
    assert "was: account 29683501" in result.stdout
    mapping = stored(config_path)["mappings"][0]
    assert mapping["psa"] == "halo" and mapping["max_units"] == 40
    assert "unit_cost" not in mapping and "prorate" not in mapping
    assert halo("list-mappings").exit_code == 0  # the file still loads


# --- list-mappings, unmap ---------------------------------------------------------------------


def test_list_mappings_shows_halo(halo, config_path):
    add_mapping(config_path, halo_data.seed_mapping())
    table = halo("list-mappings")
    assert table.exit_code == 0, table.output
    assert "halo" in table.stdout and "when sent (HaloPSA)" in table.stdout
    rows = json.loads(halo("list-mappings", "--json").stdout)
    assert rows[0]["psa"] == "halo" and rows[0]["contract_service_id"] == 9127
    # A subscription is on no contract: "-" and null, not the config's placeholder 0.
    assert rows[0]["contract_id"] is None and rows[0]["contract"] is None
    line = next(row for row in table.stdout.splitlines() if row.startswith("110 "))
    assert re.search(r"45 Kestrel Law LLP\s+-\s+9127 INFIMA", line), line


def test_list_clients_names_the_halo_subscription(halo, config_path):
    add_mapping(config_path, halo_data.seed_mapping())
    result = halo("list-clients")
    assert result.exit_code == 0, result.output
    kestrel = next(line for line in result.stdout.splitlines() if line.startswith("110"))
    assert "9127 INFIMA Security Awareness (HaloPSA subscription)" in kestrel


def test_check_ok_warns_not_billed_and_names_the_successor(halo, config_path, sandbox):
    add_mapping(config_path, halo_data.seed_mapping())
    add_mapping(config_path, halo_mapping(104, OSPREY, halo_data.OSPREY_LICENCE_ID))
    add_mapping(config_path, halo_mapping(106, PELICAN, halo_data.PELICAN_OLD_LICENCE_ID))
    start = len(sandbox.requests)
    result = halo("list-mappings", "--check", "--json")
    assert result.exit_code == 1, result.output
    status = {row["client_id"]: row["status"] for row in json.loads(result.stdout)}
    assert status[110] == "ok"
    assert status[104] == f"ok, but {NOT_BILLED}"
    assert f"Warning: client 104: subscription 9130: {NOT_BILLED}." in result.stderr
    assert (
        "subscription 9140 ended on" in status[106]
        and "successor: subscription 9141 (INFIMA Security Awareness): run "
        "`infima-autotask map 106 --psa halo --account 47 --subscription 9141`"
        in status[106]
    )
    assert "3 mapping(s): 2 ok, 1 broken" in result.stderr
    # Client and subscriptions per mapping, invoices for the two usable ones.
    assert len(halo_reads(sandbox, start)) == 8
    fixed = halo("map", "106", "--psa", "halo", "--account", "47", "--subscription", "9141")
    assert fixed.exit_code == 0, fixed.output
    again = halo("list-mappings", "--check")
    assert again.exit_code == 0, again.output
    assert "3 ok, 0 broken" in again.stderr
    assert NOT_BILLED in again.stderr  # repeated on every check until fixed in Halo


def test_check_successor_when_the_subscription_is_gone(halo, config_path, sandbox):
    add_mapping(config_path, halo_mapping(106, PELICAN, 777777))
    result = halo("list-mappings", "--check", "--json")
    assert result.exit_code == 1
    status = json.loads(result.stdout)[0]["status"]
    assert "subscription 777777 not found in HaloPSA" in status
    assert "--account 47 --subscription 9141`" in status


def test_check_no_successor_when_two_could_be(halo, config_path, sandbox):
    with sandbox.halo.lock:
        sandbox.halo.licences[halo_data.QUAIL_FIRST_LICENCE_ID]["is_active"] = False
        sandbox.halo.add_licence(9152, QUAIL, halo_data.INFIMA_LICENCE_NAME, 4)
    add_mapping(config_path, halo_mapping(108, QUAIL, halo_data.QUAIL_FIRST_LICENCE_ID))
    result = halo("list-mappings", "--check", "--json")
    assert result.exit_code == 1
    status = json.loads(result.stdout)[0]["status"]
    assert "successor" not in status
    assert "map the client again (`infima-autotask map 108 --psa halo --account 48`)" in status


def test_check_inactive_client_and_moved_subscription(halo, config_path, sandbox):
    add_mapping(config_path, halo_mapping(101, OLD, 9127))
    add_mapping(config_path, halo_mapping(102, KESTREL, halo_data.QUAIL_SECOND_LICENCE_ID))
    result = halo("list-mappings", "--check", "--json")
    assert result.exit_code == 1
    status = {row["client_id"]: row["status"] for row in json.loads(result.stdout)}
    assert status[101].startswith("client 49 is inactive in HaloPSA; fix it in HaloPSA")
    assert "subscription 9151 belongs to client 48, not 45" in status[102]
    assert "0 ok, 2 broken" in result.stderr


def test_check_refreshes_renamed_names(halo, config_path, sandbox):
    add_mapping(config_path, {**halo_data.seed_mapping(), "account_name": "Kestrel (old name)"})
    result = halo("list-mappings", "--check")
    assert result.exit_code == 0, result.output
    assert "Refreshed names of 1 mapping(s)" in result.stderr
    assert stored(config_path)["mappings"][0]["account_name"] == "Kestrel Law LLP"


def test_unmap_a_halo_mapping(halo, config_path):
    add_mapping(config_path, {**halo_data.seed_mapping(), "min_units": 2})
    result = halo("unmap", "110")
    assert result.exit_code == 0, result.output
    assert "was HaloPSA client 45 Kestrel Law LLP, subscription 9127" in result.stdout
    assert "its overrides were: min_units: 2" in result.stdout
    assert stored(config_path)["mappings"] == []


# --- doctor -----------------------------------------------------------------------------------


def _doctor_rows(halo):
    result = halo("doctor", "--json")
    return result, {row["check"]: row for row in json.loads(result.stdout)}


def test_doctor_checks_each_halo_mapping(halo, config_path):
    add_mapping(config_path, halo_data.seed_mapping())
    add_mapping(config_path, halo_mapping(104, OSPREY, halo_data.OSPREY_LICENCE_ID))
    result, rows = _doctor_rows(halo)
    assert result.exit_code == 0, result.output
    assert rows["HaloPSA connection"]["result"] == "ok"
    assert "Autotask connection" not in rows
    assert rows["client 110: chain"]["result"] == "ok"
    assert "12 units" in rows["client 110: count"]["detail"]
    assert rows["client 110: billing"]["result"] == "ok"
    assert "line 501 of recurring invoice -94" in rows["client 110: billing"]["detail"]
    assert rows["client 104: billing"]["result"] == "warn"
    assert rows["client 104: billing"]["detail"] == NOT_BILLED


def test_doctor_fails_a_broken_halo_line(halo, config_path):
    add_mapping(config_path, halo_mapping(106, PELICAN, halo_data.PELICAN_OLD_LICENCE_ID))
    result, rows = _doctor_rows(halo)
    assert result.exit_code == 1
    detail = rows["client 106: chain"]["detail"]
    assert "subscription 9140 ended on" in detail and "list-mappings --check" in detail


def test_check_beside_autotask_keeps_both_refreshed_names(
    invoke, sandbox, sandbox_env, halo_env, config_path
):
    """Autotask and Halo mappings in one file: each is checked by its own PSA, and a name
    refreshed on either side is the one saved (a merge once kept the stale Autotask one)."""
    from infima_autotask.sandbox import data

    autotask = {**data.seed_mappings()[0], "account_name": "Acme (stale)"}
    doc = {
        "version": 2,
        "infima": {"api_url": sandbox.infima_url},
        "halo": {"url": sandbox.halo_url, "tenant": None, "client_id": sandbox.halo_client_id},
        "mappings": [
            autotask,
            {**halo_data.seed_mapping(), "account_name": "Kestrel (stale)"},
        ],
    }
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    result = invoke("list-mappings", "--check", "--json", env={**sandbox_env, **halo_env})
    assert result.exit_code == 0, result.output
    status = {row["client_id"]: row["status"] for row in json.loads(result.stdout)}
    assert status == {autotask["client_id"]: "ok", 110: "ok"}
    assert "Refreshed names of 2 mapping(s)" in result.stderr
    names = {m["client_id"]: m["account_name"] for m in stored(config_path)["mappings"]}
    assert names[110] == "Kestrel Law LLP"
    assert names[autotask["client_id"]] == data.seed_mappings()[0]["account_name"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"deleted": True}, "Subscription 9130 is deleted"),
        ({"status": "Cancelled"}, "Subscription 9130 is Cancelled"),
        ({"is_active": False}, "Subscription 9130 is inactive"),
    ],
)
def test_map_says_why_a_subscription_is_not_active(halo, sandbox, config_path, change, message):
    with sandbox.halo.lock:
        sandbox.halo.licences[halo_data.OSPREY_LICENCE_ID].update(change)
    result = halo("map", "104", "--psa", "halo", "--account", "46", "--subscription", "9130")
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert stored(config_path)["mappings"] == []


def test_map_on_a_terminal_says_what_it_left_out_before_taking_one(halo, monkeypatch):
    monkeypatch.setattr(_common, "can_prompt", lambda: True)
    result = halo("map", "110", "--psa", "halo", "--account", "45")
    assert result.exit_code == 0, result.output
    left_out = result.stderr.index("9128 left out")
    assert left_out < result.stderr.index("Taking the only subscription: 9127")


def test_check_successor_by_infima_name_and_unknown_infima_client(halo, config_path):
    add_mapping(config_path, halo_mapping(106, PELICAN, 777777, name="Awareness seats"))
    add_mapping(config_path, halo_mapping(4242, KESTREL, halo_data.KESTREL_LICENCE_ID))
    result = halo("list-mappings", "--check", "--json")
    assert result.exit_code == 1
    status = {row["client_id"]: row["status"] for row in json.loads(result.stdout)}
    # No active subscription has the old name: the only one named for INFIMA is offered.
    assert "--account 47 --subscription 9141`" in status[106]
    assert status[4242] == (
        "INFIMA has no client 4242; check it in INFIMA, or `infima-autotask unmap 4242`"
    )


def test_map_warns_when_the_subscription_is_not_named_for_infima(halo, config_path):
    """9128 is Kestrel's Microsoft 365 subscription (a typo for 9127): `map` warns, naming
    the INFIMA one, so sync does not set the M365 seat count to the INFIMA count unseen."""
    result = halo("map", "110", "--psa", "halo", "--account", "45", "--subscription", "9128")
    assert result.exit_code == 0, result.output  # a warning: without a terminal it maps
    assert (
        "subscription 9128 is 'Microsoft 365 Business Premium', not named for INFIMA (the "
        "client's INFIMA one: 9127): is it the INFIMA seats line?" in result.stderr
    )
    clean = halo("map", "110", "--psa", "halo", "--account", "45", "--subscription", "9127")
    assert clean.exit_code == 0 and "not named for INFIMA" not in clean.stderr


def test_map_to_an_ended_subscription_names_its_successor(halo, config_path):
    result = halo("map", "110", "--psa", "halo", "--account", "47", "--subscription", "9140")
    assert result.exit_code == 2, result.output
    assert "ended on" in result.stderr
    assert (
        "its successor is subscription 9141: run `infima-autotask map 110 --psa halo "
        "--account 47 --subscription 9141`" in result.stderr
    )
