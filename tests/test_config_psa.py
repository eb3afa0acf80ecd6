"""Config version 2 (SPEC §10): mappings of other PSAs, in each PSA's own words."""

from __future__ import annotations

import pytest
import yaml

from infima_autotask.config import (
    CONNECTWISE,
    HALO,
    ClientMapping,
    ConnectWiseSettings,
    load_config,
    parse_config,
    save_config,
)
from infima_autotask.errors import ConfigError

AUTOTASK_LINE = {
    "client_id": 101,
    "account_id": 29683501,
    "contract_id": 29684001,
    "contract_service_id": 29685100,
    "service_id": 30012,
}
CW_LINE = {
    "client_id": 110,
    "psa": "connectwise",
    "account_id": 250,
    "agreement_id": 3311,
    "addition_id": 88412,
    "product_id": 77,
    "product_name": "INFIMA SAT",
}
HALO_LINE = {"client_id": 111, "psa": "halo", "account_id": 45, "subscription_id": 9127}
CW_SECTION = {
    "site": "na.myconnectwise.net",
    "company_id": "acme",
    "public_key": "pub",
    "client_id": "00000000-0000-0000-0000-000000000001",
}


def problems(doc: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(doc, "/c.yaml")
    return info.value.details


def test_a_version_2_file_holds_each_psa_in_its_own_words(tmp_path):
    doc = {
        "version": 2,
        "connectwise": CW_SECTION,
        "mappings": [AUTOTASK_LINE, CW_LINE, HALO_LINE],
    }
    config = parse_config(doc, "/c.yaml")
    autotask, cw, halo = config.mappings
    assert autotask.psa == "autotask" and autotask.contract_service_id == 29685100
    assert (cw.psa, cw.account_id, cw.contract_id, cw.contract_service_id, cw.service_id) == (
        CONNECTWISE,
        250,
        3311,
        88412,
        77,
    )
    assert cw.service_name == "INFIMA SAT"
    assert (halo.psa, halo.account_id, halo.contract_service_id) == (HALO, 45, 9127)
    assert config.connectwise == ConnectWiseSettings(**CW_SECTION)

    path = tmp_path / "config.yaml"
    save_config(config, path)
    written = yaml.safe_load(path.read_text())
    assert written["version"] == 2
    assert written["mappings"][1]["addition_id"] == 88412
    assert "contract_service_id" not in written["mappings"][1]
    assert "overwrite_cost" not in written["mappings"][2]  # nothing Halo cannot honour
    assert load_config(path) == config


def test_a_version_1_file_stays_as_it_was(tmp_path):
    path = tmp_path / "config.yaml"
    config = parse_config({"version": 1, "mappings": [AUTOTASK_LINE]}, "/c.yaml")
    save_config(config, path)
    written = yaml.safe_load(path.read_text())
    assert written["version"] == 1
    assert "psa" not in written["mappings"][0] and "connectwise" not in written


def test_mapping_another_psa_turns_the_file_into_version_2(tmp_path):
    path = tmp_path / "config.yaml"
    config = parse_config({"version": 1, "mappings": [AUTOTASK_LINE]}, "/c.yaml")
    cw = ClientMapping(
        client_id=110,
        account_id=250,
        contract_id=3311,
        contract_service_id=88412,
        service_id=77,
        psa=CONNECTWISE,
    )
    save_config(config.with_mapping(cw), path)
    written = yaml.safe_load(path.read_text())
    assert written["version"] == 2
    assert [m["psa"] for m in written["mappings"]] == ["autotask", "connectwise"]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            {"version": 1, "mappings": [CW_LINE]},
            "mappings[0].psa: a ConnectWise mapping needs `version: 2` at the top of the file",
        ),
        (
            {"version": 1, "connectwise": CW_SECTION},
            "connectwise: needs `version: 2` at the top of the file",
        ),
        (
            {"version": 2, "mappings": [{**HALO_LINE, "overwrite_cost": True}]},
            "mappings[0].overwrite_cost: does not apply to a HaloPSA mapping: a Halo "
            "subscription has no unit cost to overwrite",
        ),
        (
            {"version": 2, "mappings": [{**CW_LINE, "prorate": True}]},
            "mappings[0].prorate: does not apply to a ConnectWise mapping: ConnectWise keeps no "
            "billing periods to prorate",
        ),
        (
            {"version": 2, "mappings": [{**CW_LINE, "psa": "manage"}]},
            "mappings[0].psa: must be one of autotask, connectwise, halo, got 'manage'",
        ),
        (
            {"version": 2, "mappings": [{k: v for k, v in CW_LINE.items() if k != "addition_id"}]},
            "mappings[0].addition_id: missing (required)",
        ),
        (
            {"version": 2, "mappings": [{**CW_LINE, "contract_id": 1}]},
            "mappings[0].contract_id: unknown key",
        ),
        (
            {"version": 2, "mappings": [CW_LINE, {**CW_LINE, "client_id": 112}]},
            "mappings[1].addition_id: duplicate addition_id 88412, also in mappings[0]",
        ),
    ],
)
def test_version_2_rules(doc, expected):
    found = problems(doc)
    assert any(line.startswith(expected) for line in found), found


def test_the_same_id_on_two_psas_is_two_lines():
    doc = {
        "version": 2,
        "mappings": [
            AUTOTASK_LINE,
            {**CW_LINE, "addition_id": AUTOTASK_LINE["contract_service_id"]},
        ],
    }
    assert len(parse_config(doc, "/c.yaml").mappings) == 2
    clash = {"version": 2, "mappings": [AUTOTASK_LINE, {**CW_LINE, "client_id": 101}]}
    assert "mappings[1].client_id: duplicate client_id 101, also in mappings[0]" in problems(clash)
