"""Comparison of runs: a polars table and its rich, Markdown and HTML renderings.

The table has one row per recommendations folder: its metrics, the protocol flags, where it came
from (trained run, parameters, training time, sampling speed) and, for a full report, bootstrap
intervals and the paired test against the best run (`stages.metrics.compare`).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

import polars as pl
from rich.table import Table

MAIN = ("recall", "ndcg", "mrr")


def metric_columns(ks: Sequence[int]) -> list[str]:
    return [f"{metric}@{k}" for metric in MAIN for k in ks]


def comparison_table(
    results: dict[str, dict[str, Any]], ks: Sequence[int], details: dict[str, dict[str, Any]] | None = None
) -> pl.DataFrame:
    """One row per run: metric columns (recall@K, ndcg@K, mrr@K), rates, protocol flags and run details.

    results: name -> metrics.json content; details: name -> trained_run, params, train_time_s, users_per_s.
    """
    rows = []
    for name, m in results.items():
        d = (details or {}).get(name, {})
        row: dict[str, Any] = {
            "run": name,
            "trained_run": d.get("trained_run"),
            "sampler": m.get("sampler"),
            "exclude_history": bool(m.get("exclude_history", False)),
        }
        for col in metric_columns(ks):
            row[col] = float(m.get(col, 0.0))
        row["invalid_rate"] = float(m.get("invalid_rate", 0.0))
        row["duplicate_rate"] = float(m.get("duplicate_rate", 0.0))
        row["users"] = int(m.get("users", 0))
        row["params"] = d.get("params")
        row["train_time_s"] = d.get("train_time_s")
        row["users_per_s"] = d.get("users_per_s", m.get("users_per_s"))
        rows.append(row)
    schema = {
        "trained_run": pl.String,
        "sampler": pl.String,
        "params": pl.Int64,
        "train_time_s": pl.Float64,
        "users_per_s": pl.Float64,
    }
    return pl.DataFrame(rows, schema_overrides=schema)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _rate(per_s: float | None) -> str:
    if per_s is None:
        return "–"
    return f"{per_s:,.0f}" if per_s >= 100 else f"{per_s:.1f}"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def display(
    table: pl.DataFrame, ks: Sequence[int], *, report: dict[str, Any] | None = None, compact: bool = False
) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, formatted cells and the column names behind them (for Markdown, HTML and the terminal).

    With `report` (settings incl. `best_by` and `best`, for a table with `diff`/`p_value` columns) two
    columns are added: the difference to the best run on that metric with its interval, and the p-value. `compact` (the terminal)
    leaves out MRR and the interval.
    """
    cols = [c for c in metric_columns(ks) if not (compact and c.startswith("mrr"))]
    head = ["run", *cols, "params", "train time", "users/s", "history", "invalid"]
    keys = ["run", *cols, "params", "train_time_s", "users_per_s", "exclude_history", "invalid_rate"]
    if report:
        head += [f"Δ {report['best_by']} vs best" + ("" if compact else " [interval]"), "p-value"]
        keys += ["diff", "p_value"]
    rows = []
    for row in table.iter_rows(named=True):
        cells = [row["run"], *[f"{row[c]:.4f}" for c in cols]]
        cells.append("–" if row["params"] is None else f"{row['params']:,}")
        cells.append(_duration(row["train_time_s"]))
        cells.append(_rate(row["users_per_s"]))
        cells.append("excluded" if row["exclude_history"] else "kept")
        cells.append(f"{row['invalid_rate']:.3f}")
        if report:
            if row["run"] == report["best"]:
                cells += ["best", "–"]
            else:
                interval = "" if compact else f" [{row['diff_low']:+.4f}, {row['diff_high']:+.4f}]"
                cells += [f"{row['diff']:+.4f}{interval}", _p(row["p_value"])]
        rows.append(cells)
    return head, rows, keys


