"""One whole-number parser (issue 12, part 4), through every entry point that reads one.

``str.isdigit`` is True for ``²`` but ``int`` refuses it (a traceback), and ``int`` reads
``١٢`` (Arabic-Indic), ``１２`` (full-width) and ``1_000`` without a word. Each entry point,
driven through the real CLI, must refuse such text with an ``Error:`` line and its SPEC §3
exit code, never a traceback, and still read plain ASCII digits as it always did.
"""

from __future__ import annotations

import fcntl
import json
import math
import os

import pytest
import yaml
from conftest import make_config, write_config
from fake_autotask import PERIOD, mapping, writes
from hypothesis import given
from hypothesis import strategies as st

from infima_autotask.history import LOCK_NAME
from infima_autotask.sandbox import data
from infima_autotask.whole_number import (
    MAX_INT,
    NotWholeNumberError,
    OutOfRangeError,
    WholeNumberError,
    parse_whole,
    whole_from_json,
)

pytestmark = pytest.mark.usefixtures("no_backoff")

HUGE = "99999999999999999999"
# What an operator might type or paste where a whole number is asked for.
ODD = ["²", "١٢", "１２", " 12 ", "+12", "-1", "1_000", "12.0", "1e3", "", HUGE]
ODD += ["+-1", "--1", "\u00a012", "12\u3000"]  # two signs; no-break and ideographic spaces
# Every operator entry point takes surrounding ASCII spaces (they were stripped before too).
REFUSED = [text for text in ODD if text != " 12 "]
MONTHS_REFUSED = ["٢٠٢٦-١٢", "２０２６-１２", "2026-1²", "\u00a02026-12", "+2026-12", "2026-+1"]
MONTHS_REFUSED += ["2026-1_2", "2026-12.0", "", "2026-13", "2026-00", "0000-12", f"{HUGE}-12"]


