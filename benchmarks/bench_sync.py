"""Wall time and Autotask requests of a real `sync` on the sandbox, vs SPEC §9 and a naive loop.

The sandbox (both simulated APIs, with ``--latency-ms`` added to every request and Autotask's
3-in-flight limit per endpoint answered 429) runs in a child process, as the real services run
on other machines: its CPU and its share of the GIL are not charged to the tool. The tool's
real ``sync`` command runs in this process through the CLI code, with an isolated config,
state folder, in-memory keyring and credentials from the environment; only the command is
timed (no interpreter start-up, no imports). Figures:

- Autotask requests (the sandbox's request log) against the SPEC §9 floor
  ``1 + 3*ceil(N/500) + k + ceil(k/500)``, plus 1 when k >= 2 (the first write is sent alone
  and read back before any other); the tool also reads one picklist request (Contracts status
  and contractPeriodType labels), which SPEC §9 allows, so requests/floor is (floor + 1) /
  floor when all is well.
- Wall time against ``latency * (1 + 3*ceil(N/500) + 2 + ceil((k-1)/3) + ceil(k/500))`` for
  k >= 2: the Autotask requests on the critical path (the first write and its read-back, then
  three writes in flight). INFIMA is not in that floor, yet
  its user lists (one per synced client, 50 users a page) must be read before the threshold
  check; the table also shows a floor that includes them (client list pages one after the
  other, then the user pages at ``runner.INFIMA_THREADS`` in flight, overlapping the reads).
- A naive per-client loop written here with plain ``requests`` against a fresh sandbox holding
  the same data: per client its INFIMA user pages, then Contracts/{id}, ContractServices/{id},
  Services/{id} and a units-row query, and a write when the count changed, one at a time.

Both runs are checked: every changed contract service shows its target for the month, every
other one is untouched, and there is exactly one adjustment per change.

    .venv/bin/python benchmarks/bench_sync.py                      # N=300, 30% changed, 20 ms
    .venv/bin/python benchmarks/bench_sync.py --startup            # also `--help` start-up time
    .venv/bin/python benchmarks/bench_sync.py --mappings 5000 --latency-ms 0 --no-naive --memory

``--memory`` also runs the installed ``infima-autotask sync`` as a child process under
``/usr/bin/time -v`` against another fresh sandbox and reports its maximum resident set size.
The last line is always ``requests/floor=R time/floor=T naive/ours=X``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import click
import keyring
import requests

from infima_autotask import runner
from infima_autotask import sandbox as sandbox_module
from infima_autotask.cli import cli
from infima_autotask.config import parse_config, save_config
from infima_autotask.memkeyring import MemoryKeyring
from infima_autotask.sandbox import Sandbox
from infima_autotask.sandbox.infima import InfimaHandler

VENV_BIN = Path(sys.executable).parent
PAGE = 50  # INFIMA's page size, as the tool and the naive loop use it
AUTOTASK_PAGE = 500


# --- the sandbox in a child process ------------------------------------------------------------


def _serve(conn: Connection, latency: float, infima_latency: float) -> None:
    """Child process: run a Sandbox and answer commands until ``stop``."""
    if infima_latency != latency:
        sandbox_module.InfimaHandler = _infima_handler(latency, infima_latency)  # type: ignore[misc]
    with Sandbox(latency=latency) as sandbox:
        conn.send(
            {
                "autotask_url": sandbox.autotask_url,
                "infima_url": sandbox.infima_url,
                "username": sandbox.username,
                "secret": sandbox.secret,
                "integration_code": sandbox.integration_code,
                "api_key": sandbox.api_key,
                "month": sandbox.state.this_month,
            }
        )
        while True:
            command, args = conn.recv()
            if command == "stop":
                conn.send(None)
                return
            try:
                conn.send(("ok", _COMMANDS[command](sandbox, *args)))
            except Exception as exc:  # reported in the parent, which stops the benchmark
                conn.send(("error", repr(exc)))


def _infima_handler(latency: float, infima_latency: float) -> type[InfimaHandler]:
    """The INFIMA simulator with its own per-request latency (``--infima-latency-ms``)."""

    class Handler(InfimaHandler):
        def hold_for(self, seconds: float) -> None:
            super().hold_for(infima_latency if seconds == latency else seconds)

    return Handler


def _log(sandbox: Sandbox) -> list[tuple[str, str, str, int, float, float]]:
    with sandbox._log_lock:
        return [
            (r.service, r.method, r.path, r.status, r.started, r.finished) for r in sandbox.requests
        ]


def _clear(sandbox: Sandbox) -> None:
    with sandbox._log_lock:
        sandbox.requests.clear()


def _units(sandbox: Sandbox, cs_ids: list[int]) -> list[int | None]:
    return [sandbox.units_on(cs, sandbox.state.this_month) for cs in cs_ids]


def _users(sandbox: Sandbox, client_ids: list[int]) -> list[tuple[int, int]]:
    """(active, listed) users of each client."""
    with sandbox.state.lock:
        clients = [sandbox.state.infima_clients[c] for c in client_ids]
        return [(c.active, c.active + c.inactive) for c in clients]


def _infima_clients(sandbox: Sandbox) -> int:
    with sandbox.state.lock:
        return len(sandbox.state.infima_clients)


_COMMANDS: dict[str, Any] = {
    "generate": lambda sb, n, fraction: sb.generate(n, changed_fraction=fraction),
    "log": _log,
    "clear": _clear,
    "adjustments": lambda sb: sb.adjustments(),
    "units": _units,
    "users": _users,
    "infima_clients": _infima_clients,
}


class RemoteSandbox:
    """A Sandbox in a child process, driven over a pipe."""

    def __init__(self, latency: float, infima_latency: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, latency, infima_latency), daemon=True
        )
        self._process.start()
        self.info: dict[str, Any] = self._conn.recv()

    def call(self, command: str, *args: Any) -> Any:
        self._conn.send((command, args))
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"sandbox {command} failed: {value}")
        return value

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self._conn.send(("stop", ()))
            self._conn.recv()
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.terminate()


@contextlib.contextmanager
def remote_sandbox(latency: float, infima_latency: float) -> Iterator[RemoteSandbox]:
    sandbox = RemoteSandbox(latency, infima_latency)
    try:
        yield sandbox
    finally:
        sandbox.close()


# --- the work and its check --------------------------------------------------------------------


@dataclass
class Work:
    """The generated mappings and what a correct sync must leave behind."""

    mappings: list[dict[str, Any]]
    before: dict[int, int]  # contract service -> units this month
    target: dict[int, int]  # contract service -> active INFIMA users
    listed: dict[int, int]  # client id -> users INFIMA lists (active and inactive)
    infima_clients: int  # every INFIMA client, the sandbox's seeded ones too

    @property
    def changed(self) -> set[int]:
        return {cs for cs, units in self.before.items() if units != self.target[cs]}

    @property
    def client_pages(self) -> int:
        """INFIMA client list requests: paging stops at a short page (SPEC §9)."""
        return self.infima_clients // PAGE + 1

    @property
    def user_pages(self) -> int:
        """INFIMA user list requests, one paged list per synced client."""
        return sum(self.listed[m["client_id"]] // PAGE + 1 for m in self.mappings)


def prepare(sandbox: RemoteSandbox, n: int, fraction: float) -> Work:
    mappings = sandbox.call("generate", n, fraction)
    cs_ids = [m["contract_service_id"] for m in mappings]
    clients = [m["client_id"] for m in mappings]
    before: dict[int, int] = {}
    for cs, units in zip(cs_ids, sandbox.call("units", cs_ids), strict=True):
        if units is None:
            raise RuntimeError(f"the generator left contract service {cs} without a units row")
        before[cs] = units
    users = sandbox.call("users", clients)
    target = {cs: active for cs, (active, _) in zip(cs_ids, users, strict=True)}
    listed = {client: total for client, (_, total) in zip(clients, users, strict=True)}
    return Work(mappings, before, target, listed, sandbox.call("infima_clients"))


def check(sandbox: RemoteSandbox, work: Work, who: str) -> None:
    """Every change landed once; nothing else moved."""
    cs_ids = list(work.before)
    after = dict(zip(cs_ids, sandbox.call("units", cs_ids), strict=True))
    wrong = [cs for cs in cs_ids if after[cs] != work.target[cs]]
    if wrong:
        raise SystemExit(f"{who}: {len(wrong)} contract services do not show their target")
    per_cs = Counter(a["contractServiceID"] for a in sandbox.call("adjustments"))
    if set(per_cs) != work.changed or any(count != 1 for count in per_cs.values()):
        raise SystemExit(f"{who}: adjustments are not exactly one per change: {per_cs}")


# --- the request log ---------------------------------------------------------------------------


@dataclass
class Measured:
    seconds: float
    autotask: int
    picklist: int
    pages: int  # further pages of a query (units rows beyond 500 a chunk: SPEC §9 allows them)
    writes: int
    infima: int
    throttled: int  # answers 429 (the 3-in-flight limit, or anything else)
    autotask_peak: int  # most Autotask requests in the server at once
    infima_peak: int
    write_seconds: float


def _peak(spans: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def measure_log(sandbox: RemoteSandbox, seconds: float) -> Measured:
    log = sandbox.call("log")
    autotask = [r for r in log if r[0] == "autotask"]
    infima = [r for r in log if r[0] == "infima"]
    writes = [r for r in autotask if r[1] == "POST" and r[2].endswith("ContractServiceAdjustments")]
    write_seconds = max(r[5] for r in writes) - min(r[4] for r in writes) if writes else 0.0
    return Measured(
        seconds=seconds,
        autotask=len(autotask),
        picklist=sum(1 for r in autotask if "entityInformation/fields" in r[2]),
        pages=sum(1 for r in autotask if "/query/next" in r[2]),
        writes=len(writes),
        infima=len(infima),
        throttled=sum(1 for r in log if r[3] == 429),
        autotask_peak=_peak([(r[4], r[5]) for r in autotask]),
        infima_peak=_peak([(r[4], r[5]) for r in infima]),
        write_seconds=write_seconds,
    )


# --- the tool ----------------------------------------------------------------------------------


def write_config(folder: Path, sandbox: RemoteSandbox, work: Work) -> Path:
    info = sandbox.info
    config = {
        "version": 1,
        "state_dir": None,
        "autotask": {
            "username": info["username"],
            "integration_code": info["integration_code"],
            "api_url": info["autotask_url"],
        },
        "infima": {"api_url": info["infima_url"]},
        "mappings": work.mappings,
    }
    path = folder / "config.yaml"
    # As the tool writes it (SPEC §9): every key of every mapping, nulls included.
    save_config(parse_config(config, "benchmark"), path)
    return path


def tool_env(folder: Path, sandbox: RemoteSandbox) -> dict[str, str]:
    info = sandbox.info
    return {
        "INFIMA_AUTOTASK_CONFIG": str(folder / "config.yaml"),
        "INFIMA_AUTOTASK_STATE_DIR": str(folder / "state"),
        "INFIMA_API_URL": info["infima_url"],
        "INFIMA_AUTOTASK_SECRET": info["secret"],
        "INFIMA_API_KEY": info["api_key"],
    }


@contextlib.contextmanager
def isolated(env: dict[str, str]) -> Iterator[None]:
    saved_env = dict(os.environ)
    saved_keyring = keyring.get_keyring()
    for name in list(os.environ):
        if name.startswith("INFIMA_") or name == "PYTHON_KEYRING_BACKEND":
            del os.environ[name]
    os.environ.update(env)
    keyring.set_keyring(MemoryKeyring())
    try:
        yield
    finally:
        keyring.set_keyring(saved_keyring)
        os.environ.clear()
        os.environ.update(saved_env)


def run_tool(sandbox: RemoteSandbox, work: Work) -> tuple[Measured, str]:
    """The real `sync` command in this process; (measurements, its summary line)."""
    month = sandbox.info["month"].strftime("%Y-%m")
    with (
        tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp,
        isolated(tool_env(Path(tmp), sandbox)),
    ):
        write_config(Path(tmp), sandbox, work)
        sandbox.call("clear")
        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            started = time.perf_counter()
            try:
                cli.main(args=["sync", "--month", month], prog_name="infima-autotask",
                         standalone_mode=False)  # fmt: skip
            except click.exceptions.Exit as exc:
                code = exc.exit_code
            except click.ClickException as exc:
                exc.show()
                code = exc.exit_code
            seconds = time.perf_counter() - started
    summary = err.getvalue().strip().splitlines()[-1:] or [""]
    if code != 0:
        raise SystemExit(f"sync exited {code}:\n{err.getvalue()}")
    return measure_log(sandbox, seconds), summary[0]


def run_tool_memory(sandbox: RemoteSandbox, work: Work) -> tuple[float, float]:
    """The installed console script under /usr/bin/time -v: (peak RSS in MB, seconds)."""
    month = sandbox.info["month"].strftime("%Y-%m")
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        write_config(Path(tmp), sandbox, work)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": tmp,
            "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
            **tool_env(Path(tmp), sandbox),
        }
        command = ["/usr/bin/time", "-v", str(VENV_BIN / "infima-autotask"), "sync", "--quiet",
                   "--month", month]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"sync under /usr/bin/time exited {done.returncode}:\n{done.stderr}")
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    if found is None:
        raise SystemExit("no 'Maximum resident set size' in /usr/bin/time -v output")
    return int(found.group(1)) / 1024, seconds


def startup_seconds(runs: int = 9) -> float:
    """Median wall time of `infima-autotask --help` (a fresh interpreter each time)."""
    command = [str(VENV_BIN / "infima-autotask"), "--help"]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# --- the naive loop ----------------------------------------------------------------------------


def run_naive(sandbox: RemoteSandbox, work: Work) -> Measured:
    """One client after the other: user pages, 4 Autotask reads, a write when changed."""
    info = sandbox.info
    base = info["autotask_url"] + "v1.0/"
    autotask = requests.Session()
    autotask.headers.update(
        {
            "UserName": info["username"],
            "Secret": info["secret"],
            "ApiIntegrationCode": info["integration_code"],
        }
    )
    infima = requests.Session()
    infima.headers["X-API-Key"] = info["api_key"]
    # Noon UTC: a midnight date lands on the previous day in the sandbox's New York tenant.
    when = info["month"].strftime("%Y-%m-01T12:00:00Z")
    sandbox.call("clear")
    started = time.perf_counter()
    for mapping in work.mappings:
        active = 0
        offset = 0
        while True:
            url = f"{info['infima_url']}/v1/clients/{mapping['client_id']}/users"
            params = {"limit": PAGE, "offset": offset}
            users = infima.get(url, params=params, timeout=30).json()["items"]
            active += sum(1 for user in users if user.get("status") == "active")
            if len(users) < PAGE:
                break
            offset += PAGE
        cs_id = mapping["contract_service_id"]
        autotask.get(f"{base}Contracts/{mapping['contract_id']}", timeout=30).raise_for_status()
        cs = autotask.get(f"{base}ContractServices/{cs_id}", timeout=30).json()["item"]
        autotask.get(f"{base}Services/{cs['serviceID']}", timeout=30).raise_for_status()
        query = {
            "filter": [
                {"op": "eq", "field": "contractServiceID", "value": cs_id},
                {"op": "lte", "field": "startDate", "value": when},
                {"op": "gte", "field": "endDate", "value": when},
            ]
        }
        rows = autotask.post(f"{base}ContractServiceUnits/query", json=query, timeout=30)
        row = max(rows.json()["items"], key=lambda r: (r["startDate"], r["id"]))
        change = active - row["units"]
        units = row["units"] or 1  # a row's price and cost are extended amounts
        if change:
            body = {
                "contractID": mapping["contract_id"],
                "contractServiceID": cs_id,
                "serviceID": cs["serviceID"],
                "effectiveDate": when,
                "unitChange": change,
                "adjustedUnitPrice": round(row["price"] / units, 4),
                "adjustedUnitCost": round(row["cost"] / units, 4),
            }
            autotask.post(
                f"{base}ContractServiceAdjustments", json=body, timeout=30
            ).raise_for_status()
    seconds = time.perf_counter() - started
    return measure_log(sandbox, seconds)


# --- the report --------------------------------------------------------------------------------


def request_floor(n: int, k: int) -> int:
    first = 1 if k >= 2 else 0  # the first write's own read-back
    return 1 + 3 * math.ceil(n / AUTOTASK_PAGE) + k + math.ceil(k / AUTOTASK_PAGE) + first


def _writes_on_path(k: int) -> int:
    """Writes on the critical path: the first alone and read back, then three at once."""
    return 2 + math.ceil((k - 1) / 3) if k >= 2 else k


def time_floor_requests(n: int, k: int) -> int:
    return 1 + 3 * math.ceil(n / AUTOTASK_PAGE) + _writes_on_path(k) + math.ceil(k / AUTOTASK_PAGE)


def with_infima_floor(n: int, k: int, work: Work, latency: float, infima_latency: float) -> float:
    """Seconds on the critical path counting INFIMA too: the client list page by page, then
    the user pages (INFIMA_THREADS at once) beside the batched reads and the picklist, then
    the threshold, the writes (three at once) and the verification."""
    reads = latency * (3 * math.ceil(n / AUTOTASK_PAGE) + 1)
    counting = infima_latency * math.ceil(work.user_pages / runner.INFIMA_THREADS)
    after = latency * (1 + _writes_on_path(k) + math.ceil(k / AUTOTASK_PAGE))
    return infima_latency * work.client_pages + max(reads, counting) + after


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mappings", type=int, default=300, metavar="N")
    parser.add_argument("--changed", type=float, default=0.3, metavar="FRACTION")
    parser.add_argument("--latency-ms", type=float, default=20.0, metavar="MS")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive loop")
    parser.add_argument("--startup", action="store_true", help="also time `--help` start-up")
    parser.add_argument(
        "--memory", action="store_true", help="also the peak RSS of the console script's sync"
    )
    parser.add_argument(
        "--infima-latency-ms",
        type=float,
        metavar="MS",
        help="INFIMA's own latency (default: --latency-ms); the floors count Autotask's",
    )
    args = parser.parse_args()
    n, latency = args.mappings, args.latency_ms / 1000
    infima_ms = args.latency_ms if args.infima_latency_ms is None else args.infima_latency_ms
    infima_latency = infima_ms / 1000

    with remote_sandbox(latency, infima_latency) as sandbox:
        work = prepare(sandbox, n, args.changed)
        k = len(work.changed)
        ours, summary = run_tool(sandbox, work)
        check(sandbox, work, "sync")
    naive: Measured | None = None
    if not args.no_naive:
        with remote_sandbox(latency, infima_latency) as sandbox:
            naive_work = prepare(sandbox, n, args.changed)
            if naive_work.changed != work.changed:
                raise SystemExit("the fresh sandbox did not generate the same work")
            naive = run_naive(sandbox, naive_work)
            check(sandbox, naive_work, "naive loop")

    floor = request_floor(n, k)
    t_floor = latency * time_floor_requests(n, k)
    client_pages = work.client_pages
    t_infima = with_infima_floor(n, k, work, latency, infima_latency)
    print(
        f"sync of N={n} mappings, k={k} changed, latency {args.latency_ms:g} ms per request "
        f"(INFIMA {infima_ms:g} ms)"
    )
    print(summary)
    rows = [
        ("", "ours", "naive", "floor"),
        ("Autotask requests", ours.autotask, naive.autotask if naive else "-", floor),
        ("  of which picklist", ours.picklist, 0 if naive else "-", 0),
        ("  of which next pages", ours.pages, naive.pages if naive else "-", 0),
        ("  of which writes", ours.writes, naive.writes if naive else "-", k),
        (
            "INFIMA requests",
            ours.infima,
            naive.infima if naive else "-",
            client_pages + work.user_pages,
        ),  # fmt: skip
        (
            "wall time (s)",
            f"{ours.seconds:.3f}",
            f"{naive.seconds:.3f}" if naive else "-",
            f"{t_floor:.3f}",
        ),  # fmt: skip
        ("  floor with INFIMA (s)", "", "", f"{t_infima:.3f}"),
        ("write phase (s)", f"{ours.write_seconds:.3f}", "", f"{latency * math.ceil(k / 3):.3f}"),
        ("max Autotask in flight", ours.autotask_peak, naive.autotask_peak if naive else "-", 3),
        (
            "max INFIMA in flight",
            ours.infima_peak,
            naive.infima_peak if naive else "-",
            runner.INFIMA_THREADS,
        ),  # fmt: skip
        ("429 answers", ours.throttled, naive.throttled if naive else "-", 0),
    ]
    for label, *cells in rows:
        print(f"{label:<24}" + "".join(f"{cell!s:>12}" for cell in cells))
    print(
        "requests/floor without the picklist read and further pages: "
        f"{(ours.autotask - ours.picklist - ours.pages) / floor:.2f}"
    )
    if t_infima:
        print(f"time/floor with INFIMA in the floor: {ours.seconds / t_infima:.2f}")
    print("checked: every change shows its target, one adjustment each, nothing else moved")
    if args.startup:
        print(f"`infima-autotask --help` start-up (median of 9): {startup_seconds():.3f} s")
    if args.memory:
        with remote_sandbox(latency, infima_latency) as sandbox:
            mem_work = prepare(sandbox, n, args.changed)
            sandbox.call("clear")
            peak, seconds = run_tool_memory(sandbox, mem_work)
            check(sandbox, mem_work, "sync under /usr/bin/time")
        print(
            f"`infima-autotask sync` N={n}: peak RSS {peak:.1f} MB ({seconds:.2f} s with start-up)"
        )
    time_ratio = f"{ours.seconds / t_floor:.2f}" if t_floor else "n/a"
    naive_ratio = f"{naive.seconds / ours.seconds:.1f}" if naive else "n/a"
    requests_ratio = f"{ours.autotask / floor:.2f}"
    print(f"requests/floor={requests_ratio} time/floor={time_ratio} naive/ours={naive_ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
