"""What the mapping commands print: their columns, JSON documents and sentences.

The library (``mapping.py``) returns typed records with raw values; this module is the one
place that turns them into table cells, ``--json`` rows and the lines ``map`` and ``unmap``
print. A JSON row keeps the table's keys (SPEC §2) with raw values: an ``ID name`` column
becomes ``<key>_id`` (int) and ``<key>`` (the name), dates are ``YYYY-MM-DD``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from infima_autotask.billing import ordinal
from infima_autotask.cli.tables import Column, iso, ref, ref_column
from infima_autotask.config import AUTOTASK, CONNECTWISE, HALO, ClientMapping
from infima_autotask.connectwise.mapping import CompanyHit, CompanySearch, product_label
from infima_autotask.halo.mapping import ClientHit, ClientSearch, SubscriptionLine
from infima_autotask.mapping import (
    AccountHit,
    Billing,
    ClientLine,
    LastSync,
    MapChange,
    SearchResult,
    ServiceLine,
)

Row = dict[str, Any]


def _named(name: str | None) -> str:
    return f" ({name})" if name else ""


# --- list-clients ----------------------------------------------------------------------


def mapped_to(mapping: ClientMapping) -> str:
    """``Contract Service`` and contract of a mapping, as list-clients shows them."""
    service = ref(mapping.contract_service_id, mapping.service_name)
    if mapping.psa == HALO:
        return f"{service} (HaloPSA subscription)"  # a subscription is on no contract
    return f"{service} on {ref(mapping.contract_id, mapping.contract_name)}"


def _mapped_to_fields(line: ClientLine) -> Row:
    m = line.mapping
    return {
        "mapped_to": m.contract_service_id if m else None,
        "contract_id": m.contract_id if m else None,
        "contract": (m.contract_name or None) if m else None,
        "service": (m.service_name or None) if m else None,
    }


CLIENT_COLUMNS: tuple[Column[ClientLine], ...] = (
    Column("Client ID", lambda line: line.client_id),
    Column("Client", lambda line: line.client_name or None),
    Column("Active users", lambda line: line.active_users),
    Column(
        "Mapped to",
        lambda line: mapped_to(line.mapping) if line.mapping else None,
        _mapped_to_fields,
    ),
)


# --- search-accounts -------------------------------------------------------------------


class AccountRow(NamedTuple):
    """One row of ``search-accounts``: an account and, with --contracts, one of its services
    (None for an account without any)."""

    hit: AccountHit
    line: ServiceLine | None = None


def rate(value: float | None) -> str | None:
    """A per-unit rate: cents, or up to the 4 decimals ``price / units`` keeps (2.3333)."""
    if value is None:
        return None
    cents = f"{value:.2f}"
    return cents if float(cents) == value else f"{value:.4f}".rstrip("0")


ACCOUNT_COLUMNS: tuple[Column[AccountRow], ...] = (
    Column("Account ID", lambda r: r.hit.account.id),
    Column("Account", lambda r: r.hit.account.name or None),
    Column("Type", lambda r: r.hit.type_label),
    Column(
        "Active",
        lambda r: "yes" if r.hit.account.active else "no",
        lambda r: {"active": r.hit.account.active},
    ),
)
CONTRACT_COLUMNS: tuple[Column[AccountRow], ...] = (
    Column("Contract ID", lambda r: r.line.contract.id if r.line else None),
    Column("Contract", lambda r: (r.line.contract.name or None) if r.line else None),
    Column("Contract Service ID", lambda r: r.line.contract_service_id if r.line else None),
    Column("Service", lambda r: r.line.service_name if r.line else None),
    Column("Units", lambda r: r.line.units if r.line else None),
    Column(
        "Unit price",
        lambda r: rate(r.line.rates.price) if r.line else None,
        lambda r: {"unit_price": r.line.rates.price if r.line else None},
    ),
    Column(
        "Unit cost",
        lambda r: rate(r.line.rates.cost) if r.line else None,
        lambda r: {"unit_cost": r.line.rates.cost if r.line else None},
    ),
)


def search_columns(result: SearchResult) -> tuple[Column[AccountRow], ...]:
    return (*ACCOUNT_COLUMNS, *CONTRACT_COLUMNS) if result.with_contracts else ACCOUNT_COLUMNS


def search_rows(result: SearchResult) -> list[AccountRow]:
    """One row per account; with contracts, one per contract service (account repeated)."""
    if not result.with_contracts:
        return [AccountRow(hit) for hit in result.accounts]
    return [
        AccountRow(hit, line)
        for hit in result.accounts
        for line in (hit.services or (None,))  # an account without contracts keeps its row
    ]


# --- billing periods: when writes are dated (map, list-mappings) ------------------------

UNKNOWN_PERIOD = "unknown billing period"
_PRORATION = "Autotask will prorate the period covering it, a proration it cannot delete"


def writes_dated(billing: Billing) -> str:
    """``the 1st``, ``the 17th (monthly from the 17th)``, ``2027-02-17 (quarterly)``..."""
    s = billing.schedule
    if s.prorate:
        if billing.from_the_1st:
            return "the 1st"
        return "the 1st, prorated" if s.prorated else "the 1st (prorate)"
    if not billing.known:
        return UNKNOWN_PERIOD
    if s.months == 1 and s.effective is not None:
        day = f"the {ordinal(s.effective.day)}"
        return day if billing.from_the_1st else f"{day} ({s.describe()})"
    when = s.effective or s.next_start
    if when is None:
        return UNKNOWN_PERIOD
    return f"{when.isoformat()} ({s.name})"


def offline_writes_dated(prorate: bool) -> str:
    """What the config alone says about the dates of a mapping's writes."""
    return "the 1st (prorate)" if prorate else "billing period start"


