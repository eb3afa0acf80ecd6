"""HTTP plumbing shared by the simulators: replies, the request log, injected faults."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from . import Sandbox

log = logging.getLogger(__name__)

AUTOTASK_FAULT_ENDPOINTS = {
    "companies",
    "contracts",
    "contractservices",
    "contractserviceunits",
    "services",
    "internallocations",
    "contractserviceadjustments",
    "thresholdinformation",
    "zoneinformation",
}
INFIMA_FAULT_ENDPOINTS = {"infima:clients", "infima:users", "infima:partner"}
# ConnectWise: cw:write is every PATCH/PUT/POST/DELETE of an addition; cw:additions its reads.
CONNECTWISE_FAULT_ENDPOINTS = {
    "cw:companyinfo",
    "cw:system",
    "cw:companies",
    "cw:agreements",
    "cw:additions",
    "cw:write",
}
# HaloPSA: halo:auth is authinfo and the token; halo:write every POST of SoftwareLicence.
HALO_FAULT_ENDPOINTS = {
    "halo:auth",
    "halo:clients",
    "halo:licences",
    "halo:invoices",
    "halo:write",
}
ALL_FAULT_ENDPOINTS = (
    AUTOTASK_FAULT_ENDPOINTS
    | INFIMA_FAULT_ENDPOINTS
    | CONNECTWISE_FAULT_ENDPOINTS
    | HALO_FAULT_ENDPOINTS
)
WRITE_FAULT_ENDPOINTS = {"contractserviceadjustments", "cw:write", "halo:write"}
# 429-html: a Cloudflare-style HTML page (with Retry-After when retry_after is given).
# 400: a validation rejection (nothing applied), in the API's own error shape.
PLAIN_KINDS = {
    "400",
    "429",
    "429-html",
    "500-errors",
    "500-bare",
    "503",
    "502",
    "drop",
    "timeout",
}
APPLY_KINDS = {"apply-then-drop", "apply-then-hold", "apply-then-500-bare"}
_HOLD_LIMIT = 60.0  # a held write gives up waiting for release() after this, so stop() can't hang


@dataclass
class RequestRecord:
    """One request as the sandbox received and answered it (status 0: no answer was sent)."""

    service: str
    method: str
    path: str
    host: str
    headers: dict[str, str] = field(repr=False)
    body: Any
    status: int
    started: float
    finished: float


@dataclass
class Reply:
    """What a handler answers; ``drop`` closes the connection without answering."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    """A JSON answer."""
    body = json.dumps(payload).encode()
    return Reply(
        status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    )


def html_reply(status: int, text: str) -> Reply:
    """An HTML answer, as a proxy or IIS error page would give."""
    return Reply(status, f"<html>{text}</html>".encode(), {"Content-Type": "text/html"})


@dataclass
class Fault:
    """One injected fault; ``times`` counts down (-1: forever)."""

    endpoint: str
    kind: str
    times: int
    retry_after: float | None
    client_id: int | None


class Faults:
    """Faults injected per endpoint, consumed in the order they were added. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.infima_down = False
        self.held = threading.Event()
        self._release = threading.Event()

    def add(
        self,
        endpoint: str,
        kind: str,
        *,
        times: int = 1,
        retry_after: float | None = None,
        client_id: int | None = None,
    ) -> None:
        """Make the next ``times`` requests to ``endpoint`` fail as ``kind``.

        Raises ValueError for an unknown endpoint or kind, or a combination that makes no sense.
        """
        key = endpoint.lower()
        if key not in ALL_FAULT_ENDPOINTS:
            raise ValueError(f"unknown fault endpoint {endpoint!r}")
        if kind not in PLAIN_KINDS | APPLY_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        if kind in APPLY_KINDS and key not in WRITE_FAULT_ENDPOINTS:
            raise ValueError(
                f"{kind} applies to ContractServiceAdjustments, halo:write and cw:write only"
            )
        if client_id is not None and key != "infima:users":
            raise ValueError("client_id applies to infima:users only")
        if times == 0 or times < -1:
            raise ValueError("times must be -1 (forever) or at least 1")
        with self._lock:
            self._faults.append(Fault(key, kind, times, retry_after, client_id))

    def take(
        self, endpoint: str, *, client_id: int | None = None, apply: bool = False
    ) -> Fault | None:
        """Consume and return the first fault matching the request, if any.

        ``apply`` selects the apply-then-* faults, which fire only once a write was applied.
        """
        key = endpoint.lower()
        with self._lock:
            for fault in self._faults:
                if fault.endpoint != key or (fault.kind in APPLY_KINDS) != apply:
                    continue
                if fault.client_id is not None and fault.client_id != client_id:
                    continue
                if fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                return fault
        return None

    def pending(self) -> list[Fault]:
        """The faults not yet consumed."""
        with self._lock:
            return list(self._faults)

    def clear(self) -> None:
        """Forget every fault, bring INFIMA back up and let any held write go."""
        with self._lock:
            self._faults.clear()
        self.infima_down = False
        self.release()

    def release(self) -> None:
        """Let a write held by apply-then-hold answer."""
        self._release.set()

    def hold(self) -> None:
        """Signal ``held`` and wait until ``release()`` (called by the handler)."""
        self._release.clear()
        self.held.set()
        try:
            if not self._release.wait(_HOLD_LIMIT):
                log.warning("held write was never released; answering anyway")
        finally:
            self.held.clear()


