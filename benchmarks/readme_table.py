"""`make readme-table`: copy the table `make all` printed into README.md (never typed by hand).

Reads `<data>/<dataset>/reports/test/comparison.parquet` (written by `gdr evaluate`) and the run
manifests it names, and replaces the lines between `<!-- make-all:begin -->` and
`<!-- make-all:end -->` in README.md with one Markdown row per run: test metrics, training
steps/epochs and time, parameters.

    .venv/bin/python benchmarks/readme_table.py data/movielens-100k [README.md]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl

BEGIN, END = "<!-- make-all:begin -->", "<!-- make-all:end -->"


def training(home: Path, run: str) -> str:
    """How a run was trained, from its manifest: 'counts' or 'N epochs (S steps), T min'."""
    stats = json.loads((home / "runs" / run / "manifest.json").read_text())
    s, wall = stats["stats"], stats["wall_time_s"]
    if "steps" not in s:
        return "counts"
    return f"{s.get('epochs', '?')} epochs ({s['steps']} steps, best at {s['best_step']}), {wall / 60:.1f} min"


def table(home: Path) -> str:
    frame = pl.read_parquet(home / "reports" / "test" / "comparison.parquet")
    lines = [
        "| run | Recall@10 | NDCG@10 | Recall@20 | NDCG@20 | MRR@10 | params | training |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in frame.iter_rows(named=True):
        hist = ", history excluded" if r["exclude_history"] else ""
        lines.append(
            f"| {r['run']} ({r['sampler']}{hist}) | {r['recall@10']:.4f} | {r['ndcg@10']:.4f} | {r['recall@20']:.4f} | "
            f"{r['ndcg@20']:.4f} | {r['mrr@10']:.4f} | {r['params'] or 0:,} | {training(home, r['trained_run'])} |"
        )
    return "\n".join(lines)


def main() -> int:
    home = Path(sys.argv[1])
    readme = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        print(f"{readme}: markers {BEGIN} / {END} not found", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{table(home)}\n{END}{tail}")
    print(f"README table updated from {home / 'reports' / 'test' / 'comparison.parquet'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
