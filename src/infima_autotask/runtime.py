"""What a command needs at run time, built lazily from the config file and the environment."""

from __future__ import annotations

import logging
import os
import smtplib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from infima_autotask.autotask import AutotaskApi, lookup_zone
from infima_autotask.config import CONNECTWISE, HALO, Config, load_config
from infima_autotask.connectwise import ConnectWiseApi, ConnectWiseCredentials
from infima_autotask.credentials import (
    ENV_HALO_CLIENT_SECRET,
    ENV_USERNAME,
    AutotaskCredentials,
    autotask_credentials,
    connectwise_private_key,
    halo_client_secret,
    infima_api_key,
)
from infima_autotask.errors import ConfigError, InfimaAutotaskError
from infima_autotask.halo import HaloApi, HaloCredentials
from infima_autotask.http import HttpClient, RetryPolicy, RollingLimit
from infima_autotask.infima import CountsFile, CountSource, InfimaApi
from infima_autotask.psa import CountPsa
from infima_autotask.psa.connectwise import ConnectWisePsa
from infima_autotask.psa.halo import HaloPsa

log = logging.getLogger(__name__)

ENV_CONFIG = "INFIMA_AUTOTASK_CONFIG"
ENV_STATE_DIR = "INFIMA_AUTOTASK_STATE_DIR"
ENV_ZONE_URL = "INFIMA_AUTOTASK_ZONE_URL"
ENV_API_URL = "INFIMA_AUTOTASK_API_URL"
ENV_INFIMA_URL = "INFIMA_API_URL"


def default_state_dir(env: Mapping[str, str]) -> Path:
    """``$XDG_STATE_HOME/infima-autotask``, else ``~/.local/state/infima-autotask``."""
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "infima-autotask"


def utc_now() -> datetime:
    """Now, in UTC: the one clock deciding which month a run is for."""
    return datetime.now(timezone.utc)


@dataclass(frozen=True, kw_only=True)
class Seams:
    """What a command takes from the outside world, replaceable as a whole (tests pass their
    own through click's ``obj``: ``CliRunner().invoke(cli, args, obj=Seams(clock=...))``).

    ``sleep`` None: real waiting (backoff with ``time.sleep``, a write's settle wait ended
    early by Ctrl-C). ``smtp`` None: ``notify.connect_smtp`` (the real SMTP server);
    else called as ``smtp(host, port, timeout=..., tls=...)``. ``monotonic`` times request
    pacing (HaloPSA's rolling window) and token lifetimes.
    """

    clock: Callable[[], datetime] = utc_now
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] | None = None
    retry: Callable[[], RetryPolicy] = RetryPolicy
    http: Callable[..., HttpClient] = HttpClient
    smtp: Callable[..., smtplib.SMTP] | None = None


HALO_LEDGER = "halo-requests.json"  # the send times of Halo's rolling window, between commands


