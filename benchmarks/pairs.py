"""Chosen rows of a `gdr evaluate --report` pairwise table, as Markdown (for benchmarks/family_report.md).

    python benchmarks/pairs.py REPORT_DIR A:B [A:B ...]

Each A:B prints A - B on the report's metric (NDCG@10): the difference, its paired-bootstrap 95% interval
and the sign-flip p-value, read from REPORT_DIR/pairwise.parquet (which holds every pair once, either way
round; a pair stored as B - A is negated).
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl


def main(argv: list[str]) -> None:
    folder, *pairs = argv
    table = pl.read_parquet(Path(folder) / "pairwise.parquet")
    print("| pair | Δ NDCG@10 [95% interval] | p-value |")
    print("|---|---|---|")
    for pair in pairs:
        a, b = pair.split(":")
        row = table.filter((pl.col("run_a") == a) & (pl.col("run_b") == b))
        sign = 1.0
        if row.height == 0:
            row, sign = table.filter((pl.col("run_a") == b) & (pl.col("run_b") == a)), -1.0
        if row.height == 0:
            sys.exit(f"no pair {a} / {b} in {folder}")
        r = row.row(0, named=True)
        lo, hi = sorted((sign * r["diff_low"], sign * r["diff_high"]))
        p = r["p_value"]
        shown = "<0.001" if p < 0.001 else f"{p:.3f}"
        print(f"| {a} − {b} | {sign * r['diff']:+.4f} [{lo:+.4f}, {hi:+.4f}] | {shown} |")


if __name__ == "__main__":
    main(sys.argv[1:])
