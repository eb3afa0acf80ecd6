"""Shared pieces for tests that drive the CLI against the loopback sandbox.

The runners themselves differ on purpose (the installed script as a subprocess in test_e2e,
the CLI in-process in test_files, a secret-scanning run in test_secret_scan); what they share
is how the sandbox's credentials get in (environment, or ``connect``) and how clients are mapped.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from infima_autotask.sandbox import Sandbox, data

EXE = Path(sys.executable).with_name("infima-autotask")
if not EXE.exists():  # pragma: no cover - an unusual install layout
    EXE = Path(shutil.which("infima-autotask") or "infima-autotask")


def env_for(sb: Sandbox, state: Path) -> dict[str, str]:
    """Every credential and address of ``sb`` in the environment; history under ``state``."""
    return {
        "INFIMA_AUTOTASK_USERNAME": sb.username,
        "INFIMA_AUTOTASK_SECRET": sb.secret,
        "INFIMA_AUTOTASK_INTEGRATION_CODE": sb.integration_code,
        "INFIMA_AUTOTASK_API_URL": sb.autotask_url,
        "INFIMA_API_URL": sb.infima_url,
        "INFIMA_API_KEY": sb.api_key,
        "INFIMA_AUTOTASK_STATE_DIR": str(state),
    }


def subprocess_env(home: Path) -> dict[str, str]:
    """A bare environment for the installed script: its own HOME and a plain-file keyring."""
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
    }


def connect_steps(sb: Sandbox) -> list[tuple[tuple[str, ...], str]]:
    """The two ``connect`` calls (arguments, stdin) that store the sandbox's credentials."""
    autotask = ("connect", "--username", sb.username, "--integration-code", sb.integration_code)
    return [
        ((*autotask, "--secret-stdin"), sb.secret + "\n"),
        (("connect", "--infima", "--api-key-stdin"), sb.api_key + "\n"),
    ]


def map_all(run: Callable[..., Any], mappings: Iterable[dict[str, Any]]) -> list[Any]:
    """``run`` the ``map`` command of each mapping; returns what each run returned."""
    return [run(*data.map_args(mapping)) for mapping in mappings]
