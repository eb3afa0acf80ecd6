"""Loopback receivers for notification tests: an HTTP endpoint that records what it is sent
(answering 200, an error status, or not at all), a port that refuses, and an SMTP server
(aiosmtpd) that records messages and logins, with STARTTLS on a certificate from a test CA
(trustme) when asked.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def refusing_url(path: str = "/hook") -> str:
    """A loopback URL where nothing listens: the connection is refused."""
    return f"http://127.0.0.1:{free_port()}{path}"


@dataclass
class Received:
    method: str
    path: str
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class Receiver:
    """An HTTP server on 127.0.0.1 in a thread; every request is kept in ``received``.

    ``status`` is the answer (200 with ``answer`` as the body by default); ``hang`` keeps
    every request waiting without an answer until the receiver stops.
    """

    def __init__(self, *, status: int = 200, answer: bytes = b"ok", hang: bool = False) -> None:
        self.status = status
        self.answer = answer
        self.hang = hang
        self.received: list[Received] = []
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                receiver.received.append(
                    Received(self.command, self.path, body, dict(self.headers.items()))
                )
                if receiver.hang:
                    receiver._release.wait(30)
                    return
                self.send_response(receiver.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(receiver.answer)))
                self.end_headers()
                self.wfile.write(receiver.answer)

            do_GET = do_POST = _handle  # noqa: N815 - http.server's names

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def paths(self) -> list[str]:
        return [request.path for request in self.received]

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    content: str
    tls: bool


def _over_tls(server: Any, session: Any) -> bool:
    """After STARTTLS (session.ssl), or TLS from the first byte (the transport's)."""
    return session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None


@dataclass
class SmtpRecorder:
    """aiosmtpd handler and authenticator: keeps every message and every login attempt."""

    password: str | None = None
    messages: list[Mail] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)  # (username, over TLS)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        content = envelope.content.decode("utf-8", "replace")
        tls = _over_tls(server, session)
        self.messages.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), content, tls))
        return "250 OK"

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        username = auth_data.login.decode()
        self.logins.append((username, _over_tls(server, session)))
        ok = self.password is not None and auth_data.password.decode() == self.password
        return AuthResult(success=ok, handled=False)


class CertAuthority:
    """A certificate authority for the SMTP server's STARTTLS; ``trust(monkeypatch)`` makes
    ``ssl.create_default_context()`` (what the tool uses) trust it, through SSL_CERT_FILE."""

    def __init__(self, folder: Path) -> None:
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert("localhost", "127.0.0.1", "smtp.example.com")
        self.path = folder / "test-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.path))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(context)
        return context

    def trust(self, monkeypatch: Any) -> None:
        monkeypatch.setenv("SSL_CERT_FILE", str(self.path))
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)


class SmtpServer:
    """aiosmtpd on 127.0.0.1; STARTTLS offered only with ``tls`` (a server context)."""

    def __init__(
        self, recorder: SmtpRecorder, *, tls: ssl.SSLContext | None = None, implicit: bool = False
    ) -> None:
        self.recorder = recorder
        self.port = free_port()
        options: dict[str, Any] = {
            "authenticator": recorder,
            "auth_require_tls": False,  # a loopback server may take a login in clear
        }
        if tls is not None and not implicit:
            options["tls_context"] = tls
        self.controller = Controller(
            recorder,
            hostname="127.0.0.1",
            port=self.port,
            ssl_context=tls if implicit else None,
            server_hostname="localhost" if implicit else None,
            **options,
        )

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
