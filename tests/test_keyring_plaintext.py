"""No secret in a plaintext keyring: keyring picks keyrings.alt's PlaintextKeyring by itself
when it is installed and nothing better is, and `connect` used to store the secret there,
base64-encoded in a plain file, and say Connected."""

from __future__ import annotations

import keyring
import pytest
from conftest import API_KEY, INFIMA
from keyrings.alt.file import PlaintextKeyring

PARTNER = {"partner_name": "Partner Co"}


@pytest.fixture
def plaintext(tmp_path, clean_env):
    backend = PlaintextKeyring()
    backend.file_path = str(tmp_path / "keyring_pass.cfg")
    keyring.set_keyring(backend)
    return backend


def test_connect_refuses_a_plaintext_keyring_it_was_not_told_to_use(
    invoke, requests_mock, plaintext
):
    requests_mock.get(INFIMA + "/v1/partner", json=PARTNER)

    result = invoke("connect", "--infima", "--api-key-stdin", input=API_KEY + "\n")

    assert result.exit_code == 2
    assert result.stderr.startswith(
        "Error: The keyring found (keyrings.alt.file.PlaintextKeyring) would keep the secret "
        "unencrypted in "
    )
    assert "keyrings.cryptfile" in result.stderr and "PYTHON_KEYRING_BACKEND" in result.stderr
    assert "INFIMA: Connected" not in result.stdout
    assert keyring.get_password("infima-autotask", "infima-api-key") is None
    assert API_KEY not in result.output


def test_a_plaintext_keyring_named_on_purpose_is_used(
    invoke, requests_mock, plaintext, monkeypatch
):
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    requests_mock.get(INFIMA + "/v1/partner", json=PARTNER)

    result = invoke("connect", "--infima", "--api-key-stdin", input=API_KEY + "\n")

    assert result.exit_code == 0, result.output
    assert keyring.get_password("infima-autotask", "infima-api-key") == API_KEY