def billing_fields(billing: Billing | None, *, prorate: bool) -> Row:
    """The raw ``writes_dated`` of a JSON row and its companions; None where not read."""
    if billing is None:
        return {
            "writes_dated": None,
            "billing_period": None,
            "next_period_start": None,
            "prorate": prorate,
            "prorated": None,
        }
    s = billing.schedule
    return {
        "writes_dated": iso(s.effective),
        "billing_period": s.describe() if billing.known else None,
        "next_period_start": iso(s.next_start),
        "prorate": prorate,
        "prorated": s.prorated,
    }


def billing_lines(billing: Billing) -> list[str]:
    """What ``map`` says: the billing period and, unless it is monthly from the 1st, the
    day this month's writes are dated, the next period, or the proration."""
    s = billing.schedule
    first = billing.first
    month = f"{first.year:04d}-{first.month:02d}"
    if not billing.known:
        if s.contract_start is None:
            why = "the contract has no start date in Autotask"
        elif billing.period_type is None:
            why = "the contract has no contractPeriodType"
        else:
            why = f"contractPeriodType {billing.period_type} has no label this tool reads"
        head = f"Billing period: unknown ({why})"
        if s.prorate:
            return [head, f"Writes are dated the 1st (prorate); {_PRORATION}."]
        return [
            head,
            "sync cannot date this client's writes: fix the contract in Autotask, or run "
            "map again with --prorate to write on the 1st (Autotask then prorates).",
        ]
    head = f"Billing period: {s.describe()}"
    if billing.from_the_1st:
        return [head]
    if s.prorate:
        covering = s.covering_start(first)
        start = s.contract_start
        if start is not None and start > first:
            # Nothing before the contract's start to prorate: it is written from then.
            when = (
                f"this month on {start.isoformat()}" if s.effective else f"from {start.isoformat()}"
            )
            return [
                head,
                f"The contract starts {start.isoformat()}: writes are dated {when}, then "
                f"the 1st of each month ({_PRORATION}).",
            ]
        if not s.prorated:
            return [
                head,
                f"Writes are dated the 1st: in {month} a billing period starts then; in other "
                f"months {_PRORATION}.",
            ]
        if covering is None:
            return [head, f"Writes are dated the 1st: {_PRORATION}."]
        return [
            head,
            f"Writes are dated the 1st: Autotask will prorate the period from "
            f"{covering.isoformat()}, a proration it cannot delete.",
        ]
    if s.effective is not None:
        return [
            head,
            f"Writes for {month} are dated {s.effective.isoformat()} (the start of its "
            "billing period).",
        ]
    if s.next_start is not None:
        return [
            head,
            f"No billing period starts in {month}: sync skips this client this month; the "
            f"next period starts {s.next_start.isoformat()}.",
        ]
    return [head]


