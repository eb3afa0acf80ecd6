"""Credentials (SPEC §5): environment first, then the OS keyring; never prompts or logs values."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keyring
import keyring.errors

from infima_autotask.errors import CredentialsError
from infima_autotask.http import register_secret

log = logging.getLogger(__name__)

KEYRING_SERVICE = "infima-autotask"
INFIMA_KEY_NAME = "infima-api-key"

ENV_USERNAME = "INFIMA_AUTOTASK_USERNAME"
ENV_SECRET = "INFIMA_AUTOTASK_SECRET"  # noqa: S105 - a variable name, not a secret
ENV_INTEGRATION_CODE = "INFIMA_AUTOTASK_INTEGRATION_CODE"
ENV_INFIMA_KEY = "INFIMA_API_KEY"
ENV_SMTP_PASSWORD = "INFIMA_SMTP_PASSWORD"  # noqa: S105 - a variable name
ENV_CONNECTWISE_PRIVATE_KEY = "INFIMA_CONNECTWISE_PRIVATE_KEY"
ENV_HALO_CLIENT_SECRET = "INFIMA_HALO_CLIENT_SECRET"  # noqa: S105 - a variable name
ENV_CRYPTFILE_PASSWORD = "KEYRING_CRYPTFILE_PASSWORD"  # noqa: S105 - a variable name

_KEYRING_FIX = (
    "Under cron or on a server without a desktop session, either set the environment variables "
    f"({ENV_USERNAME}, {ENV_SECRET}, {ENV_INTEGRATION_CODE}, {ENV_INFIMA_KEY}), or use a file "
    "keyring: pip install keyrings.cryptfile, then export "
    "PYTHON_KEYRING_BACKEND=keyrings.cryptfile.cryptfile.CryptFileKeyring and "
    f"{ENV_CRYPTFILE_PASSWORD}. The README section 'Credentials without a desktop keyring' "
    "shows both."
)


@dataclass(frozen=True)
class AutotaskCredentials:
    """The three values Autotask's REST API wants on every request."""

    username: str
    integration_code: str
    secret: str = field(repr=False)


def autotask_credentials(
    username: str | None, integration_code: str | None, env: Mapping[str, str] | None = None
) -> AutotaskCredentials:
    """Resolve the Autotask credentials; config values are the fallback for the environment.

    Raises:
        CredentialsError: a value is missing or the keyring cannot be read.
    """
    env = os.environ if env is None else env
    username = env.get(ENV_USERNAME) or username
    integration_code = env.get(ENV_INTEGRATION_CODE) or integration_code
    if not username:
        raise CredentialsError(
            "No Autotask API username is configured. Run `infima-autotask connect`, "
            f"or set {ENV_USERNAME}."
        )
    if not integration_code:
        raise CredentialsError(
            "No Autotask integration code (API tracking identifier) is configured. Run "
            f"`infima-autotask connect`, or set {ENV_INTEGRATION_CODE}."
        )
    secret = env.get(ENV_SECRET)
    if secret:
        log.debug("Autotask secret taken from %s", ENV_SECRET)
    else:
        secret = read_keyring(username, env)
        if not secret:
            raise CredentialsError(
                f"No Autotask secret stored for {username}. Run `infima-autotask connect`, "
                f"or set {ENV_SECRET}."
            )
        log.debug("Autotask secret taken from the keyring")
    register_secret(secret)
    return AutotaskCredentials(username, integration_code, secret)


def _env_then_keyring(
    what: str,
    variable: str,
    name: str,
    missing: str,
    env: Mapping[str, str] | None,
    *,
    refuse_plaintext: bool = False,
) -> str:
    """A secret from ``variable``, else the keyring under ``name`` (SPEC §5 order).

    ``missing`` is the error when neither has it. ``refuse_plaintext``: for a secret that
    reaches the keyring by hand rather than through ``connect``, the rule that keeps secrets
    out of unencrypted keyrings is applied on reading instead.

    Raises:
        CredentialsError: no secret, or the keyring cannot be read.
    """
    env = os.environ if env is None else env
    secret = env.get(variable)
    if secret:
        log.debug("%s taken from %s", what, variable)
    else:
        if refuse_plaintext:
            _refuse_plaintext(env, outcome=f"the {what} was not read from it")
        try:
            secret = read_keyring(name, env)
        except CredentialsError as exc:
            if not refuse_plaintext:
                raise
            # ``missing`` reads "No <secret>: <fix>": the fix follows why the keyring failed.
            head, _, fix = missing.partition(": ")
            raise CredentialsError(f"{head}: {exc.message.rstrip('.')}; {fix}") from None
        if not secret:
            raise CredentialsError(missing)
        log.debug("%s taken from the keyring", what)
    register_secret(secret)
    return secret


