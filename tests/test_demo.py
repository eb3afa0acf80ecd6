"""`demo`: a whole month against the sandbox, touching nothing outside its temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keyring

from infima_autotask.cli import cli

EXE = Path(sys.executable).with_name("infima-autotask")


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_demo_shows_a_complete_month_and_leaves_no_trace(tmp_path):
    home, scratch = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    scratch.mkdir()
    real_config = tmp_path / "real-config.yaml"
    real_state = tmp_path / "real-state"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(scratch),
        "LANG": "C.UTF-8",
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_STATE_HOME": str(home / "state"),
        # An operator's own settings, which the demo must neither use nor touch.
        "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
        "INFIMA_AUTOTASK_CONFIG": str(real_config),
        "INFIMA_AUTOTASK_STATE_DIR": str(real_state),
        "INFIMA_AUTOTASK_API_URL": "https://webservices5.autotask.net/atservicesrest/",
        "INFIMA_API_KEY": "an-operator-key-that-must-not-be-used",
    }
    result = subprocess.run(
        [str(EXE), "demo"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout
    for text in (
        "$ infima-autotask connect --username",
        "Autotask: Connected",
        "INFIMA: Connected (Sandbox MSP",
        "$ infima-autotask list-clients",
        "Evergreen Realty",
        "$ infima-autotask search-accounts acme --contracts",
        "29685100",
        "$ infima-autotask map 104 --account 29683504 --contract 29690011",
        "$ infima-autotask doctor",
        "client 106: billing period",
        "monthly from the 17th",
        "extended, as expected",
        "Tenant time zone",
        "$ infima-autotask sync --dry-run",
        "planned",
        "$ infima-autotask list-mappings --check",
        "$ infima-autotask history",
        "$ infima-autotask connect --psa halo --url http://127.0.0.1:",
        "HaloPSA: Connected (http://127.0.0.1:",
        "$ infima-autotask map 110 --psa halo --account 45 --subscription 9127",
        "Demo complete: 3 Autotask adjustment(s), 1 ConnectWise quantity update(s) and 1 HaloPSA "
        "count update(s) written to the sandbox, none twice.",
    ):
        assert text in out, text
    # doctor runs after the maps and before the first sync, and finds nothing to fix.
    assert out.index("$ infima-autotask doctor") < out.index("$ infima-autotask sync --dry-run")
    assert out.index("$ infima-autotask map 106") < out.index("$ infima-autotask doctor")
    doctor = out[out.index("$ infima-autotask doctor") : out.index("$ infima-autotask sync")]
    assert " fail " not in doctor and " warn " not in doctor
    assert "Doctor: 38 ok, 0 warn, 0 fail" in result.stderr
    summaries = [line for line in result.stderr.splitlines() if line.startswith("Period ")]
    assert len(summaries) == 6
    assert summaries[0].endswith(
        "3 planned, 2 unchanged, 0 skipped, 0 held, 0 failed (dry run: nothing written)"
    )
    assert summaries[1].endswith("3 updated, 2 unchanged, 0 skipped, 0 held, 0 failed")
    assert summaries[2].endswith("0 updated, 5 unchanged, 0 skipped, 0 held, 0 failed")
    # ConnectWise: Juniper's addition set to its count (18 -> 20) with one PATCH.
    assert summaries[3].endswith("1 updated, 0 unchanged, 0 skipped, 0 held, 0 failed")
    # HaloPSA: Kestrel's subscription set to its count (12 -> 14) with one POST; then one
    # month across the three PSAs writes nothing more.
    assert summaries[4].endswith("1 updated, 0 unchanged, 0 skipped, 0 held, 0 failed")
    assert summaries[5].endswith("0 updated, 7 unchanged, 0 skipped, 0 held, 0 failed")
    assert "  HaloPSA: 0 updated, 1 unchanged, 0 skipped, 0 held, 0 failed" in result.stderr
    # Nothing outside its own temporary folder: no config, state, keyring file or leftovers.
    assert not real_config.exists() and not real_state.exists()
    assert files_under(home) == []
    assert files_under(scratch) == []


def test_demo_in_process_restores_keyring_and_environment(runner, monkeypatch):
    monkeypatch.setenv("INFIMA_API_KEY", "operator-key")
    before_backend = keyring.get_keyring()
    before_env = dict(os.environ)
    result = runner.invoke(cli, ["demo"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Demo complete" in result.stdout
    assert keyring.get_keyring() is before_backend
    assert dict(os.environ) == before_env


def test_the_memory_keyring_is_never_chosen_by_itself():
    """Only set explicitly (demo, tests): keyring must never pick it as a default."""
    from keyring.backend import KeyringBackend

    from infima_autotask.memkeyring import MemoryKeyring

    assert MemoryKeyring in KeyringBackend._classes  # loaded, so keyring can see it...
    assert MemoryKeyring not in set(KeyringBackend.get_viable_backends())  # ...and skips it
