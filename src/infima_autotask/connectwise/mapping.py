"""The mapping workflow on ConnectWise PSA (SPEC §10): search companies, map a client to an
agreement addition, check mappings live. Library code: no click.

The choosing rules (numbered list, the only candidate, else exit 2 listing them), the INFIMA
client check, the overrides and the "mapped once" rule are ``infima_autotask.mapping``'s;
whether a line is usable is ``connectwise.chain``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date

from infima_autotask.config import CONNECTWISE, ClientMapping, Config
from infima_autotask.connectwise.chain import (
    active_addition,
    active_agreement,
    agreement_problem,
    company_problem,
    duplicate_problem,
    line_problem,
)
from infima_autotask.connectwise.client import ConnectWiseApi
from infima_autotask.connectwise.model import Addition, Agreement, Company
from infima_autotask.errors import UsageError
from infima_autotask.infima import CountSource
from infima_autotask.mapping import (
    PROG,
    Candidate,
    MapRequest,
    Picker,
    _check_overrides,
    _choose,
    _infima_client,
    _named,
    _raise,
    _sentence,
    _taken_problem,
    _with_overrides,
    mapping_warnings,
)

# --- search-accounts --psa connectwise -------------------------------------------------


@dataclass(frozen=True)
class AgreementLine:
    """An active agreement of a company and one of its active additions (None: it has none)."""

    agreement: Agreement
    addition: Addition | None


@dataclass(frozen=True)
class CompanyHit:
    company: Company
    lines: tuple[AgreementLine, ...] = ()


@dataclass(frozen=True)
class CompanySearch:
    companies: list[CompanyHit]
    more: bool
    with_contracts: bool


def search_companies(
    api: ConnectWiseApi,
    query: str,
    *,
    today: date,
    contracts: bool = False,
    limit: int = 50,
    inactive: bool = False,
) -> CompanySearch:
    """Companies whose name contains ``query``; with ``contracts`` their active agreements
    and each one's active additions. ``inactive`` adds those in the recycle bin.

    Raises:
        UsageError: ``query`` is empty.
    """
    text = query.strip()
    if not text:
        raise UsageError("QUERY is empty; give part of the company name, e.g. `acme`.")
    found = sorted(
        api.find_companies(text, include_deleted=inactive), key=lambda c: (c.name.casefold(), c.id)
    )
    more = bool(limit) and len(found) > limit
    shown = found[: limit or None]
    hits: list[CompanyHit] = []
    for company in shown:
        lines: list[AgreementLine] = []
        if contracts:
            for agreement in sorted(api.agreements(company.id), key=lambda a: a.id):
                if not active_agreement(agreement, today):
                    continue
                additions = [a for a in api.additions(agreement.id) if active_addition(a, today)]
                lines.extend(AgreementLine(agreement, a) for a in sorted(additions, key=_by_id))
                if not additions:
                    lines.append(AgreementLine(agreement, None))
        hits.append(CompanyHit(company, tuple(lines)))
    return CompanySearch(hits, more=more, with_contracts=contracts)


def _by_id(addition: Addition) -> int:
    return addition.id


def product_label(addition: Addition) -> str:
    """``INFIMA-SAT INFIMA Security Awareness Training``: identifier and description."""
    parts = [addition.product_identifier, addition.description]
    return " ".join(p for p in parts if p) or f"product {addition.product_id}"


def product_name(addition: Addition) -> str | None:
    """What a mapping keeps as ``product_name``: the addition's description, else the
    product's identifier."""
    return addition.description or addition.product_identifier or None


# --- map --psa connectwise ---------------------------------------------------------------


@dataclass(frozen=True)
class LineRequest:
    """What ``map --psa connectwise`` was asked; None leaves an id to choose."""

    client_id: int
    account_id: int
    agreement_id: int | None = None
    addition_id: int | None = None
    exclude_users: int | None = None
    min_units: int | None = None
    max_units: int | None = None
    unit_cost: float | None = None


@dataclass(frozen=True)
class LineMapResult:
    config: Config
    old: ClientMapping | None
    new: ClientMapping
    notes: list[str]
    warnings: list[str] = field(default_factory=list)


