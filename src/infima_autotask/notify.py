"""Notifications (SPEC §11): a webhook, an e-mail and a healthcheck ping about each sync.

One :class:`RunMessage` says what happened; each channel renders it: a generic JSON document,
a Slack incoming-webhook message, a Microsoft Teams Adaptive Card message (what Teams
Workflows webhooks accept, and classic incoming webhooks too), or a plain-text e-mail.
Webhooks and pings go through the one HTTP choke point (``HttpClient``: a timeout on every
request, a POST never retried); their URLs carry tokens and are only ever shown as
``scheme://host/…``. A delivery that fails is a :class:`Delivery` with its problem, never an
exception out of here: the caller warns and keeps the warning with the run.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from infima_autotask import __version__
from infima_autotask.config import EmailSettings, NotifySettings
from infima_autotask.credentials import smtp_password
from infima_autotask.errors import ApiError, ConfigError, InfimaAutotaskError, NotificationError
from infima_autotask.history import History
from infima_autotask.http import (
    DEFAULT_TIMEOUT,
    HttpClient,
    is_loopback,
    redact,
    register_secret,
    shown_url,
)
from infima_autotask.runner import SyncOptions, SyncReport, requested_month
from infima_autotask.runtime import Runtime
from infima_autotask.statuses import FAILED, HELD
from infima_autotask.sync import PlanItem, current_month, period_label, summary_line

log = logging.getLogger(__name__)

GENERIC, SLACK, TEAMS = "generic", "slack", "teams"
SYNC_EVENT, TEST_EVENT = "sync", "test"
SMTPS_PORT = 465  # TLS from the first byte; any other port starts plain and needs STARTTLS
SMTP_TIMEOUT = DEFAULT_TIMEOUT[1]  # seconds per SMTP step: the read timeout of every request
MAX_LISTED = 25  # held or failed clients listed one by one in a chat message; the rest counted
_SLACK_SECTION = 2900  # characters; Slack refuses a section text over 3000
_SLACK_BLOCKS = 50  # Slack's limit of blocks in one message

_EXIT_MEANINGS = {
    0: "success",
    1: "a client was held or failed",
    2: "a usage or configuration error",
    3: "could not reach or authenticate with Autotask or INFIMA, or could not start",
    4: "changes to make (dry run)",
    130: "interrupted",
}


# --- what a notification says ---------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RunMessage:
    """What every channel says about one run (or a test message)."""

    event: str = SYNC_EVENT
    period: str | None = None
    dry_run: bool = False
    exit_code: int | None = None
    outcome: str = "ok"  # ok, held, failed, interrupted, error, nothing due, test
    headline: str = ""
    summary: dict[str, int] = field(default_factory=dict)
    held: tuple[PlanItem, ...] = ()
    failed: tuple[PlanItem, ...] = ()
    warnings: tuple[str, ...] = ()
    error: str | None = None
    run_id: int | None = None
    host: str = field(default_factory=socket.gethostname)

    @property
    def nothing_due(self) -> bool:
        return self.outcome == "nothing due"

    @property
    def title(self) -> str:
        return f"infima-autotask: {self.headline}"


def report_message(report: SyncReport, exit_code: int) -> RunMessage:
    """The message about a finished run (including one that Ctrl-C stopped mid-way)."""
    if report.nothing_due:
        return RunMessage(
            period=report.period,
            dry_run=report.dry_run,
            exit_code=exit_code,
            outcome="nothing due",
            headline=f"Period {report.period}: nothing due.",
        )
    line = summary_line(
        report.period,
        report.summary,
        dry_run=report.dry_run,
        relation=report.relation,
        reverts=report.reverts,
    )
    if report.interrupted:
        line += "; interrupted: the rest was not sent"
    warnings = [*report.warnings, *([report.unmapped_warning] if report.unmapped else [])]
    return RunMessage(
        period=report.period,
        dry_run=report.dry_run,
        exit_code=exit_code,
        outcome="interrupted" if report.interrupted else report.outcome,
        headline=line,
        summary=report.summary,
        held=tuple(item for item in report.items if item.status == HELD),
        failed=tuple(item for item in report.items if item.status == FAILED),
        warnings=tuple(warnings),
        run_id=report.run_id,
    )


def error_message(
    *,
    period: str | None,
    dry_run: bool,
    exit_code: int,
    error: str,
    run_id: int | None = None,
) -> RunMessage:
    """The message about a run that stopped with an error (or was interrupted) before its end."""
    which = f"Sync of {period}" if period else "Sync"
    interrupted = exit_code == 130
    what = "interrupted" if interrupted else f"failed (exit {exit_code})"
    return RunMessage(
        period=period,
        dry_run=dry_run,
        exit_code=exit_code,
        outcome="interrupted" if interrupted else "error",
        headline=f"{which}{' (dry run)' if dry_run else ''} {what}",
        error=error,
        run_id=run_id,
    )


def message_for_test() -> RunMessage:
    return RunMessage(event=TEST_EVENT, outcome="test", headline="test message: this channel works")


def expected_period(runtime: Runtime, options: SyncOptions) -> str:
    """The period a sync with ``options`` is for, named in a message about a run that stopped
    before saying so itself."""
    month = requested_month(options) or current_month(runtime.clock(), runtime.config.sync.timezone)
    return period_label(month)


# --- text, shared by the e-mail and the chat messages -------------------------------------------


def _units(value: int | None) -> str:
    return "?" if value is None else str(value)


def item_line(item: PlanItem) -> str:
    """``Acme Dental (client 101, contract service 7101): 40 -> 0 units: <why>``."""
    name = item.client_name or f"client {item.client_id}"
    where = f"{name} (client {item.client_id}, contract service {item.contract_service_id})"
    change = "" if item.target is None else f": {_units(item.before)} -> {item.target} units"
    return f"{where}{change}: {item.message or item.status}"


def _facts(message: RunMessage) -> list[tuple[str, str]]:
    if message.event == TEST_EVENT:
        return [("Host", message.host), ("Version", __version__)]
    facts = [("Period", message.period or "?"), ("Host", message.host)]
    if message.exit_code is not None:
        meaning = _EXIT_MEANINGS.get(message.exit_code, "")
        code = str(message.exit_code)
        facts.append(("Exit code", f"{code} ({meaning})" if meaning else code))
    if message.run_id is not None:
        facts.append(("Run", f"{message.run_id} (infima-autotask history --runs)"))
    return facts


def _sections(message: RunMessage) -> list[tuple[str, list[str]]]:
    """(heading, lines) of what a person should read: the error, held, failed, warnings."""
    sections: list[tuple[str, list[str]]] = []
    if message.event == TEST_EVENT:
        sections.append(
            (
                "",
                [
                    f"A test from infima-autotask {__version__} on {message.host}: notifications "
                    "of each sync will arrive here."
                ],
            )
        )
    if message.error:
        sections.append(("Error", [message.error]))
    for heading, items in (("Held", message.held), ("Failed", message.failed)):
        if items:
            sections.append((f"{heading} ({len(items)})", [item_line(item) for item in items]))
    if message.warnings:
        sections.append(("Warnings", list(message.warnings)))
    return sections


def _listed(lines: list[str], limit: int | None) -> list[str]:
    if limit is None or len(lines) <= limit:
        return lines
    more = len(lines) - limit
    return [*lines[:limit], f"... and {more} more: see `infima-autotask history`"]


def text_body(message: RunMessage) -> str:
    """The plain-text form: every held and failed client, for the e-mail and ping bodies."""
    lines = [message.headline, ""]
    lines += [f"{name}: {value}" for name, value in _facts(message)]
    for heading, entries in _sections(message):
        lines.append("")
        if heading:
            lines.append(f"{heading}:")
        lines += [f"- {entry}" if heading else entry for entry in entries]
    return "\n".join(lines) + "\n"


# --- webhook payloads ---------------------------------------------------------------------------


def webhook_format(url: str, configured: str | None) -> str:
    """``webhook_format`` when set; else Slack or Teams by the URL's host, else generic JSON."""
    if configured:
        return configured
    host = (urlsplit(url).hostname or "").lower()
    if host == "hooks.slack.com":
        return SLACK
    if host.endswith(("webhook.office.com", ".logic.azure.com")):
        return TEAMS
    return GENERIC


