"""``doctor`` (SPEC §7): prove on the operator's own tenant, read-only, every fact the sync
relies on that the public documentation leaves open, before the first write.

Each check is a :class:`Check` (``ok``, ``warn`` or ``fail`` with what was found and what to
do). Nothing here writes: no Autotask create, no config save, no history row, no keyring
entry. The Autotask reads are the sync's batched reads (a handful of requests whatever the
number of mappings); the rules are the sync's own (``sync.chain_verdict``,
``sync.mapping_schedule``, ``model.choose_row``, ``billing.unit_rates``,
``billing.wire_effective_date``), so what ``doctor`` shows is what ``sync`` will do.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from typing import Any

from infima_autotask.autotask import AutotaskApi
from infima_autotask.billing import (
    Schedule,
    extended,
    iana_zone,
    next_month,
    period_labels,
    same_offsets,
    same_rate,
    unit_rates,
    wire_effective_date,
    within_cent,
)
from infima_autotask.chain import Successor, chain_text, find_successors
from infima_autotask.config import (
    AUTOTASK,
    CONNECTWISE,
    HALO,
    ClientMapping,
    Config,
    SyncSettings,
)
from infima_autotask.connectwise.chain import line_problem
from infima_autotask.connectwise.client import ConnectWiseApi
from infima_autotask.errors import ApiError, InfimaAutotaskError
from infima_autotask.halo.chain import NOT_BILLED
from infima_autotask.halo.chain import billing_lines as halo_billing_lines
from infima_autotask.halo.chain import line_problem as halo_line_problem
from infima_autotask.halo.client import HaloApi
from infima_autotask.infima import (
    INFIMA_THREADS,
    CountsFile,
    CountSource,
    InfimaApi,
    count_active_users,
)
from infima_autotask.model import (
    Contract,
    ContractService,
    UnitsRow,
    choose_row,
    read_contract_picklists,
    read_contract_services,
    read_contracts,
    read_location_timezone,
    read_units_rows,
)
from infima_autotask.runner import select_mappings
from infima_autotask.runtime import Runtime
from infima_autotask.sync import (
    NO_COST_VISIBILITY,
    chain_verdict,
    clamp_target,
    current_month,
    ended_contracts,
    exact,
    local_date,
    mapping_schedule,
    no_effective_date,
    period_label,
    units_row_problem,
)

log = logging.getLogger(__name__)

OK = "ok"
WARN = "warn"
FAIL = "fail"
RESULTS = (OK, WARN, FAIL)

NO_ZONE_RISK = (
    "with no zone, writes are dated 12:00 UTC, which lands on the right day only for tenants "
    "within 11 hours of UTC"
)


@dataclass(frozen=True)
class Check:
    """One finding: what was checked (``subject``, of mapped client ``client_id`` when it is
    about one), ``ok``/``warn``/``fail`` and what was found with what to do. ``exit_code`` is
    what a failed check makes the command exit with: the error's own code when a connection or
    its credentials failed (3, 2), else 1."""

    subject: str
    result: str
    detail: str
    exit_code: int = 0
    client_id: int | None = field(default=None, kw_only=True)

    @classmethod
    def failed(cls, subject: str, detail: str, exit_code: int = 1) -> Check:
        return cls(subject, FAIL, detail, exit_code)


@dataclass
class DoctorReport:
    """Every check in the order run: connections, the tenant's zone, then client by client."""

    checks: list[Check] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """SPEC §3: 3 when a connection failed, 1 when a check failed, else 0."""
        codes = (check.exit_code or 1 for check in self.checks if check.result == FAIL)
        return max(codes, default=0)

    @property
    def summary(self) -> dict[str, int]:
        counts = dict.fromkeys(RESULTS, 0)
        for check in self.checks:
            counts[check.result] += 1
        return counts


# --- formatting ----------------------------------------------------------------------------


def rate(value: float | None) -> str:
    """A per-unit rate as the sync sends it: 2 decimals, or up to 4 when it has them."""
    if value is None:
        return "?"
    text = f"{value:.4f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"{whole}.{cents.ljust(2, '0')}"


