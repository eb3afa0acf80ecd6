"""Autotask PSA REST client: zone lookup, auth, query with paging, get, create, thresholds.

Facts and pitfalls: ``AUTOTASK_API.md``. Every request goes through :class:`HttpClient`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any
from urllib.parse import SplitResult, urlsplit

import requests

from infima_autotask.credentials import AutotaskCredentials
from infima_autotask.errors import (
    ApiRejected,
    AuthenticationError,
    BadResponseError,
    UnsafeUrlError,
)
from infima_autotask.http import HttpClient, check_url_safe
from infima_autotask.whole_number import MAX_INT, WholeNumberError, whole_from_json

log = logging.getLogger(__name__)

DEFAULT_ZONE_URL = "https://webservices.autotask.net/atservicesrest/v1.0/zoneInformation"
PAGE_SIZE = 500
IN_CHUNK = 500  # Autotask limits a query to 500 OR conditions
MAX_IN_FLIGHT = 3  # thread limit per endpoint and tracking identifier
MAX_PAGES = 10_000  # a guard against a server that never stops paging

Record = dict[str, Any]


class AutotaskAuth(requests.auth.AuthBase):
    """Adds the three Autotask headers to a request."""

    def __init__(self, creds: AutotaskCredentials) -> None:
        self._creds = creds

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["ApiIntegrationCode"] = self._creds.integration_code
        request.headers["UserName"] = self._creds.username
        request.headers["Secret"] = self._creds.secret
        return request


@dataclass(frozen=True)
class Zone:
    name: str
    url: str  # as Autotask answers it, e.g. https://webservices5.autotask.net/ATServicesRest/


@dataclass(frozen=True)
class Threshold:
    used: int
    limit: int
    timeframe_minutes: int


def lookup_zone(http: HttpClient, username: str, zone_url: str | None = None) -> Zone:
    """Ask Autotask which zone serves ``username``; refuse answers pointing to a foreign host.

    Raises:
        ApiError: unknown user (exit 3), unreachable service, or an unsafe answer.
    """
    zone_url = zone_url or DEFAULT_ZONE_URL
    try:
        body = http.request("GET", zone_url, params={"user": username}, retry=True)
    except ApiRejected as exc:
        raise ApiRejected(
            f"Autotask could not find the zone of API user {username!r}"
            f"{': ' + '; '.join(exc.errors) if exc.errors else ''}. Check the username (it is the "
            "API user's e-mail-style login), or set INFIMA_AUTOTASK_API_URL to your zone's URL.",
            status=exc.status,
            errors=exc.errors,
        ) from None
    url = body.get("url") if isinstance(body, dict) else None
    parts = _split(url) if isinstance(url, str) and url else None
    if parts is None or not isinstance(url, str):
        raise BadResponseError("Autotask's zone lookup answered without a URL; try again later.")
    host = (parts.hostname or "").lower()
    zone_parts = _split(zone_url)
    zone_host = (zone_parts.hostname or "").lower() if zone_parts else ""
    trusted = (parts.scheme == "https" and host.endswith(".autotask.net")) or (
        zone_url != DEFAULT_ZONE_URL and host == zone_host
    )
    if not trusted:
        raise UnsafeUrlError(
            f"Autotask's zone lookup pointed to {host or url[:100]!r}, which is not an "
            "autotask.net host; nothing was sent there. Set INFIMA_AUTOTASK_API_URL if this "
            "is expected."
        )
    check_url_safe(url)
    name = body.get("zoneName")
    return Zone(name=name if isinstance(name, str) else "", url=url)


def _split(url: str) -> SplitResult | None:
    """``urlsplit``, or ``None`` for text it cannot split (``https://[broken``)."""
    try:
        parts = urlsplit(url)
        parts.hostname  # noqa: B018 - raises for a malformed IPv6 host too
    except ValueError:
        return None
    return parts


def rest_base(api_url: str) -> str:
    """``https://host/ATServicesRest/`` -> ``https://host/ATServicesRest/v1.0/``."""
    base = api_url if api_url.endswith("/") else api_url + "/"
    return base if base.lower().endswith("v1.0/") else base + "v1.0/"


def format_date(day: date) -> str:
    """The form Autotask takes for date-only fields: ``YYYY-MM-DDT00:00:00``."""
    return f"{day.isoformat()}T00:00:00"


def parse_datetime(value: Any) -> datetime | None:
    """Parse Autotask date-times leniently: with or without ``Z``, 0-7 fraction digits.

    Naive values are UTC. ``None`` or unparsable input gives ``None``.
    """
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    head, sep, rest = text.partition(".")
    if sep:
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        text = f"{head}.{(digits + '000000')[:6]}{rest}" if digits else head + rest
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def parse_date(value: Any) -> date | None:
    """The calendar date of an Autotask date field (date-only fields carry midnight)."""
    parsed = parse_datetime(value)
    return parsed.date() if parsed else None


def in_filter(field: str, values: Sequence[Any]) -> Record:
    return {"op": "in", "field": field, "value": list(values)}


def chunks(values: Iterable[Any], size: int = IN_CHUNK) -> Iterator[list[Any]]:
    """Split ``values`` (deduplicated, order kept) into lists of at most ``size``."""
    batch: list[Any] = []
    for value in dict.fromkeys(values):
        batch.append(value)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _count(value: Any) -> int:
    """A count Autotask sends as a number or as text (threshold counts); 0 or more.

    Raises:
        WholeNumberError: anything else (bool, negative, fractional, NaN, huge, ``"²"``).
    """
    return whole_from_json(value, floats=True, text=True)


class AutotaskApi:
    """The few Autotask entities the tool uses, with at most three requests in flight."""

    def __init__(self, http: HttpClient, api_url: str, creds: AutotaskCredentials) -> None:
        check_url_safe(api_url)
        self.http = http
        self.api_url = api_url
        self.base = rest_base(api_url)
        self._auth = AutotaskAuth(creds)
        self._slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)

    def _call(self, method: str, url: str, *, body: Any = None, retry: bool = True) -> Any:
        with self._slots:
            try:
                return self.http.request(method, url, auth=self._auth, json_body=body, retry=retry)
            except AuthenticationError as exc:
                raise AuthenticationError(
                    f"Autotask rejected the API username, secret or integration code "
                    f"(HTTP {exc.status}). Check them, then run `infima-autotask connect` again.",
                    status=exc.status,
                ) from None
            except ApiRejected as exc:
                # A wrong tracking identifier answers HTTP 500, not 401 (AUTOTASK_API.md).
                if any("integrationcode is invalid" in text.lower() for text in exc.errors):
                    raise AuthenticationError(
                        'Autotask rejected the integration code ("IntegrationCode is invalid."). '
                        "Copy the API user's tracking identifier from Autotask (Admin > "
                        "Resources/Users > the API user > API Tracking Identifier), then run "
                        "`infima-autotask connect` again.",
                        status=exc.status,
                        errors=exc.errors,
                    ) from None
                raise

    def threshold(self) -> Threshold:
        """This hour's API usage (``ThresholdInformation``)."""
        body = self._call("GET", self.base + "ThresholdInformation")
        try:
            threshold = Threshold(
                used=_count(body["currentTimeframeRequestCount"]),
                limit=_count(body["externalRequestThreshold"]),
                timeframe_minutes=_count(body.get("requestThresholdTimeframe") or 60),
            )
        except (TypeError, KeyError, AttributeError, WholeNumberError):
            threshold = None
        if threshold is None or threshold.limit <= 0:
            raise BadResponseError(
                "Autotask's ThresholdInformation answer is missing its counts; try again later."
            )
        return threshold

    def query(
        self, entity: str, filters: Sequence[Record], *, fields: Sequence[str] | None = None
    ) -> list[Record]:
        """Every record of ``entity`` matching ``filters`` (all pages)."""
        return list(self.iter_query(entity, filters, fields=fields))

    def iter_query(
        self, entity: str, filters: Sequence[Record], *, fields: Sequence[str] | None = None
    ) -> Iterator[Record]:
        """Yield matching records, POSTing the same body to each ``nextPageUrl``."""
        body: Record = {"maxRecords": PAGE_SIZE, "filter": list(filters)}
        if fields:
            body["includeFields"] = sorted({"id", *fields})
        url = f"{self.base}{entity}/query"
        for _ in range(MAX_PAGES):
            page = self._call("POST", url, body=body)
            items = page.get("items") if isinstance(page, dict) else None
            if not isinstance(items, list):
                raise BadResponseError(
                    f"Autotask answered a {entity} query without an item list; try again later."
                )
            if not all(isinstance(item, dict) for item in items):
                raise BadResponseError(
                    f"Autotask answered a {entity} query with items that are not records; "
                    "try again later."
                )
            yield from items
            details = page.get("pageDetails")
            next_url = details.get("nextPageUrl") if isinstance(details, dict) else None
            if not next_url or not items:
                return
            self._check_same_origin(str(next_url))
            url = str(next_url)
        raise BadResponseError(f"Autotask kept paging a {entity} query past {MAX_PAGES} pages.")

    def query_in(
        self,
        entity: str,
        field: str,
        values: Iterable[Any],
        *,
        filters: Sequence[Record] = (),
        fields: Sequence[str] | None = None,
    ) -> list[Record]:
        """Records whose ``field`` is in ``values``: one query per 500 values."""
        found: list[Record] = []
        for batch in chunks(values):
            found.extend(self.query(entity, [in_filter(field, batch), *filters], fields=fields))
        return found

    def get(self, entity: str, record_id: int) -> Record | None:
        """One record by id, or ``None`` when Autotask answers ``{"item": null}``."""
        body = self._call("GET", f"{self.base}{entity}/{int(record_id)}")
        if not isinstance(body, dict) or "item" not in body:
            raise BadResponseError(f"Autotask answered a {entity} read without an item.")
        item = body["item"]
        return item if isinstance(item, dict) else None

    def create(self, entity: str, body: Record) -> int | None:
        """Create one record; never retried. Returns Autotask's ``itemId`` when it sends one.

        A 2xx answer is an accepted create even when its body cannot be read: it is not one of
        the unknown outcomes (SPEC §8), so the caller must not send it again, only verify it.
        """
        try:
            answer = self._call("POST", f"{self.base}{entity}", body=body, retry=False)
        except BadResponseError as exc:
            if exc.status is None or not 200 <= exc.status < 300:
                raise
            log.info("%s create accepted (HTTP %d), answer unreadable", entity, exc.status)
            return None
        item_id = answer.get("itemId") if isinstance(answer, dict) else None
        try:
            # The id goes into the history: outside 64 bits it would fail there, after the write.
            return whole_from_json(item_id, low=-MAX_INT)
        except WholeNumberError:
            return None

    def picklist(self, entity: str, field: str) -> dict[int, str]:
        """The ``value -> label`` picklist of one field (``entityInformation/fields``)."""
        return self.picklists(entity, (field,)).get(field, {})

    def picklists(self, entity: str, names: Sequence[str]) -> dict[str, dict[int, str]]:
        """The ``value -> label`` picklists of several fields of an entity, in one request.

        A field that is missing or not a picklist gets an empty mapping.
        """
        body = self._call("GET", f"{self.base}{entity}/entityInformation/fields")
        fields = body.get("fields") if isinstance(body, dict) else None
        wanted = {name.lower(): name for name in names}
        found: dict[str, dict[int, str]] = {name: {} for name in names}
        for info in fields if isinstance(fields, list) else []:
            if not isinstance(info, dict):
                continue
            name = wanted.get(str(info.get("name", "")).lower())
            if name is None:
                continue
            values = info.get("picklistValues")
            for item in values if isinstance(values, list) else []:
                try:
                    value = whole_from_json(item["value"], low=-MAX_INT, floats=True, text=True)
                    found[name][value] = str(item["label"])
                except (TypeError, KeyError, WholeNumberError):
                    continue
        return found

    def _check_same_origin(self, url: str) -> None:
        ours, theirs = urlsplit(self.base), _split(url)
        if theirs is None or (ours.scheme, ours.netloc.lower()) != (
            theirs.scheme,
            theirs.netloc.lower(),
        ):
            shown = theirs.netloc if theirs is not None and theirs.netloc else url[:100]
            raise UnsafeUrlError(
                f"Autotask's next-page link points to another host ({shown!r}); "
                "refusing to follow it with credentials."
            )
