"""The mapping commands end to end against the loopback sandbox, counting Autotask requests."""

from __future__ import annotations

import json

from conftest import make_config, write_config

from infima_autotask.sandbox import data


def _autotask_requests(sandbox, since=0):
    return [r for r in sandbox.requests[since:] if r.service == "autotask"]


def test_check_200_mappings_request_count(invoke, config_path, sandbox, sandbox_env):
    delta_old = {
        **data.seed_mappings(sandbox.state.today)[3],
        "contract_id": data.DELTA_OLD_CONTRACT_ID,
        "contract_service_id": data.DELTA_OLD_CONTRACT_SERVICE_ID,
    }
    doc = make_config(sandbox.generate(200))
    doc["autotask"] = {"username": sandbox.username}
    write_config(config_path, doc)

    result = invoke("list-mappings", "--check", "--json", env=sandbox_env)
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 200
    assert len(_autotask_requests(sandbox)) == 5  # picklist + 4 batched reads, none ended

    doc["mappings"].append(delta_old)
    write_config(config_path, doc)
    start = len(sandbox.requests)
    result = invoke("list-mappings", "--check", "--json", env=sandbox_env)
    assert result.exit_code == 1
    statuses = [row["status"] for row in json.loads(result.stdout)]
    assert statuses.count("ok") == 200
    assert (
        f"`infima-autotask map 104 --account {data.DELTA_ACCOUNT_ID} "
        f"--contract {data.DELTA_RENEWAL_CONTRACT_ID} "
        f"--contract-service {data.DELTA_RENEWAL_CONTRACT_SERVICE_ID}`"
    ) in statuses[-1]
    assert len(_autotask_requests(sandbox, start)) == 7  # + 2 for the renewal look-up


def test_map_then_check_against_the_sandbox(invoke, config_path, sandbox, sandbox_env):
    write_config(config_path, make_config(autotask={"username": sandbox.username}))
    result = invoke(
        "map", str(data.BIRCH_CLIENT_ID), "--account", str(data.BIRCH_ACCOUNT_ID), env=sandbox_env
    )
    assert result.exit_code == 0, result.output
    assert "Taking the only contract service" in result.stderr
    result = invoke("list-mappings", "--check", env=sandbox_env)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[2].split()[-1] == "ok"
