"""The Autotask secret and the INFIMA key never appear in output, logs or files, at -vv.

Every foundation command runs through the real CLI, in success and failure paths. The log
records are captured raw, at emit time, on every ``infima_autotask.*`` module logger: that is
before the CLI's redacting handler, so a module that logged a secret would be caught even
though the terminal output would be masked.
"""

from __future__ import annotations

import functools
import logging

import keyring
import pytest
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

# Imported so that every module logger exists before the `logs` fixture hooks into them.
from infima_autotask.autotask import DEFAULT_ZONE_URL
from infima_autotask.http import RetryPolicy

ZONE = {"zoneName": "AE02", "url": API_URL}
THRESHOLD = {"externalRequestThreshold": 10000, "currentTimeframeRequestCount": 124}
PARTNER = {"partner_name": "Partner Co"}
# Servers that echo what they were sent: the texts are shown, so they must be masked.
ECHO_SECRET = {"errors": [f"Secret {SECRET} is not valid for {USERNAME}"]}
ECHO_KEY = {"message": f"API key {API_KEY} is invalid"}


class _Raw(logging.Handler):
    """Keeps every record's message as formatted when it is emitted (before any redaction)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class DbusKeyring(KeyringBackend):
    priority = 1

    def get_password(self, service, username):
        raise RuntimeError(f"D-Bus said no for {username}")

    def set_password(self, service, username, password):
        raise RuntimeError("D-Bus said no")

    def delete_password(self, service, username):
        raise RuntimeError("D-Bus said no")


@pytest.fixture
def logs(caplog):
    """Raw records of every module logger (the CLI resets the package logger's handlers)."""
    raw = _Raw()
    names = [
        name
        for name in logging.root.manager.loggerDict
        if name.startswith("infima_autotask.") or name in ("urllib3", "requests")
    ]
    loggers = [logging.getLogger(name) for name in names]
    for logger in loggers:
        logger.addHandler(raw)
        logger.addHandler(caplog.handler)
    yield raw
    for logger in loggers:
        logger.removeHandler(raw)
        logger.removeHandler(caplog.handler)


@pytest.fixture(autouse=True)
def fast_retries(seams):
    """The CLI's clients sleep for real; keep the retried 503 below a tenth of a second."""
    seams["retry"] = functools.partial(RetryPolicy, max_attempts=3, base_delay=0.01, max_delay=0.02)


@pytest.fixture
def check(logs, caplog, config_path):
    """Run a command at -vv and assert that neither secret shows up anywhere."""

    def run(invoke, *args, input=None, env=None, exit_code=0):
        result = invoke("-vv", *args, input=input, env=env)
        assert result.exit_code == exit_code, result.output
        texts = {
            "stdout": result.stdout,
            "stderr": result.stderr,
            "records": "\n".join(logs.lines),
            "caplog": caplog.text,
            "caplog messages": "\n".join(r.getMessage() for r in caplog.records),
            "config": config_path.read_text(encoding="utf-8") if config_path.exists() else "",
        }
        for where, text in texts.items():
            assert SECRET not in text, where
            assert API_KEY not in text, where
        return result

    return run


def connect_args(*extra):
    return ("connect", "--username", USERNAME, "--integration-code", CODE, "--secret-stdin", *extra)


# --- connect ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def tenant_location(requests_mock):
    """``connect`` also reads the default internal location's time zone."""
    requests_mock.post(
        BASE + "InternalLocations/query",
        json={"items": [{"id": 1, "isDefault": True, "timeZone": "America/New_York"}]},
    )


def test_connect_success(check, invoke, requests_mock, memkeyring, logs):
    requests_mock.get(DEFAULT_ZONE_URL, json=ZONE)
    requests_mock.get(BASE + "ThresholdInformation", json=THRESHOLD)
    result = check(invoke, *connect_args(), input=SECRET + "\n")
    assert "Autotask: Connected" in result.stdout
    assert any("HTTP 200" in line for line in logs.lines)  # -vv did log the requests
    assert "DEBUG" in result.stderr
    assert memkeyring.get_password("infima-autotask", USERNAME) == SECRET


def test_connect_on_a_terminal(check, invoke, requests_mock, memkeyring, monkeypatch):
    monkeypatch.setattr("infima_autotask.cli._common.can_prompt", lambda: True)
    requests_mock.get(DEFAULT_ZONE_URL, json=ZONE)
    requests_mock.get(BASE + "ThresholdInformation", json=THRESHOLD)
    check(invoke, "connect", input=f"{USERNAME}\n{CODE}\n{SECRET}\n")


def test_connect_from_environment(check, invoke, requests_mock, memkeyring):
    requests_mock.get(DEFAULT_ZONE_URL, json=ZONE)
    requests_mock.get(BASE + "ThresholdInformation", json=THRESHOLD)
    env = {
        "INFIMA_AUTOTASK_USERNAME": USERNAME,
        "INFIMA_AUTOTASK_INTEGRATION_CODE": CODE,
        "INFIMA_AUTOTASK_SECRET": SECRET,
    }
    check(invoke, "connect", env=env)


@pytest.mark.parametrize(
    "answer",
    [
        {"status_code": 401, "text": ""},
        {"status_code": 500, "json": ECHO_SECRET},
        {"status_code": 403, "json": ECHO_SECRET},
        {"status_code": 200, "text": f"<html>{SECRET}</html>"},
        {"status_code": 503, "json": {"message": SECRET}},
    ],
)
def test_connect_rejected(check, invoke, requests_mock, memkeyring, answer):
    requests_mock.get(DEFAULT_ZONE_URL, json=ZONE)
    requests_mock.get(BASE + "ThresholdInformation", **answer)
    result = check(
        invoke,
        *connect_args(),
        input=SECRET + "\n",
        env={"INFIMA_AUTOTASK_API_URL": API_URL},
        exit_code=3,
    )
    assert result.stderr.splitlines()[-1].startswith("Error: ")


def test_connect_foreign_zone(check, invoke, requests_mock, memkeyring):
    requests_mock.get(DEFAULT_ZONE_URL, json={"url": "https://evil.example.com/"})
    check(invoke, *connect_args(), input=SECRET + "\n", exit_code=3)


def test_connect_broken_keyring(check, invoke, requests_mock):
    keyring.set_keyring(DbusKeyring())
    requests_mock.get(DEFAULT_ZONE_URL, json=ZONE)
    requests_mock.get(BASE + "ThresholdInformation", json=THRESHOLD)
    check(invoke, *connect_args(), input=SECRET + "\n", exit_code=2)


# --- connect --infima ------------------------------------------------------------------


def test_connect_infima_success(check, invoke, requests_mock, memkeyring):
    requests_mock.get(INFIMA + "/v1/partner", json=PARTNER)
    result = check(invoke, "connect", "--infima", "--api-key-stdin", input=API_KEY + "\n")
    assert "INFIMA: Connected" in result.stdout


def test_connect_infima_on_a_terminal(check, invoke, requests_mock, memkeyring, monkeypatch):
    monkeypatch.setattr("infima_autotask.cli._common.can_prompt", lambda: True)
    requests_mock.get(INFIMA + "/v1/partner", json=PARTNER)
    check(invoke, "connect", "--infima", input=API_KEY + "\n")


@pytest.mark.parametrize(
    "answer",
    [
        {"status_code": 401, "json": ECHO_KEY},
        {"status_code": 400, "json": {"errors": [f"bad key {API_KEY}"]}},
        {"status_code": 200, "json": {"partner": API_KEY}},
    ],
)
def test_connect_infima_rejected(check, invoke, requests_mock, memkeyring, answer):
    requests_mock.get(INFIMA + "/v1/partner", **answer)
    check(invoke, "connect", "--infima", "--api-key-stdin", input=API_KEY + "\n", exit_code=3)


# --- status ----------------------------------------------------------------------------


def test_status_success(check, invoke, requests_mock, stored_creds, config_path):
    write_config(config_path, make_config())
    requests_mock.get(BASE + "ThresholdInformation", json=THRESHOLD)
    requests_mock.get(INFIMA + "/v1/partner", json=PARTNER)
    result = check(invoke, "status")
    assert "Connected" in result.stdout
    result = check(invoke, "status", "--json")
    assert '"ok": true' in result.stdout


def test_status_with_env_credentials_and_zone_lookup(check, invoke, requests_mock, config_path):
    write_config(config_path, make_config(autotask={"api_url": None}))
    requests_mock.get(DEFAULT_ZONE_URL, json=ZONE)
    requests_mock.get(BASE + "ThresholdInformation", json=THRESHOLD)
    requests_mock.get(INFIMA + "/v1/partner", json=PARTNER)
    env = {"INFIMA_AUTOTASK_SECRET": SECRET, "INFIMA_API_KEY": API_KEY}
    check(invoke, "status", env=env)


def test_status_failing(check, invoke, requests_mock, stored_creds, config_path):
    write_config(config_path, make_config())
    requests_mock.get(BASE + "ThresholdInformation", status_code=500, json=ECHO_SECRET)
    requests_mock.get(INFIMA + "/v1/partner", status_code=401, json=ECHO_KEY)
    result = check(invoke, "status", exit_code=3)
    assert "not connected" in result.stdout
    result = check(invoke, "status", "--json", exit_code=3)
    assert '"ok": false' in result.stdout


def test_status_broken_keyring(check, invoke, requests_mock, config_path):
    keyring.set_keyring(DbusKeyring())
    write_config(config_path, make_config())
    check(invoke, "status", exit_code=2)


# --- validate --------------------------------------------------------------------------


def test_validate_success_and_failure(check, invoke, config_path, stored_creds):
    write_config(config_path, make_config())
    assert check(invoke, "validate").stdout == "config OK: 0 mappings\n"
    write_config(config_path, make_config(version=3, extra="x"))
    check(invoke, "validate", exit_code=2)


def test_validate_with_secrets_in_the_environment(check, invoke, config_path):
    write_config(config_path, make_config())
    env = {"INFIMA_AUTOTASK_SECRET": SECRET, "INFIMA_API_KEY": API_KEY}
    check(invoke, "validate", env=env)
