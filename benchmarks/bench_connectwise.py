"""ConnectWise requests, in-flight peak and wall time of a real `sync` on the sandbox, vs SPEC §10.

N generated ConnectWise mappings (``Sandbox.generate_connectwise``: a company, an active
agreement and one INFIMA-product addition each, 30% with a different INFIMA count) are synced
by the real ``sync`` command (CLI code, isolated config, state folder, in-memory keyring,
credentials from the environment) against the loopback sandbox with ``--latency-ms`` added to
every request. The sandbox runs in this process (threads), unlike bench_sync's child process,
so wall times here include the simulator's share of the GIL: an upper bound.

- ConnectWise budget (SPEC §10): at most 2 reads per mapping plus 1 write per change. The
  ``/apis/`` requests are counted against ``2*N + k``; the codebase look-up (``/login/``) is
  shown apart. Over budget is a FAIL (exit 1).
- Mixed: N/2 Autotask (``Sandbox.generate``) plus N/2 ConnectWise mappings in one run; the
  Autotask count must still equal bench_sync's formula for its share
  (``bench_sync.request_floor(N/2, k)`` + 1 picklist read + further pages of a units-row
  query, which SPEC §9 allows), and ConnectWise's its budget.

Both runs are checked: every changed addition / contract service shows its target, the others
are untouched, one PATCH per change, never PUT, POST or DELETE.

    .venv/bin/python benchmarks/bench_connectwise.py                  # N=50, 30% changed, 20 ms
    .venv/bin/python benchmarks/bench_connectwise.py --mappings 1000

The last line is always ``cw_requests/budget=R mixed_autotask/formula=A``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from bench_sync import _peak, isolated, request_floor

from infima_autotask.cli import cli
from infima_autotask.config import parse_config, save_config
from infima_autotask.sandbox import Sandbox


@dataclass
class Counts:
    seconds: float
    cw_reads: int  # GET under /apis/
    cw_writes: int  # PATCH
    cw_other: int  # anything else under /apis/ (must be 0)
    cw_login: int  # the codebase look-up, outside /apis/
    cw_peak: int
    autotask: int
    autotask_pages: int  # further pages of a units-row query, as bench_sync counts them
    infima: int
    throttled: int


def config_doc(sb: Sandbox, mappings: list[dict[str, Any]]) -> dict[str, Any]:
    return {
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
        "mappings": mappings,
    }


def run_sync(sb: Sandbox, mappings: list[dict[str, Any]]) -> Counts:
    """The real `sync` command in this process against ``sb``; its request counts."""
    with tempfile.TemporaryDirectory(prefix="bench-cw-") as tmp:
        folder = Path(tmp)
        env = {
            "INFIMA_AUTOTASK_CONFIG": str(folder / "config.yaml"),
            "INFIMA_AUTOTASK_STATE_DIR": str(folder / "state"),
            "INFIMA_API_URL": sb.infima_url,
            "INFIMA_API_KEY": sb.api_key,
            "INFIMA_AUTOTASK_SECRET": sb.secret,
            "INFIMA_CONNECTWISE_PRIVATE_KEY": sb.cw_private_key,
        }
        save_config(parse_config(config_doc(sb, mappings), "benchmark"), folder / "config.yaml")
        with isolated(env):
            with sb._log_lock:
                sb.requests.clear()
            out, err = io.StringIO(), io.StringIO()
            code = 0
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                started = time.perf_counter()
                try:
                    cli.main(args=["sync"], prog_name="infima-autotask", standalone_mode=False)
                except click.exceptions.Exit as exc:
                    code = exc.exit_code
                except click.ClickException as exc:
                    exc.show()
                    code = exc.exit_code
                seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"sync exited {code}:\n{err.getvalue()}")
    with sb._log_lock:
        log = list(sb.requests)
    cw = [r for r in log if r.service == "connectwise"]
    apis = [r for r in cw if "/apis/" in r.path]
    return Counts(
        seconds=seconds,
        cw_reads=sum(1 for r in apis if r.method == "GET"),
        cw_writes=sum(1 for r in apis if r.method == "PATCH"),
        cw_other=sum(1 for r in apis if r.method not in ("GET", "PATCH")),
        cw_login=len(cw) - len(apis),
        cw_peak=_peak([(r.started, r.finished) for r in apis]),
        autotask=sum(1 for r in log if r.service == "autotask"),
        autotask_pages=sum(1 for r in log if r.service == "autotask" and "/query/next" in r.path),
        infima=sum(1 for r in log if r.service == "infima"),
        throttled=sum(1 for r in log if r.status == 429),
    )


def cw_changed(sb: Sandbox, mappings: list[dict[str, Any]]) -> dict[int, int]:
    """addition -> target, for the generated mappings whose count differs."""
    changed = {}
    for m in mappings:
        active = sb.state.infima_clients[m["client_id"]].active
        if sb.cw.quantity(m["addition_id"]) != active:
            changed[m["addition_id"]] = active
    return changed


def check_cw(sb: Sandbox, mappings: list[dict[str, Any]], changed: dict[int, int]) -> None:
    wrong = [m["addition_id"] for m in mappings if cw_changed(sb, [m])]
    if wrong:
        raise SystemExit(f"FAIL: {len(wrong)} additions do not show their target")
    per_addition = Counter(p["addition_id"] for p in sb.cw.patches)
    if set(per_addition) != set(changed) or any(c != 1 for c in per_addition.values()):
        raise SystemExit(f"FAIL: PATCHes are not exactly one per change: {per_addition}")
    if sb.cw.replaced or sb.cw.created or sb.cw.deleted:
        raise SystemExit("FAIL: ConnectWise received a PUT, POST or DELETE")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mappings", type=int, default=50)
    parser.add_argument("--changed", type=float, default=0.3)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()
    n, latency = args.mappings, args.latency_ms / 1000

    with Sandbox(latency=latency) as sb:
        mappings = sb.generate_connectwise(n, changed_fraction=args.changed)
        changed = cw_changed(sb, mappings)
        ours = run_sync(sb, mappings)
        check_cw(sb, mappings, changed)
    k = len(changed)
    budget = 2 * n + k
    used = ours.cw_reads + ours.cw_writes + ours.cw_other

    half = n // 2
    with Sandbox(latency=latency) as sb:
        at = sb.generate(half, changed_fraction=args.changed)
        cwm = sb.generate_connectwise(n - half, changed_fraction=args.changed)
        at_changed = sum(
            1
            for m in at
            if sb.units_on(m["contract_service_id"], sb.state.this_month)
            != sb.state.infima_clients[m["client_id"]].active
        )
        mixed_cw_changed = cw_changed(sb, cwm)
        mixed = run_sync(sb, [*at, *cwm])
        check_cw(sb, cwm, mixed_cw_changed)
        if len(sb.adjustments()) != at_changed:
            raise SystemExit("FAIL: mixed run's Autotask adjustments are not one per change")
    # bench_sync's count: the SPEC §9 floor, the picklist read and any further pages.
    at_formula = request_floor(half, at_changed) + 1 + mixed.autotask_pages
    mixed_budget = 2 * (n - half) + len(mixed_cw_changed)
    mixed_used = mixed.cw_reads + mixed.cw_writes + mixed.cw_other

    print(f"N={n} ConnectWise mappings, k={k} changed, latency {args.latency_ms:g} ms")
    print(f"  ConnectWise /apis/ requests  {used} ({ours.cw_reads} GET + {ours.cw_writes} PATCH)")
    print(f"  SPEC §10 budget 2N + k       {budget}   ratio {used / budget:.3f}")
    print(f"  per mapping                  {used / n:.2f}")
    print(f"  codebase look-ups (/login/)  {ours.cw_login}")
    print(f"  max ConnectWise in flight    {ours.cw_peak}")
    print(f"  Autotask requests            {ours.autotask}")
    print(f"  INFIMA requests              {ours.infima}")
    print(f"  answers 429                  {ours.throttled}")
    print(f"  wall time                    {ours.seconds:.2f} s")
    print(
        f"mixed: {half} Autotask (k={at_changed}) + {n - half} ConnectWise "
        f"(k={len(mixed_cw_changed)})"
    )
    print(
        f"  Autotask requests            {mixed.autotask}   bench_sync formula {at_formula} "
        f"(next pages {mixed.autotask_pages})"
    )
    print(f"  ConnectWise /apis/ requests  {mixed_used}   budget {mixed_budget}")
    print(f"  max ConnectWise in flight    {mixed.cw_peak}")
    print(f"  wall time                    {mixed.seconds:.2f} s")
    failed = False
    if used > budget or ours.cw_other or mixed_used > mixed_budget or mixed.cw_other:
        print("FAIL: ConnectWise requests over SPEC §10's budget", file=sys.stderr)
        failed = True
    if ours.autotask:
        print("FAIL: a ConnectWise-only run sent Autotask requests", file=sys.stderr)
        failed = True
    if mixed.autotask != at_formula:
        print(
            "FAIL: mixed run's Autotask requests differ from bench_sync's formula", file=sys.stderr
        )
        failed = True
    print(
        f"cw_requests/budget={used / budget:.3f} "
        f"mixed_autotask/formula={mixed.autotask / at_formula:.3f}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
