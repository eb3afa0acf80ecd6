"""The root group, ``connect``, ``status`` and ``validate`` through the real CLI."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import click
import keyring
import keyring.backends.fail
import pytest
import yaml
from conftest import (
    API_KEY,
    API_URL,
    BASE,
    CODE,
    INFIMA,
    SECRET,
    USERNAME,
    make_config,
    write_config,
)
from keyring.backend import KeyringBackend

from infima_autotask import __version__
from infima_autotask.autotask import DEFAULT_ZONE_URL
from infima_autotask.cli import cli

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yaml"
ZONE = {"zoneName": "AE02", "url": API_URL, "webUrl": "https://ww5.autotask.net/", "ci": 5}
THRESHOLD = {
    "externalRequestThreshold": 10000,
    "requestThresholdTimeframe": 60,
    "currentTimeframeRequestCount": 124,
}
PARTNER = {"partner_name": "Partner Co", "admins": []}
LOCATIONS = {
    "items": [
        {"id": 1, "name": "Head Office", "isDefault": True, "timeZone": "Eastern Standard Time"}
    ],
    "pageDetails": {"count": 1, "nextPageUrl": None},
}
TENANT_ZONE = "Tenant time zone: America/New_York (from the default internal location: Eastern "
TENANT_ZONE += "Standard Time)\n"


def connect(invoke, *, username=USERNAME, env=None):
    """``connect`` with the username and integration code as options, the secret on stdin."""
    return invoke(
        *("connect", "--username", username, "--integration-code", CODE, "--secret-stdin"),
        input=SECRET + "\n",
        env=env,
    )


class DbusKeyring(KeyringBackend):
    priority = 1

    def get_password(self, service, username):
        raise RuntimeError("Failed to connect to D-Bus")

    def set_password(self, service, username, password):
        raise RuntimeError("Failed to connect to D-Bus")

    def delete_password(self, service, username):
        raise RuntimeError("Failed to connect to D-Bus")


@pytest.fixture
def terminal(monkeypatch):
    monkeypatch.setattr("infima_autotask.cli._common.can_prompt", lambda: True)


@pytest.fixture
def autotask_ok(requests_mock):
    requests_mock.get(DEFAULT_ZONE_URL, json=ZONE)
    requests_mock.get(BASE + "ThresholdInformation", json=THRESHOLD)
    requests_mock.post(BASE + "InternalLocations/query", json=LOCATIONS)
    return requests_mock


@pytest.fixture
def infima_ok(requests_mock):
    requests_mock.get(INFIMA + "/v1/partner", json=PARTNER)
    return requests_mock


def example_mappings():
    return yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))["mappings"]


def saved(config_path):
    return yaml.safe_load(config_path.read_text(encoding="utf-8"))


# --- root group ------------------------------------------------------------------------


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"infima-autotask, version {__version__}\n"


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help(runner, flag):
    result = runner.invoke(cli, [flag])
    assert result.exit_code == 0
    assert result.output.startswith("Usage: ")
    assert "Example:" in result.output
    for name in ("connect", "status", "validate"):
        assert name in result.output


def test_python_dash_m_version():
    result = subprocess.run(
        [sys.executable, "-m", "infima_autotask", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"infima-autotask, version {__version__}\n"


def test_unknown_command_keeps_clicks_usage_error(runner):
    result = runner.invoke(cli, ["frobnicate"])
    assert result.exit_code == 2
    assert "No such command 'frobnicate'" in result.stderr


# --- connect (Autotask) ----------------------------------------------------------------


def test_connect_on_a_terminal(invoke, terminal, autotask_ok, memkeyring, config_path):
    result = invoke("connect", input=f"{USERNAME}\n{CODE}\n{SECRET}\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"Autotask: Connected (zone AE02, {API_URL})\nAPI usage: 124 of 10000 requests this hour\n"
        + TENANT_ZONE
    )
    assert "Autotask API username:" in result.stderr
    assert "Autotask API secret:" in result.stderr
    assert SECRET not in result.output
    assert memkeyring.get_password("infima-autotask", USERNAME) == SECRET
    doc = saved(config_path)
    assert doc["autotask"] == {
        "username": USERNAME,
        "integration_code": CODE,
        "api_url": API_URL,
        "timezone": "America/New_York",
    }
    assert SECRET not in config_path.read_text(encoding="utf-8")
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
    threshold = autotask_ok.request_history[1]
    assert threshold.path.endswith("/thresholdinformation")
    assert threshold.headers["Secret"] == SECRET
    assert threshold.headers["ApiIntegrationCode"] == CODE
    # the zone lookup carries no credentials
    assert "Secret" not in autotask_ok.request_history[0].headers


def test_connect_with_options_and_secret_stdin(invoke, autotask_ok, memkeyring, config_path):
    result = connect(invoke)
    assert result.exit_code == 0, result.output
    assert "Autotask: Connected" in result.stdout
    assert "124 of 10000 requests this hour" in result.stdout
    assert result.stderr == f"Config saved to {config_path}\n"
    assert memkeyring.get_password("infima-autotask", USERNAME) == SECRET


def test_connect_keeps_existing_mappings(invoke, autotask_ok, memkeyring, config_path):
    doc = make_config(example_mappings(), autotask={"api_url": None, "integration_code": "OLD"})
    write_config(config_path, doc)
    result = invoke("connect", "--integration-code", CODE, "--secret-stdin", input=SECRET + "\n")
    assert result.exit_code == 0, result.output
    after = saved(config_path)
    assert after["mappings"] == example_mappings()
    assert after["autotask"] == {
        "username": USERNAME,
        "integration_code": CODE,
        "api_url": API_URL,
        "timezone": "America/New_York",
    }


def test_connect_secret_stdin_empty(invoke, requests_mock, memkeyring, config_path):
    result = invoke(
        "connect", "--username", USERNAME, "--integration-code", CODE, "--secret-stdin", input=""
    )
    assert result.exit_code == 2
    assert result.stderr == "Error: Autotask secret: nothing was read from stdin.\n"
    assert requests_mock.call_count == 0
    assert not config_path.exists()


def test_connect_without_terminal_and_missing_value(invoke, requests_mock, memkeyring, config_path):
    result = invoke("connect", "--username", USERNAME, "--integration-code", CODE)
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: Autotask API secret is required. Pass it as an option (or on stdin for "
        "secrets); no terminal is attached to ask for it.\n"
    )
    assert requests_mock.call_count == 0
    assert not config_path.exists()


def test_connect_without_terminal_and_missing_username(invoke, requests_mock, config_path):
    result = invoke("connect", "--secret-stdin", input=SECRET + "\n")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: Autotask API username is required.")
    assert requests_mock.call_count == 0


def test_connect_credentials_from_the_environment(invoke, autotask_ok, memkeyring, config_path):
    env = {
        "INFIMA_AUTOTASK_USERNAME": USERNAME,
        "INFIMA_AUTOTASK_INTEGRATION_CODE": CODE,
        "INFIMA_AUTOTASK_SECRET": SECRET,
    }
    result = invoke("connect", env=env)
    assert result.exit_code == 0, result.output
    # the secret already lives in the environment: not copied into the keyring
    assert memkeyring.get_password("infima-autotask", USERNAME) is None
    assert saved(config_path)["autotask"]["username"] == USERNAME


def test_connect_rejected_credentials(invoke, requests_mock, memkeyring, config_path):
    requests_mock.get(DEFAULT_ZONE_URL, json=ZONE)
    requests_mock.get(BASE + "ThresholdInformation", status_code=401, text="")
    result = connect(invoke)
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr == (
        "Error: Autotask rejected the API username, secret or integration code (HTTP 401). "
        "Check them, then run `infima-autotask connect` again.\n"
    )
    assert memkeyring.get_password("infima-autotask", USERNAME) is None
    assert not config_path.exists()


def test_connect_unknown_zone_user(invoke, requests_mock, memkeyring, config_path):
    requests_mock.get(
        DEFAULT_ZONE_URL,
        status_code=500,
        json={"errors": ["Zone information could not be determined"]},
    )
    result = connect(invoke, username="typo@example.com")
    assert result.exit_code == 3
    assert result.stderr.startswith(
        "Error: Autotask could not find the zone of API user 'typo@example.com': "
        "Zone information could not be determined."
    )
    assert requests_mock.call_count == 1
    assert not config_path.exists()


def test_connect_foreign_zone_answer_sends_nothing_there(invoke, requests_mock, memkeyring):
    requests_mock.get(DEFAULT_ZONE_URL, json={"zoneName": "X", "url": "https://evil.example.com/"})
    evil = requests_mock.get("https://evil.example.com/v1.0/ThresholdInformation", json=THRESHOLD)
    result = connect(invoke)
    assert result.exit_code == 3
    assert result.stderr.startswith("Error: Autotask's zone lookup pointed to 'evil.example.com'")
    assert not evil.called
    assert [r.hostname for r in requests_mock.request_history] == ["webservices.autotask.net"]
    assert memkeyring.get_password("infima-autotask", USERNAME) is None


def test_connect_with_a_loopback_zone_override(invoke, requests_mock, memkeyring, config_path):
    zone_url = "http://127.0.0.1:8999/atservicesrest/v1.0/zoneInformation"
    api_url = "http://127.0.0.1:8999/ATServicesRest/"
    requests_mock.get(zone_url, json={"zoneName": "SB", "url": api_url})
    requests_mock.get(api_url + "v1.0/ThresholdInformation", json=THRESHOLD)
    requests_mock.post(api_url + "v1.0/InternalLocations/query", json=LOCATIONS)
    result = connect(invoke, env={"INFIMA_AUTOTASK_ZONE_URL": zone_url})
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Autotask: Connected (zone SB, {api_url})")
    assert saved(config_path)["autotask"]["api_url"] == api_url


def test_connect_zone_override_answering_another_loopback_name(invoke, requests_mock, memkeyring):
    zone_url = "http://127.0.0.1:8999/zoneInformation"
    requests_mock.get(zone_url, json={"url": "http://localhost:8999/ATServicesRest/"})
    other = requests_mock.get("http://localhost:8999/ATServicesRest/v1.0/ThresholdInformation")
    result = connect(invoke, env={"INFIMA_AUTOTASK_ZONE_URL": zone_url})
    assert result.exit_code == 3
    assert result.stderr.startswith("Error: Autotask's zone lookup pointed to 'localhost'")
    assert not other.called


def test_connect_with_the_api_url_override(invoke, requests_mock, memkeyring, config_path):
    requests_mock.get(BASE + "ThresholdInformation", json=THRESHOLD)
    requests_mock.post(BASE + "InternalLocations/query", json=LOCATIONS)
    result = connect(invoke, env={"INFIMA_AUTOTASK_API_URL": API_URL})
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Autotask: Connected (zone override, {API_URL})")
    assert requests_mock.call_count == 2  # no zone lookup: the test call and the time zone


def test_connect_never_overwrites_a_broken_config(invoke, autotask_ok, memkeyring, config_path):
    config_path.write_bytes(b"version: 1\nautotask: [unclosed\n")
    before = config_path.read_bytes()
    result = connect(invoke)
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ")
    assert str(config_path) in result.stderr
    assert config_path.read_bytes() == before
    assert memkeyring.get_password("infima-autotask", USERNAME) is None
    assert autotask_ok.call_count == 0


def test_connect_with_a_broken_keyring(invoke, autotask_ok, config_path):
    keyring.set_keyring(DbusKeyring())
    result = connect(invoke)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == "Error: Could not store the secret in the OS keyring (RuntimeError)."
    assert lines[1].startswith("  Under cron")
    assert "PYTHON_KEYRING_BACKEND" in lines[1] and "INFIMA_AUTOTASK_SECRET" in lines[1]
    assert not config_path.exists()


# --- connect --infima ------------------------------------------------------------------


def test_connect_infima_on_a_terminal(invoke, terminal, infima_ok, memkeyring, config_path):
    result = invoke("connect", "--infima", input=API_KEY + "\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"INFIMA: Connected (Partner Co, {INFIMA})\n"
    assert API_KEY not in result.output
    assert memkeyring.get_password("infima-autotask", "infima-api-key") == API_KEY
    assert infima_ok.last_request.headers["X-API-Key"] == API_KEY
    assert API_KEY not in config_path.read_text(encoding="utf-8")


def test_connect_infima_api_key_stdin(invoke, infima_ok, memkeyring, config_path):
    write_config(config_path, make_config(example_mappings()))
    before = config_path.read_bytes()
    result = invoke("connect", "--infima", "--api-key-stdin", input=API_KEY + "\n")
    assert result.exit_code == 0, result.output
    assert "INFIMA: Connected (Partner Co" in result.stdout
    assert memkeyring.get_password("infima-autotask", "infima-api-key") == API_KEY
    assert config_path.read_bytes() == before  # nothing to change in an existing config


def test_connect_infima_without_terminal(invoke, requests_mock, memkeyring):
    result = invoke("connect", "--infima")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: INFIMA API key is required.")
    assert requests_mock.call_count == 0


def test_connect_infima_rejected(invoke, requests_mock, memkeyring, config_path):
    requests_mock.get(INFIMA + "/v1/partner", status_code=401, json={"message": "Invalid key"})
    result = invoke("connect", "--infima", "--api-key-stdin", input=API_KEY + "\n")
    assert result.exit_code == 3
    assert result.stderr.startswith("Error: INFIMA rejected the API key (HTTP 401")
    assert memkeyring.get_password("infima-autotask", "infima-api-key") is None
    assert not config_path.exists()


def test_connect_infima_url_from_the_environment(invoke, requests_mock, memkeyring):
    requests_mock.get("http://127.0.0.1:9100/v1/partner", json=PARTNER)
    result = invoke(
        "connect",
        "--infima",
        "--api-key-stdin",
        input=API_KEY + "\n",
        env={"INFIMA_API_URL": "http://127.0.0.1:9100"},
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "INFIMA: Connected (Partner Co, http://127.0.0.1:9100)\n"


def test_connect_infima_never_overwrites_a_broken_config(
    invoke, infima_ok, memkeyring, config_path
):
    config_path.write_bytes(b"version: 3\n")
    before = config_path.read_bytes()
    result = invoke("connect", "--infima", "--api-key-stdin", input=API_KEY + "\n")
    assert result.exit_code == 2
    assert config_path.read_bytes() == before
    assert memkeyring.get_password("infima-autotask", "infima-api-key") is None


# --- status ----------------------------------------------------------------------------


def test_status_both_connected(invoke, stored_creds, infima_ok, tmp_path, config_path):
    infima_ok.get(BASE + "ThresholdInformation", json=THRESHOLD)
    write_config(config_path, make_config(example_mappings()))
    result = invoke("status")
    assert result.exit_code == 0, result.output
    state = tmp_path / "state-home" / "infima-autotask"
    assert result.stdout.splitlines() == [
        f"Autotask:         Connected ({API_URL}; 124 of 10000 requests this hour)",
        f"INFIMA:           Connected (Partner Co, {INFIMA})",
        f"Config:           {config_path}",
        f"State folder:     {state}",
        "Mappings:         2",
        "Time zones:       this month is counted in the server zone; writes are dated for no "
        "tenant zone (UTC noon)",
        "Last sync:        never",
    ]


def test_status_json(invoke, stored_creds, infima_ok, config_path, state_dir):
    """Raw values, not the table's sentences (issue 11): numbers, URLs, null for never."""
    infima_ok.get(BASE + "ThresholdInformation", json=THRESHOLD)
    write_config(config_path, make_config())
    result = invoke("status", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "config_path": str(config_path),
        "state_dir": {"path": str(state_dir), "usable": True, "error": None},
        "mappings": 0,
        "autotask": {
            "connected": True,
            "url": API_URL,
            "requests_used": 124,
            "request_limit": 10000,
            "error": None,
        },
        "infima": {
            "connected": True,
            "url": INFIMA,
            "partner": "Partner Co",
            "counts_file": None,
            "clients": None,
            "error": None,
        },
        "last_run": None,
        "zones": {"sync": None, "autotask": None},
        "warnings": [],
        "ok": True,
        "exit_code": 0,
    }
    assert result.stderr == ""


