"""Score a recommendations table against held-out targets (PROTOCOL.md §1), vectorised in polars.

Rows whose item is null (a code that maps to no item) are dropped and counted as invalid;
repeated (user, item) rows after the first are dropped and counted as duplicates; the rest are
re-ranked per user. Every evaluated user counts: a user without a hit (or without any list)
scores 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from stages.metrics.ranking import per_user_metrics


@dataclass(frozen=True)
class RankedTargets:
    """Where each evaluated user's target landed in their cleaned list.

    users: [U] int64 (the targets' order), ranks: [U] float64 (1-based, inf = miss or no list).
    """

    users: np.ndarray
    ranks: np.ndarray
    rows: int
    invalid: int
    duplicates: int
    item_coverage: int

    def per_user(self, ks: list[int]) -> dict[str, np.ndarray]:
        """`{"ndcg@10": [U] float64, ...}`: one metric value per user, in `users` order."""
        return per_user_metrics(self.ranks, ks)

    def frame(self) -> pl.DataFrame:
        """user:int32, rank:float64 (inf = miss), the table `metrics/<name>/<split>/ranks.parquet` stores."""
        return pl.DataFrame({"user": self.users.astype(np.int32), "rank": self.ranks})


def rank_targets(recs: pl.DataFrame, targets: pl.DataFrame) -> RankedTargets:
    """recs: user, rank, item (nullable), score; targets: user, target (one row per evaluated user)."""
    rows = recs.height
    valid = recs.filter(pl.col("item").is_not_null())
    deduped = valid.sort(["user", "rank"]).unique(subset=["user", "item"], keep="first", maintain_order=True)
    ranked = deduped.with_columns(pl.col("rank").rank("ordinal").over("user").cast(pl.Float64).alias("pos"))
    hits = targets.join(
        ranked, left_on=["user", "target"], right_on=["user", "item"], how="left", maintain_order="left"
    )
    return RankedTargets(
        users=hits["user"].to_numpy().astype(np.int64),
        ranks=hits["pos"].fill_null(float("inf")).to_numpy().astype(np.float64),
        rows=rows,
        invalid=rows - valid.height,
        duplicates=valid.height - deduped.height,
        item_coverage=deduped["item"].n_unique(),
    )


def summarize(ranked: RankedTargets, ks: list[int]) -> dict[str, float]:
    """Mean recall@K, ndcg@K, mrr@K for each K, plus users, invalid_rate, duplicate_rate, item_coverage."""
    out: dict[str, float] = {name: float(v.mean()) if v.size else 0.0 for name, v in ranked.per_user(ks).items()}
    out["users"] = int(ranked.users.size)
    out["invalid_rate"] = ranked.invalid / ranked.rows if ranked.rows else 0.0
    out["duplicate_rate"] = ranked.duplicates / ranked.rows if ranked.rows else 0.0
    out["item_coverage"] = ranked.item_coverage
    return out


def score_recs(recs: pl.DataFrame, targets: pl.DataFrame, ks: list[int]) -> dict[str, float]:
    """recs: user, rank, item (nullable), score; targets: user, target (one row per evaluated user).

    Returns recall@K, ndcg@K, mrr@K for each K, plus users, invalid_rate, duplicate_rate, item_coverage.
    """
    return summarize(rank_targets(recs, targets), ks)
