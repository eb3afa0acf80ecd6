"""`notify test` and the e-mail channel's rules (SPEC §11), through the real CLI against real
loopback servers: an SMTP server (aiosmtpd) with or without STARTTLS on a test CA's
certificate, a webhook and a healthcheck endpoint.

STARTTLS is used when offered, and required unless the host is this machine: a server named
smtp.example.com that offers no STARTTLS gets neither the password nor the mail. The tests
reach such a "remote" name through the SMTP seam, which connects to the loopback server while
the tool believes (and checks the certificate for) the configured host.
"""

from __future__ import annotations

import json
import smtplib
import ssl

import keyring
import pytest
from conftest import make_config, write_config
from keyrings.alt.file import PlaintextKeyring
from notify_receivers import CertAuthority, Receiver, SmtpRecorder, SmtpServer, refusing_url

from infima_autotask.errors import NotificationError
from infima_autotask.notify import connect_smtp

PASSWORD = "Smtp-P@ssw0rd-4e5f6a7b"
USER = "billing-bot@example.com"
HOOK_PATH = "/services/T0CLI/B0CLI/cliHookToken0987654321"


@pytest.fixture
def ca(tmp_path, monkeypatch):
    authority = CertAuthority(tmp_path)
    authority.trust(monkeypatch)
    return authority


def email(port: int, *, host: str = "127.0.0.1", username: str | None = USER) -> dict:
    return {
        "host": host,
        "port": port,
        "username": username,
        "from": USER,
        "to": ["billing@example.com"],
    }


def configure(config_path, **notify) -> None:
    write_config(config_path, make_config(notify=notify))


def redirect(port: int, seen: list):
    """The SMTP seam: connect to the loopback server on ``port`` whatever the host, keeping
    the configured host name for the TLS certificate check (as smtplib does itself)."""

    def connect(host, _port, *, timeout, tls):
        seen.append((host, _port, tls))
        if tls:
            smtp = smtplib.SMTP_SSL(timeout=timeout, context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(timeout=timeout)
        smtp._host = host  # what smtplib checks the certificate against
        smtp.connect("127.0.0.1", port)
        return smtp

    return connect


def test_nothing_configured_is_exit_2_saying_how(invoke, config_path):
    write_config(config_path, make_config())
    result = invoke("notify", "test")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"Error: No notification channel is configured in {config_path}. Add a `notify` section "
        "with webhook_url, healthcheck_url or email"
    )
    configure(config_path, dry_runs=True)
    assert invoke("notify", "test").exit_code == 2


def test_every_channel_gets_a_test_and_says_ok(invoke, config_path, seams):
    recorder = SmtpRecorder(password=PASSWORD)
    with Receiver() as hook, Receiver(answer=b"OK") as hc, SmtpServer(recorder) as server:
        configure(
            config_path,
            webhook_url=hook.url(HOOK_PATH),
            webhook_format="teams",
            healthcheck_url=hc.url("/ping/uuid-of-the-check"),
            email=email(server.port),
        )
        result = invoke("notify", "test", env={"INFIMA_SMTP_PASSWORD": PASSWORD})
        as_json = invoke("notify", "test", "--json", env={"INFIMA_SMTP_PASSWORD": PASSWORD})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["Channel", "Target", "Result"]
    assert lines[2].split() == ["webhook", f"http://127.0.0.1:{hook.port}/…", "(teams)", "ok"]
    assert lines[3].split() == [
        "e-mail",
        f"127.0.0.1:{server.port}",
        "to",
        "billing@example.com",
        "ok",
    ]
    assert lines[4].split() == ["healthcheck", f"http://127.0.0.1:{hc.port}/…", "ok"]
    assert hc.paths() == ["/ping/uuid-of-the-check"] * 2  # the success ping, not /start
    card = hook.received[0].json()["attachments"][0]["content"]
    assert "test message" in card["body"][0]["text"]
    assert "A test from infima-autotask" in recorder.messages[0].content
    assert recorder.logins == [(USER, False), (USER, False)]  # in clear: this machine only
    assert as_json.exit_code == 0
    rows = json.loads(as_json.stdout)
    assert [row["result"] for row in rows] == ["ok", "ok", "ok"]
    assert rows[0] == {
        "channel": "webhook",
        "target": f"http://127.0.0.1:{hook.port}/… (teams)",
        "result": "ok",
    }
    assert PASSWORD not in result.output + as_json.output
    assert "cliHookToken" not in result.output + as_json.output


