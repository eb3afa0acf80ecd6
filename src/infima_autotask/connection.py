"""``connect`` and ``status``: test credentials live, store them, report both connections."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TypeVar

from infima_autotask.autotask import AutotaskApi, lookup_zone
from infima_autotask.billing import iana_zone, same_offsets
from infima_autotask.config import (
    AUTOTASK,
    Config,
    ConnectWiseSettings,
    HaloSettings,
    load_config_or_default,
    save_config,
)
from infima_autotask.connectwise import (
    ConnectWiseApi,
    ConnectWiseCredentials,
    lookup_codebase,
    site_origin,
)
from infima_autotask.credentials import (
    ENV_CONNECTWISE_PRIVATE_KEY,
    ENV_HALO_CLIENT_SECRET,
    ENV_INFIMA_KEY,
    ENV_SECRET,
    INFIMA_KEY_NAME,
    AutotaskCredentials,
    connectwise_key_name,
    halo_key_name,
    store_keyring,
)
from infima_autotask.errors import (
    ApiError,
    AuthenticationError,
    CredentialsError,
    InfimaAutotaskError,
    StateError,
)
from infima_autotask.halo import SCOPES, HaloApi, HaloCredentials, halo_base
from infima_autotask.history import REVERT_RUN, History, display_time
from infima_autotask.http import register_secret
from infima_autotask.infima import InfimaApi
from infima_autotask.model import read_location_timezone
from infima_autotask.runtime import ENV_API_URL, Runtime


@dataclass(frozen=True)
class TenantZone:
    """The tenant's time zone as ``connect`` read it, beside ``autotask.timezone``.

    ``zone`` is the IANA name read (None when it could not be, ``problem`` says why),
    ``text`` the default InternalLocations record's ``timeZone`` as Autotask sent it and
    ``configured`` the config's value before ``connect``.
    """

    zone: str | None
    text: str | None
    configured: str | None
    problem: str = ""

    @property
    def stored(self) -> bool:
        """``connect`` writes it to ``autotask.timezone`` (which was null)."""
        return self.zone is not None and self.configured is None

    @property
    def differs(self) -> bool:
        """The config names a zone that dates writes otherwise; it is kept (SPEC §6), and
        `doctor` fails it, by the same rule (``billing.same_offsets``)."""
        if self.zone is None or self.configured is None:
            return False
        return not same_offsets(self.zone, self.configured, date.today())


def read_tenant_zone(client: AutotaskApi, configured: str | None) -> TenantZone:
    """The default InternalLocations record's zone, or why it cannot be had.

    Never raises an API error: the API user may lack permission to read internal
    locations, and ``connect`` must still succeed then (the operator sets the zone by hand).
    """
    try:
        text = read_location_timezone(client)
    except ApiError as exc:
        # A 401/403 here is the permission on this entity, not the credentials: the test
        # call before it passed with the same ones.
        reason = f"HTTP {exc.status}" if exc.status is not None else exc.message
        return TenantZone(None, None, configured, f"reading InternalLocations failed ({reason})")
    if text is None:
        return TenantZone(
            None, None, configured, "Autotask shows no default internal location with a time zone"
        )
    zone = iana_zone(text)
    if zone is None:
        return TenantZone(
            None,
            text,
            configured,
            f"the default internal location's time zone {text!r} is not a zone name this tool "
            "can read",
        )
    return TenantZone(zone, text, configured)


@dataclass(frozen=True)
class AutotaskConnection:
    zone: str
    api_url: str
    used: int
    limit: int
    tenant_zone: TenantZone


@dataclass(frozen=True)
class InfimaConnection:
    partner_name: str
    url: str


def config_for_connect(runtime: Runtime) -> Config:
    """The current config, or a fresh one when the file does not exist yet (never a broken one)."""
    return load_config_or_default(runtime.config_path)


@contextlib.contextmanager
def _from_environment(runtime: Runtime, variable: str, value: str, what: str) -> Iterator[None]:
    """A rejection of a secret that came from the environment names the variable: it wins
    over anything typed, so "run connect again" alone could never help."""
    try:
        yield
    except AuthenticationError as exc:
        # A 404 is the address, not the secret: the original message says to check the URL.
        if runtime.env.get(variable) != value or exc.status in (404, 405):
            raise
        raise AuthenticationError(
            f"{exc.message.split('. ')[0]}. The {what} came from {variable} in the environment, "
            f"which connect uses before asking: correct it, or unset it (unset {variable}) and "
            "run connect again.",
            status=exc.status,
            errors=exc.errors,
        ) from None


def connect_autotask(
    runtime: Runtime, config: Config, username: str, integration_code: str, secret: str
) -> AutotaskConnection:
    """Find the zone, test the credentials, read the tenant's time zone, then store the
    secret and the config (``autotask.timezone`` only when it was null).

    Nothing is stored unless the test call succeeds; the time zone read may fail alone.
    """
    register_secret(secret)
    creds = AutotaskCredentials(username, integration_code, secret)
    http = runtime.new_http("Autotask")
    api_url = runtime.env.get(ENV_API_URL)
    zone = "override"
    if not api_url:
        found = lookup_zone(http, username, runtime.zone_url())
        api_url, zone = found.url, found.name
    client = AutotaskApi(http, api_url, creds)
    with _from_environment(runtime, ENV_SECRET, secret, "Autotask secret"):
        threshold = client.threshold()
    tenant_zone = read_tenant_zone(client, config.autotask.timezone)
    if runtime.env.get(ENV_SECRET) != secret:
        store_keyring(username, secret, runtime.env)
    settings = dataclasses.replace(
        config.autotask,
        username=username,
        integration_code=integration_code,
        api_url=api_url,
        timezone=tenant_zone.zone if tenant_zone.stored else config.autotask.timezone,
    )
    updated = dataclasses.replace(config, autotask=settings)
    save_config(updated, runtime.config_path)
    runtime.set_config(updated)
    return AutotaskConnection(zone, api_url, threshold.used, threshold.limit, tenant_zone)


def connect_infima(runtime: Runtime, api_key: str) -> InfimaConnection:
    """Test the INFIMA key with ``GET /v1/partner``, then store it in the keyring."""
    register_secret(api_key)
    config = config_for_connect(runtime)
    url = runtime.infima_url(config)
    with _from_environment(runtime, ENV_INFIMA_KEY, api_key, "INFIMA key"):
        partner = InfimaApi(runtime.new_http("INFIMA"), url, api_key).partner_name()
    if runtime.env.get(ENV_INFIMA_KEY) != api_key:
        store_keyring(INFIMA_KEY_NAME, api_key, runtime.env)
    if not runtime.config_path.exists():
        save_config(config, runtime.config_path)
    return InfimaConnection(partner, url)


@dataclass(frozen=True)
class ConnectWiseConnection:
    site: str
    codebase: str
    version: str


def connect_connectwise(
    runtime: Runtime,
    config: Config,
    settings: ConnectWiseSettings,
    private_key: str,
) -> ConnectWiseConnection:
    """Look up the codebase, test ``GET /system/info``, then store the private key in the
    keyring and the `connectwise` section (with the codebase) in the config.

    Nothing is stored unless the test call succeeds.
    """
    register_secret(private_key)
    site, company, public, client_id = (
        settings.site or "",
        settings.company_id or "",
        settings.public_key or "",
        settings.client_id or "",
    )
    creds = ConnectWiseCredentials(site, company, public, private_key, client_id)
    http = runtime.new_http("ConnectWise")
    codebase = lookup_codebase(http, site_origin(site), company)
    api = ConnectWiseApi(http, creds, codebase=codebase)
    with _from_environment(
        runtime, ENV_CONNECTWISE_PRIVATE_KEY, private_key, "ConnectWise private key"
    ):
        info = api.system_info()
    if runtime.env.get(ENV_CONNECTWISE_PRIVATE_KEY) != private_key:
        store_keyring(connectwise_key_name(company, public), private_key, runtime.env)
    stored = dataclasses.replace(settings, codebase=api.codebase)
    updated = dataclasses.replace(config, connectwise=stored, version=2)
    save_config(updated, runtime.config_path)
    runtime.set_config(updated)
    return ConnectWiseConnection(site, api.codebase, info.version)


@dataclass(frozen=True)
class HaloConnection:
    url: str
    tenant: str | None
    clients: int | None  # as Halo counts them; None when it did not say
    missing_scopes: tuple[str, ...]  # asked for, and not in the token's granted scopes


def connect_halo(
    runtime: Runtime, config: Config, settings: HaloSettings, client_secret: str
) -> HaloConnection:
    """Read authinfo, get a token, test one read, then store the client secret in the
    keyring and the `halo` section in the config (version 2).

    Nothing is stored unless the test read succeeds.
    """
    register_secret(client_secret)
    url, client_id = halo_base(settings.url or ""), settings.client_id or ""
    creds = HaloCredentials(url, client_id, client_secret, settings.tenant)
    api = HaloApi(runtime.new_http("HaloPSA"), creds, pacer=runtime.halo_pacer())
    with _from_environment(runtime, ENV_HALO_CLIENT_SECRET, client_secret, "HaloPSA client secret"):
        granted = api.connect()
        clients = api.test()
    if runtime.env.get(ENV_HALO_CLIENT_SECRET) != client_secret:
        store_keyring(halo_key_name(client_id), client_secret, runtime.env)
    stored = dataclasses.replace(settings, url=url)
    updated = dataclasses.replace(config, halo=stored, version=2)
    save_config(updated, runtime.config_path)
    runtime.set_config(updated)
    missing = () if granted is None else tuple(s for s in SCOPES.split() if s not in granted)
    return HaloConnection(url, settings.tenant, clients, missing)


@dataclass(frozen=True)
class Problem:
    """Why one thing `status` checks is not usable: ``kind`` (``NOT_CONFIGURED``,
    ``CREDENTIALS_UNREADABLE`` or ``NOT_CONNECTED``), the reason with its fix, and the exit
    code `sync` would meet (SPEC §3)."""

    kind: str
    reason: str
    exit_code: int


NOT_CONFIGURED = "not configured"
CREDENTIALS_UNREADABLE = "credentials unreadable"
NOT_CONNECTED = "not connected"


@dataclass(frozen=True)
class AutotaskStatus:
    """The Autotask connection: its URL and this hour's API usage, or the problem."""

    url: str | None = None
    requests_used: int | None = None
    request_limit: int | None = None
    problem: Problem | None = None


