"""``sync`` and ``revert`` with HaloPSA mappings, through the real CLI against the sandbox.

A three-PSA month (Autotask, ConnectWise and Halo clients in one run: one report, one history
run, one exit code), a Halo-only config (no other PSA is asked anything), Halo's faults (an
applied POST whose answer is lost, 429, a 400 rejection, a concurrent writer, a read that
never recovers), a past month, an inactive subscription, a killed run's intent, a revert, and
the pacing: a 400-mapping run never passes the hosted limit in the simulator's own rolling
window. Every case checks what Halo received: POSTs of ``[{"id", "client_id", "count"}]`` with
the absolute target only, and never a subscription created.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from infima_autotask.cli import cli
from infima_autotask.history import History, ItemRecord
from infima_autotask.http import RetryPolicy
from infima_autotask.runtime import Seams
from infima_autotask.sandbox import Sandbox, cw_data, data, halo_data
from infima_autotask.sync import PlanItem

THIS_MONTH = date.today().replace(day=1)
LAST_MONTH = (THIS_MONTH - date.resolution).replace(day=1)
KESTREL = data.KESTREL_LAW_CLIENT_ID  # INFIMA client 110: 14 active users
LICENCE = halo_data.KESTREL_LICENCE_ID  # subscription 9127 shows 12
HALO_CLIENT = halo_data.KESTREL_CLIENT_ID  # Halo client 45


def _fast_retry() -> RetryPolicy:
    return RetryPolicy(max_attempts=6, max_total_wait=5.0, base_delay=0.01, max_delay=0.05)


class FakeClock:
    """A monotonic clock that only moves when someone sleeps on it (thread-safe)."""

    def __init__(self) -> None:
        self._now = 1000.0
        self._lock = threading.Lock()
        self.slept = 0.0

    def now(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0.0, seconds)
            self.slept += max(0.0, seconds)


@dataclass
class World:
    sandbox: Sandbox
    config: Path
    env: dict[str, str]
    clock: FakeClock | None = None
    sleeps: list[float] = field(default_factory=list)
    sleep: Callable[[float], None] | None = None

    def write_config(
        self,
        *,
        autotask: bool = True,
        cw: bool = True,
        halo: list[dict[str, Any]] | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        sb = self.sandbox
        mapping = {**halo_data.seed_mapping(), **(overrides or {})}
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
            "halo": {"url": sb.halo_url, "tenant": None, "client_id": sb.halo_client_id},
            "infima": {"api_url": sb.infima_url},
            "mappings": [
                *(data.seed_mappings(THIS_MONTH) if autotask else []),
                *([cw_data.seed_mapping(THIS_MONTH)] if cw else []),
                *(halo if halo is not None else [mapping]),
            ],
        }
        self.config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    def run(self, *args: str) -> Result:
        if self.clock is not None:
            seams = Seams(retry=_fast_retry, sleep=self.clock.sleep, monotonic=self.clock.now)
        else:
            seams = Seams(retry=_fast_retry, sleep=self.sleep or self.sleeps.append)
        return CliRunner().invoke(cli, list(args), env=self.env, obj=seams, catch_exceptions=False)

    def sync(self, *args: str) -> tuple[Result, dict[str, Any]]:
        result = self.run("sync", "--json", *args)
        return result, json.loads(result.stdout)

    def requests(self, service: str) -> list[Any]:
        return [r for r in self.sandbox.requests if r.service == service]

    def posts(self) -> list[Any]:
        return [r for r in self.requests("halo") if r.method == "POST" and "/api/" in r.path]

    def assert_nothing_created(self) -> None:
        assert self.sandbox.halo.creates == []
        for post in self.posts():
            assert all(entry.get("id") for entry in post.body), post.body


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
            "INFIMA_HALO_CLIENT_SECRET": sb.halo_client_secret,
        }
        w = World(sb, config, env)
        w.write_config()
        yield w


def by_client(doc: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {item["client_id"]: item for item in doc["items"]}


WRITE = [{"id": LICENCE, "client_id": HALO_CLIENT, "count": 14}]


# -- the three-PSA month --------------------------------------------------------------------


def test_a_three_psa_month_writes_each_change_once_in_its_psa_own_terms(world):
    result, doc = world.sync()
    assert result.exit_code == 0, result.output
    items = by_client(doc)
    expected = [m["client_id"] for m in data.seed_mappings(THIS_MONTH)]
    assert list(items) == [*expected, data.JUNIPER_CLIENT_ID, KESTREL]
    kestrel = items[KESTREL]
    assert (kestrel["psa"], kestrel["status"], kestrel["before"], kestrel["after"]) == (
        "halo",
        "updated",
        12,
        14,
    )
    assert kestrel["effective_date"] is None and kestrel["change"] == 2
    # Halo's price is on the recurring-invoice line: no unit price, money unknown (not 0.00).
    assert kestrel["unit_price"] is None and kestrel["money_change"] is None
    # Halo: one POST of the absolute count, with the subscription's id; nothing created.
    (post,) = world.posts()
    assert post.body == WRITE
    assert world.sandbox.halo.count(LICENCE) == 14
    world.assert_nothing_created()
    # ConnectWise: one PATCH of 20; Autotask: its deltas.
    assert world.sandbox.cw.quantity(cw_data.JUNIPER_ADDITION_ID) == 20.0
    changed = [i for i in items.values() if i["psa"] == "autotask" and i["status"] == "updated"]
    assert len(world.sandbox.adjustments()) == len(changed) >= 1
    # One history run, the PSA per item; the summary per PSA.
    with History(Path(world.env["INFIMA_AUTOTASK_STATE_DIR"])) as history:
        (run,) = history.runs()
        stored = {row.client_id: row.psa for row in history.run_items(run.id)}
    assert stored == {client: item["psa"] for client, item in items.items()}
    assert list(doc["by_psa"]) == ["autotask", "connectwise", "halo"]
    assert doc["by_psa"]["halo"]["updated"] == 1
    assert "  HaloPSA: 1 updated, 0 unchanged, 0 skipped, 0 held, 0 failed" in result.stderr

    again, doc = world.sync()
    assert again.exit_code == 0, again.output
    assert by_client(doc)[KESTREL]["status"] == "unchanged"
    assert len(world.posts()) == 1
    world.assert_nothing_created()


def test_halo_alone_asks_no_other_psa_anything(world):
    world.write_config(autotask=False, cw=False)
    result, doc = world.sync()
    assert result.exit_code == 0, result.output
    assert [i["status"] for i in doc["items"]] == ["updated"]
    assert world.requests("autotask") == [] and world.requests("connectwise") == []
    halo = [r for r in world.requests("halo") if "/api/" in r.path or "/auth" in r.path]
    # authinfo, token, one page of every subscription, one POST (its answer verifies it).
    assert [(r.method, r.path.split("?")[0]) for r in halo] == [
        ("GET", "/api/authinfo"),
        ("POST", "/auth/token"),
        ("GET", "/api/SoftwareLicence"),
        ("POST", "/api/SoftwareLicence"),
    ]
    assert "by_psa" not in doc  # a run of one PSA keeps SPEC §8's document


def test_the_report_counts_no_money_for_a_line_without_a_price(world):
    world.write_config(autotask=False, cw=False)
    assert world.sync()[0].exit_code == 0
    result = world.run("report", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    (row,) = doc["rows"]
    assert (row["change"], row["unit_price"], row["money_change"]) == (2, None, None)
    assert "money change 0.00 (not counting 1 changed line without a unit price)" in result.stderr
    table = world.run("sync", "--dry-run")
    assert "Money change" not in table.stderr


def test_a_dry_run_plans_the_target_and_sends_nothing(world):
    world.write_config(autotask=False, cw=False)
    result, doc = world.sync("--dry-run")
    assert result.exit_code == 0, result.output
    (item,) = doc["items"]
    assert (item["status"], item["target"], item["before"]) == ("planned", 14, 12)
    assert world.posts() == [] and world.sandbox.halo.count(LICENCE) == 12


def test_a_past_month_is_held(world):
    world.write_config(autotask=False, cw=False)
    result, doc = world.sync("--month", LAST_MONTH.strftime("%Y-%m"), "--yes")
    assert result.exit_code == 1, result.output
    (item,) = doc["items"]
    assert item["status"] == "held"
    assert "HaloPSA cannot backdate a count" in item["message"]
    assert world.posts() == []


def test_an_inactive_subscription_fails_with_the_fix(world):
    world.write_config(
        autotask=False,
        cw=False,
        overrides={
            "account_id": halo_data.PELICAN_CLIENT_ID,
            "subscription_id": halo_data.PELICAN_OLD_LICENCE_ID,
        },
    )
    result, doc = world.sync()
    assert result.exit_code == 1, result.output
    (item,) = doc["items"]
    assert item["status"] == "failed"
    assert item["message"].startswith(f"subscription {halo_data.PELICAN_OLD_LICENCE_ID} ended on")
    # An unusable line shows no count as "before", and no change (as for Autotask).
    assert (item["before"], item["after"], item["change"]) == (None, None, None)
    # Its successor (same name, active) is named with the exact command.
    assert (
        f"`infima-autotask map {KESTREL} --psa halo --account 47 --subscription "
        f"{halo_data.PELICAN_LICENCE_ID}`" in item["message"]
    )
    assert world.posts() == []


def test_a_subscription_of_another_client_fails(world):
    world.write_config(autotask=False, cw=False, overrides={"account_id": 46})
    result, doc = world.sync()
    assert result.exit_code == 1, result.output
    assert "subscription 9127 belongs to client 45, not 46" in doc["items"][0]["message"]
    assert world.posts() == []


# -- faults ---------------------------------------------------------------------------------


def test_a_post_applied_then_dropped_is_updated_after_one_re_read(world):
    world.write_config(autotask=False, cw=False)
    world.sandbox.faults.add("halo:write", "apply-then-drop")
    result, doc = world.sync()
    assert result.exit_code == 0, result.output
    assert doc["items"][0]["status"] == "updated"
    assert len(world.posts()) == 1 and world.sandbox.halo.count(LICENCE) == 14
    gets = [
        r for r in world.requests("halo") if r.path.startswith(f"/api/SoftwareLicence/{LICENCE}")
    ]
    assert len(gets) == 1  # the re-read
    world.assert_nothing_created()


def test_a_429_on_the_post_is_re_read_then_sent_once_more(world):
    world.write_config(autotask=False, cw=False)
    world.sandbox.faults.add("halo:write", "429", retry_after=1)
    result, doc = world.sync()
    assert result.exit_code == 0, result.output
    assert doc["items"][0]["status"] == "updated"
    assert [r.status for r in world.posts()] == [429, 200]
    assert world.sandbox.halo.count(LICENCE) == 14
    world.assert_nothing_created()


@pytest.mark.parametrize(
    ("kind", "statuses", "waited"),
    [
        ("503", [503, 200], True),  # refused before any work: re-read shows 12, sent again
        ("502", [502, 200], True),
        ("drop", [0, 200], True),  # no answer at all: re-read shows 12, sent again
        ("apply-then-500-bare", [500], False),  # applied, then a bare 500: re-read shows 14
        ("apply-then-drop", [0], True),
    ],
)
def test_every_unknown_outcome_of_the_post_ends_with_one_applied_write(
    world, kind, statuses, waited
):
    """The fault matrix on Halo's write: whatever happened to the POST, the subscription
    ends at 14, applied once (Halo's own update log), and never a subscription created."""
    world.write_config(autotask=False, cw=False)
    world.sandbox.faults.add("halo:write", kind)
    result, doc = world.sync()
    assert result.exit_code == 0, result.output
    assert doc["items"][0]["status"] == "updated"
    assert [r.status for r in world.posts()] == statuses
    assert world.sandbox.halo.count(LICENCE) == 14
    applied = [u for u in world.sandbox.halo.updates if u["licence_id"] == LICENCE]
    assert len(applied) == 1 and applied[0]["body"] == WRITE[0]
    assert bool(world.sleeps) == waited  # a gateway error or a lost answer: let Halo settle
    world.assert_nothing_created()


def test_a_400_rejection_fails_and_is_never_re_sent(world):
    world.write_config(autotask=False, cw=False)
    world.sandbox.faults.add("halo:write", "400")
    result, doc = world.sync()
    assert result.exit_code == 1, result.output
    (item,) = doc["items"]
    assert item["status"] == "failed" and "HaloPSA refused the change" in item["message"]
    assert [r.status for r in world.posts()] == [400]
    assert world.sandbox.halo.count(LICENCE) == 12


def test_a_concurrent_writer_during_an_unknown_outcome_is_not_overwritten(world):
    """The POST is applied and its answer lost; while the tool lets Halo settle, another
    writer sets 30: the re-read shows neither 12 nor 14, so nothing is sent again."""
    world.write_config(autotask=False, cw=False)
    world.sandbox.faults.add("halo:write", "apply-then-drop")
    halo = world.sandbox.halo

    def other_writer(seconds: float) -> None:  # INFIMA's own nightly sync, say
        world.sleeps.append(seconds)
        with halo.lock:
            halo.licences[LICENCE]["count"] = 30

    world.sleep = other_writer
    result, doc = world.sync()
    assert result.exit_code == 1, result.output
    (item,) = doc["items"]
    assert item["status"] == "failed"
    assert "HaloPSA shows 30 on subscription 9127, expected 14" in item["message"]
    assert len(world.posts()) == 1 and halo.count(LICENCE) == 30


def test_a_halo_read_that_never_recovers_fails_only_its_clients(world):
    world.sandbox.faults.add("halo:licences", "503", times=-1)
    result = world.run("sync", "--json")
    assert result.exit_code == 3, result.output
    doc = json.loads(result.stdout)
    items = by_client(doc)
    kestrel = items.pop(KESTREL)
    assert kestrel["status"] == "failed"
    assert kestrel["message"].startswith("HaloPSA could not be read (")
    assert world.posts() == [] and world.sandbox.halo.count(LICENCE) == 12
    assert items[data.JUNIPER_CLIENT_ID]["status"] == "updated"
    assert any(i["psa"] == "autotask" and i["status"] == "updated" for i in items.values())
    alone = world.run("sync", "--psa", "halo")
    assert alone.exit_code == 3 and alone.stderr.startswith("Error: ")


def test_an_intent_left_open_by_a_killed_run_is_read_from_halo(world):
    world.write_config(autotask=False, cw=False)
    world.sandbox.halo.licences[LICENCE]["count"] = 14  # the killed run's write landed
    intent = HALO_ITEM  # the killed run's planned write: 12 -> 14
    state = Path(world.env["INFIMA_AUTOTASK_STATE_DIR"])
    with History(state) as history:
        run_id = history.start_run(
            period=THIS_MONTH.strftime("%Y-%m"), dry_run=False, version="test"
        )
        history.record_intent(run_id, ItemRecord.of(intent))
    result, doc = world.sync()
    assert result.exit_code == 0, result.output
    (item,) = doc["items"]
    assert item["status"] == "updated" and "interrupted run" in item["message"]
    assert world.posts() == []
    with History(state) as history:
        assert history.pending_intents(THIS_MONTH.strftime("%Y-%m")) == []


def test_a_revert_sets_the_halo_count_back_with_one_post(world):
    world.write_config(autotask=False, cw=False)
    result, _ = world.sync()
    assert result.exit_code == 0, result.output
    with History(Path(world.env["INFIMA_AUTOTASK_STATE_DIR"])) as history:
        (run,) = history.runs()
    reverted = world.run("revert", str(run.id), "--yes", "--json")
    assert reverted.exit_code == 0, reverted.output
    (item,) = json.loads(reverted.stdout)["items"]
    assert (item["psa"], item["status"], item["before"], item["after"]) == (
        "halo",
        "updated",
        14,
        12,
    )
    assert world.posts()[-1].body == [{"id": LICENCE, "client_id": HALO_CLIENT, "count": 12}]
    assert world.sandbox.halo.count(LICENCE) == 12
    world.assert_nothing_created()


# -- pacing ---------------------------------------------------------------------------------


def test_a_400_mapping_run_never_passes_the_hosted_limit(world):
    """400 Halo mappings, every one changed: 403 requests at least (authinfo, token, pages,
    400 POSTs) against a simulator counting 300 per rolling 5 minutes on the same clock the
    tool paces on. The run waits instead of being refused: no 429, every count written."""
    clock = FakeClock()
    world.clock = clock
    sb = world.sandbox
    sb.halo.clock = clock.now
    mappings = sb.generate_halo(400, changes=400)
    world.write_config(autotask=False, cw=False, halo=mappings)
    result, doc = world.sync()
    assert result.exit_code == 0, result.output
    assert doc["summary"]["updated"] == 400
    halo = world.requests("halo")
    assert all(r.status != 429 for r in halo)
    assert len([r for r in halo if r.method == "POST" and "/api/" in r.path]) == 400
    assert clock.slept >= 60  # it had to wait for the window to slide
    world.assert_nothing_created()
    for mapping in mappings:
        assert sb.halo.count(mapping["subscription_id"]) > 0


def test_the_question_before_writing_names_each_psa():
    """On a terminal, sync asks before writing: the question names where the writes go."""
    from dataclasses import replace

    from infima_autotask.cli.cmd_sync import write_question
    from infima_autotask.runner import SyncReport

    def planned(client: int, psa: str) -> PlanItem:
        return replace(HALO_ITEM, client_id=client, psa=psa)

    halo_only = SyncReport(period="2026-12", dry_run=True, items=[planned(1, "halo")])
    assert write_question(halo_only) == "Write this 1 change to HaloPSA?"
    assert write_question(halo_only, revert=True) == "Write this 1 change to HaloPSA?"
    mixed = SyncReport(
        period="2026-12",
        dry_run=True,
        items=[planned(1, "autotask"), planned(2, "autotask"), planned(3, "halo")],
    )
    assert write_question(mixed) == "Write these 3 changes (2 to Autotask, 1 to HaloPSA)?"
    autotask = SyncReport(period="2026-12", dry_run=True, items=[planned(1, "autotask")])
    assert write_question(autotask, revert=True) == "Write this 1 compensating change to Autotask?"


HALO_ITEM = PlanItem(
    client_id=KESTREL,
    client_name="Kestrel Law",
    contract_id=0,
    contract_service_id=LICENCE,
    service_id=0,
    users=14,
    target=14,
    before=12,
    after=14,
    change=2,
    unit_price=None,
    unit_cost=None,
    new_unit_cost=None,
    status="planned",
    psa="halo",
)


def test_a_wrong_url_is_named_as_the_url_not_the_secret(world):
    """A URL with a path Halo does not serve (`.../auth`, a typo) answers 404 at the token
    request: the error says to check the URL, not the client id and secret."""
    sb = world.sandbox
    args = ("connect", "--psa", "halo", "--client-id", sb.halo_client_id, "--url")
    result = world.run(*args, f"{sb.halo_url}/auth")
    assert result.exit_code == 3, result.output
    assert "has no token endpoint at" in result.stderr and "Check the URL" in result.stderr
    assert "client id and secret" not in result.stderr
    assert world.run(*args, sb.halo_url).exit_code == 0


def test_the_nightly_psa_line_of_a_halo_only_shop_still_names_unmapped_clients(world):
    """`sync --psa halo` where every mapping is Halo's is a full run: a new INFIMA client
    without a mapping is named (the nightly cron line is where the operator sees it)."""
    world.write_config(autotask=False, cw=False)
    result, doc = world.sync("--psa", "halo", "--dry-run")
    assert result.exit_code == 0, result.output
    assert any("Juniper Dental (109)" in w for w in doc["warnings"]), doc["warnings"]
    world.write_config(autotask=False)  # with a ConnectWise mapping too: Halo's alone
    result, doc = world.sync("--psa", "halo", "--dry-run")
    assert [i["psa"] for i in doc["items"]] == ["halo"]
    assert not any("without a mapping" in w for w in doc["warnings"])


def test_a_refused_secret_from_the_environment_says_so_where_cron_sees_it(world):
    """A wrong INFIMA_HALO_CLIENT_SECRET in cron.env: sync's error names the variable
    (running connect again could not help while it is set)."""
    world.write_config(autotask=False, cw=False)
    world.env["INFIMA_HALO_CLIENT_SECRET"] = "not-the-secret"
    result = world.run("sync")
    assert result.exit_code == 3, result.output
    assert "came from INFIMA_HALO_CLIENT_SECRET in the environment" in result.stderr
    assert "not-the-secret" not in result.stderr


def test_with_two_psas_connected_and_no_autotask_a_command_asks_which(world):
    """SPEC §10's default is the only connected PSA, else Autotask; with ConnectWise and Halo
    connected and no Autotask, "else Autotask" would only say Autotask is not set up."""
    doc = yaml.safe_load(world.config.read_text())
    del doc["autotask"]
    world.config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    del world.env["INFIMA_AUTOTASK_USERNAME"]
    result = world.run("search-accounts", "kestrel")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(
        "Error: ConnectWise and HaloPSA are both connected: say which this command is for "
        "with --psa connectwise or --psa halo."
    )
    assert world.run("search-accounts", "--psa", "halo", "kestrel").exit_code == 0


def test_a_reviewed_plan_writes_exactly_the_halo_change_it_shows(world, tmp_path):
    """`sync --dry-run --plan-out` then `sync --plan` (review before write) on Halo: the plan
    holds the POST body, and the real run writes it. (Both failed before: a Halo write has
    no effective date and no unit price, which the plan file required.)"""
    world.write_config(autotask=False, cw=False)
    plan = tmp_path / "plan.json"
    result, _ = world.sync("--dry-run", "--plan-out", str(plan))
    assert result.exit_code == 0, result.output
    assert world.posts() == []
    (saved,) = json.loads(plan.read_text())["items"]
    assert saved["request"] == WRITE  # the exact body, with the subscription's id
    result = world.run("sync", "--json", "--plan", str(plan))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["items"][0]["status"] == "updated" and world.sandbox.halo.count(LICENCE) == 14
    assert [p.body for p in world.posts()] == [WRITE]


def test_ctrl_c_while_a_write_waits_for_the_rate_limit_sends_nothing_more(world):
    """300 changed Halo mappings need more than the 290 requests pacing allows in 5 minutes:
    Ctrl-C while the 291st waits its turn ends the wait at once, and that write (and every
    one queued) is never sent: held, exit 130. The next run writes the rest, each once."""
    import _thread
    import time as real_time

    sb = world.sandbox
    clock = FakeClock()
    interrupted = threading.Event()

    def sleep(seconds: float) -> None:
        if seconds >= 60 and not interrupted.is_set():  # the pacing wait, not a backoff
            interrupted.set()
            _thread.interrupt_main()  # the operator's Ctrl-C, while the write waits
            real_time.sleep(0.5)  # the main thread takes it and stops the writes
        clock.sleep(seconds)

    world.clock = clock
    sb.halo.clock = clock.now
    mappings = sb.generate_halo(300, changes=300)
    world.write_config(autotask=False, cw=False, halo=mappings)
    seams_sleep = clock.sleep
    clock.sleep = sleep  # type: ignore[method-assign]
    result = world.run("sync", "--json")
    clock.sleep = seams_sleep  # type: ignore[method-assign]
    assert interrupted.is_set()
    assert result.exit_code == 130, result.output
    posts = [r for r in world.posts() if r.status == 200]
    assert 250 < len(posts) < 290  # what was sent before the wait; nothing after it
    assert len(world.posts()) == len(posts)
    held = [
        m
        for m in mappings
        if sb.halo.count(m["subscription_id"]) != 0
        and not any(u["licence_id"] == m["subscription_id"] for u in sb.halo.updates)
    ]
    assert len(held) == 300 - len(posts)
    assert "Interrupted" in result.stderr

    again, doc = world.sync()
    assert again.exit_code == 0, again.output
    applied = Counter(u["licence_id"] for u in sb.halo.updates)
    assert set(applied) == {m["subscription_id"] for m in mappings}
    assert set(applied.values()) == {1}  # every subscription written exactly once
    world.assert_nothing_created()
