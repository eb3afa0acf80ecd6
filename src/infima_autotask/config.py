"""The config file (SPEC §6): strict validation into frozen dataclasses, load and save.

Every problem in a file is collected and reported at once in a ``ConfigError`` whose
``details`` hold one ``<key path>: <what is wrong>`` line per problem. The YAML text itself
(reading with the duplicate-key check, dumping, the atomic write) is ``config_yaml``'s.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
import zoneinfo
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import config_yaml
from .config_yaml import describe, key_path
from .errors import ConfigError
from .http import is_safe_url, shown_url
from .whole_number import MAX_INT

log = logging.getLogger(__name__)

DEFAULT_INFIMA_URL = "https://app.infimasecapis.com"
CONFIG_VERSION = 1  # what a file with only Autotask mappings keeps
VERSIONS = (1, 2)  # 2: other PSAs (SPEC §10); every version 1 file stays valid as it is

AUTOTASK, CONNECTWISE, HALO = "autotask", "connectwise", "halo"
PSAS = (AUTOTASK, CONNECTWISE, HALO)
COUNT_PSAS = (CONNECTWISE, HALO)  # a line holds one current count, written as an absolute value
PSA_NAMES = {AUTOTASK: "Autotask", CONNECTWISE: "ConnectWise", HALO: "HaloPSA"}

_VALIDATE_HINT = "fix them and run `infima-autotask validate`."


@dataclass(frozen=True)
class AutotaskSettings:
    """The `autotask` section: who the tool is and where the zone lives (no secret here)."""

    username: str | None = None
    integration_code: str | None = None
    api_url: str | None = None
    # IANA name of the tenant's time zone: the effectiveDate of a write lands on its date there.
    timezone: str | None = None


@dataclass(frozen=True)
class ConnectWiseSettings:
    """The `connectwise` section (config version 2); the private key is never here."""

    site: str | None = None  # na.myconnectwise.net, or an on-premises host
    company_id: str | None = None  # the company id typed at ConnectWise's login
    public_key: str | None = None
    client_id: str | None = None  # the MSP's own clientId from ConnectWise's developer portal
    codebase: str | None = None  # written by `connect` ("v2025_1/")


@dataclass(frozen=True)
class HaloSettings:
    """The `halo` section (config version 2); the client secret is never here."""

    url: str | None = None
    tenant: str | None = None  # hosted Halo only
    client_id: str | None = None


@dataclass(frozen=True)
class InfimaSettings:
    """The `infima` section."""

    api_url: str = DEFAULT_INFIMA_URL
    counts_file: str | None = None
    count_users_without_status: bool = False


@dataclass(frozen=True)
class SyncSettings:
    """The `sync` section: period time zone, cost overwrite, safety limits and proration."""

    timezone: str | None = None
    overwrite_cost: bool = False
    unit_cost: float | None = None
    max_decrease_percent: float = 50
    max_increase_percent: float | None = None
    allow_zero: bool = False
    max_api_usage_percent: float = 80
    # True: write on the 1st even inside a billing period (a proration Autotask cannot delete).
    prorate: bool = False


WEBHOOK_FORMATS = ("slack", "teams")
DEFAULT_SMTP_PORT = 587


@dataclass(frozen=True)
class EmailSettings:
    """`notify.email`: where the run's result is mailed (the password is never here)."""

    host: str
    to: tuple[str, ...]
    sender: str  # the `from` key
    port: int = DEFAULT_SMTP_PORT
    username: str | None = None


@dataclass(frozen=True)
class NotifySettings:
    """The `notify` section (SPEC §11). The URLs carry tokens: never in repr, logs or output."""

    webhook_url: str | None = field(default=None, repr=False)
    webhook_format: str | None = None  # None: decided by the URL's host (Slack, Teams), else JSON
    healthcheck_url: str | None = field(default=None, repr=False)
    dry_runs: bool = False
    email: EmailSettings | None = None

    @property
    def configured(self) -> bool:
        """Whether any channel is set up."""
        return bool(self.webhook_url or self.healthcheck_url or self.email)


