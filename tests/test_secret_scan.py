"""Secret scan (issue 7, part 3): every command at -vv, in success and failure paths.

Each (command, path) runs the real CLI in-process against the sandbox over real loopback HTTP
(or, for servers that echo credentials back, requests-mock), with known Autotask secret and
INFIMA key values; the notification paths (issue 13) add the tokens of a webhook URL and a
healthcheck URL and an SMTP password, sent to real loopback receivers that accept, refuse or
fail. Afterwards the secret and the key are searched for in: stdout, stderr
(which carries the -vv log), every log record as emitted (before the CLI's redacting
handler), the text of every exception raised anywhere in the tool's threads while the
command ran (``sys.settrace``), the history database (every table, every row, and the raw
bytes of the database and its journal files), the config file and every other file written
under the temporary folders. The only file allowed to hold them is none: the keyring is the
in-memory one of conftest.

The sandbox's request log then shows where credentials went: Autotask's only to the Autotask
server, INFIMA's only to the INFIMA server, and plain http only to loopback. Finally, TLS
verification cannot be turned off: empty ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` still give
``verify=True``, and neither ``HttpClient`` nor any command offers a switch.
"""

from __future__ import annotations

import base64
import contextlib
import inspect
import logging
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, SimpleNamespace
from typing import Any

import pytest
import requests_mock as rm
import yaml
from click.testing import CliRunner
from conftest import API_KEY, API_URL, BASE, CODE, INFIMA, SECRET, USERNAME

import infima_autotask
from infima_autotask.autotask import DEFAULT_ZONE_URL
from infima_autotask.cli import cli
from infima_autotask.http import HttpClient
from infima_autotask.sandbox import Sandbox, cw_data, data, halo_data

SEED = data.seed_mappings()[:3]  # Acme, Birch, Cobalt
MAPPING = {
    "client_id": 101,
    "account_id": 5001,
    "contract_id": 6001,
    "contract_service_id": 7101,
    "service_id": 30012,
}
WRONG_SECRET = "Wr0ng-Autotask-Secret-7c1d"  # a rejected secret is a secret too
WRONG_KEY = "wrong-infima-key-0b9e8f"

SCANNED: list[tuple[str, str]] = []  # (command, path), for the README figure


# --- capture -----------------------------------------------------------------------------


