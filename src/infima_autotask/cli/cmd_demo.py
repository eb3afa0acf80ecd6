"""``demo``: an operator's whole month against the built-in sandbox, through the real commands."""

from __future__ import annotations

import io
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import keyring
from keyring.backend import KeyringBackend

from infima_autotask.cli._common import Command
from infima_autotask.errors import InfimaAutotaskError
from infima_autotask.sandbox import Sandbox, cw_data, data, halo_data


@dataclass(frozen=True)
class Step:
    title: str
    args: list[str]
    stdin: str = ""
    expect: tuple[int, ...] = (0,)


def _steps(sandbox: Sandbox) -> list[Step]:
    maps = [
        Step(f"Map INFIMA client {m['client_id']} to its Contract Service (checked live)", args)
        for m in data.seed_mappings()
        for args in [data.map_args(m)]
    ]
    return [
        Step(
            "Connect to Autotask: zone lookup, a test call, secret into the keyring",
            [
                "connect",
                "--username",
                sandbox.username,
                "--integration-code",
                sandbox.integration_code,
                "--secret-stdin",
            ],
            stdin=sandbox.secret + "\n",
        ),
        Step(
            "Connect to INFIMA's Reporting API",
            ["connect", "--infima", "--api-key-stdin"],
            stdin=sandbox.api_key + "\n",
        ),
        Step("INFIMA clients and their active users", ["list-clients"]),
        Step(
            "Find the Autotask account and its contracts",
            ["search-accounts", "acme", "--contracts"],
        ),
        *maps,
        Step(
            "Prove, read-only, what the sync relies on in this tenant (zone, periods, prices)",
            ["doctor"],
        ),
        Step("Preview this month (nothing is written)", ["sync", "--dry-run"]),
        Step("Write this month's units", ["sync"]),
        Step("Run it again: nothing changes, nothing is written twice", ["sync"]),
        Step("Check every mapping live", ["list-mappings", "--check"]),
        Step("What happened", ["history"]),
        *_connectwise_steps(sandbox),
        *_halo_steps(sandbox),
    ]


def _connectwise_steps(sandbox: Sandbox) -> list[Step]:
    """A ConnectWise PSA shop's first steps on the same tool (SPEC §10)."""
    mapping = cw_data.seed_mapping()
    return [
        Step(
            "Connect to ConnectWise PSA: codebase lookup, a test call, private key into the "
            "keyring",
            [
                "connect",
                "--psa",
                "connectwise",
                "--site",
                sandbox.cw_site,
                "--company",
                sandbox.cw_company_id,
                "--public-key",
                sandbox.cw_public_key,
                "--client-id",
                sandbox.cw_client_id,
                "--private-key-stdin",
            ],
            stdin=sandbox.cw_private_key + "\n",
        ),
        Step(
            "Find the ConnectWise company, its agreements and additions",
            ["search-accounts", "--psa", "connectwise", "juniper", "--contracts"],
        ),
        Step(
            f"Map INFIMA client {mapping['client_id']} to its agreement addition (checked live)",
            [
                "map",
                str(mapping["client_id"]),
                "--psa",
                "connectwise",
                "--account",
                str(mapping["account_id"]),
                "--agreement",
                str(mapping["agreement_id"]),
                "--addition",
                str(mapping["addition_id"]),
            ],
        ),
        Step("Every mapping, each with its PSA", ["list-mappings"]),
        Step(
            "Write ConnectWise's quantity: one PATCH of the count itself, never a delta",
            ["sync", "--psa", "connectwise"],
        ),
    ]