# --- map and unmap ---------------------------------------------------------------------


def describe(mapping: ClientMapping) -> str:
    """``account 1 A, contract 2 C, contract service 3 S`` (IDs with names), in the words of
    the mapping's PSA."""
    if mapping.psa == HALO:
        return (
            f"HaloPSA client {ref(mapping.account_id, mapping.account_name)}, "
            f"subscription {ref(mapping.contract_service_id, mapping.service_name)}"
        )
    if mapping.psa == CONNECTWISE:
        return (
            f"ConnectWise company {ref(mapping.account_id, mapping.account_name)}, "
            f"agreement {ref(mapping.contract_id, mapping.contract_name)}, "
            f"addition {ref(mapping.contract_service_id, mapping.service_name)}"
        )
    return (
        f"account {ref(mapping.account_id, mapping.account_name)}, "
        f"contract {ref(mapping.contract_id, mapping.contract_name)}, "
        f"contract service {ref(mapping.contract_service_id, mapping.service_name)}"
    )


def overrides_text(mapping: ClientMapping) -> str:
    """The mapping's overrides as they stand in the config (exact values), or "" for none."""
    parts = [
        f"{key}: {value!r}"
        for key in ("exclude_users", "min_units", "max_units", "unit_cost", "overwrite_cost")
        + ("prorate", "enabled", "note")
        if (value := getattr(mapping, key)) is not None
        and not (key == "exclude_users" and value == 0)
        and not (key == "enabled" and value is True)
    ]
    return ", ".join(parts)


def mapping_document(mapping: ClientMapping) -> Row:
    """The JSON shape of a mapping in ``map``/``unmap`` output: ids in Autotask's words for
    every PSA, as the engine holds them; another PSA's mapping adds ``psa`` (an Autotask
    one keeps the shape it always had)."""
    other = {"psa": mapping.psa} if mapping.psa != AUTOTASK else {}
    return {
        "client_id": mapping.client_id,
        "client": mapping.client_name,
        **other,
        "account_id": mapping.account_id,
        "account": mapping.account_name,
        "contract_id": mapping.contract_id,
        "contract": mapping.contract_name,
        "contract_service_id": mapping.contract_service_id,
        "service_id": mapping.service_id,
        "service": mapping.service_name,
    }


def change_document(change: MapChange) -> Row:
    """One ``map --json`` entry: the new mapping, when its writes are dated, the old one."""
    schedule = change.billing.schedule
    return {
        **mapping_document(change.new),
        **billing_fields(change.billing, prorate=schedule.prorate),
        "effective_date": iso(schedule.effective),
        "previous": mapping_document(change.old) if change.old else None,
    }


def _chain(mapping: ClientMapping) -> tuple[int, int, int]:
    return (mapping.account_id, mapping.contract_id, mapping.contract_service_id)


def change_lines(change: MapChange) -> list[str]:
    """What ``map`` prints for one client: old and new chain, then its billing period."""
    new, old = change.new, change.old
    head = f"Mapped client {new.client_id}{_named(new.client_name)}"
    if old is None:
        mapped = [f"{head} to {describe(new)}"]
    elif _chain(old) == _chain(new):
        mapped = [f"{head} (unchanged chain): {describe(new)}"]
    else:
        mapped = [f"{head}:", f"  was: {describe(old)}", f"  now: {describe(new)}"]
    return [*mapped, *(f"  {line}" for line in billing_lines(change.billing))]


# --- list-mappings [--check] -----------------------------------------------------------


@dataclass(frozen=True)
class MappingLine:
    """One mapping as ``list-mappings`` shows it. ``checked``: read live (--check), so
    ``billing`` is known when the contract was read and ``status`` is the verdict."""

    mapping: ClientMapping
    prorate: bool  # the mapping's `prorate`, else the `sync` default
    last: LastSync | None
    checked: bool = False
    billing: Billing | None = None
    status: str | None = None


