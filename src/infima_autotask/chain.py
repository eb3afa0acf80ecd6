"""The chain rule (SPEC §7, §8): may a mapping write to this account → contract → contract service?

One rule for every command that asks: ``map`` (as it reads the chain it was given), ``map
--from-csv``, ``list-mappings --check``, ``doctor``, ``sync`` and ``search-accounts
--contracts`` (the contracts it offers). :func:`check_chain` is pure: callers pass the records
they read in their own batched requests and get a :class:`ChainVerdict`; :func:`chain_text`
says it, with the fix, in the words every command shows. The two reads at the end ask Autotask
for the contracts the same rule allows: an account's, or an ended contract's renewal.
"""

from __future__ import annotations

import collections.abc as cabc
from dataclasses import dataclass, replace
from datetime import date
from enum import Enum
from typing import Any, Literal

from infima_autotask.autotask import AutotaskApi, format_date, in_filter
from infima_autotask.config import ClientMapping
from infima_autotask.model import (
    CONTRACT_FIELDS,
    CONTRACT_SERVICE_FIELDS,
    Account,
    Contract,
    ContractService,
    parse_contract,
    parse_contract_service,
)

RECURRING_SERVICE = 7  # Contracts.contractType; the only value Autotask documents
USABLE_CONTRACT = "active Recurring Service contract"  # the rule in words, for messages

_MAP = "infima-autotask map"


class Broken(Enum):
    """What makes a chain unusable, in the order the rule looks."""

    ACCOUNT_MISSING = "account missing"
    ACCOUNT_INACTIVE = "account inactive"
    CONTRACT_MISSING = "contract missing"
    CONTRACT_OF_OTHER_ACCOUNT = "contract of another account"
    CONTRACT_NOT_RECURRING = "contract not Recurring Service"
    CONTRACT_ENDED = "contract ended"
    CONTRACT_INACTIVE = "contract inactive"
    SERVICE_MISSING = "contract service missing"
    SERVICE_OF_OTHER_CONTRACT = "contract service of another contract"


class Unread(Enum):
    """A record the caller has not read: the rule checks neither it nor what hangs on it."""

    UNREAD = "unread"


UNREAD = Unread.UNREAD
_Unread = Literal[Unread.UNREAD]


@dataclass(frozen=True)
class Successor:
    """A renewal: another usable contract of the same account carrying the same service."""

    contract: Contract
    contract_service: ContractService


@dataclass(frozen=True, kw_only=True)
class ChainRef:
    """The chain a mapping names, or a ``map`` command asks for (IDs not chosen yet: None)."""

    client_id: int
    account_id: int
    contract_id: int | None = None
    contract_service_id: int | None = None
    service_id: int | None = None  # the mapping's service: what a renewal must carry

    @classmethod
    def of(cls, mapping: ClientMapping) -> ChainRef:
        return cls(
            client_id=mapping.client_id,
            account_id=mapping.account_id,
            contract_id=mapping.contract_id,
            contract_service_id=mapping.contract_service_id,
            service_id=mapping.service_id,
        )


@dataclass(frozen=True, kw_only=True)
class ChainVerdict:
    """``broken`` None: usable as far as it was read. The records are those the rule looked at.

    For an ended contract, ``renewal_service`` is the service its renewal must carry;
    ``renewal`` is that renewal once looked up (``renewal_sought``), None when none was found.
    """

    ref: ChainRef
    broken: Broken | None = None
    account: Account | None = None
    contract: Contract | None = None
    contract_service: ContractService | None = None
    renewal_service: int | None = None
    renewal: Successor | None = None
    renewal_sought: bool = False

    @property
    def ok(self) -> bool:
        return self.broken is None

    @property
    def renewal_key(self) -> tuple[int, int] | None:
        """``(ended contract id, service id)``: the renewal to look up, for an ended contract."""
        if self.broken is not Broken.CONTRACT_ENDED or self.contract is None:
            return None
        if self.renewal_service is None:
            return None
        return (self.contract.id, self.renewal_service)

    def sought(self, successors: cabc.Mapping[tuple[int, int], Successor]) -> ChainVerdict:
        """This verdict once renewals were looked up (``find_successors``)."""
        key = self.renewal_key
        if key is None:
            return self
        return replace(self, renewal=successors.get(key), renewal_sought=True)


def contract_broken(
    contract: Contract, active_statuses: cabc.Collection[int], day: date
) -> Broken | None:
    """What keeps a mapping from writing to ``contract`` on ``day``, whoever's it is."""
    if contract.contract_type != RECURRING_SERVICE:
        return Broken.CONTRACT_NOT_RECURRING
    if contract.ended_before(day):
        return Broken.CONTRACT_ENDED
    if contract.status not in active_statuses:
        return Broken.CONTRACT_INACTIVE
    return None


def usable_contract(contract: Contract, active_statuses: cabc.Collection[int], day: date) -> bool:
    """A contract a mapping may write to on ``day``: Recurring Service, not ended, active."""
    return contract_broken(contract, active_statuses, day) is None


