"""Benchmark: `gdr preprocess amazon-books` on a file with the real ratings CSV's shape.

The real `ratings_Books.csv` has 22.5M rows (no header: user,item,rating,timestamp), about
8M users and 2.3M items, both long-tailed. We write a synthetic file of that shape once
(numpy + polars, cached under `bench-out/preprocess/`), then run the real command in a
subprocess and report its wall time and peak RSS against the targets (60 s, 6 GB).

Baseline (same process, same file): the textbook eager pipeline on string keys — read the
whole CSV, drop exact duplicates, then k-core with a string group-by per round, then sort.
It is what one writes without thinking about memory; the ratio says what the integer-coded
lazy pipeline buys. Skip it with `--no-baseline`.

    python benchmarks/bench_preprocess.py            # full size
    python benchmarks/bench_preprocess.py --rows 2000000
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 60.0
TARGET_GB = 6.0


def long_tail_counts(n: int, total: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """`n` counts >= 1 summing to `total`, with Pareto(`alpha`)-tailed expected values.  # [n] int64"""
    weights = rng.pareto(alpha, size=n) + 1.0
    return 1 + rng.multinomial(total - n, weights / weights.sum())


def make_ratings(path: Path, rows: int, seed: int = 0) -> None:
    """Write an Amazon-Books-shaped ratings CSV with `rows` lines (users ~ rows/2.8, items ~ rows/9.8)."""
    rng = np.random.default_rng(seed)
    n_users = max(1, round(rows / 2.81))
    n_items = max(1, round(rows / 9.78))
    users = np.repeat(np.arange(n_users, dtype=np.int64), long_tail_counts(n_users, rows, 1.6, rng))
    items = np.repeat(np.arange(n_items, dtype=np.int64), long_tail_counts(n_items, rows, 1.2, rng))
    rng.shuffle(users)
    rng.shuffle(items)
    # permute ids so raw ids are not sorted by popularity
    users = rng.permutation(n_users)[users] * 7919 + 104729
    items = rng.permutation(n_items)[items] * 31 + 1000003
    days = rng.integers(9_500, 16_300, size=rows)  # 1996 .. 2014
    frame = pl.DataFrame(
        {
            "user": pl.Series(users).cast(pl.String).str.zfill(13),
            "item": pl.Series(items).cast(pl.String).str.zfill(10),
            "rating": rng.integers(1, 6, size=rows).astype(np.float64),
            "timestamp": days.astype(np.int64) * 86_400,
        }
    ).with_columns(pl.concat_str(pl.lit("A"), "user").alias("user"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.write_csv(tmp, include_header=False, float_precision=1)
    os.replace(tmp, path)


def run_cli(csv: Path, data_dir: Path) -> tuple[float, float, float, int]:
    """Run `gdr preprocess amazon-books` in a subprocess -> (wall s, CPU s, peak RSS GB, exit code)."""
    cmd = [
        sys.executable,
        "-m",
        "gdr_cli",
        "preprocess",
        "amazon-books",
        "--input",
        str(csv),
        "--data-dir",
        str(data_dir),
        "--name",
        "bench-books",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=REPO, env={**os.environ, "GDR_QUIET": "1", "COLUMNS": "200"}, capture_output=True, text=True
    )
    print(proc.stderr if proc.returncode else proc.stderr.strip().splitlines()[-1], flush=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, after.ru_maxrss * 1024 / 1e9, proc.returncode


def baseline(csv: Path, k: int = 5) -> tuple[float, float]:
    """The eager string-keyed pipeline (see module docstring) -> (wall s, CPU s)."""
    start, cpu = time.perf_counter(), time.process_time()
    df = pl.read_csv(
        csv,
        has_header=False,
        new_columns=["user", "item", "rating", "timestamp"],
        schema_overrides={"user": pl.String, "item": pl.String, "timestamp": pl.Int64},
    )
    df = df.with_row_index("order").unique(["user", "item", "timestamp"], keep="first", maintain_order=True)
    while True:
        keep_u = df.group_by("user").len().filter(pl.col("len") >= k).select("user")
        keep_i = df.group_by("item").len().filter(pl.col("len") >= k).select("item")
        new = df.join(keep_u, on="user", how="semi").join(keep_i, on="item", how="semi")
        if new.height == df.height:
            break
        df = new
    df.sort(["user", "timestamp", "order"])
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=22_507_155, help="rows in the synthetic ratings file")
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "preprocess", help="cache folder")
    parser.add_argument("--quick", action="store_true", help="2M rows (what `make bench -- --quick` passes)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the eager baseline")
    args = parser.parse_args()
    if args.quick:
        args.rows = 2_000_000

    csv = args.out / f"ratings-books-{args.rows}.csv"
    if not csv.exists():
        start = time.perf_counter()
        print(f"writing {csv} ({args.rows:,} rows) ...", flush=True)
        make_ratings(csv, args.rows)
        print(f"  written in {time.perf_counter() - start:.1f} s ({csv.stat().st_size / 1e9:.2f} GB)", flush=True)

    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        wall, cpu, peak_gb, rc = run_cli(csv, Path(tmp))
    if rc != 0:
        print(f"gdr preprocess failed with exit code {rc}")
        return rc
    scale = args.rows / 22_507_155
    target = TARGET_S * scale
    load = os.getloadavg()[0]
    print(f"preprocess amazon-books, {args.rows:,} rows on {os.cpu_count()} cores (load average {load:.1f}):")
    print(
        f"  wall {wall:.1f} s vs target {target:.0f} s (60 s scaled by rows): {'OK' if wall <= target else 'OVER'} "
        f"({wall / target:.0%})"
    )
    print(f"  CPU  {cpu:.1f} s (user+sys; the wall time other processes on the machine cannot inflate as much)")
    print(
        f"  peak RSS {peak_gb:.2f} GB vs target {TARGET_GB:.0f} GB: {'OK' if peak_gb <= TARGET_GB else 'OVER'} "
        f"({peak_gb / TARGET_GB:.0%})"
    )
    if not args.no_baseline:
        base_wall, base_cpu = baseline(csv)
        peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
        print(
            f"baseline (eager, string keys, in-process, no Parquet output): wall {base_wall:.1f} s, CPU {base_cpu:.1f} s, "
            f"peak RSS {peak_self:.2f} GB"
        )
        print(
            f"  gdr / baseline: wall {wall / base_wall:.2f}x, CPU {cpu / base_cpu:.2f}x, memory {peak_gb / peak_self:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
