"""`make bench`: run every benchmarks/bench_*.py in turn and collect their summary lines.

Each benchmark measures gdr against a baseline in the same process and prints its numbers
and ratios; pass `--quick` to forward a smaller size to the ones that accept it.

bench_scale runs `--quick` (2k vs 20k items, minutes) unless `--full` is given (`make bench FULL=1`,
or GDR_BENCH_FULL=1): 10k vs 1M items, over an hour on a 2-core CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

SEPARATE = {"bench_quality"}
"""Benchmarks with their own make target (`make bench-quality`: hours of training, not a speed check)."""
QUICK_UNLESS_FULL = {"bench_scale"}
"""Benchmarks that run their `--quick` size unless `--full` (or GDR_BENCH_FULL=1) asks for the whole one."""


def main() -> int:
    here = Path(__file__).resolve().parent
    full = "--full" in sys.argv[1:] or os.environ.get("GDR_BENCH_FULL") == "1"
    extra = [arg for arg in sys.argv[1:] if arg != "--full"]
    failed = []
    for script in sorted(here.glob("bench_*.py")):
        if script.stem in SEPARATE:
            continue
        print(f"\n=== {script.stem} ===", flush=True)
        start = time.perf_counter()
        quick = ["--quick"] if script.stem in QUICK_UNLESS_FULL and not full and "--quick" not in extra else []
        code = subprocess.call([sys.executable, str(script), *extra, *quick])
        print(f"--- {script.stem}: exit {code} in {time.perf_counter() - start:.1f} s", flush=True)
        if code:
            failed.append(script.stem)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
