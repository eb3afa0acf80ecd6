"""Shared fixtures: a clean environment, an in-memory keyring, a config in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import keyring
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, settings

from infima_autotask.cli import cli
from infima_autotask.memkeyring import MemoryKeyring

API_URL = "https://webservices5.autotask.net/ATServicesRest/"
BASE = API_URL + "v1.0/"
INFIMA = "https://app.infimasecapis.com"
USERNAME = "sync-api@example.com"
CODE = "ABCDEFGHIJKLMNOPQRSTUVWXYZ1"
SECRET = "s3cr3t-Autotask-P@ss"
API_KEY = "infima-key-9f8e7d6c5b4a"

# Every property-based test runs under one named profile, registered and loaded here once:
# "ci" (the default, 200 examples a property) or the deep run, HYPOTHESIS_PROFILE=local (1,000).
_HEALTH = [
    HealthCheck.function_scoped_fixture,  # only the autouse clean_env; examples share nothing
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
]
settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=_HEALTH)
settings.register_profile("local", max_examples=1000, deadline=None, suppress_health_check=_HEALTH)
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(HYPOTHESIS_PROFILE)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No INFIMA_* variable or real keyring of the developer leaks into a test."""
    for name in list(os.environ):
        if name.startswith("INFIMA_") or name == "PYTHON_KEYRING_BACKEND":
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state-home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config-home"))
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def memkeyring(clean_env):
    return clean_env


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def config_path(tmp_path) -> Path:
    return tmp_path / "config.yaml"


def make_config(mappings=None, **sections):
    """A config document with stored credentials and the given mappings and sections."""
    doc = {
        "version": 1,
        "state_dir": None,
        "autotask": {"username": USERNAME, "integration_code": CODE, "api_url": API_URL},
        "infima": {"api_url": INFIMA},
        "sync": {},
        "mappings": mappings or [],
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return doc


def write_config(path: Path, doc) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def stored_creds(memkeyring):
    memkeyring.set_password("infima-autotask", USERNAME, SECRET)
    memkeyring.set_password("infima-autotask", "infima-api-key", API_KEY)
    return memkeyring


@pytest.fixture
def seams():
    """What ``invoke`` hands the CLI as its outside world (click's ``obj``): fixtures set
    ``clock``, ``retry`` or ``sleep`` here instead of patching the tool's modules."""
    return {}


@pytest.fixture
def invoke(runner, config_path, seams):
    """Run the real CLI with --config pointing at the test's config file."""
    from infima_autotask.runtime import Seams

    def run(*args, input=None, env=None):
        return runner.invoke(
            cli,
            ["--config", str(config_path), *args],
            input=input,
            env=env,
            obj=Seams(**seams),
            catch_exceptions=False,
        )

    return run


# -- sync against the requests-mock Autotask of fake_autotask.py ------------------------------
# fake_autotask imports this module, so it is imported inside the fixtures, not at the top.


@pytest.fixture
def no_backoff(seams):
    """Retries without waiting."""
    from infima_autotask.http import RetryPolicy

    seams["retry"] = lambda: RetryPolicy(base_delay=0.0, max_delay=0.0)


@pytest.fixture
def state_dir(tmp_path) -> Path:
    """Where the tool keeps its history under clean_env's XDG_STATE_HOME."""
    return tmp_path / "state-home" / "infima-autotask"


@pytest.fixture
def fake(requests_mock, seams):
    """A fake Autotask (``fake_autotask.FakeAutotask``) answering every request of a sync.

    Its data is for 2026-12 (``fake_autotask.PERIOD``): the run's clock stands at noon UTC on
    2026-12-01, so that month stays "this month" whatever day the tests run.
    """
    from datetime import datetime, timezone

    from fake_autotask import FakeAutotask

    seams["clock"] = lambda: datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
    return FakeAutotask().install(requests_mock)


@pytest.fixture
def counts(tmp_path):
    """Writes tmp_path/counts.csv from ``{client_id: active_users}``; returns its path."""
    from fake_autotask import write_counts

    return lambda users: write_counts(tmp_path / "counts.csv", users)


@pytest.fixture
def setup(config_path, counts, fake, stored_creds):
    """(Re)writes the counts file and a config mapping every client in it to the fake."""
    from fake_autotask import write_sync_config

    def make(users: dict[int, int], **options) -> None:
        write_sync_config(config_path, counts(users), users, **options)

    return make


@pytest.fixture
def sandbox():
    """The loopback sandbox (Autotask and INFIMA over real HTTP), stopped after the test."""
    from infima_autotask.sandbox import Sandbox

    with Sandbox() as sb:
        yield sb


@pytest.fixture
def sandbox_env(sandbox, tmp_path):
    """The sandbox's credentials and addresses as INFIMA_* variables, history in tmp_path."""
    from sandbox_cli import env_for

    return env_for(sandbox, tmp_path / "state")
