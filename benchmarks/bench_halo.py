"""HaloPSA requests and the time pacing adds to a real `sync` on the sandbox, vs SPEC §10.

N generated Halo mappings (``Sandbox.generate_halo``: a client, one INFIMA subscription billed
by a recurring-invoice line, ``--changed`` of them with a different INFIMA count) are synced by
the real ``sync`` command (CLI code, isolated config and state, in-memory keyring, secrets from
the environment) against the loopback simulator, which counts hosted Halo's limit of 300
requests per rolling 5 minutes.

Pacing is measured on a simulated clock shared by the tool (``Seams.monotonic`` and
``Seams.sleep``) and the simulator, so a run that must wait five minutes for the window to slide
finishes in seconds and reports the wait it would have made: ``pacing wait``. Pass
``--real-clock`` to wait for real instead (N above ~290 then takes minutes).

- Budget (SPEC §10): one paged read of the partner's subscriptions plus 1 write per change:
  ``ceil(L / 1000) + k`` for L subscriptions in the tenant; the OAuth discovery and token
  requests (``/api/authinfo``, ``/auth/token``) are shown apart. Over budget is a FAIL.
- Limit: the most requests the simulator saw in any rolling 300 s window, and its 429s; a
  429 or more than 300 in a window is a FAIL.
- Every changed subscription shows its target, one POST per change, and no subscription was
  ever created.

    .venv/bin/python benchmarks/bench_halo.py                   # N=50, 30% changed
    .venv/bin/python benchmarks/bench_halo.py --mappings 400 --changed 1.0

The last line is always ``halo_requests/budget=R max_in_window=W pacing_wait_s=S``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click
from bench_sync import isolated

from infima_autotask.cli import cli
from infima_autotask.config import parse_config, save_config
from infima_autotask.runtime import Seams
from infima_autotask.sandbox import Sandbox

WINDOW = 300.0


class SimulatedClock:
    """A monotonic clock that moves when slept on, and with real time passing."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()
        self.waited = 0.0

    def now(self) -> float:
        with self._lock:
            return time.monotonic() + self._offset

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._offset += max(0.0, seconds)
            self.waited += max(0.0, seconds)


def run_sync(sb: Sandbox, mappings: list[dict[str, Any]], clock: SimulatedClock | None) -> float:
    """The real `sync` command in this process against ``sb``; its wall time."""
    with tempfile.TemporaryDirectory(prefix="bench-halo-") as tmp:
        folder = Path(tmp)
        doc = {
            "version": 2,
            "halo": {"url": sb.halo_url, "tenant": None, "client_id": sb.halo_client_id},
            "infima": {"api_url": sb.infima_url},
            "mappings": mappings,
        }
        save_config(parse_config(doc, "benchmark"), folder / "config.yaml")
        env = {
            "INFIMA_AUTOTASK_CONFIG": str(folder / "config.yaml"),
            "INFIMA_AUTOTASK_STATE_DIR": str(folder / "state"),
            "INFIMA_API_URL": sb.infima_url,
            "INFIMA_API_KEY": sb.api_key,
            "INFIMA_HALO_CLIENT_SECRET": sb.halo_client_secret,
        }
        seams = Seams() if clock is None else Seams(monotonic=clock.now, sleep=clock.sleep)
        with isolated(env):
            out, err = io.StringIO(), io.StringIO()
            code = 0
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                started = time.perf_counter()
                try:
                    cli.main(
                        args=["sync"], prog_name="infima-autotask", standalone_mode=False, obj=seams
                    )
                except click.exceptions.Exit as exc:
                    code = exc.exit_code
                except click.ClickException as exc:
                    exc.show()
                    code = exc.exit_code
                seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"sync exited {code}:\n{err.getvalue()}")
    return seconds


def max_in_window(times: list[float]) -> int:
    """The most request times within any span of WINDOW seconds."""
    times = sorted(times)
    best, start = 0, 0
    for end, when in enumerate(times):
        while times[start] <= when - WINDOW:
            start += 1
        best = max(best, end - start + 1)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mappings", type=int, default=50)
    parser.add_argument("--changed", type=float, default=0.3)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--real-clock", action="store_true")
    args = parser.parse_args()
    n = args.mappings
    clock = None if args.real_clock else SimulatedClock()

    with Sandbox(latency=args.latency_ms / 1000) as sb:
        served: list[float] = []
        if clock is not None:
            sb.halo.clock = clock.now
        mappings = sb.generate_halo(n, changes=round(n * args.changed))
        targets = {
            m["subscription_id"]: sb.state.infima_clients[m["client_id"]].active for m in mappings
        }
        changed = {lic: t for lic, t in targets.items() if sb.halo.count(lic) != t}
        subscriptions = len(sb.halo.licences)
        real_admit = sb.halo.admit

        def admit() -> float | None:  # record when each served request was counted
            wait = real_admit()
            if wait is None:
                served.append(sb.halo.clock())
            return wait

        sb.halo.admit = admit  # type: ignore[method-assign]
        seconds = run_sync(sb, mappings, clock)
        halo = [r for r in sb.requests if r.service == "halo"]
        wrong = [lic for lic, t in targets.items() if sb.halo.count(lic) != t]
        posts = Counter(u["licence_id"] for u in sb.halo.updates)
        if wrong:
            raise SystemExit(f"FAIL: {len(wrong)} subscriptions do not show their target")
        if set(posts) != set(changed) or any(c != 1 for c in posts.values()):
            raise SystemExit("FAIL: POSTs are not exactly one per change")
        if sb.halo.creates:
            raise SystemExit("FAIL: a subscription was created")

    auth = [r for r in halo if not r.path.startswith("/api/") or r.path == "/api/authinfo"]
    api = [r for r in halo if r not in auth]
    reads = [r for r in api if r.method == "GET"]
    writes = [r for r in api if r.method == "POST"]
    throttled = sum(1 for r in halo if r.status == 429)
    k = len(changed)
    budget = math.ceil(subscriptions / 1000) + k
    used = len(api)
    peak = max_in_window(served)
    waited = clock.waited if clock is not None else 0.0

    print(f"N={n} Halo mappings, k={k} changed, {subscriptions} subscriptions in the tenant")
    print(f"  Halo /api/ requests          {used} ({len(reads)} GET + {len(writes)} POST)")
    print(f"  SPEC §10 budget ceil(L/1000)+k {budget}   ratio {used / budget:.3f}")
    print(f"  authinfo + token             {len(auth)}")
    print(f"  most in any 300 s window     {peak} (hosted limit 300; 290 by the tool's send times)")
    print(f"  answers 429                  {throttled}")
    print(f"  pacing wait                  {waited:.1f} s ({'simulated' if clock else 'real'})")
    print(f"  wall time                    {seconds:.2f} s")
    ratio = f"{used / budget:.3f}"
    print(f"halo_requests/budget={ratio} max_in_window={peak} pacing_wait_s={waited:.1f}")
    return 1 if used > budget or throttled or peak > 300 else 0


if __name__ == "__main__":
    raise SystemExit(main())
