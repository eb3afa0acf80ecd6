"""``crontab.example``: every job line names a valid schedule, command and options."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from infima_autotask.cli import cli

CRONTAB = Path(__file__).resolve().parents[1] / "crontab.example"
ENV_LINE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# field name -> (lowest, highest) value cron accepts
FIELDS = {"minute": (0, 59), "hour": (0, 23), "day": (1, 31), "month": (1, 12), "weekday": (0, 7)}


def _lines() -> list[str]:
    return [line.strip() for line in CRONTAB.read_text(encoding="utf-8").splitlines()]


def job_lines() -> list[str]:
    return [
        line for line in _lines() if line and not line.startswith("#") and not ENV_LINE.match(line)
    ]


def env_lines() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in _lines() if ENV_LINE.match(line))
    return {name: value for name, value in pairs}


def valid_field(text: str, low: int, high: int) -> bool:
    """A cron field: *, N, A-B, with an optional /step, comma-separated; numbers only."""
    for part in text.split(","):
        base, _, step = part.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            return False
        if base == "*":
            continue
        bounds = base.split("-")
        if len(bounds) > 2 or not all(b.isdigit() for b in bounds):
            return False
        values = [int(b) for b in bounds]
        if not all(low <= v <= high for v in values) or values != sorted(values):
            return False
    return True


def split_job(line: str) -> tuple[list[str], list[str]]:
    fields = line.split(None, 5)
    assert len(fields) == 6, f"not 5 schedule fields and a command: {line!r}"
    command = fields[5].split("&&")[-1]
    return fields[:5], shlex.split(command)


def test_the_example_has_the_monthly_and_the_catch_up_line():
    schedules = [" ".join(split_job(line)[0]) for line in job_lines()]
    assert schedules == ["0 6 1 * *", "30 7 * * *", "15 2 * * *", "45 2 * * *"]
    args = [split_job(line)[1] for line in job_lines()]
    assert args[0] == ["infima-autotask", "sync"]
    assert args[1] == ["infima-autotask", "sync", "--if-due", "--quiet"]
    # ConnectWise's nightly line: an absolute quantity, so every night is safe (SPEC §10).
    assert args[2] == ["infima-autotask", "sync", "--psa", "connectwise", "--quiet"]
    # HaloPSA's too: a subscription holds one count, set absolutely.
    assert args[3] == ["infima-autotask", "sync", "--psa", "halo", "--quiet"]


def test_environment_lines_give_cron_what_it_lacks():
    env = env_lines()
    assert "@" in env["MAILTO"]  # failures must reach a person
    assert "/usr/local/bin" in env["PATH"].split(":")
    assert env["SHELL"] == "/bin/sh"


def test_the_jobs_run_by_the_billing_zones_clock():
    """CRON_TZ (cronie) comes before the job lines and names a real zone."""
    from zoneinfo import ZoneInfo

    lines = _lines()
    zone = env_lines()["CRON_TZ"]
    ZoneInfo(zone)  # raises for a zone that does not exist
    first_job = lines.index(job_lines()[0])
    assert lines.index(f"CRON_TZ={zone}") < first_job


@pytest.mark.parametrize("line", job_lines())
def test_schedule_is_valid(line):
    schedule, _ = split_job(line)
    for text, (name, (low, high)) in zip(schedule, FIELDS.items(), strict=True):
        assert valid_field(text, low, high), f"bad {name} field {text!r} in {line!r}"
    assert "%" not in line  # cron would turn it into a newline


@pytest.mark.parametrize("line", job_lines())
def test_command_and_every_option_exist(line):
    _, args = split_job(line)
    assert args[0] == "infima-autotask"
    rest = args[1:]
    name = next(arg for arg in rest if not arg.startswith("-"))
    assert name in cli.commands, f"no command {name!r}"
    command = cli.commands[name]
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    given = [arg for arg in rest[rest.index(name) + 1 :] if arg.startswith("-")]
    for option in given:
        assert option.split("=", 1)[0] in known, f"{name} has no option {option}"
    # click itself accepts the whole argument list (values, flag types, callbacks)
    with click.Context(cli) as parent:
        command.make_context(name, rest[rest.index(name) + 1 :], parent=parent)


def test_valid_field_rejects_nonsense():
    assert valid_field("*/15", 0, 59) and valid_field("1-5", 0, 7) and valid_field("0,30", 0, 59)
    assert not valid_field("60", 0, 59)
    assert not valid_field("5-1", 0, 7)
    assert not valid_field("*/0", 0, 59)
    assert not valid_field("mon", 0, 7)
