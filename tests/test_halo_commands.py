"""`connect --psa halo`, `status` and `doctor` with a `halo` section, through the real CLI
against requests-mock's HaloPSA: flags, config, environment and prompt; the secret stored in
the (test) keyring and never printed; the config file 0600 and version 2."""

from __future__ import annotations

import json
import stat
from urllib.parse import parse_qs

import pytest
import yaml
from conftest import INFIMA, write_config

from infima_autotask.cli import _common
from infima_autotask.credentials import KEYRING_SERVICE

URL = "https://acme.halopsa.com"
SECRET = "Halo-cl1ent-s3cret-77aa"
TOKEN = "halo-access-token-5150"
CLIENT_ID = "app-0f1e2d3c"
KEY_NAME = f"halo:{CLIENT_ID}"
CLIENTS = {"record_count": 37, "clients": [{"id": 45, "name": "Kestrel Law LLP"}]}


@pytest.fixture
def halo_ok(requests_mock):
    requests_mock.get(URL + "/api/authinfo", json={"auth_url": URL + "/auth", "tenant_id": None})
    requests_mock.post(
        URL + "/auth/token",
        json={"access_token": TOKEN, "token_type": "Bearer", "expires_in": 3600},
    )
    requests_mock.get(URL + "/api/Client", json=CLIENTS)
    requests_mock.get(INFIMA + "/v1/partner", json={"partner_name": "Partner Co", "admins": []})
    return requests_mock


@pytest.fixture
def env(tmp_path):
    return {"INFIMA_API_KEY": "infima-key-1234", "INFIMA_AUTOTASK_STATE_DIR": str(tmp_path / "s")}


def stored(config_path):
    return yaml.safe_load(config_path.read_text(encoding="utf-8"))


def connect(invoke, *extra, input=SECRET + "\n", env=None):
    return invoke(
        "connect", "--psa", "halo", "--url", URL, "--client-id", CLIENT_ID, *extra,
        input=input, env=env,
    )  # fmt: skip


def test_connect_stores_the_secret_in_the_keyring_and_the_section_in_the_config(
    invoke, halo_ok, config_path, memkeyring
):
    result = connect(invoke, "--tenant", "acme", "--client-secret-stdin")
    assert result.exit_code == 0, result.output
    assert f"HaloPSA: Connected ({URL}, tenant acme)" in result.stdout
    assert memkeyring.get_password(KEYRING_SERVICE, KEY_NAME) == SECRET
    doc = stored(config_path)
    assert doc["version"] == 2
    assert doc["halo"] == {"url": URL, "tenant": "acme", "client_id": CLIENT_ID}
    text = config_path.read_text(encoding="utf-8")
    assert SECRET not in text and TOKEN not in text
    assert SECRET not in result.output and TOKEN not in result.output
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
    token = next(r for r in halo_ok.request_history if r.url.startswith(URL + "/auth/token"))
    assert token.qs == {"tenant": ["acme"]}
    assert parse_qs(token.text)["client_secret"] == [SECRET]
    test_read = halo_ok.request_history[-1]
    assert test_read.headers["Authorization"] == f"Bearer {TOKEN}"
    assert test_read.qs == {"pageinate": ["true"], "page_size": ["1"], "page_no": ["1"]}


def test_connect_takes_values_from_the_config_section(invoke, halo_ok, config_path, memkeyring):
    assert connect(invoke, "--client-secret-stdin").exit_code == 0
    again = invoke("connect", "--psa", "halo", "--client-secret-stdin", input=SECRET + "\n")
    assert again.exit_code == 0, again.output
    assert "HaloPSA: Connected" in again.stdout


def test_connect_without_psa_is_halo_when_only_halo_is_connected(
    invoke, halo_ok, config_path, memkeyring
):
    assert connect(invoke, "--client-secret-stdin").exit_code == 0
    again = invoke("connect", "--client-secret-stdin", input=SECRET + "\n")
    assert again.exit_code == 0, again.output
    assert "HaloPSA: Connected" in again.stdout


