"""Credentials: environment first, then the keyring; keyring failures; secret hygiene."""

from __future__ import annotations

import keyring
import keyring.backends.fail
import keyring.errors
import pytest
from conftest import API_KEY, CODE, SECRET, USERNAME
from keyring.backend import KeyringBackend

from infima_autotask.credentials import (
    INFIMA_KEY_NAME,
    KEYRING_SERVICE,
    AutotaskCredentials,
    autotask_credentials,
    infima_api_key,
    read_keyring,
    store_keyring,
)
from infima_autotask.errors import CredentialsError
from infima_autotask.http import redact

ENV = {
    "INFIMA_AUTOTASK_USERNAME": "env-user@example.com",
    "INFIMA_AUTOTASK_INTEGRATION_CODE": "ENVCODE",
    "INFIMA_AUTOTASK_SECRET": "env-secret-value-1",
}


class DbusKeyring(KeyringBackend):
    """Like the Secret Service backend under cron: no D-Bus session."""

    priority = 1

    def get_password(self, service, username):
        raise RuntimeError("Failed to connect to D-Bus: no DBUS_SESSION_BUS_ADDRESS")

    def set_password(self, service, username, password):
        raise RuntimeError("Failed to connect to D-Bus: no DBUS_SESSION_BUS_ADDRESS")

    def delete_password(self, service, username):
        raise RuntimeError("no D-Bus")


@pytest.fixture(params=["dbus", "fail"])
def broken_keyring(request):
    """A keyring that raises RuntimeError (D-Bus), and keyring's own no-backend ``fail`` one."""
    backend = DbusKeyring() if request.param == "dbus" else keyring.backends.fail.Keyring()
    keyring.set_keyring(backend)
    return request.param


def assert_names_both_fixes(error: CredentialsError) -> None:
    assert error.exit_code == 2
    text = " ".join([error.message, *error.details])
    for variable in (
        "INFIMA_AUTOTASK_USERNAME",
        "INFIMA_AUTOTASK_SECRET",
        "INFIMA_AUTOTASK_INTEGRATION_CODE",
        "INFIMA_API_KEY",
    ):
        assert variable in text
    assert "keyrings.cryptfile" in text
    assert "PYTHON_KEYRING_BACKEND=keyrings.cryptfile.cryptfile.CryptFileKeyring" in text


# --- Autotask --------------------------------------------------------------------------


def test_environment_wins_over_config_and_keyring(stored_creds):
    stored_creds.set_password(KEYRING_SERVICE, ENV["INFIMA_AUTOTASK_USERNAME"], "keyring-value")
    creds = autotask_credentials(USERNAME, CODE, ENV)
    assert creds == AutotaskCredentials("env-user@example.com", "ENVCODE", "env-secret-value-1")


def test_config_values_and_the_keyring_secret(stored_creds):
    creds = autotask_credentials(USERNAME, CODE, {})
    assert creds == AutotaskCredentials(USERNAME, CODE, SECRET)


def test_env_username_selects_the_keyring_entry(stored_creds):
    stored_creds.set_password(KEYRING_SERVICE, "other@example.com", "other-secret-1234")
    creds = autotask_credentials(USERNAME, CODE, {"INFIMA_AUTOTASK_USERNAME": "other@example.com"})
    assert creds.username == "other@example.com"
    assert creds.secret == "other-secret-1234"


def test_env_secret_alone_with_config_username(memkeyring):
    creds = autotask_credentials(USERNAME, CODE, {"INFIMA_AUTOTASK_SECRET": "only-env-secret"})
    assert creds.secret == "only-env-secret"


def test_the_process_environment_is_the_default(stored_creds, monkeypatch):
    monkeypatch.setenv("INFIMA_AUTOTASK_SECRET", "from-os-environ-99")
    assert autotask_credentials(USERNAME, CODE).secret == "from-os-environ-99"


