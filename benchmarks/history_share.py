"""How much of each run's top-10 is spent on items the user already consumed (history kept).

    python benchmarks/history_share.py DATA_ROOT DATASET [--split test] [--window 20] RECS_NAME ...

Reads `DATA_ROOT/DATASET/processed/splits.parquet` and `DATA_ROOT/DATASET/recs/NAME/SPLIT/recs.parquet`
(lists sampled with history kept) and prints, per run: the mean number of history items in the top-10
(history = training sequence, plus the validation item on test), how many of them lie in the model's
input window (the last `--window` history items), the share of users whose top-10 holds the latest
history item (on test: the validation item), NDCG@10 as evaluated, and NDCG@10 of the same list with
the history items dropped (the remaining items move up; computed from the stored top-K only, so it is a
lower bound of a model's `--exclude-history` score), and the same with only the window's items dropped (what
`repeat_explore: new` does to a model whose repeat gate is shut). Used in benchmarks/ablation_quality.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl


def history_table(splits: pl.DataFrame, split: str, window: int) -> pl.DataFrame:
    """One row per (user, history item) with its distance from the end of the history (0 = latest)."""
    seq = splits.select("user", pl.col("train").alias("seq"))
    if split == "test":
        seq = seq.with_columns(pl.col("seq").list.concat(pl.concat_list(splits["valid"])))
    hist = (
        seq.explode("seq")
        .rename({"seq": "item"})
        .with_columns((pl.len().over("user") - 1 - pl.int_range(pl.len()).over("user")).alias("age"))
    )
    return (
        hist.group_by("user", "item").agg(pl.col("age").min()).with_columns((pl.col("age") < window).alias("in_window"))
    )


def ndcg10(ranked: pl.DataFrame) -> float:
    """Mean NDCG@10 over users of `ranked` (columns user, pos 0-based, hit bool; every user present)."""
    users = ranked["user"].n_unique()
    hits = ranked.filter(pl.col("hit") & (pl.col("pos") < 10))
    return float((1.0 / np.log2(hits["pos"].to_numpy() + 2.0)).sum() / users)


def share_row(splits: pl.DataFrame, recs: pl.DataFrame, split: str, window: int) -> dict[str, float]:
    """The statistics of one run's lists (see the module docstring)."""
    hist = history_table(splits, split, window)
    target = splits.select("user", pl.col(split).alias("target"))
    recs = (
        recs.sort("user", "rank")
        .join(hist, on=["user", "item"], how="left")
        .join(target, on="user")
        .with_columns(pl.col("age").is_not_null().alias("seen"), (pl.col("item") == pl.col("target")).alias("hit"))
        .with_columns((pl.col("rank") - 1).alias("pos"))
    )
    users = recs["user"].n_unique()
    top = recs.filter(pl.col("pos") < 10)
    fresh = recs.filter(~pl.col("seen")).with_columns((pl.int_range(pl.len()).over("user")).alias("pos"))
    outside = recs.filter(~pl.col("in_window").fill_null(False))
    outside = outside.with_columns((pl.int_range(pl.len()).over("user")).alias("pos"))
    return {
        "history in top-10": top["seen"].sum() / users,
        "of which in window": top["in_window"].fill_null(False).sum() / users,
        "latest item in top-10": top.filter(pl.col("age") == 0).height / users,
        "NDCG@10": ndcg10(recs),
        "NDCG@10, window dropped": float(ndcg10(outside) * outside["user"].n_unique() / users),
        "NDCG@10, history dropped": float(ndcg10(fresh) * fresh["user"].n_unique() / users),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("dataset")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--split", default="test", choices=["valid", "test"])
    ap.add_argument("--window", type=int, default=20, help="the model's history length (max_len)")
    a = ap.parse_args()
    ds = a.root / a.dataset
    splits = pl.read_parquet(ds / "processed" / "splits.parquet")
    rows = {
        run: share_row(splits, pl.read_parquet(ds / "recs" / run / a.split / "recs.parquet"), a.split, a.window)
        for run in a.runs
    }
    cols = list(next(iter(rows.values())))
    print("| run | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    for run, r in rows.items():
        print(f"| {run} | " + " | ".join(f"{v:.2f}" if "NDCG" not in c else f"{v:.4f}" for c, v in r.items()) + " |")


if __name__ == "__main__":
    main()
