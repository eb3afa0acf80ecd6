"""ConnectWise PSA REST client: site and codebase, auth, conditions, paging, one PATCH.

Facts and sources: ``PSA_CONNECTWISE_HALO.md`` §1. Every request goes through
:class:`HttpClient` (timeouts, read retries honouring ``Retry-After``, URL safety, redaction).

- ``site`` is what the MSP types (``na.myconnectwise.net``, an on-premises host, or a full
  URL); a cloud site is sent to its API host (``na.`` -> ``api-na.``, as ConnectWise's Cloud
  URLs table says), and so is the codebase lookup. Only the scheme, host and port are kept.
- The codebase comes from ``GET {site}/login/companyinfo/{company}`` (no credentials). After
  the first 404 of an API call it is looked up once more; when it moved, the call is sent
  again (a 404 was not applied, so this is safe for the PATCH too).
- Reads ask for 1,000 records a page and follow ``Link: <...>; rel="next"`` until none.
- The only write is a JSON Patch ``replace`` of an addition's ``quantity`` (absolute) and
  optionally ``unitCost``. No method here sends PUT (it resets fields not sent), POST or DELETE.
"""

from __future__ import annotations

import base64
import logging
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlsplit

import requests

from infima_autotask.connectwise.model import (
    Addition,
    Agreement,
    Company,
    SystemInfo,
    parse_addition,
    parse_agreement,
    parse_company,
    parse_system_info,
)
from infima_autotask.errors import (
    ApiRejected,
    AuthenticationError,
    BadResponseError,
    UnsafeUrlError,
    UsageError,
)
from infima_autotask.http import (
    Answer,
    HttpClient,
    register_secret,
    typed_address,
)
from infima_autotask.whole_number import MAX_INT

log = logging.getLogger(__name__)

# ConnectWise's "Cloud URLs" (PSA_CONNECTWISE_HALO.md §1.1): the host a user logs in to and
# the host its API answers on.
CLOUD_API_HOSTS = {
    "na.myconnectwise.net": "api-na.myconnectwise.net",
    "eu.myconnectwise.net": "api-eu.myconnectwise.net",
    "au.myconnectwise.net": "api-au.myconnectwise.net",
    "aus.myconnectwise.net": "api-aus.myconnectwise.net",
    "za.myconnectwise.net": "api-za.myconnectwise.net",
    "staging.connectwisedev.com": "api-staging.connectwisedev.com",
}
PAGE_SIZE = 1000  # ConnectWise's hard maximum
MAX_PAGES = 10_000  # a guard against a server that never stops paging
# No published rate limit; cloud tenants answer 429 behind Cloudflare. Two at a time keeps a
# run well clear of it while reads of many mappings still overlap.
MAX_IN_FLIGHT = 2

T = TypeVar("T")


@dataclass(frozen=True)
class ConnectWiseCredentials:
    """What an API call needs. ``private_key`` is the only secret (``client_id`` is the
    MSP's own integration id from developer.connectwise.com and lives in the config)."""

    site: str
    company_id: str
    public_key: str
    private_key: str = field(repr=False)
    client_id: str


class ConnectWiseAuth(requests.auth.AuthBase):
    """Basic ``company+public:private`` and the ``clientId`` header, on every API call."""

    def __init__(self, creds: ConnectWiseCredentials) -> None:
        login = f"{creds.company_id}+{creds.public_key}:{creds.private_key}"
        self._token = base64.b64encode(login.encode("utf-8")).decode("ascii")
        self._client_id = creds.client_id
        register_secret(creds.private_key)
        register_secret(self._token)  # the header value carries the private key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Basic {self._token}"
        request.headers["clientId"] = self._client_id
        return request


def site_origin(site: str) -> str:
    """``scheme://host[:port]`` of the API for the site the MSP typed.

    No scheme means https. A cloud login host is replaced by its API host; any other host
    (on-premises, or already ``api-*``) is kept. Path, query and fragment are dropped.

    Raises:
        UsageError: an empty or malformed site.
        UnsafeUrlError: plain http off this machine.
    """
    address = typed_address(
        site,
        empty="The ConnectWise site is empty. Use the host you log in to, e.g. "
        "na.myconnectwise.net, or your on-premises server's host.",
        malformed=f"The ConnectWise site {site.strip()[:100]!r} is not a host name. Use the "
        "host you log in to, e.g. na.myconnectwise.net.",
    )
    return address.origin(CLOUD_API_HOSTS.get(address.host, address.host))