def test_missing_username(memkeyring):
    with pytest.raises(CredentialsError) as caught:
        autotask_credentials(None, CODE, {})
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        "No Autotask API username is configured. Run `infima-autotask connect`, "
        "or set INFIMA_AUTOTASK_USERNAME."
    )


def test_missing_integration_code(memkeyring):
    with pytest.raises(CredentialsError) as caught:
        autotask_credentials(USERNAME, "", {})
    assert str(caught.value) == (
        "No Autotask integration code (API tracking identifier) is configured. Run "
        "`infima-autotask connect`, or set INFIMA_AUTOTASK_INTEGRATION_CODE."
    )


def test_missing_secret(memkeyring):
    with pytest.raises(CredentialsError) as caught:
        autotask_credentials(USERNAME, CODE, {})
    assert str(caught.value) == (
        f"No Autotask secret stored for {USERNAME}. Run `infima-autotask connect`, "
        "or set INFIMA_AUTOTASK_SECRET."
    )


def test_broken_keyring_names_both_fixes(broken_keyring):
    with pytest.raises(CredentialsError) as caught:
        autotask_credentials(USERNAME, CODE, {})
    expected = "RuntimeError" if broken_keyring == "dbus" else "NoKeyringError"
    assert str(caught.value) == f"Could not read the OS keyring ({expected})."
    assert_names_both_fixes(caught.value)
    assert caught.value.__cause__ is None  # no chained traceback text


def test_broken_keyring_is_not_touched_when_the_env_has_everything(broken_keyring):
    assert autotask_credentials(None, None, ENV).secret == "env-secret-value-1"
    assert infima_api_key({"INFIMA_API_KEY": API_KEY}) == API_KEY


def test_broken_keyring_on_store(broken_keyring):
    with pytest.raises(CredentialsError) as caught:
        store_keyring(USERNAME, "a-secret-to-store")
    assert str(caught.value).startswith("Could not store the secret in the OS keyring (")
    assert "a-secret-to-store" not in str(caught.value)
    assert_names_both_fixes(caught.value)


def test_keyring_error_subclasses_are_caught(memkeyring, monkeypatch):
    def locked(service, name):
        raise keyring.errors.KeyringLocked("the collection is locked")

    monkeypatch.setattr(keyring, "get_password", locked)
    with pytest.raises(CredentialsError, match=r"\(KeyringLocked\)"):
        read_keyring(USERNAME)


def test_store_and_read_round_trip(memkeyring):
    store_keyring(USERNAME, "round-trip-secret")
    assert memkeyring.get_password(KEYRING_SERVICE, USERNAME) == "round-trip-secret"
    assert read_keyring(USERNAME) == "round-trip-secret"


# --- INFIMA ----------------------------------------------------------------------------


def test_infima_key_from_env_first(stored_creds):
    assert infima_api_key({"INFIMA_API_KEY": "env-key-abcdef"}) == "env-key-abcdef"


def test_infima_key_from_keyring(stored_creds):
    assert infima_api_key({}) == API_KEY
    assert stored_creds.get_password(KEYRING_SERVICE, INFIMA_KEY_NAME) == API_KEY


def test_infima_key_missing(memkeyring):
    with pytest.raises(CredentialsError) as caught:
        infima_api_key({})
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        "No INFIMA API key is stored. Run `infima-autotask connect --infima`, "
        "or set INFIMA_API_KEY."
    )


def test_infima_key_with_broken_keyring(broken_keyring):
    with pytest.raises(CredentialsError) as caught:
        infima_api_key({})
    assert_names_both_fixes(caught.value)


# --- hygiene ---------------------------------------------------------------------------


def test_repr_hides_the_secret(stored_creds):
    creds = autotask_credentials(USERNAME, CODE, {})
    assert SECRET not in repr(creds)
    assert SECRET not in str(creds)
    assert USERNAME in repr(creds)


def test_resolved_secrets_are_registered_for_redaction(stored_creds):
    secret = autotask_credentials(USERNAME, CODE, {}).secret
    key = infima_api_key({})
    assert redact(f"x {secret} y {key}") == "x *** y ***"