def _refused(result, code: int = 2) -> list[str]:
    """The ``Error:`` lines of a run that must end with ``code`` and no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert errors, result.stderr
    return errors


@pytest.fixture
def offline(config_path, stored_creds):
    """A valid config with stored credentials: options are read before any request."""
    write_config(config_path, make_config([mapping(101)]))


# -- every click option and argument that takes a whole number ------------------------------

OPTIONS = {
    "history --limit": ["history", "--limit"],
    "history --client": ["history", "--client"],
    "sync --client": ["sync", "--dry-run", "--client"],
    "doctor --client": ["doctor", "--client"],
    "search-accounts --limit": ["search-accounts", "acme", "--limit"],
    "map CLIENT_ID": ["map", "--account", "1", "--"],
    "map --account": ["map", "101", "--account"],
    "map --contract": ["map", "101", "--account", "1", "--contract"],
    "map --contract-service": ["map", "101", "--account", "1", "--contract-service"],
    "map --exclude-users": ["map", "101", "--account", "1", "--exclude-users"],
    "map --min-units": ["map", "101", "--account", "1", "--min-units"],
    "map --max-units": ["map", "101", "--account", "1", "--max-units"],
    "unmap CLIENT_ID": ["unmap", "--"],
}


@pytest.mark.parametrize("text", REFUSED)
@pytest.mark.parametrize("option", OPTIONS)
def test_an_option_refuses_what_is_not_a_whole_number(invoke, offline, option, text):
    errors = _refused(invoke(*OPTIONS[option], text))
    assert errors[-1].startswith("Error: Invalid value for ")
    assert errors[-1].endswith(
        (
            f"{text!r} is not a whole number.",
            f"{text!r} is not a positive whole number.",
            f"{text!r} is not a whole number of 0 or more.",
            f"{text!r} is too large (at most 9223372036854775807).",
        )
    )
    if text == HUGE:  # positive, only too large: said so, not "not a positive whole number"
        assert errors[-1].endswith("is too large (at most 9223372036854775807).")


def test_history_options_take_ascii_digits_with_spaces(invoke, setup, fake):
    fake.add_client(101, 10)
    fake.add_client(102, 10)
    setup({101: 12, 102: 11})
    assert invoke("sync", "--month", PERIOD).exit_code == 0
    assert invoke("sync", "--month", PERIOD).exit_code == 0  # a second run: two rows each

    result = invoke(
        "history", "--client", " 101 ", "--limit", " 1 ", "--month", " 2026-12 ", "--json"
    )

    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(row["client_id"], row["period"]) for row in rows] == [(101, PERIOD)]


def test_map_options_take_ascii_digits_with_spaces(invoke, config_path, sandbox, sandbox_env):
    write_config(config_path, make_config(autotask={"username": sandbox.username}))
    spaced = [
        "map",
        f" {data.ACME_CLIENT_ID} ",
        "--account",
        f" {data.ACME_ACCOUNT_ID}",
        "--contract",
        f"{data.ACME_CONTRACT_ID} ",
        "--contract-service",
        f"\t{data.ACME_CONTRACT_SERVICE_ID}",
        "--exclude-users",
        " 1 ",
        "--min-units",
        "02",
        "--max-units",
        "12",
    ]
    result = invoke(*spaced, env=sandbox_env)
    assert result.exit_code == 0, result.output
    (saved,) = yaml.safe_load(config_path.read_text())["mappings"]
    assert (saved["client_id"], saved["account_id"], saved["contract_service_id"]) == (
        data.ACME_CLIENT_ID,
        data.ACME_ACCOUNT_ID,
        data.ACME_CONTRACT_SERVICE_ID,
    )
    assert (saved["exclude_users"], saved["min_units"], saved["max_units"]) == (1, 2, 12)

    found = invoke("search-accounts", "a", "--limit", " 2 ", "--json", env=sandbox_env)
    assert found.exit_code == 0, found.output
    assert len(json.loads(found.stdout)) == 2
    planned = invoke("sync", "--dry-run", "--client", f" {data.ACME_CLIENT_ID} ", env=sandbox_env)
    assert planned.exit_code == 0, planned.output
    assert "Acme" in planned.stdout


# -- --month YYYY-MM (history, sync) and a plan's period ------------------------------------


@pytest.mark.parametrize("text", MONTHS_REFUSED)
@pytest.mark.parametrize("command", [["history"], ["sync", "--dry-run"]])
def test_month_takes_ascii_digits_only(invoke, offline, command, text):
    errors = _refused(invoke(*command, "--month", text))
    assert errors[-1] == (
        f"Error: Invalid value for '--month': expected a month like 2026-12 (YYYY-MM), "
        f"got {text!r}."
    )


# -- map --from-csv ------------------------------------------------------------------------

CSV_HEADER = "client_id,account_id,contract_id,contract_service_id\n"


@pytest.mark.parametrize("text", REFUSED)
@pytest.mark.parametrize("column", range(4))
def test_a_mapping_csv_cell_must_be_a_whole_number(invoke, offline, tmp_path, column, text):
    cells = ["101", "29683501", "29684001", "29685100"]
    cells[column] = text
    path = tmp_path / "map.csv"
    path.write_text(CSV_HEADER + ",".join(cells) + "\n", encoding="utf-8")

    result = invoke("map", "--from-csv", str(path))

    errors = _refused(result)
    assert errors[0] == f"Error: 1 bad row in {path}; nothing was written. Fix them and run again:"
    name = CSV_HEADER.strip().split(",")[column]
    kind = "0 or a positive integer" if name == "account_id" else "a positive integer"
    assert f"  line 2: {name} must be {kind}, got {text.strip(' ')!r}" in result.stderr


def test_a_mapping_csv_takes_ascii_digits_with_spaces(
    invoke, config_path, sandbox, sandbox_env, tmp_path
):
    write_config(config_path, make_config(autotask={"username": sandbox.username}))
    path = tmp_path / "map.csv"
    row = [
        data.ACME_CLIENT_ID,
        data.ACME_ACCOUNT_ID,
        data.ACME_CONTRACT_ID,
        data.ACME_CONTRACT_SERVICE_ID,
    ]
    path.write_text(CSV_HEADER + ",".join(f" {cell} " for cell in row) + "\n", encoding="utf-8")

    result = invoke("map", "--from-csv", str(path), env=sandbox_env)

    assert result.exit_code == 0, result.output
    (saved,) = yaml.safe_load(config_path.read_text())["mappings"]
    assert saved["contract_service_id"] == data.ACME_CONTRACT_SERVICE_ID


# -- the numbered picker of map ----------------------------------------------------------


@pytest.fixture
def picker(invoke, config_path, sandbox, sandbox_env, monkeypatch):
    """Map Acme without --contract-service on a terminal: two contract services to pick from."""
    monkeypatch.setattr("infima_autotask.cli._common.can_prompt", lambda: True)
    write_config(config_path, make_config(autotask={"username": sandbox.username}))

    def answer(*lines: str):
        args = ["map", str(data.ACME_CLIENT_ID), "--account", str(data.ACME_ACCOUNT_ID)]
        args += ["--contract", str(data.ACME_CONTRACT_ID)]
        result = invoke(*args, input="".join(f"{line}\n" for line in lines), env=sandbox_env)
        assert result.exit_code == 0, result.output
        listed = [
            line.split() for line in result.stderr.splitlines() if line[:5] in ("  1) ", "  2) ")
        ]
        (saved,) = yaml.safe_load(config_path.read_text())["mappings"]
        chosen = [int(words[1]) for words in listed].index(saved["contract_service_id"]) + 1
        return chosen, result.stderr.count("Type a number from 1 to 2")

    return answer


# Within the picker's 1-2: old code took ١ and ２ for 1 and 2, and raised on ².
PICKER_REFUSED = [*REFUSED, " 12 ", "١", "２", "\u00a01", "+1", "1.0", "0"]


@pytest.mark.parametrize("text", PICKER_REFUSED)
def test_the_picker_asks_again_for_what_is_not_a_whole_number(picker, text):
    chosen, retries = picker(text, "1")
    assert chosen == 1
    assert retries == (0 if text == "" else 1)  # click itself asks again after an empty line


@pytest.mark.parametrize(("text", "expected"), [("1", 1), (" 2 ", 2), ("02", 2), ("\t1", 1)])
def test_the_picker_takes_ascii_digits(picker, text, expected):
    assert picker(text) == (expected, 0)


def test_the_picker_takes_a_listed_id(picker):
    assert picker(f" {data.ACME_BACKUP_CONTRACT_SERVICE_ID} ", "y") == (2, 0)


# -- the counts file -------------------------------------------------------------------------


@pytest.mark.parametrize("text", REFUSED)
@pytest.mark.parametrize("column", ["client_id", "active_users"])
def test_a_counts_file_cell_must_be_a_whole_number(invoke, setup, fake, counts, column, text):
    fake.add_client(101, 10)
    setup({101: 12})
    counts({text: 12} if column == "client_id" else {101: text})

    result = invoke("sync", "--month", PERIOD, "--dry-run")

    errors = _refused(result)
    assert errors[0].startswith("Error: Counts file ") and "has 1 bad row(s)" in errors[0]
    kind = "a positive integer" if column == "client_id" else "a whole number >= 0"
    assert f"  line 2: {column} must be {kind}, got {text.strip(' ')!r}" in result.stderr


def test_a_counts_file_takes_ascii_digits_with_spaces(invoke, setup, fake, counts):
    fake.add_client(101, 10)
    setup({101: 12})
    counts({" 101 ": "\t12 "})

    result = invoke("sync", "--month", PERIOD, "--dry-run", "--json")

    assert result.exit_code == 0, result.output
    (item,) = json.loads(result.stdout)["items"]
    assert (item["client_id"], item["users"]) == (101, 12)


# -- a reviewed plan file (sync --plan) ------------------------------------------------------


@pytest.fixture
def plan(invoke, setup, fake, tmp_path):
    """A plan saved by a dry run (101: 10 -> 12), and a function rewriting one of its values."""
    fake.add_client(101, 10)
    setup({101: 12})
    path = tmp_path / "plan.json"
    assert invoke("sync", "--month", PERIOD, "--dry-run", "--plan-out", str(path)).exit_code == 0
    saved = json.loads(path.read_text(encoding="utf-8"))

    def edit(key: str, value: object):
        document = json.loads(json.dumps(saved))
        if key == "period":
            document["period"] = value
        else:
            document["items"][0][key] = value
        path.write_text(json.dumps(document), encoding="utf-8")
        return invoke("sync", "--plan", str(path))

    return edit


PLAN_NUMBERS_REFUSED = [*ODD, 12.0, 1e3, math.nan, math.inf, int(HUGE), -1, True, None]


@pytest.mark.parametrize("value", PLAN_NUMBERS_REFUSED, ids=repr)
def test_a_plan_value_must_be_a_whole_number(plan, requests_mock, value):
    errors = _refused(plan("users", value))
    assert errors[0].endswith(": an item is missing a value or has a wrong one.")
    assert writes(requests_mock) == []


@pytest.mark.parametrize("text", MONTHS_REFUSED)
def test_a_plan_period_takes_ascii_digits_only(plan, requests_mock, text):
    errors = _refused(plan("period", text))
    assert "is not a plan written by `infima-autotask sync --dry-run --plan-out`" in errors[0]
    assert writes(requests_mock) == []


@pytest.mark.parametrize(("key", "value"), [("users", 12), ("period", " 2026-12 ")])
def test_a_plan_of_ascii_digits_is_written(plan, requests_mock, key, value):
    result = plan(key, value)
    assert result.exit_code == 0, result.output
    assert [w["unitChange"] for w in writes(requests_mock)] == [2]


# -- values Autotask sends ---------------------------------------------------------------------

# Threshold counts may come as text: int() took " 12 " and "+12" before, and still does.
THRESHOLD_TAKEN = [12, 12.0, "12", " 12 ", "+12", "012"]
THRESHOLD_REFUSED = [t for t in ODD if t not in THRESHOLD_TAKEN]
THRESHOLD_REFUSED += [12.5, math.nan, math.inf, int(HUGE), -1, True, None, [12]]


@pytest.mark.parametrize("value", THRESHOLD_REFUSED, ids=repr)
def test_a_threshold_count_must_be_a_whole_number(invoke, setup, fake, requests_mock, value):
    fake.add_client(101, 10)
    setup({101: 12})
    fake.used = value

    errors = _refused(invoke("sync", "--month", PERIOD), code=3)

    assert errors == [
        "Error: Autotask's ThresholdInformation answer is missing its counts; try again later."
    ]
    assert writes(requests_mock) == []


@pytest.mark.parametrize("value", THRESHOLD_TAKEN, ids=repr)
def test_a_threshold_count_of_ascii_digits_is_read(invoke, setup, fake, requests_mock, value):
    fake.add_client(101, 10)
    setup({101: 12})
    fake.used = value
    result = invoke("sync", "--month", PERIOD)
    assert result.exit_code == 0, result.output
    assert [w["unitChange"] for w in writes(requests_mock)] == [2]


UNITS_REFUSED = [*ODD, 12.5, math.nan, math.inf, int(HUGE), -1, True, None]


@pytest.mark.parametrize("value", UNITS_REFUSED, ids=repr)
def test_a_units_row_must_hold_a_whole_number(invoke, setup, fake, requests_mock, value):
    fake.add_client(101, 10)
    fake.row_of(101)["units"] = value
    setup({101: 12})

    errors = _refused(invoke("sync", "--month", PERIOD), code=3)

    assert errors[0].startswith("Error: Autotask sent a ")
    assert writes(requests_mock) == []


@pytest.mark.parametrize("value", [10, 10.0], ids=repr)
def test_a_units_row_of_a_whole_number_is_read(invoke, setup, fake, requests_mock, value):
    fake.add_client(101, 10)
    fake.row_of(101)["units"] = value
    setup({101: 12})
    result = invoke("sync", "--month", PERIOD)
    assert result.exit_code == 0, result.output
    assert [w["unitChange"] for w in writes(requests_mock)] == [2]


# -- the PID in the lock of a running sync -----------------------------------------------------


@pytest.mark.parametrize(
    ("content", "holder"),
    [
        ("²", "another process"),
        ("١٢", "another process"),
        (HUGE, "another process"),
        (" 4242\n", "PID 4242"),
    ],
)
def test_the_lock_holder_is_named_by_an_ascii_pid_only(invoke, setup, state_dir, content, holder):
    setup({101: 12})
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, content.encode())
        errors = _refused(invoke("sync", "--month", PERIOD), code=3)
    finally:
        os.close(fd)
    assert errors[0].startswith(f"Error: Another sync is running ({holder});")


# -- the parser itself -------------------------------------------------------------------------

BIG = 10**40  # beyond 64 bits, to compare with int() on any length of digits


@given(st.text(alphabet="0123456789", min_size=1, max_size=60))
def test_the_parser_agrees_with_int_on_ascii_digits(text):
    assert parse_whole(text, high=10**60) == int(text)
    assert parse_whole(f"-{text}", low=-(10**60), signs="-") == -int(text)
    assert parse_whole(f" {text}\t", high=10**60, spaces=True) == int(text)
    if int(text) <= MAX_INT:
        assert parse_whole(text) == int(text)
    else:
        with pytest.raises(OutOfRangeError):
            parse_whole(text)


_NON_ASCII = st.characters(min_codepoint=0x80)


@given(st.text(alphabet="0123456789 +-"), _NON_ASCII, st.text())
def test_the_parser_refuses_any_non_ascii_character(head, odd, tail):
    with pytest.raises(NotWholeNumberError):
        parse_whole(head + odd + tail, low=-BIG, high=BIG, signs="+-", spaces=True)


@given(st.characters(categories=["Nd", "No"]).filter(lambda c: not c.isascii()))
def test_the_parser_refuses_other_scripts_digits(digit):
    with pytest.raises(NotWholeNumberError):
        parse_whole(digit * 2, low=-BIG, high=BIG, signs="+-", spaces=True)


@pytest.mark.parametrize(
    "text", ["1_000", "+-1", "--1", "+1", "-1", "1.0", "1e3", "", " ", "0x1", "١٢"]
)
def test_the_parser_takes_a_sign_and_spaces_only_when_asked(text):
    with pytest.raises(NotWholeNumberError):
        parse_whole(text)
    if text in ("+1", "-1"):
        assert parse_whole(text, low=-1, signs="+-") == int(text)


def test_the_parser_refuses_thousands_of_digits_without_asking_int():
    with pytest.raises(OutOfRangeError):
        parse_whole("9" * 100_000)
    assert parse_whole("0" * 100_000 + "7") == 7


@pytest.mark.parametrize(
    ("value", "floats", "expected"),
    [(12, False, 12), (12.0, True, 12), (1e3, True, 1000), (0, False, 0)],
)
def test_json_whole_numbers(value, floats, expected):
    assert whole_from_json(value, floats=floats) == expected


@pytest.mark.parametrize(
    "value", [True, False, None, "12", 12.5, math.nan, math.inf, -math.inf, [1], -1, 2**63, 1e19]
)
def test_json_values_that_are_not_whole_numbers(value):
    with pytest.raises(WholeNumberError):
        whole_from_json(value, floats=True)
    with pytest.raises(NotWholeNumberError):
        whole_from_json(12.0)  # a float only when asked