def _halo_steps(sandbox: Sandbox) -> list[Step]:
    """A HaloPSA shop's first steps on the same tool (SPEC §10)."""
    mapping = halo_data.seed_mapping()
    return [
        Step(
            "Connect to HaloPSA: an OAuth2 token (kept in memory only), a test read, client "
            "secret into the keyring",
            [
                "connect",
                "--psa",
                "halo",
                "--url",
                sandbox.halo_url,
                "--client-id",
                sandbox.halo_client_id,
                "--client-secret-stdin",
            ],
            stdin=sandbox.halo_client_secret + "\n",
        ),
        Step(
            "Find the Halo client, its subscriptions and the invoice lines that bill them",
            ["search-accounts", "--psa", "halo", "kestrel", "--contracts"],
        ),
        Step(
            f"Map INFIMA client {mapping['client_id']} to its subscription (checked live)",
            [
                "map",
                str(mapping["client_id"]),
                "--psa",
                "halo",
                "--account",
                str(mapping["account_id"]),
                "--subscription",
                str(mapping["subscription_id"]),
            ],
        ),
        Step(
            "Write Halo's count: one POST of the count itself, with the subscription's id",
            ["sync", "--psa", "halo"],
        ),
        Step("One month, three PSAs: every mapping again, nothing written twice", ["sync"]),
    ]


@contextmanager
def _isolated(folder: Path, sandbox: Sandbox) -> Iterator[None]:
    """Temporary config, state, keyring and environment; all restored afterwards."""
    saved_env = dict(os.environ)
    saved_keyring: KeyringBackend = keyring.get_keyring()
    # Imported only now: keyring picks its default among every loaded backend class, so an
    # import at module level made this in-memory one the default of every command on a
    # machine without a real keyring, and `connect` then "stored" secrets that vanished.
    from infima_autotask.memkeyring import MemoryKeyring

    for name in list(os.environ):
        if name.startswith("INFIMA_") or name == "PYTHON_KEYRING_BACKEND":
            del os.environ[name]
    os.environ.update(
        {
            "INFIMA_AUTOTASK_CONFIG": str(folder / "config.yaml"),
            "INFIMA_AUTOTASK_STATE_DIR": str(folder / "state"),
            "INFIMA_AUTOTASK_ZONE_URL": sandbox.zone_url,
            "INFIMA_API_URL": sandbox.infima_url,
        }
    )
    keyring.set_keyring(MemoryKeyring())
    try:
        yield
    finally:
        keyring.set_keyring(saved_keyring)
        os.environ.clear()
        os.environ.update(saved_env)


def _run(step: Step) -> int:
    """Run one step through the real command code and return its exit code."""
    from infima_autotask.cli import cli  # the root group; imported late to avoid a cycle

    saved_stdin = sys.stdin
    sys.stdin = io.StringIO(step.stdin)
    try:
        cli.main(args=step.args, prog_name="infima-autotask", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdin = saved_stdin
    return 0


@click.command(cls=Command)
def demo() -> None:
    """Run a whole month against the built-in sandbox on 127.0.0.1.

    Starts simulated Autotask, ConnectWise PSA, HaloPSA and INFIMA APIs, then runs connect,
    list-clients, search-accounts, map, doctor, sync --dry-run, sync, sync again,
    list-mappings --check and history in a temporary folder with an in-memory keyring, and
    maps one client on ConnectWise and one on HaloPSA too. Touches no real config, keyring
    or network.

    \b
    Example:
      infima-autotask demo
    """
    with tempfile.TemporaryDirectory(prefix="infima-autotask-demo-") as tmp, Sandbox() as sandbox:
        click.secho(
            f"Sandbox: Autotask {sandbox.autotask_url}, INFIMA {sandbox.infima_url}, "
            f"ConnectWise {sandbox.cw_site}, HaloPSA {sandbox.halo_url}",
            err=True,
        )
        with _isolated(Path(tmp), sandbox):
            for number, step in enumerate(_steps(sandbox), start=1):
                click.echo()
                click.secho(f"# {number}. {step.title}", bold=True)
                click.secho("$ infima-autotask " + " ".join(step.args), fg="cyan")
                code = _run(step)
                if code not in step.expect:
                    raise InfimaAutotaskError(
                        f"The demo step `infima-autotask {' '.join(step.args)}` exited {code}; "
                        "please report this as a bug."
                    )
    writes = len(sandbox.adjustments())
    patches = len(sandbox.cw.patches)
    counts = len(sandbox.halo.updates)
    click.echo()
    click.echo(
        f"Demo complete: {writes} Autotask adjustment(s), {patches} ConnectWise quantity "
        f"update(s) and {counts} HaloPSA count update(s) written to the sandbox, none twice. "
        "Next: `infima-autotask connect` with your Autotask API user."
    )


COMMANDS: list[Any] = [demo]