def amount(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def _reason(exc: InfimaAutotaskError) -> str:
    return " ".join([exc.message, *exc.details])


def _units(n: int) -> str:
    return f"{n} unit" if n == 1 else f"{n} units"


def _row_text(row: UnitsRow) -> str:
    return (
        f"row {row.id} from {row.start.isoformat()} to {row.end.isoformat()}: "
        f"{_units(row.units)}, price {amount(row.price)}, cost {amount(row.cost)}"
    )


def _shows(row: UnitsRow) -> str:
    return f"row {row.id} shows {amount(row.price)} for {_units(row.units)}"


# --- connections ---------------------------------------------------------------------------


def autotask_connection(
    runtime: Runtime, settings: SyncSettings
) -> tuple[Check, AutotaskApi | None]:
    """The Autotask connection and this hour's API usage (``ThresholdInformation``)."""
    name = "Autotask connection"
    try:
        client = runtime.autotask()
        used = client.threshold()
    except InfimaAutotaskError as exc:
        return Check.failed(name, f"not connected: {_reason(exc)}", exc.exit_code), None
    text = f"Connected ({client.api_url}); {used.used} of {used.limit} requests this hour"
    share = settings.max_api_usage_percent
    if used.used * 100 > exact(share) * used.limit:
        return Check(
            name,
            WARN,
            f"{text}, over max_api_usage_percent ({share:g}%): a sync now would write nothing; "
            "run it later, or find the integration using the budget",
        ), client
    return Check(name, OK, text), client


@dataclass(frozen=True)
class _Infima:
    """Where counts come from, and the INFIMA clients it knows (by id, with names)."""

    source: CountSource
    known: dict[int, str]


def infima_connection(runtime: Runtime, config: Config) -> tuple[Check, _Infima | None]:
    """The INFIMA connection (partner name and client list), or the counts file."""
    name = "INFIMA connection"
    try:
        if config.infima.counts_file:
            source = runtime.count_source()
            known = {client.id: client.name for client in source.clients()}
            return Check(
                name, OK, f"counts file {config.infima.counts_file} (INFIMA API not used)"
            ), _Infima(source, known)
        client = runtime.infima()
        partner = client.partner_name()
        known = {info.id: info.name for info in client.clients()}
    except InfimaAutotaskError as exc:
        return Check.failed(name, f"not connected: {_reason(exc)}", exc.exit_code), None
    text = f"Connected ({partner}, {client.base}); {len(known)} clients"
    return Check(name, OK, text), _Infima(client, known)


# --- the tenant's time zone ----------------------------------------------------------------


def zone_check(
    tenant_text: str | None, configured: str | None, *, today: date, read_error: str = ""
) -> Check:
    """``autotask.timezone`` against the default ``InternalLocations`` record's ``timeZone``."""
    name = "Tenant time zone"
    tenant = iana_zone(tenant_text)
    shown = (
        f"{tenant_text} ({tenant})" if tenant and tenant_text and tenant != tenant_text else tenant
    )
    if tenant is not None and configured is not None:
        if same_offsets(tenant, configured, today):
            return Check(
                name,
                OK,
                f"the tenant's zone is {shown} (default InternalLocations record) and "
                f"autotask.timezone is {configured}: writes are dated for it",
            )
        return Check.failed(
            name,
            f"writes would be dated for {configured} but the tenant is {shown}: set "
            f"autotask.timezone: {tenant}",
        )
    if tenant is not None:
        return Check(
            name,
            WARN,
            f"autotask.timezone is not set; the tenant's zone is {shown}: set "
            f"autotask.timezone: {tenant} ({NO_ZONE_RISK})",
        )
    if read_error:
        found = f"could not read the default InternalLocations record ({read_error})"
    elif tenant_text:
        found = f"the tenant's zone {tenant_text!r} is not one this tool knows"
    else:
        found = "Autotask shows no time zone on the default InternalLocations record"
    if configured is not None:
        return Check(
            name,
            WARN,
            f"{found}; make sure autotask.timezone ({configured}) is the zone of your Autotask "
            "database (Admin > Company Settings > Internal Locations)",
        )
    return Check(
        name,
        WARN,
        f"{found}, and autotask.timezone is not set: set it to the IANA name of your Autotask "
        f"database's zone (e.g. America/New_York); {NO_ZONE_RISK}",
    )


def tenant_zone(client: AutotaskApi, configured: str | None, *, today: date) -> Check:
    """Read the tenant's zone; a refused read (permissions) is a warning, not a failure."""
    try:
        text = read_location_timezone(client)
    except ApiError as exc:
        why = f"HTTP {exc.status}" if exc.status else exc.__class__.__name__
        if exc.errors:
            why += ": " + "; ".join(exc.errors)
        log.info("InternalLocations read failed: %s", exc.message)
        return zone_check(None, configured, today=today, read_error=why)
    return zone_check(text, configured, today=today)


# --- one mapping's Autotask facts ----------------------------------------------------------


@dataclass(frozen=True)
class TenantFacts:
    """The batched Autotask reads ``doctor`` shares with ``sync``."""

    contracts: dict[int, Contract]
    services: dict[int, ContractService]
    rows: dict[int, list[UnitsRow]]
    active_statuses: set[int]
    period_months: dict[int, int]
    successors: dict[tuple[int, int], Successor]


def read_tenant(client: AutotaskApi, mappings: Sequence[ClientMapping], day: date) -> TenantFacts:
    """Contracts, contract services, units rows (D - 1 to the month's end) and picklists.

    Raises:
        ApiError: a batched read failed.
    """
    cs_ids = [mapping.contract_service_id for mapping in mappings]
    contracts = read_contracts(client, [mapping.contract_id for mapping in mappings])
    services = read_contract_services(client, cs_ids)
    rows = read_units_rows(
        client, cs_ids, day - timedelta(days=1), next_month(day) - timedelta(days=1)
    )
    picklists = read_contract_picklists(client)
    successors: dict[tuple[int, int], Successor] = {}
    ended = ended_contracts(mappings, contracts, services, day, picklists.active_statuses)
    if ended:
        try:
            successors = find_successors(client, ended, day, picklists.active_statuses)
        except ApiError as exc:  # only the failure message loses its hint, as in sync
            log.warning("renewal look-up failed: %s", exc)
    return TenantFacts(
        contracts,
        services,
        rows,
        picklists.active_statuses,
        period_labels(picklists.period_labels),
        successors,
    )


def price_basis(rows: Sequence[UnitsRow], cs: ContractService) -> tuple[str, str]:
    """Whether units rows hold extended amounts (SPEC §8 "Rates"), from ``rows`` (best first).

    The one place that compares a row's price with a per-unit price: on purpose, to find a
    tenant that stores per-unit amounts, where every write would set a wrong price.
    """
    unit_price = cs.unit_price
    first = rows[0] if rows else None
    if first is not None and first.price is None:
        return FAIL, (
            f"Autotask shows no price on {_row_text(first)}; check the API user's permissions"
        )
    if unit_price is None:
        return WARN, (
            f"contract service {cs.id} shows no unit price, so the rows' prices cannot be "
            "compared with it; check the line in Autotask"
        )
    if same_rate(unit_price, 0.0):
        return WARN, f"not decidable: contract service {cs.id}'s unit price is 0.00"
    decisive = [row for row in rows if row.units >= 2 and row.price is not None]
    for row in decisive:
        if within_cent(row.price, extended(row.units, unit_price)):
            return OK, (
                f"extended, as expected: {_shows(row)} = {row.units} x {rate(unit_price)} "
                "(the contract service's unit price)"
            )
        if within_cent(row.price, unit_price):
            return FAIL, (
                f"per-unit: {_shows(row)}, the unit price itself, not {row.units} x "
                f"{rate(unit_price)}: a write would set a wrong price (the sync takes price / "
                "units as the unit price); do not sync this tenant, report it with this output"
            )
    if decisive:
        row = decisive[0]
        per_unit = (row.price or 0.0) / row.units
        return WARN, (
            f"not decidable: {_shows(row)} ({rate(per_unit)} a unit), neither {row.units} x "
            f"the contract service's unit price {rate(unit_price)} nor that price: the line has "
            f"its own price; the sync keeps {rate(per_unit)} a unit"
        )
    if first is None:
        return WARN, "not decidable: no units row to compare"
    return WARN, (
        f"not decidable at {_units(first.units)}: {_shows(first)} (unit price "
        f"{rate(unit_price)}); run doctor again when a row has 2 units or more"
    )


def cost_visibility(rows: Sequence[UnitsRow], cs: ContractService) -> tuple[str, str]:
    """Whether the API user sees costs: a null row cost (or unit cost at 0 units) fails."""
    hidden = [row for row in rows if row.cost is None]
    if hidden:
        return FAIL, f"{_row_text(hidden[0])}: {NO_COST_VISIBILITY}"
    if not rows or rows[0].units == 0:
        if cs.unit_cost is None:
            return FAIL, f"contract service {cs.id} shows no unit cost: {NO_COST_VISIBILITY}"
        return OK, f"the API user sees costs (contract service unit cost {rate(cs.unit_cost)})"
    row = rows[0]
    return OK, f"the API user sees costs (row {row.id} cost {amount(row.cost)})"


def _period_length(months: int | None) -> str:
    if months is None:
        return "unknown length"
    return "1 month" if months == 1 else f"{months} months"


def mapping_checks(
    mapping: ClientMapping,
    *,
    day: date,
    settings: SyncSettings,
    zone: str | None,
    facts: TenantFacts,
) -> list[Check]:
    """The chain, billing period, units row, price basis, write and cost visibility of one
    mapping for the month starting ``day``."""
    checks = _mapping_checks(mapping, day=day, settings=settings, zone=zone, facts=facts)
    return [replace(check, client_id=mapping.client_id) for check in checks]


def _mapping_checks(
    mapping: ClientMapping,
    *,
    day: date,
    settings: SyncSettings,
    zone: str | None,
    facts: TenantFacts,
) -> list[Check]:
    contract = facts.contracts.get(mapping.contract_id)
    cs = facts.services.get(mapping.contract_service_id)
    verdict = chain_verdict(mapping, contract, cs, day, facts.active_statuses, facts.successors)
    if not verdict.ok or contract is None or cs is None:
        return [Check.failed("chain", chain_text(verdict))]
    checks = [Check("chain", OK, chain_text(verdict))]
    rows = facts.rows.get(cs.id, [])
    when = mapping_schedule(mapping, contract, day, settings, facts.period_months)
    if when.effective is None:
        if when.next_start is None:
            checks.append(
                Check.failed("billing period", no_effective_date(mapping, contract, when)[1])
            )
            return checks
        return checks + _skipped_checks(cs, rows, when, day=day)
    effective = when.effective
    row = choose_row(rows, effective)
    checks.append(_period_check(when, row, effective))
    row_problem = units_row_problem(cs.id, rows, effective, when)
    units_ok = row is not None and row_problem is None
    if row is None or row_problem is not None:
        checks.append(Check.failed("units row", row_problem or "no units row"))
    else:
        checks.append(Check("units row", OK, _row_text(row)))
    ordered = _best_first(rows, row)
    checks.append(Check("price basis", *price_basis(ordered, cs)))
    if row is not None and units_ok:
        checks.append(_write_check(mapping, settings, cs, row, effective, zone, when))
    checks.append(Check("cost visibility", *cost_visibility(ordered, cs)))
    return checks


def _best_first(rows: Sequence[UnitsRow], row: UnitsRow | None) -> list[UnitsRow]:
    """``row`` first, then the other rows read, latest start first."""
    others = sorted(
        (r for r in rows if row is None or r.id != row.id),
        key=lambda r: (r.start, r.id),
        reverse=True,
    )
    return ([row] if row is not None else []) + others


def _period_check(when: Schedule, row: UnitsRow | None, effective: date) -> Check:
    name = "billing period"
    text = (
        f"{when.describe()} ({_period_length(when.months)} a period); this month's write is "
        f"dated {effective.isoformat()}"
    )
    if row is None:
        return Check(name, OK, f"{text}; no units row covers it (see the units row)")
    span = f"the period from {row.start.isoformat()} to {row.end.isoformat()}"
    if when.prorated:
        text += f", inside {span}: Autotask splits it (a proration it cannot delete)"
    if row.posted:
        return Check.failed(
            name,
            f"{text}; {span} is already approved and posted: the sync holds any change to it; "
            "change it by hand in Autotask (if your billing posts periods before they start, "
            "this tool cannot write them)",
        )
    return Check(name, OK, f"{text}; {span} is not approved and posted yet")


def _write_check(
    mapping: ClientMapping,
    settings: SyncSettings,
    cs: ContractService,
    row: UnitsRow,
    effective: date,
    zone: str | None,
    when: Schedule,
) -> Check:
    """What a write dated E would send: the per-unit price and cost and the effectiveDate."""
    rates = unit_rates(row, cs)
    configured = mapping.effective_unit_cost(settings)
    overwrite = mapping.effective_overwrite_cost(settings) and configured is not None
    cost = configured if overwrite else rates.cost
    cost_note = f" (unit_cost from the config; now {rate(rates.cost)})" if overwrite else ""
    zone_note = f"for {zone}" if zone else "12:00 UTC: no autotask.timezone"
    text = (
        f"adjustedUnitPrice {rate(rates.price)}, adjustedUnitCost {rate(cost)}{cost_note}, "
        f"effectiveDate {wire_effective_date(effective, zone)} ({zone_note})"
    )
    if when.prorated:
        text += "; prorated (prorate: true)"
    if rates.price is None or cost is None:
        return Check("write", WARN, f"{text}: a rate is unknown (see below)")
    return Check("write", OK, text)


def _skipped_checks(
    cs: ContractService, rows: Sequence[UnitsRow], when: Schedule, *, day: date
) -> list[Check]:
    """A mapping with no billing period starting this month: nothing is written (``skipped``)."""
    next_start = when.next_start or day
    row = choose_row(rows, day)
    checks = [
        Check(
            "billing period",
            OK,
            f"skipped in {period_label(day)}: no billing period starts this month "
            f"({when.describe()}, {_period_length(when.months)} a period); the next starts "
            f"{next_start.isoformat()}",
        ),
        Check(
            "units row",
            OK if row is not None else WARN,
            f"nothing is written this month; covering {day.isoformat()}: {_row_text(row)}"
            if row is not None
            else f"nothing is written this month, and no units row of contract service {cs.id} "
            f"covers {day.isoformat()}; check the contract's dates in Autotask",
        ),
    ]
    ordered = _best_first(rows, row)
    checks.append(Check("price basis", *price_basis(ordered, cs)))
    checks.append(Check("cost visibility", *cost_visibility(ordered, cs)))
    return checks


# --- INFIMA --------------------------------------------------------------------------------


INFIMA_USERS = "INFIMA users"


def users_check(
    mapping: ClientMapping,
    users: list[dict[str, Any]],
    *,
    count_without_status: bool,
) -> Check:
    """Whether a client's users carry a ``status`` field (INFIMA_API.md), and its count."""
    name = INFIMA_USERS
    try:
        active = count_active_users(users, count_without_status=count_without_status)
    except InfimaAutotaskError as exc:
        return Check.failed(name, exc.message)
    target = clamp_target(active, mapping)
    units = f"; the sync would set {_units(target)}" if target != active else ""
    with_status = sum(1 for user in users if "status" in user)
    listed = len(users)
    if not users:
        return Check(name, WARN, f"INFIMA lists no users for this client: 0 active{units}")
    if not with_status:
        return Check(
            name,
            WARN,
            f"no user carries a status field; all {listed} listed users count "
            f"(infima.count_users_without_status: true): {active} active{units}",
        )
    if with_status < listed:
        return Check(
            name,
            WARN,
            f"{listed - with_status} of {listed} users carry no status field and are not "
            f"counted: {active} active{units}",
        )
    return Check(
        name, OK, f"{active} active of {listed} listed; every user carries a status field{units}"
    )


def infima_checks(
    infima: _Infima, mappings: Sequence[ClientMapping], config: Config
) -> dict[int, Check]:
    """One INFIMA check per mapped client; user lists are read 16 at a time, as in sync."""
    found: dict[int, Check] = {}
    source = infima.source
    wanted = []
    for mapping in mappings:
        name = INFIMA_USERS
        if mapping.client_id not in infima.known:
            where = (
                f"the counts file {source.path}"
                if isinstance(source, CountsFile)
                else "INFIMA's client list"
            )
            found[mapping.client_id] = Check.failed(
                name,
                f"client {mapping.client_id} is not in {where}; check it there, or "
                f"`infima-autotask unmap {mapping.client_id}`",
            )
        elif isinstance(source, CountsFile):
            active = source.active_users(mapping.client_id)
            found[mapping.client_id] = Check(
                name, OK, f"{active} active users in the counts file (no status field used)"
            )
        else:
            wanted.append(mapping)
    if isinstance(source, InfimaApi) and wanted:
        client = source

        def check(mapping: ClientMapping) -> Check:
            try:
                users = client.users(mapping.client_id)
            except InfimaAutotaskError as exc:
                return Check.failed(INFIMA_USERS, _reason(exc))
            return users_check(
                mapping,
                users,
                count_without_status=config.infima.count_users_without_status,
            )

        with ThreadPoolExecutor(INFIMA_THREADS, thread_name_prefix="doctor-users") as pool:
            for mapping, result in zip(wanted, pool.map(check, wanted), strict=True):
                found[mapping.client_id] = result
    return {client_id: replace(check, client_id=client_id) for client_id, check in found.items()}


# --- ConnectWise ---------------------------------------------------------------------------


def connectwise_connection(runtime: Runtime) -> tuple[Check, ConnectWiseApi | None]:
    """The ConnectWise connection (``GET /system/info``)."""
    name = "ConnectWise connection"
    try:
        client = runtime.connectwise()
        info = client.system_info()
    except InfimaAutotaskError as exc:
        return Check.failed(name, f"not connected: {_reason(exc)}", exc.exit_code), None
    text = f"Connected ({client.creds.site}, {client.codebase}); version {info.version}"
    return Check(name, OK, text), client


def halo_connection(runtime: Runtime) -> tuple[Check, HaloApi | None]:
    """The HaloPSA connection: a token, then one cheap read."""
    name = "HaloPSA connection"
    try:
        client = runtime.halo()
        client.test()  # authinfo and the token on first use
    except InfimaAutotaskError as exc:
        return Check.failed(name, f"not connected: {_reason(exc)}", exc.exit_code), None
    tenant = f", tenant {client.creds.tenant}" if client.creds.tenant else ""
    return Check(name, OK, f"Connected ({client.base}{tenant})"), client


def halo_checks(api: HaloApi, mapping: ClientMapping, *, today: date) -> list[Check]:
    """The chain (``halo.chain``, as of ``today``), the current count and whether a
    recurring-invoice line bills the subscription, for one HaloPSA mapping."""
    checks = _halo_checks(api, mapping, today=today)
    return [replace(check, client_id=mapping.client_id) for check in checks]


def _halo_checks(api: HaloApi, m: ClientMapping, *, today: date) -> list[Check]:
    try:
        client = api.client(m.account_id)
        licence = api.licence(m.contract_service_id) if client is not None else None
        problem = halo_line_problem(m.account_id, client, m.contract_service_id, licence, today)
        lines = api.recurring_lines(m.account_id) if problem is None else []
    except InfimaAutotaskError as exc:
        return [Check.failed("chain", f"could not be read: {_reason(exc)}", exc.exit_code)]
    if problem is not None or licence is None:
        return [
            Check.failed(
                "chain",
                f"{problem}; run `infima-autotask list-mappings --check` for the fix",
            )
        ]
    checks = [
        Check(
            "chain",
            OK,
            f"client {m.account_id}, subscription {licence.id} ({licence.name or 'no name'}): "
            "active",
        )
    ]
    whole = licence.whole_count
    if whole is None:
        shown = "no count" if licence.count is None else f"{licence.count!r}, not a whole number"
        checks.append(
            Check("count", WARN, f"the subscription shows {shown}; sync writes whole numbers")
        )
    else:
        checks.append(Check("count", OK, f"the subscription shows {_units(whole)} now"))
    billing = halo_billing_lines(licence.id, lines)
    if not billing:
        checks.append(Check("billing", WARN, NOT_BILLED))
    else:
        first = billing[0]
        checks.append(
            Check(
                "billing",
                OK,
                f"line {first.line_id} of recurring invoice {first.invoice_id} takes its "
                "quantity from the subscription",
            )
        )
    return checks


def connectwise_checks(
    api: ConnectWiseApi, mapping: ClientMapping, *, day: date, today: date
) -> list[Check]:
    """The chain (``connectwise.chain``, as of ``today``), the current quantity, whether this
    period's invoice already exists (``nextInvoiceDate`` after ``day``, the period's first:
    sync holds the client) and cost visibility, for one ConnectWise mapping."""
    checks = _connectwise_checks(api, mapping, day=day, today=today)
    return [replace(check, client_id=mapping.client_id) for check in checks]


def _connectwise_checks(
    api: ConnectWiseApi, m: ClientMapping, *, day: date, today: date
) -> list[Check]:
    try:
        company = api.company(m.account_id)
        agreement = api.agreement(m.contract_id) if company is not None else None
        additions = api.additions(m.contract_id) if agreement is not None else []
    except InfimaAutotaskError as exc:
        return [Check.failed("chain", f"could not be read: {_reason(exc)}", exc.exit_code)]
    addition = next((a for a in additions if a.id == m.contract_service_id), None)
    problem = line_problem(
        m.account_id,
        company,
        m.contract_id,
        agreement,
        m.contract_service_id,
        addition,
        additions,
        today,
    )
    if problem is not None or agreement is None or addition is None:
        return [
            Check.failed(
                "chain",
                f"{problem}; run `infima-autotask list-mappings --check` for the fix",
            )
        ]
    checks = [
        Check(
            "chain",
            OK,
            f"company {m.account_id}, agreement {agreement.id}, addition {addition.id} "
            f"(product {addition.product_identifier or addition.product_id}): active",
        )
    ]
    whole = addition.whole_quantity
    if whole is None:
        checks.append(
            Check(
                "quantity",
                WARN,
                f"the addition shows {addition.quantity!r}, not a whole number; sync writes "
                "whole numbers",
            )
        )
    else:
        checks.append(Check("quantity", OK, f"the addition shows {_units(whole)} now"))
    invoice = agreement.next_invoice
    if invoice is None:
        checks.append(Check("invoice", WARN, "the agreement has no nextInvoiceDate: cannot tell"))
    elif invoice > day:
        checks.append(
            Check(
                "invoice",
                WARN,
                f"this period's invoice already exists (next invoice {invoice}): sync holds "
                f"this client until then",
            )
        )
    else:
        checks.append(
            Check("invoice", OK, f"next invoice {invoice}: this period is not invoiced yet")
        )
    if addition.unit_cost is None:
        checks.append(
            Check(
                "cost visibility",
                WARN,
                "unitCost reads as null: the API member's security role may hide costs "
                "(overwrite_cost would send a cost it cannot read back)",
            )
        )
    else:
        checks.append(
            Check("cost visibility", OK, f"unit cost {rate(addition.unit_cost)} is readable")
        )
    return checks


# --- the whole run -------------------------------------------------------------------------


def run_doctor(
    runtime: Runtime,
    *,
    clients: Collection[int] = (),
    now: datetime | None = None,
) -> DoctorReport:
    """Every check, for the enabled mappings (or those of ``clients``), for this month.

    Raises:
        ConfigError: the config file is missing or invalid (exit 2).
        UsageError: a ``clients`` entry is not mapped, or its mapping is disabled (exit 2).
    """
    config = runtime.config
    mappings = select_mappings(config.mappings, list(clients))
    moment = now or datetime.now(timezone.utc)
    day = current_month(moment, config.sync.timezone)
    today = local_date(moment, config.sync.timezone)
    report = DoctorReport()
    lines = [m for m in mappings if m.psa == CONNECTWISE]
    mappings_at = [m for m in mappings if m.psa == AUTOTASK]
    autotask: AutotaskApi | None = None
    connected = runtime.connected_psas(config)
    if AUTOTASK in connected or not connected or mappings_at:
        connection, autotask = autotask_connection(runtime, config.sync)
        report.checks.append(connection)
    cw: ConnectWiseApi | None = None
    if config.connectwise is not None or lines:
        cw_check, cw = connectwise_connection(runtime)
        report.checks.append(cw_check)
    halo: HaloApi | None = None
    if config.halo is not None or any(m.psa == HALO for m in mappings):
        halo_check, halo = halo_connection(runtime)
        report.checks.append(halo_check)
    infima_check, infima = infima_connection(runtime, config)
    report.checks.append(infima_check)
    zone = config.autotask.timezone
    facts: TenantFacts | None = None
    if autotask is not None:
        report.checks.append(tenant_zone(autotask, zone, today=day))
        if mappings_at:
            try:
                facts = read_tenant(autotask, mappings_at, day)
            except InfimaAutotaskError as exc:
                report.checks.append(
                    Check.failed(
                        "Autotask contracts",
                        f"the batched reads failed: {_reason(exc)}",
                        exc.exit_code,
                    )
                )
    if not mappings:
        report.checks.append(
            Check(
                "Mappings",
                WARN,
                "no enabled mappings: map a client with `infima-autotask map CLIENT_ID "
                "--account ID`, then run doctor again",
            )
        )
    users = infima_checks(infima, mappings, config) if infima is not None else {}
    for mapping in mappings:
        if mapping.psa == CONNECTWISE:
            if cw is not None:
                report.checks.extend(connectwise_checks(cw, mapping, day=day, today=today))
        elif mapping.psa == HALO:
            if halo is not None:
                report.checks.extend(halo_checks(halo, mapping, today=today))
        elif facts is not None:
            report.checks.extend(
                mapping_checks(mapping, day=day, settings=config.sync, zone=zone, facts=facts)
            )
        if mapping.client_id in users:
            report.checks.append(users[mapping.client_id])
    return report