def infima_api_key(env: Mapping[str, str] | None = None) -> str:
    """The INFIMA Reporting API key, from the environment or the keyring.

    Raises:
        CredentialsError: no key, or the keyring cannot be read.
    """
    return _env_then_keyring(
        "INFIMA API key",
        ENV_INFIMA_KEY,
        INFIMA_KEY_NAME,
        f"No INFIMA API key is stored. Run `infima-autotask connect --infima`, or set "
        f"{ENV_INFIMA_KEY}.",
        env,
    )


def connectwise_key_name(company_id: str, public_key: str) -> str:
    """The keyring name of a ConnectWise API member's private key (SPEC §10)."""
    return f"connectwise:{company_id}+{public_key}"


def connectwise_private_key(
    company_id: str, public_key: str, env: Mapping[str, str] | None = None
) -> str:
    """The private key of the ConnectWise API member ``company_id+public_key``, from the
    environment or the keyring.

    Raises:
        CredentialsError: no key, or the keyring cannot be read.
    """
    return _env_then_keyring(
        "ConnectWise private key",
        ENV_CONNECTWISE_PRIVATE_KEY,
        connectwise_key_name(company_id, public_key),
        "No ConnectWise private key is stored. Run `infima-autotask connect --psa connectwise`, "
        f"or set {ENV_CONNECTWISE_PRIVATE_KEY}.",
        env,
    )


def halo_key_name(client_id: str) -> str:
    """The keyring name of a HaloPSA API application's client secret (SPEC §10)."""
    return f"halo:{client_id}"


def halo_client_secret(client_id: str, env: Mapping[str, str] | None = None) -> str:
    """The client secret of the HaloPSA API application ``client_id``, from the environment
    or the keyring.

    Raises:
        CredentialsError: no secret, or the keyring cannot be read.
    """
    return _env_then_keyring(
        "HaloPSA client secret",
        ENV_HALO_CLIENT_SECRET,
        halo_key_name(client_id),
        "No HaloPSA client secret is stored. Run `infima-autotask connect --psa halo`, "
        f"or set {ENV_HALO_CLIENT_SECRET}.",
        env,
    )


def smtp_key_name(username: str) -> str:
    """The keyring name of the SMTP password of ``username`` (SPEC §11)."""
    return f"smtp:{username}"


def smtp_password(username: str, env: Mapping[str, str] | None = None) -> str:
    """The password of the SMTP account ``username``, from the environment or the keyring.

    Raises:
        CredentialsError: no password, or the keyring cannot be read.
    """
    return _env_then_keyring(
        "SMTP password",
        ENV_SMTP_PASSWORD,
        smtp_key_name(username),
        f"No SMTP password for {username}: set {ENV_SMTP_PASSWORD}, or store it in the "
        f"keyring (service {KEYRING_SERVICE}, name {smtp_key_name(username)}).",
        env,
        refuse_plaintext=True,
    )


