"""Time and memory of `load_config` on a config as the tool writes it (SPEC §9).

Writes N mappings (default 5,000) with the tool's own ``save_config``, so every key of every
mapping is in the file (nulls included), then:

- the median wall time of ``load_config`` over ``--runs`` reads in this process;
- the peak RSS (Linux VmHWM) of a fresh interpreter that imports the config module and loads
  the file once, and how much that load added to the peak measured just before it.

    .venv/bin/python benchmarks/bench_config.py                   # N=5,000, median of 7
    .venv/bin/python benchmarks/bench_config.py --mappings 1000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from infima_autotask.config import ClientMapping, Config, load_config, save_config

# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent into the child.
_CHILD = """
import json, re, sys
from pathlib import Path
from infima_autotask.config import load_config
def peak_kb():
    with open("/proc/self/status") as status:
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1))
before = peak_kb()
config = load_config(Path(sys.argv[1]))
print(json.dumps({"before_kb": before, "after_kb": peak_kb(), "mappings": len(config.mappings)}))
"""


def write(path: Path, n: int) -> None:
    """A config of n mappings with names, as `map` leaves them, saved by the tool."""
    mappings = tuple(
        ClientMapping(
            client_id=100_000 + i,
            account_id=1_000 + i,
            contract_id=29_000_000 + i,
            contract_service_id=30_000_000 + i,
            service_id=30012,
            client_name=f"Client {i} Dental",
            account_name=f"Client {i} Dental Inc",
            contract_name="Managed Services 2026",
            service_name="INFIMA Security Awareness Training",
        )
        for i in range(n)
    )
    save_config(Config(mappings=mappings), path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mappings", type=int, default=5000, metavar="N")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-config-") as tmp:
        path = Path(tmp) / "config.yaml"
        write(path, args.mappings)
        size = path.stat().st_size
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            config = load_config(path)
            times.append(time.perf_counter() - started)
        assert len(config.mappings) == args.mappings
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, check=True
        )
        memory = json.loads(child.stdout)
    print(f"config of N={args.mappings} mappings, {size / 1e6:.1f} MB of YAML")
    print(f"load_config: median {statistics.median(times):.3f} s over {args.runs} runs")
    print(
        f"fresh process: peak RSS {memory['after_kb'] / 1024:.1f} MB, of which the load added "
        f"{(memory['after_kb'] - memory['before_kb']) / 1024:.1f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