def _codebase(value: Any) -> str | None:
    """A codebase as companyinfo answers it (``v4_6_release/``); None when unusable."""
    if not isinstance(value, str):
        return None
    text = value.strip().strip("/")
    allowed = text and all(c.isascii() and (c.isalnum() or c in "._-") for c in text)
    if not allowed or text in (".", ".."):
        return None
    return text + "/"


def lookup_codebase(http: HttpClient, origin: str, company_id: str) -> str:
    """The codebase (``v2025_1/``) from ``GET {origin}/login/companyinfo/{company_id}``.

    Sent without credentials. Raises:
        ApiRejected: ConnectWise does not know the company (it answers JSON ``null``) or
            refused the lookup.
        BadResponseError: an answer without a usable ``Codebase``.
        ApiUnavailable: no answer.
    """
    url = f"{origin}/login/companyinfo/{quote(company_id, safe='')}"
    try:
        body = http.request("GET", url, retry=True)
    except AuthenticationError:
        raise
    except ApiRejected as exc:
        raise ApiRejected(
            f"ConnectWise at {origin} could not look up company {company_id!r} "
            f"(HTTP {exc.status}). Check the site: it is the host you log in to, e.g. "
            "na.myconnectwise.net, or your on-premises server.",
            status=exc.status,
            errors=exc.errors,
        ) from None
    if body is None:
        raise ApiRejected(
            f"ConnectWise at {origin} does not know the company id {company_id!r}. Use the "
            "value typed in the Company box when logging in (it is case-sensitive, and is not "
            "the company's display name)."
        )
    codebase = _codebase(body.get("Codebase")) if isinstance(body, dict) else None
    if codebase is None:
        raise BadResponseError(
            f"ConnectWise's company lookup at {origin} answered without a usable Codebase; "
            "check the site, or try again later."
        )
    return codebase


def quote_condition(text: str) -> str:
    """``text`` as a double-quoted string of the ``conditions`` language.

    Backslashes and double quotes are escaped with a backslash (the escape rule is
    UNCONFIRMED on a tenant; the simulator follows it).

    Raises:
        UsageError: control characters (a line break cannot be part of a condition).
    """
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise UsageError("A ConnectWise search text cannot contain line breaks or tabs.")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def patch_body(quantity: int, unit_cost: float | None = None) -> list[dict[str, Any]]:
    """The JSON Patch that makes an addition show ``quantity`` (and ``unit_cost``).

    ``quantity`` is absolute: the target, never a difference.

    Raises:
        UsageError: a quantity that is not a whole number 0 or more, or a unit cost that is
            not a finite number 0 or more. Nothing is sent then.
    """
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 0 <= quantity <= MAX_INT:
        raise UsageError(
            f"Refusing to send quantity {quantity!r} to ConnectWise: a quantity must be a "
            "whole number, 0 or more."
        )
    operations: list[dict[str, Any]] = [{"op": "replace", "path": "quantity", "value": quantity}]
    if unit_cost is not None:
        if (
            isinstance(unit_cost, bool)
            or not isinstance(unit_cost, int | float)
            or not math.isfinite(unit_cost)
            or unit_cost < 0
        ):
            raise UsageError(
                f"Refusing to send unit cost {unit_cost!r} to ConnectWise: a unit cost must be "
                "a number, 0 or more."
            )
        operations.append({"op": "replace", "path": "unitCost", "value": unit_cost})
    return operations


def _next_link(value: str | None) -> str | None:
    """The ``rel="next"`` URL of a ``Link`` header, if any."""
    if not value:
        return None
    for link in requests.utils.parse_header_links(value):
        rels = str(link.get("rel", "")).lower().split()
        if "next" in rels and link.get("url"):
            return str(link["url"])
    return None