def generic_payload(message: RunMessage) -> dict[str, Any]:
    """The tool's own JSON document; items in the shape of ``sync --json`` (SPEC §8)."""
    return {
        "event": message.event,
        "tool": "infima-autotask",
        "version": __version__,
        "host": message.host,
        "run_id": message.run_id,
        "period": message.period,
        "dry_run": message.dry_run,
        "exit_code": message.exit_code,
        "outcome": message.outcome,
        "text": message.headline,
        "summary": dict(message.summary),
        "error": message.error,
        "held": [item.as_json() for item in message.held],
        "failed": [item.as_json() for item in message.failed],
        "warnings": list(message.warnings),
    }


def _slack_escape(text: str) -> str:
    """Slack's three control characters (its message formatting reference)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _chunks(lines: list[str], size: int) -> list[str]:
    """Lines joined into texts of at most ``size`` characters (a longer line is cut)."""
    texts: list[str] = []
    current = ""
    for line in lines:
        line = line if len(line) <= size else line[: size - 1] + "…"
        if current and len(current) + 1 + len(line) > size:
            texts.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current:
        texts.append(current)
    return texts


def slack_payload(message: RunMessage) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (the notification line) and Block Kit blocks."""

    def section(text: str) -> dict[str, Any]:
        return {"type": "section", "text": {"type": "mrkdwn", "text": text}}

    facts = "   ".join(f"*{name}:* {_slack_escape(value)}" for name, value in _facts(message))
    blocks: list[dict[str, Any]] = [
        section(f"*{_slack_escape(message.title)}*"),
        {"type": "context", "elements": [{"type": "mrkdwn", "text": facts}]},
    ]
    for heading, entries in _sections(message):
        lines = [f"*{heading}*"] if heading else []
        bullet = "• " if heading else ""
        lines += [bullet + _slack_escape(entry) for entry in _listed(entries, MAX_LISTED)]
        blocks += [section(text) for text in _chunks(lines, _SLACK_SECTION)]
    if len(blocks) > _SLACK_BLOCKS:
        blocks = [*blocks[: _SLACK_BLOCKS - 1], section("… more in `infima-autotask history`")]
    return {"text": _slack_escape(message.title), "blocks": blocks}