def rich_table(table: pl.DataFrame, ks: Sequence[int], *, title: str, report: dict[str, Any] | None = None) -> Table:
    """Recall and NDCG side by side (MRR and intervals are in the Markdown/HTML), best value per column in bold."""
    head, rows, keys = display(table, ks, report=report, compact=True)
    out = Table(title=title, title_justify="left")
    for i, h in enumerate(head):
        out.add_column(h, justify="left" if keys[i] in ("run", "exclude_history") else "right")
    cols = metric_columns(ks)
    best = {c: table[c].max() for c in cols}
    for r, cells in enumerate(rows):
        values = table.row(r, named=True)
        styled = [
            f"[bold]{cell}[/bold]" if key in best and values[key] == best[key] and table.height > 1 else cell
            for key, cell in zip(keys, cells, strict=True)
        ]
        out.add_row(*styled)
    return out


def _notes(*, dataset: str, split: str, users: int, report: dict[str, Any] | None) -> list[str]:
    lines = [
        f"{dataset} — {split} split, {users:,} users. Full ranking over the catalogue, leave-one-out by time, "
        "one held-out item per user (PROTOCOL.md §1); users without a list count as misses. "
        "'history' says whether items of the user's history were removed (`--exclude-history`) or kept.",
    ]
    if report:
        lines.append(
            f"Intervals: {report['confidence']:.0%} percentile intervals of a paired bootstrap over users "
            f"({report['bootstrap']:,} resamples, the same draws for every run; seed {report['seed']}). "
            f"p-values: two-sided paired permutation test of each run against the best run on {report['best_by']} "
            f"({report['best']}), {report['permutations']:,} random sign flips of the per-user differences."
        )
    return lines


def render_markdown(
    table: pl.DataFrame,
    ks: Sequence[int],
    *,
    dataset: str,
    split: str,
    report: dict[str, Any] | None = None,
    images: Sequence[str] = (),
) -> str:
    """The comparison as Markdown; `images` are PNG file names in the same folder."""
    head, rows, _ = display(table, ks, report=report)
    users = int(table["users"].max() or 0) if table.height else 0
    lines = [f"# {dataset} — {split} split", ""]
    for note in _notes(dataset=dataset, split=split, users=users, report=report):
        lines += [note, ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    for image in images:
        lines += ["", f"![{image.removesuffix('.png')}]({image})"]
    return "\n".join(lines) + "\n"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
td.best { font-weight: bold; }
img { max-width: 100%; margin-top: 1.5em; display: block; }
p.note { max-width: 60em; }
"""


def render_html(
    table: pl.DataFrame,
    ks: Sequence[int],
    *,
    dataset: str,
    split: str,
    report: dict[str, Any] | None = None,
    images: dict[str, bytes] | None = None,
) -> str:
    """One self-contained HTML page: the table and every plot embedded as a base64 PNG data URI."""
    head, rows, keys = display(table, ks, report=report)
    users = int(table["users"].max() or 0) if table.height else 0
    best = {c: table[c].max() for c in metric_columns(ks)}
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(dataset)} — {esc(split)} comparison</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{esc(dataset)} — {esc(split)} split</h1>",
        *[
            f'<p class="note">{esc(line)}</p>'
            for line in _notes(dataset=dataset, split=split, users=users, report=report)
        ],
        "<table>",
        "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead>",
        "<tbody>",
    ]
    for r, cells in enumerate(rows):
        values = table.row(r, named=True)
        tds = []
        for key, cell in zip(keys, cells, strict=True):
            bold = key in best and values[key] == best[key] and table.height > 1
            tds.append(f'<td class="best">{esc(cell)}</td>' if bold else f"<td>{esc(cell)}</td>")
        parts.append("<tr>" + "".join(tds) + "</tr>")
    parts += ["</tbody>", "</table>"]
    for title, png in (images or {}).items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<h2>{esc(title)}</h2><img alt="{esc(title)}" src="data:image/png;base64,{data}">')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
