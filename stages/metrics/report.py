"""Comparison of runs: a polars table, its rich and Markdown renderings, and a bar chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from rich.table import Table

MAIN = ("recall", "ndcg", "mrr")


def comparison_table(results: dict[str, dict[str, Any]], ks: list[int]) -> pl.DataFrame:
    """One row per run: metric columns (recall@K, ndcg@K, mrr@K), rates, and the protocol flags."""
    rows = []
    for name, m in results.items():
        row: dict[str, Any] = {"run": name, "sampler": m.get("sampler"), "exclude_history": m.get("exclude_history", False)}
        for metric in MAIN:
            for k in ks:
                row[f"{metric}@{k}"] = float(m.get(f"{metric}@{k}", 0.0))
        row["invalid_rate"] = float(m.get("invalid_rate", 0.0))
        row["duplicate_rate"] = float(m.get("duplicate_rate", 0.0))
        row["users"] = int(m.get("users", 0))
        rows.append(row)
    return pl.DataFrame(rows)


def _columns(ks: list[int]) -> list[str]:
    return [f"{metric}@{k}" for metric in MAIN for k in ks]


def rich_table(table: pl.DataFrame, ks: list[int], *, title: str) -> Table:
    """Metrics side by side, best value per column in bold."""
    cols = _columns(ks)
    out = Table(title=title, title_justify="left")
    out.add_column("run")
    for c in cols:
        out.add_column(c, justify="right")
    out.add_column("invalid", justify="right")
    out.add_column("history", justify="left")
    best = {c: table[c].max() for c in cols}
    for row in table.iter_rows(named=True):
        cells = [f"[bold]{row[c]:.4f}[/bold]" if row[c] == best[c] and table.height > 1 else f"{row[c]:.4f}" for c in cols]
        out.add_row(row["run"], *cells, f"{row['invalid_rate']:.3f}", "excluded" if row["exclude_history"] else "kept")
    return out


def render_markdown(table: pl.DataFrame, *, dataset: str, split: str) -> str:
    cols = [c for c in table.columns if "@" in c]
    head = ["run", *cols, "invalid_rate", "duplicate_rate", "history items"]
    lines = [
        f"# {dataset} — {split} split",
        "",
        "Full ranking over the catalogue, leave-one-out by time, one held-out item per user (PROTOCOL.md §1).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in table.iter_rows(named=True):
        cells = [row["run"], *[f"{row[c]:.4f}" for c in cols], f"{row['invalid_rate']:.4f}", f"{row['duplicate_rate']:.4f}"]
        cells.append("excluded" if row["exclude_history"] else "kept")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_comparison(table: pl.DataFrame, ks: list[int], path: Path, *, title: str) -> None:
    """Grouped bars: one group per metric@K, one bar per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = [f"{m}@{k}" for m in ("recall", "ndcg") for k in ks]
    runs = table["run"].to_list()
    x = np.arange(len(cols))
    width = 0.8 / max(len(runs), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(cols)), 3.6))
    for i, name in enumerate(runs):
        vals = [table.filter(pl.col("run") == name)[c][0] for c in cols]
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, vals, width, label=name)
    ax.set_xticks(x, cols, rotation=30, ha="right")
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
