"""End to end: the installed console script, as a subprocess, against the sandbox over real HTTP.

Real file keyring (keyrings.alt in a temporary HOME), real SQLite history, real config file.
Every Autotask request the tool sends is checked against the official Swagger description.
"""

from __future__ import annotations

import sqlite3
import subprocess
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml
from sandbox_cli import EXE, connect_steps, map_all, subprocess_env
from swagger_contract import SWAGGER, check_request

from infima_autotask.sandbox import Sandbox, data

THIS_MONTH = date.today().replace(day=1)
NEXT_MONTH = (THIS_MONTH + timedelta(days=32)).replace(day=1)

SEED = data.seed_mappings()


class Tool:
    """Runs the installed ``infima-autotask`` with an environment of its own."""

    def __init__(self, sandbox: Sandbox, tmp: Path) -> None:
        self.sandbox = sandbox
        self.tmp = tmp
        self.config = tmp / "config.yaml"
        self.state = tmp / "state"
        home = tmp / "home"
        self.env = {
            **subprocess_env(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "INFIMA_AUTOTASK_CONFIG": str(self.config),
            "INFIMA_AUTOTASK_STATE_DIR": str(self.state),
            "INFIMA_AUTOTASK_ZONE_URL": sandbox.zone_url,
            "INFIMA_API_URL": sandbox.infima_url,
        }
        self.outputs: list[str] = []

    def run(self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None):
        result = subprocess.run(
            [str(EXE), *args],
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env or self.env,
            timeout=120,
        )
        self.outputs += [result.stdout, result.stderr]
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def connect(self) -> None:
        autotask, infima = (
            self.run(*args, stdin=stdin) for args, stdin in connect_steps(self.sandbox)
        )
        assert autotask.returncode == 0, autotask.stderr
        assert "Autotask: Connected" in autotask.stdout
        assert infima.returncode == 0, infima.stderr
        assert "INFIMA: Connected" in infima.stdout and "Sandbox MSP" in infima.stdout

    def map_all(self) -> None:
        for result in map_all(self.run, SEED):
            assert result.returncode == 0, result.stderr

    def assert_no_secrets(self) -> None:
        sb = self.sandbox
        texts = [*self.outputs, self.config.read_text(encoding="utf-8")]
        db = self.state / "history.sqlite3"
        if db.exists():
            with sqlite3.connect(db) as conn:
                for table in ("runs", "items"):
                    texts += [repr(row) for row in conn.execute(f"SELECT * FROM {table}")]  # noqa: S608
        for text in texts:
            assert sb.secret not in text
            assert sb.api_key not in text


@pytest.fixture
def tool(tmp_path):
    if not SWAGGER.exists():
        pytest.skip(f"the official Swagger description is not at {SWAGGER}")
    with Sandbox() as sandbox:
        tool = Tool(sandbox, tmp_path)
        yield tool
        tool.assert_no_secrets()
        # The contract test: every Autotask request against the official description.
        autotask = [r for r in sandbox.requests if r.service == "autotask"]
        assert autotask, "no Autotask request was made"
        for record in autotask:
            check_request(record.method, record.path, record.body)
        # Credentials only ever went to the two sandbox hosts, over loopback.
        for record in sandbox.requests:
            assert record.host.split(":")[0] in {"127.0.0.1", "localhost"}


def test_whole_month_writes_once(tool):
    sb = tool.sandbox
    tool.connect()
    config = yaml.safe_load(tool.config.read_text(encoding="utf-8"))
    assert config["autotask"]["username"] == sb.username
    assert sb.secret not in tool.config.read_text(encoding="utf-8")
    assert (tool.config.stat().st_mode & 0o777) == 0o600

    clients = tool.run("list-clients")
    assert clients.returncode == 0, clients.stderr
    assert "Acme Dental" in clients.stdout and "Evergreen Realty" in clients.stdout

    accounts = tool.run("search-accounts", "acme", "--contracts")
    assert accounts.returncode == 0, accounts.stderr
    assert str(data.ACME_CONTRACT_SERVICE_ID) in accounts.stdout

    tool.map_all()

    plan = tool.run("sync", "--dry-run", "--detailed-exitcode")
    assert plan.returncode == 4, plan.stdout + plan.stderr
    assert sb.adjustments() == []

    first = tool.run("sync")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "3 updated, 2 unchanged, 0 skipped, 0 held, 0 failed" in first.stderr
    assert "Evergreen" in first.stderr  # the unmapped client with active users is named
    assert sb.units_on(data.ACME_CONTRACT_SERVICE_ID, THIS_MONTH) == 12
    assert sb.units_on(data.COBALT_CONTRACT_SERVICE_ID, THIS_MONTH) == 31
    assert sb.units_on(data.BIRCH_CONTRACT_SERVICE_ID, THIS_MONTH) == 25
    # Granite is billed from the 17th: its write is dated the 17th, the 1st is untouched.
    granite = THIS_MONTH.replace(day=data.GRANITE_START_DAY)
    assert sb.units_on(data.GRANITE_CONTRACT_SERVICE_ID, granite) == 14
    assert sb.units_on(data.GRANITE_CONTRACT_SERVICE_ID, granite - timedelta(days=1)) == 12
    assert {a["storedDate"] for a in sb.adjustments()} == {
        THIS_MONTH.isoformat(),
        granite.isoformat(),
    }
    assert len(sb.adjustments()) == 3

    again = tool.run("sync")
    assert again.returncode == 0, again.stderr
    assert "0 updated, 5 unchanged" in again.stderr
    assert len(sb.adjustments()) == 3  # nothing written twice

    history = tool.run("history", "--json")
    assert history.returncode == 0
    rows = yaml.safe_load(history.stdout)  # JSON is YAML
    assert {row["status"] for row in rows} >= {"updated", "unchanged", "planned"}

    check = tool.run("list-mappings", "--check")
    assert check.returncode == 0, check.stdout + check.stderr


def test_next_month_follows_the_new_counts(tool):
    sb = tool.sandbox
    tool.connect()
    tool.map_all()
    assert tool.run("sync").returncode == 0
    with sb.state.lock:
        sb.state.infima_clients[data.ACME_CLIENT_ID].active = 15
    month = NEXT_MONTH.strftime("%Y-%m")
    result = tool.run("sync", "--month", month)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sb.units_on(data.ACME_CONTRACT_SERVICE_ID, NEXT_MONTH) == 15
    assert sb.units_on(data.ACME_CONTRACT_SERVICE_ID, THIS_MONTH) == 12
    assert sb.adjustments()[-1]["effectiveDate"].startswith(NEXT_MONTH.isoformat())


def test_renewal_found_by_check_and_fixed_by_map(tool):
    sb = tool.sandbox
    tool.connect()
    doc = yaml.safe_load(tool.config.read_text(encoding="utf-8"))
    doc["mappings"] = [
        {
            "client_id": data.DELTA_CLIENT_ID,
            "client_name": "Delta Vets",
            "account_id": data.DELTA_ACCOUNT_ID,
            "account_name": "Delta Veterinary Group",
            "contract_id": data.DELTA_OLD_CONTRACT_ID,
            "contract_name": "old",
            "contract_service_id": data.DELTA_OLD_CONTRACT_SERVICE_ID,
            "service_id": data.SERVICE_ID,
            "service_name": data.SERVICE_NAME,
            "exclude_users": 1,
        }
    ]
    tool.config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    synced = tool.run("sync")
    assert synced.returncode == 1
    assert str(data.DELTA_RENEWAL_CONTRACT_ID) in synced.stdout + synced.stderr
    assert sb.adjustments() == []

    check = tool.run("list-mappings", "--check")
    assert check.returncode == 1
    command = (
        f"infima-autotask map {data.DELTA_CLIENT_ID} --account {data.DELTA_ACCOUNT_ID} "
        f"--contract {data.DELTA_RENEWAL_CONTRACT_ID} "
        f"--contract-service {data.DELTA_RENEWAL_CONTRACT_SERVICE_ID}"
    )
    assert command in check.stdout + check.stderr
    remap = tool.run(*command.split()[1:])
    assert remap.returncode == 0, remap.stderr
    mapping = yaml.safe_load(tool.config.read_text(encoding="utf-8"))["mappings"][0]
    assert mapping["contract_id"] == data.DELTA_RENEWAL_CONTRACT_ID
    assert mapping["exclude_users"] == 1  # overrides survive a re-map
    assert tool.run("list-mappings", "--check").returncode == 0

    result = tool.run("sync")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sb.units_on(data.DELTA_RENEWAL_CONTRACT_SERVICE_ID, THIS_MONTH) == 7  # 8 - 1 excluded


def test_cron_like_run_with_environment_credentials(tool):
    sb = tool.sandbox
    tool.config.write_text(
        yaml.safe_dump({"version": 1, "mappings": SEED}, sort_keys=False), encoding="utf-8"
    )
    cron_env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tool.tmp / "home"),
        "SHELL": "/bin/sh",
        "INFIMA_AUTOTASK_CONFIG": str(tool.config),
        "INFIMA_AUTOTASK_STATE_DIR": str(tool.state),
        "INFIMA_AUTOTASK_ZONE_URL": sb.zone_url,
        "INFIMA_API_URL": sb.infima_url,
        "INFIMA_AUTOTASK_USERNAME": sb.username,
        "INFIMA_AUTOTASK_SECRET": sb.secret,
        "INFIMA_AUTOTASK_INTEGRATION_CODE": sb.integration_code,
        "INFIMA_API_KEY": sb.api_key,
        # No desktop session under cron: a keyring that always fails must not matter.
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
    }
    first = tool.run("sync", "--if-due", "--quiet", env=cron_env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout == "" and first.stderr == ""
    assert len(sb.adjustments()) == 3

    second = tool.run("sync", "--if-due", "--quiet", env=cron_env)
    assert (second.returncode, second.stdout, second.stderr) == (0, "", "")
    assert len(sb.adjustments()) == 3

    # Without the environment variables the failing keyring is named, with both fixes.
    bare = {k: v for k, v in cron_env.items() if k != "INFIMA_AUTOTASK_SECRET"}
    nothing_due = tool.run("sync", "--if-due", env=bare)
    assert nothing_due.returncode == 0  # nothing due: no credentials needed
    forced = tool.run("sync", "--dry-run", env=bare)
    assert forced.returncode == 2
    assert forced.stderr.startswith("Error: ")
    assert "INFIMA_AUTOTASK_SECRET" in forced.stderr and "keyrings.cryptfile" in forced.stderr
