"""PROTOCOL.md §1 metrics on hand-computed cases."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from stages.metrics.ranking import metrics_from_ranks, ndcg_sum, target_rank
from stages.metrics.scoring import score_recs


def test_target_rank_and_metrics() -> None:
    items = torch.tensor([[5, 3, 9], [1, 2, 4], [7, -1, -1]])
    target = torch.tensor([3, 8, 7])
    ranks = target_rank(items, target)
    assert ranks.tolist() == [2, 0, 1]
    m = metrics_from_ranks(ranks, (1, 2, 3))
    assert m["recall@1"] == pytest.approx(1 / 3)
    assert m["recall@2"] == pytest.approx(2 / 3)
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1.0) / 3)
    assert m["mrr@3"] == pytest.approx((0.5 + 1.0) / 3)
    assert ndcg_sum(items, target, k=1) == pytest.approx(1.0)


def test_score_recs_drops_invalid_and_duplicates_and_counts_missing_users() -> None:
    recs = pl.DataFrame(
        {
            "user": [0, 0, 0, 0, 1, 1],
            "rank": [1, 2, 3, 4, 1, 2],
            "item": [10, None, 10, 11, 20, 21],
            "score": [0.0] * 6,
        },
        schema={"user": pl.Int32, "rank": pl.Int32, "item": pl.Int32, "score": pl.Float32},
    )
    targets = pl.DataFrame({"user": [0, 1, 2], "target": [11, 99, 5]}, schema={"user": pl.Int32, "target": pl.Int32})
    m = score_recs(recs, targets, [1, 2, 5])
    # user 0: valid deduped list [10, 11] -> target at rank 2; user 1 misses; user 2 has no list.
    assert m["users"] == 3
    assert m["recall@1"] == 0.0
    assert m["recall@2"] == pytest.approx(1 / 3)
    assert m["ndcg@5"] == pytest.approx(1 / math.log2(3) / 3)
    assert m["mrr@5"] == pytest.approx(0.5 / 3)
    assert m["invalid_rate"] == pytest.approx(1 / 6)
    assert m["duplicate_rate"] == pytest.approx(1 / 6)
