"""INFIMA Reporting API client, the counts-file source, and the active-user rule.

Both sources answer the same two questions: which clients exist, and how many active users a
client has (``CountSource``).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import requests

from infima_autotask.errors import AuthenticationError, BadResponseError, UsageError
from infima_autotask.http import HttpClient, check_url_safe, register_secret
from infima_autotask.whole_number import (
    WholeNumberError,
    parse_whole,
    strip_spaces,
    whole_from_json,
)

log = logging.getLogger(__name__)

PAGE_LIMIT = 50  # INFIMA's maximum
# INFIMA user lists fetched at once. Each synced client costs one paged list (50 users a page),
# so at 20 ms a request 300 clients are ~900 requests: with 4 at a time that alone took ~5 s,
# seven times the Autotask floor. INFIMA documents no rate limit or thread limit; 16 keeps the
# load modest (one user list page per ~1 ms on a 20 ms link) while making the counts a small
# share of a month's run.
INFIMA_THREADS = 16
MAX_PAGES = 100_000


@dataclass(frozen=True)
class InfimaClientInfo:
    id: int
    name: str


class CountSource(Protocol):
    """Where user counts come from: the INFIMA API or a counts file."""

    def clients(self) -> list[InfimaClientInfo]: ...

    def active_users(self, client_id: int) -> int: ...


def count_active_users(users: list[dict[str, Any]], *, count_without_status: bool) -> int:
    """The billing rule: a user counts when its ``status`` is ``active`` (any case).

    When no user carries a ``status`` field, the count fails unless the operator chose to
    count every listed user (``infima.count_users_without_status``).

    Raises:
        BadResponseError: no user has a status and counting blindly was not allowed.
    """
    mistyped = [user for user in users if not isinstance(user.get("status"), str | None)]
    if mistyped:
        # A number or a list is not "inactive": counting it either way would guess.
        raise BadResponseError(
            f"INFIMA sent {len(mistyped)} user(s) whose status is not text; try again later."
        )
    with_status = [user for user in users if "status" in user]
    seen = sorted({key for user in users[:20] for key in user})
    log.info("INFIMA user fields seen: %s", ", ".join(seen) or "(no users)")
    if users and not with_status:
        if count_without_status:
            return len(users)
        raise BadResponseError(
            "INFIMA returned no user status; set infima.count_users_without_status: true "
            "to count every listed user."
        )
    return sum(1 for user in with_status if str(user.get("status") or "").lower() == "active")


class ApiKeyAuth(requests.auth.AuthBase):
    def __init__(self, key: str) -> None:
        self._key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["X-API-Key"] = self._key
        return request


class InfimaApi:
    """The INFIMA Reporting API: ``/v1/partner``, ``/v1/clients`` and
    ``/v1/clients/{id}/users``, paged by 50. (An INFIMA *client* is a customer:
    :class:`InfimaClientInfo`.)"""

    def __init__(
        self, http: HttpClient, base_url: str, api_key: str, *, count_without_status: bool = False
    ) -> None:
        check_url_safe(base_url)
        register_secret(api_key)
        self.http = http
        self.base = base_url.rstrip("/")
        self._auth = ApiKeyAuth(api_key)
        self.count_without_status = count_without_status

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        try:
            return self.http.request(
                "GET", self.base + path, auth=self._auth, params=params, retry=True
            )
        except AuthenticationError as exc:
            raise AuthenticationError(
                f"INFIMA rejected the API key (HTTP {exc.status}). Check that the key exists "
                "with scope Partner Level - All Clients (INFIMA: Settings > Integrations > API "
                "Keys), then run `infima-autotask connect --infima` again.",
                status=exc.status,
            ) from None

    def partner_name(self) -> str:
        body = self._get("/v1/partner")
        name = body.get("partner_name") if isinstance(body, dict) else None
        if not isinstance(name, str):
            raise BadResponseError("INFIMA's /v1/partner answer has no partner_name.")
        return name

    def _pages(self, path: str) -> Iterator[dict[str, Any]]:
        """Every item, page by page, until a page shorter than the limit."""
        for page in range(MAX_PAGES):
            body = self._get(path, {"limit": PAGE_LIMIT, "offset": page * PAGE_LIMIT})
            items = body.get("items") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise BadResponseError(f"INFIMA answered {path} without an item list.")
            if not all(isinstance(item, dict) for item in items):
                # Skipping them would silently bill fewer users.
                raise BadResponseError(f"INFIMA answered {path} with items that are not objects.")
            yield from items
            if len(items) < PAGE_LIMIT:
                return
        raise BadResponseError(f"INFIMA kept paging {path} past {MAX_PAGES} pages.")

    def clients(self) -> list[InfimaClientInfo]:
        found = []
        for item in self._pages("/v1/clients"):
            try:
                client_id = whole_from_json(item.get("id"), low=1)
            except WholeNumberError:
                raise BadResponseError(
                    "INFIMA listed a client without a usable numeric id."
                ) from None
            name = item.get("client_name")
            # A lone surrogate ("\ud800" in JSON) would break the terminal and the config.
            text = name.encode("utf-8", "replace").decode("utf-8") if isinstance(name, str) else ""
            found.append(InfimaClientInfo(client_id, text))
        return found

    def users(self, client_id: int) -> list[dict[str, Any]]:
        return list(self._pages(f"/v1/clients/{int(client_id)}/users"))

    def active_users(self, client_id: int) -> int:
        return count_active_users(
            self.users(client_id), count_without_status=self.count_without_status
        )


class CountsFile:
    """Counts from a CSV file: ``client_id,active_users[,client_name]``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._counts: dict[int, InfimaClientInfo] = {}
        self._users: dict[int, int] = {}
        self._load()

    def _load(self) -> None:
        try:
            with self.path.open(newline="", encoding="utf-8-sig") as handle:
                rows = list(csv.reader(handle))
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"Cannot read the counts file {self.path}: {exc.__class__.__name__}. "
                "Check the path (infima.counts_file or --counts-file)."
            ) from None
        except csv.Error as exc:
            raise UsageError(f"Counts file {self.path} is not valid CSV: {exc}.") from None
        if not rows:
            raise UsageError(
                f"Counts file {self.path} is empty; it needs the header client_id,active_users."
            )
        header = [cell.strip().lower() for cell in rows[0]]
        if header[:2] != ["client_id", "active_users"] or header[2:] not in ([], ["client_name"]):
            raise UsageError(
                f"Counts file {self.path}: the first line must be "
                "client_id,active_users[,client_name]."
            )
        problems: list[str] = []
        for line, row in enumerate(rows[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue
            problem = self._add(row, len(header))
            if problem:
                problems.append(f"line {line}: {problem}")
        if problems:
            raise UsageError(
                f"Counts file {self.path} has {len(problems)} bad row(s); fix them and run again.",
                problems,
            )
        if not self._users:
            raise UsageError(
                f"Counts file {self.path} has a header but no client rows; add one row "
                "client_id,active_users per client."
            )

    def _add(self, row: list[str], width: int) -> str | None:
        # client_name is optional on every row, even when the header names it.
        if not 2 <= len(row) <= width:
            return f"expected {'2 or 3' if width == 3 else width} columns, got {len(row)}"
        try:
            client_id = parse_whole(row[0], low=1, spaces=True)
        except WholeNumberError:
            return f"client_id must be a positive integer, got {strip_spaces(row[0])!r}"
        try:
            users = parse_whole(row[1], spaces=True)
        except WholeNumberError:
            return f"active_users must be a whole number >= 0, got {strip_spaces(row[1])!r}"
        if client_id in self._users:
            return f"client_id {client_id} appears twice"
        name = row[2].strip() if len(row) > 2 else ""
        self._counts[client_id] = InfimaClientInfo(client_id, name)
        self._users[client_id] = users
        return None

    def clients(self) -> list[InfimaClientInfo]:
        return list(self._counts.values())

    def active_users(self, client_id: int) -> int:
        try:
            return self._users[client_id]
        except KeyError:
            raise UsageError(
                f"Client {client_id} is not in the counts file {self.path}; add a row for it."
            ) from None