def _agreement_label(agreement: Agreement) -> str:
    span = f"{agreement.start or '?'} to {'no end' if agreement.no_end else agreement.end or '?'}"
    return f"{agreement.name} ({span})" if agreement.name else f"({span})"


def _problem(text: str) -> UsageError:
    return UsageError(f"{_sentence(text)}.")


def map_line(
    config: Config,
    api: ConnectWiseApi,
    source: CountSource,
    request: LineRequest,
    *,
    today: date,
    pick: Picker | None = None,
    say: Callable[[str], None] | None = None,
) -> LineMapResult:
    """Validate one client's ConnectWise line live and return the config with its mapping.

    Raises:
        UsageError: unknown client, company, agreement or addition, a line the chain rule
            refuses, an addition mapped to another client, or no choice possible.
    """
    old = config.mapping_for(request.client_id)
    overrides = MapRequest(
        client_id=request.client_id,
        account_id=request.account_id,
        exclude_users=request.exclude_users,
        min_units=request.min_units,
        max_units=request.max_units,
        unit_cost=request.unit_cost,
    )
    _check_overrides(overrides, old)
    info = _infima_client(source.clients(), request.client_id)
    notes: list[str] = []

    company = api.company(request.account_id)
    problem = company_problem(request.account_id, company)
    if problem is not None or company is None:
        raise _problem(problem or f"company {request.account_id} not found")

    if request.agreement_id is None:
        options = sorted(
            (
                a
                for a in api.agreements(company.id)
                if a.company_id == company.id and active_agreement(a, today)
            ),
            key=lambda a: a.id,
        )
        if not options:
            raise UsageError(
                f"Company {company.id}{_named(company.name)} has no active agreement. Create "
                "one in ConnectWise with the INFIMA product as an addition, then run map again."
            )
        by_id = {a.id: a for a in options}
        chosen = _choose(
            "agreement",
            [Candidate(a.id, _agreement_label(a)) for a in options],
            pick,
            notes,
            f"Company {company.id}{_named(company.name)} has {len(options)} active agreements",
            "--agreement",
            say,
        )
        agreement = by_id[chosen]
    else:
        given = api.agreement(request.agreement_id)
        if given is None:
            raise _problem(f"agreement {request.agreement_id} not found in ConnectWise")
        if given.company_id != company.id:
            raise _problem(
                f"agreement {given.id} belongs to company {given.company_id}, not {company.id}"
            )
        problem = agreement_problem(given, today)
        if problem is not None:
            raise _problem(problem)
        agreement = given

    additions = api.additions(agreement.id)
    if request.addition_id is None:
        active = sorted((a for a in additions if active_addition(a, today)), key=_by_id)
        if not active:
            raise UsageError(
                f"Agreement {agreement.id}{_named(agreement.name)} has no active addition. Add "
                "the INFIMA product to it in ConnectWise, then run map again."
            )
        candidates = []
        for option in active:
            label = product_label(option)
            if _taken_problem(config, request.client_id, option.id, CONNECTWISE) is not None:
                label += " (already mapped to another client)"
            candidates.append(Candidate(option.id, label))
        chosen = _choose(
            "addition",
            candidates,
            pick,
            notes,
            f"Agreement {agreement.id}{_named(agreement.name)} has {len(active)} active additions",
            "--addition",
            say,
        )
        addition_id = chosen
    else:
        addition_id = request.addition_id
    addition = next((a for a in additions if a.id == addition_id), None)
    problem = line_problem(
        company.id, company, agreement.id, agreement, addition_id, addition, additions, today
    )
    if problem is not None or addition is None:
        raise _problem(problem or f"addition {addition_id} is not on agreement {agreement.id}")
    _raise(_taken_problem(config, request.client_id, addition.id, CONNECTWISE))

    chain = {
        "client_name": info.name or (old.client_name if old else None),
        "account_id": company.id,
        "account_name": company.name or None,
        "contract_id": agreement.id,
        "contract_name": agreement.name or None,
        "contract_service_id": addition.id,
        "service_id": addition.product_id,
        "service_name": product_name(addition),
        "psa": CONNECTWISE,
        "prorate": None,  # means nothing on ConnectWise; the file refuses it there
    }
    base = (
        replace(old, **chain) if old else ClientMapping(client_id=request.client_id, **chain)  # type: ignore[arg-type]
    )
    new = _with_overrides(base, overrides)
    warnings = mapping_warnings(config, new)
    return LineMapResult(config.with_mapping(new), old, new, notes, warnings)