def teams_payload(message: RunMessage) -> dict[str, Any]:
    """A Teams message carrying one Adaptive Card: the only format Workflows webhooks ("Post to
    a channel when a webhook request is received") accept; classic incoming webhooks take it too.
    """
    color = {"ok": "Good", "test": "Good", "nothing due": "Good", "held": "Warning"}.get(
        message.outcome, "Attention"
    )
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": message.title,
            "weight": "Bolder",
            "size": "Medium",
            "color": color,
            "wrap": True,
        },
        {
            "type": "FactSet",
            "facts": [{"title": name, "value": value} for name, value in _facts(message)],
        },
    ]
    for heading, entries in _sections(message):
        if heading:
            body.append(
                {
                    "type": "TextBlock",
                    "text": heading,
                    "weight": "Bolder",
                    "wrap": True,
                    "spacing": "Medium",
                }
            )
        bullet = "- " if heading else ""
        body += [
            {"type": "TextBlock", "text": bullet + entry, "wrap": True, "spacing": "None"}
            for entry in _listed(entries, MAX_LISTED)
        ]
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": body,
    }
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


PAYLOADS: dict[str, Callable[[RunMessage], dict[str, Any]]] = {
    GENERIC: generic_payload,
    SLACK: slack_payload,
    TEAMS: teams_payload,
}


# --- e-mail -------------------------------------------------------------------------------------


def email_message(settings: EmailSettings, message: RunMessage) -> EmailMessage:
    """The plain-text e-mail of ``message``."""
    mail = EmailMessage()
    mail["Subject"] = " ".join(message.title.split())[:250]
    mail["From"] = settings.sender
    mail["To"] = ", ".join(settings.to)
    mail["Date"] = formatdate(localtime=True)
    mail["Message-ID"] = make_msgid(domain=settings.sender.rpartition("@")[2])
    mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a robot
    mail.set_content(text_body(message))
    return mail


def connect_smtp(host: str, port: int, *, timeout: float, tls: bool) -> smtplib.SMTP:
    """Connect to the SMTP server: TLS from the first byte when ``tls``, else plain."""
    if tls:
        return smtplib.SMTP_SSL(host, port, timeout=timeout, context=ssl.create_default_context())
    return smtplib.SMTP(host, port, timeout=timeout)