class Runtime:
    """Config, credentials and API clients for one command, each made on first use."""

    def __init__(
        self,
        config_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        seams: Seams | None = None,
    ) -> None:
        self.config_path = config_path
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.seams = seams or Seams()
        self._retry = self.seams.retry()
        self._config: Config | None = None
        self._autotask: AutotaskApi | None = None
        self._infima: InfimaApi | None = None
        self._connectwise: ConnectWiseApi | None = None
        self._halo: HaloApi | None = None
        self._halo_pacer: RollingLimit | None = None
        self._http: list[HttpClient] = []
        # Set when Ctrl-C stops the writes: the writers stop, and a request still waiting
        # for a rate limit is never sent.
        self.stopping = threading.Event()

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def set_config(self, config: Config) -> None:
        """Use ``config`` from now on (after the command saved it)."""
        self._config = config

    def state_dir(self, config: Config | None = None) -> Path:
        """SPEC §4: environment, then the config key ``state_dir``, then the XDG default."""
        configured = self.env.get(ENV_STATE_DIR) or (config or self.config).state_dir
        return Path(configured).expanduser() if configured else default_state_dir(self.env)

    def clock(self) -> datetime:
        return self.seams.clock()

    def new_http(self, service: str) -> HttpClient:
        http = self.seams.http(service, retry=self._retry, sleep=self.seams.sleep)
        self._http.append(http)
        return http

    def zone_url(self) -> str | None:
        return self.env.get(ENV_ZONE_URL) or None

    def connected_psas(self, config: Config | None = None) -> tuple[str, ...]:
        """The PSAs connected in the config, or (Autotask) through the environment."""
        from_env = bool(self.env.get(ENV_USERNAME))
        return (config or self.config).connected_psas(autotask_from_env=from_env)

    def default_psa(self, config: Config | None = None) -> str:
        """``--psa`` when not given: the only connected PSA, else Autotask (SPEC §10)."""
        from_env = bool(self.env.get(ENV_USERNAME))
        return (config or self.config).default_psa(autotask_from_env=from_env)

    def autotask_credentials(self, config: Config | None = None) -> AutotaskCredentials:
        settings = (config or self.config).autotask
        return autotask_credentials(settings.username, settings.integration_code, self.env)

    def autotask(self) -> AutotaskApi:
        """The Autotask client: the API URL from the environment, the config, or a zone lookup."""
        if self._autotask is None:
            creds = self.autotask_credentials()
            http = self.new_http("Autotask")
            api_url = self.env.get(ENV_API_URL) or self.config.autotask.api_url
            if not api_url:
                api_url = lookup_zone(http, creds.username, self.zone_url()).url
                log.info("Autotask zone URL: %s", api_url)
            self._autotask = AutotaskApi(http, api_url, creds)
        return self._autotask

    def connectwise(self) -> ConnectWiseApi:
        """The ConnectWise client of the config's `connectwise` section.

        Raises:
            ConfigError: the section or one of its values is missing.
            CredentialsError: no private key.
        """
        if self._connectwise is None:
            settings = self.config.connectwise
            site, company, public, client = (
                (settings.site, settings.company_id, settings.public_key, settings.client_id)
                if settings is not None
                else (None, None, None, None)
            )
            if not (site and company and public and client):
                names = ("site", "company_id", "public_key", "client_id")
                missing = [
                    name
                    for name, v in zip(names, (site, company, public, client), strict=True)
                    if not v
                ]
                raise ConfigError(
                    f"ConnectWise is not set up ({', '.join('connectwise.' + m for m in missing)} "
                    "missing). Run `infima-autotask connect --psa connectwise`."
                )
            creds = ConnectWiseCredentials(
                site=site,
                company_id=company,
                public_key=public,
                private_key=connectwise_private_key(company, public, self.env),
                client_id=client,
            )
            codebase = settings.codebase if settings is not None else None
            self._connectwise = ConnectWiseApi(
                self.new_http("ConnectWise"), creds, codebase=codebase
            )
        return self._connectwise

    def count_psa(self, key: str) -> CountPsa:
        """The engine's side of a PSA whose line holds one count (``config.COUNT_PSAS``).

        Raises:
            ConfigError, CredentialsError: the PSA is not set up (exit 2).
        """
        if key == CONNECTWISE:
            return ConnectWisePsa(self.connectwise())
        if key == HALO:
            return HaloPsa(self.halo())
        raise ValueError(f"no count PSA {key!r}")

    def halo_pacer(self) -> RollingLimit:
        """The one rolling window every HaloPSA request of this command waits on."""
        if self._halo_pacer is None:
            try:
                ledger: Path | None = self.state_dir() / HALO_LEDGER
            except InfimaAutotaskError:  # no readable config yet (`connect`): this command only
                ledger = None
            self._halo_pacer = RollingLimit(
                clock=self.seams.monotonic,
                sleep=self.seams.sleep,
                cancel=self.stopping,
                ledger=ledger,
            )
        return self._halo_pacer

    def halo(self) -> HaloApi:
        """The HaloPSA client of the config's `halo` section.

        Raises:
            ConfigError: the section, its url or its client_id is missing.
            CredentialsError: no client secret.
        """
        if self._halo is None:
            settings = self.config.halo
            url, client_id = (
                (settings.url, settings.client_id) if settings is not None else (None, None)
            )
            if not (url and client_id):
                missing = [
                    "halo." + name
                    for name, value in (("url", url), ("client_id", client_id))
                    if not value
                ]
                raise ConfigError(
                    f"HaloPSA is not set up ({', '.join(missing)} missing). Run "
                    "`infima-autotask connect --psa halo`."
                )
            creds = HaloCredentials(
                url=url,
                client_id=client_id,
                client_secret=halo_client_secret(client_id, self.env),
                tenant=settings.tenant if settings is not None else None,
                secret_from=ENV_HALO_CLIENT_SECRET
                if self.env.get(ENV_HALO_CLIENT_SECRET)
                else None,
            )
            self._halo = HaloApi(self.new_http("HaloPSA"), creds, pacer=self.halo_pacer())
        return self._halo

    def infima_url(self, config: Config | None = None) -> str:
        return self.env.get(ENV_INFIMA_URL) or (config or self.config).infima.api_url

    def infima(self) -> InfimaApi:
        if self._infima is None:
            self._infima = InfimaApi(
                self.new_http("INFIMA"),
                self.infima_url(),
                infima_api_key(self.env),
                count_without_status=self.config.infima.count_users_without_status,
            )
        return self._infima

    def count_source(self, counts_file: Path | None = None) -> CountSource:
        """The counts file when one is given or configured, else the INFIMA API."""
        configured = counts_file or (
            Path(self.config.infima.counts_file).expanduser()
            if self.config.infima.counts_file
            else None
        )
        if configured is not None:
            return CountsFile(configured)
        return self.infima()

    def close(self) -> None:
        for http in self._http:
            http.close()