def _writes_dated_cell(line: MappingLine) -> str | None:
    if line.mapping.psa == CONNECTWISE:
        return CW_WRITES
    if line.mapping.psa == HALO:
        return HALO_WRITES
    if not line.checked:
        return offline_writes_dated(line.prorate)
    return writes_dated(line.billing) if line.billing else None


def _last_sync_cell(line: MappingLine) -> str | None:
    last = line.last
    if last is None:
        return None
    return f"{last.period} {'-' if last.units is None else last.units} {last.status}"


def _last_sync_fields(line: MappingLine) -> Row:
    last = line.last
    if last is None:
        return {"last_sync": None}
    return {"last_sync": {"period": last.period, "units": last.units, "status": last.status}}


MAPPING_COLUMNS: tuple[Column[MappingLine], ...] = (
    Column("Client ID", lambda line: line.mapping.client_id),
    Column("Client", lambda line: line.mapping.client_name),
    Column("PSA", lambda line: line.mapping.psa),
    ref_column(
        "Account", lambda line: line.mapping.account_id, lambda line: line.mapping.account_name
    ),
    ref_column(
        "Contract",
        # A Halo subscription belongs to no contract: its 0 is the config's placeholder.
        lambda line: None if line.mapping.psa == HALO else line.mapping.contract_id,
        lambda line: line.mapping.contract_name,
    ),
    ref_column(
        "Contract Service",
        lambda line: line.mapping.contract_service_id,
        lambda line: line.mapping.service_name,
    ),
    Column(
        "Writes dated",
        _writes_dated_cell,
        lambda line: billing_fields(line.billing, prorate=line.prorate),
    ),
    Column("Last sync", _last_sync_cell, _last_sync_fields),
)
CHECK_COLUMNS: tuple[Column[MappingLine], ...] = (
    *MAPPING_COLUMNS,
    Column("Status", lambda line: line.status),
)


# --- ConnectWise: search-accounts, map ----------------------------------------------------

# ConnectWise and Halo keep no quantity per month: a write takes effect when it is sent.
CW_WRITES = "when sent (ConnectWise)"
HALO_WRITES = "when sent (HaloPSA)"


class CompanyRow(NamedTuple):
    """One row of ``search-accounts --psa connectwise``: a company and, with --contracts,
    one active agreement with one of its active additions."""

    hit: CompanyHit
    line: Any = None  # connectwise.mapping.AgreementLine


COMPANY_COLUMNS: tuple[Column[CompanyRow], ...] = (
    Column("Account ID", lambda r: r.hit.company.id),
    Column("Account", lambda r: r.hit.company.name or None),
    # The model reads no company type (ConnectWise keeps a list of them): shown as "-".
    Column("Type", lambda r: None),
    Column(
        "Active",
        lambda r: "yes" if _company_active(r.hit) else "no",
        lambda r: {"active": _company_active(r.hit)},
    ),
)


def _company_active(hit: CompanyHit) -> bool:
    status = (hit.company.status or "active").casefold()
    return not hit.company.deleted and "inactive" not in status


def _addition(r: CompanyRow) -> Any:
    return r.line.addition if r.line is not None else None


AGREEMENT_COLUMNS: tuple[Column[CompanyRow], ...] = (
    Column("Agreement ID", lambda r: r.line.agreement.id if r.line else None),
    Column("Agreement", lambda r: (r.line.agreement.name or None) if r.line else None),
    Column("Addition ID", lambda r: a.id if (a := _addition(r)) else None),
    Column("Product", lambda r: product_label(a) if (a := _addition(r)) else None),
    Column("Quantity", lambda r: _quantity(a) if (a := _addition(r)) else None),
    Column(
        "Unit price",
        lambda r: rate(a.unit_price) if (a := _addition(r)) else None,
        lambda r: {"unit_price": a.unit_price if (a := _addition(r)) else None},
    ),
    Column(
        "Unit cost",
        lambda r: rate(a.unit_cost) if (a := _addition(r)) else None,
        lambda r: {"unit_cost": a.unit_cost if (a := _addition(r)) else None},
    ),
)


def _quantity(addition: Any) -> Any:
    whole = addition.whole_quantity
    return whole if whole is not None else addition.quantity


