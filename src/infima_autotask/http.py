"""The one HTTP choke point: timeouts, the read retry loop, URL safety and redaction.

Every API client sends every request through :meth:`HttpClient.request` (or
:meth:`HttpClient.exchange`, which also returns the answer's headers). Reads (GET and
query POSTs) are retried on 429/502/503/504 and connection errors with exponential backoff
and jitter, honouring ``Retry-After``. Creates are never retried here: SPEC §8 resolves a
write whose outcome is unknown by re-reading first.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from infima_autotask import __version__
from infima_autotask.errors import (
    ApiRejected,
    ApiUnavailable,
    AuthenticationError,
    BadResponseError,
    RequestNotSent,
    UnsafeUrlError,
    UsageError,
)
from infima_autotask.fsutil import make_private_dirs, write_atomically

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = (10.0, 60.0)  # connect, read (seconds)
USER_AGENT = f"infima-autotask/{__version__}"
RETRY_STATUSES = frozenset({429, 502, 503, 504})

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a secret so :class:`RedactSecrets` masks it in any log record."""
    if value and len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """Replace every registered secret in ``text`` with ``***``."""
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, "***")
    return text


class RedactSecrets(logging.Filter):
    """Logging filter that masks registered secrets in the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_safe_url(url: str) -> bool:
    """SPEC §4: https to any host, or plain http to loopback only."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    if parts.scheme == "https" and host:
        return True
    return parts.scheme == "http" and is_loopback(host)