@dataclass(frozen=True)
class ConnectWiseStatus:
    """The ConnectWise connection: its site and codebase, or the problem."""

    site: str | None = None
    codebase: str | None = None
    problem: Problem | None = None


@dataclass(frozen=True)
class HaloStatus:
    """The HaloPSA connection: its URL and tenant, or the problem."""

    url: str | None = None
    tenant: str | None = None
    problem: Problem | None = None


@dataclass(frozen=True)
class InfimaStatus:
    """Where counts come from: the INFIMA API (partner and URL) or the counts file (its
    number of clients), or the problem."""

    counts_file: str | None = None
    url: str | None = None
    partner: str | None = None
    clients: int | None = None
    problem: Problem | None = None


@dataclass(frozen=True)
class StateStatus:
    """The state folder, and the problem when `sync` could not use it."""

    path: str
    problem: Problem | None = None


@dataclass(frozen=True)
class LastRun:
    """The newest run in the history; ``started_at`` is ISO 8601 UTC, ``outcome`` None
    while unfinished, ``summary`` the count of items per status; ``reverts``: the run a
    revert undid (None for a sync)."""

    period: str
    dry_run: bool
    started_at: str
    outcome: str | None
    summary: dict[str, int]
    reverts: int | None = None


@dataclass(frozen=True)
class StatusReport:
    """What `status` found. ``exit_code`` is what `sync` would exit with for the first
    problem found (SPEC §3); ``sync_timezone`` and ``autotask_timezone`` are the config's."""

    config_path: str
    state: StateStatus
    mappings: int | None
    autotask: AutotaskStatus
    infima: InfimaStatus
    last_run: LastRun | None
    sync_timezone: str | None
    autotask_timezone: str | None
    exit_code: int = 0
    connectwise: ConnectWiseStatus | None = None  # None: no `connectwise` section
    halo: HaloStatus | None = None  # None: no `halo` section

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