# --- list-mappings --check -----------------------------------------------------------------


@dataclass(frozen=True)
class LineCheck:
    config: Config  # names refreshed
    status: dict[int, str]
    broken: set[int]
    refreshed: list[int]


def _successor(
    api: ConnectWiseApi, mapping: ClientMapping, today: date
) -> tuple[Agreement, Addition] | None:
    """The same product, active, on another active agreement of the company."""
    for agreement in sorted(api.agreements(mapping.account_id), key=lambda a: a.id):
        if agreement.id == mapping.contract_id or not active_agreement(agreement, today):
            continue
        if agreement.company_id != mapping.account_id:
            continue
        additions = api.additions(agreement.id)
        for addition in sorted(additions, key=_by_id):
            same = addition.product_id == mapping.service_id
            if (
                same
                and active_addition(addition, today)
                and duplicate_problem(addition, additions, today) is None
            ):
                return agreement, addition
    return None


def map_command(mapping: ClientMapping, agreement_id: int, addition_id: int) -> str:
    return (
        f"{PROG} map {mapping.client_id} --psa connectwise --account {mapping.account_id} "
        f"--agreement {agreement_id} --addition {addition_id}"
    )


def check_lines(
    config: Config,
    api: ConnectWiseApi,
    mappings: Sequence[ClientMapping],
    *,
    today: date,
    known_clients: set[int] | None = None,
) -> LineCheck:
    """Validate ConnectWise mappings live (three reads each) and refresh changed names.

    A mapping whose agreement is no longer active names its successor and the exact `map`
    command, when the company has one.
    """
    status: dict[int, str] = {}
    refreshed: list[int] = []
    fresh_by_client: dict[int, ClientMapping] = {}
    for m in mappings:
        company = api.company(m.account_id)
        agreement = api.agreement(m.contract_id) if company is not None else None
        additions = api.additions(m.contract_id) if agreement is not None else []
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
        if problem is not None:
            text = problem
            ended = agreement is not None and agreement_problem(agreement, today) is not None
            cancelled = addition is not None and addition.cancelled_on(today)
            found = _successor(api, m, today) if ended or cancelled else None
            if found is not None:
                text += (
                    f"; successor: agreement {found[0].id}, addition {found[1].id}: run "
                    f"`{map_command(m, found[0].id, found[1].id)}`"
                )
            else:
                again = f"{PROG} map {m.client_id} --psa connectwise --account {m.account_id}"
                text += f"; fix it in ConnectWise, or map the client again (`{again}`)"
            status[m.client_id] = text
        elif known_clients is not None and m.client_id not in known_clients:
            status[m.client_id] = (
                f"INFIMA has no client {m.client_id}; check it in INFIMA, or "
                f"`{PROG} unmap {m.client_id}`"
            )
        else:
            status[m.client_id] = "ok"
        fresh = _refresh(m, company, agreement, addition)
        if fresh != m:
            refreshed.append(m.client_id)
            fresh_by_client[m.client_id] = fresh
    new_config = config
    if fresh_by_client:
        new_config = replace(
            config,
            mappings=tuple(fresh_by_client.get(m.client_id, m) for m in config.mappings),
        )
    broken = {client_id for client_id, text in status.items() if text != "ok"}
    return LineCheck(new_config, status, broken, refreshed)


def _refresh(
    m: ClientMapping,
    company: Company | None,
    agreement: Agreement | None,
    addition: Addition | None,
) -> ClientMapping:
    changed: dict[str, object] = {}
    if company is not None and company.name and company.name != m.account_name:
        changed["account_name"] = company.name
    owned = agreement is not None and agreement.company_id == m.account_id
    if owned and agreement is not None and agreement.name != m.contract_name and agreement.name:
        changed["contract_name"] = agreement.name
    if addition is not None and addition.agreement_id == m.contract_id:
        if addition.product_id != m.service_id:
            changed["service_id"] = addition.product_id
        label = product_name(addition)
        if label is not None and label != m.service_name:
            changed["service_name"] = label
    return replace(m, **changed) if changed else m  # type: ignore[arg-type]