def test_a_secret_from_the_environment_is_used_and_not_stored(
    invoke, halo_ok, config_path, memkeyring
):
    result = connect(invoke, input=None, env={"INFIMA_HALO_CLIENT_SECRET": SECRET})
    assert result.exit_code == 0, result.output
    assert memkeyring.get_password(KEYRING_SERVICE, KEY_NAME) is None


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["connect", "--psa", "halo", "--client-id", CLIENT_ID], "--url"),
        (["connect", "--psa", "halo", "--url", URL], "--client-id"),
        (["connect", "--psa", "halo", "--url", URL, "--client-id", CLIENT_ID],
         "INFIMA_HALO_CLIENT_SECRET"),
    ],
)  # fmt: skip
def test_a_missing_value_without_a_terminal_is_exit_2_naming_the_flag(
    invoke, requests_mock, config_path, memkeyring, args, flag
):
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and flag in result.stderr
    assert requests_mock.request_history == [] and not config_path.exists()


def test_on_a_terminal_the_missing_values_are_asked_for_the_secret_hidden(
    invoke, halo_ok, config_path, memkeyring, monkeypatch
):
    monkeypatch.setattr(_common, "can_prompt", lambda: True)
    result = invoke("connect", "--psa", "halo", input=f"{URL}\n{CLIENT_ID}\n{SECRET}\n")
    assert result.exit_code == 0, result.output
    assert "HaloPSA URL" in result.stderr and "Client ID" in result.stderr
    assert SECRET not in result.output  # hidden input is not echoed
    assert memkeyring.get_password(KEYRING_SERVICE, KEY_NAME) == SECRET


def test_a_rejected_secret_is_exit_3_and_stores_nothing(invoke, halo_ok, config_path, memkeyring):
    halo_ok.post(
        URL + "/auth/token",
        status_code=401,
        json={"error": "invalid_client", "error_description": "Invalid client credentials"},
    )
    result = connect(invoke, "--client-secret-stdin", input="wrong-secret-1\n")
    assert result.exit_code == 3
    assert "Invalid client credentials" in result.stderr and "client id" in result.stderr
    assert memkeyring.get_password(KEYRING_SERVICE, KEY_NAME) is None
    assert not config_path.exists()


def test_a_rejected_secret_from_the_environment_names_the_variable(
    invoke, halo_ok, config_path, memkeyring
):
    halo_ok.post(URL + "/auth/token", status_code=401, json={"error": "invalid_client"})
    result = connect(invoke, input=None, env={"INFIMA_HALO_CLIENT_SECRET": "wrong-secret-2"})
    assert result.exit_code == 3
    assert "unset INFIMA_HALO_CLIENT_SECRET" in result.stderr


def test_a_token_without_the_write_scope_is_a_warning(invoke, halo_ok, config_path, memkeyring):
    halo_ok.post(
        URL + "/auth/token",
        json={"access_token": TOKEN, "expires_in": 3600, "scope": "read:customers read:invoices"},
    )
    result = connect(invoke, "--client-secret-stdin")
    assert result.exit_code == 0, result.output
    assert "not granted edit:softwarelicensing" in result.stderr


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--username", "x@example.com"], "--username"),
        (["--site", "na.myconnectwise.net"], "--site"),
        (["--private-key-stdin"], "--private-key-stdin"),
    ],
)
def test_connect_refuses_other_psas_flags_with_halo(
    invoke, requests_mock, config_path, extra, named
):
    result = connect(invoke, *extra)
    assert result.exit_code == 2 and named in result.stderr and "HaloPSA takes" in result.stderr
    assert requests_mock.request_history == []


def test_halo_flags_are_refused_for_autotask_and_connectwise(invoke, requests_mock, config_path):
    autotask = invoke("connect", "--url", URL)
    assert autotask.exit_code == 2 and "connect --psa halo" in autotask.stderr
    cw = invoke("connect", "--psa", "connectwise", "--tenant", "acme")
    assert cw.exit_code == 2 and "--tenant" in cw.stderr


def test_search_accounts_psa_halo_without_a_halo_section_says_connect(
    invoke, config_path, memkeyring
):
    write_config(config_path, {"version": 2, "infima": {"api_url": INFIMA}, "mappings": []})
    result = invoke("search-accounts", "--psa", "halo", "kestrel")
    assert result.exit_code == 2
    assert "HaloPSA is not set up" in result.stderr
    assert "infima-autotask connect --psa halo" in result.stderr


# --- status and doctor ---------------------------------------------------------------------


