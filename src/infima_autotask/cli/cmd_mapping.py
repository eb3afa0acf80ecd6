"""``list-clients``, ``search-accounts``, ``map``, ``unmap`` and ``list-mappings``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from infima_autotask import mapping as lib
from infima_autotask.cli import _common
from infima_autotask.cli import mapping_view as view
from infima_autotask.cli._common import (
    ACCOUNT_ID,
    COUNT,
    ID,
    Command,
    chosen_psa,
    emit_json,
    get_runtime,
    json_option,
    psa_option,
    warn,
)
from infima_autotask.cli.tables import emit_table
from infima_autotask.config import (
    AUTOTASK,
    CONNECTWISE,
    HALO,
    PSA_NAMES,
    ClientMapping,
    Config,
    not_for,
    save_config,
)
from infima_autotask.connectwise import mapping as cw
from infima_autotask.halo import mapping as halo
from infima_autotask.runtime import Runtime
from infima_autotask.whole_number import WholeNumberError, parse_whole

_HOW_TO_MAP = (
    "Find the IDs with `infima-autotask list-clients` and `infima-autotask search-accounts NAME "
    "--contracts`, then run `infima-autotask map CLIENT_ID --account ID`."
)


@click.command("list-clients", cls=Command)
@json_option
def list_clients(as_json: bool) -> None:
    """List INFIMA clients with their active users and what each is mapped to.

    Counts come from the INFIMA API, or from infima.counts_file when it is set.

    \b
    Example:
      infima-autotask list-clients
      infima-autotask list-clients --json
    """
    runtime = get_runtime()
    lines, warnings = lib.list_clients(runtime.config, runtime.count_source())
    for message in warnings:
        warn(f"Warning: {message}")
    emit_table(lines, view.CLIENT_COLUMNS, as_json=as_json)
    if not lines and not as_json:
        warn("INFIMA lists no clients for this API key (or the counts file has no rows).")


@click.command("search-accounts", cls=Command)
@click.argument("query")
@click.option("--inactive", is_flag=True, help="Include inactive accounts.")
@click.option(
    "--contracts",
    is_flag=True,
    help="Add each account's active Recurring Service contracts, their services, this "
    "month's units and the per-unit price and cost.",
)
@click.option(
    "--limit", type=COUNT, default=50, show_default=True, help="Accounts to show; 0: all."
)
@psa_option
@json_option
def search_accounts(
    query: str, inactive: bool, contracts: bool, limit: int, as_json: bool, psa: str | None
) -> None:
    """Find Autotask accounts (companies) whose name contains QUERY.

    With --contracts, one row per contract service of each account's active Recurring
    Service contracts, with this month's units and the price and cost per unit: the IDs
    `map` needs.

    \b
    Example:
      infima-autotask search-accounts acme
      infima-autotask search-accounts "acme dental" --contracts
      infima-autotask search-accounts --psa halo kestrel --contracts
    """
    runtime = get_runtime()
    chosen = chosen_psa(psa, runtime, halo=True)
    if chosen == HALO:
        _search_halo(query, inactive, contracts, limit, as_json)
        return
    if chosen == CONNECTWISE:
        found = cw.search_companies(
            runtime.connectwise(),
            query,
            today=lib.local_today(runtime.config),
            contracts=contracts,
            limit=limit,
            inactive=inactive,
        )
        if found.more:
            warn(f"Showing the first {limit} companies; narrow QUERY or raise --limit (0: all).")
        emit_table(view.company_rows(found), view.company_columns(found), as_json=as_json)
        if not found.companies and not as_json:
            warn(f"No ConnectWise company name contains {query!r}.")
        return
    result = lib.search_accounts(
        runtime.autotask(),
        query,
        today=lib.local_today(runtime.config),
        inactive=inactive,
        contracts=contracts,
        limit=limit,
        config=runtime.config,
    )
    if result.more:
        warn(f"Showing the first {limit} accounts; narrow QUERY or raise --limit (0: all).")
    emit_table(view.search_rows(result), view.search_columns(result), as_json=as_json)
    if not result.accounts and not as_json:
        warn(f"No {'' if inactive else 'active '}account name contains {query!r}.")


def _search_halo(query: str, inactive: bool, contracts: bool, limit: int, as_json: bool) -> None:
    """``search-accounts --psa halo``: clients and, with --contracts, their subscriptions."""
    runtime = get_runtime()
    found = halo.search_clients(
        runtime.halo(),
        query,
        today=lib.local_today(runtime.config),
        contracts=contracts,
        limit=limit,
        inactive=inactive,
    )
    if found.more:
        warn(f"Showing the first {limit} clients; narrow QUERY or raise --limit (0: all).")
    emit_table(view.halo_client_rows(found), view.halo_client_columns(found), as_json=as_json)
    if not found.clients and not as_json:
        warn(f"No {'' if inactive else 'active '}HaloPSA client name contains {query!r}.")


def _pick(kind: str, candidates: Sequence[lib.Candidate]) -> lib.Candidate:
    """A numbered list on stderr; the answer is the number or the ID itself."""
    click.echo(f"Choose the {kind}:", err=True)
    for number, candidate in enumerate(candidates, start=1):
        click.echo(f"  {number}) {candidate.line()}", err=True)
    by_id = {candidate.id: candidate for candidate in candidates}
    last = len(candidates)
    while True:
        answer = str(click.prompt(f"{kind.capitalize()} number (1-{last})", err=True))
        try:
            chosen: int | None = parse_whole(answer, low=1, spaces=True)
        except WholeNumberError:
            chosen = None
        if chosen is not None and chosen <= last:
            return candidates[chosen - 1]
        if chosen in by_id:
            return by_id[chosen]
        click.echo(f"Type a number from 1 to {last} (Ctrl-C to stop; nothing is saved).", err=True)


def _mappings(count: int) -> str:
    return f"{count} mapping" if count == 1 else f"{count} mappings"


@click.command("map", cls=Command)
@click.argument("client_id", type=ID, required=False)
@click.option(
    "--account",
    "account_id",
    type=ACCOUNT_ID,
    help="Autotask account (company) ID; 0 is your own organization.",
)
@click.option("--contract", "contract_id", type=ID, help="Recurring Service contract ID.")
@click.option("--contract-service", "contract_service_id", type=ID, help="Contract service ID.")
@click.option("--exclude-users", type=COUNT, help="Users not billed (e.g. service accounts).")
@click.option("--min-units", type=COUNT, help="Never write fewer units.")
@click.option("--max-units", type=COUNT, help="Never write more units.")
@click.option(
    "--unit-cost",
    type=click.FloatRange(min=0),
    metavar="X",
    help="Unit cost to write; also sets the mapping's overwrite_cost: true.",
)
@click.option(
    "--prorate/--no-prorate",
    default=None,
    help="Date writes on the 1st even inside a billing period (Autotask prorates it and "
    "cannot delete the proration); absent: keep the mapping's setting.",
)
@click.option(
    "--from-csv",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Map many clients: client_id,account_id,contract_id,contract_service_id.",
)
@psa_option
@click.option("--agreement", "agreement_id", type=ID, help="ConnectWise agreement ID.")
@click.option("--addition", "addition_id", type=ID, help="ConnectWise agreement addition ID.")
@click.option(
    "--subscription", "subscription_id", type=ID, help="HaloPSA subscription (licence) ID."
)
@json_option
def map_(
    from_csv: Path | None,
    as_json: bool,
    psa: str | None,
    agreement_id: int | None,
    addition_id: int | None,
    subscription_id: int | None,
    **given: Any,
) -> None:
    """Map an INFIMA client to an Autotask Contract Service, validating the chain live.

    A missing --contract or --contract-service is chosen from a numbered list on a
    terminal; without one it is taken only when there is a single candidate. Re-mapping
    keeps the mapping's overrides unless an option changes them. Prints the contract's
    billing period and the day this month's writes are dated.

    \b
    Example:
      infima-autotask map 101 --account 29683501
      infima-autotask map 101 --account 29683501 --contract 29684001 --contract-service 29685100
      infima-autotask map 106 --account 29683508 --prorate
      infima-autotask map --from-csv mappings.csv
      infima-autotask map 110 --psa halo --account 45 [--subscription 9127]
    """
    runtime = get_runtime()
    config, today = runtime.config, lib.local_today(runtime.config)
    chosen = chosen_psa(psa, runtime, halo=True)
    if chosen == HALO:
        if agreement_id is not None or addition_id is not None:
            raise click.UsageError(
                "--agreement and --addition are ConnectWise's; HaloPSA takes --subscription."
            )
        _map_halo(from_csv, as_json, subscription_id, given)
        return
    if subscription_id is not None:
        raise click.UsageError("--subscription is HaloPSA's: add --psa halo.")
    if chosen == CONNECTWISE:
        _map_connectwise(from_csv, as_json, agreement_id, addition_id, given)
        return
    if agreement_id is not None or addition_id is not None:
        raise click.UsageError(
            "--agreement and --addition are ConnectWise's: add --psa connectwise (Autotask "
            "takes --contract and --contract-service)."
        )
    if from_csv is not None:
        if any(value is not None for value in given.values()):
            raise click.UsageError("--from-csv takes the IDs from the file; give no other option.")
        result = lib.map_from_csv(
            config, runtime.autotask(), runtime.count_source(), from_csv, today=today
        )
        _notes_and_warnings([], result.warnings, said=True)
    else:
        if given["client_id"] is None or given["account_id"] is None:
            raise click.UsageError("Give CLIENT_ID and --account (or --from-csv FILE).")
        pick = _pick if _common.can_prompt() else None
        result = lib.map_client(
            config,
            runtime.autotask(),
            runtime.count_source(),
            lib.MapRequest(**given),
            today=today,
            pick=pick,
            # On a terminal, at once: a contract taken alone shows before the service is asked.
            say=warn if pick else None,
        )
        _notes_and_warnings(result.notes, result.warnings, said=pick is not None)
    changed = [change for change in result.changes if change.old != change.new]
    if changed:
        save_config(result.config, runtime.config_path)
        runtime.set_config(result.config)
    if as_json:
        emit_json([view.change_document(change) for change in result.changes])
    else:
        for change in result.changes:
            click.echo("\n".join(view.change_lines(change)))
    if not changed:
        warn(f"Nothing changed: the config already maps it so ({runtime.config_path}).")
        return
    warn(
        f"Config saved to {runtime.config_path} ({len(changed)} changed, "
        f"{_mappings(len(result.config.mappings))} in all)."
    )


def _map_connectwise(
    from_csv: Path | None,
    as_json: bool,
    agreement_id: int | None,
    addition_id: int | None,
    given: dict[str, Any],
) -> None:
    """``map --psa connectwise``: the chain checked live, as for Autotask."""
    runtime = get_runtime()
    config = runtime.config
    _check_count_psa_options(CONNECTWISE, from_csv, given)
    pick = _pick if _common.can_prompt() else None
    result = cw.map_line(
        config,
        runtime.connectwise(),
        runtime.count_source(),
        cw.LineRequest(
            client_id=given["client_id"],
            account_id=given["account_id"],
            agreement_id=agreement_id,
            addition_id=addition_id,
            exclude_users=given["exclude_users"],
            min_units=given["min_units"],
            max_units=given["max_units"],
            unit_cost=given["unit_cost"],
        ),
        today=lib.local_today(config),
        pick=pick,
        say=warn if pick else None,
    )
    _notes_and_warnings(result.notes, result.warnings, said=pick is not None)
    document = view.line_change_document(result.old, result.new)
    _save_one(runtime, result.config, result.old, result.new, document if as_json else None)


def _map_halo(
    from_csv: Path | None, as_json: bool, subscription_id: int | None, given: dict[str, Any]
) -> None:
    """``map --psa halo``: the client and subscription checked live; the recurring-invoice
    check is a warning, never a refusal. Nothing is sent to Halo."""
    runtime = get_runtime()
    config = runtime.config
    _check_count_psa_options(HALO, from_csv, given)
    pick = _pick if _common.can_prompt() else None
    result = halo.map_subscription(
        config,
        runtime.halo(),
        runtime.count_source(),
        halo.SubscriptionRequest(
            client_id=given["client_id"],
            account_id=given["account_id"],
            subscription_id=subscription_id,
            exclude_users=given["exclude_users"],
            min_units=given["min_units"],
            max_units=given["max_units"],
        ),
        today=lib.local_today(config),
        pick=pick,
        say=warn if pick else None,
    )
    if pick is None:
        for note in result.notes:
            warn(note)
    if result.not_billed is not None:
        # Halo's manual step: said, never asked about (the mapping is right; the invoice is not).
        warn(f"Warning: subscription {result.new.contract_service_id}: {result.not_billed}.")
    _notes_and_warnings([], result.warnings, said=True)
    said = [result.not_billed] if result.not_billed else []
    document = view.halo_change_document(result.old, result.new, [*said, *result.warnings])
    _save_one(runtime, result.config, result.old, result.new, document if as_json else None)


# How each PSA whose line holds one count names its line and account in `map`'s options.
_LINE_OPTIONS = {CONNECTWISE: "--agreement and --addition", HALO: "--subscription"}
_ACCOUNT = {CONNECTWISE: "company", HALO: "client"}


def _check_count_psa_options(psa: str, from_csv: Path | None, given: dict[str, Any]) -> None:
    """The options `map` refuses on a PSA whose line holds one count, each with its reason."""
    name = PSA_NAMES[psa]
    if from_csv is not None:
        raise click.UsageError(
            f"--from-csv maps Autotask lines only; map {name} clients one by one."
        )
    if given["contract_id"] is not None or given["contract_service_id"] is not None:
        raise click.UsageError(
            f"--contract and --contract-service are Autotask's; {name} takes {_LINE_OPTIONS[psa]}."
        )
    for key, option in (("prorate", "--prorate"), ("unit_cost", "--unit-cost")):
        reason = not_for(psa, key)
        if given[key] is not None and reason is not None:
            raise click.UsageError(f"{option} does not apply to {name}: {reason}.")
    what = f"{name} {_ACCOUNT[psa]} ID"
    if given["client_id"] is None or given["account_id"] is None:
        raise click.UsageError(f"Give CLIENT_ID and --account (the {what}).")
    if given["account_id"] == 0:
        raise click.UsageError(f"--account: 0 is not a {what} (they start at 1).")


def _save_one(
    runtime: Runtime,
    config: Config,
    old: ClientMapping | None,
    new: ClientMapping,
    document: dict[str, Any] | None,
) -> None:
    """Save one re-mapped client of a count PSA and say so (``document``: the --json one)."""
    changed = old != new
    if changed:
        save_config(config, runtime.config_path)
        runtime.set_config(config)
    if document is not None:
        emit_json([document])
    else:
        click.echo("\n".join(view.line_change_lines(old, new)))
    if not changed:
        warn(f"Nothing changed: the config already maps it so ({runtime.config_path}).")
        return
    warn(
        f"Config saved to {runtime.config_path} (1 changed, "
        f"{_mappings(len(config.mappings))} in all)."
    )


@click.command(cls=Command)
@click.argument("client_id", type=ID)
@json_option
def unmap(client_id: int, as_json: bool) -> None:
    """Remove one client's mapping from the config.

    \b
    Example:
      infima-autotask unmap 101
    """
    runtime = get_runtime()
    config, removed = lib.unmap(runtime.config, client_id)
    save_config(config, runtime.config_path)
    runtime.set_config(config)
    if as_json:
        emit_json([view.mapping_document(removed)])
    else:
        click.echo(f"Unmapped client {client_id}: was {view.describe(removed)}")
        kept = view.overrides_text(removed)
        if kept:
            # They are gone from the config with the mapping: enough to put them back.
            click.echo(f"  its overrides were: {kept}")


@click.command("list-mappings", cls=Command)
@click.option(
    "--check",
    is_flag=True,
    help="Validate every mapping live, refresh names, and say how to fix what is broken.",
)
@json_option
def list_mappings(check: bool, as_json: bool) -> None:
    """List the mappings with their last sync; --check validates them in Autotask.

    Offline, "Writes dated" says what the config knows (prorate or the billing period);
    --check reads the contracts and shows the day, e.g. "the 17th (monthly from the 17th)".
    With --check, exit 1 when any mapping is broken.

    \b
    Example:
      infima-autotask list-mappings
      infima-autotask list-mappings --check
    """
    runtime = get_runtime()
    config = runtime.config
    last = lib.last_syncs(runtime.state_dir(config))
    if not check:
        lines = [
            view.MappingLine(m, m.effective_prorate(config.sync), last.get(m.client_id))
            for m in config.mappings
        ]
        emit_table(lines, view.MAPPING_COLUMNS, as_json=as_json)
        if not lines and not as_json:
            warn(f"No mappings in {runtime.config_path} yet. {_HOW_TO_MAP}")
        return
    known = {info.id for info in runtime.count_source().clients()}
    result, not_billed = _check_all(config, known)
    for client_id, text in sorted(not_billed.items()):
        m = result.config.mapping_for(client_id)
        where = f"subscription {m.contract_service_id}: " if m is not None else ""
        warn(f"Warning: client {client_id}: {where}{text}.")
    if result.refreshed:
        save_config(result.config, runtime.config_path)
        runtime.set_config(result.config)
        warn(f"Refreshed names of {len(result.refreshed)} mapping(s) in {runtime.config_path}.")
    checked = [
        view.MappingLine(
            m,
            m.effective_prorate(result.config.sync),
            last.get(m.client_id),
            checked=True,
            billing=result.billing.get(m.client_id),
            status=result.status[m.client_id],
        )
        for m in result.config.mappings
    ]
    emit_table(checked, view.CHECK_COLUMNS, as_json=as_json)
    total = len(result.config.mappings)
    warn(f"{total} mapping(s): {total - len(result.broken)} ok, {len(result.broken)} broken")
    if result.broken:
        raise click.exceptions.Exit(1)


def _check_all(config: Config, known: set[int]) -> tuple[lib.CheckResult, dict[int, str]]:
    """Autotask mappings checked as they always were (same requests); ConnectWise ones by
    ``connectwise.mapping.check_lines``, HaloPSA ones by ``halo.mapping.check_subscriptions``;
    one result in the config's order, and the Halo warnings by client."""
    runtime = get_runtime()
    today = lib.local_today(config)
    lines = [m for m in config.mappings if m.psa == CONNECTWISE]
    subscriptions = [m for m in config.mappings if m.psa == HALO]
    if not lines and not subscriptions and runtime.default_psa(config) == AUTOTASK:
        result = lib.check_mappings(config, runtime.autotask(), today=today, known_clients=known)
        return result, {}
    others = tuple(m for m in config.mappings if m.psa == AUTOTASK)
    autotask = (
        lib.check_mappings(
            replace(config, mappings=others), runtime.autotask(), today=today, known_clients=known
        )
        if others
        else lib.CheckResult(replace(config, mappings=()), {}, set(), [])
    )
    parts: list[tuple[Config, dict[int, str], set[int], list[int]]] = []
    if lines:
        found = cw.check_lines(
            config, runtime.connectwise(), lines, today=today, known_clients=known
        )
        parts.append((found.config, found.status, found.broken, found.refreshed))
    warnings: dict[int, str] = {}
    if subscriptions:
        checked = halo.check_subscriptions(
            config, runtime.halo(), subscriptions, today=today, known_clients=known
        )
        parts.append((checked.config, checked.status, checked.broken, checked.refreshed))
        warnings = checked.warnings
    fresh = {m.client_id: m for m in autotask.config.mappings}
    status, broken, refreshed = dict(autotask.status), set(autotask.broken), [*autotask.refreshed]
    for part_config, part_status, part_broken, part_refreshed in parts:
        fresh.update({m.client_id: m for m in part_config.mappings if m.client_id in part_status})
        status.update(part_status)
        broken |= part_broken
        refreshed += part_refreshed
    merged = config
    if refreshed:
        merged = replace(
            config,
            mappings=tuple(
                fresh[m.client_id] if m.client_id in refreshed else m for m in config.mappings
            ),
        )
    return lib.CheckResult(merged, status, broken, refreshed, autotask.billing), warnings


COMMANDS: list[Any] = [list_clients, search_accounts, map_, unmap, list_mappings]


def _notes_and_warnings(notes: Sequence[str], warnings: Sequence[str], *, said: bool) -> None:
    """The notes of a map (unless already said as it went), its warnings, and on a terminal
    the question whether to map it anyway (no: exit 1, the config unchanged)."""
    if not said:
        for note in notes:
            warn(note)
    for text in warnings:
        warn(f"Warning: {text}")
    asked = bool(warnings) and _common.can_prompt()
    if asked and not click.confirm("Map it anyway?", default=False, err=True):
        warn("Not mapped: the config was not changed.")
        raise click.exceptions.Exit(1)