class ConnectWiseApi:
    """The few ConnectWise resources the tool uses, at most two requests in flight.

    ``codebase`` is the one stored by ``connect``; without it, the first call looks it up.
    """

    def __init__(
        self, http: HttpClient, creds: ConnectWiseCredentials, *, codebase: str | None = None
    ) -> None:
        self.http = http
        self.creds = creds
        self.origin = site_origin(creds.site)
        self._auth = ConnectWiseAuth(creds)
        self._codebase = _codebase(codebase) if codebase else None
        self._refetched = False
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)

    # --- plumbing ------------------------------------------------------------------------

    @property
    def codebase(self) -> str:
        """The codebase in use (looked up on first use when not given)."""
        with self._lock:
            if self._codebase is None:
                self._codebase = lookup_codebase(self.http, self.origin, self.creds.company_id)
            return self._codebase

    @property
    def base(self) -> str:
        """``https://{host}/{codebase}apis/3.0/``."""
        return f"{self.origin}/{self.codebase}apis/3.0/"

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        retry: bool = True,
    ) -> Answer:
        codebase = self.codebase
        try:
            return self._send(method, path, params=params, body=body, retry=retry)
        except ApiRejected as exc:
            if exc.status != 404 or isinstance(exc, AuthenticationError):
                raise
            with self._lock:
                if self._refetched:
                    raise
                self._refetched = True
            moved = lookup_codebase(self.http, self.origin, self.creds.company_id)
            if moved == codebase:
                raise
            log.info("ConnectWise codebase moved from %s to %s; sending again", codebase, moved)
            with self._lock:
                self._codebase = moved
        return self._send(method, path, params=params, body=body, retry=retry)

    def _send(
        self, method: str, path: str, *, params: dict[str, Any] | None, body: Any, retry: bool
    ) -> Answer:
        with self._slots:
            try:
                return self.http.exchange(
                    method,
                    self.base + path,
                    auth=self._auth,
                    json_body=body,
                    params=params,
                    retry=retry,
                )
            except AuthenticationError as exc:
                if exc.status == 403:
                    raise AuthenticationError(
                        "ConnectWise refused the API member access (HTTP 403): its security "
                        "role lacks a permission. The tool needs Companies > Company "
                        "Maintenance: Inquire, and Finance > Agreements: Inquire and Edit "
                        "(ConnectWise: System > Security Roles).",
                        status=exc.status,
                        errors=exc.errors,
                    ) from None
                raise AuthenticationError(
                    f"ConnectWise rejected the company id, public key or private key "
                    f"(HTTP {exc.status}). Check them (System > Members > API Members > the "
                    "member > API Keys), then run `infima-autotask connect --psa connectwise` "
                    "again.",
                    status=exc.status,
                ) from None
            except ApiRejected as exc:
                said = " ".join([exc.message, *exc.errors]).lower()
                if exc.status == 400 and "clientid" in said:
                    raise AuthenticationError(
                        "ConnectWise refused the clientId (HTTP 400). Register the tool as a "
                        "private integration at https://developer.connectwise.com/ClientID, "
                        "then run `infima-autotask connect --psa connectwise` with that id.",
                        status=exc.status,
                        errors=exc.errors,
                    ) from None
                raise

    def _get_one(self, path: str, parse: Callable[[Any], T]) -> T | None:
        """One record, or None when ConnectWise answers 404 (after the codebase check)."""
        try:
            body = self._call("GET", path).body
        except ApiRejected as exc:
            if exc.status == 404 and not isinstance(exc, AuthenticationError):
                return None
            raise
        return parse(body)

    def _get_all(self, path: str, what: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Every record of a list, 1,000 a page, following ``rel="next"`` links."""
        return list(self._pages(path, what, params or {}))

    def _pages(self, path: str, what: str, params: dict[str, Any]) -> Iterator[Any]:
        current: dict[str, Any] = {**params, "pageSize": PAGE_SIZE, "page": 1}
        seen: set[frozenset[tuple[str, str]]] = set()
        for _ in range(MAX_PAGES):
            seen.add(frozenset((k, str(v)) for k, v in current.items()))
            answer = self._call("GET", path, params=current)
            if not isinstance(answer.body, list):
                raise BadResponseError(
                    f"ConnectWise answered a read of {what} without a list; try again later."
                )
            yield from answer.body
            link = _next_link(answer.headers.get("Link"))
            if link is None or not answer.body:
                return
            current = {**current, **self._link_params(link, path)}
            if frozenset((k, str(v)) for k, v in current.items()) in seen:
                raise BadResponseError(
                    f"ConnectWise's next-page link for {what} points back to a page already "
                    "read; try again later."
                )
        raise BadResponseError(f"ConnectWise kept paging {what} past {MAX_PAGES} pages.")

    def _link_params(self, link: str, path: str) -> dict[str, str]:
        """The query of a next-page link, which must point to the same resource here.

        The link's parameters (``page``, ``pageId``...) are laid over the request's own, so
        the conditions stay those the tool sent even if a link left them out.
        """
        try:
            parts = urlsplit(link)
            netloc = parts.netloc.lower()
        except ValueError:
            raise BadResponseError("ConnectWise sent a next-page link that is not a URL.") from None
        ours = urlsplit(self.origin)
        if (parts.scheme.lower(), netloc) != (ours.scheme, ours.netloc.lower()):
            raise UnsafeUrlError(
                f"ConnectWise's next-page link points to another host ({netloc[:100]!r}); "
                "refusing to follow it with credentials."
            )
        if not parts.path.rstrip("/").lower().endswith("apis/3.0/" + path.lower()):
            raise BadResponseError(
                f"ConnectWise's next-page link for {path} points to {parts.path[:100]!r}."
            )
        return dict(parse_qsl(parts.query, keep_blank_values=True))

    # --- reads ---------------------------------------------------------------------------

    def system_info(self) -> SystemInfo:
        """``GET /system/info``: the connection test (codebase, auth and clientId)."""
        return parse_system_info(self._call("GET", "system/info").body)

    def find_companies(self, name: str, *, include_deleted: bool = False) -> list[Company]:
        """Companies whose name contains ``name`` (all of them for an empty text).

        Companies in the recycle bin (``deletedFlag``) are left out unless asked for.
        """
        term = name.strip()
        params = {"conditions": f"name contains {quote_condition(term)}"} if term else {}
        records = self._get_all("company/companies", "companies", params)
        companies = [parse_company(record) for record in records]
        return [c for c in companies if include_deleted or not c.deleted]

    def company(self, company_id: int) -> Company | None:
        """One company, or None when there is none with that id."""
        found = self._get_one(f"company/companies/{_path_id(company_id)}", parse_company)
        if found is not None and found.id != company_id:
            raise BadResponseError(
                f"ConnectWise answered company {company_id} with company {found.id}."
            )
        return found

    def agreements(self, company_id: int) -> list[Agreement]:
        """Every agreement of a company, whatever its status."""
        records = self._get_all(
            "finance/agreements",
            f"the agreements of company {company_id}",
            {"conditions": f"company/id={_path_id(company_id)}"},
        )
        agreements = [parse_agreement(record) for record in records]
        strays = sorted({a.company_id for a in agreements} - {company_id})
        if strays:
            # A condition the server ignored would otherwise offer another company's lines.
            raise BadResponseError(
                f"ConnectWise answered the agreements of company {company_id} with agreements "
                f"of company {strays[0]}; try again later."
            )
        return agreements

    def agreement(self, agreement_id: int) -> Agreement | None:
        """One agreement, or None when there is none with that id."""
        found = self._get_one(f"finance/agreements/{_path_id(agreement_id)}", parse_agreement)
        if found is not None and found.id != agreement_id:
            raise BadResponseError(
                f"ConnectWise answered agreement {agreement_id} with agreement {found.id}."
            )
        return found

    def additions(self, agreement_id: int) -> list[Addition]:
        """Every addition of an agreement, cancelled ones included."""
        records = self._get_all(
            f"finance/agreements/{_path_id(agreement_id)}/additions",
            f"the additions of agreement {agreement_id}",
        )
        return [parse_addition(record, agreement_id) for record in records]

    def addition(self, agreement_id: int, addition_id: int) -> Addition | None:
        """One addition of an agreement, or None when the agreement has no such addition."""
        path = f"finance/agreements/{_path_id(agreement_id)}/additions/{_path_id(addition_id)}"
        found = self._get_one(path, lambda body: parse_addition(body, agreement_id))
        if found is not None and found.id != addition_id:
            raise BadResponseError(
                f"ConnectWise answered addition {addition_id} with addition {found.id}."
            )
        return found

    # --- the one write -------------------------------------------------------------------

    def patch_addition(
        self,
        agreement_id: int,
        addition_id: int,
        quantity: int,
        unit_cost: float | None = None,
    ) -> Addition | None:
        """Make an addition show ``quantity`` (absolute), and ``unit_cost`` when given.

        Never retried here: after an unknown outcome (ApiUnavailable) the caller re-reads.
        Returns the updated addition ConnectWise answers with, or None when the write was
        accepted (2xx) but its answer cannot be read: then verify by reading, never resend.

        Raises:
            UsageError: a negative or fractional quantity, or a bad unit cost (nothing sent).
            ApiRejected: refused, not applied. ApiUnavailable: outcome unknown.
        """
        body = patch_body(quantity, unit_cost)
        path = f"finance/agreements/{_path_id(agreement_id)}/additions/{_path_id(addition_id)}"
        try:
            answer = self._call("PATCH", path, body=body, retry=False)
        except BadResponseError as exc:
            if exc.status is None or not 200 <= exc.status < 300:
                raise
            log.info(
                "addition %s: PATCH accepted (HTTP %d), answer unreadable", addition_id, exc.status
            )
            return None
        try:
            updated = parse_addition(answer.body, agreement_id)
        except BadResponseError as exc:
            log.info("addition %s: PATCH accepted, answer unusable: %s", addition_id, exc)
            return None
        return updated if updated.id == addition_id else None


def _path_id(value: int) -> int:
    """A record id for a URL path or a condition; refuses anything but a positive int."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT:
        raise UsageError(f"{value!r} is not a ConnectWise record id (a whole number from 1).")
    return value
