"""Files the tool writes (issue 7, part 4): private modes, and no half-written config.

The config (via ``connect`` and ``map``) and the state folder (history database, lock file,
via ``sync``) are created in fresh folders under a permissive umask and must come out 0600
(files) and 0700 (folders). A second process reading the config in a loop while this one
saves it hundreds of times (``save_config`` and the real ``map``) must parse and validate
every read: the tool replaces the file atomically, never truncates it in place.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from sandbox_cli import connect_steps

from infima_autotask.cli import cli
from infima_autotask.config import ClientMapping, load_config, save_config
from infima_autotask.sandbox import Sandbox, data

SEED = {m["client_id"]: m for m in data.seed_mappings()[:2]}  # Acme, Birch


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask():
    """A permissive umask, so modes come from the tool and not from the environment."""
    old = os.umask(0o022)
    yield
    os.umask(old)


class Tool:
    def __init__(self, sb: Sandbox, config: Path, state: Path) -> None:
        self.sb = sb
        self.config = config
        self.env = {
            "INFIMA_AUTOTASK_ZONE_URL": sb.zone_url,
            "INFIMA_API_URL": sb.infima_url,
            "INFIMA_AUTOTASK_STATE_DIR": str(state),
        }

    def run(self, *args: str, stdin: str | None = None) -> str:
        result = CliRunner().invoke(
            cli,
            ["--config", str(self.config), *args],
            env=self.env,
            input=stdin,
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.stdout + result.stderr
        return result.stdout

    def connect(self) -> None:
        for args, stdin in connect_steps(self.sb):
            self.run(*args, stdin=stdin)

    def map(self, client: int) -> None:
        self.run(*data.map_args(SEED[client]))


def test_config_is_0600_in_new_0700_folders(tmp_path, sandbox, loose_umask):
    config = tmp_path / "fresh" / "nested" / "config.yaml"
    tool = Tool(sandbox, config, tmp_path / "state")
    tool.connect()
    assert mode(config) == 0o600
    assert mode(config.parent) == 0o700
    assert mode(config.parent.parent) == 0o700  # every folder the tool created
    config.chmod(0o644)  # an operator loosened it; the next save tightens it again
    tool.map(data.ACME_CLIENT_ID)
    assert mode(config) == 0o600
    assert [p.name for p in config.parent.iterdir()] == ["config.yaml"]  # no temp file left


def test_connect_infima_alone_writes_a_private_config(tmp_path, sandbox, loose_umask):
    config = tmp_path / "only-infima" / "config.yaml"
    tool = Tool(sandbox, config, tmp_path / "state")
    tool.run("connect", "--infima", "--api-key-stdin", stdin=sandbox.api_key + "\n")
    assert mode(config) == 0o600 and mode(config.parent) == 0o700


def test_history_and_lock_are_private(tmp_path, sandbox, loose_umask):
    state = tmp_path / "state-home" / "infima-autotask"
    tool = Tool(sandbox, tmp_path / "config.yaml", state)
    tool.connect()
    for client in SEED:
        tool.map(client)
    tool.run("sync")
    assert len(sandbox.adjustments()) == 1
    assert mode(state) == 0o700
    files = [p for p in state.iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"history.sqlite3", "sync.lock"}
    for path in files:  # the database, the lock, and any journal SQLite left
        assert mode(path) == 0o600, (path.name, oct(mode(path)))
    assert mode(tmp_path / "config.yaml") == 0o600


def test_dry_run_alone_creates_a_private_state_folder(tmp_path, sandbox, loose_umask):
    state = tmp_path / "a" / "b" / "state"  # missing parents are private too
    tool = Tool(sandbox, tmp_path / "config.yaml", state)
    tool.connect()
    tool.map(data.ACME_CLIENT_ID)
    tool.run("sync", "--dry-run")
    assert mode(state) == mode(state.parent) == mode(tmp_path / "a") == 0o700
    assert all(mode(p) == 0o600 for p in state.iterdir() if p.is_file())


READER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import yaml
    from infima_autotask.config import parse_config

    path, stop = Path(sys.argv[1]), Path(sys.argv[2])
    reads, bad, counts = 0, [], set()
    Path(sys.argv[3]).touch()  # ready
    while not stop.exists():
        try:
            text = path.read_text(encoding="utf-8")
            config = parse_config(yaml.safe_load(text), str(path))
            counts.add(len(config.mappings))
        except Exception as exc:  # every failure is a finding
            bad.append(f"{type(exc).__name__}: {exc}"[:300])
        reads += 1
    print(json.dumps({"reads": reads, "bad": bad[:5], "bad_count": len(bad),
                      "counts": sorted(counts)}))
    """
)


def test_a_reader_never_sees_a_half_written_config(tmp_path, sandbox):
    config = tmp_path / "config.yaml"
    tool = Tool(sandbox, config, tmp_path / "state")
    tool.connect()
    tool.map(data.ACME_CLIENT_ID)
    base = load_config(config)
    template = base.mappings[0]
    stop, ready = tmp_path / "stop", tmp_path / "ready"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(config), str(stop), str(ready)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not ready.exists():
            assert reader.poll() is None, reader.communicate()
        saves = 0
        for round_ in range(40):
            # Big and small files alternate, so a torn write would be visible.
            for size in (1, 150, 3, 90, 2):
                mappings = tuple(
                    replace(
                        template,
                        client_id=10_000 + i,
                        contract_service_id=20_000 + i,
                        note="x" * (i % 40),
                    )
                    for i in range(size)
                )
                save_config(replace(base, mappings=mappings), config)
                saves += 1
            if round_ % 10 == 0:  # and through the real command, which re-reads and saves
                tool.map(data.BIRCH_CLIENT_ID)
                saves += 1
        stop.touch()
        out, err = reader.communicate(timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
    assert reader.returncode == 0, err
    result = json.loads(out)
    assert result["bad_count"] == 0, result["bad"]
    assert result["reads"] > 100, result
    assert len(result["counts"]) >= 2  # it saw the file change under it (not a timing target)
    # A file cut at a line break still parses: every read must be one of the files written.
    assert set(result["counts"]) <= {1, 2, 3, 90, 150}, result["counts"]
    assert saves == 204
    final = yaml.safe_load(config.read_text(encoding="utf-8"))
    assert final["version"] == 1 and isinstance(final["mappings"], list)
    assert isinstance(template, ClientMapping)
