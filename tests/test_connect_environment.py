"""connect with a secret already in the environment: the variable wins over anything typed, so
a rejection must name it and say to unset it; and connect says which username it reuses."""

from __future__ import annotations

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

from infima_autotask.autotask import DEFAULT_ZONE_URL

ZONE = {"zoneName": "AE02", "url": API_URL}
THRESHOLD = {"externalRequestThreshold": 10000, "currentTimeframeRequestCount": 124}


def test_a_stale_secret_in_the_environment_is_named(invoke, requests_mock, memkeyring):
    requests_mock.get(DEFAULT_ZONE_URL, json=ZONE)
    requests_mock.get(BASE + "ThresholdInformation", status_code=401, text="")
    env = {"INFIMA_AUTOTASK_SECRET": "stale-" + SECRET}

    result = invoke("connect", "--username", USERNAME, "--integration-code", CODE, env=env)

    assert result.exit_code == 3
    error = result.stderr.splitlines()[-1]
    assert error.startswith("Error: Autotask rejected the API username, secret or integration code")
    assert "came from INFIMA_AUTOTASK_SECRET in the environment" in error
    assert "unset INFIMA_AUTOTASK_SECRET" in error
    assert SECRET not in result.output


def test_a_stale_infima_key_in_the_environment_is_named(invoke, requests_mock, memkeyring):
    requests_mock.get(INFIMA + "/v1/partner", status_code=401, text="")
    result = invoke("connect", "--infima", env={"INFIMA_API_KEY": "stale-" + API_KEY})
    assert result.exit_code == 3
    assert "came from INFIMA_API_KEY in the environment" in result.stderr
    assert "unset INFIMA_API_KEY" in result.stderr


def test_connect_says_which_username_it_reuses(invoke, requests_mock, memkeyring, config_path):
    write_config(
        config_path, make_config(autotask={"username": USERNAME, "integration_code": CODE})
    )
    requests_mock.get(DEFAULT_ZONE_URL, json=ZONE)
    requests_mock.get(BASE + "ThresholdInformation", json=THRESHOLD)
    requests_mock.post(BASE + "InternalLocations/query", json={"items": []})

    result = invoke("connect", "--secret-stdin", input=SECRET + "\n")

    assert result.exit_code == 0, result.output
    assert f"Autotask username: {USERNAME} (from the config; --username to use another)" in (
        result.stderr
    )