def usable_contract_filters(
    active_statuses: cabc.Collection[int], day: date
) -> list[dict[str, Any]]:
    """:func:`usable_contract` as Autotask query filters (the result is checked again here)."""
    return [
        {"op": "eq", "field": "contractType", "value": RECURRING_SERVICE},
        in_filter("status", sorted(active_statuses)),
        {"op": "gte", "field": "endDate", "value": format_date(day)},
    ]


def check_chain(
    ref: ChainRef,
    *,
    day: date,
    active_statuses: cabc.Collection[int] = frozenset(),
    account: Account | None | _Unread = UNREAD,
    contract: Contract | None | _Unread = UNREAD,
    contract_service: ContractService | None | _Unread = UNREAD,
) -> ChainVerdict:
    """Whether ``ref``'s chain is usable on ``day``, from the records read (None: not found).

    A record left :data:`UNREAD` is not checked, nor anything after it: ``map`` checks the
    chain as it reads it. The contract's owner is checked against the account only when the
    account was read (``sync`` and ``doctor`` read no account and trust the mapping's). The
    renewal of an ended contract is not looked up here: see :meth:`ChainVerdict.sought`.
    """
    if account is not UNREAD:
        if account is None:
            return ChainVerdict(ref=ref, broken=Broken.ACCOUNT_MISSING)
        if not account.active:
            return ChainVerdict(ref=ref, broken=Broken.ACCOUNT_INACTIVE, account=account)
    read = account if account is not UNREAD else None
    if contract is UNREAD:
        return ChainVerdict(ref=ref, account=read)
    if contract is None:
        return ChainVerdict(ref=ref, broken=Broken.CONTRACT_MISSING, account=read)
    if account is not UNREAD and contract.account_id != ref.account_id:
        return ChainVerdict(
            ref=ref, broken=Broken.CONTRACT_OF_OTHER_ACCOUNT, account=read, contract=contract
        )
    cs = contract_service if contract_service is not UNREAD else None
    broken = contract_broken(contract, active_statuses, day)
    if broken is not None:
        # The service the line bills (what sync sends as serviceID), else the mapping's.
        service = cs.service_id if cs is not None else ref.service_id
        return ChainVerdict(
            ref=ref,
            broken=broken,
            account=read,
            contract=contract,
            contract_service=cs,
            renewal_service=service if broken is Broken.CONTRACT_ENDED else None,
        )
    if contract_service is UNREAD:
        return ChainVerdict(ref=ref, account=read, contract=contract)
    if contract_service is None or contract_service.contract_id != contract.id:
        return ChainVerdict(
            ref=ref,
            broken=(
                Broken.SERVICE_MISSING
                if contract_service is None
                else Broken.SERVICE_OF_OTHER_CONTRACT
            ),
            account=read,
            contract=contract,
            contract_service=contract_service,
        )
    return ChainVerdict(ref=ref, account=read, contract=contract, contract_service=contract_service)


def renewals_wanted(verdicts: cabc.Iterable[ChainVerdict]) -> list[tuple[Contract, int]]:
    """The ``(ended contract, service id)`` pairs whose renewal the messages should name, once
    each: the input of :func:`find_successors`."""
    found: dict[tuple[int, int], tuple[Contract, int]] = {}
    for verdict in verdicts:
        key = verdict.renewal_key
        if key is not None and verdict.contract is not None:
            found.setdefault(key, (verdict.contract, key[1]))
    return list(found.values())


# --- the words ---------------------------------------------------------------------------


def _named(name: str | None) -> str:
    return f" ({name})" if name else ""


def problem_text(verdict: ChainVerdict) -> str:
    """What is broken, e.g. ``contract 29684001 (Managed 2026) ended on 2026-10-31``."""
    ref, contract, account = verdict.ref, verdict.contract, verdict.account
    cs = verdict.contract_service
    named = f"contract {contract.id}{_named(contract.name)}" if contract else ""
    match verdict.broken:
        case None:
            return ""
        case Broken.ACCOUNT_MISSING:
            return f"account {ref.account_id} not found in Autotask"
        case Broken.ACCOUNT_INACTIVE:
            name = account.name if account else None
            return f"account {ref.account_id}{_named(name)} is inactive in Autotask"
        case Broken.CONTRACT_MISSING:
            return f"contract {ref.contract_id} not found in Autotask"
        case Broken.CONTRACT_OF_OTHER_ACCOUNT:
            owner = contract.account_id if contract else "?"
            name = account.name if account else None
            return (
                f"{named} belongs to account {owner}, not to account {ref.account_id}{_named(name)}"
            )
        case Broken.CONTRACT_NOT_RECURRING:
            kind = contract.contract_type if contract else None
            return (
                f"{named} is not a Recurring Service contract (contractType {kind}); the INFIMA "
                "service must be on one"
            )
        case Broken.CONTRACT_ENDED:
            end = contract.end.isoformat() if contract and contract.end else "?"
            return f"{named} ended on {end}"
        case Broken.CONTRACT_INACTIVE:
            status = contract.status if contract else None
            return f"{named} is not active in Autotask (status {status})"
        case Broken.SERVICE_MISSING:
            return f"contract service {ref.contract_service_id} not found in Autotask"
        case Broken.SERVICE_OF_OTHER_CONTRACT:
            other = cs.contract_id if cs else "?"
            return (
                f"contract service {ref.contract_service_id} belongs to contract {other}, "
                f"not to {named}"
            )


