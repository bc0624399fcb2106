"""`make bench`: run every benchmarks/bench_*.py in turn and collect their summary lines.

Each benchmark measures gdr against a baseline in the same process and prints its numbers
and ratios; pass `--quick` to forward a smaller size to the ones that accept it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


SEPARATE = {"bench_quality"}
"""Benchmarks with their own make target (`make bench-quality`: hours of training, not a speed check)."""


def main() -> int:
    here = Path(__file__).resolve().parent
    extra = sys.argv[1:]
    failed = []
    for script in sorted(here.glob("bench_*.py")):
        if script.stem in SEPARATE:
            continue
        print(f"\n=== {script.stem} ===", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(script), *extra])
        print(f"--- {script.stem}: exit {code} in {time.perf_counter() - start:.1f} s", flush=True)
        if code:
            failed.append(script.stem)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
