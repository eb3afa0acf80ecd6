"""HaloPSA REST client: OAuth2 client credentials, paging, pacing, one kind of write.

Facts and sources: ``PSA_CONNECTWISE_HALO.md`` §2; the simulator (``sandbox/halo.py``) serves
the same wire protocol, described there. Every request goes through :class:`HttpClient`
(timeouts, read retries honouring ``Retry-After``, URL safety, redaction), paced by a
:class:`RollingLimit` that keeps a run under hosted Halo's 300 requests per rolling 5 minutes
(authinfo, token and every retry attempt included).

- ``GET {url}/api/authinfo`` names the authorisation server; the token comes from
  ``POST {auth_url}/token[?tenant=T]`` (form, client credentials) and lives in memory only.
  It is renewed within 60 s of its expiry, and once after a 401 (the request is then sent
  once more: a 401 was not applied, so this is safe for the POST too).
- Reads ask for 1,000 records a page (``pageinate=true``, ``page_no`` from 1) until
  ``record_count`` records or a short page.
- The only write is ``POST /api/SoftwareLicence`` with ``[{"id": L, "client_id": C,
  "count": T}]``. An entry without ``id`` would CREATE a subscription: nothing here can send
  one. No method sends DELETE, or POSTs anything else.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests

from infima_autotask.errors import (
    ApiRejected,
    AuthenticationError,
    BadResponseError,
    UsageError,
)
from infima_autotask.halo.model import (
    HaloClient,
    Licence,
    RecurringLine,
    parse_client,
    parse_licence,
    parse_recurring_lines,
)
from infima_autotask.http import (
    Answer,
    HttpClient,
    RollingLimit,
    check_url_safe,
    register_secret,
    typed_address,
)
from infima_autotask.whole_number import MAX_INT

log = logging.getLogger(__name__)

SERVICE = "HaloPSA"
PAGE_SIZE = 1000  # Halo's maximum page size
MAX_PAGES = 10_000  # a guard against a server that never stops paging
SCOPES = "read:customers read:invoices edit:softwarelicensing"
WRITE_SCOPE = "edit:softwarelicensing"
RENEW_BEFORE_S = 60.0  # a token this close to its expiry is renewed before use
ERROR_TEXT_MAX = 300
PERMISSIONS = (
    "the API application's agent needs Customers Read Only and Software Licensing Read and "
    "Modify, and the application the scopes read:customers, read:invoices and "
    "edit:softwarelicensing (Halo: Configuration > Integrations > HaloPSA API > View "
    "Applications)"
)

T = TypeVar("T")


@dataclass(frozen=True)
class HaloCredentials:
    """What the token request needs. ``client_secret`` is the only secret; ``secret_from``
    names the environment variable it came from (a refusal then says to fix or unset it)."""

    url: str
    client_id: str
    client_secret: str = field(repr=False)
    tenant: str | None = None
    secret_from: str | None = None


def halo_base(url: str) -> str:
    """``scheme://host[:port][/path]`` of the Halo instance the MSP typed, without a trailing
    ``/`` or ``/api``. No scheme means https.

    Raises:
        UsageError: an empty or malformed URL.
        UnsafeUrlError: plain http off this machine.
    """
    address = typed_address(
        url,
        empty="The HaloPSA URL is empty. Use your Halo web address, e.g. https://acme.halopsa.com.",
        malformed=f"The HaloPSA URL {url.strip()[:100]!r} is not a web address. Use your Halo "
        "web address, e.g. https://acme.halopsa.com.",
    )
    path = address.path.rstrip("/")
    if path.lower().endswith("/api"):
        path = path[: -len("/api")]
    return address.origin() + path


def error_text(body: Any, raw: str) -> str:
    """An error answer's text as Halo sends it (UNCONFIRMED shape): a JSON string, an
    object's ``errors``, ``error_description``, ``message`` or ``ClassName``/``Message``,
    else the raw text; trimmed to 300 characters."""
    text = ""
    if isinstance(body, str):
        text = body
    elif isinstance(body, list):
        text = "; ".join(str(e) for e in body if isinstance(e, str))
    elif isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            text = "; ".join(str(e.get("message", e) if isinstance(e, dict) else e) for e in errors)
        elif isinstance(errors, str):
            text = errors
        else:
            for key in ("error_description", "message"):
                if isinstance(body.get(key), str) and body[key].strip():
                    text = body[key]
                    break
            else:
                if isinstance(body.get("Message"), str):
                    name = body.get("ClassName")
                    text = (
                        f"{name}: {body['Message']}" if isinstance(name, str) else body["Message"]
                    )
                elif isinstance(body.get("error"), str):
                    text = body["error"]
    elif body is None and raw.strip():
        text = raw
    if not text and body is not None and not isinstance(body, dict | list):
        text = raw
    # The message this text goes into ends with its own full stop.
    return " ".join(text.split())[:ERROR_TEXT_MAX].rstrip(".")


class _Bearer(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float  # on the pacer's clock
    scopes: frozenset[str] | None  # None: the answer did not say


class HaloApi:
    """The few Halo resources the tool uses, every request paced.

    The :class:`HttpClient` given is this client's own: its pacing and its error texts
    become Halo's. ``pacer`` (default: 290 requests per 300 s on the real clock) is shared by
    every Halo client of a run; its clock also times the token.
    """

    def __init__(
        self, http: HttpClient, creds: HaloCredentials, *, pacer: RollingLimit | None = None
    ) -> None:
        self.http = http
        self.creds = creds
        self.base = halo_base(creds.url)
        self.pacer = pacer or RollingLimit()
        http.pace = self.pacer.wait
        http.error_text = error_text
        register_secret(creds.client_secret)
        self._token: _Token | None = None
        self._auth_url: str | None = None
        self._lock = threading.Lock()

    # --- authentication ------------------------------------------------------------------

    def connect(self) -> frozenset[str] | None:
        """Read authinfo and get a token now (``connect`` and ``status``); the scopes granted,
        or None when Halo did not say."""
        with self._lock:
            self._token = self._new_token()
            return self._token.scopes

    def auth_url(self) -> str:
        """The authorisation server from ``GET /api/authinfo``; ``{url}/auth`` when it cannot
        be read."""
        if self._auth_url is None:
            fallback = self.base + "/auth"
            try:
                body = self.http.request("GET", self.base + "/api/authinfo", retry=True)
            except (ApiRejected, BadResponseError) as exc:
                log.info("HaloPSA authinfo unreadable (%s); using %s", exc.message, fallback)
                body = None
            found = body.get("auth_url") if isinstance(body, dict) else None
            url = found.strip().rstrip("/") if isinstance(found, str) and found.strip() else None
            if url is not None:
                # The client secret goes there: the same rule as for any credential.
                check_url_safe(url + "/")
            self._auth_url = url or fallback
            log.debug("HaloPSA authorisation server: %s", self._auth_url)
        return self._auth_url

    def _new_token(self) -> _Token:
        token_url = self.auth_url() + "/token"
        form = {
            "grant_type": "client_credentials",
            "client_id": self.creds.client_id,
            "client_secret": self.creds.client_secret,
            "scope": SCOPES,
        }
        params = {"tenant": self.creds.tenant} if self.creds.tenant else None
        started = self.pacer.clock()
        try:
            body = self.http.request(
                "POST", token_url, form=form, params=params, retry=True, shown_as="token"
            )
        except ApiRejected as exc:
            raise self._token_refused(exc) from None
        record = body if isinstance(body, dict) else {}
        value = record.get("access_token")
        if not isinstance(value, str) or len(value) < 4:
            raise BadResponseError(
                "HaloPSA answered the token request without an access token; check the URL "
                "(your Halo web address), or try again later."
            )
        register_secret(value)
        lifetime = record.get("expires_in")
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = 3600.0  # Halo's usual lifetime; a 401 renews it anyway
        granted = record.get("scope")
        scopes = frozenset(granted.split()) if isinstance(granted, str) else None
        log.debug("HaloPSA token for %.0fs, scopes %s", lifetime, granted)
        return _Token(value, started + float(lifetime), scopes)

    def _token_refused(self, exc: ApiRejected) -> AuthenticationError:
        said = f": {exc.message.split('): ', 1)[-1].rstrip('.')}" if "): " in exc.message else ""
        tenant = (
            f"the tenant ({self.creds.tenant!r})"
            if self.creds.tenant
            else "for hosted Halo the tenant (--tenant, the name in https://TENANT.halopsa.com)"
        )
        if exc.status in (404, 405):  # no token endpoint there: the URL, not the secret
            return AuthenticationError(
                f"HaloPSA has no token endpoint at {self.auth_url()}/token (HTTP {exc.status}). "
                "Check the URL: your Halo web address, e.g. https://acme.halopsa.com, without "
                "/auth or /api; then run `infima-autotask connect --psa halo` again.",
                status=exc.status,
                errors=exc.errors,
            )
        then = (
            f"the client secret came from {self.creds.secret_from} in the environment, which "
            f"wins over the keyring: correct it there, or unset {self.creds.secret_from}"
            if self.creds.secret_from
            else "then run `infima-autotask connect --psa halo` again"
        )
        return AuthenticationError(
            f"HaloPSA refused the token request (HTTP {exc.status}){said}. Check the client id "
            "and secret, that the API application's Authentication method is Client ID and "
            f"Secret, and {tenant}; {then}.",
            status=exc.status,
            errors=exc.errors,
        )

    def _bearer(self, *, renew_from: str | None = None) -> _Bearer:
        """The current token, renewed when near its expiry or when it is ``renew_from`` (the
        one a 401 answered; another thread may have renewed it already)."""
        with self._lock:
            token = self._token
            stale = token is None or self.pacer.clock() >= token.expires_at - RENEW_BEFORE_S
            if stale or (token is not None and token.value == renew_from):
                self._token = self._new_token()
            assert self._token is not None  # noqa: S101 - set just above
            return _Bearer(self._token.value)

    @property
    def scopes(self) -> frozenset[str] | None:
        """The scopes granted to the current token (None: unknown, or no token yet)."""
        return self._token.scopes if self._token is not None else None

    # --- plumbing ------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        retry: bool = True,
    ) -> Answer:
        """One API call with the token; after a 401 a new token and the call once more."""
        bearer = self._bearer()
        try:
            return self._send(method, path, bearer, params=params, body=body, retry=retry)
        except AuthenticationError as exc:
            if exc.status != 401:
                raise self._forbidden(exc) from None
            log.info("HaloPSA answered 401 to %s %s; renewing the token once", method, path)
        bearer = self._bearer(renew_from=bearer.token)
        try:
            return self._send(method, path, bearer, params=params, body=body, retry=retry)
        except AuthenticationError as exc:
            if exc.status != 401:
                raise self._forbidden(exc) from None
            raise AuthenticationError(
                f"HaloPSA rejected a new access token (HTTP 401, {method} /api/{path}). Check "
                f"that the API application is active and that {PERMISSIONS}.",
                status=exc.status,
                errors=exc.errors,
            ) from None

    def _forbidden(self, exc: AuthenticationError) -> AuthenticationError:
        said = exc.message.split("): ", 1)[1].rstrip(".") if "): " in exc.message else ""
        missing = f" (Halo says: {said})" if said else ""
        return AuthenticationError(
            f"HaloPSA refused the request (HTTP {exc.status}): a permission is missing"
            f"{missing}. Writing a subscription's count needs Software Licensing Read and "
            f"Modify on the agent and the edit:softwarelicensing scope: {PERMISSIONS}.",
            status=exc.status,
            errors=exc.errors,
        )

    def _send(
        self,
        method: str,
        path: str,
        bearer: _Bearer,
        *,
        params: dict[str, Any] | None,
        body: Any,
        retry: bool,
    ) -> Answer:
        return self.http.exchange(
            method,
            f"{self.base}/api/{path}",
            auth=bearer,
            json_body=body,
            params=params,
            retry=retry,
        )

    def _get_one(self, path: str, parse: Callable[[Any], T]) -> T | None:
        """One record, or None when Halo answers 404."""
        try:
            body = self._call("GET", path).body
        except ApiRejected as exc:
            if exc.status == 404 and not isinstance(exc, AuthenticationError):
                return None
            raise
        return parse(body)

    def _pages(self, path: str, key: str, what: str, params: dict[str, Any]) -> Iterator[Any]:
        """Every record of a list: ``page_size`` 1,000 from ``page_no`` 1, until
        ``record_count`` records were read or a page comes back short."""
        collected = 0
        for page in range(1, MAX_PAGES + 1):
            query = {**params, "pageinate": "true", "page_size": PAGE_SIZE, "page_no": page}
            answer = self._call("GET", path, params=query).body
            records = answer.get(key) if isinstance(answer, dict) else None
            if not isinstance(records, list):
                raise BadResponseError(
                    f"HaloPSA answered a read of {what} without a {key!r} list; try again later."
                )
            total = answer.get("record_count")
            yield from records
            collected += len(records)
            known = isinstance(total, int) and not isinstance(total, bool)
            if len(records) < PAGE_SIZE or (known and collected >= total):
                return
        raise BadResponseError(f"HaloPSA kept paging {what} past {MAX_PAGES} pages.")

    # --- reads ---------------------------------------------------------------------------

    def test(self) -> int | None:
        """One cheap read (the first client) for ``connect`` and ``status``: the number of
        clients Halo reports, or None when it does not say."""
        params = {"pageinate": "true", "page_size": 1, "page_no": 1}
        body = self._call("GET", "Client", params=params).body
        if not isinstance(body, dict) or not isinstance(body.get("clients"), list):
            raise BadResponseError(
                "HaloPSA answered the client list without a 'clients' list; check the URL "
                "(your Halo web address)."
            )
        total = body.get("record_count")
        return total if isinstance(total, int) and not isinstance(total, bool) else None

    def clients(
        self, search: str | None = None, include_inactive: bool = False
    ) -> list[HaloClient]:
        """Clients whose name contains ``search`` (every client when empty); inactive ones
        only when asked for."""
        params: dict[str, Any] = {}
        term = (search or "").strip()
        if term:
            params["search"] = term
        if include_inactive:
            params["includeinactive"] = "true"
        found = [parse_client(r) for r in self._pages("Client", "clients", "clients", params)]
        return [c for c in found if include_inactive or not c.inactive]

    def client(self, client_id: int) -> HaloClient | None:
        """One client, or None when there is none with that id."""
        found = self._get_one(f"Client/{_path_id(client_id)}", parse_client)
        if found is not None and found.id != client_id:
            raise BadResponseError(f"HaloPSA answered client {client_id} with client {found.id}.")
        return found

    def licences(
        self, client_id: int | None = None, include_inactive: bool = True
    ) -> list[Licence]:
        """Subscriptions (``SoftwareLicence``) of one client or of every client; without
        ``include_inactive`` those inactive or deleted are left out."""
        params: dict[str, Any] = {}
        if client_id is not None:
            params["client_id"] = _path_id(client_id)
        if include_inactive:
            params["includeinactive"] = "true"
        what = "subscriptions" if client_id is None else f"the subscriptions of client {client_id}"
        found = [parse_licence(r) for r in self._pages("SoftwareLicence", "licences", what, params)]
        if client_id is not None:
            strays = sorted({lic.client_id for lic in found} - {client_id})
            if strays:
                # A filter the server ignored would otherwise offer another client's lines.
                raise BadResponseError(
                    f"HaloPSA answered the subscriptions of client {client_id} with ones of "
                    f"client {strays[0]}; try again later."
                )
        return [lic for lic in found if include_inactive or (lic.is_active and not lic.deleted)]

    def licence(self, licence_id: int) -> Licence | None:
        """One subscription, or None when there is none with that id."""
        found = self._get_one(f"SoftwareLicence/{_path_id(licence_id)}", parse_licence)
        if found is not None and found.id != licence_id:
            raise BadResponseError(
                f"HaloPSA answered subscription {licence_id} with subscription {found.id}."
            )
        return found

    def recurring_lines(self, client_id: int) -> list[RecurringLine]:
        """Every line of the client's recurring invoices, with the subscriptions each takes
        its quantity from."""
        params = {"client_id": _path_id(client_id), "includelines": "true"}
        what = f"the recurring invoices of client {client_id}"
        lines: list[RecurringLine] = []
        for invoice in self._pages("RecurringInvoice", "invoices", what, params):
            owner = invoice.get("client_id") if isinstance(invoice, dict) else None
            if owner is not None and owner != client_id:
                raise BadResponseError(
                    f"HaloPSA answered {what} with an invoice of client {owner!r}; try again later."
                )
            lines.extend(parse_recurring_lines(invoice))
        return lines

    # --- the one write -------------------------------------------------------------------

    def set_count(self, licence_id: int, client_id: int, count: int) -> Licence | None:
        """Make a subscription show ``count`` (absolute): ``POST /api/SoftwareLicence`` with
        exactly ``[{"id": licence_id, "client_id": client_id, "count": count}]``.

        Never retried here, but once after a 401 (not applied). A 429 is ApiUnavailable and
        not sent again: the caller re-reads, as after any unknown outcome. Returns the saved
        record Halo answers with (an object, or the entry of an array with our id), or None
        when the answer cannot be read: then verify by reading, never resend.

        Raises:
            UsageError: an id that is not a positive whole number, or a count that is not a
                whole number 0 or more (nothing is sent).
            ApiRejected: refused, not applied. ApiUnavailable: outcome unknown.
        """
        body = count_body(licence_id, client_id, count)
        try:
            answer = self._call("POST", "SoftwareLicence", body=body, retry=False)
        except BadResponseError as exc:
            if exc.status is None or not 200 <= exc.status < 300:
                raise
            log.info("subscription %s: POST accepted, answer unreadable", licence_id)
            return None
        found = answer.body
        if isinstance(found, list):
            found = next(
                (e for e in found if isinstance(e, dict) and e.get("id") == licence_id), None
            )
        if not isinstance(found, dict):
            log.info("subscription %s: POST accepted, no readable record", licence_id)
            return None
        try:
            saved = parse_licence(found)
        except BadResponseError as exc:
            log.info("subscription %s: POST accepted, answer unusable: %s", licence_id, exc)
            return None
        return saved if saved.id == licence_id else None


def count_body(licence_id: int, client_id: int, count: int) -> list[dict[str, int]]:
    """The one body the tool ever POSTs to Halo: an update of an existing subscription.

    Raises:
        UsageError: a missing or non-positive id (an entry without ``id`` would create a
            subscription), or a count that is not a whole number 0 or more.
    """
    for name, value in (("subscription id", licence_id), ("client id", client_id)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT:
            raise UsageError(
                f"Refusing to write to HaloPSA without a {name} (got {value!r}): an entry "
                "without one would create a subscription."
            )
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_INT:
        raise UsageError(
            f"Refusing to send count {count!r} to HaloPSA: a count must be a whole number, "
            "0 or more."
        )
    body = [{"id": licence_id, "client_id": client_id, "count": count}]
    log.debug("HaloPSA write: %s", json.dumps(body))
    return body


def _path_id(value: int) -> int:
    """A record id for a URL path or a filter; refuses anything but a positive int."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT:
        raise UsageError(f"{value!r} is not a HaloPSA record id (a whole number from 1).")
    return value