class RawRecords(logging.Handler):
    """Every record of the package's loggers as formatted at emit time, before redaction."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def exceptions_raised(*, own_only: bool = False) -> Iterator[list[str]]:
    """The text (str and repr, with notes and args) of every exception raised in tool threads.

    Sandbox server threads are skipped: the sandbox is the other side, not the tool. With
    ``own_only``, only the tool's own exception classes: requests and urllib3 name the URL
    they were given in their own exception objects (a webhook's token is its path), which the
    tool never prints.
    """
    texts: list[str] = []

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "exception":
            name = threading.current_thread().name
            if (
                "process_request_thread" not in name
                and not name.startswith("sandbox-")
                and (not own_only or type(arg[1]).__module__.startswith("infima_autotask"))
            ):
                exc = arg[1]
                try:
                    texts.append(f"{type(exc).__name__}: {exc!s} {exc!r} {exc.args!r}")
                    texts.extend([str(getattr(exc, "message", "")), *getattr(exc, "details", [])])
                except Exception as err:  # noqa: BLE001 - a broken __str__ is still a finding
                    texts.append(f"unprintable {type(exc).__name__}: {err!r}")
        return tracer

    previous = sys.gettrace()
    threading.settrace(tracer)
    sys.settrace(tracer)
    try:
        yield texts
    finally:
        sys.settrace(previous)
        threading.settrace(None)  # type: ignore[arg-type]


def files_under(*folders: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for folder in folders:
        if folder.is_dir():
            for path in folder.rglob("*"):
                if path.is_file():
                    found[str(path)] = path.read_bytes()
    return found


def database_rows(*folders: Path) -> list[str]:
    """Every row of every table of every SQLite file the tool wrote."""
    rows: list[str] = []
    for folder in folders:
        for path in folder.rglob("*.sqlite3") if folder.is_dir() else []:
            with sqlite3.connect(path) as conn:
                tables = [
                    t
                    for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                ]
                for table in tables:
                    if table.startswith("sqlite_"):
                        continue
                    cursor = conn.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - our names
                    rows += [repr(row) for row in cursor]
            assert tables, path
    return rows


@dataclass
class Scan:
    """Runs commands at -vv and checks every place a secret could end up."""

    tmp: Path
    env: dict[str, str]
    secrets: tuple[str, ...]
    raw: RawRecords = field(default_factory=RawRecords)
    exceptions_seen: int = 0
    # Secrets the config file itself holds by design (webhook and healthcheck URLs, SPEC §11):
    # allowed there, and nowhere else.
    in_config: tuple[str, ...] = ()

    @property
    def config(self) -> Path:
        return self.tmp / "config" / "config.yaml"

    def run(
        self,
        path: str,
        *args: str,
        code: int | tuple[int, ...] = 0,
        stdin: str | None = None,
        own_exceptions_only: bool = False,
    ) -> Any:
        command = _command_name(args)
        loggers = [
            logging.getLogger(name)
            for name in list(logging.root.manager.loggerDict)
            if name.startswith("infima_autotask")
        ]
        self.raw.lines.clear()
        for logger in loggers:
            logger.addHandler(self.raw)
        try:
            with exceptions_raised(own_only=own_exceptions_only) as raised:
                result = CliRunner().invoke(
                    cli,
                    ["-vv", "--config", str(self.config), *args],
                    env=self.env,
                    input=stdin,
                    catch_exceptions=False,
                )
        finally:
            for logger in loggers:
                logger.removeHandler(self.raw)
        codes = (code,) if isinstance(code, int) else code
        assert result.exit_code in codes, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        assert "DEBUG" in result.stderr or command == "demo" or not self.raw.lines
        self.check(
            {
                "stdout": result.stdout,
                "stderr": result.stderr,
                "log records": "\n".join(self.raw.lines),
                "exceptions": "\n".join(raised),
            },
            what=f"{command} ({path})",
        )
        self.exceptions_seen += len(raised)
        SCANNED.append((command, path))
        return result

    def check(self, texts: dict[str, str], *, what: str) -> None:
        files = files_under(self.tmp)
        texts = {
            **texts,
            "database rows": "\n".join(database_rows(self.tmp)),
            **{name: blob.decode("utf-8", "replace") for name, blob in files.items()},
        }
        config = str(self.config)
        for where, text in texts.items():
            for secret in self.secrets:
                if where == config and secret in self.in_config:
                    continue
                assert secret not in text, f"{what}: a secret in {where}"
        for name, blob in files.items():
            for secret in self.secrets:
                if name == config and secret in self.in_config:
                    continue
                assert secret.encode() not in blob, f"{what}: a secret in {name}"


def _command_name(args: tuple[str, ...]) -> str:
    flags = {"--infima", "--check", "--dry-run", "test", "connectwise"}
    return " ".join([args[0], *(a for a in args[1:] if a in flags)])


def connect_args(secret_from_stdin: bool = True) -> tuple[str, ...]:
    base = ("connect", "--username", Sandbox.username)
    return base + (("--secret-stdin",) if secret_from_stdin else ())


@pytest.fixture
def no_sleep(monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda seconds: None)


def scan_for(tmp: Path, sb: Sandbox, **extra: str) -> Scan:
    env = {
        "INFIMA_AUTOTASK_STATE_DIR": str(tmp / "state"),
        "INFIMA_AUTOTASK_ZONE_URL": sb.zone_url,
        "INFIMA_API_URL": sb.infima_url,
        "HOME": str(tmp / "home"),
        **extra,
    }
    return Scan(tmp, env, (sb.secret, sb.api_key, WRONG_SECRET, WRONG_KEY))


def check_request_log(sb: Sandbox) -> None:
    """Credentials only to their own server, over loopback; each kind to one server only."""
    autotask_host = sb.autotask_url.split("/")[2]
    infima_host = sb.infima_url.split("/")[2]
    assert sb.requests
    for record in sb.requests:
        headers = {name.lower(): value for name, value in record.headers.items()}
        assert record.host in (autotask_host, infima_host), record.host
        assert record.host.split(":")[0] == "127.0.0.1"  # plain http: loopback only
        if "secret" in headers or "apiintegrationcode" in headers:
            assert record.service == "autotask" and record.host == autotask_host, record
            assert "x-api-key" not in headers
        if "x-api-key" in headers:
            assert record.service == "infima" and record.host == infima_host, record
            assert "secret" not in headers
        for value in headers.values():
            if record.service == "infima":
                assert sb.secret not in value and WRONG_SECRET not in value
            else:
                assert sb.api_key not in value and WRONG_KEY not in value


# --- the sandbox over real HTTP: every command, success then failure paths ---------------


def test_every_command_success_paths(tmp_path, sandbox, no_sleep):
    sb = sandbox
    scan = scan_for(tmp_path, sb)
    scan.env["INFIMA_AUTOTASK_INTEGRATION_CODE"] = sb.integration_code
    scan.run("success", *connect_args(), stdin=sb.secret + "\n")
    scan.run("success", "connect", "--infima", "--api-key-stdin", stdin=sb.api_key + "\n")
    del scan.env["INFIMA_AUTOTASK_INTEGRATION_CODE"]
    scan.run("success", "status")
    scan.run("success", "list-clients")
    scan.run("success", "search-accounts", "acme", "--contracts")
    for mapping in SEED:
        scan.run("success", *data.map_args(mapping))
    scan.run("success", "list-mappings", "--check")
    scan.run("success", "list-mappings")
    scan.run("success", "sync", "--dry-run")
    scan.run("success", "sync")
    assert len(sb.adjustments()) == 2
    scan.run("success", "history")
    scan.run("success", "report")
    scan.run("success", "report", "--format", "html", "--output", str(tmp_path / "report.html"))
    scan.run("success", "validate")
    scan.run("success", "unmap", str(data.COBALT_CLIENT_ID))
    assert yaml.safe_load(scan.config.read_text(encoding="utf-8"))["autotask"]["username"]
    check_request_log(sb)


def test_every_command_failure_paths(tmp_path, sandbox, no_sleep):
    sb = sandbox
    scan = scan_for(tmp_path, sb)
    code = ("--integration-code", sb.integration_code)
    # Rejected credentials first (nothing stored), then a working setup for the rest.
    scan.run("rejected secret", *connect_args(), *code, code=3, stdin=WRONG_SECRET + "\n")
    scan.run(
        "rejected key", "connect", "--infima", "--api-key-stdin", code=3, stdin=WRONG_KEY + "\n"
    )
    scan.run("success", *connect_args(), *code, stdin=sb.secret + "\n")
    scan.run("success", "connect", "--infima", "--api-key-stdin", stdin=sb.api_key + "\n")
    for mapping in SEED:
        scan.run("success", *data.map_args(mapping))

    wrong = {"INFIMA_AUTOTASK_SECRET": WRONG_SECRET, "INFIMA_API_KEY": WRONG_KEY}
    scan.env.update(wrong)
    scan.run("rejected credentials", "status", code=3)
    scan.run("rejected credentials", "list-clients", code=3)
    scan.run("rejected credentials", "search-accounts", "acme", code=3)
    scan.run("rejected credentials", "map", "101", "--account", str(data.ACME_ACCOUNT_ID), code=3)
    scan.run("rejected credentials", "list-mappings", "--check", code=3)
    scan.run("rejected credentials", "sync", "--dry-run", code=3)
    scan.run("rejected credentials", "sync", code=3)
    for name in wrong:
        del scan.env[name]

    sb.faults.add("infima:clients", "500-bare", times=-1)
    sb.faults.add("infima:partner", "503", times=-1)
    sb.faults.add("Companies", "500-errors", times=-1)
    sb.faults.add("Contracts", "503", times=-1)
    sb.faults.add("ThresholdInformation", "429", times=-1, retry_after=0)
    scan.run("server errors", "connect", "--infima", "--api-key-stdin", code=3, stdin=sb.api_key)
    scan.run("server errors", *connect_args(), *code, code=3, stdin=sb.secret + "\n")
    scan.run("server errors", "status", code=3)
    scan.run("server errors", "list-clients", code=3)
    scan.run("server errors", "search-accounts", "acme", code=3)
    scan.run("server errors", "map", "101", "--account", str(data.ACME_ACCOUNT_ID), code=3)
    scan.run("server errors", "list-mappings", "--check", code=3)
    scan.run("server errors", "sync", "--dry-run", code=3)
    scan.run("server errors", "sync", code=3)
    sb.faults = type(sb.faults)()  # all faults cleared

    sb.faults.add("ContractServiceAdjustments", "500-errors", times=-1)
    scan.run("write rejected", "sync", code=1)
    assert sb.adjustments() == []

    scan.run("bad input", "map", "101", "--account", "99999999", code=2)
    scan.run("bad input", "unmap", "424242", code=2)
    scan.run("bad input", "search-accounts", "   ", code=2)
    scan.run("bad input", "sync", "--client", "424242", code=2)
    scan.run("bad input", "history", "--month", "2026-13", code=2)
    scan.run("bad input", "report", "--month", "2025-01", code=2)  # no run that month
    scan.run("bad input", "connect", "--infima", "--api-key-stdin", code=2, stdin="\n")
    scan.run("bad input", "sync", "--detailed-exitcode", code=2)
    scan.run("bad input", "history", "--client", "424242")  # nothing: exit 0, no rows
    good = scan.config.read_text(encoding="utf-8")
    scan.config.write_text(good.replace("version: 1", "version: 7"), encoding="utf-8")
    scan.run("bad input", "validate", code=2)
    scan.run("bad input", "sync", code=2)
    scan.run("bad input", "status", code=2)
    scan.config.write_text(good, encoding="utf-8")
    check_request_log(sb)
    assert scan.exceptions_seen > 100  # the exception texts were really searched


def test_demo_success_path(tmp_path, monkeypatch):
    """The demo's own sandbox gets known credentials and a folder the scan can read."""
    import secrets

    known = {
        secrets.token_urlsafe: iter(["DemoSecret-3f9a1c7e5b", "DemoApiKey-8d2b6f4a0c"]),
        secrets.token_hex: iter(["DemoHaloSecret-6e0c2a94d1"]),  # the Halo client secret
    }

    def first_known(real: Any) -> Any:  # the sandbox's credentials first, then real ones
        return lambda n=None: next(known[real], None) or real(n)

    for name in ("token_urlsafe", "token_hex"):
        real = getattr(secrets, name)
        monkeypatch.setattr(f"infima_autotask.sandbox.secrets.{name}", first_known(real))
    folder = tmp_path / "demo"
    folder.mkdir()
    monkeypatch.setattr(
        "infima_autotask.cli.cmd_demo.tempfile",
        SimpleNamespace(TemporaryDirectory=lambda **kw: nullcontext(str(folder))),
    )
    scan = Scan(tmp_path, {"HOME": str(tmp_path / "home")}, ("DemoSecret-3f9a1c7e5b",))
    scan.secrets += ("DemoApiKey-8d2b6f4a0c", "DemoHaloSecret-6e0c2a94d1")
    result = scan.run("success", "demo")
    assert "Demo complete" in result.stdout
    assert (folder / "config.yaml").exists() and (folder / "state" / "history.sqlite3").exists()


# --- notifications: webhook and healthcheck tokens, the SMTP password (issue 13) ------------

HOOK_TOKEN = "T0SCAN/B0SCAN/ScanHookToken5c3a9e1f"
PING_TOKEN = "4b9d2e71-5ca7-4e0b-9f3d-scanpingtoken"
SMTP_PASSWORD = "Smtp-Scan-P@ss-8a1c2e"
WRONG_SMTP_PASSWORD = "Wrong-Smtp-P@ss-3d7f"
TROUBLED = [
    *SEED,  # Acme, Birch, Cobalt (held: max_decrease_percent 10 below)
    {
        **data.seed_mapping(data.DELTA_CLIENT_ID),  # on its ended contract: failed
        "contract_id": data.DELTA_OLD_CONTRACT_ID,
        "contract_service_id": data.DELTA_OLD_CONTRACT_SERVICE_ID,
    },
]


WRONG_CW_KEY = "Wr0ngCwPrivKey77"  # a rejected private key is a secret too


def test_connectwise_private_key_never_shows(tmp_path, sandbox, no_sleep):
    """connect --psa connectwise (accepted and rejected keys) and every ConnectWise read at -vv:
    neither the private key nor the Basic token carrying it shows anywhere, and the token goes
    only to the ConnectWise server."""
    sb = sandbox
    token = base64.b64encode(
        f"{sb.cw_company_id}+{sb.cw_public_key}:{sb.cw_private_key}".encode()
    ).decode()
    scan = scan_for(tmp_path, sb, INFIMA_API_KEY=sb.api_key)
    scan.secrets = (*scan.secrets, sb.cw_private_key, WRONG_CW_KEY, token)
    cw = (
        "connect", "--psa", "connectwise", "--site", sb.cw_site, "--company", sb.cw_company_id,
        "--public-key", sb.cw_public_key, "--client-id", sb.cw_client_id, "--private-key-stdin",
    )  # fmt: skip
    scan.run("rejected key", *cw, code=3, stdin=WRONG_CW_KEY + "\n")
    scan.run("success", *cw, stdin=sb.cw_private_key + "\n")
    scan.run("success", "search-accounts", "--psa", "connectwise", "a", "--contracts")
    scan.run("bad input", "search-accounts", "--psa", "connectwise", "   ", code=2)
    mapping = cw_data.seed_mapping()
    scan.run(
        "success", "map", str(mapping["client_id"]), "--psa", "connectwise",
        "--account", str(mapping["account_id"]), "--addition", str(mapping["addition_id"]),
    )  # fmt: skip
    scan.run("bad input", "map", "101", "--psa", "connectwise", "--account", "252", code=2)
    scan.run("success", "list-mappings", "--check")
    scan.run("success", "status")
    scan.run("success", "doctor")
    scan.run("success", "unmap", "109")
    cw_host = sb.cw_site.split("/")[2]
    cw_requests = [r for r in sb.requests if r.service == "connectwise"]
    assert cw_requests
    for record in sb.requests:
        headers = {name.lower(): value for name, value in record.headers.items()}
        if token in headers.get("authorization", ""):
            assert record.service == "connectwise" and record.host == cw_host, record
        if record.service != "connectwise":
            assert not any(token in v or sb.cw_private_key in v for v in headers.values())


WRONG_HALO_SECRET = "Wr0ng-Halo-Secret-5e2a"
HALO_TOKENS = [f"HaloAccessToken-{n:03d}-d41d8cd98f00b204" for n in range(60)]


def test_halo_client_secret_and_tokens_never_show(tmp_path, sandbox, no_sleep, monkeypatch):
    """connect --psa halo (accepted and rejected secrets), sync, its dry run, status and
    doctor at -vv: neither the client secret nor any access token Halo issued shows anywhere,
    and a token goes only to the Halo server."""
    from infima_autotask.sandbox.halo_data import HaloState

    sb = sandbox
    issued = iter(HALO_TOKENS)
    real_issue = HaloState.issue_token

    def known_token(self: HaloState, scopes: frozenset[str]) -> str:
        token = real_issue(self, scopes)
        with self.lock:  # the same grant under a token the scan knows beforehand
            mine = next(issued)
            self.tokens[mine] = self.tokens.pop(token)
        return mine

    monkeypatch.setattr(HaloState, "issue_token", known_token)
    scan = scan_for(tmp_path, sb, INFIMA_API_KEY=sb.api_key)
    scan.secrets = (*scan.secrets, sb.halo_client_secret, WRONG_HALO_SECRET, *HALO_TOKENS)
    halo = (
        "connect", "--psa", "halo", "--url", sb.halo_url, "--client-id", sb.halo_client_id,
        "--client-secret-stdin",
    )  # fmt: skip
    scan.run("rejected key", *halo, code=3, stdin=WRONG_HALO_SECRET + "\n")
    scan.run("success", *halo, stdin=sb.halo_client_secret + "\n")
    config = yaml.safe_load(scan.config.read_text())
    config["mappings"] = [halo_data.seed_mapping()]
    scan.config.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    scan.run("success", "sync", "--dry-run", code=(0, 1))
    scan.run("success", "sync", code=(0, 1))
    scan.run("success", "status")
    scan.run("success", "doctor", code=(0, 1))
    assert sb.halo.count(halo_data.KESTREL_LICENCE_ID) == 14  # the sync did write
    halo_host = sb.halo_url.split("/")[2]
    for record in sb.requests:
        headers = {name.lower(): value for name, value in record.headers.items()}
        bearer = headers.get("authorization", "")
        if any(token in bearer for token in HALO_TOKENS):
            assert record.service == "halo" and record.host == halo_host, record
        if record.service != "halo":
            assert not any(sb.halo_client_secret in v for v in headers.values())
    bearers = [
        value
        for record in sb.requests
        for name, value in record.headers.items()
        if name.lower() == "authorization" and value.startswith("Bearer HaloAccessToken-")
    ]
    assert len(set(bearers)) >= 4  # each command got its own token, and the scan knew it


def test_notification_secrets_never_show(tmp_path, sandbox, no_sleep):
    from notify_receivers import Receiver, SmtpRecorder, SmtpServer, refusing_url
    from sandbox_cli import env_for

    sb = sandbox
    scan = scan_for(tmp_path, sb, **env_for(sb, tmp_path / "state"))
    scan.secrets += (HOOK_TOKEN, PING_TOKEN, SMTP_PASSWORD, WRONG_SMTP_PASSWORD)
    scan.in_config = (HOOK_TOKEN, PING_TOKEN)
    scan.config.parent.mkdir()
    recorder = SmtpRecorder(password=SMTP_PASSWORD)

    def configure(webhook: str, healthcheck: str, smtp_port: int, **notify: Any) -> None:
        email = {
            "host": "127.0.0.1",
            "port": smtp_port,
            "username": "billing-bot@example.com",
            "from": "billing-bot@example.com",
            "to": ["billing@example.com"],
        }
        doc = {
            "version": 1,
            "sync": {"max_decrease_percent": 10},
            "notify": {"webhook_url": webhook, "healthcheck_url": healthcheck, "email": email},
            "mappings": TROUBLED,
        }
        doc["notify"].update(notify)
        scan.config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    def run(path: str, *args: str, code: int | tuple[int, ...] = 0) -> Any:
        return scan.run(path, *args, code=code, own_exceptions_only=True)

    hook, broken, hc = Receiver(), Receiver(status=500), Receiver()
    with hook, broken, hc, SmtpServer(recorder) as smtp:
        path = f"/services/{HOOK_TOKEN}"
        configure(hook.url(path), hc.url(f"/{PING_TOKEN}"), smtp.port, dry_runs=True)
        scan.env["INFIMA_SMTP_PASSWORD"] = SMTP_PASSWORD
        run("notifications delivered", "notify", "test")
        run("notifications delivered", "sync", "--dry-run", code=1)
        run("notifications delivered", "sync", code=1)
        assert len(hook.received) == 3 and len(recorder.messages) == 3
        assert len(hc.received) == 5

        ping = refusing_url(f"/{PING_TOKEN}")
        configure(broken.url(path), ping, smtp.port, webhook_format="teams")
        scan.env["INFIMA_SMTP_PASSWORD"] = WRONG_SMTP_PASSWORD
        run("notifications undelivered", "notify", "test", code=1)
        result = run("notifications undelivered", "sync", code=1)
        assert result.stderr.count("notification not delivered") == 4
        sb.faults.add("Contracts", "503", times=-1)
        run("notifications undelivered", "sync", code=3)
        run("notifications undelivered", "history", "--runs")
        configure(refusing_url(path), hc.url(f"/{PING_TOKEN}"), smtp.port, webhook_format="slack")
        run("notifications undelivered", "sync", code=3)
        sb.faults = type(sb.faults)()
        run("notifications undelivered", "unmap", str(data.DELTA_CLIENT_ID))  # a rewrite
    assert HOOK_TOKEN in scan.config.read_text(encoding="utf-8")  # kept there, as it must be
    assert recorder.logins.count(("billing-bot@example.com", False)) >= 5
    assert len(broken.received) == 3


# --- servers that echo credentials back (requests-mock) -------------------------------------


def echo_world(m: rm.Mocker) -> None:
    """Every answer an error that quotes the credential it was sent."""
    echo = {"errors": [f"Secret {SECRET} for {USERNAME} is wrong"]}
    m.get(DEFAULT_ZONE_URL, json={"zoneName": "AE05", "url": API_URL})
    m.register_uri(rm.ANY, re.compile(re.escape(BASE) + ".*"), status_code=500, json=echo)
    m.register_uri(
        rm.ANY,
        re.compile(re.escape(INFIMA) + ".*"),
        status_code=401,
        json={"message": f"API key {API_KEY} is invalid"},
    )


ECHO_COMMANDS: list[tuple[tuple[str, ...], int, str | None]] = [
    (("connect", "--username", USERNAME, "--integration-code", CODE, "--secret-stdin"), 3, SECRET),
    (("connect", "--infima", "--api-key-stdin"), 3, API_KEY),
    (("status",), 3, None),
    (("list-clients",), 3, None),
    (("search-accounts", "acme"), 3, None),
    (("map", "101", "--account", "5001"), 3, None),
    (("list-mappings", "--check"), 3, None),
    (("sync", "--dry-run"), 3, None),
    (("sync",), 3, None),
]


@pytest.mark.parametrize("args,code,stdin", ECHO_COMMANDS, ids=lambda v: str(v))
def test_echoed_credentials_are_masked(tmp_path, no_sleep, args, code, stdin):
    (tmp_path / "config").mkdir()
    doc = {
        "version": 1,
        "autotask": {"username": USERNAME, "integration_code": CODE, "api_url": API_URL},
        "infima": {"api_url": INFIMA},
        "mappings": [MAPPING],
    }
    env = {
        "INFIMA_AUTOTASK_STATE_DIR": str(tmp_path / "state"),
        "INFIMA_AUTOTASK_SECRET": SECRET,
        "INFIMA_API_KEY": API_KEY,
    }
    if args[0] == "connect":
        env = {"INFIMA_AUTOTASK_STATE_DIR": env["INFIMA_AUTOTASK_STATE_DIR"]}
    scan = Scan(tmp_path, env, (SECRET, API_KEY))
    scan.config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    with rm.Mocker() as m:
        echo_world(m)
        scan.run("server echoes credentials", *args, code=code, stdin=(stdin or "") + "\n")
        hosts = {(r.scheme, r.netloc) for r in m.request_history}
    assert hosts <= {
        ("https", "webservices.autotask.net"),  # the zone lookup: username only
        ("https", "webservices5.autotask.net"),
        ("https", "app.infimasecapis.com"),
    }, hosts
    for request in m.request_history:
        if request.netloc == "webservices.autotask.net":
            assert "Secret" not in request.headers and "X-API-Key" not in request.headers


# --- where credentials may go -----------------------------------------------------------


@pytest.mark.parametrize(
    "env,args",
    [
        ({"INFIMA_API_URL": "http://app.infimasecapis.com"}, ("connect", "--infima")),
        ({"INFIMA_AUTOTASK_API_URL": "http://webservices5.autotask.net/"}, ("status",)),
        ({"INFIMA_AUTOTASK_API_URL": "http://10.0.0.5/ATServicesRest/"}, ("sync", "--dry-run")),
        ({"INFIMA_AUTOTASK_ZONE_URL": "http://webservices.autotask.net/zi"}, ("connect",)),
        ({"INFIMA_API_URL": "ftp://app.infimasecapis.com"}, ("list-clients",)),
    ],
)
def test_plain_http_off_loopback_is_refused_before_sending(tmp_path, env, args):
    (tmp_path / "config").mkdir()
    doc = {
        "version": 1,
        "autotask": {"username": USERNAME, "integration_code": CODE, "api_url": API_URL},
        "mappings": [MAPPING],
    }
    env = {
        **env,
        "INFIMA_AUTOTASK_STATE_DIR": str(tmp_path / "state"),
        "INFIMA_AUTOTASK_SECRET": SECRET,
        "INFIMA_API_KEY": API_KEY,
    }
    scan = Scan(tmp_path, env, (SECRET, API_KEY))
    scan.config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    extra = ("--username", USERNAME, "--integration-code", CODE) if args == ("connect",) else ()
    with rm.Mocker() as m:
        m.get(re.compile(re.escape(INFIMA) + "/v1/clients.*"), json={"items": []})
        m.get(INFIMA + "/v1/partner", json={"partner_name": "MSP"})  # status asks both
        result = scan.run("plain http refused", *args, *extra, code=(2, 3))
        assert all(request.scheme == "https" for request in m.request_history)
    shown = result.stdout + result.stderr
    assert "only https" in shown or "Refusing" in shown, shown


def test_tls_verification_cannot_be_turned_off(tmp_path, no_sleep):
    (tmp_path / "config").mkdir()
    doc = {
        "version": 1,
        "autotask": {"username": USERNAME, "integration_code": CODE, "api_url": API_URL},
    }
    env = {
        "INFIMA_AUTOTASK_STATE_DIR": str(tmp_path / "state"),
        "INFIMA_AUTOTASK_SECRET": SECRET,
        "INFIMA_API_KEY": API_KEY,
        # requests reads these for `verify`; empty values must not mean "no verification".
        "REQUESTS_CA_BUNDLE": "",
        "CURL_CA_BUNDLE": "",
    }
    scan = Scan(tmp_path, env, (SECRET, API_KEY))
    scan.config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    with rm.Mocker() as m:
        m.get(
            BASE + "ThresholdInformation",
            json={"externalRequestThreshold": 10000, "currentTimeframeRequestCount": 1},
        )
        m.get(INFIMA + "/v1/partner", json={"partner_name": "MSP"})
        scan.run("TLS with empty CA variables", "status")
        assert len(m.request_history) == 2
        assert all(request.verify is True for request in m.request_history)
    # No switch: neither the HTTP client nor any command takes one.
    for function in (HttpClient.__init__, HttpClient.request):
        names = set(inspect.signature(function).parameters)
        assert not names & {"verify", "insecure", "ssl", "tls", "cert"}, names
    source = Path(infima_autotask.__file__).parent
    for path in source.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "verify=False" not in text and "CERT_NONE" not in text, path
    for command in cli.commands.values():
        options = {opt for param in command.params for opt in getattr(param, "opts", [])}
        assert not {o for o in options if re.search(r"insecure|verify|ssl|tls", o)}, options


def test_scan_covered_every_command():
    """Runs last in this module (pytest keeps file order): the README quotes this count."""
    commands = {command for command, _ in SCANNED}
    expected = {
        "connect",
        "connect --infima",
        "status",
        "list-clients",
        "search-accounts",
        "map",
        "unmap",
        "list-mappings",
        "list-mappings --check",
        "sync",
        "sync --dry-run",
        "history",
        "report",
        "validate",
        "demo",
        "notify test",
        "connect connectwise",
        "search-accounts connectwise",
    }
    if len(SCANNED) < 40:
        pytest.skip("run the whole module to count the combinations")
    assert expected <= commands, expected - commands
    combos = set(SCANNED)
    paths = {path for _, path in SCANNED}
    print(
        f"\nsecret scan: {len(combos)} (command, path) combinations of {len(commands)} commands "
        f"and {len(paths)} paths, {len(SCANNED)} runs"
    )
    assert len(paths) >= 8 and len(combos) >= 50


def test_the_scanner_finds_a_planted_secret(tmp_path):
    """A control: each place the scan searches does show a secret put there on purpose."""
    scan = Scan(tmp_path, {}, ("Planted-Secret-5e6f",))
    with pytest.raises(AssertionError, match="in stdout"):
        scan.check({"stdout": "x Planted-Secret-5e6f"}, what="control")

    def fails() -> None:
        raise ValueError("Planted-Secret-5e6f")

    with exceptions_raised() as raised, contextlib.suppress(ValueError):
        fails()
    with pytest.raises(AssertionError, match="in exceptions"):
        scan.check({"exceptions": "\n".join(raised)}, what="control")
    with sqlite3.connect(tmp_path / "history.sqlite3") as conn:
        conn.execute("CREATE TABLE runs (note TEXT)")
        conn.execute("INSERT INTO runs VALUES ('Planted-Secret-5e6f')")
    with pytest.raises(AssertionError, match="database rows|history.sqlite3"):
        scan.check({}, what="control")
