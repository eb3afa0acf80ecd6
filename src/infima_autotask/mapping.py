"""The mapping workflow (SPEC §7): list clients, search accounts, map, unmap, check mappings.

Library code: no click. Commands pass in the config, the Autotask client and the count source
and render what comes back; nothing here writes the config file except through the returned
``Config`` (the command saves it with ``save_config``, atomically).

Every read of many records is batched (``in`` queries of up to 500 values), so checking 200
mappings costs a handful of Autotask requests, not one per mapping.
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from infima_autotask.autotask import AutotaskApi
from infima_autotask.billing import (
    Rates,
    Schedule,
    next_month,
    period_labels,
    schedule,
    unit_rates,
)
from infima_autotask.chain import (
    USABLE_CONTRACT,
    ChainRef,
    ChainVerdict,
    chain_text,
    check_chain,
    find_successors,
    problem_text,
    read_recurring_contracts,
    renewals_wanted,
)
from infima_autotask.config import AUTOTASK, ClientMapping, Config, SyncSettings, line_key
from infima_autotask.errors import InfimaAutotaskError, StateError, UsageError
from infima_autotask.history import DB_NAME, History
from infima_autotask.infima import INFIMA_THREADS, CountSource, InfimaClientInfo
from infima_autotask.model import (
    CONTRACT_SERVICE_FIELDS,
    Account,
    Contract,
    ContractService,
    choose_row,
    parse_account,
    parse_contract,
    parse_contract_service,
    read_accounts,
    read_contract_picklists,
    read_contract_services,
    read_contracts,
    read_services,
    read_units_rows,
)
from infima_autotask.sync import local_date, mapping_schedule
from infima_autotask.whole_number import WholeNumberError, parse_whole, strip_spaces

log = logging.getLogger(__name__)

PROG = "infima-autotask"

CSV_COLUMNS = ("client_id", "account_id", "contract_id", "contract_service_id")
# Company 0 is every tenant's own organization (AUTOTASK_API.md); every other id is positive.
_ZERO_ALLOWED = frozenset({"account_id"})

T = TypeVar("T")


def local_today(config: Config) -> date:
    """Today in ``sync.timezone`` (the system's when null): it decides "this month"."""
    return local_date(datetime.now(timezone.utc), config.sync.timezone)


def _named(name: str | None) -> str:
    return f" ({name})" if name else ""


# --- list-clients ----------------------------------------------------------------------


@dataclass(frozen=True)
class ClientLine:
    """One INFIMA client for ``list-clients``; ``active_users`` is None when counting failed."""

    client_id: int
    client_name: str
    active_users: int | None
    mapping: ClientMapping | None


def list_clients(
    config: Config, source: CountSource, *, threads: int = INFIMA_THREADS
) -> tuple[list[ClientLine], list[str]]:
    """Every client the count source knows, with its active users; plus warnings.

    A client whose count fails gets ``None`` and a warning; the others are still listed.

    Raises:
        ApiError: the client list itself could not be read.
    """
    clients = sorted(source.clients(), key=lambda info: info.id)
    warnings: list[str] = []

    def count(info: InfimaClientInfo) -> int | None:
        try:
            return source.active_users(info.id)
        except InfimaAutotaskError as exc:
            warnings.append(
                f"client {info.id}{_named(info.name)}: could not count active users: {exc.message}"
            )
            return None

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        counts = list(pool.map(count, clients))
    known = {info.id for info in clients}
    for mapping in config.mappings:
        if mapping.client_id not in known:
            warnings.append(
                f"mapped client {mapping.client_id}{_named(mapping.client_name)} is not known "
                f"to INFIMA; remove it with `{PROG} unmap {mapping.client_id}` if it is gone."
            )
    lines = [
        ClientLine(info.id, info.name, users, config.mapping_for(info.id))
        for info, users in zip(clients, counts, strict=True)
    ]
    return lines, sorted(warnings)


# --- search-accounts -------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceLine:
    """A contract of an account shown by ``search-accounts --contracts``, with one service.

    ``contract_service_id`` is None for a contract that carries no service. ``units`` are
    those of the row a sync would start from this month; ``rates`` are per unit
    (``billing.unit_rates``), never a row's extended amounts.
    """

    contract: Contract
    contract_service_id: int | None
    service_name: str | None
    units: int | None
    rates: Rates = Rates(None, None)


@dataclass(frozen=True)
class AccountHit:
    account: Account
    type_label: str | None
    services: tuple[ServiceLine, ...] = ()


@dataclass(frozen=True)
class SearchResult:
    accounts: list[AccountHit]
    more: bool  # more companies matched than the limit allowed to show
    with_contracts: bool


def search_accounts(
    client: AutotaskApi,
    query: str,
    *,
    today: date,
    inactive: bool = False,
    contracts: bool = False,
    limit: int = 50,
    config: Config | None = None,
) -> SearchResult:
    """Companies whose name contains ``query``; ``limit`` 0 means all (every page).

    With ``contracts``, the usable contracts (``chain.usable_contract``) of the accounts shown,
    their contract services, service names, this month's units and per-unit rates, one batched
    query per entity for all accounts. ``config`` (its ``prorate`` settings) decides which
    units row a sync would start from.

    Raises:
        UsageError: ``query`` is empty.
    """
    text = query.strip()
    if not text:
        raise UsageError("QUERY is empty; give part of the account name, e.g. `acme`.")
    filters: list[dict[str, Any]] = [{"op": "contains", "field": "companyName", "value": text}]
    if not inactive:
        filters.append({"op": "eq", "field": "isActive", "value": True})
    records = client.iter_query(
        "Companies", filters, fields=("companyName", "companyType", "isActive")
    )
    found = list(itertools.islice(records, limit + 1) if limit else records)
    more = bool(limit) and len(found) > limit
    accounts = [parse_account(record) for record in found[: limit or None]]
    if not accounts:
        return SearchResult([], more=False, with_contracts=contracts)
    labels = client.picklist("Companies", "companyType")
    accounts.sort(key=lambda account: (account.name.casefold(), account.id))
    services: dict[int, list[ServiceLine]] = {}
    if contracts:
        services = _account_services(
            client, [account.id for account in accounts], today, config or Config()
        )
    hits = [
        AccountHit(
            account,
            labels.get(account.company_type, str(account.company_type))
            if account.company_type is not None
            else None,
            tuple(services.get(account.id, ())),
        )
        for account in accounts
    ]
    return SearchResult(hits, more=more, with_contracts=contracts)


def _account_services(
    client: AutotaskApi, account_ids: Sequence[int], today: date, config: Config
) -> dict[int, list[ServiceLine]]:
    first = today.replace(day=1)
    picklists = read_contract_picklists(client)  # the request that gives the active statuses
    months = period_labels(picklists.period_labels)
    contracts = read_recurring_contracts(client, account_ids, today, picklists.active_statuses)
    carried = [
        parse_contract_service(record)
        for record in client.query_in(
            "ContractServices",
            "contractID",
            [contract.id for contract in contracts],
            fields=CONTRACT_SERVICE_FIELDS,
        )
    ]
    names = read_services(client, {cs.service_id for cs in carried})
    # The whole month: a contract billed from the 17th starts its period on the 17th.
    rows = read_units_rows(
        client, [cs.id for cs in carried], first, next_month(first) - timedelta(days=1)
    )
    mapped = {m.contract_service_id: m for m in config.mappings}
    by_contract: dict[int, list[ContractService]] = {}
    for cs in sorted(carried, key=lambda cs: cs.id):
        by_contract.setdefault(cs.contract_id, []).append(cs)
    found: dict[int, list[ServiceLine]] = {}
    for contract in contracts:
        lines = found.setdefault(contract.account_id, [])
        if contract.id not in by_contract:
            lines.append(ServiceLine(contract, None, None, None))
        for cs in by_contract.get(contract.id, []):
            when = _service_schedule(mapped.get(cs.id), contract, first, config.sync, months)
            # As sync does: the row covering E, or D when no period starts this month.
            row = choose_row(rows.get(cs.id, []), when.effective or first)
            service = names.get(cs.service_id)
            lines.append(
                ServiceLine(
                    contract,
                    cs.id,
                    service.name if service else None,
                    row.units if row else None,
                    unit_rates(row, cs),
                )
            )
    return found


def _service_schedule(
    mapping: ClientMapping | None,
    contract: Contract,
    first: date,
    settings: SyncSettings,
    months: dict[int, int],
) -> Schedule:
    """The schedule of a mapped contract service, else of one mapped with no override."""
    if mapping is not None:
        return mapping_schedule(mapping, contract, first, settings, months)
    length = months.get(contract.period_type) if contract.period_type is not None else None
    return schedule(contract.start, length, first, prorate=settings.prorate)


# --- billing periods: when writes are dated (map, list-mappings) ------------------------


@dataclass(frozen=True)
class Billing:
    """When one mapping's writes are dated in the month starting ``first`` (SPEC §8).

    ``period_type`` is the contract's ``contractPeriodType``, named when its label is unknown.
    """

    schedule: Schedule
    first: date
    period_type: int | None = None

    @property
    def known(self) -> bool:
        return self.schedule.months is not None and self.schedule.contract_start is not None

    @property
    def from_the_1st(self) -> bool:
        """Billed monthly from the 1st: every write is dated the 1st and never prorates."""
        start = self.schedule.contract_start
        return self.schedule.months == 1 and start is not None and start.day == 1


def mapping_billing(
    mapping: ClientMapping,
    contract: Contract,
    today: date,
    settings: SyncSettings,
    months: dict[int, int],
) -> Billing:
    """When ``mapping``'s writes are dated this month (``sync.mapping_schedule``)."""
    first = today.replace(day=1)
    return Billing(
        mapping_schedule(mapping, contract, first, settings, months), first, contract.period_type
    )


# --- map: validating a chain -----------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One choice offered when ``--contract`` or ``--contract-service`` is left out."""

    id: int
    label: str

    def line(self) -> str:
        return f"{self.id}  {self.label}" if self.label else str(self.id)


# Called with ("contract" | "contract service", candidates) when there are several; returns
# the chosen one. None: nobody can be asked (no terminal).
Picker = Callable[[str, Sequence[Candidate]], Candidate]


@dataclass(frozen=True)
class _Problem:
    text: str
    hint: str = ""  # what to do, for the single `map` command (the CSV lists lines instead)

    def message(self) -> str:
        return f"{self.text}. {self.hint}" if self.hint else f"{self.text}."


def _taken_problem(
    config: Config, client_id: int, cs_id: int, psa: str = AUTOTASK
) -> _Problem | None:
    """Another client already maps this line (a PSA line is mapped at most once)."""
    line = "contract service" if psa == AUTOTASK else line_key(psa, "contract_service_id")[:-3]
    for other in config.mappings:
        if other.psa == psa and other.contract_service_id == cs_id and other.client_id != client_id:
            return _Problem(
                f"{_sentence(line)} {cs_id} is already mapped to client "
                f"{other.client_id}{_named(other.client_name)}",
                f"Run `{PROG} unmap {other.client_id}` first, or choose another {line}.",
            )
    return None


def _raise(problem: _Problem | None) -> None:
    if problem is not None:
        raise UsageError(problem.message())


def _sentence(clause: str) -> str:
    """A clause as the start of a sentence: ``contract 5 ...`` -> ``Contract 5 ...``."""
    return clause[:1].upper() + clause[1:]


def _usable(verdict: ChainVerdict, value: T | None) -> T:
    """``value`` when the chain read so far is usable, else the verdict as ``map``'s error."""
    if not verdict.ok:
        raise UsageError(f"{_sentence(chain_text(verdict))}.")
    if value is None:
        raise UsageError("A record Autotask was asked for is missing; run the command again.")
    return value


def _infima_client(clients: Iterable[InfimaClientInfo], client_id: int) -> InfimaClientInfo:
    for info in clients:
        if info.id == client_id:
            return info
    raise UsageError(
        f"INFIMA does not know client {client_id}. Run `{PROG} list-clients` to see the client IDs."
    )


@dataclass(frozen=True)
class MapRequest:
    """What ``map`` was asked; None leaves a value to choose (IDs) or unchanged (overrides)."""

    client_id: int
    account_id: int
    contract_id: int | None = None
    contract_service_id: int | None = None
    exclude_users: int | None = None
    min_units: int | None = None
    max_units: int | None = None
    unit_cost: float | None = None
    prorate: bool | None = None


@dataclass(frozen=True)
class MapChange:
    """One client's old mapping (None when new), new mapping and its billing period."""

    old: ClientMapping | None
    new: ClientMapping
    billing: Billing


@dataclass(frozen=True)
class MapResult:
    config: Config  # the whole new config, to be saved
    changes: list[MapChange]
    notes: list[str]  # what was chosen without asking (single candidates)
    warnings: list[str] = field(default_factory=list)  # a line that may bill the wrong thing


# Words too common in company names to tell two companies apart.
_GENERIC_WORDS = frozenset(
    ("llc", "inc", "ltd", "plc", "corp", "company", "group", "services", "the", "and")
    + ("pty", "gmbh", "limited")
)


def _words(name: str | None) -> set[str]:
    return {
        word
        for word in re.findall(r"[^\W_]+", (name or "").casefold())
        if len(word) >= 3 and word not in _GENERIC_WORDS
    }


def mapping_warnings(config: Config, new: ClientMapping) -> list[str]:
    """What makes ``new`` look like the wrong line: another service than the other mappings
    bill, or an account whose name shares no word with the client's."""
    found: list[str] = []
    # Product and service ids of other PSAs are other numbers: compare within the PSA.
    others = [m for m in config.mappings if m.client_id != new.client_id and m.psa == new.psa]
    usual = Counter(m.service_id for m in others).most_common(1)
    if usual and usual[0][0] != new.service_id:
        service_id, count = usual[0]
        name = next((m.service_name for m in others if m.service_id == service_id), None)
        autotask = new.psa == AUTOTASK
        line, thing = ("contract service", "service") if autotask else ("addition", "product")
        found.append(
            f"{line} {new.contract_service_id} bills "
            f"{new.service_name or thing} ({new.service_id}), but "
            f"{'the other mapping bills' if count == 1 else f'the other {count} mappings bill'} "
            f"{name or thing} ({service_id}): is it the INFIMA seats line?"
        )
    client_words, account_words = _words(new.client_name), _words(new.account_name)
    if client_words and account_words and not client_words & account_words:
        found.append(
            f"the account {new.account_name!r} shares no word with the INFIMA client "
            f"{new.client_name!r}: is it the right company?"
        )
    return found


def _with_overrides(mapping: ClientMapping, request: MapRequest) -> ClientMapping:
    changed: dict[str, Any] = {}
    for key in ("exclude_users", "min_units", "max_units"):
        value = getattr(request, key)
        if value is not None:
            changed[key] = value
    if request.unit_cost is not None:
        changed.update(unit_cost=request.unit_cost, overwrite_cost=True)
    if request.prorate is not None:
        changed["prorate"] = request.prorate
    return replace(mapping, **changed)


def _check_overrides(request: MapRequest, old: ClientMapping | None) -> None:
    if request.unit_cost is not None and not math.isfinite(request.unit_cost):
        raise UsageError(f"--unit-cost must be a finite number, got {request.unit_cost}.")
    low, high = request.min_units, request.max_units
    if old is not None:
        low = old.min_units if low is None else low
        high = old.max_units if high is None else high
    if low is not None and high is not None and low > high:
        raise UsageError(
            f"Minimum units {low} is greater than maximum units {high}; "
            "fix --min-units or --max-units."
        )


def _new_mapping(
    old: ClientMapping | None,
    request: MapRequest,
    info: InfimaClientInfo,
    account: Account,
    contract: Contract,
    cs: ContractService,
    service_name: str | None,
) -> ClientMapping:
    chain: dict[str, Any] = {
        "client_name": info.name or (old.client_name if old else None),
        "account_id": account.id,
        "account_name": account.name or None,
        "contract_id": contract.id,
        "contract_name": contract.name or None,
        "contract_service_id": cs.id,
        "service_id": cs.service_id,
        "service_name": service_name or None,
    }
    base = replace(old, **chain) if old else ClientMapping(client_id=request.client_id, **chain)
    return _with_overrides(base, request)


def _choose(
    kind: str,
    candidates: Sequence[Candidate],
    pick: Picker | None,
    notes: list[str],
    many: str,
    option: str,
    say: Callable[[str], None] | None = None,
) -> int:
    if len(candidates) == 1:
        notes.append(f"Taking the only {kind}: {candidates[0].line()}")
        if say is not None:
            say(notes[-1])
        return candidates[0].id
    if pick is None:
        raise UsageError(
            f"{many}; pass {option} with one of these IDs (no terminal to choose on):",
            [candidate.line() for candidate in candidates],
        )
    return pick(kind, candidates).id


def _contract_label(contract: Contract) -> str:
    span = f"{contract.start or '?'} to {contract.end or '?'}"
    return f"{contract.name} ({span})" if contract.name else f"({span})"


def map_client(
    config: Config,
    client: AutotaskApi,
    source: CountSource,
    request: MapRequest,
    *,
    today: date,
    pick: Picker | None = None,
    say: Callable[[str], None] | None = None,
) -> MapResult:
    """Validate one client's chain live (SPEC §7) and return the config with its mapping.

    A missing contract or contract service is taken when there is one candidate, else
    chosen with ``pick``; without ``pick`` the candidates are listed in the error. ``say``
    hears each note as it is made, so a choice taken alone shows before the next prompt.

    Raises:
        UsageError: unknown client, account, contract or contract service, a broken chain,
            a contract service mapped to another client, or no choice possible.
    """
    old = config.mapping_for(request.client_id)
    _check_overrides(request, old)
    info = _infima_client(source.clients(), request.client_id)
    notes: list[str] = []

    record = client.get("Companies", request.account_id)
    found = parse_account(record) if record else None
    ref = ChainRef(client_id=request.client_id, account_id=request.account_id)
    account = _usable(check_chain(ref, day=today, account=found), found)
    # One request for both: the active statuses and the billing period labels.
    picklists = read_contract_picklists(client)
    active = picklists.active_statuses

    if request.contract_id is None:
        options = [
            contract
            for contract in read_recurring_contracts(client, [account.id], today, active)
            if contract.account_id == account.id
        ]
        if not options:
            raise UsageError(
                f"Account {account.id}{_named(account.name)} has no {USABLE_CONTRACT}. Create "
                "one in Autotask with the INFIMA service on it, then run map again."
            )
        by_id = {contract.id: contract for contract in options}
        chosen = _choose(
            "contract",
            [Candidate(contract.id, _contract_label(contract)) for contract in options],
            pick,
            notes,
            f"Account {account.id}{_named(account.name)} has {len(options)} {USABLE_CONTRACT}s",
            "--contract",
            say,
        )
        contract = by_id[chosen]
    else:
        record = client.get("Contracts", request.contract_id)
        given = parse_contract(record) if record else None
        ref = replace(ref, contract_id=request.contract_id)
        verdict = check_chain(
            ref, day=today, active_statuses=active, account=account, contract=given
        )
        contract = _usable(verdict, given)

    if request.contract_service_id is None:
        carried = sorted(
            map(
                parse_contract_service,
                client.query(
                    "ContractServices",
                    [{"op": "eq", "field": "contractID", "value": contract.id}],
                    fields=CONTRACT_SERVICE_FIELDS,
                ),
            ),
            key=lambda cs: cs.id,
        )
        carried = [cs for cs in carried if cs.contract_id == contract.id]
        if not carried:
            raise UsageError(
                f"Contract {contract.id}{_named(contract.name)} has no services. Add the INFIMA "
                "service to it in Autotask, then run map again."
            )
        services = read_services(client, {c.service_id for c in carried})
        names = {service_id: service.name for service_id, service in services.items()}
        by_cs = {cs.id: cs for cs in carried}
        candidates = []
        for cs in carried:
            label = names.get(cs.service_id) or f"service {cs.service_id}"
            holder = _taken_problem(config, request.client_id, cs.id)
            if holder is not None:
                label += " (already mapped to another client)"
            candidates.append(Candidate(cs.id, label))
        cs_id = _choose(
            "contract service",
            candidates,
            pick,
            notes,
            f"Contract {contract.id}{_named(contract.name)} has {len(carried)} services",
            "--contract-service",
            say,
        )
        cs = by_cs[cs_id]
        service_name = names.get(cs.service_id)
    else:
        record = client.get("ContractServices", request.contract_service_id)
        given_cs = parse_contract_service(record) if record else None
        ref = replace(ref, contract_id=contract.id, contract_service_id=request.contract_service_id)
        verdict = check_chain(
            ref,
            day=today,
            active_statuses=active,
            account=account,
            contract=contract,
            contract_service=given_cs,
        )
        cs = _usable(verdict, given_cs)
        service = client.get("Services", cs.service_id)
        service_name = str(service.get("name") or "") if service else None
    _raise(_taken_problem(config, request.client_id, cs.id))

    new = _new_mapping(old, request, info, account, contract, cs, service_name)
    months = period_labels(picklists.period_labels)
    billing = mapping_billing(new, contract, today, config.sync, months)
    warnings = mapping_warnings(config, new)
    return MapResult(config.with_mapping(new), [MapChange(old, new, billing)], notes, warnings)


# --- map --from-csv --------------------------------------------------------------------


@dataclass(frozen=True)
class CsvRow:
    line: int
    client_id: int
    account_id: int
    contract_id: int
    contract_service_id: int


def read_mapping_csv(path: Path) -> tuple[list[CsvRow], list[tuple[int, str]]]:
    """The rows of a mapping CSV and the problems of the rows that could not be read.

    Raises:
        UsageError: the file cannot be read, or its header is not the expected one.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            lines = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"Cannot read the mapping file {path}: {exc.__class__.__name__}. Check the path."
        ) from None
    except csv.Error as exc:
        raise UsageError(f"Mapping file {path} is not valid CSV: {exc}.") from None
    header = [cell.strip().lower() for cell in lines[0][1]] if lines else []
    if tuple(header) != CSV_COLUMNS:
        raise UsageError(
            f"Mapping file {path}: the first line must be the header {','.join(CSV_COLUMNS)}."
        )
    rows: list[CsvRow] = []
    problems: list[tuple[int, str]] = []
    for line, cells in lines[1:]:
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(CSV_COLUMNS):
            problems.append((line, f"expected {len(CSV_COLUMNS)} columns, got {len(cells)}"))
            continue
        values: list[int] = []
        for name, cell in zip(CSV_COLUMNS, cells, strict=True):
            low = 0 if name in _ZERO_ALLOWED else 1
            try:
                values.append(parse_whole(cell, low=low, spaces=True))
            except WholeNumberError:
                kind = "0 or a positive integer" if low == 0 else "a positive integer"
                problems.append((line, f"{name} must be {kind}, got {strip_spaces(cell)!r}"))
                break
        else:
            rows.append(CsvRow(line, *values))
    return rows, problems


def _duplicates(rows: Sequence[CsvRow]) -> tuple[list[CsvRow], list[tuple[int, str]]]:
    seen_client: dict[int, int] = {}
    seen_cs: dict[int, int] = {}
    kept: list[CsvRow] = []
    problems: list[tuple[int, str]] = []
    for row in rows:
        if row.client_id in seen_client:
            problems.append(
                (row.line, f"client {row.client_id} is also on line {seen_client[row.client_id]}")
            )
        elif row.contract_service_id in seen_cs:
            problems.append(
                (
                    row.line,
                    f"contract service {row.contract_service_id} is also on line "
                    f"{seen_cs[row.contract_service_id]}",
                )
            )
        else:
            seen_client[row.client_id] = row.line
            seen_cs[row.contract_service_id] = row.line
            kept.append(row)
    return kept, problems


def map_from_csv(
    config: Config,
    client: AutotaskApi,
    source: CountSource,
    path: Path,
    *,
    today: date,
) -> MapResult:
    """Validate every row of a mapping CSV live, then map them all, or none.

    Reads: one INFIMA client list; one query each (per 500 rows) for accounts, contracts,
    contract services and services, plus the contract picklists (status, billing period).

    Raises:
        UsageError: any bad row (``details``: every bad row as ``line N: ...``).
    """
    rows, problems = read_mapping_csv(path)
    rows, duplicate_problems = _duplicates(rows)
    problems += duplicate_problems
    if not rows and not problems:
        raise UsageError(f"Mapping file {path} has no rows below its header; nothing to map.")
    changes: list[MapChange] = []
    if rows:
        clients = {info.id: info for info in source.clients()}
        accounts = read_accounts(client, [row.account_id for row in rows])
        contracts = read_contracts(client, [row.contract_id for row in rows])
        services = read_contract_services(client, [row.contract_service_id for row in rows])
        names = read_services(client, {cs.service_id for cs in services.values()})
        picklists = read_contract_picklists(client)
        active = picklists.active_statuses
        months = period_labels(picklists.period_labels)
        # Other clients keep their mappings unless this file re-maps them.
        remapped = {row.client_id for row in rows}
        kept = replace(
            config, mappings=tuple(m for m in config.mappings if m.client_id not in remapped)
        )
        new_config = config
        for row in rows:
            problem = _row_problem(row, clients, accounts, contracts, services, active, today)
            problem = problem or _taken_problem(kept, row.client_id, row.contract_service_id)
            if problem is not None:
                problems.append((row.line, problem.text))
                continue
            cs = services[row.contract_service_id]
            service = names.get(cs.service_id)
            old = config.mapping_for(row.client_id)
            request = MapRequest(
                row.client_id, row.account_id, row.contract_id, row.contract_service_id
            )
            new = _new_mapping(
                old,
                request,
                clients[row.client_id],
                accounts[row.account_id],
                contracts[row.contract_id],
                cs,
                service.name if service else None,
            )
            new_config = new_config.with_mapping(new)
            billing = mapping_billing(new, contracts[row.contract_id], today, config.sync, months)
            changes.append(MapChange(old, new, billing))
    if problems:
        problems.sort()
        raise UsageError(
            f"{len(problems)} bad row{'s' if len(problems) != 1 else ''} in {path}; nothing was "
            "written. Fix them and run again:",
            [f"line {line}: {text}" for line, text in problems],
        )
    warnings = [
        f"client {change.new.client_id}: {text}"
        for change in changes
        for text in mapping_warnings(new_config, change.new)
    ]
    return MapResult(new_config, changes, [], warnings)


def _row_problem(
    row: CsvRow,
    clients: dict[int, InfimaClientInfo],
    accounts: dict[int, Account],
    contracts: dict[int, Contract],
    services: dict[int, ContractService],
    active: set[int],
    today: date,
) -> _Problem | None:
    if row.client_id not in clients:
        return _Problem(f"INFIMA does not know client {row.client_id}")
    ref = ChainRef(
        client_id=row.client_id,
        account_id=row.account_id,
        contract_id=row.contract_id,
        contract_service_id=row.contract_service_id,
    )
    verdict = check_chain(
        ref,
        day=today,
        active_statuses=active,
        account=accounts.get(row.account_id),
        contract=contracts.get(row.contract_id),
        contract_service=services.get(row.contract_service_id),
    )
    # A file of rows: each line says what is wrong; the fix is to correct the line.
    return None if verdict.ok else _Problem(_sentence(problem_text(verdict)))


# --- unmap -----------------------------------------------------------------------------


def unmap(config: Config, client_id: int) -> tuple[Config, ClientMapping]:
    """The config without ``client_id``'s mapping, and that mapping.

    Raises:
        UsageError: the client is not mapped.
    """
    mapping = config.mapping_for(client_id)
    if mapping is None:
        raise UsageError(
            f"Client {client_id} is not mapped. Run `{PROG} list-mappings` to see the mapped "
            "clients."
        )
    return config.without_mapping(client_id), mapping


# --- list-mappings [--check] -----------------------------------------------------------


@dataclass(frozen=True)
class LastSync:
    """A client's newest item of a real (not dry) run: its period, the units it left
    (``after``; None when unknown) and its status."""

    period: str
    units: int | None
    status: str


def last_syncs(state_dir: Path) -> dict[int, LastSync]:
    """Each client's last sync from the history, if there is one.

    Never creates the state folder: without a history database there is nothing to show.
    """
    if not (state_dir / DB_NAME).is_file():
        return {}
    try:
        with History(state_dir) as history:
            items = history.last_items()
    except StateError as exc:
        log.warning("Last sync not shown: %s", exc.message)
        return {}
    return {
        client_id: LastSync(item.period, item.after, item.status)
        for client_id, item in items.items()
    }


@dataclass(frozen=True)
class CheckResult:
    config: Config  # with names refreshed from Autotask (equal to the input when none changed)
    status: dict[int, str]  # client_id -> "ok" or what is broken and the fix
    broken: set[int]
    refreshed: list[int]  # clients whose names (or service id) were refreshed
    billing: dict[int, Billing] = field(default_factory=dict)  # clients whose contract was read


def check_mappings(
    config: Config,
    client: AutotaskApi,
    *,
    today: date,
    known_clients: set[int] | None = None,
) -> CheckResult:
    """Validate every mapping live in batched reads and refresh names changed in Autotask.

    Requests: the contract picklists (status and billing period: one request), then one
    query (per 500 mappings) each for accounts, contracts, contract services and services;
    two more for the renewal look-up, only when some contract has ended. ``known_clients``
    (INFIMA's client list, or the counts file's) marks a mapping of a client it lacks broken.
    """
    mappings = config.mappings
    if not mappings:
        return CheckResult(config, {}, set(), [])
    picklists = read_contract_picklists(client)
    active = picklists.active_statuses
    months = period_labels(picklists.period_labels)
    accounts = read_accounts(client, [m.account_id for m in mappings])
    contracts = read_contracts(client, [m.contract_id for m in mappings])
    services = read_contract_services(client, [m.contract_service_id for m in mappings])
    names = read_services(
        client, {m.service_id for m in mappings} | {cs.service_id for cs in services.values()}
    )
    verdicts = {
        m.client_id: check_chain(
            ChainRef.of(m),
            day=today,
            active_statuses=active,
            account=accounts.get(m.account_id),
            contract=contracts.get(m.contract_id),
            contract_service=services.get(m.contract_service_id),
        )
        for m in mappings
    }
    ended = renewals_wanted(verdicts.values())
    successors = find_successors(client, ended, today, active) if ended else {}

    status: dict[int, str] = {}
    billing: dict[int, Billing] = {}
    refreshed: list[int] = []
    new_mappings: list[ClientMapping] = []
    for m in mappings:
        account = accounts.get(m.account_id)
        contract = contracts.get(m.contract_id)
        cs = services.get(m.contract_service_id)
        verdict = verdicts[m.client_id].sought(successors)
        status[m.client_id] = "ok" if verdict.ok else chain_text(verdict)
        unknown = known_clients is not None and m.client_id not in known_clients
        if status[m.client_id] == "ok" and unknown:
            status[m.client_id] = (
                f"INFIMA has no client {m.client_id}; check it in INFIMA, or "
                f"`{PROG} unmap {m.client_id}`"
            )
        if contract is not None and contract.account_id == m.account_id:
            billing[m.client_id] = mapping_billing(m, contract, today, config.sync, months)
        fresh = _refresh(m, account, contract, cs, names)
        if fresh != m:
            refreshed.append(m.client_id)
            log.info("refreshed names of client %d's mapping", m.client_id)
        new_mappings.append(fresh)
    new_config = replace(config, mappings=tuple(new_mappings)) if refreshed else config
    broken = {client_id for client_id, text in status.items() if text != "ok"}
    return CheckResult(new_config, status, broken, refreshed, billing)


def _refresh(
    mapping: ClientMapping,
    account: Account | None,
    contract: Contract | None,
    cs: ContractService | None,
    names: dict[int, Any],
) -> ClientMapping:
    changed: dict[str, Any] = {}
    if account is not None and account.name and account.name != mapping.account_name:
        changed["account_name"] = account.name
    if (
        contract is not None
        and contract.account_id == mapping.account_id
        and contract.name
        and contract.name != mapping.contract_name
    ):
        changed["contract_name"] = contract.name
    service_id = mapping.service_id
    if cs is not None and cs.contract_id == mapping.contract_id:
        service_id = cs.service_id  # what sync must send as serviceID
        if service_id != mapping.service_id:
            changed["service_id"] = service_id
    service = names.get(service_id)
    if service is not None and service.name and service.name != mapping.service_name:
        changed["service_name"] = service.name
    return replace(mapping, **changed) if changed else mapping