@dataclass(frozen=True)
class ClientMapping:
    """One INFIMA client mapped to one PSA line, with its overrides.

    Every PSA's line is held in the same three ids, so the engine needs no PSA's words:
    ``contract_id``, ``contract_service_id`` and ``service_id`` are Autotask's contract,
    contract service and service; ConnectWise's agreement, addition and product
    (``agreement_id``, ``addition_id``, ``product_id`` in the file); for Halo the subscription
    is the ``contract_service_id`` (``subscription_id`` in the file) and the other two are 0.
    """

    client_id: int
    account_id: int
    contract_id: int
    contract_service_id: int
    service_id: int
    client_name: str | None = None
    account_name: str | None = None
    contract_name: str | None = None
    service_name: str | None = None
    enabled: bool = True
    exclude_users: int = 0
    min_units: int | None = None
    max_units: int | None = None
    unit_cost: float | None = None
    overwrite_cost: bool | None = None
    prorate: bool | None = None
    note: str | None = None
    psa: str = AUTOTASK

    def effective_overwrite_cost(self, sync: SyncSettings) -> bool:
        """The mapping's `overwrite_cost`, else the `sync` default (never for Halo)."""
        if self.psa == HALO:
            return False
        return sync.overwrite_cost if self.overwrite_cost is None else self.overwrite_cost

    def effective_prorate(self, sync: SyncSettings) -> bool:
        """The mapping's `prorate`, else the `sync` default."""
        return sync.prorate if self.prorate is None else self.prorate

    def effective_unit_cost(self, sync: SyncSettings) -> float | None:
        """The mapping's `unit_cost`, else the `sync` default."""
        return sync.unit_cost if self.unit_cost is None else self.unit_cost