def fix_text(verdict: ChainVerdict) -> str:
    """What to do about it: the exact ``map`` command where there is one."""
    ref = verdict.ref
    remap = f"`{_MAP} {ref.client_id} --account {ref.account_id}`"
    choose_contract = f"choose one of the account's {USABLE_CONTRACT}s with {remap}"
    find_account = (
        f"`infima-autotask search-accounts NAME`, then run `{_MAP} {ref.client_id} --account ID`"
    )
    match verdict.broken:
        case None:
            return ""
        case Broken.ACCOUNT_MISSING:
            return f"find the account ID with {find_account}"
        case Broken.ACCOUNT_INACTIVE:
            return f"reactivate it in Autotask, or find an active account with {find_account}"
        case (
            Broken.CONTRACT_MISSING
            | Broken.CONTRACT_OF_OTHER_ACCOUNT
            | Broken.CONTRACT_NOT_RECURRING
        ):
            return choose_contract
        case Broken.CONTRACT_INACTIVE:
            return f"activate it in Autotask, or {choose_contract}"
        case Broken.CONTRACT_ENDED:
            renewal = verdict.renewal
            if renewal is not None:
                return (
                    f"re-map to its renewal with `{_MAP} {ref.client_id} --account "
                    f"{renewal.contract.account_id} --contract {renewal.contract.id} "
                    f"--contract-service {renewal.contract_service.id}`"
                )
            if verdict.renewal_sought:
                return (
                    f"no renewal carrying service {verdict.renewal_service} was found: renew "
                    f"it in Autotask, then {choose_contract}"
                )
            return f"map its renewal: {choose_contract}"
        case Broken.SERVICE_MISSING | Broken.SERVICE_OF_OTHER_CONTRACT:
            contract = verdict.contract.id if verdict.contract else ref.contract_id
            return (
                f"choose one of the contract's services with `{_MAP} {ref.client_id} --account "
                f"{ref.account_id} --contract {contract}`"
            )


def chain_text(verdict: ChainVerdict) -> str:
    """A verdict as every command shows it: what is broken and the fix; for a usable chain,
    what was found (``doctor``'s detail)."""
    if verdict.broken is not None:
        return f"{problem_text(verdict)}; {fix_text(verdict)}"
    contract, cs = verdict.contract, verdict.contract_service
    if contract is None:
        return f"account {verdict.ref.account_id} is active"
    ends = f", ends {contract.end.isoformat()}" if contract.end else ""
    text = f"contract {contract.id} ({contract.name or '-'}): Recurring Service, active{ends}"
    if cs is None:
        return text
    return f"{text}; contract service {cs.id} (service {cs.service_id}) is on it"


# --- the reads that apply the rule on the server -----------------------------------------


def read_recurring_contracts(
    client: AutotaskApi,
    account_ids: cabc.Iterable[int],
    day: date,
    active_statuses: cabc.Collection[int],
) -> list[Contract]:
    """The usable contracts of these accounts (batched), oldest start first."""
    records = client.query_in(
        "Contracts",
        "companyID",
        account_ids,
        filters=usable_contract_filters(active_statuses, day),
        fields=CONTRACT_FIELDS,
    )
    found = [c for c in map(parse_contract, records) if usable_contract(c, active_statuses, day)]
    return sorted(found, key=lambda contract: (contract.start or date.min, contract.id))


def find_successors(
    client: AutotaskApi,
    ended: cabc.Sequence[tuple[Contract, int]],
    day: date,
    active_statuses: cabc.Collection[int],
) -> dict[tuple[int, int], Successor]:
    """For each ``(ended contract, service id)``, the renewal contract carrying that service.

    Two queries for all of them together. Keyed by ``(ended contract id, service id)``; the
    newest successor (latest start, then highest id) wins when there are several.
    """
    if not ended:
        return {}
    accounts = {contract.account_id for contract, _ in ended}
    candidates = read_recurring_contracts(client, accounts, day, active_statuses)
    if not candidates:
        return {}
    services = {service_id for _, service_id in ended}
    carried = [
        parse_contract_service(record)
        for record in client.query_in(
            "ContractServices",
            "contractID",
            [contract.id for contract in candidates],
            filters=[in_filter("serviceID", sorted(services))],
            fields=CONTRACT_SERVICE_FIELDS,
        )
    ]
    by_id = {contract.id: contract for contract in candidates}
    found: dict[tuple[int, int], Successor] = {}
    for old, service_id in ended:
        options = [
            Successor(by_id[cs.contract_id], cs)
            for cs in carried
            # Only what was asked for counts, whatever else the server returned.
            if cs.contract_id in by_id
            and cs.service_id == service_id
            and by_id[cs.contract_id].account_id == old.account_id
            and cs.contract_id != old.id
        ]
        best = max(
            options,
            key=lambda s: (s.contract.start or date.min, s.contract.id),
            default=None,
        )
        if best is not None:
            found[(old.id, service_id)] = best
    return found