def read_keyring(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """``keyring.get_password`` with every keyring failure turned into CredentialsError."""
    _unlock_file_keyring(os.environ if env is None else env)
    try:
        return keyring.get_password(KEYRING_SERVICE, name)
    except EOFError:  # a file keyring asked for its password with nothing to read
        raise _no_file_password() from None
    except (keyring.errors.KeyringError, RuntimeError) as exc:
        # RuntimeError: a Secret Service backend with no D-Bus session (cron).
        raise CredentialsError(
            f"Could not read the OS keyring ({type(exc).__name__}).", [_KEYRING_FIX]
        ) from None


def store_keyring(name: str, value: str, env: Mapping[str, str] | None = None) -> None:
    """Store one secret in the OS keyring.

    Raises:
        CredentialsError: the keyring cannot be written.
    """
    register_secret(value)
    env = os.environ if env is None else env
    _refuse_plaintext(env)
    _unlock_file_keyring(env)
    try:
        keyring.set_password(KEYRING_SERVICE, name, value)
    except EOFError:
        raise _no_file_password() from None
    except (keyring.errors.KeyringError, RuntimeError) as exc:
        raise CredentialsError(
            f"Could not store the secret in the OS keyring ({type(exc).__name__}).", [_KEYRING_FIX]
        ) from None


def _refuse_plaintext(env: Mapping[str, str], *, outcome: str = "nothing was stored") -> None:
    """Never store a secret in a keyring that writes it unencrypted (or drops it), unless
    PYTHON_KEYRING_BACKEND names that keyring on purpose.

    keyring picks such a backend by itself whenever one is installed (keyrings.alt comes with
    many test set-ups) and nothing better is: the secret would then sit base64-encoded in a
    plain file, and `connect` would say Connected.
    """
    try:
        backend = keyring.get_keyring()
    except (keyring.errors.KeyringError, RuntimeError):
        return  # reported by the set call that follows
    chained = getattr(backend, "backends", None)
    # A chain stores in the first member that takes it: any unsafe member may end up holding it.
    members = list(chained) if isinstance(chained, (list, tuple)) and chained else [backend]
    writer = next((m for m in members if _unencrypted(m)), None)
    if writer is None:
        return
    kind = type(writer)
    path = f"{kind.__module__}.{kind.__name__}"
    if env.get("PYTHON_KEYRING_BACKEND", "").strip() == path:
        return
    where = getattr(writer, "file_path", "")
    raise CredentialsError(
        f"The keyring found ({path}) would keep the secret unencrypted"
        f"{' in ' + str(where) if where else ' or not at all'}; {outcome}. Set up an "
        "encrypted one (pip install keyrings.cryptfile, then export PYTHON_KEYRING_BACKEND="
        "keyrings.cryptfile.cryptfile.CryptFileKeyring and KEYRING_CRYPTFILE_PASSWORD), or "
        f"keep the secrets in the environment variables. To use {kind.__name__} anyway, set "
        f"PYTHON_KEYRING_BACKEND={path}."
    )


def _unencrypted(backend: object) -> bool:
    kind = type(backend)
    return "plaintext" in kind.__name__.lower() or kind.__module__ == "keyring.backends.null"


def _no_file_password() -> CredentialsError:
    return CredentialsError(
        "The encrypted keyring file needs its password and no terminal is attached to ask "
        f"for it. Set {ENV_CRYPTFILE_PASSWORD} (in cron.env for cron).",
        [_KEYRING_FIX],
    )


def _unlock_file_keyring(env: Mapping[str, str]) -> None:
    """Open encrypted file keyrings (keyrings.cryptfile) with the password from the environment.

    keyrings.cryptfile 1.3.9, the release on PyPI, ignores KEYRING_CRYPTFILE_PASSWORD and asks
    on the terminal: under cron that is a baffling "Aborted!", and a wrong password is a bare
    ValueError. The backend chosen may also be a chain of backends (when PYTHON_KEYRING_BACKEND
    is not set); its file keyrings whose file exists are opened too. Duck-typed on
    ``_keyring_key`` so no import is needed.
    """
    try:
        backend: Any = keyring.get_keyring()  # Any: keyring_key is not on KeyringBackend
    except (keyring.errors.KeyringError, RuntimeError):
        return  # reported by the get/set call that follows
    chained = getattr(backend, "backends", None)
    if isinstance(chained, (list, tuple)):
        for member in chained:
            if Path(str(getattr(member, "file_path", ""))).is_file():
                _unlock(member, env)
    else:
        _unlock(backend, env)


def _unlock(backend: Any, env: Mapping[str, str]) -> None:
    if getattr(backend, "_keyring_key", "") is not None or not hasattr(
        type(backend), "keyring_key"
    ):
        return  # not a file keyring, or already unlocked
    password = env.get(ENV_CRYPTFILE_PASSWORD)
    if not password and not sys.stdin.isatty():
        raise _no_file_password()
    try:
        if password:
            backend.keyring_key = password  # opens the file, or creates it with this password
        else:
            backend.keyring_key  # noqa: B018 - the property asks on the terminal
    except ValueError:
        where = getattr(backend, "file_path", "")
        raise CredentialsError(
            f"The encrypted keyring file {where} did not open: wrong password. Set "
            f"{ENV_CRYPTFILE_PASSWORD} to the password it was created with (or delete the file "
            "and run `infima-autotask connect` and `connect --infima` again)."
        ) from None
    except (EOFError, OSError) as exc:
        raise CredentialsError(
            f"Could not open the encrypted keyring file ({type(exc).__name__}). "
            f"Set {ENV_CRYPTFILE_PASSWORD}.",
            [_KEYRING_FIX],
        ) from None
