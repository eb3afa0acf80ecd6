"""``sync`` with ConnectWise mappings, through the real CLI against the loopback sandbox.

Mixed months (Autotask and ConnectWise clients in one run: one report, one history run, one
exit code), a ConnectWise-only config (no Autotask request at all), and ConnectWise's faults:
an applied PATCH whose answer is lost, 429 with and without Retry-After (JSON and HTML), a
concurrent writer, an agreement already invoiced, a past month, a cancelled addition, 503 and
dropped-connection storms on the reads, a read that never recovers, a 401, a 400 rejection
and two syncs at once. Every case checks what ConnectWise received: PATCHes of the absolute
target only, never PUT, POST or DELETE.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from sandbox_cli import EXE, subprocess_env

from infima_autotask.cli import cli
from infima_autotask.history import History, ItemRecord
from infima_autotask.http import RetryPolicy
from infima_autotask.runtime import Seams
from infima_autotask.sandbox import Sandbox, cw_data, data
from infima_autotask.sync import PlanItem

THIS_MONTH = date.today().replace(day=1)
LAST_MONTH = (THIS_MONTH.replace(day=1) - date.resolution).replace(day=1)
JUNIPER = data.JUNIPER_CLIENT_ID  # 20 active users; addition 88412 shows 18
ADDITION = cw_data.JUNIPER_ADDITION_ID


def _fast_retry() -> RetryPolicy:
    return RetryPolicy(max_attempts=6, max_total_wait=5.0, base_delay=0.01, max_delay=0.05)


@dataclass
class World:
    sandbox: Sandbox
    config: Path
    env: dict[str, str]

    def write_config(
        self, *, autotask: bool = True, cw: list[dict[str, Any]] | None = None
    ) -> None:
        sb = self.sandbox
        mappings = data.seed_mappings(THIS_MONTH) if autotask else []
        doc = {
            "version": 2,
            "autotask": {
                "username": sb.username,
                "integration_code": sb.integration_code,
                "api_url": sb.autotask_url,
            },
            "connectwise": {
                "site": sb.cw_site,
                "company_id": sb.cw_company_id,
                "public_key": sb.cw_public_key,
                "client_id": sb.cw_client_id,
            },
            "infima": {"api_url": sb.infima_url},
            "mappings": [
                *mappings,
                *(cw if cw is not None else [cw_data.seed_mapping(THIS_MONTH)]),
            ],
        }
        self.config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    def run(self, *args: str) -> Result:
        seams = Seams(retry=_fast_retry, sleep=self.sleep or self.sleeps.append)
        return CliRunner().invoke(cli, list(args), env=self.env, obj=seams, catch_exceptions=False)

    def sync(self, *args: str) -> tuple[Result, dict[str, Any]]:
        result = self.run("sync", "--json", *args)
        return result, json.loads(result.stdout)

    def requests(self, service: str) -> list[Any]:
        return [r for r in self.sandbox.requests if r.service == service]

    def patches(self) -> list[Any]:
        return [r for r in self.requests("connectwise") if r.method == "PATCH"]

    def assert_no_put_post_delete(self) -> None:
        cw = self.sandbox.cw
        assert cw.replaced == [] and cw.created == [] and cw.deleted == []
        methods = {r.method for r in self.requests("connectwise")}
        assert methods <= {"GET", "PATCH"}, methods

    sleeps: list[float]
    sleep: Callable[[float], None] | None = None


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with Sandbox() as sb:
        config = tmp_path / "config.yaml"
        env = {
            "INFIMA_AUTOTASK_CONFIG": str(config),
            "INFIMA_AUTOTASK_STATE_DIR": str(tmp_path / "state"),
            "INFIMA_AUTOTASK_USERNAME": sb.username,
            "INFIMA_AUTOTASK_SECRET": sb.secret,
            "INFIMA_AUTOTASK_INTEGRATION_CODE": sb.integration_code,
            "INFIMA_API_KEY": sb.api_key,
            "INFIMA_API_URL": sb.infima_url,
            "INFIMA_CONNECTWISE_PRIVATE_KEY": sb.cw_private_key,
        }
        w = World(sb, config, env, [])
        w.write_config()
        yield w


def by_client(doc: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {item["client_id"]: item for item in doc["items"]}


# -- the mixed month ------------------------------------------------------------------------


def test_a_mixed_month_writes_each_change_once_in_its_psa_own_terms(world):
    result, doc = world.sync()
    assert result.exit_code == 0, result.output
    items = by_client(doc)
    # Config order, one report: the Autotask seed mappings, then the ConnectWise one.
    assert list(items) == [m["client_id"] for m in data.seed_mappings(THIS_MONTH)] + [JUNIPER]
    juniper = items[JUNIPER]
    assert (juniper["psa"], juniper["status"], juniper["before"], juniper["after"]) == (
        "connectwise",
        "updated",
        18,
        20,
    )
    assert juniper["effective_date"] is None
    assert {items[c]["psa"] for c in items if c != JUNIPER} == {"autotask"}
    # Autotask: each change once, as a signed delta dated in the period.
    adjustments = world.sandbox.adjustments()
    changed = {c for c, i in items.items() if i["psa"] == "autotask" and i["status"] == "updated"}
    assert len(adjustments) == len(changed) >= 1
    cs = {m["client_id"]: m["contract_service_id"] for m in data.seed_mappings(THIS_MONTH)}
    for client in changed:
        effective = date.fromisoformat(items[client]["effective_date"])
        assert world.sandbox.units_on(cs[client], effective) == items[client]["after"]
    # ConnectWise: one PATCH of the absolute target, nothing else written.
    (patch,) = world.patches()
    assert patch.body == [{"op": "replace", "path": "quantity", "value": 20}]
    assert world.sandbox.cw.quantity(ADDITION) == 20.0
    world.assert_no_put_post_delete()
    # One history run, the PSA per item.
    with History(Path(world.env["INFIMA_AUTOTASK_STATE_DIR"])) as history:
        (run,) = history.runs()
        stored = {row.client_id: (row.psa, row.status) for row in history.run_items(run.id)}
    assert stored == {client: (item["psa"], item["status"]) for client, item in items.items()}
    # The summary per PSA: in --json, and on stderr under the SPEC'd line of a mixed run.
    assert doc["by_psa"]["connectwise"] == {**dict.fromkeys(doc["summary"], 0), "updated": 1}
    at = doc["by_psa"]["autotask"]
    assert {k: at[k] + doc["by_psa"]["connectwise"][k] for k in at} == doc["summary"]
    lines = result.stderr.splitlines()
    head = next(n for n, line in enumerate(lines) if line.startswith("Period "))
    assert lines[head + 1].startswith("  Autotask: ")
    assert lines[head + 2] == "  ConnectWise: 1 updated, 0 unchanged, 0 skipped, 0 held, 0 failed"

    again, doc = world.sync()
    assert by_client(doc)[JUNIPER]["status"] == "unchanged"
    assert len(world.patches()) == 1 and len(world.sandbox.adjustments()) == len(adjustments)
    world.assert_no_put_post_delete()


def test_connectwise_alone_never_touches_autotask(world):
    world.write_config(autotask=False)
    # No Autotask credentials at all: building the Autotask client would fail the run.
    world.env = {k: v for k, v in world.env.items() if not k.startswith("INFIMA_AUTOTASK_")}
    world.env["INFIMA_AUTOTASK_CONFIG"] = str(world.config)
    world.env["INFIMA_AUTOTASK_STATE_DIR"] = str(world.config.parent / "state")
    result, doc = world.sync()
    assert result.exit_code == 0, result.output
    assert [i["status"] for i in doc["items"]] == ["updated"]
    assert world.requests("autotask") == []
    # SPEC §10: at most 2 reads per mapping plus 1 write per change, verification included.
    reads = [r for r in world.requests("connectwise") if r.method == "GET" and "/apis/" in r.path]
    assert len(reads) <= 2 and len(world.patches()) == 1


def test_a_dry_run_plans_the_target_and_sends_nothing(world):
    world.write_config(autotask=False)
    result, doc = world.sync("--dry-run")
    assert result.exit_code == 0, result.output
    (item,) = doc["items"]
    assert (item["status"], item["before"], item["target"]) == ("planned", 18, 20)
    assert world.patches() == [] and world.requests("autotask") == []
    plan = world.config.parent / "plan.json"
    text = world.run("sync", "--dry-run", "--plan-out", str(plan))
    assert text.exit_code == 0, text.output
    assert "Juniper Dental" in text.output
    (saved,) = [i for i in json.loads(plan.read_text())["items"] if i["status"] == "planned"]
    assert saved["request"] == [{"op": "replace", "path": "quantity", "value": 20}]
    reviewed = world.run("sync", "--plan", str(plan))
    assert reviewed.exit_code == 0, reviewed.output
    assert [r.body for r in world.patches()] == [saved["request"]]


def test_a_halo_mapping_without_its_secret_stops_the_run_before_any_request(world):
    """Every PSA of the run must be set up before anything is asked of any of them: a Halo
    mapping without the Halo client secret is exit 2, and no PSA got a request."""
    halo = {"client_id": 102, "psa": "halo", "account_id": 7, "subscription_id": 4242}
    world.write_config(autotask=False, cw=[cw_data.seed_mapping(THIS_MONTH), halo])
    config = yaml.safe_load(world.config.read_text())
    config["halo"] = {"url": "https://halo.example.com", "client_id": "abc"}
    world.config.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    result = world.run("sync")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ") and "INFIMA_HALO_CLIENT_SECRET" in result.stderr
    assert world.requests("connectwise") == [] and world.requests("autotask") == []


# -- ConnectWise faults ---------------------------------------------------------------------


def test_a_patch_applied_then_dropped_is_updated_after_one_re_read(world):
    world.write_config(autotask=False)
    world.sandbox.faults.add("cw:write", "apply-then-drop")
    result, doc = world.sync()
    assert result.exit_code == 0, result.output
    (item,) = doc["items"]
    assert item["status"] == "updated" and "confirmed by re-reading" in item["message"]
    assert len(world.sandbox.cw.patches) == 1 and world.sandbox.cw.quantity(ADDITION) == 20.0
    world.assert_no_put_post_delete()


@pytest.mark.parametrize("retry_after", [2, None])
def test_a_429_on_the_patch_is_re_read_then_sent_once_more(world, retry_after):
    world.write_config(autotask=False)
    world.sandbox.faults.add("cw:write", "429", retry_after=retry_after)
    result, doc = world.sync()
    assert result.exit_code == 0, result.output
    assert doc["items"][0]["status"] == "updated"
    assert [r.status for r in world.patches()] == [429, 200]
    assert len(world.sandbox.cw.patches) == 1
    # Retry-After is honoured up to the settle ceiling (the retry policy's 0.05 s here).
    assert world.sleeps == ([0.05] if retry_after else [])


def test_a_concurrent_writer_during_an_unknown_outcome_is_not_overwritten(world):
    world.write_config(autotask=False)
    world.sandbox.faults.add("cw:write", "apply-then-drop")
    cw = world.sandbox.cw

    def other_writer(seconds: float) -> None:  # INFIMA's own sync, while the tool settles
        world.sleeps.append(seconds)
        with cw.lock:
            cw.additions[ADDITION]["quantity"] = 25.0

    world.sleep = other_writer
    result, doc = world.sync()
    assert result.exit_code == 1, result.output
    (item,) = doc["items"]
    assert item["status"] == "failed"
    assert "ConnectWise shows 25 on addition 88412" in item["message"]
    assert len(world.sandbox.cw.patches) == 1 and world.sandbox.cw.quantity(ADDITION) == 25.0


def test_an_agreement_already_invoiced_is_held_even_with_yes(world):
    kestrel = {
        **cw_data.seed_mapping(THIS_MONTH),
        "account_id": cw_data.KESTREL_COMPANY_ID,
        "agreement_id": cw_data.KESTREL_AGREEMENT_ID,
        "addition_id": cw_data.KESTREL_ADDITION_ID,
    }
    world.write_config(autotask=False, cw=[kestrel])
    result, doc = world.sync("--yes")
    assert result.exit_code == 1, result.output
    (item,) = doc["items"]
    assert item["status"] == "held" and "already invoiced" in item["message"]
    assert world.patches() == []


def test_a_past_month_is_held(world):
    world.write_config(autotask=False)
    result, doc = world.sync("--month", LAST_MONTH.strftime("%Y-%m"), "--yes")
    assert result.exit_code == 1, result.output
    (item,) = doc["items"]
    assert item["status"] == "held"
    assert "ConnectWise cannot backdate a quantity" in item["message"]
    assert world.patches() == []


def test_a_cancelled_addition_fails_with_the_fix(world):
    nimbus = {
        **cw_data.seed_mapping(THIS_MONTH),
        "account_id": cw_data.NIMBUS_COMPANY_ID,
        "agreement_id": cw_data.NIMBUS_AGREEMENT_ID,
        "addition_id": cw_data.NIMBUS_CANCELLED_ADDITION_ID,
    }
    world.write_config(autotask=False, cw=[nimbus])
    result, doc = world.sync()
    assert result.exit_code == 1, result.output
    (item,) = doc["items"]
    assert item["status"] == "failed" and "was cancelled" in item["message"]
    assert f"--psa connectwise --account {cw_data.NIMBUS_COMPANY_ID}" in item["message"]
    assert world.patches() == []


@pytest.mark.parametrize(
    ("shown", "status", "patches"), [(20.0, "updated", 0), (18.0, "updated", 1)]
)
def test_an_intent_left_open_by_a_killed_run_is_read_from_connectwise(
    world, shown, status, patches
):
    """A killed run's PATCH that landed is confirmed without a second one; one that did not
    land (the addition still shows before) is planned and sent afresh."""
    world.write_config(autotask=False)
    with world.sandbox.cw.lock:
        world.sandbox.cw.additions[ADDITION]["quantity"] = shown
    intent = PlanItem(
        client_id=JUNIPER,
        client_name="Juniper Dental",
        contract_id=cw_data.JUNIPER_AGREEMENT_ID,
        contract_service_id=ADDITION,
        service_id=cw_data.INFIMA_PRODUCT_ID,
        users=20,
        target=20,
        before=18,
        after=20,
        change=2,
        unit_price=4.5,
        unit_cost=2.25,
        new_unit_cost=2.25,
        status="planned",
        psa="connectwise",
    )
    with History(Path(world.env["INFIMA_AUTOTASK_STATE_DIR"])) as history:
        run_id = history.start_run(
            period=THIS_MONTH.strftime("%Y-%m"), dry_run=False, version="test"
        )
        history.record_intent(run_id, ItemRecord.of(intent))
    result, doc = world.sync()
    assert result.exit_code == 0, result.output
    (item,) = doc["items"]
    assert item["status"] == status and world.sandbox.cw.quantity(ADDITION) == 20.0
    assert len(world.patches()) == patches and world.requests("autotask") == []
    with History(Path(world.env["INFIMA_AUTOTASK_STATE_DIR"])) as history:
        assert history.pending_intents(THIS_MONTH.strftime("%Y-%m")) == []


def test_a_revert_of_a_mixed_run_sets_the_connectwise_line_back_with_one_patch(world):
    """revert sets Juniper's addition back to 18 with one absolute PATCH (never an Autotask
    adjustment), and the Autotask lines with their compensating adjustments; a second revert
    finds every line back and writes nothing."""
    result, doc = world.sync()
    assert result.exit_code == 0, result.output
    assert world.sandbox.cw.quantity(ADDITION) == 20.0
    with History(Path(world.env["INFIMA_AUTOTASK_STATE_DIR"])) as history:
        (run,) = history.runs()
    adjustments = len(world.sandbox.adjustments())
    patches = len(world.patches())

    reverted = world.run("revert", str(run.id), "--yes", "--json")
    assert reverted.exit_code == 0, reverted.output
    items = by_client(json.loads(reverted.stdout))
    juniper = items[JUNIPER]
    assert (juniper["psa"], juniper["status"]) == ("connectwise", "updated")
    assert (juniper["before"], juniper["after"], juniper["change"]) == (20, 18, -2)
    new_patches = world.patches()[patches:]
    assert len(new_patches) == 1 and world.sandbox.cw.quantity(ADDITION) == 18.0
    assert new_patches[0].body == [{"op": "replace", "path": "quantity", "value": 18}]
    sent = world.sandbox.adjustments()[adjustments:]
    assert sent and all(a["contractServiceID"] != ADDITION for a in sent)
    assert {i["status"] for c, i in items.items() if i["psa"] == "autotask" and i["change"]} <= {
        "updated"
    }
    world.assert_no_put_post_delete()

    again = world.run("revert", str(run.id), "--yes", "--json")
    assert again.exit_code == 0, again.output
    assert by_client(json.loads(again.stdout))[JUNIPER]["status"] == "unchanged"
    assert len(world.patches()) == patches + 1


def test_a_revert_holds_a_connectwise_line_changed_since(world):
    """Someone set Juniper's addition to 25 after the run wrote 20: revert holds it, saying
    what it shows, and sends no PATCH."""
    result, _ = world.sync()
    assert result.exit_code == 0, result.output
    with History(Path(world.env["INFIMA_AUTOTASK_STATE_DIR"])) as history:
        (run,) = history.runs()
    world.sandbox.cw.additions[ADDITION]["quantity"] = 25.0
    patches = len(world.patches())
    reverted = world.run("revert", str(run.id), "--yes", "--json")
    assert reverted.exit_code == 1, reverted.output
    juniper = by_client(json.loads(reverted.stdout))[JUNIPER]
    assert juniper["status"] == "held"
    assert "changed since run" in juniper["message"] and "it shows 25" in juniper["message"]
    assert len(world.patches()) == patches and world.sandbox.cw.quantity(ADDITION) == 25.0


# -- ConnectWise faults: the rest of the matrix ---------------------------------------------


def cw_statuses(world: World, method: str, tail: str) -> list[int]:
    """Statuses of ``method`` requests whose path ends with ``tail`` (0: no answer sent)."""
    return [
        r.status
        for r in world.requests("connectwise")
        if r.method == method and r.path.split("?")[0].endswith(tail)
    ]


def test_an_html_429_on_the_patch_is_re_read_then_sent_once_more(world):
    world.write_config(autotask=False)
    world.sandbox.faults.add("cw:write", "429-html", retry_after=1)
    result, doc = world.sync()
    assert result.exit_code == 0, result.output
    (item,) = doc["items"]
    assert (item["status"], item["after"]) == ("updated", 20)
    assert [r.status for r in world.patches()] == [429, 200]
    assert len(world.sandbox.cw.patches) == 1 and world.sandbox.cw.quantity(ADDITION) == 20.0
    world.assert_no_put_post_delete()


@pytest.mark.parametrize("kind", ["503", "drop"])
@pytest.mark.parametrize(
    ("endpoint", "needle"),
    [("cw:additions", f"/additions/{ADDITION}"), ("cw:agreements", "/agreements/3311")],
)
def test_a_storm_on_a_read_is_retried_and_the_run_completes(world, kind, endpoint, needle):
    world.write_config(autotask=False)
    world.sandbox.faults.add(endpoint, kind, times=3)
    result, doc = world.sync()
    assert result.exit_code == 0, result.output
    assert doc["items"][0]["status"] == "updated"
    failed = 503 if kind == "503" else 0  # 0: no answer was sent
    assert cw_statuses(world, "GET", needle) == [failed] * 3 + [200]
    assert [r.status for r in world.patches()] == [200]
    assert world.sandbox.cw.quantity(ADDITION) == 20.0
    world.assert_no_put_post_delete()


def test_a_400_rejection_of_the_patch_fails_and_is_never_re_sent(world):
    world.write_config(autotask=False)
    world.sandbox.faults.add("cw:write", "400")
    result, doc = world.sync()
    assert result.exit_code == 1, result.output
    (item,) = doc["items"]
    assert item["status"] == "failed" and (item["before"], item["after"]) == (18, 18)
    assert "ConnectWise refused the change" in item["message"]
    assert "The quantity is not valid" in item["message"]
    assert [r.status for r in world.patches()] == [400]
    assert world.sandbox.cw.patches == [] and world.sandbox.cw.quantity(ADDITION) == 18.0
    world.assert_no_put_post_delete()


def assert_only_autotask_written(world: World, doc: dict) -> None:
    """ConnectWise got no write and its client failed; every Autotask change was written."""
    items = {item["client_id"]: item for item in doc["items"]}
    juniper = items.pop(109)
    assert juniper["status"] == "failed" and juniper["psa"] == "connectwise"
    assert juniper["message"].startswith("ConnectWise could not be read (")
    assert "nothing was sent" in juniper["message"]
    assert world.patches() == [] and world.sandbox.cw.patches == []
    assert world.sandbox.cw.quantity(ADDITION) == 18.0
    world.assert_no_put_post_delete()
    updated = [item for item in items.values() if item["status"] == "updated"]
    assert updated and all(item["psa"] == "autotask" for item in updated)
    assert len(world.sandbox.adjustments()) == len(updated)
    warning = "ConnectWise could not be read"
    assert any(w.startswith(warning) for w in doc["warnings"])
    assert "`infima-autotask sync --psa connectwise` when it answers" in " ".join(doc["warnings"])


def test_a_connectwise_read_that_never_recovers_fails_only_its_clients(world):
    """A mixed month whose ConnectWise addition read answers 503 forever (after bounded
    retries): ConnectWise's client fails with the reason and nothing is sent to it, the
    Autotask changes are written, and the run exits 3 (a PSA was not reached)."""
    world.sandbox.faults.add("cw:additions", "503", times=-1)
    result = world.run("sync", "--json")
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.stderr
    assert cw_statuses(world, "GET", f"/additions/{ADDITION}") == [503] * 6  # max_attempts
    assert_only_autotask_written(world, json.loads(result.stdout))
    again = world.run("sync", "--psa", "connectwise", "--json")
    assert again.exit_code == 3  # still down: the ConnectWise-only run fails as a whole
    assert again.stderr.startswith("Error: ConnectWise is unavailable (HTTP 503")


def test_connectwise_rejecting_the_keys_fails_only_its_clients(world):
    """A 401 from ConnectWise (the private key rotated) in a mixed month: the 401 is never
    retried, ConnectWise's client fails naming the keys, the Autotask changes are written,
    exit 3; a ConnectWise-only run says `connect --psa connectwise`."""
    world.env["INFIMA_CONNECTWISE_PRIVATE_KEY"] = "RotatedKey000000"
    result = world.run("sync", "--json")
    assert result.exit_code == 3, result.output
    doc = json.loads(result.stdout)
    assert_only_autotask_written(world, doc)
    juniper = next(item for item in doc["items"] if item["client_id"] == 109)
    assert "rejected the company id, public key or private key" in juniper["message"]
    statuses = [r.status for r in world.requests("connectwise") if "/apis/" in r.path]
    assert statuses and set(statuses) == {401} and len(statuses) <= 2
    alone = world.run("sync", "--psa", "connectwise")
    assert alone.exit_code == 3
    assert alone.stderr.startswith(
        "Error: ConnectWise rejected the company id, public key or private key (HTTP 401)"
    )
    assert "infima-autotask connect --psa connectwise" in alone.stderr


def test_an_autotask_read_that_never_recovers_fails_only_its_clients(world):
    """The other way round: Autotask's contract services read answers 503 forever; every
    Autotask client fails with the reason and nothing is sent to Autotask, Juniper's
    ConnectWise line is written (18 -> 20, one PATCH), exit 3."""
    world.sandbox.faults.add("contractservices", "503", times=-1)
    result = world.run("sync", "--json")
    assert result.exit_code == 3, result.output
    doc = json.loads(result.stdout)
    items = {item["client_id"]: item for item in doc["items"]}
    assert items.pop(109)["status"] == "updated"
    assert world.sandbox.cw.quantity(ADDITION) == 20.0 and len(world.patches()) == 1
    assert items and all(
        item["status"] == "failed" and item["message"].startswith("Autotask could not be read")
        for item in items.values()
    )
    assert world.sandbox.adjustments() == []
    assert not [r for r in world.requests("autotask") if "ContractServiceAdjustments" in r.path]
    world.assert_no_put_post_delete()


def test_two_syncs_at_once_with_connectwise_mappings(world):
    """A second ``sync`` while the first holds its ConnectWise PATCH: the second exits 3
    naming the holder's PID and sends nothing; the first finishes with one PATCH."""
    world.write_config(autotask=False)
    sb = world.sandbox
    sb.faults.add("cw:write", "apply-then-hold")
    first = subprocess.Popen(
        [str(EXE), "sync"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**subprocess_env(world.config.parent / "home"), **world.env},
    )
    try:
        assert sb.faults.held.wait(30), "the first sync never reached its PATCH"
        sent = len(sb.requests)
        second = world.run("sync")
        assert len(sb.requests) == sent  # refused before any request
    finally:
        sb.faults.release()
        out, err = first.communicate(timeout=30)
    assert second.exit_code == 3, second.output
    assert second.stderr.startswith("Error: Another sync is running")
    assert f"PID {first.pid}" in second.stderr
    assert first.returncode == 0, out + err
    assert "Traceback" not in err
    assert len(world.patches()) == 1 and len(sb.cw.patches) == 1
    assert sb.cw.quantity(ADDITION) == 20.0
    world.assert_no_put_post_delete()


def test_several_changes_stay_within_the_connectwise_budget(world):
    """SPEC §10: at most 2 reads per mapping plus 1 write per change. The first write's
    PATCH answer serves both its own check and the batch's: no third read of its addition."""
    mappings = world.sandbox.generate_connectwise(6, changed_fraction=0.5)
    world.write_config(autotask=False, cw=mappings)
    result, doc = world.sync()
    assert result.exit_code == 0, result.output
    assert [i["status"] for i in doc["items"]].count("updated") == 3
    apis = [r for r in world.requests("connectwise") if "/apis/" in r.path]
    assert [r.method for r in apis].count("GET") == 2 * len(mappings)
    assert len(world.patches()) == len(world.sandbox.cw.patches) == 3
    world.assert_no_put_post_delete()