def send_email(
    settings: EmailSettings,
    mail: EmailMessage,
    *,
    password: str | None,
    connect: Callable[..., smtplib.SMTP] = connect_smtp,
    timeout: float = SMTP_TIMEOUT,
) -> None:
    """Send ``mail``; STARTTLS when offered, and required unless the server is this machine.

    Raises:
        NotificationError: it was not sent (the reason, never the password).
    """
    host, port = settings.host, settings.port
    implicit = port == SMTPS_PORT
    try:
        with connect(host, port, timeout=timeout, tls=implicit) as smtp:
            smtp.ehlo()
            if not implicit:
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                elif not is_loopback(host):
                    raise NotificationError(
                        f"{host}:{port} does not offer STARTTLS; nothing was sent, so that "
                        "neither the mail nor the password crosses the network unencrypted. "
                        f"Use the server's submission port (587, STARTTLS) or {SMTPS_PORT} (TLS)."
                    )
            if settings.username:
                smtp.login(settings.username, password or "")
            smtp.send_message(mail, from_addr=settings.sender, to_addrs=list(settings.to))
    except smtplib.SMTPAuthenticationError as exc:
        raise NotificationError(
            f"{host} refused the login of {settings.username} ({_smtp_answer(exc)}); check "
            "INFIMA_SMTP_PASSWORD or the keyring entry."
        ) from None
    except smtplib.SMTPRecipientsRefused as exc:
        refused = ", ".join(sorted(str(address) for address in exc.recipients))
        raise NotificationError(f"{host} refused the recipients {refused}.") from None
    except smtplib.SMTPResponseException as exc:
        raise NotificationError(f"{host} answered {_smtp_answer(exc)}.") from None
    except smtplib.SMTPException as exc:  # disconnected, an extension missing (AUTH)
        raise NotificationError(
            f"SMTP with {host}:{port} failed: {redact(str(exc))[:200]}."
        ) from None
    except ssl.SSLCertVerificationError as exc:
        raise NotificationError(
            f"The TLS certificate of {host} is not trusted ({exc.verify_message}); nothing was "
            "sent."
        ) from None
    except TimeoutError:
        raise NotificationError(f"{host}:{port} did not answer within {timeout:g} s.") from None
    except OSError as exc:  # refused, unreachable, unknown host, TLS failures
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise NotificationError(
            f"Could not connect to {host}:{port}: {redact(reason)[:200]}."
        ) from None


def _smtp_answer(exc: smtplib.SMTPResponseException) -> str:
    text = (
        exc.smtp_error.decode("utf-8", "replace")
        if isinstance(exc.smtp_error, bytes)
        else str(exc.smtp_error)
    )
    return f"{exc.smtp_code} {redact(' '.join(text.split()))[:200]}"


# --- delivery -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """The outcome of one notification: ``problem`` None when it was delivered."""

    channel: str  # "webhook", "e-mail", "healthcheck"
    target: str  # where it went, safe to print (a URL as scheme://host/…)
    problem: str | None = None

    @property
    def delivered(self) -> bool:
        return self.problem is None

    @property
    def warning(self) -> str:
        # The run itself is done and stands: nothing is to be run again for this.
        problem = (self.problem or "").removesuffix(".")
        for advice in (" Try again later", ", then run again", " Try again later; if it persists"):
            problem = problem.split(advice)[0] if advice in problem else problem
        return (
            f"{self.channel} notification not delivered: {problem.rstrip('.;, ')}. The run is "
            "unaffected; `infima-autotask notify test` checks the channel."
        )


_TOKEN_LENGTH = 16  # shorter paths (/hook) are no token, and masking them would garble logs


def _register_url(url: str | None) -> None:
    """Mask a token-carrying URL, and its path and query alone, in any log record."""
    if not url:
        return
    parts = urlsplit(url)
    for piece in (url, parts.path.strip("/"), parts.query):
        if len(piece) >= _TOKEN_LENGTH:
            register_secret(piece)


