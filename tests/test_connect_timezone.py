"""``connect`` fills ``autotask.timezone`` from the default InternalLocations record (SPEC §6,
§7), through the real CLI against the loopback sandbox and requests-mock. Whatever that read
gives, connect succeeds: a missing or unreadable zone is a warning, never a failure."""

from __future__ import annotations

import pytest
import yaml
from conftest import API_URL, BASE, CODE, SECRET, USERNAME, make_config, write_config

from infima_autotask.autotask import DEFAULT_ZONE_URL
from infima_autotask.sandbox import data

ZONE = {"zoneName": "AE02", "url": API_URL, "webUrl": "https://ww5.autotask.net/", "ci": 5}
THRESHOLD = {
    "externalRequestThreshold": 10000,
    "requestThresholdTimeframe": 60,
    "currentTimeframeRequestCount": 124,
}
SET_BY_HAND = "set autotask.timezone in {path} by hand to the tenant's IANA zone (e.g. "


def _connect(invoke, sandbox):
    return invoke(
        "connect", "--username", sandbox.username, "--integration-code", sandbox.integration_code,
        "--secret-stdin", input=sandbox.secret + "\n",
        env={"INFIMA_AUTOTASK_ZONE_URL": sandbox.zone_url},
    )  # fmt: skip


def _saved_zone(config_path):
    return yaml.safe_load(config_path.read_text(encoding="utf-8"))["autotask"]["timezone"]


def _location(sandbox):
    return sandbox.state.internal_locations[data.HEAD_OFFICE_LOCATION_ID]


def test_connect_stores_the_tenant_zone(invoke, config_path, sandbox, memkeyring):
    result = _connect(invoke, sandbox)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        "Tenant time zone: America/New_York (from the default internal location)"
    )
    assert result.stderr == f"Config saved to {config_path}\n"
    assert _saved_zone(config_path) == "America/New_York"
    assert invoke("validate").exit_code == 0
    paths = [
        r.path.split("/v1.0/")[-1].split("?")[0]
        for r in sandbox.requests
        if r.service == "autotask"
    ]
    assert paths == ["zoneInformation", "ThresholdInformation", "InternalLocations/query"]


def test_connect_reads_a_windows_zone_name(invoke, config_path, sandbox, memkeyring):
    _location(sandbox)["timeZone"] = "AUS Eastern Standard Time"
    result = _connect(invoke, sandbox)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        "Tenant time zone: Australia/Sydney (from the default internal location: AUS Eastern "
        "Standard Time)"
    )
    assert _saved_zone(config_path) == "Australia/Sydney"


def test_connect_keeps_a_configured_zone_that_differs(invoke, config_path, sandbox, memkeyring):
    doc = make_config(autotask={"timezone": "Europe/London"})
    doc["mappings"] = [data.seed_mapping(data.ACME_CLIENT_ID)]
    write_config(config_path, doc)
    result = _connect(invoke, sandbox)
    assert result.exit_code == 0, result.output
    assert "Tenant time zone: America/New_York (from the default internal location)" in (
        result.stdout
    )
    assert result.stderr.splitlines()[0] == (
        "Warning: autotask.timezone is Europe/London in the config, but the tenant's default "
        "internal location says America/New_York; kept Europe/London. Unless you know the "
        "database runs on Europe/London, set autotask.timezone: America/New_York in "
        f"{config_path} (`infima-autotask doctor` then shows them agreeing)."
    )
    assert _saved_zone(config_path) == "Europe/London"
    assert len(yaml.safe_load(config_path.read_text())["mappings"]) == 1


def test_connect_with_the_same_zone_configured_says_nothing_more(
    invoke, config_path, sandbox, memkeyring
):
    write_config(config_path, make_config(autotask={"timezone": "America/New_York"}))
    result = _connect(invoke, sandbox)
    assert result.exit_code == 0, result.output
    assert result.stderr == f"Config saved to {config_path}\n"
    assert _saved_zone(config_path) == "America/New_York"


@pytest.mark.parametrize(
    ("time_zone", "problem"),
    [
        (None, "Autotask shows no default internal location with a time zone"),
        ("   ", "Autotask shows no default internal location with a time zone"),
        (
            "Mars Standard Time",
            "the default internal location's time zone 'Mars Standard Time' is not a zone name "
            "this tool can read",
        ),
    ],
)
def test_connect_without_a_readable_zone_warns(
    invoke, config_path, sandbox, memkeyring, time_zone, problem
):
    _location(sandbox)["timeZone"] = time_zone
    result = _connect(invoke, sandbox)
    assert result.exit_code == 0, result.output
    assert "Autotask: Connected" in result.stdout and "Tenant time zone" not in result.stdout
    assert result.stderr.splitlines()[0] == (
        f"Warning: could not read the tenant's time zone: {problem}; "
        + SET_BY_HAND.format(path=config_path)
        + "America/New_York)."
    )
    assert _saved_zone(config_path) is None
    assert memkeyring.get_password("infima-autotask", sandbox.username) == sandbox.secret


def test_connect_without_a_default_location_warns(invoke, config_path, sandbox, memkeyring):
    _location(sandbox)["isDefault"] = False
    result = _connect(invoke, sandbox)
    assert result.exit_code == 0, result.output
    assert "no default internal location" in result.stderr
    assert _saved_zone(config_path) is None


def test_connect_survives_a_server_error_on_the_zone_read(invoke, config_path, sandbox, memkeyring):
    sandbox.faults.add("InternalLocations", "500-errors")
    result = _connect(invoke, sandbox)
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(
        "Warning: could not read the tenant's time zone: reading InternalLocations failed "
        "(HTTP 500); set autotask.timezone in "
    )
    assert _saved_zone(config_path) is None
    assert "Autotask: Connected" in result.stdout


@pytest.mark.parametrize("status", [401, 403, 404])
def test_connect_without_permission_on_locations_still_connects(
    invoke, requests_mock, memkeyring, config_path, status
):
    requests_mock.get(DEFAULT_ZONE_URL, json=ZONE)
    requests_mock.get(BASE + "ThresholdInformation", json=THRESHOLD)
    requests_mock.post(BASE + "InternalLocations/query", status_code=status, text="")
    write_config(config_path, make_config(autotask={"timezone": "America/Chicago"}))
    result = invoke(
        "connect", "--username", USERNAME, "--integration-code", CODE, "--secret-stdin",
        input=SECRET + "\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == (
        f"Warning: could not read the tenant's time zone: reading InternalLocations failed "
        f"(HTTP {status}); autotask.timezone stays America/Chicago."
    )
    assert _saved_zone(config_path) == "America/Chicago"
    assert memkeyring.get_password("infima-autotask", USERNAME) == SECRET
    assert SECRET not in result.output
    assert "rejected the API username" not in result.output  # not the credentials' fault


def test_connect_stores_nothing_when_the_test_call_fails(invoke, requests_mock, config_path):
    requests_mock.get(DEFAULT_ZONE_URL, json=ZONE)
    requests_mock.get(BASE + "ThresholdInformation", status_code=401, text="")
    locations = requests_mock.post(BASE + "InternalLocations/query", json={"items": []})
    result = invoke(
        "connect", "--username", USERNAME, "--integration-code", CODE, "--secret-stdin",
        input=SECRET + "\n",
    )  # fmt: skip
    assert result.exit_code == 3
    assert not locations.called and not config_path.exists()