def retry_after_header(fault: Fault) -> dict[str, str]:
    """``Retry-After`` as the fault asks (none when ``retry_after`` is None)."""
    if fault.retry_after is None:
        return {}
    seconds = fault.retry_after
    return {"Retry-After": str(int(seconds)) if seconds == int(seconds) else str(seconds)}


def fault_reply(fault: Fault) -> Reply:
    """The answer a plain fault gives (``timeout`` is handled by the caller)."""
    if fault.kind == "429":
        return json_reply(429, {"errors": ["Simulated rate limit"]}, retry_after_header(fault))
    if fault.kind == "429-html":
        reply = html_reply(429, "<title>Error 1015</title>You are being rate limited")
        reply.headers.update(retry_after_header(fault))
        return reply
    if fault.kind == "400":
        return json_reply(400, {"errors": ["Simulated validation failure"]})
    if fault.kind in ("500-errors",):
        return json_reply(500, {"errors": ["Simulated failure"]})
    if fault.kind in ("500-bare", "apply-then-500-bare"):
        return html_reply(500, "Server Error")
    if fault.kind == "503":
        return html_reply(503, "Service Unavailable")
    if fault.kind == "502":
        return html_reply(502, "Bad Gateway")
    return Reply(drop=True)  # drop, apply-then-drop


class SandboxServer(ThreadingHTTPServer):
    """A threaded loopback server that knows its sandbox."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], sandbox: Sandbox) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.sandbox = sandbox

    @property
    def port(self) -> int:
        """The port the server is bound to."""
        return int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that gave up (timeouts, dropped connections) are part of the game.
        log.debug("sandbox connection error from %s", client_address, exc_info=True)


class BaseHandler(BaseHTTPRequestHandler):
    """Reads the request, calls ``dispatch`` and logs the exchange."""

    protocol_version = "HTTP/1.1"
    service = ""
    server: SandboxServer
    timeout = 30  # idle keep-alive connections release their thread eventually

    @property
    def sandbox(self) -> Sandbox:
        return self.server.sandbox

    def setup(self) -> None:
        super().setup()
        # Without this, Nagle's algorithm and delayed ACKs add ~40 ms to small answers.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s sandbox: " + format, self.service, *args)

    def header(self, name: str) -> str | None:
        """A request header, name compared case-insensitively."""
        return self.headers.get(name)

    def dispatch(self, method: str, path: str, query: str, body: Any, raw: bytes) -> Reply:
        raise NotImplementedError

    def logged_body(self, body: Any, raw: bytes) -> Any:
        """The body as the request log keeps it (a handler masks what must not be kept)."""
        return body

    def _handle(self, method: str) -> None:
        started = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        parts = urlsplit(self.path)
        try:
            reply = self.dispatch(method, parts.path, parts.query, body, raw)
        except Exception:  # a sandbox bug must reach the test as a 500, not a hung client
            log.exception("sandbox %s handler failed on %s %s", self.service, method, self.path)
            reply = json_reply(500, {"errors": ["Sandbox internal error"]})
        # Log before answering so a test that has its answer also sees the record.
        self.sandbox._record(
            RequestRecord(
                service=self.service,
                method=method,
                path=self.path,
                host=self.headers.get("Host", ""),
                headers=dict(self.headers.items()),
                body=self.logged_body(body, raw),
                status=0 if reply.drop else reply.status,
                started=started,
                finished=time.monotonic(),
            )
        )
        if reply.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        else:
            self._send(reply)

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if reply.body:
            self.wfile.write(reply.body)

    def hold_for(self, seconds: float) -> None:
        """Hold the answer (the ``timeout`` fault)."""
        time.sleep(seconds)