T = TypeVar("T")


def _probe(check: Callable[[], T], failed: Callable[[Problem], T]) -> T:
    """Run one live check: its result, or ``failed`` with the problem and the exit code `sync`
    would meet.

    A missing credential (or one stored under another username) and an unusable keyring are
    2, as for `sync`; a connection that fails is 3.
    """
    try:
        return check()
    except CredentialsError as exc:
        kind = CREDENTIALS_UNREADABLE if "keyring" in exc.message.lower() else NOT_CONFIGURED
        return failed(Problem(kind, _reason(exc), exc.exit_code))
    except InfimaAutotaskError as exc:
        return failed(Problem(NOT_CONNECTED, _reason(exc), exc.exit_code))


def _reason(exc: InfimaAutotaskError) -> str:
    """The message and its details on one line: the details carry the fix (keyring, config)."""
    return " ".join([exc.message, *exc.details])


def status(runtime: Runtime) -> StatusReport:
    """Both connections tested live, the paths, the number of mappings and the last run."""
    config = runtime.config
    state_dir = runtime.state_dir()
    counts_file = config.infima.counts_file

    def autotask() -> AutotaskStatus:
        client = runtime.autotask()
        used = client.threshold()
        return AutotaskStatus(client.api_url, used.used, used.limit)

    def infima() -> InfimaStatus:
        if counts_file:
            clients = runtime.count_source().clients()  # a file sync could not read fails here
            return InfimaStatus(counts_file, clients=len(clients))
        client = runtime.infima()
        return InfimaStatus(partner=client.partner_name(), url=client.base)

    def connectwise() -> ConnectWiseStatus:
        client = runtime.connectwise()
        client.system_info()
        return ConnectWiseStatus(client.creds.site, client.codebase)

    def halo() -> HaloStatus:
        client = runtime.halo()
        client.test()  # authinfo and the token on first use
        return HaloStatus(client.base, client.creds.tenant)

    connected = runtime.connected_psas(config)
    if AUTOTASK in connected or not connected:
        autotask_status = _probe(autotask, lambda problem: AutotaskStatus(problem=problem))
    else:
        # Another PSA is connected and Autotask never was: nothing to test, nothing failed.
        autotask_status = AutotaskStatus(
            problem=Problem(NOT_CONFIGURED, "not used (another PSA is connected)", 0)
        )
    cw_status = (
        _probe(connectwise, lambda problem: ConnectWiseStatus(problem=problem))
        if config.connectwise is not None
        else None
    )
    halo_status = (
        _probe(halo, lambda problem: HaloStatus(problem=problem))
        if config.halo is not None
        else None
    )
    infima_status = _probe(infima, lambda problem: InfimaStatus(counts_file, problem=problem))
    state = _probe(
        lambda: _state_folder(state_dir), lambda problem: StateStatus(str(state_dir), problem)
    )
    last: LastRun | None = None
    if state.problem is None and (state_dir / "history.sqlite3").exists():
        with History(state_dir) as history:
            run = history.last_run()
        if run is not None:
            last = LastRun(
                run.period,
                run.dry_run,
                display_time(run.started_at),
                run.outcome,
                run.summary,
                reverts=run.reverts if run.kind == REVERT_RUN else None,
            )
    codes = [
        found.exit_code
        for found in (
            autotask_status.problem,
            cw_status.problem if cw_status is not None else None,
            halo_status.problem if halo_status is not None else None,
            infima_status.problem,
            state.problem,
        )
        if found is not None
    ]
    # A missing credential or an unusable folder is fixed first, as sync would stop there.
    code = 2 if 2 in codes else max(codes, default=0)
    return StatusReport(
        config_path=str(runtime.config_path),
        state=state,
        mappings=len(config.mappings),
        autotask=autotask_status,
        infima=infima_status,
        last_run=last,
        sync_timezone=config.sync.timezone,
        autotask_timezone=config.autotask.timezone,
        exit_code=code,
        connectwise=cw_status,
        halo=halo_status,
    )


def _state_folder(state_dir: Path) -> StateStatus:
    """The state folder, when `sync` can use it (it is created on the first run)."""
    existing = next((p for p in (state_dir, *state_dir.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise StateError(
            f"the state folder {state_dir} cannot be used: {existing} is "
            f"{'not a folder' if existing and not existing.is_dir() else 'not writable'}. Set "
            "INFIMA_AUTOTASK_STATE_DIR (or state_dir in the config) to a writable folder."
        )
    return StateStatus(str(state_dir))