def test_one_failed_channel_is_exit_1_with_its_reason(invoke, config_path):
    with Receiver(answer=b"OK") as hc:
        configure(
            config_path,
            webhook_url=refusing_url(HOOK_PATH),
            healthcheck_url=hc.url("/ping/uuid-of-the-check"),
        )
        result = invoke("notify", "test")
    assert result.exit_code == 1
    webhook, healthcheck = result.stdout.splitlines()[2:]
    assert "Could not connect to Webhook" in webhook and "Connection refused" in webhook
    assert healthcheck.split()[-1] == "ok"
    assert "cliHookToken" not in result.output


def test_starttls_is_used_when_offered(invoke, config_path, ca):
    recorder = SmtpRecorder(password=PASSWORD)
    with SmtpServer(recorder, tls=ca.server_context()) as server:
        configure(config_path, email=email(server.port, host="localhost"))
        result = invoke("notify", "test", env={"INFIMA_SMTP_PASSWORD": PASSWORD})
    assert result.exit_code == 0, result.output
    assert recorder.logins == [(USER, True)]
    (mail,) = recorder.messages
    assert mail.tls and "Subject: infima-autotask: test message" in mail.content


def test_a_remote_server_without_starttls_gets_neither_password_nor_mail(
    invoke, config_path, seams
):
    recorder = SmtpRecorder(password=PASSWORD)
    with SmtpServer(recorder) as server:
        seen: list = []
        seams["smtp"] = redirect(server.port, seen)
        configure(config_path, email=email(587, host="smtp.example.com"))
        result = invoke("notify", "test", env={"INFIMA_SMTP_PASSWORD": PASSWORD})
    assert result.exit_code == 1
    assert seen == [("smtp.example.com", 587, False)]
    assert recorder.logins == [] and recorder.messages == []
    assert "smtp.example.com:587 does not offer STARTTLS; nothing was sent" in result.stdout
    assert PASSWORD not in result.output


def test_a_remote_server_with_starttls_is_fine(invoke, config_path, seams, ca):
    recorder = SmtpRecorder(password=PASSWORD)
    with SmtpServer(recorder, tls=ca.server_context()) as server:
        seams["smtp"] = redirect(server.port, [])
        configure(config_path, email=email(587, host="smtp.example.com"))
        result = invoke("notify", "test", env={"INFIMA_SMTP_PASSWORD": PASSWORD})
    assert result.exit_code == 0, result.output
    assert recorder.logins == [(USER, True)] and recorder.messages[0].tls


def test_an_untrusted_certificate_sends_nothing(invoke, config_path, seams, tmp_path):
    recorder = SmtpRecorder(password=PASSWORD)
    (tmp_path / "other").mkdir()
    untrusted = CertAuthority(tmp_path / "other")  # a CA the tool was not told to trust
    with SmtpServer(recorder, tls=untrusted.server_context()) as server:
        seams["smtp"] = redirect(server.port, [])
        configure(config_path, email=email(587, host="smtp.example.com"))
        result = invoke("notify", "test", env={"INFIMA_SMTP_PASSWORD": PASSWORD})
    assert result.exit_code == 1
    assert "The TLS certificate of smtp.example.com is not trusted" in result.stdout
    assert recorder.logins == [] and recorder.messages == []


def test_port_465_is_tls_from_the_first_byte(invoke, config_path, seams, ca):
    recorder = SmtpRecorder(password=PASSWORD)
    with SmtpServer(recorder, tls=ca.server_context(), implicit=True) as server:
        seen: list = []
        seams["smtp"] = redirect(server.port, seen)
        configure(config_path, email=email(465, host="smtp.example.com"))
        result = invoke("notify", "test", env={"INFIMA_SMTP_PASSWORD": PASSWORD})
    assert result.exit_code == 0, result.output
    assert seen == [("smtp.example.com", 465, True)]
    assert recorder.logins == [(USER, True)]


