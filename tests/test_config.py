"""Tests for the config module: strict validation, loading errors, round trip, save."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from infima_autotask import config_yaml, fsutil
from infima_autotask.config import (
    DEFAULT_INFIMA_URL,
    AutotaskSettings,
    ClientMapping,
    Config,
    InfimaSettings,
    SyncSettings,
    config_to_dict,
    dump_config,
    load_config,
    load_config_or_default,
    parse_config,
    save_config,
)
from infima_autotask.errors import ConfigError

EXAMPLE = Path(__file__).parents[1] / "config.example.yaml"


def _mapping(client_id: int = 101, contract_service_id: int = 29685100, **extra):
    entry = {
        "client_id": client_id,
        "account_id": 29683501,
        "contract_id": 29684001,
        "contract_service_id": contract_service_id,
        "service_id": 30012,
    }
    entry.update(extra)
    return entry


def _doc(**top):
    doc = {"version": 1, "mappings": [_mapping()]}
    doc.update(top)
    return doc


def _problems(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "/etc/cfg.yaml")
    assert info.value.exit_code == 2
    assert info.value.message.startswith("Invalid config file /etc/cfg.yaml (")
    assert "infima-autotask validate" in info.value.message
    return info.value.details


def _assert_problem(data, key_path: str, text: str = "") -> None:
    details = _problems(data)
    hits = [line for line in details if line.startswith(f"{key_path}: ")]
    assert hits, details
    assert any(text in line for line in hits), details


def _full_config() -> Config:
    return Config(
        state_dir="/var/lib/infima",
        autotask=AutotaskSettings(
            username="sync-api@example.com",
            integration_code="CODE-1",
            api_url="https://webservices5.autotask.net/atservicesrest/",
            timezone="America/New_York",
        ),
        infima=InfimaSettings(counts_file="/tmp/c.csv", count_users_without_status=True),
        sync=SyncSettings(
            timezone="Europe/Amsterdam",
            overwrite_cost=True,
            unit_cost=1.5,
            max_decrease_percent=25.5,
            max_increase_percent=200,
            allow_zero=True,
            max_api_usage_percent=60,
            prorate=True,
        ),
        mappings=(
            ClientMapping(101, 1, 2, 3, 4, client_name="Acme Dental", note="yes: keep 'this'"),
            ClientMapping(
                102,
                5,
                6,
                7,
                8,
                client_name="Bäckerei Müller ✓",
                account_name="null",
                contract_name="123",
                service_name="true",
                enabled=False,
                exclude_users=3,
                min_units=1,
                max_units=10,
                unit_cost=0,
                overwrite_cost=False,
                prorate=False,
                note="line one\nline two: #not a comment",
            ),
        ),
    )


# --- valid documents -------------------------------------------------------------------


def test_minimal_document_gives_defaults():
    config = parse_config({"version": 1}, "x")
    assert config == Config()
    assert config.infima.api_url == DEFAULT_INFIMA_URL
    assert config.sync.max_decrease_percent == 50
    assert config.sync.max_api_usage_percent == 80
    assert config.mappings == ()


def test_null_sections_and_mappings_give_defaults():
    config = parse_config(
        {"version": 1, "autotask": None, "infima": None, "sync": None, "mappings": None}, "x"
    )
    assert config == Config()


def test_mapping_defaults_and_effective_values():
    config = parse_config(_doc(sync={"overwrite_cost": True, "unit_cost": 2.5}), "x")
    (mapping,) = config.mappings
    assert mapping.enabled is True
    assert mapping.exclude_users == 0
    assert mapping.overwrite_cost is None
    assert mapping.effective_overwrite_cost(config.sync) is True
    assert mapping.effective_unit_cost(config.sync) == 2.5
    own = ClientMapping(1, 1, 1, 1, 1, overwrite_cost=False, unit_cost=0)
    assert own.effective_overwrite_cost(config.sync) is False
    assert own.effective_unit_cost(config.sync) == 0


def test_mapping_overwrite_with_own_cost_is_valid_without_sync_cost():
    config = parse_config(_doc(mappings=[_mapping(overwrite_cost=True, unit_cost=3)]), "x")
    assert config.mappings[0].effective_unit_cost(config.sync) == 3


def test_percent_boundaries_are_accepted():
    sync = {"max_decrease_percent": 0, "max_api_usage_percent": 100, "max_increase_percent": 0}
    config = parse_config(_doc(sync=sync), "x")
    assert config.sync.max_decrease_percent == 0
    assert config.sync.max_api_usage_percent == 100
    sync = {"max_decrease_percent": 100, "max_api_usage_percent": 0.5}
    assert parse_config(_doc(sync=sync), "x").sync.max_api_usage_percent == 0.5


def test_integer_accepted_where_float_expected():
    config = parse_config(_doc(sync={"unit_cost": 2, "overwrite_cost": True}), "x")
    assert config.sync.unit_cost == 2


# --- one test per validation rule -------------------------------------------------------

BAD_DOCUMENTS = [
    # (document, key path, text in the problem)
    (None, "(document)", "the file is empty"),
    ([1, 2], "(document)", "must be a mapping"),
    ("version: 1", "(document)", "must be a mapping"),
    ({"mappings": []}, "version", "missing"),
    (_doc(version=3), "version", "must be 1, or 2 with other PSAs, got 3"),
    (_doc(version="1"), "version", "must be 1, or 2 with other PSAs, got '1'"),
    (_doc(version=True), "version", "must be 1, or 2 with other PSAs, got true"),
    (_doc(version=1.0), "version", "must be 1, or 2 with other PSAs"),
    (_doc(mapings=[]), "mapings", "unknown key; did you mean 'mappings'?"),
    (_doc(zzz=1), "zzz", "unknown key"),
    (_doc(autotask={"user_name": "x"}), "autotask.user_name", "did you mean 'username'?"),
    (_doc(infima={"apiurl": "x"}), "infima.apiurl", "did you mean 'api_url'?"),
    (_doc(sync={"timezon": "UTC"}), "sync.timezon", "did you mean 'timezone'?"),
    (_doc(mappings=[_mapping(clientid=1)]), "mappings[0].clientid", "did you mean 'client_id'?"),
    (_doc(autotask=[1]), "autotask", "must be a mapping of keys, got a list"),
    (_doc(infima="x"), "infima", "must be a mapping of keys"),
    (_doc(sync=5), "sync", "must be a mapping of keys, got 5"),
    (_doc(mappings={"a": 1}), "mappings", "must be a list"),
    (_doc(mappings=[5]), "mappings[0]", "must be a mapping of keys, got 5"),
    (_doc(mappings=[_mapping(), "x"]), "mappings[1]", "must be a mapping of keys, got 'x'"),
    (_doc(state_dir=""), "state_dir", "non-empty string"),
    (_doc(state_dir=5), "state_dir", "got 5"),
    (_doc(autotask={"username": 5}), "autotask.username", "must be a non-empty string"),
    (_doc(autotask={"username": ""}), "autotask.username", "must be a non-empty string"),
    (_doc(autotask={"integration_code": True}), "autotask.integration_code", "got true"),
    (_doc(autotask={"api_url": "ftp://x"}), "autotask.api_url", "http:// or https://"),
    (_doc(autotask={"api_url": "webservices5.autotask.net"}), "autotask.api_url", "https://"),
    (_doc(infima={"api_url": None}), "infima.api_url", "got null"),
    (_doc(infima={"api_url": "app.infimasecapis.com"}), "infima.api_url", "https://"),
    (_doc(infima={"api_url": "https://"}), "infima.api_url", "https://"),
    (_doc(infima={"counts_file": ""}), "infima.counts_file", "non-empty string"),
    (_doc(infima={"counts_file": ["a"]}), "infima.counts_file", "got a list"),
    (
        _doc(infima={"count_users_without_status": "yes"}),
        "infima.count_users_without_status",
        "must be true or false, got 'yes'",
    ),
    (_doc(sync={"timezone": "Mars/Olympus"}), "sync.timezone", "unknown IANA time zone"),
    (_doc(sync={"timezone": "../../etc/passwd"}), "sync.timezone", "unknown IANA time zone"),
    (_doc(sync={"timezone": ""}), "sync.timezone", "unknown IANA time zone"),
    (_doc(sync={"timezone": 5}), "sync.timezone", "must be a string"),
    (_doc(sync={"overwrite_cost": 1}), "sync.overwrite_cost", "must be true or false, got 1"),
    (_doc(sync={"overwrite_cost": True}), "sync.unit_cost", "required when"),
    (_doc(sync={"unit_cost": -1}), "sync.unit_cost", "0 or more"),
    (_doc(sync={"unit_cost": "1.5"}), "sync.unit_cost", "got '1.5'"),
    (_doc(sync={"unit_cost": True}), "sync.unit_cost", "got true"),
    (_doc(sync={"unit_cost": float("inf")}), "sync.unit_cost", "finite"),
    (_doc(sync={"unit_cost": 10**30}), "sync.unit_cost", "too large"),
    (_doc(sync={"max_decrease_percent": 101}), "sync.max_decrease_percent", "from 0 to 100"),
    (_doc(sync={"max_decrease_percent": -1}), "sync.max_decrease_percent", "from 0 to 100"),
    (_doc(sync={"max_decrease_percent": None}), "sync.max_decrease_percent", "got null"),
    (_doc(sync={"max_decrease_percent": float("nan")}), "sync.max_decrease_percent", "finite"),
    (_doc(sync={"max_increase_percent": -0.5}), "sync.max_increase_percent", "0 or more"),
    (_doc(sync={"max_increase_percent": float("inf")}), "sync.max_increase_percent", "finite"),
    (_doc(sync={"allow_zero": None}), "sync.allow_zero", "must be true or false"),
    (_doc(sync={"max_api_usage_percent": 0}), "sync.max_api_usage_percent", "greater than 0"),
    (_doc(sync={"max_api_usage_percent": 100.5}), "sync.max_api_usage_percent", "at most 100"),
    (_doc(sync={"max_api_usage_percent": -5}), "sync.max_api_usage_percent", "greater than 0"),
]

for _key in ("client_id", "account_id", "contract_id", "contract_service_id", "service_id"):
    _missing = _mapping()
    del _missing[_key]
    # Company 0 is the tenant's own organization: account_id may be 0, no other id.
    _kind = "an integer of 0 or more" if _key == "account_id" else "a positive integer"
    BAD_DOCUMENTS += [
        (_doc(mappings=[_missing]), f"mappings[0].{_key}", "missing (required)"),
        (
            _doc(mappings=[_mapping(**{_key: "abc"})]),
            f"mappings[0].{_key}",
            f"must be {_kind}, got 'abc'",
        ),
        (_doc(mappings=[_mapping(**{_key: -1})]), f"mappings[0].{_key}", f"must be {_kind}"),
        (_doc(mappings=[_mapping(**{_key: -3})]), f"mappings[0].{_key}", "got -3"),
        *(
            []
            if _key == "account_id"
            else [(_doc(mappings=[_mapping(**{_key: 0})]), f"mappings[0].{_key}", "got 0")]
        ),
        (_doc(mappings=[_mapping(**{_key: True})]), f"mappings[0].{_key}", "got true"),
        (_doc(mappings=[_mapping(**{_key: 1.0})]), f"mappings[0].{_key}", "got 1.0"),
        (_doc(mappings=[_mapping(**{_key: None})]), f"mappings[0].{_key}", "got null"),
        (_doc(mappings=[_mapping(**{_key: 2**63})]), f"mappings[0].{_key}", "too large"),
    ]

BAD_DOCUMENTS += [
    (_doc(mappings=[_mapping(client_name=5)]), "mappings[0].client_name", "must be a string"),
    (_doc(mappings=[_mapping(account_name=[])]), "mappings[0].account_name", "got a list"),
    (_doc(mappings=[_mapping(contract_name={})]), "mappings[0].contract_name", "got a mapping"),
    (_doc(mappings=[_mapping(service_name=1.5)]), "mappings[0].service_name", "got 1.5"),
    (_doc(mappings=[_mapping(note=True)]), "mappings[0].note", "got true"),
    (_doc(mappings=[_mapping(note="\ud800")]), "mappings[0].note", "UTF-8"),
    (_doc(mappings=[_mapping(enabled="yes")]), "mappings[0].enabled", "true or false"),
    (_doc(mappings=[_mapping(enabled=None)]), "mappings[0].enabled", "got null"),
    (_doc(mappings=[_mapping(exclude_users=-1)]), "mappings[0].exclude_users", "0 or more"),
    (_doc(mappings=[_mapping(exclude_users=None)]), "mappings[0].exclude_users", "got null"),
    (_doc(mappings=[_mapping(exclude_users=1.5)]), "mappings[0].exclude_users", "got 1.5"),
    (_doc(mappings=[_mapping(exclude_users=2**64)]), "mappings[0].exclude_users", "too large"),
    (_doc(mappings=[_mapping(min_units=-1)]), "mappings[0].min_units", "0 or more"),
    (_doc(mappings=[_mapping(max_units=-2)]), "mappings[0].max_units", "got -2"),
    (_doc(mappings=[_mapping(max_units="10")]), "mappings[0].max_units", "got '10'"),
    (
        _doc(mappings=[_mapping(min_units=5, max_units=2)]),
        "mappings[0].min_units",
        "5 is greater than max_units 2",
    ),
    (_doc(mappings=[_mapping(unit_cost=-0.01)]), "mappings[0].unit_cost", "0 or more"),
    (_doc(mappings=[_mapping(unit_cost=float("nan"))]), "mappings[0].unit_cost", "finite"),
    (
        _doc(mappings=[_mapping(overwrite_cost="true")]),
        "mappings[0].overwrite_cost",
        "true, false or null",
    ),
    (_doc(mappings=[_mapping(overwrite_cost=True)]), "mappings[0].unit_cost", "required when"),
    (
        _doc(mappings=[_mapping(), _mapping(contract_service_id=2)]),
        "mappings[1].client_id",
        "duplicate client_id 101, also in mappings[0]",
    ),
    (
        _doc(mappings=[_mapping(), _mapping(client_id=7), _mapping(client_id=8)]),
        "mappings[2].contract_service_id",
        "duplicate contract_service_id 29685100, also in mappings[0]",
    ),
]


@pytest.mark.parametrize(
    ("data", "key_path", "text"),
    BAD_DOCUMENTS,
    ids=[f"{i}-{case[1]}" for i, case in enumerate(BAD_DOCUMENTS)],
)
def test_validation_rule(data, key_path, text):
    _assert_problem(data, key_path, text)


def test_huge_value_is_described_without_crashing():
    _assert_problem(
        _doc(mappings=[_mapping(client_id=10**5000)]),
        "mappings[0].client_id",
        "a very large number",
    )
    long_name = "x" * 10_000
    details = _problems(_doc(state_dir=5, mappings=[_mapping(service_id=long_name)]))
    assert all(len(line) < 200 for line in details)


def test_all_problems_are_reported_at_once():
    data = {
        "version": 3,
        "extra": 1,
        "sync": {"timezone": "Nowhere/City", "max_decrease_percent": 500},
        "mappings": [
            _mapping(contract_id="abc", min_units=9, max_units=1),
            _mapping(),
            "oops",
        ],
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data, "/p/config.yaml")
    details = info.value.details
    expected = [
        "version: must be 1, or 2 with other PSAs, got 3",
        "extra: unknown key",
        "sync.timezone: unknown IANA time zone 'Nowhere/City' (e.g. 'America/New_York')",
        "sync.max_decrease_percent: must be a number from 0 to 100, got 500",
        "mappings[0].contract_id: must be a positive integer, got 'abc'",
        "mappings[0].min_units: 9 is greater than max_units 1",
        "mappings[2]: must be a mapping of keys, got 'oops'",
        "mappings[1].client_id: duplicate client_id 101, also in mappings[0]",
        "mappings[1].contract_service_id: duplicate contract_service_id 29685100, "
        "also in mappings[0]",
    ]
    assert sorted(details) == sorted(expected)
    assert info.value.message == (
        "Invalid config file /p/config.yaml (9 problems); "
        "fix them and run `infima-autotask validate`."
    )


def test_one_problem_is_singular():
    with pytest.raises(ConfigError) as info:
        parse_config({"version": 3}, "/c.yaml")
    assert "(1 problem);" in info.value.message


def test_inherited_overwrite_without_cost_is_reported_once():
    data = _doc(sync={"overwrite_cost": True}, mappings=[_mapping(), _mapping(2, 3)])
    assert _problems(data) == ["sync.unit_cost: required when sync.overwrite_cost is true"]


def test_non_string_key_is_unknown():
    _assert_problem({"version": 1, 5: "x"}, "[5]", "unknown key")


def test_deep_document_is_a_type_error_not_a_crash():
    deep: object = "leaf"
    for _ in range(5000):
        deep = [deep]
    details = _problems({"version": 1, "sync": deep, "mappings": [deep, {"client_id": deep}]})
    assert "sync: must be a mapping of keys, got a list" in details
    assert "mappings[0]: must be a mapping of keys, got a list" in details
    assert "mappings[1].client_id: must be a positive integer, got a list" in details


# --- loading from a file ----------------------------------------------------------------


def _load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.exit_code == 2
    return info.value


def test_load_valid_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "version: 1\nmappings:\n  - {client_id: 1, account_id: 2, contract_id: 3,"
        " contract_service_id: 4, service_id: 5}\n",
        encoding="utf-8",
    )
    assert load_config(path).mappings == (ClientMapping(1, 2, 3, 4, 5),)


def test_load_accepts_utf8_bom(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"\xef\xbb\xbfversion: 1\n")
    assert load_config(path) == Config()


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    error = _load_error(path)
    assert error.message == (
        f"Config file {path} not found. Run `infima-autotask connect` to create it, "
        "or pass --config PATH."
    )


def test_missing_file_or_default(tmp_path):
    assert load_config_or_default(tmp_path / "nope" / "config.yaml") == Config()


def test_or_default_still_rejects_invalid_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("version: 7\n")
    with pytest.raises(ConfigError, match="Invalid config file"):
        load_config_or_default(path)


def test_directory_instead_of_file(tmp_path):
    error = _load_error(tmp_path)
    assert error.message.startswith(f"Config file {tmp_path} is a directory, not a file")


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text("version: 1\n")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)  # chmod 0 does not stop root
    error = _load_error(path)
    assert error.message == (
        f"Config file {path} cannot be read: permission denied. Make it readable by "
        f"this user (chmod 600 {path})."
    )


def test_invalid_utf8(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"version: 1\nstate_dir: caf\xe9\n")
    error = _load_error(path)
    assert error.message.startswith(f"Config file {path} is not valid UTF-8 text")
    assert "line 2" in error.message


def test_empty_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("# only a comment\n\n")
    error = _load_error(path)
    assert error.details == ["(document): the file is empty"]
    assert str(path) in error.message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("version: 1\nmappings:\n  - {client_id: 1, account_id: [2, 3\n", None),
        ('version: 1\nsync:\n  timezone: "Europe/Ams', None),
        ("version: 1\nsync: {a: 1\n  b: 2\n", None),
        ("version: 1\n  bad indent: 2\n", 2),
        ("version: 1\nnote: \x01\n", 2),
    ],
)
def test_truncated_or_invalid_yaml(tmp_path, text, line):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    error = _load_error(path)
    assert error.message.startswith(f"Config file {path} is not valid YAML (line ")
    assert "Traceback" not in error.message
    if line is not None:
        assert f"(line {line}" in error.message


def test_truncated_at_any_point_never_crashes(tmp_path):
    full = EXAMPLE.read_text(encoding="utf-8")
    path = tmp_path / "config.yaml"
    complete = load_config(EXAMPLE).mappings
    outcomes = {"error": 0, "loaded": 0}
    for cut in range(0, len(full), 7):
        path.write_text(full[:cut], encoding="utf-8")
        try:
            config = load_config(path)
        except ConfigError as exc:
            assert str(path) in exc.message
            outcomes["error"] += 1
        else:  # a cut between two complete mappings is a valid, shorter file
            ids = [m.client_id for m in config.mappings]
            assert ids == [m.client_id for m in complete][: len(ids)]
            outcomes["loaded"] += 1
    assert outcomes["error"] > 0
    assert outcomes["loaded"] > 0


def test_deeply_nested_yaml_does_not_crash(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("version: 1\nsync: " + "[" * 50_000 + "]" * 50_000 + "\n")
    error = _load_error(path)
    assert str(path) in error.message


def test_alias_bomb_is_a_type_error(tmp_path):
    lines = ["version: 1", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 12):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    lines.append("mappings: [*a11, *a11]")
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    error = _load_error(path)
    assert "mappings[0]: must be a mapping of keys, got a list" in error.details
    assert "a11: unknown key" in error.details


def test_huge_integer_literal(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("version: 1\nstate_dir: " + "9" * 6000 + "\n")
    error = _load_error(path)
    assert error.message.startswith(f"Config file {path} holds a value that cannot be read")


def test_duplicate_yaml_keys(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "version: 1\n"
        "sync:\n"
        "  allow_zero: false\n"
        "  allow_zero: true\n"
        "mappings:\n"
        "  - client_id: 1\n"
        "    account_id: 2\n"
        "    contract_id: 3\n"
        "    contract_service_id: 4\n"
        "    service_id: 5\n"
        "    client_id: 6\n"
        "version: 1\n"
    )
    error = _load_error(path)
    assert sorted(error.details) == sorted(
        [
            "sync.allow_zero: duplicate key (lines 3 and 4); keep only one",
            "mappings[0].client_id: duplicate key (lines 6 and 11); keep only one",
            "version: duplicate key (lines 1 and 12); keep only one",
        ]
    )
    assert "(3 problems)" in error.message


def test_duplicate_keys_reported_with_other_problems(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("version: 1\nsync: {timezone: UTC, timezone: Nowhere/X}\n")
    error = _load_error(path)
    assert "sync.timezone: duplicate key (line 2); keep only one" in error.details
    assert any(d.startswith("sync.timezone: unknown IANA") for d in error.details)


def test_example_config_loads():
    config = load_config(EXAMPLE)
    assert [m.client_id for m in config.mappings] == [101, 117]
    assert config.autotask.username == "sync-api@example.com"
    assert config.autotask.integration_code == "REPLACE-WITH-TRACKING-IDENTIFIER"
    assert config.infima.api_url == DEFAULT_INFIMA_URL


def test_example_config_has_every_key_in_spec_order():
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    reference = config_to_dict(load_config(EXAMPLE))
    assert list(data) == list(reference)
    for section in ("autotask", "infima", "sync"):
        assert list(data[section]) == list(reference[section])
    for entry, ref in zip(data["mappings"], reference["mappings"], strict=True):
        assert list(entry) == list(ref)


# --- Config helpers ---------------------------------------------------------------------


def test_mapping_for_with_and_without_mapping():
    config = _full_config()
    assert config.mapping_for(102).client_name == "Bäckerei Müller ✓"
    assert config.mapping_for(999) is None
    changed = config.with_mapping(ClientMapping(101, 9, 9, 9, 9))
    assert [m.client_id for m in changed.mappings] == [101, 102]
    assert changed.mapping_for(101).account_id == 9
    assert config.mapping_for(101).account_id == 1  # the original is unchanged
    added = config.with_mapping(ClientMapping(50, 9, 9, 99, 9))
    assert [m.client_id for m in added.mappings] == [101, 102, 50]
    removed = config.without_mapping(101)
    assert [m.client_id for m in removed.mappings] == [102]
    with pytest.raises(KeyError):
        config.without_mapping(999)


def test_integration_code_in_repr():
    assert "CODE-1" in repr(_full_config().autotask)


# --- writing ----------------------------------------------------------------------------


def test_config_to_dict_key_order_and_nulls():
    data = config_to_dict(Config(mappings=(ClientMapping(1, 2, 3, 4, 5),)))
    assert list(data) == ["version", "state_dir", "autotask", "infima", "sync", "mappings"]
    assert data["autotask"] == {
        "username": None,
        "integration_code": None,
        "api_url": None,
        "timezone": None,
    }
    assert list(data["infima"]) == ["api_url", "counts_file", "count_users_without_status"]
    assert list(data["sync"]) == [
        "timezone",
        "overwrite_cost",
        "unit_cost",
        "max_decrease_percent",
        "max_increase_percent",
        "allow_zero",
        "max_api_usage_percent",
        "prorate",
    ]
    assert list(data["mappings"][0]) == [
        "client_id",
        "client_name",
        "account_id",
        "account_name",
        "contract_id",
        "contract_name",
        "contract_service_id",
        "service_id",
        "service_name",
        "enabled",
        "exclude_users",
        "min_units",
        "max_units",
        "unit_cost",
        "overwrite_cost",
        "prorate",
        "note",
    ]
    assert data["mappings"][0]["note"] is None
    text = dump_config(Config())
    assert "state_dir: null\n" in text
    assert "max_increase_percent: null\n" in text


@pytest.mark.parametrize(
    "config",
    [Config(), _full_config(), load_config(EXAMPLE)],
    ids=["default", "full", "example"],
)
def test_round_trip(config):
    text = dump_config(config)
    assert parse_config(yaml.safe_load(text), "x") == config


def test_dump_keeps_unicode_readable():
    assert "client_name: Bäckerei Müller ✓\n" in dump_config(_full_config())


def test_save_and_load_round_trip(tmp_path):
    path = tmp_path / "config.yaml"
    save_config(_full_config(), path)
    assert load_config(path) == _full_config()


def test_save_replaces_via_os_replace(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    save_config(Config(), path)
    calls = []
    real_replace = os.replace

    def spy(src, dst):
        calls.append((Path(src).parent, Path(dst)))
        assert Path(src).read_text(encoding="utf-8") == dump_config(_full_config())
        real_replace(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", spy)
    save_config(_full_config(), path)
    assert calls == [(tmp_path, path)]


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    save_config(_full_config(), path)
    before = path.read_bytes()

    def broken(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsutil.os, "fsync", broken)
    with pytest.raises(ConfigError) as info:
        save_config(Config(), path)
    assert info.value.message.startswith(f"Cannot write config file {path}: No space left")
    assert info.value.exit_code == 2
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["config.yaml"]


def test_save_onto_directory_is_a_config_error(tmp_path):
    target = tmp_path / "config.yaml"
    target.mkdir()
    with pytest.raises(ConfigError) as info:
        save_config(Config(), target)
    assert info.value.message == (
        f"Cannot write config file {target}: it is a directory. Pass --config with the "
        "path of a file."
    )
    assert info.value.exit_code == 2


def test_save_into_read_only_folder(tmp_path, monkeypatch):
    def denied(**kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fsutil.tempfile, "mkstemp", denied)  # root ignores chmod
    with pytest.raises(ConfigError) as info:
        save_config(Config(), tmp_path / "config.yaml")
    assert info.value.message == (
        f"Cannot write config file {tmp_path / 'config.yaml'}: Permission denied. Check that "
        "its folder is writable, or pass --config PATH."
    )


def test_save_refuses_invalid_config(tmp_path):
    path = tmp_path / "config.yaml"
    bad = Config(mappings=(ClientMapping(1, 1, 1, 1, 1), ClientMapping(1, 2, 2, 2, 2)))
    with pytest.raises(ConfigError) as info:
        save_config(bad, path)
    assert "mappings[1].client_id: duplicate client_id 1, also in mappings[0]" in (
        info.value.details
    )
    assert not path.exists()


def test_save_keeps_symlink(tmp_path):
    real = tmp_path / "dotfiles" / "config.yaml"
    save_config(Config(), real)
    link = tmp_path / "config.yaml"
    link.symlink_to(real)
    save_config(_full_config(), link)
    assert link.is_symlink()
    assert load_config(real) == _full_config()


def test_save_keeps_other_mappings(tmp_path):
    path = tmp_path / "config.yaml"
    save_config(load_config(EXAMPLE), path)
    before = yaml.safe_load(path.read_text(encoding="utf-8"))
    config = load_config(path)
    changed = config.with_mapping(
        ClientMapping(101, 1, 2, 3, 4, client_name="Acme", exclude_users=1)
    ).with_mapping(ClientMapping(300, 5, 6, 7, 8))
    save_config(changed, path)
    after = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert after["mappings"][1] == before["mappings"][1]  # untouched, key for key
    assert list(after["mappings"][1]) == list(before["mappings"][1])
    assert after["mappings"][0]["client_id"] == 101
    assert after["mappings"][2]["client_id"] == 300
    rest_before = {k: v for k, v in before.items() if k != "mappings"}
    rest_after = {k: v for k, v in after.items() if k != "mappings"}
    assert rest_after == rest_before
    removed = load_config(path).without_mapping(101)
    save_config(removed, path)
    final = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert final["mappings"] == after["mappings"][1:]


def test_parse_does_not_mutate_input():
    data = _doc(sync={"timezone": "UTC"})
    snapshot = copy.deepcopy(data)
    parse_config(data, "x")
    assert data == snapshot


# --- reading YAML: libyaml or PyYAML's own parser, the same document ----------------------
#
# config_yaml reads like yaml.safe_load plus a duplicate-key check. Its node tree is composed
# by libyaml when PyYAML has it (config_yaml._COMPOSER), else by PyYAML's pure-Python parser:
# both must give the same document and the same duplicate-key problems. Swapping _COMPOSER is
# the one seam these tests patch.

_PURE = yaml.SafeLoader


def _loaded(text: str, composer=None):
    """What `config_yaml.load` gives: ("ok", repr of the data, duplicates) or the error."""
    with mock.patch.object(config_yaml, "_COMPOSER", composer or config_yaml._COMPOSER):
        try:
            data, duplicates = config_yaml.load(text, Path("/c.yaml"))
        except ConfigError as exc:
            return ("error", exc.message)
    return ("ok", repr(data), duplicates)


def _large_text(count: int) -> str:
    mappings = [
        _mapping(
            i,
            40_000 + i,
            client_name=f"Client {i} é✓",
            unit_cost=2.5 if i % 3 else None,
            enabled=i % 7 != 0,
            note="multi\nline" if i % 11 == 0 else None,
        )
        for i in range(1, count + 1)
    ]
    doc = {"version": 1, "sync": {"timezone": "UTC", "max_decrease_percent": 25}}
    doc["mappings"] = mappings
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML built without libyaml")
def test_libyaml_composes_the_config_when_pyyaml_has_it(tmp_path, monkeypatch):
    assert config_yaml._COMPOSER is yaml.CSafeLoader

    def no_pure_parser(self):
        raise AssertionError("composed by the pure-Python parser")

    monkeypatch.setattr(yaml.composer.Composer, "get_single_node", no_pure_parser)
    assert load_config(EXAMPLE).mappings
    monkeypatch.setattr(config_yaml, "_COMPOSER", _PURE)
    with pytest.raises(AssertionError, match="pure-Python parser"):
        load_config(EXAMPLE)


def test_pure_python_parser_is_used_without_libyaml():
    code = (
        "import yaml; del yaml.CSafeLoader\n"
        "from infima_autotask import config_yaml\n"
        "print(config_yaml._COMPOSER.__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, "SafeLoader\n"), done.stderr


def test_large_config_reads_the_same_with_either_parser(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text(_large_text(500), encoding="utf-8")
    config = load_config(path)
    assert [m.client_id for m in config.mappings] == list(range(1, 501))
    assert config.mappings[10].note == "multi\nline"
    assert config.mappings[1].unit_cost == 2.5 and config.mappings[2].unit_cost is None
    assert config.mappings[0].client_name == "Client 1 é✓"
    assert config.sync.max_decrease_percent == 25
    monkeypatch.setattr(config_yaml, "_COMPOSER", _PURE)
    assert load_config(path) == config


def test_duplicate_keys_are_the_same_error_with_either_parser(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text(
        "version: 1\nsync:\n  timezone: UTC\n  allow_zero: false\n  timezone: Europe/Paris\n"
        "mappings: []\nversion: 1\n",
        encoding="utf-8",
    )
    first = _load_error(path)
    assert first.message == (
        f"Invalid config file {path} (2 problems); fix them and run `infima-autotask validate`."
    )
    assert first.details == [
        "version: duplicate key (lines 1 and 7); keep only one",
        "sync.timezone: duplicate key (lines 3 and 5); keep only one",
    ]
    monkeypatch.setattr(config_yaml, "_COMPOSER", _PURE)
    second = _load_error(path)
    assert (second.message, second.details) == (first.message, first.details)


# Documents safe_load reads: every scalar type and tag, anchors and aliases (shared, recursive,
# merged), duplicate keys. Either parser gives the same data and duplicates.
_READABLE = [
    "",
    "# only a comment\n",
    "---\n",
    "--- ~\n...\n",
    "just text\n",
    "- 1\n- [2, {a: b}]\n",
    (
        "a: 1\nb: -1.5e3\nc: true\nd: ~\ne: 2001-12-14\nf: 2001-12-14t21:59:43.10-05:00\n"
        "g: !!binary aGVsbG8=\nh: !!str 12\ni: '1'\nj: 0x1F\nk: .inf\nl: 1_000\nm: !!float 3\n"
        'n: "q\\u00e9"\no: |\n  text\np: ! 12\nq: 0o17\nr: .NaN\ns: 190:20:30\nt: !!null x\n'
    ),
    "1: a\ntrue: b\n1.0: c\n~: d\nnull: e\n2001-12-14: f\n'=': g\n'<<': h\n",
    "base: &b {x: 1, y: [1, 2]}\nother: *b\nlist: [&s 5, *s, *b]\n",
    "a: &a [1, 2]\nb: &b [*a, *a]\nc: [*b, *b]\nversion: &v 1\nagain: *v\n",
    "version: 1\nversion: 2\nsync: {timezone: UTC, timezone: X, timezone: Y}\n",
    "? a\n: 1\n? a\n: 2\n",
    "a: " + "[" * 99 + "]" * 99 + "\n",
    "a: " + "[" * 150 + "]" * 150 + "\n",
    "base: &b {x: 1, y: 2}\nm: {<<: *b, y: 3}\n",
    "a: &a {x: 1}\nb: &b {x: 2, y: 2}\nm:\n  <<: [*a, *b]\n  z: 3\n",
    "version: 1\nmappings: [{<<: {client_id: 1}, client_id: 1}]\n",
    "<<: {version: 1}\n",
    "b: &b {x: 1, x: 2}\nother: *b\n",
    "a: &a [*a]\n",
    "a: &a {self: *a}\n",
    "a: !!set {x, y}\nb: !!omap [{k: 1}, {j: 2}]\nc: !!pairs [{k: 1}, {k: 2}]\n",
    "a: &k x\nb: {*k: 1}\n",
]

# Not readable: a ConfigError with either parser (libyaml words syntax errors its own way).
_UNREADABLE = [
    "a: !!str [1]\n",
    "a: !!map [1]\n",
    "a: !!int ''\n",
    "? !!set x\n: 1\n",
    "a: !!seq {x: 1}\n",
    "version: !!python/object:os.system ls\n",
    "version: !!python/name:os.system\n",
    "version: !local x\n",
    "a: *nope\n",
    "a: &x 1\nb: &x 2\n",
    "--- 1\n--- 2\n",
    "? [a]\n: 1\n",
    "? {a: 1}\n: 1\n",
    "=: 1\n",
    "a: <<\n",
    "version: 2001-13-45\n",
    "version: " + "9" * 6000 + "\n",
    "version: !!binary é\n",
    "a: " + "[" * 1200 + "]" * 1200 + "\n",
    "a: [1\n",
    "a: b: c\n",
    "a: \x01\n",
    "\ta: 1\n",
]


@pytest.mark.parametrize("text", _READABLE)
def test_either_parser_reads_the_same_document(text):
    expected = _loaded(text)
    assert expected[0] == "ok"
    assert _loaded(text, _PURE) == expected
    if not expected[2]:  # without duplicates, exactly what yaml.safe_load reads
        assert expected[1] == repr(yaml.safe_load(text))


@pytest.mark.parametrize("text", _UNREADABLE)
def test_either_parser_reports_unreadable_yaml_as_a_config_error(text):
    assert _loaded(text)[0] == "error"
    assert _loaded(text, _PURE)[0] == "error"


def test_merge_keys_shared_anchors_and_errors_read_as_before():
    merged = config_yaml.load("base: &b {x: 1, y: 2}\nm: {<<: *b, y: 3}\n", Path("c"))
    assert merged == ({"base": {"x": 1, "y": 2}, "m": {"x": 1, "y": 3}}, [])
    # A shared anchor is reported under the path it is first reached by (the alias).
    shared = config_yaml.load("b: &b {x: 1, x: 2}\nother: *b\n", Path("c"))
    assert shared[1] == ["other.x: duplicate key (line 1); keep only one"]
    with pytest.raises(ConfigError) as info:
        config_yaml.load("--- 1\n--- 2\n", Path("/c.yaml"))
    assert info.value.message == (
        "Config file /c.yaml is not valid YAML (line 2, column 1): but found another document. "
        "Fix it and run `infima-autotask validate`."
    )
    with pytest.raises(ConfigError) as info:
        config_yaml.load("version: !!python/object:os.system ls\n", Path("/c.yaml"))
    assert "could not determine a constructor for the tag" in info.value.message


def test_duplicate_keys_reported_breadth_first_as_before():
    text = (
        "a:\n"
        "  b:\n"
        "    c: 1\n"
        "    c: 2\n"
        "  b2: {d: 1, d: 1}\n"
        "  b: 3\n"
        'x: [{e: 1, e: 2}, {"odd\\nkey": {f: 1, f: 2}}]\n'
        "a: 4\n"
        "1: {g: 1, g: 1}\n"
    )
    expected = [
        "a: duplicate key (lines 1 and 8); keep only one",
        "a.b: duplicate key (lines 2 and 6); keep only one",
        "1.g: duplicate key (line 9); keep only one",
        "a.b.c: duplicate key (lines 3 and 4); keep only one",
        "a.b2.d: duplicate key (line 5); keep only one",
        "x[0].e: duplicate key (line 7); keep only one",
        "x[1]['odd\\nkey'].f: duplicate key (line 7); keep only one",
    ]
    assert _loaded(text)[2] == expected
    assert _loaded(text, _PURE)[2] == expected


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        # PyYAML's own constructors raise IndexError, KeyError, AttributeError on these.
        (
            "version: !!int ''\n",
            "line 1, column 10",
            "could not read the value as the tag 'tag:yaml.org,2002:int'",
        ),
        (
            "version: !!float\n",
            "line 1, column 10",
            "could not read the value as the tag 'tag:yaml.org,2002:float'",
        ),
        (
            "sync:\n  allow_zero: !!bool maybe\n",
            "line 2, column 15",
            "could not read the value as the tag 'tag:yaml.org,2002:bool'",
        ),
        (
            "version: !!timestamp soon\n",
            "line 1, column 10",
            "could not read the value as the tag 'tag:yaml.org,2002:timestamp'",
        ),
        # A mapping tag on a list; a key that is an (unhashable) empty set.
        ("sync: !!map [1]\n", "line 1, column 7", "expected a mapping node, but found sequence"),
        (
            "version: !!set [1]\n",
            "line 1, column 10",
            "expected a mapping node, but found sequence",
        ),
        ("? !!set x\n: 1\n", "line 1, column 3", "found unhashable key"),
    ],
)
def test_malformed_tagged_values_are_config_errors_not_tracebacks(tmp_path, text, where, problem):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    error = _load_error(path)
    assert error.message == (
        f"Config file {path} is not valid YAML ({where}): {problem}. Fix it and run "
        "`infima-autotask validate`."
    )


def test_deep_nesting_is_a_config_error_not_a_recursion_error(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("version: 1\nsync: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n")
    error = _load_error(path)
    assert error.message.startswith(f"Config file {path} is not valid YAML (line 2")


_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=6),
    st.sampled_from(["0x1f", "1_000", ".inf", "yes", "2001-12-14", "=", "<<", "*a", "&a", "- a"]),
)
_KEY = st.one_of(
    st.sampled_from(["a", "b", "1", "true", "~", "client_id", "x y"]),
    st.integers(-2, 2),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)
_TOKENS = [
    "a",
    "1",
    "<<",
    "=",
    "&a",
    "*a",
    "!!str",
    "!!int",
    "!!set",
    "!foo",
    "? ",
    ": ",
    "\n",
    "\n  ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ", ",
    "'q'",
    "---",
    "~",
    "a: 1",
    "b: {a: 1, a: 2}",
]


@st.composite
def _yaml_texts(draw):
    """YAML with shared (anchored) parts, then line-level damage: duplicates, stray tokens."""
    pool: list = []

    def value(depth: int):
        kind = draw(st.integers(0, 4 if depth < 3 else 1))
        if kind <= 1:
            return draw(_SCALAR)
        if kind == 2 and pool:
            return draw(st.sampled_from(pool))
        if kind == 3:
            made: object = [value(depth + 1) for _ in range(draw(st.integers(0, 3)))]
        else:
            made = {draw(_KEY): value(depth + 1) for _ in range(draw(st.integers(0, 3)))}
        pool.append(made)
        return made

    flow = draw(st.sampled_from([False, None, True]))
    text = yaml.safe_dump(value(0), sort_keys=False, allow_unicode=True, default_flow_style=flow)
    lines = text.split("\n")
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.sampled_from(["duplicate", "insert", "indent"]))
        if edit == "duplicate":
            lines.insert(at, lines[at])
        elif edit == "insert":
            lines.insert(at, draw(st.sampled_from(_TOKENS)) + draw(st.sampled_from(_TOKENS)))
        else:
            lines[at] = "  " + lines[at]
    return "\n".join(lines)


@given(text=_yaml_texts())
def test_either_parser_reads_generated_yaml_alike(text):
    fast = _loaded_or_crash(text)
    pure = _loaded_or_crash(text, _PURE)
    assert fast[0] != "crash" and pure[0] != "crash", (fast, pure)
    if fast[0] == "ok" and pure[0] == "ok":
        assert fast == pure


def _loaded_or_crash(text: str, composer=None):
    try:
        return _loaded(text, composer)
    except Exception as exc:
        return ("crash", type(exc).__name__)