def test_status_json_of_failures_carries_the_errors(
    invoke, stored_creds, requests_mock, config_path
):
    requests_mock.get(BASE + "ThresholdInformation", json=THRESHOLD)
    requests_mock.get(INFIMA + "/v1/partner", status_code=401, text="")
    write_config(config_path, make_config())
    result = invoke("status", "--json")
    assert result.exit_code == 3
    doc = json.loads(result.stdout)
    assert doc["autotask"]["connected"] is True and doc["autotask"]["error"] is None
    infima = doc["infima"]
    assert (infima["connected"], infima["url"], infima["partner"]) == (False, None, None)
    assert infima["error"].startswith("INFIMA rejected the API key")
    assert (doc["ok"], doc["exit_code"]) == (False, 3)
    assert result.stderr.startswith("Error: A connection failed (shown above).")


def test_status_json_not_configured_and_state_folder_unusable(
    invoke, memkeyring, requests_mock, config_path, tmp_path
):
    blocker = tmp_path / "state-file"
    blocker.write_text("not a folder", encoding="utf-8")
    write_config(
        config_path,
        make_config(
            autotask={"username": None, "integration_code": None},
            state_dir=str(blocker / "inside"),
        ),
    )
    result = invoke("status", "--json")
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["autotask"] == {
        "connected": False,
        "url": None,
        "requests_used": None,
        "request_limit": None,
        "error": doc["autotask"]["error"],
    }
    assert doc["autotask"]["error"].startswith("No Autotask API username")
    state = doc["state_dir"]
    assert (state["path"], state["usable"]) == (str(blocker / "inside"), False)
    assert "is not a folder" in state["error"]
    assert (doc["last_run"], doc["ok"], doc["exit_code"]) == (None, False, 2)
    assert requests_mock.call_count == 0


