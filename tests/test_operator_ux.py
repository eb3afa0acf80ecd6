"""What an operator meets first: keyrings on a server, errors that say what to do next."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import keyring
import pytest
from conftest import API_URL, BASE, CODE, SECRET, USERNAME, make_config, write_config
from keyring.backend import KeyringBackend

from infima_autotask.autotask import DEFAULT_ZONE_URL
from infima_autotask.cli import cli
from infima_autotask.credentials import KEYRING_SERVICE, autotask_credentials
from infima_autotask.errors import CredentialsError
from infima_autotask.sandbox import data

ZONE = {"zoneName": "AE02", "url": API_URL, "webUrl": "https://ww5.autotask.net/", "ci": 5}
THRESHOLD = {
    "externalRequestThreshold": 10000,
    "requestThresholdTimeframe": 60,
    "currentTimeframeRequestCount": 124,
}


class FileKeyring(KeyringBackend):
    """Behaves like keyrings.cryptfile 1.3.9: locked until ``keyring_key`` is set or asked."""

    priority = 1
    file_path = "/home/op/.local/share/python_keyring/cryptfile_pass.cfg"

    def __init__(self, password: str = "file-keyring-pw") -> None:  # noqa: S107
        super().__init__()
        self._keyring_key: str | None = None
        self._password = password
        self._store: dict[tuple[str, str], str] = {}
        self.asked = False

    @property
    def keyring_key(self) -> str:
        if self._keyring_key is None:
            self.asked = True
            raise EOFError  # getpass with no terminal and nothing on stdin
        return self._keyring_key

    @keyring_key.setter
    def keyring_key(self, key: str) -> None:
        if key != self._password:
            raise ValueError("Incorrect Password")
        self._keyring_key = key

    def get_password(self, service: str, username: str) -> str | None:
        if (service, username) not in self._store:
            return None  # the real one decrypts, and so needs the password, only a stored entry
        self.keyring_key  # noqa: B018 - unlocks or fails, as the real one does
        return self._store[(service, username)]

    def set_password(self, service: str, username: str, password: str) -> None:
        self.keyring_key  # noqa: B018
        self._store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self._store.pop((service, username), None)


@pytest.fixture
def file_keyring(clean_env):
    backend = FileKeyring()
    backend._store[(KEYRING_SERVICE, USERNAME)] = SECRET
    keyring.set_keyring(backend)
    return backend  # conftest's clean_env restores the previous keyring


def test_importing_the_cli_does_not_make_the_demo_keyring_a_default(tmp_path):
    """On a server without a keyring, `connect` once 'stored' secrets in memory and lost them."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_KEYRING_BACKEND"}
    env["HOME"] = str(tmp_path)  # no keyringrc.cfg of the developer
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    code = (
        "import infima_autotask.cli, keyring.backend\n"
        "print([type(k).__name__ for k in keyring.backend.get_all_keyring()])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "MemoryKeyring" not in out
    assert "Keyring" in out  # the list itself was printed


def test_file_keyring_opens_with_the_password_from_the_environment(file_keyring):
    env = {"KEYRING_CRYPTFILE_PASSWORD": "file-keyring-pw"}
    assert autotask_credentials(USERNAME, CODE, env).secret == SECRET
    assert not file_keyring.asked


def test_file_keyring_without_password_and_terminal_says_what_to_set(
    file_keyring, invoke, config_path
):
    write_config(config_path, make_config())
    result = invoke("search-accounts", "acme")
    assert result.exit_code == 2
    first = result.stderr.splitlines()[0]
    assert first.startswith("Error: The encrypted keyring file needs its password")
    assert "KEYRING_CRYPTFILE_PASSWORD" in first
    assert "Traceback" not in result.output and "Aborted" not in result.output
    assert not file_keyring.asked  # never prompted where no one can answer


def test_file_keyring_with_a_wrong_password_is_an_error_not_a_traceback(
    file_keyring, invoke, config_path
):
    write_config(config_path, make_config())
    result = invoke("search-accounts", "acme", env={"KEYRING_CRYPTFILE_PASSWORD": "typo"})
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"Error: The encrypted keyring file {FileKeyring.file_path} did not open: wrong password."
    )
    assert "typo" not in result.output