@dataclass(frozen=True)
class Config:
    """The whole config file."""

    version: int = CONFIG_VERSION
    state_dir: str | None = None
    autotask: AutotaskSettings = field(default_factory=AutotaskSettings)
    infima: InfimaSettings = field(default_factory=InfimaSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    notify: NotifySettings | None = None  # None: no `notify` section in the file
    mappings: tuple[ClientMapping, ...] = ()
    connectwise: ConnectWiseSettings | None = None
    halo: HaloSettings | None = None

    @property
    def needs_version_2(self) -> bool:
        """Another PSA is set up or mapped: the file must say ``version: 2``."""
        others = any(mapping.psa != AUTOTASK for mapping in self.mappings)
        return others or self.connectwise is not None or self.halo is not None

    def connected_psas(self, *, autotask_from_env: bool = False) -> tuple[str, ...]:
        """The PSAs connected: those whose section ``connect`` wrote, and Autotask when its
        username comes from the environment (``autotask_from_env``)."""
        found = []
        if self.autotask.username or autotask_from_env:
            found.append(AUTOTASK)
        if self.connectwise is not None and self.connectwise.site:
            found.append(CONNECTWISE)
        if self.halo is not None and self.halo.url:
            found.append(HALO)
        return tuple(found)

    def default_psa(self, *, autotask_from_env: bool = False) -> str:
        """What ``--psa`` means when not given (SPEC §10): the only connected PSA, else
        Autotask."""
        connected = self.connected_psas(autotask_from_env=autotask_from_env)
        return connected[0] if len(connected) == 1 else AUTOTASK

    def mapping_for(self, client_id: int) -> ClientMapping | None:
        """The mapping of `client_id`, or None."""
        for mapping in self.mappings:
            if mapping.client_id == client_id:
                return mapping
        return None

    def with_mapping(self, mapping: ClientMapping) -> Config:
        """A copy with `mapping` replacing that client's mapping in place, or appended."""
        mappings = list(self.mappings)
        for index, existing in enumerate(mappings):
            if existing.client_id == mapping.client_id:
                mappings[index] = mapping
                break
        else:
            mappings.append(mapping)
        return replace(self, mappings=tuple(mappings))

    def without_mapping(self, client_id: int) -> Config:
        """A copy without the mapping of `client_id`; KeyError when there is none."""
        kept = tuple(m for m in self.mappings if m.client_id != client_id)
        if len(kept) == len(self.mappings):
            raise KeyError(client_id)
        return replace(self, mappings=kept)


# --- key order of SPEC §6 (also the known keys of each level) -------------------------

_TOP_KEYS = (
    "version",
    "state_dir",
    "autotask",
    "connectwise",
    "halo",
    "infima",
    "sync",
    "notify",
    "mappings",
)
_AUTOTASK_KEYS = ("username", "integration_code", "api_url", "timezone")
_CONNECTWISE_KEYS = ("site", "company_id", "public_key", "client_id", "codebase")
_HALO_KEYS = ("url", "tenant", "client_id")
_INFIMA_KEYS = ("api_url", "counts_file", "count_users_without_status")
_SYNC_KEYS = (
    "timezone",
    "overwrite_cost",
    "unit_cost",
    "max_decrease_percent",
    "max_increase_percent",
    "allow_zero",
    "max_api_usage_percent",
    "prorate",
)
_NOTIFY_KEYS = ("webhook_url", "webhook_format", "healthcheck_url", "dry_runs", "email")
_EMAIL_KEYS = ("host", "port", "username", "from", "to")
_MAPPING_KEYS = (
    "client_id",
    "client_name",
    "account_id",
    "account_name",
    "contract_id",
    "contract_name",
    "contract_service_id",
    "service_id",
    "service_name",
    "enabled",
    "exclude_users",
    "min_units",
    "max_units",
    "unit_cost",
    "overwrite_cost",
    "prorate",
    "note",
)
_ID_KEYS = ("client_id", "account_id", "contract_id", "contract_service_id", "service_id")
_OVERRIDE_KEYS = _MAPPING_KEYS[_MAPPING_KEYS.index("enabled") :]
# Each PSA's words in the file for the line's ids and names (file key -> ClientMapping field).
_LINE_KEYS: dict[str, dict[str, str]] = {
    AUTOTASK: {
        key: key
        for key in ("account_id", "account_name", "contract_id", "contract_name")
        + ("contract_service_id", "service_id", "service_name")
    },
    CONNECTWISE: {
        "account_id": "account_id",
        "account_name": "account_name",
        "agreement_id": "contract_id",
        "agreement_name": "contract_name",
        "addition_id": "contract_service_id",
        "product_id": "service_id",
        "product_name": "service_name",
    },
    HALO: {
        "account_id": "account_id",
        "account_name": "account_name",
        "subscription_id": "contract_service_id",
        "subscription_name": "service_name",
    },
}
# Overrides that mean nothing on a PSA, with the reason the operator reads.
_NOT_FOR: dict[str, dict[str, str]] = {
    AUTOTASK: {},
    CONNECTWISE: {"prorate": "ConnectWise keeps no billing periods to prorate"},
    HALO: {
        "prorate": "Halo keeps no billing periods to prorate",
        "overwrite_cost": "a Halo subscription has no unit cost to overwrite",
        "unit_cost": "a Halo subscription has no unit cost to overwrite",
    },
}


def not_for(psa: str, key: str) -> str | None:
    """Why the override ``key`` means nothing on ``psa`` (None: it applies)."""
    return _NOT_FOR[psa].get(key)


def line_key(psa: str, field_name: str) -> str:
    """The file's word for a line field on ``psa`` (``contract_service_id`` is ConnectWise's
    ``addition_id``)."""
    for key, name in _LINE_KEYS[psa].items():
        if name == field_name:
            return key
    return field_name


def _mapping_keys(psa: str) -> tuple[str, ...]:
    overrides = tuple(key for key in _OVERRIDE_KEYS if key not in _NOT_FOR[psa])
    return ("client_id", "client_name", "psa", *_LINE_KEYS[psa], *overrides)


# Company 0 is real in Autotask: every tenant's own organization. Other ids start at 1.
_ZERO_ALLOWED_IDS = frozenset({"account_id"})


# --- validation ----------------------------------------------------------------------

_MISSING: Any = object()  # key absent from the document
_BAD: Any = object()  # value present but invalid (already reported)


class _Section:
    """Reads one YAML mapping, reporting unknown keys and bad values into `problems`."""

    def __init__(
        self, data: dict[Any, Any], prefix: str, known: tuple[str, ...], problems: list[str]
    ) -> None:
        self.data = data
        self.prefix = prefix
        self.problems = problems
        for key in data:
            if key in known:
                continue
            message = "unknown key"
            if isinstance(key, str):
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                if close:
                    message += f"; did you mean '{close[0]}'?"
            problems.append(f"{key_path(prefix, key)}: {message}")

    def report(self, key: str, message: str) -> Any:
        self.problems.append(f"{key_path(self.prefix, key)}: {message}")
        return _BAD

    def _get(self, key: str, *, required: bool = False) -> Any:
        value = self.data.get(key, _MISSING)
        if value is _MISSING and required:
            return self.report(key, "missing (required)")
        return value

    def integer(
        self,
        key: str,
        default: Any = None,
        *,
        required: bool = False,
        positive: bool = False,
        nullable: bool = False,
    ) -> Any:
        value = self._get(key, required=required)
        if value is _MISSING:
            return default
        if value is _BAD or (value is None and nullable):
            return value
        kind = "a positive integer" if positive else "an integer of 0 or more"
        if nullable:
            kind += ", or null"
        if not isinstance(value, int) or isinstance(value, bool):
            return self.report(key, f"must be {kind}, got {describe(value)}")
        if value < (1 if positive else 0):
            return self.report(key, f"must be {kind}, got {describe(value)}")
        if value > MAX_INT:
            return self.report(key, f"too large (at most {MAX_INT}), got {describe(value)}")
        return value

    def number(
        self,
        key: str,
        default: Any,
        *,
        nullable: bool = False,
        low: float = 0,
        high: float | None = None,
        low_exclusive: bool = False,
    ) -> Any:
        value = self._get(key)
        if value is _MISSING:
            return default
        if value is None and nullable:
            return None
        if high is None:
            kind = f"a number of {low:g} or more"
        elif low_exclusive:
            kind = f"a number greater than {low:g} and at most {high:g}"
        else:
            kind = f"a number from {low:g} to {high:g}"
        if nullable:
            kind += ", or null"
        bad = f"must be {kind}, got {describe(value)}"
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return self.report(key, bad)
        if isinstance(value, int) and value.bit_length() > 63:
            return self.report(key, f"too large, got {describe(value)}")
        if not math.isfinite(value):
            return self.report(key, f"must be a finite number, got {describe(value)}")
        too_low = value <= low if low_exclusive else value < low
        if too_low or (high is not None and value > high):
            return self.report(key, bad)
        return value

    def boolean(self, key: str, default: Any, *, nullable: bool = False) -> Any:
        value = self._get(key)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or (value is None and nullable):
            return value
        kind = "true, false or null" if nullable else "true or false"
        return self.report(key, f"must be {kind}, got {describe(value)}")

    def string(
        self,
        key: str,
        default: Any = None,
        *,
        nullable: bool = True,
        non_empty: bool = False,
        url: bool = False,
    ) -> Any:
        value = self._get(key)
        if value is _MISSING:
            return default
        if value is None and nullable:
            return None
        kind = "a non-empty string" if non_empty else "a string"
        if url:
            kind = "an http:// or https:// URL"
        if nullable:
            kind += " or null"
        if not isinstance(value, str):
            return self.report(key, f"must be {kind}, got {describe(value)}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return self.report(key, "contains characters that cannot be written as UTF-8")
        if non_empty and not value.strip():
            return self.report(key, f"must be {kind}, got {describe(value)}")
        if url:
            scheme, sep, rest = value.partition("://")
            if not sep or scheme.lower() not in ("http", "https") or not rest.strip("/"):
                return self.report(key, f"must be {kind}, got {describe(value)}")
        return value


def _sub_section(
    data: dict[Any, Any], key: str, known: tuple[str, ...], problems: list[str]
) -> _Section | None:
    value = data.get(key)
    if value is None:
        return _Section({}, key, known, problems)
    if not isinstance(value, dict):
        problems.append(f"{key}: must be a mapping of keys, got {describe(value)}")
        return None
    return _Section(value, key, known, problems)


def _check_timezone(section: _Section) -> Any:
    value = section.string("timezone")
    if not isinstance(value, str):
        return value
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return section.report(
            "timezone", f"unknown IANA time zone {describe(value)} (e.g. 'America/New_York')"
        )
    return value


def _parse_autotask(data: dict[Any, Any], problems: list[str]) -> AutotaskSettings | None:
    s = _sub_section(data, "autotask", _AUTOTASK_KEYS, problems)
    if s is None:
        return None
    return AutotaskSettings(
        username=s.string("username", non_empty=True),
        integration_code=s.string("integration_code", non_empty=True),
        api_url=s.string("api_url", url=True),
        timezone=_check_timezone(s),
    )


def _parse_infima(data: dict[Any, Any], problems: list[str]) -> InfimaSettings | None:
    s = _sub_section(data, "infima", _INFIMA_KEYS, problems)
    if s is None:
        return None
    return InfimaSettings(
        api_url=s.string("api_url", DEFAULT_INFIMA_URL, nullable=False, url=True),
        counts_file=s.string("counts_file", non_empty=True),
        count_users_without_status=s.boolean("count_users_without_status", False),
    )


def _parse_sync(data: dict[Any, Any], problems: list[str]) -> SyncSettings | None:
    s = _sub_section(data, "sync", _SYNC_KEYS, problems)
    if s is None:
        return None
    sync = SyncSettings(
        timezone=_check_timezone(s),
        overwrite_cost=s.boolean("overwrite_cost", False),
        unit_cost=s.number("unit_cost", None, nullable=True),
        max_decrease_percent=s.number("max_decrease_percent", 50, high=100),
        max_increase_percent=s.number("max_increase_percent", None, nullable=True),
        allow_zero=s.boolean("allow_zero", False),
        max_api_usage_percent=s.number(
            "max_api_usage_percent", 80, low=0, high=100, low_exclusive=True
        ),
        prorate=s.boolean("prorate", False),
    )
    if sync.overwrite_cost is True and sync.unit_cost is None:
        s.report("unit_cost", "required when sync.overwrite_cost is true")
    return sync


# Minimal: one @, something on both sides, and nothing that could end or split a header.
_ADDRESS = re.compile(r"[^@\s<>(),;:\"\[\]\\]+@[^@\s<>(),;:\"\[\]\\]+")
_MAX_PORT = 65535


def _secret_url(section: _Section, key: str) -> Any:
    """A URL that carries a token: https, or http to loopback (SPEC §4, as for credentials).
    A problem shows only its scheme and host: the rest is the secret."""
    value = section._get(key)
    if value is _MISSING or value is None:
        return None
    kind = "an https:// URL (http:// only to this machine: 127.0.0.1, localhost), or null"
    if not isinstance(value, str) or not value.strip():
        return section.report(key, f"must be {kind}, got {describe(value)}")
    if not value.isprintable() or not is_safe_url(value):
        return section.report(key, f"must be {kind}, got {shown_url(value)}")
    return value


def _address(section: _Section, key: str, value: object) -> Any:
    if isinstance(value, str) and _ADDRESS.fullmatch(value) and value.isprintable():
        return value
    return section.report(
        key, f"must be an e-mail address (name@example.com), got {describe(value)}"
    )


def _parse_email(value: object, problems: list[str]) -> EmailSettings | None:
    if not isinstance(value, dict):
        problems.append(
            f"notify.email: must be null or a mapping of keys (host, port, username, from, to), "
            f"got {describe(value)}"
        )
        return None
    s = _Section(value, "notify.email", _EMAIL_KEYS, problems)
    host = s.string("host", nullable=False, non_empty=True)
    if host is _MISSING or host is None:
        host = s.report("host", "missing (required): the SMTP server's name")
    elif isinstance(host, str) and (any(c.isspace() for c in host) or "/" in host):
        host = s.report(
            "host", f"must be a host name such as smtp.example.com, got {describe(host)}"
        )
    port = s.integer("port", DEFAULT_SMTP_PORT, positive=True)
    if isinstance(port, int) and port > _MAX_PORT:
        port = s.report("port", f"must be a port number from 1 to {_MAX_PORT}, got {port}")
    username = s.string("username", non_empty=True)
    sender = value.get("from", _MISSING)
    if sender is _MISSING:
        sender = s.report("from", "missing (required): the sender's e-mail address")
    else:
        sender = _address(s, "from", sender)
    raw_to = value.get("to", _MISSING)
    to: Any
    if raw_to is _MISSING:
        to = s.report(
            "to", "missing (required): a list of e-mail addresses, e.g. [billing@example.com]"
        )
    elif not isinstance(raw_to, list) or not raw_to:
        example = "a list of e-mail addresses, e.g. [billing@example.com]"
        to = s.report("to", f"must be {example}, got {describe(raw_to)}")
    else:
        to = tuple(_address(s, f"to[{index}]", entry) for index, entry in enumerate(raw_to))
    return EmailSettings(host=host, to=to, sender=sender, port=port, username=username)


def _parse_notify(data: dict[Any, Any], problems: list[str]) -> NotifySettings | None:
    """The optional `notify` section; None when it is absent or null."""
    raw = data.get("notify")
    if raw is None:
        return None
    s = _sub_section(data, "notify", _NOTIFY_KEYS, problems)
    if s is None:
        return None
    fmt = s.string("webhook_format")
    if fmt is not None and fmt is not _BAD and fmt not in WEBHOOK_FORMATS:
        fmt = s.report(
            "webhook_format",
            f"must be {' or '.join(WEBHOOK_FORMATS)}, or null (generic JSON, or decided by the "
            f"URL), got {describe(fmt)}",
        )
    email = raw.get("email")
    return NotifySettings(
        webhook_url=_secret_url(s, "webhook_url"),
        webhook_format=fmt,
        healthcheck_url=_secret_url(s, "healthcheck_url"),
        dry_runs=s.boolean("dry_runs", False),
        email=None if email is None else _parse_email(email, problems),
    )


def _parse_mapping(
    entry: object, index: int, sync: SyncSettings | None, version: object, problems: list[str]
) -> ClientMapping | None:
    prefix = f"mappings[{index}]"
    if not isinstance(entry, dict):
        problems.append(f"{prefix}: must be a mapping of keys, got {describe(entry)}")
        return None
    psa = AUTOTASK if entry.get("psa") is None else entry["psa"]
    if psa not in PSAS:
        problems.append(f"{prefix}.psa: must be one of {', '.join(PSAS)}, got {describe(psa)}")
        return None
    if psa != AUTOTASK and version == 1:
        problems.append(
            f"{prefix}.psa: a {PSA_NAMES[psa]} mapping needs `version: 2` at the top of the file"
        )
    s = _Section(entry, prefix, (*_mapping_keys(psa), *_NOT_FOR[psa]), problems)
    for key, reason in _NOT_FOR[psa].items():
        if entry.get(key) is not None:
            s.report(key, f"does not apply to a {PSA_NAMES[psa]} mapping: {reason}")
    line: dict[str, Any] = {}
    for key, name in _LINE_KEYS[psa].items():
        if key.endswith("_id"):
            zero = psa == AUTOTASK and key in _ZERO_ALLOWED_IDS
            line[name] = s.integer(key, required=True, positive=not zero)
        else:
            line[name] = s.string(key)
    mapping = ClientMapping(
        client_id=s.integer("client_id", required=True, positive=True),
        account_id=line["account_id"],
        contract_id=line.get("contract_id", 0),
        contract_service_id=line["contract_service_id"],
        service_id=line.get("service_id", 0),
        client_name=s.string("client_name"),
        account_name=line.get("account_name"),
        contract_name=line.get("contract_name"),
        service_name=line.get("service_name"),
        enabled=s.boolean("enabled", True),
        exclude_users=s.integer("exclude_users", 0),
        min_units=s.integer("min_units", None, nullable=True),
        max_units=s.integer("max_units", None, nullable=True),
        unit_cost=s.number("unit_cost", None, nullable=True) if psa != HALO else None,
        overwrite_cost=(s.boolean("overwrite_cost", None, nullable=True) if psa != HALO else None),
        prorate=s.boolean("prorate", None, nullable=True) if psa == AUTOTASK else None,
        note=s.string("note"),
        psa=psa,
    )
    low, high = mapping.min_units, mapping.max_units
    if isinstance(low, int) and isinstance(high, int) and low > high:
        s.report("min_units", f"{low} is greater than max_units {high}")
    # With sync.overwrite_cost inherited, a missing cost is already reported on sync.unit_cost.
    if (
        sync is not None
        and mapping.overwrite_cost is True
        and mapping.unit_cost is None
        and sync.unit_cost is None
    ):
        s.report("unit_cost", "required when overwrite_cost is true (here or in sync.unit_cost)")
    return mapping


def _check_lines_unique(mappings: list[tuple[int, ClientMapping]], problems: list[str]) -> None:
    """A PSA line is mapped at most once (the same id on two PSAs is two lines)."""
    seen: dict[tuple[str, int], int] = {}
    for index, mapping in mappings:
        value = mapping.contract_service_id
        if not isinstance(value, int):
            continue
        key = line_key(mapping.psa, "contract_service_id")
        if (mapping.psa, value) in seen:
            problems.append(
                f"mappings[{index}].{key}: duplicate {key} {value}, also in "
                f"mappings[{seen[(mapping.psa, value)]}]"
            )
        else:
            seen[(mapping.psa, value)] = index


def _parse_connectwise(
    data: dict[Any, Any], version: object, problems: list[str]
) -> ConnectWiseSettings | None:
    if data.get("connectwise") is None:
        return None
    s = _sub_section(data, "connectwise", _CONNECTWISE_KEYS, problems)
    if s is None:
        return None
    if version == 1:
        problems.append("connectwise: needs `version: 2` at the top of the file")
    return ConnectWiseSettings(
        site=s.string("site", non_empty=True),
        company_id=s.string("company_id", non_empty=True),
        public_key=s.string("public_key", non_empty=True),
        client_id=s.string("client_id", non_empty=True),
        codebase=s.string("codebase", non_empty=True),
    )


def _parse_halo(data: dict[Any, Any], version: object, problems: list[str]) -> HaloSettings | None:
    if data.get("halo") is None:
        return None
    s = _sub_section(data, "halo", _HALO_KEYS, problems)
    if s is None:
        return None
    if version == 1:
        problems.append("halo: needs `version: 2` at the top of the file")
    return HaloSettings(
        url=s.string("url", url=True),
        tenant=s.string("tenant", non_empty=True),
        client_id=s.string("client_id", non_empty=True),
    )


def _check_unique(mappings: list[tuple[int, ClientMapping]], key: str, problems: list[str]) -> None:
    seen: dict[int, int] = {}
    for index, mapping in mappings:
        value = getattr(mapping, key)
        if not isinstance(value, int):
            continue
        if value in seen:
            problems.append(
                f"mappings[{index}].{key}: duplicate {key} {value}, also in mappings[{seen[value]}]"
            )
        else:
            seen[value] = index


def _validate(data: object, problems: list[str]) -> Config | None:
    if data is None:
        problems.append("(document): the file is empty")
        return None
    if not isinstance(data, dict):
        problems.append(
            f"(document): must be a mapping of keys (version, autotask, ...), got {describe(data)}"
        )
        return None
    top = _Section(data, "", _TOP_KEYS, problems)
    version = data.get("version", _MISSING)
    if version is _MISSING:
        problems.append("version: missing (required; 1, or 2 with other PSAs)")
    elif not isinstance(version, int) or isinstance(version, bool) or version not in VERSIONS:
        problems.append(f"version: must be 1, or 2 with other PSAs, got {describe(version)}")
    state_dir = top.string("state_dir", non_empty=True)
    autotask = _parse_autotask(data, problems)
    connectwise = _parse_connectwise(data, version, problems)
    halo = _parse_halo(data, version, problems)
    infima = _parse_infima(data, problems)
    sync = _parse_sync(data, problems)
    notify = _parse_notify(data, problems)

    mappings: list[tuple[int, ClientMapping]] = []
    raw = data.get("mappings")
    if raw is not None and not isinstance(raw, list):
        problems.append(f"mappings: must be a list of mappings, got {describe(raw)}")
    elif raw is not None:
        for index, entry in enumerate(raw):
            mapping = _parse_mapping(entry, index, sync, version, problems)
            if mapping is not None:
                mappings.append((index, mapping))
    _check_unique(mappings, "client_id", problems)
    _check_lines_unique(mappings, problems)

    if problems or autotask is None or infima is None or sync is None:
        return None
    return Config(
        version=version,
        state_dir=state_dir,
        autotask=autotask,
        infima=infima,
        sync=sync,
        notify=notify,
        mappings=tuple(m for _, m in mappings),
        connectwise=connectwise,
        halo=halo,
    )


def _invalid(source: str, problems: list[str]) -> ConfigError:
    count = f"{len(problems)} problem" + ("" if len(problems) == 1 else "s")
    return ConfigError(f"Invalid config file {source} ({count}); {_VALIDATE_HINT}", problems)


def parse_config(data: object, source: str) -> Config:
    """Validate a loaded YAML document into a Config.

    Raises:
        ConfigError: listing every problem, one ``<key path>: <what is wrong>`` per line.
    """
    problems: list[str] = []
    config = _validate(data, problems)
    if config is None:
        raise _invalid(source, problems)
    return config


# --- loading and saving ------------------------------------------------------------


def load_config(path: Path) -> Config:
    """Read and validate the config file.

    Raises:
        ConfigError: the file is missing, unreadable, not UTF-8, not YAML or invalid.
    """
    data, duplicates = config_yaml.read(path)
    problems: list[str] = []
    config = _validate(data, problems)
    if duplicates:
        problems = duplicates + problems
    if problems or config is None:
        raise _invalid(str(path), problems)
    log.debug("config loaded from %s (%d mappings)", path, len(config.mappings))
    return config


def load_config_or_default(path: Path) -> Config:
    """Like load_config, but a missing file gives Config() (a fresh machine).

    Raises:
        ConfigError: as load_config, except when the file does not exist.
    """
    if not path.exists() and not path.is_symlink():
        log.debug("no config file at %s; using defaults", path)
        return Config()
    return load_config(path)


def _mapping_to_dict(m: ClientMapping, *, version: int) -> dict[str, Any]:
    """A mapping in its PSA's words; a version 1 file's mappings stay as they always were."""
    doc: dict[str, Any] = {"client_id": m.client_id, "client_name": m.client_name}
    if version >= 2:
        doc["psa"] = m.psa
    for key, name in _LINE_KEYS[m.psa].items():
        doc[key] = getattr(m, name)
    for key in _OVERRIDE_KEYS:
        if key not in _NOT_FOR[m.psa]:
            doc[key] = getattr(m, key)
    return doc


def _email_to_dict(email: EmailSettings | None) -> dict[str, Any] | None:
    if email is None:
        return None
    return {
        "host": email.host,
        "port": email.port,
        "username": email.username,
        "from": email.sender,
        "to": list(email.to),
    }


def _notify_to_dict(notify: NotifySettings) -> dict[str, Any]:
    return {
        "webhook_url": notify.webhook_url,
        "webhook_format": notify.webhook_format,
        "healthcheck_url": notify.healthcheck_url,
        "dry_runs": notify.dry_runs,
        "email": _email_to_dict(notify.email),
    }


def config_to_dict(config: Config) -> dict[str, Any]:
    """A plain dict in SPEC §6 key order, every key present (nulls included); the optional
    sections (`connectwise`, `halo`, `notify`) only when the file has them."""
    version = 2 if config.needs_version_2 else config.version
    doc: dict[str, Any] = {
        "version": version,
        "state_dir": config.state_dir,
        "autotask": {key: getattr(config.autotask, key) for key in _AUTOTASK_KEYS},
    }
    if config.connectwise is not None:
        doc["connectwise"] = {key: getattr(config.connectwise, key) for key in _CONNECTWISE_KEYS}
    if config.halo is not None:
        doc["halo"] = {key: getattr(config.halo, key) for key in _HALO_KEYS}
    doc["infima"] = {key: getattr(config.infima, key) for key in _INFIMA_KEYS}
    doc["sync"] = {key: getattr(config.sync, key) for key in _SYNC_KEYS}
    if config.notify is not None:
        doc["notify"] = _notify_to_dict(config.notify)
    doc["mappings"] = [_mapping_to_dict(m, version=version) for m in config.mappings]
    return doc


def dump_config(config: Config) -> str:
    """The config as YAML text."""
    return config_yaml.dump(config_to_dict(config))


def save_config(config: Config, path: Path) -> None:
    """Write the config atomically (temp file, fsync, rename), mode 0600.

    The config is validated first, so the tool never writes a file it could not load.

    Raises:
        ConfigError: the config is invalid, or the file cannot be written.
    """
    problems: list[str] = []
    if _validate(config_to_dict(config), problems) is None:
        raise ConfigError(
            f"Refusing to write an invalid config to {path} "
            f"({len(problems)} problem{'' if len(problems) == 1 else 's'}).",
            problems,
        )
    config_yaml.write(path, dump_config(config))
    log.debug("config saved to %s (%d mappings)", path, len(config.mappings))