def shown_url(url: str, suffix: str = "") -> str:
    """A URL that carries a token (a webhook, a healthcheck), safe to print or log:
    ``scheme://host/…`` (plus a ``suffix`` that is no secret, such as ``/fail``)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port
    except ValueError:
        return "(an unreadable URL)"
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    netloc = host + (f":{port}" if port is not None else "")
    return f"{parts.scheme or '?'}://{netloc}/…{suffix}"


def check_url_safe(url: str) -> None:
    """Refuse to send credentials anywhere but https, or plain http to loopback (SPEC §4).

    Raises:
        UnsafeUrlError: for any other scheme or host.
    """
    if is_safe_url(url):
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    raise UnsafeUrlError(
        f"Refusing to send credentials to {parts.scheme}://{host or '?'}: only https, or http to "
        "this machine (127.0.0.1, localhost), is allowed. Fix the URL in the config or environment."
    )


@dataclass(frozen=True)
class TypedAddress:
    """A web address as the operator typed it, taken apart (host lower-case)."""

    scheme: str
    host: str
    port: int | None
    path: str

    def origin(self, host: str | None = None) -> str:
        """``scheme://host[:port]``, with ``host`` in place of the typed one when given.

        Raises:
            UnsafeUrlError: plain http off this machine.
        """
        name = host or self.host
        netloc = f"[{name}]" if ":" in name else name
        origin = f"{self.scheme}://{netloc}{f':{self.port}' if self.port else ''}"
        check_url_safe(origin + "/")
        return origin


def typed_address(text: str, *, empty: str, malformed: str) -> TypedAddress:
    """What an operator typed as a site or URL: no scheme means https; a user or password
    in it, no host or a bad port is refused (``empty``/``malformed``: the error texts).

    Raises:
        UsageError: an empty or malformed address.
    """
    typed = text.strip()
    if not typed:
        raise UsageError(empty)
    if "://" not in typed:
        typed = "https://" + typed
    try:
        parts = urlsplit(typed)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        host, port = "", None
    if not host or parts.username is not None or parts.password is not None:
        raise UsageError(malformed)
    return TypedAddress(parts.scheme.lower(), host, port, parts.path)


@dataclass(frozen=True)
class Answer:
    """A parsed answer and its headers (ConnectWise pages by ``Link`` header)."""

    body: Any
    headers: Mapping[str, str]


class RollingLimit:
    """At most ``max_requests`` requests in any ``window_s`` seconds: :meth:`wait` blocks
    until one more may be sent, then counts it. Thread-safe.

    The default is HaloPSA's hosted limit (300 requests per rolling 5 minutes) less a margin:
    our clock and Halo's are not the same clock, and Halo counts a request when it arrives.
    """

    def __init__(
        self,
        max_requests: int = 290,
        window_s: float = 300.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        cancel: threading.Event | None = None,
        ledger: Path | None = None,
    ) -> None:
        if max_requests < 1 or window_s <= 0:
            raise ValueError("a rolling limit needs at least one request in a positive window")
        self.max_requests = max_requests
        self.window_s = window_s
        self.clock = clock
        # Set on Ctrl-C: a request still waiting its turn is never sent (a wait may be minutes).
        self.cancel = cancel
        self._sleep: Callable[[float], object] = sleep or (
            cancel.wait if cancel is not None else (lambda seconds: time.sleep(seconds))
        )
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()
        # The window's send times, kept between commands: the server counts every request
        # of the last window, this command's or the one just before it (a rerun after Ctrl-C).
        # The clock is the system's monotonic one, the same in every process until a reboot.
        self.ledger = ledger
        self._loaded = ledger is None

    def wait(self) -> None:
        """Block until a request may be sent without passing the limit, and count it.

        Raises:
            RequestNotSent: ``cancel`` was set before the request's turn came.
        """
        # The lock is held while sleeping: a waiting thread would only queue behind it.
        with self._lock:
            while True:
                if self.cancel is not None and self.cancel.is_set():
                    raise RequestNotSent(
                        "not sent: the run was interrupted while the request waited for the "
                        "rate limit"
                    )
                now = self.clock()
                # The least wait keeps float rounding (a sleep that ends a hair before the
                # window does) from spinning without the clock moving.
                self._load(now)
                while self._sent and self._sent[0] + self.window_s <= now:
                    self._sent.popleft()
                if len(self._sent) < self.max_requests:
                    self._sent.append(now)
                    self._save()
                    return
                delay = max(self._sent[0] + self.window_s - now, 1e-3)
                log.info(
                    "pacing: %d requests in %.0fs; waiting %.1fs",
                    len(self._sent),
                    self.window_s,
                    delay,
                )
                self._sleep(delay)

    __call__ = wait

    def _load(self, now: float) -> None:
        """The earlier commands' send times still in the window (once; unreadable: none)."""
        if self._loaded or self.ledger is None:
            return
        self._loaded = True
        try:
            stamps = json.loads(self.ledger.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if not isinstance(stamps, list):
            return
        # After a reboot the clock starts again: stamps from "the future" are stale.
        kept = sorted(
            float(t)
            for t in stamps
            if isinstance(t, int | float)
            and not isinstance(t, bool)
            and now - self.window_s < t <= now
        )
        self._sent.extend(kept[-self.max_requests :])

    def _save(self) -> None:
        if self.ledger is None:
            return
        try:
            make_private_dirs(self.ledger.parent)
            write_atomically(self.ledger, json.dumps(list(self._sent)).encode("utf-8"))
        except OSError as exc:  # pacing goes on in memory; only the next command loses it
            log.info("cannot keep the request window in %s: %s", self.ledger, exc)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of the read retry loop."""

    max_attempts: int = 6
    max_total_wait: float = 180.0
    base_delay: float = 1.0
    max_delay: float = 60.0


class HttpClient:
    """A requests session per thread behind one ``request`` method.

    ``service`` ("Autotask" or "INFIMA") names the other side in error messages.
    """

    def __init__(
        self,
        service: str,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
        pace: Callable[[], None] | None = None,
        error_text: Callable[[Any, str], str] | None = None,
    ) -> None:
        self.service = service
        self.timeout = timeout
        # Called before every attempt (retries included) when set: a server's rate limit.
        self.pace = pace
        # A server's own error shapes: (parsed body or None, raw text) -> the text shown.
        self.error_text = error_text
        self.retry = retry or RetryPolicy()
        # Looked up at call time when not injected, so tests can patch time.sleep.
        self._sleep = sleep or (lambda seconds: time.sleep(seconds))
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._environment: dict[str, dict[str, Any]] = {}

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # The environment (proxies, CA bundle) is read once per host in _settings(), not
            # on every request: that look-up was a quarter of each request's CPU time.
            session.trust_env = False
            session.headers["User-Agent"] = USER_AGENT
            session.headers["Accept"] = "application/json"
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _settings(self, url: str) -> dict[str, Any]:
        """Proxies and CA bundle from the environment for this URL's host, read once.

        TLS verification stays on: the result is ``True`` or a CA bundle path, never False.
        """
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._sessions_lock:
            cached = self._environment.get(origin)
        if cached is None:
            with requests.Session() as probe:
                merged = probe.merge_environment_settings(origin + "/", {}, None, True, None)
            cached = {
                "proxies": merged["proxies"],
                "verify": merged["verify"] or True,
                "cert": merged["cert"],
            }
            with self._sessions_lock:
                self._environment[origin] = cached
        return cached

    def close(self) -> None:
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        auth: requests.auth.AuthBase | None = None,
        json_body: Any = None,
        text_body: str | None = None,
        form: Mapping[str, str] | None = None,
        params: dict[str, Any] | None = None,
        retry: bool,
        shown_as: str | None = None,
        expect_json: bool = True,
    ) -> Any:
        """Send one request and return its parsed JSON body (``None`` for an empty body).

        ``retry`` is True for reads only. ``shown_as`` names a URL that carries a token (a
        webhook) in logs and errors instead of its path. With ``expect_json`` False any 2xx
        answer is success and its body is ignored (webhooks answer ``ok``, ``1`` or nothing).
        ``form`` is sent form-encoded and never logged (an OAuth token request carries a
        secret). Raises ApiRejected, AuthenticationError, ApiUnavailable, BadResponseError or
        UnsafeUrlError.
        """
        return self.exchange(
            method,
            url,
            auth=auth,
            json_body=json_body,
            text_body=text_body,
            form=form,
            params=params,
            retry=retry,
            shown_as=shown_as,
            expect_json=expect_json,
        ).body

    def exchange(
        self,
        method: str,
        url: str,
        *,
        auth: requests.auth.AuthBase | None = None,
        json_body: Any = None,
        text_body: str | None = None,
        form: Mapping[str, str] | None = None,
        params: dict[str, Any] | None = None,
        retry: bool,
        shown_as: str | None = None,
        expect_json: bool = True,
    ) -> Answer:
        """:meth:`request`, returning the answer's headers with its parsed body."""
        # Every request, not only authenticated ones: the zone lookup carries the username.
        check_url_safe(url)
        started = time.monotonic()
        slept = 0.0
        attempt = 0
        while True:
            attempt += 1
            if self.pace is not None:
                self.pace()
            try:
                return self._send_once(
                    method,
                    url,
                    auth=auth,
                    json_body=json_body,
                    text_body=text_body,
                    form=form,
                    params=params,
                    where=f"{method} {shown_as or _path(url)}",
                    expect_json=expect_json,
                )
            except ApiUnavailable as exc:
                if not retry:
                    raise
                delay = self._backoff(attempt, exc.retry_after)
                # Count the sleeps too: an injected sleep does not move the monotonic clock.
                waited = max(time.monotonic() - started, slept)
                if attempt >= self.retry.max_attempts or waited + delay > self.retry.max_total_wait:
                    raise
                where = shown_as or _path(url)
                log.info("%s %s: %s; retry %d in %.1fs", method, where, exc, attempt, delay)
                self._sleep(delay)
                slept += delay

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return max(0.0, retry_after)
        ceiling = min(self.retry.max_delay, self.retry.base_delay * 2 ** (attempt - 1))
        # Full jitter spreads retries of several threads; not security sensitive.
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311

    def _send_once(
        self,
        method: str,
        url: str,
        *,
        auth: requests.auth.AuthBase | None,
        json_body: Any,
        text_body: str | None,
        form: Mapping[str, str] | None,
        params: dict[str, Any] | None,
        where: str,
        expect_json: bool,
    ) -> Answer:
        settings = self._settings(url)
        headers = {"Content-Type": "text/plain; charset=utf-8"} if text_body is not None else None
        data: Any = text_body.encode("utf-8") if text_body is not None else form
        t0 = time.monotonic()
        try:
            response = self._session().request(
                method,
                url,
                auth=auth,
                json=json_body,
                data=data,
                headers=headers,
                params=params,
                timeout=self.timeout,
                allow_redirects=False,  # a redirect would carry credential headers elsewhere
                proxies=settings["proxies"],
                verify=settings["verify"],
                cert=settings["cert"],
            )
        except requests.Timeout as exc:
            raise ApiUnavailable(
                f"{self.service} did not answer in time ({where}). "
                "Check the network and the service status, then run again."
            ) from exc
        except requests.ConnectionError as exc:
            raise ApiUnavailable(
                f"Could not connect to {self.service} ({where}): {_reason(exc)}. "
                "Check the network and the URL, then run again."
            ) from exc
        except requests.RequestException as exc:
            raise ApiUnavailable(
                f"{self.service} request failed ({where}): {_reason(exc)}."
            ) from exc
        elapsed = time.monotonic() - t0
        log.debug("%s -> HTTP %d in %.2fs", where, response.status_code, elapsed)
        if log.isEnabledFor(logging.DEBUG) and json_body is not None:
            log.debug("request body: %s", redact(json.dumps(json_body)[:2000]))
        return Answer(self._parse(response, where, expect_json=expect_json), response.headers)

    def _parse(self, response: requests.Response, where: str, *, expect_json: bool = True) -> Any:
        status = response.status_code
        body = _json_or_none(response)
        errors = _errors_of(body)
        if 200 <= status < 300:
            if not response.content or not expect_json:
                return None
            if body is _NOT_JSON:
                raise BadResponseError(
                    f"{self.service} answered {where} with something that is not JSON "
                    f"(HTTP {status}). Try again later; if it persists, check the API URL.",
                    status=status,
                )
            return body
        if self.error_text is not None:
            text = redact(self.error_text(None if body is _NOT_JSON else body, response.text))
        else:
            text = "; ".join(errors) or _message_of(body)
        shown = f": {text}" if text else ""
        if status in (401, 403):
            raise AuthenticationError(
                f"{self.service} rejected the credentials (HTTP {status}, {where}){shown}.",
                status=status,
                errors=errors,
            )
        if status in RETRY_STATUSES or (status >= 500 and not errors):
            raise ApiUnavailable(
                f"{self.service} is unavailable (HTTP {status}, {where}){shown}. Try again later.",
                status=status,
                retry_after=_retry_after(response.headers.get("Retry-After")),
                errors=errors,
            )
        if 300 <= status < 400:
            raise ApiRejected(
                f"{self.service} answered {where} with a redirect (HTTP {status}); "
                "check the API URL.",
                status=status,
            )
        raise ApiRejected(
            f"{self.service} refused {where} (HTTP {status}){shown}.", status=status, errors=errors
        )


_NOT_JSON = object()


def _json_or_none(response: requests.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return _NOT_JSON


def _errors_of(body: Any) -> list[str]:
    """The ``{"errors": [...]}`` texts (strings or ``{message}`` objects); else ``[]``."""
    raw = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(raw, list):
        return []
    texts: Iterable[Any] = (item.get("message") if isinstance(item, dict) else item for item in raw)
    return [redact(str(text))[:500] for text in texts if text]


def _message_of(body: Any) -> str:
    """A bare ``{"message": ...}`` text, shown to the user but never taken for ``errors``."""
    if not isinstance(body, dict):
        return ""
    message = body.get("message") or body.get("Message")
    return redact(message)[:500] if isinstance(message, str) else ""


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _reason(exc: Exception) -> str:
    text = str(exc.__context__ or exc) if isinstance(exc, requests.ConnectionError) else str(exc)
    # urllib3 reasons are long and repeat the URL; keep the tail, which names the cause.
    text = text.rsplit(": ", 1)[-1].strip("'\" ")
    # Drop the wrapping exceptions' closing brackets, keep the cause's own "(... known)".
    while text.endswith(")") and text.count(")") > text.count("("):
        text = text[:-1].rstrip("'\" ")
    return redact(text)[:200] or type(exc).__name__