def test_connect_stores_into_a_file_keyring_unlocked_from_the_environment(
    file_keyring, invoke, config_path, requests_mock
):
    requests_mock.get(DEFAULT_ZONE_URL, json=ZONE)
    requests_mock.get(BASE + "ThresholdInformation", json=THRESHOLD)
    requests_mock.post(BASE + "InternalLocations/query", json={"items": []})
    result = invoke(
        "connect",
        "--username",
        "other@example.com",
        "--integration-code",
        CODE,
        "--secret-stdin",
        input="new-secret-value\n",
        env={"KEYRING_CRYPTFILE_PASSWORD": "file-keyring-pw"},
    )
    assert result.exit_code == 0, result.output
    assert file_keyring._store[(KEYRING_SERVICE, "other@example.com")] == "new-secret-value"


def _commands():
    return [(name, [name]) for name in cli.commands] + [("(root)", [])]


@pytest.mark.parametrize(("name", "args"), _commands(), ids=[n for n, _ in _commands()])
def test_every_help_ends_with_its_example_block(runner, name, args):
    """SPEC §2: `-h` and `--help` show the help, which ends with `Example:` (it used to sit
    above the options) and command lines, at least one running this very command."""
    result = runner.invoke(cli, [*args, "--help"])
    assert result.exit_code == 0
    assert runner.invoke(cli, [*args, "-h"]).stdout == result.stdout
    text = result.stdout.rstrip("\n")
    tail = text.split("\n\n")[-1].splitlines()
    assert tail[0].strip() == "Example:", text
    assert len(tail) > 1, text
    assert all(line.strip().startswith("infima-autotask") for line in tail[1:]), text
    assert not args or any(name in line.split() for line in tail[1:]), text
    assert "Options:" in text.split("Example:")[0]


# --- map on a terminal, against the sandbox --------------------------------------------


@pytest.fixture
def terminal(monkeypatch):
    monkeypatch.setattr("infima_autotask.cli._common.can_prompt", lambda: True)


def test_map_on_a_terminal_names_the_contract_before_asking_for_the_service(
    invoke, config_path, sandbox_env, terminal
):
    write_config(config_path, make_config(autotask={"username": "x"}))
    result = invoke(
        "map",
        str(data.ACME_CLIENT_ID),
        "--account",
        str(data.ACME_ACCOUNT_ID),
        input="3\nabc\n" + f"{data.ACME_CONTRACT_SERVICE_ID}\n",
        env=sandbox_env,
    )
    assert result.exit_code == 0, result.output
    err = result.stderr
    # the contract taken alone is said before the list it belongs to, not after the answer
    assert err.index("Taking the only contract: 29684001") < err.index("Choose the contract")
    assert err.count("Type a number from 1 to 2") == 2  # for "3" and for "abc"
    assert "not a valid integer range" not in err
    # the ID itself is accepted as an answer
    assert f"contract service {data.ACME_CONTRACT_SERVICE_ID} " in result.stdout
    assert "(1 changed, 1 mapping in all)" in err


def test_list_mappings_with_none_says_how_to_map(invoke, config_path):
    write_config(config_path, make_config())
    result = invoke("list-mappings")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr.startswith(f"No mappings in {config_path} yet.")
    assert "infima-autotask map CLIENT_ID --account ID" in result.stderr
    assert invoke("list-mappings", "--json").stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["connect", "--infima"], "Pipe it in with --api-key-stdin, or set INFIMA_API_KEY."),
        (["connect", "--secret-stdin"], "Pass --username, or set INFIMA_AUTOTASK_USERNAME."),
        (
            ["connect", "--username", USERNAME, "--secret-stdin"],
            "Pass --integration-code, or set INFIMA_AUTOTASK_INTEGRATION_CODE.",
        ),
    ],
)
def test_connect_without_a_terminal_names_the_option_to_use(invoke, config_path, args, hint):
    result = invoke(*args, input=SECRET + "\n")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and result.stderr.rstrip().endswith(hint)


