"""Score a recommendations table against held-out targets (PROTOCOL.md §1), vectorised in polars.

Rows whose item is null (a code that maps to no item) are dropped and counted as invalid;
repeated (user, item) rows after the first are dropped and counted as duplicates; the rest are
re-ranked per user. Every evaluated user counts: a user without a hit (or without any list)
scores 0.
"""

from __future__ import annotations

import polars as pl
import torch

from stages.metrics.ranking import metrics_from_ranks


def score_recs(recs: pl.DataFrame, targets: pl.DataFrame, ks: list[int]) -> dict[str, float]:
    """recs: user, rank, item (nullable), score; targets: user, target (one row per evaluated user).

    Returns recall@K, ndcg@K, mrr@K for each K, plus users, invalid_rate, duplicate_rate, coverage.
    """
    rows = recs.height
    valid = recs.filter(pl.col("item").is_not_null())
    invalid = rows - valid.height
    deduped = valid.sort(["user", "rank"]).unique(subset=["user", "item"], keep="first", maintain_order=True)
    duplicates = valid.height - deduped.height
    ranked = deduped.with_columns((pl.col("rank").rank("ordinal").over("user")).cast(pl.Int64).alias("pos"))
    hits = targets.join(ranked, left_on=["user", "target"], right_on=["user", "item"], how="left")
    ranks = torch.from_numpy(hits["pos"].fill_null(0).to_numpy().astype("int64"))
    out = metrics_from_ranks(ranks, tuple(ks))
    out["users"] = targets.height
    out["invalid_rate"] = invalid / rows if rows else 0.0
    out["duplicate_rate"] = duplicates / rows if rows else 0.0
    out["item_coverage"] = deduped["item"].n_unique()
    return out
