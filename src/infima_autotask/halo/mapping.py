"""The mapping workflow on HaloPSA (SPEC §10): search clients, map an INFIMA client to a
subscription (``SoftwareLicence``), check mappings live. Library code: no click; nothing here
writes to Halo.

The choosing rules (numbered list, the only candidate, else exit 2 listing them), the INFIMA
client check, the overrides and the "mapped once" rule are ``infima_autotask.mapping``'s;
whether a line is usable, and billed, is ``halo.chain``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date

from infima_autotask.config import HALO, ClientMapping, Config
from infima_autotask.errors import UsageError
from infima_autotask.halo.chain import (
    billing_warning,
    candidates,
    client_problem,
    infima_named,
    licence_problem,
    line_problem,
    map_command,
    successor,
)
from infima_autotask.halo.client import HaloApi
from infima_autotask.halo.model import HaloClient, Licence
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

# --- search-accounts --psa halo --------------------------------------------------------------


@dataclass(frozen=True)
class SubscriptionLine:
    """A subscription of a client and whether an active recurring-invoice line bills it."""

    licence: Licence
    active: bool
    billed: bool


@dataclass(frozen=True)
class ClientHit:
    client: HaloClient
    lines: tuple[SubscriptionLine, ...] = ()


@dataclass(frozen=True)
class ClientSearch:
    clients: list[ClientHit]
    more: bool
    with_contracts: bool


def search_clients(
    api: HaloApi,
    query: str,
    *,
    today: date,
    contracts: bool = False,
    limit: int = 50,
    inactive: bool = False,
) -> ClientSearch:
    """Clients whose name contains ``query``; with ``contracts`` each one's subscriptions
    (deleted ones only with ``inactive``) and whether a recurring-invoice line bills each:
    two reads per client shown. ``inactive`` adds inactive clients.

    Raises:
        UsageError: ``query`` is empty.
    """
    text = query.strip()
    if not text:
        raise UsageError("QUERY is empty; give part of the client name, e.g. `kestrel`.")
    found = sorted(
        api.clients(text, include_inactive=inactive), key=lambda c: (c.name.casefold(), c.id)
    )
    more = bool(limit) and len(found) > limit
    hits: list[ClientHit] = []
    for client in found[: limit or None]:
        lines: list[SubscriptionLine] = []
        if contracts:
            licences = [lic for lic in api.licences(client.id) if inactive or not lic.deleted]
            invoice_lines = api.recurring_lines(client.id) if licences else []
            for licence in sorted(licences, key=lambda lic: lic.id):
                billed = billing_warning(licence.id, invoice_lines) is None
                lines.append(SubscriptionLine(licence, licence.active_on(today), billed))
        hits.append(ClientHit(client, tuple(lines)))
    return ClientSearch(hits, more=more, with_contracts=contracts)


# --- map --psa halo ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SubscriptionRequest:
    """What ``map --psa halo`` was asked; None leaves the subscription to choose."""

    client_id: int
    account_id: int
    subscription_id: int | None = None
    exclude_users: int | None = None
    min_units: int | None = None
    max_units: int | None = None


@dataclass(frozen=True)
class SubscriptionMapResult:
    config: Config
    old: ClientMapping | None
    new: ClientMapping
    notes: list[str]
    warnings: list[str] = field(default_factory=list)  # ask before saving on a terminal
    not_billed: str | None = None  # said, never asked about: Halo's manual step


def _problem(text: str) -> UsageError:
    return UsageError(f"{_sentence(text)}.")


def subscription_label(licence: Licence) -> str:
    """``INFIMA Security Awareness (count 12)``."""
    count = licence.whole_count if licence.whole_count is not None else licence.count
    name = licence.name or f"subscription {licence.id}"
    return f"{name} (count {'-' if count is None else count})"


def map_subscription(
    config: Config,
    api: HaloApi,
    source: CountSource,
    request: SubscriptionRequest,
    *,
    today: date,
    pick: Picker | None = None,
    say: Callable[[str], None] | None = None,
) -> SubscriptionMapResult:
    """Validate one client's Halo subscription live and return the config with its mapping.
    Reads the client, its subscriptions and its recurring invoices; writes nothing to Halo.

    Raises:
        UsageError: unknown INFIMA client or Halo client, an inactive client, a subscription
            of another client or not active, one mapped to another client, or no choice.
    """
    old = config.mapping_for(request.client_id)
    overrides = MapRequest(
        client_id=request.client_id,
        account_id=request.account_id,
        exclude_users=request.exclude_users,
        min_units=request.min_units,
        max_units=request.max_units,
    )
    _check_overrides(overrides, old)
    info = _infima_client(source.clients(), request.client_id)
    notes: list[str] = []

    client = api.client(request.account_id)
    problem = client_problem(request.account_id, client)
    if problem is not None or client is None:
        raise _problem(problem or f"client {request.account_id} not found in HaloPSA")
    licences = api.licences(client.id)

    if request.subscription_id is None:
        options = candidates(licences, today)
        if not options:
            raise UsageError(
                f"Client {client.id}{_named(client.name)} has no active subscription. Add the "
                "INFIMA subscription to it in HaloPSA, then run map again."
            )
        left_out = [lic for lic in licences if lic.active_on(today) and lic not in options]
        if left_out:
            ids = ", ".join(str(lic.id) for lic in sorted(left_out, key=lambda x: x.id))
            notes.append(
                f"Offering the subscriptions named for INFIMA only ({ids} left out: pass "
                "--subscription to map one of them)."
            )
            if say is not None:
                say(notes[-1])
        offered = []
        for option in options:
            label = subscription_label(option)
            if _taken_problem(config, request.client_id, option.id, HALO) is not None:
                label += " (already mapped to another client)"
            offered.append(Candidate(option.id, label))
        subscription_id = _choose(
            "subscription",
            offered,
            pick,
            notes,
            f"Client {client.id}{_named(client.name)} has {len(options)} active "
            f"{'INFIMA ' if infima_named(options) else ''}subscriptions",
            "--subscription",
            say,
        )
    else:
        subscription_id = request.subscription_id
    licence = next((lic for lic in licences if lic.id == subscription_id), None)
    if licence is None:
        # Not the client's: read it alone to say whose it is.
        licence = api.licence(subscription_id)
    problem = line_problem(client.id, client, subscription_id, licence, today)
    if problem is not None or licence is None:
        text = problem or f"subscription {subscription_id} not found in HaloPSA"
        name = licence.name if licence is not None else None
        found = successor(subscription_id, name, licences, today)
        if found is not None:  # as --check and sync name it
            command = map_command(request.client_id, client.id, found.id)
            text += f"; its successor is subscription {found.id}: run `{command}`"
        raise _problem(text)
    _raise(_taken_problem(config, request.client_id, licence.id, HALO))
    not_billed = billing_warning(licence.id, api.recurring_lines(client.id))

    chain = {
        "client_name": info.name or (old.client_name if old else None),
        "account_id": client.id,
        "account_name": client.name or None,
        "contract_id": 0,
        "contract_name": None,
        "contract_service_id": licence.id,
        "service_id": 0,
        "service_name": licence.name or None,
        "psa": HALO,
        # Mean nothing on Halo; the file refuses them there (an old mapping may have them).
        "prorate": None,
        "unit_cost": None,
        "overwrite_cost": None,
    }
    base = (
        replace(old, **chain) if old else ClientMapping(client_id=request.client_id, **chain)  # type: ignore[arg-type]
    )
    new = _with_overrides(base, overrides)
    warnings = mapping_warnings(config, new)
    infima = [lic for lic in infima_named(licences) if lic.active_on(today)]
    if licence not in infima and infima_named([licence]) == []:
        # Halo has no product id to compare with the other mappings: the name is the clue.
        ids = ", ".join(str(lic.id) for lic in sorted(infima, key=lambda x: x.id))
        theirs = f" (the client's INFIMA one: {ids})" if ids else ""
        warnings.append(
            f"subscription {licence.id} is {licence.name!r}, not named for INFIMA{theirs}: is "
            "it the INFIMA seats line?"
        )
    return SubscriptionMapResult(config.with_mapping(new), old, new, notes, warnings, not_billed)


# --- list-mappings --check -------------------------------------------------------------------


@dataclass(frozen=True)
class SubscriptionCheck:
    config: Config  # names refreshed
    status: dict[int, str]
    broken: set[int]
    refreshed: list[int]
    warnings: dict[int, str]  # client id -> the not-billed warning


def check_subscriptions(
    config: Config,
    api: HaloApi,
    mappings: Sequence[ClientMapping],
    *,
    today: date,
    known_clients: set[int] | None = None,
) -> SubscriptionCheck:
    """Validate Halo mappings live and refresh changed names: per mapping the client, its
    subscriptions and (when the line is usable) its recurring invoices.

    A mapping whose subscription is inactive or gone names its successor and the exact `map`
    command, when the client has one. A subscription no recurring-invoice line bills is a
    warning, not broken.
    """
    status: dict[int, str] = {}
    broken: set[int] = set()
    warnings: dict[int, str] = {}
    refreshed: list[int] = []
    fresh_by_client: dict[int, ClientMapping] = {}
    for m in mappings:
        client = api.client(m.account_id)
        licences = api.licences(m.account_id) if client is not None else []
        licence = next((lic for lic in licences if lic.id == m.contract_service_id), None)
        if client is not None and licence is None:
            # Perhaps moved to another client: read it alone to say whose it is.
            licence = api.licence(m.contract_service_id)
        problem = line_problem(m.account_id, client, m.contract_service_id, licence, today)
        if problem is not None:
            broken.add(m.client_id)
            status[m.client_id] = problem + _fix(m, client, licence, licences, today)
        elif known_clients is not None and m.client_id not in known_clients:
            broken.add(m.client_id)
            status[m.client_id] = (
                f"INFIMA has no client {m.client_id}; check it in INFIMA, or "
                f"`{PROG} unmap {m.client_id}`"
            )
        else:
            warning = billing_warning(m.contract_service_id, api.recurring_lines(m.account_id))
            if warning is None:
                status[m.client_id] = "ok"
            else:
                warnings[m.client_id] = warning
                status[m.client_id] = f"ok, but {warning}"
        fresh = _refresh(m, client, licence)
        if fresh != m:
            refreshed.append(m.client_id)
            fresh_by_client[m.client_id] = fresh
    new_config = config
    if fresh_by_client:
        new_config = replace(
            config,
            mappings=tuple(fresh_by_client.get(m.client_id, m) for m in config.mappings),
        )
    return SubscriptionCheck(new_config, status, broken, refreshed, warnings)


def _fix(
    m: ClientMapping,
    client: HaloClient | None,
    licence: Licence | None,
    licences: Sequence[Licence],
    today: date,
) -> str:
    """What to do about a broken Halo mapping: the successor's `map` command, else map again."""
    ended = (
        client is not None
        and not client.inactive
        and (
            licence is None
            or (licence.client_id == m.account_id and licence_problem(licence, today) is not None)
        )
    )
    found = successor(m.contract_service_id, m.service_name, licences, today) if ended else None
    if found is not None:
        return (
            f"; successor: subscription {found.id}{_named(found.name)}: run "
            f"`{map_command(m.client_id, m.account_id, found.id)}`"
        )
    return (
        f"; fix it in HaloPSA, or map the client again (`{map_command(m.client_id, m.account_id)}`)"
    )


def _refresh(m: ClientMapping, client: HaloClient | None, licence: Licence | None) -> ClientMapping:
    changed: dict[str, object] = {}
    if client is not None and client.name and client.name != m.account_name:
        changed["account_name"] = client.name
    owned = licence is not None and licence.client_id == m.account_id
    if owned and licence is not None and licence.name and licence.name != m.service_name:
        changed["service_name"] = licence.name
    return replace(m, **changed) if changed else m  # type: ignore[arg-type]
