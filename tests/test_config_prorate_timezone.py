"""The keys added after 0.1 (SPEC §6): autotask.timezone, sync.prorate, mapping prorate,
and account_id 0. A config file written before them must stay valid."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from infima_autotask.config import (
    ClientMapping,
    Config,
    SyncSettings,
    load_config,
    parse_config,
    save_config,
)
from infima_autotask.errors import ConfigError

# A config file as 0.1 wrote it: every key of the time, none of the new ones.
OLD_FILE = textwrap.dedent(
    """\
    version: 1
    state_dir: /var/lib/infima-autotask
    autotask:
      username: sync-api@example.com
      integration_code: CODE-1
      api_url: https://webservices5.autotask.net/atservicesrest/
    infima:
      api_url: https://app.infimasecapis.com
      counts_file: null
      count_users_without_status: false
    sync:
      timezone: America/New_York
      overwrite_cost: true
      unit_cost: 1.25
      max_decrease_percent: 40
      max_increase_percent: 300
      allow_zero: true
      max_api_usage_percent: 70
    mappings:
    - client_id: 101
      client_name: Acme Dental
      account_id: 29683501
      account_name: Acme Dental LLC
      contract_id: 29684001
      contract_name: Managed Services 2026
      contract_service_id: 29685100
      service_id: 30012
      service_name: INFIMA Security Awareness Training
      enabled: true
      exclude_users: 2
      min_units: 10
      max_units: null
      unit_cost: 1.75
      overwrite_cost: true
      note: keep me
    """
)


def _mapping(**extra: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "client_id": 101,
        "account_id": 29683501,
        "contract_id": 29684001,
        "contract_service_id": 29685100,
        "service_id": 30012,
    }
    entry.update(extra)
    return entry


def _doc(**top: object) -> dict[str, object]:
    doc: dict[str, object] = {"version": 1, "mappings": [_mapping()]}
    doc.update(top)
    return doc


def _details(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "/etc/cfg.yaml")
    return info.value.details


# --- an existing file ------------------------------------------------------------------


def test_file_without_the_new_keys_loads_with_their_defaults(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(OLD_FILE, encoding="utf-8")
    config = load_config(path)
    assert config.autotask.timezone is None
    assert config.sync.prorate is False
    (mapping,) = config.mappings
    assert mapping.prorate is None
    assert mapping.effective_prorate(config.sync) is False


def test_file_without_the_new_keys_saves_them_with_defaults_and_keeps_the_rest(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(OLD_FILE, encoding="utf-8")
    before = yaml.safe_load(OLD_FILE)
    save_config(load_config(path), path)
    after = yaml.safe_load(path.read_text(encoding="utf-8"))

    assert after["autotask"] == {**before["autotask"], "timezone": None}
    assert list(after["autotask"]) == ["username", "integration_code", "api_url", "timezone"]
    assert after["sync"] == {**before["sync"], "prorate": False}
    assert list(after["sync"])[-2:] == ["max_api_usage_percent", "prorate"]
    (old_entry,) = before["mappings"]
    (new_entry,) = after["mappings"]
    assert new_entry == {**old_entry, "prorate": None}
    keys = list(new_entry)
    assert keys[keys.index("overwrite_cost") + 1 : keys.index("note")] == ["prorate"]
    for key in ("version", "state_dir", "infima"):
        assert after[key] == before[key]
    # and the saved file loads back to the config the old file gave
    path.write_text(OLD_FILE, encoding="utf-8")
    old = load_config(path)
    save_config(old, path)
    assert load_config(path) == old


# --- valid values ----------------------------------------------------------------------


def test_new_keys_are_read():
    config = parse_config(
        _doc(
            autotask={"timezone": "Australia/Sydney"},
            sync={"prorate": True},
            mappings=[_mapping(prorate=False), _mapping(client_id=102, contract_service_id=2)],
        ),
        "x",
    )
    assert config.autotask.timezone == "Australia/Sydney"
    assert config.sync.prorate is True
    own, inherited = config.mappings
    assert own.prorate is False
    assert own.effective_prorate(config.sync) is False
    assert inherited.prorate is None
    assert inherited.effective_prorate(config.sync) is True


@pytest.mark.parametrize(
    ("own", "default", "effective"),
    [(None, False, False), (None, True, True), (True, False, True), (False, True, False)],
)
def test_effective_prorate(own, default, effective):
    mapping = ClientMapping(1, 2, 3, 4, 5, prorate=own)
    assert mapping.effective_prorate(SyncSettings(prorate=default)) is effective


def test_null_timezone_and_null_mapping_prorate_are_accepted():
    config = parse_config(_doc(autotask={"timezone": None}, mappings=[_mapping(prorate=None)]), "x")
    assert config.autotask.timezone is None
    assert config.mappings[0].prorate is None


def test_account_id_zero_is_accepted():
    config = parse_config(_doc(mappings=[_mapping(account_id=0)]), "x")
    assert config.mappings[0].account_id == 0


# --- bad values, reported with their key paths ------------------------------------------


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (
            _doc(autotask={"timezone": "Mars/Olympus"}),
            "autotask.timezone: unknown IANA time zone 'Mars/Olympus' (e.g. 'America/New_York')",
        ),
        (_doc(autotask={"timezone": ""}), "autotask.timezone: unknown IANA time zone ''"),
        (_doc(autotask={"timezone": "../../etc/passwd"}), "autotask.timezone: unknown IANA"),
        (_doc(autotask={"timezone": 5}), "autotask.timezone: must be a string or null, got 5"),
        (_doc(sync={"prorate": "yes"}), "sync.prorate: must be true or false, got 'yes'"),
        (_doc(sync={"prorate": None}), "sync.prorate: must be true or false, got null"),
        (_doc(sync={"prorate": 1}), "sync.prorate: must be true or false, got 1"),
        (
            _doc(mappings=[_mapping(prorate="true")]),
            "mappings[0].prorate: must be true, false or null, got 'true'",
        ),
        (
            _doc(mappings=[_mapping(account_id=-1)]),
            "mappings[0].account_id: must be an integer of 0 or more, got -1",
        ),
        (
            _doc(mappings=[_mapping(account_id=True)]),
            "mappings[0].account_id: must be an integer of 0 or more, got true",
        ),
        (_doc(autotask={"time_zone": "UTC"}), "autotask.time_zone: unknown key; did you mean"),
        (_doc(sync={"prorated": True}), "sync.prorated: unknown key; did you mean 'prorate'?"),
    ],
)
def test_bad_values_name_their_key_path(data, line):
    details = _details(data)
    assert any(d.startswith(line) for d in details), details


@pytest.mark.parametrize("key", ["client_id", "contract_id", "contract_service_id", "service_id"])
def test_other_ids_stay_positive(key):
    details = _details(_doc(mappings=[_mapping(**{key: 0})]))
    assert f"mappings[0].{key}: must be a positive integer, got 0" in details


def test_new_key_problems_are_reported_together():
    details = _details(
        _doc(
            autotask={"timezone": "Nowhere/Land"},
            sync={"prorate": "no"},
            mappings=[_mapping(prorate=0, account_id=-5)],
        )
    )
    assert [d.split(":")[0] for d in details] == [
        "autotask.timezone",
        "sync.prorate",
        "mappings[0].account_id",
        "mappings[0].prorate",
    ]


# --- writing ---------------------------------------------------------------------------


def test_save_load_round_trip_keeps_the_new_keys(tmp_path):
    path = tmp_path / "config.yaml"
    config = parse_config(
        _doc(
            autotask={"username": "u@example.com", "timezone": "Pacific/Auckland"},
            sync={"prorate": True},
            mappings=[
                _mapping(account_id=0, prorate=False),
                _mapping(client_id=102, contract_service_id=2, prorate=True),
                _mapping(client_id=103, contract_service_id=3),
            ],
        ),
        "x",
    )
    save_config(config, path)
    text = path.read_text(encoding="utf-8")
    assert "  timezone: Pacific/Auckland\n" in text
    assert "  prorate: true\n" in text
    assert "  account_id: 0\n" in text
    loaded = load_config(path)
    assert loaded == config
    assert loaded.autotask.timezone == "Pacific/Auckland"
    assert loaded.sync.prorate is True
    assert [m.prorate for m in loaded.mappings] == [False, True, None]
    assert loaded.mappings[0].account_id == 0


def test_save_refuses_bad_new_values(tmp_path):
    path = tmp_path / "config.yaml"
    bad = Config(mappings=(ClientMapping(1, -1, 2, 3, 4),))
    with pytest.raises(ConfigError) as info:
        save_config(bad, path)
    assert "mappings[0].account_id: must be an integer of 0 or more, got -1" in info.value.details
    assert not path.exists()