def ping_url(url: str, suffix: str) -> str:
    """``url`` with ``suffix`` (``/start``, ``/fail``) added to its path, query kept."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + suffix))


class Notifier:
    """Sends a run's notifications on the channels of one ``notify`` section."""

    def __init__(self, settings: NotifySettings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self._clients: dict[str, HttpClient] = {}
        _register_url(settings.webhook_url)
        _register_url(settings.healthcheck_url)

    def _http(self, service: str) -> HttpClient:
        if service not in self._clients:
            self._clients[service] = self.runtime.new_http(service)
        return self._clients[service]

    def start(self) -> list[Delivery]:
        """The healthcheck's start ping (`URL/start`), when one is configured."""
        if not self.settings.healthcheck_url:
            return []
        body = f"infima-autotask {__version__} on {socket.gethostname()}: sync started\n"
        return [self._ping("/start", body)]

    def finish(self, message: RunMessage) -> list[Delivery]:
        """The healthcheck's end ping (`URL` on exit 0, `URL/fail` otherwise), then the webhook
        and the e-mail (not when nothing was due: there is no run to tell about)."""
        done: list[Delivery] = []
        if self.settings.healthcheck_url:
            done.append(self._ping("" if message.exit_code == 0 else "/fail", text_body(message)))
        if not message.nothing_due:
            done += self._messages(message)
        return done

    def test(self) -> list[Delivery]:
        """A test message on every channel; the healthcheck gets its success ping."""
        message = message_for_test()
        done = self._messages(message)
        if self.settings.healthcheck_url:
            done.append(self._ping("", text_body(message)))
        return done

    def _messages(self, message: RunMessage) -> list[Delivery]:
        done: list[Delivery] = []
        if self.settings.webhook_url:
            done.append(self._webhook(self.settings.webhook_url, message))
        if self.settings.email is not None:
            done.append(self._email(self.settings.email, message))
        return done

    def _webhook(self, url: str, message: RunMessage) -> Delivery:
        kind = webhook_format(url, self.settings.webhook_format)
        shown = shown_url(url)
        target = f"{shown} ({kind})"
        try:
            self._http("Webhook").request(
                "POST",
                url,
                json_body=PAYLOADS[kind](message),
                retry=False,  # a POST is never retried: a second message is worse than none
                shown_as=shown,
                expect_json=False,
            )
        except ApiError as exc:
            return Delivery("webhook", target, exc.message)
        log.info("webhook %s: delivered", target)
        return Delivery("webhook", target)

    def _ping(self, suffix: str, body: str) -> Delivery:
        url = self.settings.healthcheck_url or ""
        target = shown_url(url, suffix)
        try:
            # POST, not GET: healthchecks.io keeps the body with the ping, so its log shows
            # the run's summary (and why it failed); a ping is never retried either.
            self._http("Healthcheck").request(
                "POST",
                ping_url(url, suffix),
                text_body=body,
                retry=False,
                shown_as=target,
                expect_json=False,
            )
        except ApiError as exc:
            return Delivery("healthcheck", target, exc.message)
        log.info("healthcheck %s: delivered", target)
        return Delivery("healthcheck", target)

    def _email(self, settings: EmailSettings, message: RunMessage) -> Delivery:
        target = f"{settings.host}:{settings.port} to {', '.join(settings.to)}"
        try:
            password = (
                smtp_password(settings.username, self.runtime.env) if settings.username else None
            )
            send_email(
                settings,
                email_message(settings, message),
                password=password,
                connect=self.runtime.seams.smtp or connect_smtp,
            )
        except InfimaAutotaskError as exc:  # NotificationError, or no password (CredentialsError)
            return Delivery("e-mail", target, exc.message)
        log.info("e-mail %s: delivered", target)
        return Delivery("e-mail", target)


def notifier_for(runtime: Runtime, *, dry_run: bool) -> Notifier | None:
    """The notifier of a sync, or None: nothing configured, or a dry run without ``dry_runs``."""
    settings = runtime.config.notify
    if settings is None or not settings.configured or (dry_run and not settings.dry_runs):
        return None
    return Notifier(settings, runtime)


def notifier_for_test(runtime: Runtime) -> Notifier:
    """The notifier of ``notify test``.

    Raises:
        ConfigError: no channel is configured.
    """
    settings = runtime.config.notify
    if settings is None or not settings.configured:
        raise ConfigError(
            f"No notification channel is configured in {runtime.config_path}. Add a `notify` "
            "section with webhook_url, healthcheck_url or email (config.example.yaml and the "
            'README section "Notifications" show it), then run `infima-autotask notify test` '
            "again."
        )
    return Notifier(settings, runtime)


def keep_warnings(runtime: Runtime, run_id: int | None, deliveries: Sequence[Delivery]) -> None:
    """Keep each failed delivery's warning with its run in the history (when there is a run)."""
    failed = [delivery.warning for delivery in deliveries if not delivery.delivered]
    if run_id is None or not failed:
        return
    try:
        with History(runtime.state_dir()) as history:
            for text in failed:
                history.add_run_warning(run_id, text)
    except (InfimaAutotaskError, ValueError) as exc:  # the warnings are on stderr already
        log.warning("could not keep the notification warnings with run %d: %s", run_id, exc)