def test_status_json_counts_file_zones_and_last_run(
    invoke, stored_creds, requests_mock, config_path, state_dir, tmp_path
):
    from datetime import datetime, timezone

    from infima_autotask.history import History

    counts = tmp_path / "counts.csv"
    counts.write_text("client_id,active_users\n7,3\n9,0\n", encoding="utf-8")
    write_config(
        config_path,
        make_config(
            infima={"counts_file": str(counts)},
            sync={"timezone": "America/New_York"},
            autotask={"timezone": "Europe/London"},
        ),
    )
    started = datetime(2026, 12, 1, 11, 0, 5, tzinfo=timezone.utc)
    with History(state_dir, clock=lambda: started) as history:
        run = history.start_run(period="2026-12", dry_run=False, version="0.1.0")
        history.finish_run(run, outcome="ok", summary={"updated": 2, "unchanged": 1})
    requests_mock.get(BASE + "ThresholdInformation", json=THRESHOLD)
    result = invoke("status", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["infima"] == {
        "connected": True,
        "url": None,
        "partner": None,
        "counts_file": str(counts),
        "clients": 2,
        "error": None,
    }
    assert doc["zones"] == {"sync": "America/New_York", "autotask": "Europe/London"}
    assert doc["last_run"] == {
        "period": "2026-12",
        "dry_run": False,
        "reverts": None,
        "time": "2026-12-01T11:00:05Z",
        "outcome": "ok",
        "summary": {"unchanged": 1, "updated": 2},
    }
    table = invoke("status").stdout.splitlines()
    assert f"INFIMA:           counts file {counts}: 2 clients" in table
    assert "Last sync:        2026-12 sync at 2026-12-01T11:00:05Z: ok" in table
    # A revert is the newest run: status says so, not "sync" (the counts are not current).
    with History(state_dir, clock=lambda: started) as history:
        again = history.start_run(
            period="2026-12", dry_run=False, version="0.1.0", kind="revert", reverts=run
        )
        history.finish_run(again, outcome="ok", summary={"updated": 2})
    table = invoke("status").stdout.splitlines()
    assert f"Last sync:        2026-12 revert of run {run} at 2026-12-01T11:00:05Z: ok" in table
    assert json.loads(invoke("status", "--json").stdout)["last_run"]["reverts"] == run


def test_status_one_failing_exits_3(invoke, stored_creds, requests_mock, config_path):
    requests_mock.get(BASE + "ThresholdInformation", json=THRESHOLD)
    requests_mock.get(INFIMA + "/v1/partner", status_code=401, text="")
    write_config(config_path, make_config())
    result = invoke("status")
    assert result.exit_code == 3
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Autotask:         Connected")
    assert lines[1].startswith("INFIMA:           not connected: INFIMA rejected the API key")
    assert result.stderr == (
        "Error: A connection failed (shown above). Fix it, then run "
        "`infima-autotask status` again.\n"
    )


def test_status_autotask_unreachable_exits_3(invoke, stored_creds, infima_ok, config_path):
    infima_ok.get(BASE + "ThresholdInformation", status_code=401, text="")
    write_config(config_path, make_config())
    result = invoke("status")
    assert result.exit_code == 3
    assert "Autotask:         not connected: Autotask rejected the API username" in result.stdout
    assert "INFIMA:           Connected" in result.stdout


def test_status_not_configured_fails_as_sync_would(invoke, memkeyring, requests_mock, config_path):
    """sync cannot run without credentials (exit 2): status says so with the same code."""
    write_config(config_path, make_config(autotask={"username": None, "integration_code": None}))
    result = invoke("status")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: sync cannot run: something it needs is missing")
    assert "Autotask:         not configured: No Autotask API username" in result.stdout
    assert "INFIMA:           not configured: No INFIMA API key is stored" in result.stdout
    assert requests_mock.call_count == 0


@pytest.mark.parametrize("backend", [DbusKeyring, keyring.backends.fail.Keyring])
def test_status_keyring_unavailable_shows_the_reason(invoke, requests_mock, config_path, backend):
    keyring.set_keyring(backend())
    write_config(config_path, make_config())
    result = invoke("status")
    assert result.exit_code == 2  # a keyring problem is 2 everywhere (SPEC §5)
    assert "Autotask:         credentials unreadable: Could not read the OS keyring (" in (
        result.stdout
    )
    assert "INFIMA:           credentials unreadable: Could not read the OS keyring (" in (
        result.stdout
    )
    assert "PYTHON_KEYRING_BACKEND" in result.stdout
    assert requests_mock.call_count == 0


def test_status_fails_when_the_secret_is_stored_under_another_username(
    invoke, memkeyring, requests_mock, config_path
):
    keyring.set_password("infima-autotask", "someone-else@example.com", "s3cret")
    keyring.set_password("infima-autotask", "infima-api-key", "k3y")
    write_config(config_path, make_config())
    requests_mock.get(re.compile(r".*/v1/partner$"), json={"partner_name": "Partner Co"})
    result = invoke("status")
    assert result.exit_code == 2, result.output
    assert "Autotask:         not configured:" in result.stdout
    assert "INFIMA:           Connected (Partner Co" in result.stdout


def test_status_fails_when_the_state_folder_is_a_file(
    invoke, stored_creds, requests_mock, config_path, tmp_path
):
    blocker = tmp_path / "state-file"
    blocker.write_text("not a folder", encoding="utf-8")
    write_config(config_path, make_config(state_dir=str(blocker / "inside")))
    requests_mock.get(re.compile(".*"), status_code=404)
    result = invoke("status")
    assert result.exit_code == 2, result.output
    assert "is not a folder" in result.stdout and "INFIMA_AUTOTASK_STATE_DIR" in result.stdout


def test_status_missing_config(invoke, config_path):
    result = invoke("status")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ")
    assert str(config_path) in result.stderr


# --- validate --------------------------------------------------------------------------


def test_validate_the_example_config(runner):
    count = len(example_mappings())
    result = runner.invoke(cli, ["--config", str(EXAMPLE), "validate"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"config OK: {count} mappings\n"


def test_validate_through_the_environment_variable(runner):
    result = runner.invoke(cli, ["validate"], env={"INFIMA_AUTOTASK_CONFIG": str(EXAMPLE)})
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("config OK: ")


def test_validate_lists_every_problem(invoke, config_path):
    mappings = example_mappings()
    mappings[0]["min_units"] = 20
    mappings[0]["max_units"] = 10
    mappings[1]["contract_service_id"] = mappings[0]["contract_service_id"]
    doc = make_config(mappings, version=3, sync={"timezone": "Mars/Olympus"}, surprise=True)
    write_config(config_path, doc)
    result = invoke("validate")
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("Error: ") and str(config_path) in lines[0]
    details = lines[1:]
    assert all(line.startswith("  ") for line in details)
    text = "\n".join(details)
    for fragment in ("version", "sync.timezone", "surprise", "mappings[0]", "contract_service_id"):
        assert fragment in text, fragment
    assert len(details) >= 5


def test_validate_missing_file(invoke, config_path):
    result = invoke("validate")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ")
    assert str(config_path) in result.stderr
    assert "Traceback" not in result.output


def test_validate_is_offline(invoke, requests_mock, config_path):
    write_config(config_path, make_config())
    result = invoke("validate")
    assert result.exit_code == 0
    assert result.stdout == "config OK: 0 mappings\n"
    assert requests_mock.call_count == 0


def test_default_config_path_is_the_app_folder(runner, tmp_path):
    result = runner.invoke(cli, ["validate"])
    assert result.exit_code == 2
    expected = Path(click.get_app_dir("infima-autotask")) / "config.yaml"
    assert str(expected) in result.stderr
    assert str(tmp_path / "config-home") in str(expected)


def test_validate_counts_one_mapping_in_the_singular(invoke, config_path):
    one = {
        "client_id": 101,
        "account_id": 1,
        "contract_id": 2,
        "contract_service_id": 3,
        "service_id": 4,
    }
    write_config(config_path, make_config([one]))
    assert invoke("validate").stdout == "config OK: 1 mapping\n"


def test_global_options_after_the_command_are_accepted(runner, tmp_path):
    config = tmp_path / "elsewhere.yaml"
    write_config(config, make_config())
    result = runner.invoke(cli, ["validate", "--config", str(config), "-vv"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "config OK: 0 mappings\n"
    assert "config loaded from" in result.stderr  # -vv took effect
    assert runner.invoke(cli, ["validate", f"--config={config}"]).exit_code == 0


def test_a_value_that_looks_like_a_global_option_stays_with_its_option(runner, tmp_path):
    """`map --from-csv -v` names a file called -v; `--config sync sync` is a config named sync."""
    from infima_autotask.cli import _globals_first
    from infima_autotask.cli import cli as group

    commands = group.commands
    assert _globals_first(["map", "--from-csv", "-v"], commands) == ["map", "--from-csv", "-v"]
    assert _globals_first(["--config", "sync", "sync", "-v"], commands) == [
        "--config",
        "sync",
        "-v",
        "sync",
    ]
    assert _globals_first(["sync", "--month", "2026-12", "-vv"], commands) == [
        "-vv",
        "sync",
        "--month",
        "2026-12",
    ]


def test_status_fails_when_the_counts_file_cannot_be_read(
    invoke, stored_creds, requests_mock, config_path, tmp_path
):
    missing = tmp_path / "nowhere.csv"
    write_config(config_path, make_config(infima={"counts_file": str(missing)}))
    requests_mock.get(re.compile(".*"), status_code=404)
    result = invoke("status")
    assert result.exit_code == 2
    assert "Cannot read the counts file" in result.stdout


def test_status_names_the_time_zones_and_times_in_utc(
    invoke, stored_creds, requests_mock, config_path, state_dir
):
    from infima_autotask.history import History

    write_config(
        config_path,
        make_config(sync={"timezone": "America/New_York"}, autotask={"timezone": "Europe/London"}),
    )
    with History(state_dir) as history:
        history.start_run(period="2026-12", dry_run=False, version="0.1.0")
    requests_mock.get(re.compile(".*"), status_code=404)
    result = invoke("status")
    assert (
        "Time zones:       this month is counted in America/New_York; writes are dated for "
        "Europe/London" in result.stdout
    )
    assert re.search(
        r"Last sync: +2026-12 sync at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: ", result.stdout
    )
