"""Intervals and paired tests for a set of runs scored on the same users (see `paired`).

`compare_runs` turns per-user metric vectors into two tables:
* per run and metric: mean, bootstrap interval (`<metric>_low`, `<metric>_high`);
* per pair of runs on the selection metric: mean difference a - b, its paired bootstrap interval,
  and the sign-flip permutation p-value.
All runs share the same bootstrap draws of users (so intervals of differences are paired).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import polars as pl

from gdr_cli.errors import GdrError
from stages.metrics.paired import align, bootstrap_means, check_same_users, percentile_interval, sign_flip_pvalues


@dataclass(frozen=True)
class Comparison:
    """intervals: one row per run (run, <metric>, <metric>_low, <metric>_high for each metric);
    pairwise: run_a, run_b, metric, diff, diff_low, diff_high, p_value for every pair (a before b);
    best: the run with the highest mean of the selection metric."""

    intervals: pl.DataFrame
    pairwise: pl.DataFrame
    best: str


def compare_runs(
    per_user: dict[str, dict[str, np.ndarray]],
    users: dict[str, np.ndarray],
    *,
    metrics: list[str],
    best_by: str,
    samples: int,
    permutations: int,
    level: float,
    seed: int,
) -> Comparison:
    """per_user: run -> metric -> [U] float64 values in the order of users[run] ([U] int64).

    Runs must cover the same users (a one-line `GdrError` otherwise); values are aligned by user id.
    """
    if not per_user:
        raise GdrError("no runs to compare", fix="sample and evaluate at least one run")
    names = list(per_user)
    order = check_same_users(users)
    cols = [align(users[n], per_user[n][m], order) for n in names for m in metrics]
    values = np.stack(cols, axis=1)  # [U, R*M]; column r*M + j = run r, metric j
    sel = metrics.index(best_by)
    means = values.mean(axis=0).reshape(len(names), len(metrics))
    best = names[int(np.argmax(means[:, sel]))]
    pairs = list(combinations(range(len(names)), 2))
    diffs = (
        np.stack([values[:, a * len(metrics) + sel] - values[:, b * len(metrics) + sel] for a, b in pairs], axis=1)
        if pairs
        else np.zeros((len(order), 0))
    )

    rng = np.random.default_rng(seed)
    boot = bootstrap_means(np.concatenate([values, diffs], axis=1), samples, rng)  # one draw for runs and differences
    low, high = percentile_interval(boot, level)
    p = sign_flip_pvalues(diffs, permutations, rng) if pairs else np.zeros(0)

    rows = []
    for r, name in enumerate(names):
        row: dict[str, object] = {"run": name}
        for j, m in enumerate(metrics):
            c = r * len(metrics) + j
            row[m], row[f"{m}_low"], row[f"{m}_high"] = float(means[r, j]), float(low[c]), float(high[c])
        rows.append(row)
    n = values.shape[1]
    pair_rows = [
        {
            "run_a": names[a],
            "run_b": names[b],
            "metric": best_by,
            "diff": float(diffs[:, i].mean()),
            "diff_low": float(low[n + i]),
            "diff_high": float(high[n + i]),
            "p_value": float(p[i]),
        }
        for i, (a, b) in enumerate(pairs)
    ]
    schema = {
        "run_a": pl.String,
        "run_b": pl.String,
        "metric": pl.String,
        "diff": pl.Float64,
        "diff_low": pl.Float64,
        "diff_high": pl.Float64,
        "p_value": pl.Float64,
    }
    return Comparison(intervals=pl.DataFrame(rows), pairwise=pl.DataFrame(pair_rows, schema=schema), best=best)


def against_best(comparison: Comparison) -> pl.DataFrame:
    """One row per run: diff, diff_low, diff_high, p_value of (run - best) on the selection metric.

    The best run itself gets a difference of exactly 0, interval [0, 0] and p-value 1.
    """
    best = comparison.best
    pw = comparison.pairwise
    as_a = pw.filter(pl.col("run_b") == best).select(
        pl.col("run_a").alias("run"), "diff", "diff_low", "diff_high", "p_value"
    )
    as_b = pw.filter(pl.col("run_a") == best).select(
        pl.col("run_b").alias("run"),
        -pl.col("diff"),
        (-pl.col("diff_high")).alias("diff_low"),
        (-pl.col("diff_low")).alias("diff_high"),
        "p_value",
    )
    self_row = pl.DataFrame({"run": [best], "diff": [0.0], "diff_low": [0.0], "diff_high": [0.0], "p_value": [1.0]})
    out = pl.concat([self_row, as_a, as_b])
    return comparison.intervals.select("run").join(out, on="run", how="left", maintain_order="left")