def halo_config(config_path, **halo):
    write_config(
        config_path,
        {
            "version": 2,
            "infima": {"api_url": INFIMA},
            "halo": {"url": URL, "tenant": None, "client_id": CLIENT_ID, **halo},
            "mappings": [],
        },
    )


def test_status_tests_halo(invoke, halo_ok, config_path, memkeyring, env):
    halo_config(config_path, tenant="acme")
    memkeyring.set_password(KEYRING_SERVICE, KEY_NAME, SECRET)
    result = invoke("status", env=env)
    assert result.exit_code == 0, result.output
    assert f"HaloPSA:          Connected ({URL}, tenant acme)" in result.stdout
    assert "Autotask:         not configured" in result.stdout
    document = json.loads(invoke("status", "--json", env=env).stdout)
    assert document["halo"] == {"connected": True, "url": URL, "tenant": "acme", "error": None}
    assert SECRET not in result.output and TOKEN not in result.output


def test_status_without_a_halo_section_has_no_halo_record(
    invoke, halo_ok, config_path, memkeyring, env
):
    write_config(config_path, {"version": 1, "infima": {"api_url": INFIMA}, "mappings": []})
    document = json.loads(invoke("status", "--json", env=env).stdout)
    assert "halo" not in document


def test_status_without_the_secret_is_exit_2_naming_the_variable(
    invoke, halo_ok, config_path, memkeyring, env
):
    halo_config(config_path)
    result = invoke("status", "--json", env=env)
    assert result.exit_code == 2
    record = json.loads(result.stdout)["halo"]
    assert record["connected"] is False and "INFIMA_HALO_CLIENT_SECRET" in record["error"]


def test_status_fails_when_halo_rejects_the_secret(invoke, halo_ok, config_path, memkeyring, env):
    halo_config(config_path)
    memkeyring.set_password(KEYRING_SERVICE, KEY_NAME, "a-wrong-secret")
    halo_ok.post(URL + "/auth/token", status_code=401, json={"error": "invalid_client"})
    result = invoke("status", env=env)
    assert result.exit_code == 3
    assert "HaloPSA:          not connected: HaloPSA refused the token request" in result.stdout


def test_status_names_a_missing_client_id(invoke, halo_ok, config_path, memkeyring, env):
    halo_config(config_path, client_id=None)
    result = invoke("status", "--json", env=env)
    assert result.exit_code == 2
    assert "halo.client_id missing" in json.loads(result.stdout)["halo"]["error"]


def test_doctor_checks_the_halo_connection(invoke, halo_ok, config_path, memkeyring, env):
    halo_config(config_path)
    memkeyring.set_password(KEYRING_SERVICE, KEY_NAME, SECRET)
    halo_ok.get(INFIMA + "/v1/clients", json={"data": [], "total": 0})
    result = invoke("doctor", "--json", env=env)
    rows = {row["check"]: row for row in json.loads(result.stdout)}
    assert rows["HaloPSA connection"]["result"] == "ok"
    assert URL in rows["HaloPSA connection"]["detail"]


def test_connect_and_status_against_the_hosted_simulator(
    invoke, sandbox, config_path, memkeyring, tmp_path
):
    sandbox.halo.hosted = True
    env = {
        "INFIMA_API_URL": sandbox.infima_url,
        "INFIMA_API_KEY": sandbox.api_key,
        "INFIMA_AUTOTASK_STATE_DIR": str(tmp_path / "state"),
    }
    args = ["connect", "--psa", "halo", "--url", sandbox.halo_url]
    args += ["--client-id", sandbox.halo_client_id, "--client-secret-stdin"]
    without = invoke(*args, input=sandbox.halo_client_secret + "\n", env=env)
    assert without.exit_code == 3 and "tenant" in without.stderr
    assert not config_path.exists()
    result = invoke(
        *args, "--tenant", sandbox.halo_tenant, input=sandbox.halo_client_secret + "\n", env=env
    )
    assert result.exit_code == 0, result.output
    assert "HaloPSA: Connected" in result.stdout
    name = f"halo:{sandbox.halo_client_id}"
    assert memkeyring.get_password(KEYRING_SERVICE, name) == sandbox.halo_client_secret
    status = invoke("status", "--json", env=env)
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["halo"]["connected"] is True
    assert sandbox.halo_client_secret not in result.output + status.output
    assert sandbox.halo.creates == []