def test_connect_infima_with_a_rejected_key_says_what_to_do(invoke, config_path, sandbox):
    result = invoke(
        "connect",
        "--infima",
        "--api-key-stdin",
        input="not-the-key\n",
        env={"INFIMA_API_URL": sandbox.infima_url},
    )
    assert result.exit_code == 3
    assert result.stderr.startswith("Error: INFIMA rejected the API key (HTTP 401")
    assert result.stderr.rstrip().endswith("then run `infima-autotask connect --infima` again.")
    assert "not-the-key" not in result.output


class Chain(KeyringBackend):
    """Like keyring's ChainerBackend: what keyring picks when several backends are viable."""

    priority = 10

    def __init__(self, *members: KeyringBackend) -> None:
        super().__init__()
        self.backends = list(members)

    def get_password(self, service: str, username: str) -> str | None:
        for member in self.backends:
            found = member.get_password(service, username)
            if found is not None:
                return found
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        self.backends[0].set_password(service, username, password)

    def delete_password(self, service: str, username: str) -> None:
        pass


def test_a_chained_file_keyring_is_opened_from_the_environment_too(clean_env, tmp_path):
    """Without PYTHON_KEYRING_BACKEND, keyring chains cryptfile's backends; cron got 'Aborted!'."""
    stored = FileKeyring()
    stored.file_path = str(tmp_path / "cryptfile_pass.cfg")
    (tmp_path / "cryptfile_pass.cfg").write_text("[keyring-setting]\n", encoding="utf-8")
    stored._store[(KEYRING_SERVICE, USERNAME)] = SECRET
    absent = FileKeyring()  # its file does not exist: left alone, no file created
    absent.file_path = str(tmp_path / "crypted_pass.cfg")
    keyring.set_keyring(Chain(absent, stored))

    env = {"KEYRING_CRYPTFILE_PASSWORD": "file-keyring-pw"}
    assert autotask_credentials(USERNAME, CODE, env).secret == SECRET
    assert absent._keyring_key is None and not absent.asked

    stored._keyring_key = None
    with pytest.raises(CredentialsError, match="needs its password and no terminal"):
        autotask_credentials(USERNAME, CODE, {})
    assert not stored.asked


def test_standalone_sandbox_prints_lines_a_shell_can_paste(invoke, config_path, memkeyring):
    """`python -m infima_autotask.sandbox`: export lines and the answers for connect."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "infima_autotask.sandbox"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not lines or not lines[-1].startswith("#   export INFIMA_API_KEY="):
            lines.append(proc.stdout.readline().rstrip("\n"))
        assert lines[0] == "infima-autotask sandbox running (Ctrl-C to stop)"
        env = dict(
            line.removeprefix("export ").split("=", 1)
            for line in lines
            if line.startswith("export ")
        )
        assert set(env) == {"INFIMA_AUTOTASK_ZONE_URL", "INFIMA_API_URL"}
        answers = {
            label: value
            for line in lines
            if line.startswith("#   ") and not line.startswith("#   export")
            for label, value in [line[4:].rsplit(None, 1)]
        }
        result = invoke(
            "connect",
            "--username",
            answers["username"],
            "--integration-code",
            answers["integration code"],
            "--secret-stdin",
            input=answers["secret"] + "\n",
            env=env,
        )
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("Autotask: Connected (zone ")
        result = invoke(
            "connect",
            "--infima",
            "--api-key-stdin",
            input=answers["INFIMA API key"] + "\n",
            env=env,
        )
        assert result.exit_code == 0, result.output
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    assert out.strip().endswith("stopped")