def test_connect_smtp_speaks_tls_at_once_when_asked(ca):
    recorder = SmtpRecorder()
    with SmtpServer(recorder, tls=ca.server_context(), implicit=True) as server:
        with connect_smtp("127.0.0.1", server.port, timeout=5, tls=True) as smtp:
            assert isinstance(smtp, smtplib.SMTP_SSL)
            assert smtp.noop()[0] == 250
        plain = pytest.raises((smtplib.SMTPServerDisconnected, OSError))
        with plain, connect_smtp("127.0.0.1", server.port, timeout=0.5, tls=False) as smtp:
            smtp.noop()


def test_a_wrong_password_is_named_but_never_shown(invoke, config_path):
    recorder = SmtpRecorder(password=PASSWORD)
    with SmtpServer(recorder) as server:
        configure(config_path, email=email(server.port))
        result = invoke("notify", "test", env={"INFIMA_SMTP_PASSWORD": "Wrong-" + PASSWORD})
    assert result.exit_code == 1
    assert f"127.0.0.1 refused the login of {USER} (535" in result.stdout
    assert "INFIMA_SMTP_PASSWORD or the keyring entry" in result.stdout
    assert PASSWORD not in result.output and recorder.messages == []


def test_no_password_anywhere_connects_nowhere(invoke, config_path):
    recorder = SmtpRecorder(password=PASSWORD)
    with SmtpServer(recorder) as server:
        configure(config_path, email=email(server.port))
        result = invoke("notify", "test")
    assert result.exit_code == 1
    assert f"No SMTP password for {USER}: set INFIMA_SMTP_PASSWORD, or store it in the " in (
        result.stdout
    )
    assert f"name smtp:{USER}" in result.stdout
    assert recorder.logins == [] and recorder.messages == []


def test_the_password_may_come_from_the_keyring(invoke, config_path, memkeyring):
    memkeyring.set_password("infima-autotask", f"smtp:{USER}", PASSWORD)
    recorder = SmtpRecorder(password=PASSWORD)
    with SmtpServer(recorder) as server:
        configure(config_path, email=email(server.port))
        result = invoke("notify", "test")
    assert result.exit_code == 0, result.output
    assert recorder.logins == [(USER, False)]


def test_a_plaintext_keyring_it_was_not_told_to_use_is_refused(invoke, config_path, tmp_path):
    backend = PlaintextKeyring()
    backend.file_path = str(tmp_path / "keyring_pass.cfg")
    keyring.set_keyring(backend)
    backend.set_password("infima-autotask", f"smtp:{USER}", PASSWORD)
    recorder = SmtpRecorder(password=PASSWORD)
    with SmtpServer(recorder) as server:
        configure(config_path, email=email(server.port))
        refused = invoke("notify", "test")
        chosen = invoke(
            "notify",
            "test",
            env={"PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring"},
        )
    assert refused.exit_code == 1
    assert "would keep the secret unencrypted" in refused.stdout
    assert "the SMTP password was not read from it" in refused.stdout
    assert chosen.exit_code == 0, chosen.output
    assert recorder.logins == [(USER, False)]


def test_send_email_refuses_before_login_unit():
    """The rule alone: a non-loopback host without STARTTLS raises before any login."""
    from infima_autotask.config import EmailSettings
    from infima_autotask.notify import email_message, message_for_test, send_email

    calls: list[str] = []

    class NoTls:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            calls.append("quit")

        def ehlo(self):
            calls.append("ehlo")

        def has_extn(self, name):
            return False

        def login(self, *args):
            calls.append("login")

        def send_message(self, *args, **kwargs):
            calls.append("send")

    settings = EmailSettings(
        host="mail.example.com", to=("a@x.io",), sender="b@x.io", username=USER
    )
    with pytest.raises(NotificationError, match="does not offer STARTTLS"):
        send_email(
            settings,
            email_message(settings, message_for_test()),
            password=PASSWORD,
            connect=lambda *a, **k: NoTls(),
        )
    assert calls == ["ehlo", "quit"]
    loopback = EmailSettings(host="127.0.0.1", to=("a@x.io",), sender="b@x.io", username=USER)
    calls.clear()
    send_email(
        loopback,
        email_message(loopback, message_for_test()),
        password=PASSWORD,
        connect=lambda *a, **k: NoTls(),
    )
    assert calls == ["ehlo", "login", "send", "quit"]