def company_columns(result: CompanySearch) -> tuple[Column[CompanyRow], ...]:
    return (*COMPANY_COLUMNS, *AGREEMENT_COLUMNS) if result.with_contracts else COMPANY_COLUMNS


def company_rows(result: CompanySearch) -> list[CompanyRow]:
    """One row per company; with contracts, one per agreement addition (company repeated)."""
    if not result.with_contracts:
        return [CompanyRow(hit) for hit in result.companies]
    return [CompanyRow(hit, line) for hit in result.companies for line in (hit.lines or (None,))]


# How a count PSA's write lands, as `map` says it under the new line.
_COUNT_WRITES = {
    CONNECTWISE: "  ConnectWise keeps no quantity per month: sync sets the addition's quantity "
    "when it runs (a nightly cron line keeps it current).",
    HALO: "  HaloPSA keeps no count per month: sync sets the subscription's count when it runs; "
    "Halo bills it through a recurring-invoice line whose quantity comes from it.",
}


def line_change_lines(old: ClientMapping | None, new: ClientMapping) -> list[str]:
    """What ``map --psa connectwise|halo`` prints: old and new line, and when writes land."""
    head = f"Mapped client {new.client_id}{_named(new.client_name)}"
    if old is None:
        mapped = [f"{head} to {describe(new)}"]
    elif old.psa == new.psa and _chain(old) == _chain(new):
        mapped = [f"{head} (unchanged chain): {describe(new)}"]
    else:
        mapped = [f"{head}:", f"  was: {describe(old)}", f"  now: {describe(new)}"]
    return [*mapped, _COUNT_WRITES[new.psa]]


def line_change_document(old: ClientMapping | None, new: ClientMapping) -> Row:
    return {**mapping_document(new), "previous": mapping_document(old) if old else None}


# --- HaloPSA: search-accounts, map -------------------------------------------------------------


class HaloClientRow(NamedTuple):
    """One row of ``search-accounts --psa halo``: a client and, with --contracts, one of its
    subscriptions (None for a client without any)."""

    hit: ClientHit
    line: SubscriptionLine | None = None


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


HALO_CLIENT_COLUMNS: tuple[Column[HaloClientRow], ...] = (
    Column("Account ID", lambda r: r.hit.client.id),
    Column("Account", lambda r: r.hit.client.name or None),
    Column(
        "Active",
        lambda r: _yes(not r.hit.client.inactive),
        lambda r: {"active": not r.hit.client.inactive},
    ),
)
SUBSCRIPTION_COLUMNS: tuple[Column[HaloClientRow], ...] = (
    Column("Subscription ID", lambda r: r.line.licence.id if r.line else None),
    Column("Subscription", lambda r: (r.line.licence.name or None) if r.line else None),
    Column("Count", lambda r: _count(r.line) if r.line else None),
    Column(
        "Subscription active",
        lambda r: _yes(r.line.active) if r.line else None,
        lambda r: {"subscription_active": r.line.active if r.line else None},
    ),
    Column(
        "Billed by invoice line",
        lambda r: _yes(r.line.billed) if r.line else None,
        lambda r: {"billed": r.line.billed if r.line else None},
    ),
)


def _count(line: SubscriptionLine) -> Any:
    whole = line.licence.whole_count
    return whole if whole is not None else line.licence.count


def halo_client_columns(result: ClientSearch) -> tuple[Column[HaloClientRow], ...]:
    if result.with_contracts:
        return (*HALO_CLIENT_COLUMNS, *SUBSCRIPTION_COLUMNS)
    return HALO_CLIENT_COLUMNS


def halo_client_rows(result: ClientSearch) -> list[HaloClientRow]:
    """One row per client; with contracts, one per subscription (client repeated)."""
    if not result.with_contracts:
        return [HaloClientRow(hit) for hit in result.clients]
    return [HaloClientRow(hit, line) for hit in result.clients for line in (hit.lines or (None,))]


def halo_change_document(old: ClientMapping | None, new: ClientMapping, warnings: list[str]) -> Row:
    return {
        **mapping_document(new),
        "subscription_id": new.contract_service_id,
        "subscription": new.service_name,
        "warnings": warnings,
        "previous": mapping_document(old) if old else None,
    }
